"""The backends every backend-dependent test runs on.

The cuda case is always listed, never silently dropped: where no GPU (or no CuPy) is present
it shows as skipped, with the reason it cannot run here.
"""
import pytest

import tinyvision as tv
from tinyvision.backend import cuda_unavailable_reason

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not tv.cuda_available(),
                                                  reason=f"no GPU here: {cuda_unavailable_reason()}")),
]
