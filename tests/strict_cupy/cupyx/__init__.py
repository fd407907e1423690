"""cupyx for the strict CuPy stand-in: scatter_add and scipy.special.erf."""
import numpy as _np

from . import scipy  # noqa: F401


def scatter_add(target, index, values):
    """target[index] += values, unbuffered. Index arrays may be host or device (as in CuPy); values not host."""
    import cupy
    if type(values) is _np.ndarray and values.ndim > 0:
        raise TypeError("cupyx.scatter_add: values is a NumPy array; move it with cupy.asarray")
    _np.add.at(cupy._unwrap(target), cupy._unwrap(index), cupy._unwrap(values))
