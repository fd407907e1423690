"""The error function erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt, on NumPy and CuPy arrays.

GELU in its exact form needs erf (Hendrycks & Gimpel 2016, eq. 1: GELU(x) = x * Phi(x),
Phi(x) = (1 + erf(x / sqrt 2)) / 2). NumPy has no erf, so we take the first that works:
1. CuPy arrays: cupyx.scipy.special.erf (a GPU kernel).
2. NumPy arrays: a Numba ufunc over math.erf (compiled once, cached on disk).
3. NumPy without Numba: math.erf element by element; exact, just slow.
Paths 2 and 3 agree with math.erf exactly (tests/test_backend.py checks path 3); path 1 has not
yet been run on a GPU here.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import device_of

__all__ = ["erf"]

_erf_ufunc = None


def _numpy_erf():
    global _erf_ufunc
    if _erf_ufunc is None:
        try:
            import numba  # noqa: PLC0415 - core dependency, but import tinyvision must not need it

            def scalar_erf(v):
                return math.erf(v)

            _erf_ufunc = numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)(scalar_erf)
        except ImportError:
            _erf_ufunc = np.vectorize(math.erf, otypes=[np.float64])
    return _erf_ufunc


def erf(x):
    """Elementwise erf of a floating array, keeping its dtype and device."""
    if device_of(x) == "cuda":
        import cupyx.scipy.special  # noqa: PLC0415

        return cupyx.scipy.special.erf(x)
    return np.asarray(_numpy_erf()(x), dtype=x.dtype)
