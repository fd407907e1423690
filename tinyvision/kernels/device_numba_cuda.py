"""What the numba.cuda kernels share: finding a GPU (or the simulator) and moving arrays to and from it.

attention_numba_cuda.py (FlashAttention forward and backward) and rows_numba_cuda.py (softmax and layer
norm over rows) are written for reading, in the style of the first versions in llm.c's dev/cuda, not
tuned. Both take NumPy arrays (copied to the device; results come back as NumPy arrays) or CuPy arrays
(anything with __cuda_array_interface__: they stay on the device and the results are CuPy arrays).

Tested without a GPU under NUMBA_ENABLE_CUDASIM=1, on tiny shapes: the simulator runs each thread as
a Python thread, so it checks indexing, bounds and barriers, never speed. Importing this module (and so
either kernel file) raises ImportError, the reason included, when numba.cuda finds no GPU and the
simulator is off.

Rules both kernel files follow:
- No max() or min() inside kernels: in Numba 0.68 they are generic (*args) overloads that the
  built-in CUDA target fails to compile ("Signature mismatch"), so the kernels compare explicitly.
  The simulator runs them as Python and would not notice; compiling to PTX with libNVVM does.
- Barriers: every cuda.syncthreads() is reached by all threads of a block. Threads past the last
  row still load tiles and wait at barriers; they only skip the arithmetic and the stores. (The
  simulator does not catch a divergent barrier; a real GPU may hang or compute garbage.)
- Constants are written ntype(0), ntype(-inf), so that a float32 kernel does its arithmetic in
  float32 (a bare 0.0 is a float64 and would promote it).
"""
from __future__ import annotations

import numpy as np
from numba import cuda
from numba.core import config

__all__ = ["SIMULATED", "on_device", "returned", "float_dtype", "converted"]

SIMULATED = bool(config.ENABLE_CUDASIM)


def _why_no_gpu():
    try:
        cuda.current_context()
    except Exception as err:  # CudaSupportError, driver missing, no device
        first_sentence = " ".join(str(err).split()).split(". ")[0]
        return f"{type(err).__name__}: {first_sentence}"
    return "numba.cuda.is_available() is False"


if not SIMULATED and not cuda.is_available():
    raise ImportError("numba.cuda kernels need an NVIDIA GPU (or NUMBA_ENABLE_CUDASIM=1 for the simulator): "
                      + _why_no_gpu())


def on_device(x):
    """(device array, True if the caller passed a GPU array). NumPy arrays are copied over."""
    if hasattr(x, "__cuda_array_interface__"):
        return cuda.as_cuda_array(x), True
    return cuda.to_device(np.ascontiguousarray(x)), False


def returned(dev_array, on_gpu):
    """Back in the caller's kind of array: CuPy (zero-copy view) for GPU input, NumPy otherwise."""
    if on_gpu:
        import cupy  # noqa: PLC0415 - only reached with GPU arrays, where CuPy is installed
        return cupy.asarray(dev_array)
    return dev_array.copy_to_host()


def float_dtype(*arrays):
    return np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64


def converted(x, dtype):
    """x in `dtype` on its own side (host or device), converted only when needed."""
    return x if x.dtype == dtype else x.astype(dtype)
