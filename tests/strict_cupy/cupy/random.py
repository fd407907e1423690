"""cupy.random: NumPy's generators, results on the pretend device."""
import numpy as _np


def default_rng(seed=None):
    return _Generator(_np.random.default_rng(seed))


class _Generator:
    def __init__(self, rng):
        self._rng = rng

    def __getattr__(self, name):
        method = getattr(self._rng, name)

        def on_device(*args, **kwargs):
            import cupy
            return cupy.asarray(method(*args, **kwargs))
        return on_device
