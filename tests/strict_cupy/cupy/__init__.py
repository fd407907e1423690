"""A strict stand-in for CuPy (see README.md beside this package): NumPy underneath, CuPy's refusals on top.

What it refuses, as CuPy does: an ndarray of NumPy (ndim >= 1) as an operand of a ufunc, an array
method or a cupy function together with device arrays. NumPy functions given device arrays dispatch
here (NEP 18), as they do with CuPy; reductions give 0-d device arrays, not NumPy scalars.
What it allows: Python and NumPy scalars, 0-d NumPy arrays, NumPy index arrays in [], float()/int()/bool().
What it cannot catch: np.asarray(device_array) passes (NumPy hands an ndarray subclass through without
asking it), where CuPy raises "Implicit conversion to a NumPy array is not allowed".
"""
import numpy as _np

from . import cuda, random  # noqa: F401


class ndarray(_np.ndarray):
    """A device array: a NumPy array that will not mix with host arrays."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _refuse_host(inputs + (out or ()), f"{ufunc.__name__}.{method}")
        args = [_host_view(x) for x in inputs]
        if out is not None:
            kwargs["out"] = tuple(_host_view(o) for o in out)
        result = getattr(ufunc, method)(*args, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _device(result)

    def __array_function__(self, func, types, args, kwargs):
        _refuse_host((args, kwargs), func.__name__)
        return _device(func(*_unwrap(args), **_unwrap(kwargs)))

    def get(self):
        return _np.array(self.view(_np.ndarray))

    def __reduce__(self):
        raise TypeError("strict cupy stand-in: pickling device arrays is not supported here")

    @property
    def data(self):
        """CuPy's MemoryPointer, as far as tinyvision reads it: .ptr, the address of the first element."""
        return _Pointer(self.__array_interface__["data"][0])


class _Pointer:
    def __init__(self, ptr):
        self.ptr = ptr


def _host_view(x):
    return x.view(_np.ndarray) if isinstance(x, ndarray) else x


def _is_host_array(x):
    return type(x) is _np.ndarray and x.ndim > 0


def _refuse_host(values, where):
    stack = [values]
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif _is_host_array(v):
            raise TypeError(f"Unsupported type {type(v)} in {where}: a NumPy array met a CuPy array "
                            f"(shape {v.shape}); move it with cupy.asarray first")


def _unwrap(v):
    if isinstance(v, ndarray):
        return v.view(_np.ndarray)
    if isinstance(v, list):
        return [_unwrap(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_unwrap(x) for x in v)
    if isinstance(v, dict):
        return {k: _unwrap(x) for k, x in v.items()}
    return v


def _device(result):
    if isinstance(result, _np.ndarray) and not isinstance(result, ndarray):
        return result.view(ndarray)
    if isinstance(result, _np.generic):        # NumPy reduces to a scalar; CuPy to a 0-d device array
        return _np.asarray(result).view(ndarray)
    if isinstance(result, tuple):
        return tuple(_device(r) for r in result)
    if isinstance(result, list):
        return [_device(r) for r in result]
    return result


# --- host <-> device, explicit -----------------------------------------------------------------------
def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return _np.array(a, dtype=dtype, order=order or "K").view(ndarray)


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    host = a.view(_np.ndarray) if isinstance(a, ndarray) else a
    return _np.array(host, dtype=dtype, copy=True, order=order, ndmin=ndmin).view(ndarray)


def ascontiguousarray(a, dtype=None):
    return _np.ascontiguousarray(_host_view(asarray(a)), dtype=dtype).view(ndarray)


def asnumpy(a):
    return a.get() if isinstance(a, ndarray) else _np.asarray(a)


def get_array_module(*arrays):
    return __import__("cupy") if any(isinstance(a, ndarray) for a in arrays) else _np


# --- everything else: NumPy's function of that name, refusing host arrays, returning device arrays -----
def __getattr__(name):
    target = getattr(_np, name)
    if isinstance(target, type) or not callable(target):
        return target                          # dtypes, constants, classes (cupy.float32, cupy.inf, ...)

    def device_function(*args, **kwargs):
        _refuse_host((args, kwargs), name)
        return _device(target(*_unwrap(args), **_unwrap(kwargs)))
    device_function.__name__ = name
    return device_function


class RawModule:
    """CuPy's RawModule, recording instead of compiling: what the loader asked for (source or fatbin path,
    NVRTC options) and every launch (kernel, grid, block, arguments, shared memory). The kernels do not
    run: outputs keep whatever cupy.empty gave them. Every module made is kept in RawModule.made, every
    launch of any module, in order, in RawModule.log. A launch raises unless RawModule.recording is set (only
    the loader test sets it): a lesson that reached a CUDA C kernel here would otherwise compute garbage."""
    made: list = []
    log: list = []
    recording = False

    def __init__(self, code=None, path=None, options=(), backend="nvrtc", **kwargs):
        if path is not None:
            with open(path, "rb"):              # a missing fatbin fails as CuPy's would (OSError)
                pass
        self.code, self.path, self.options, self.backend = code, path, tuple(options), backend
        # which source: a fatbin's name, or the file name on the second line of a source's header comment
        self.source = (path.rsplit("/", 1)[-1].replace(".fatbin", ".cu") if path is not None
                       else code.splitlines()[1].split()[0])
        RawModule.made.append(self)

    def get_function(self, name):
        return _Kernel(self, name)


class _Kernel:
    def __init__(self, module, name):
        self.module, self.name, self.max_dynamic_shared_size_bytes = module, name, 0

    def __call__(self, grid, block, args, shared_mem=0):
        if not RawModule.recording:
            raise RuntimeError(f"strict cupy stand-in: kernel {self.name} cannot run here (no GPU); "
                               "only tests/test_strict_cupy.py's loader test records launches")
        RawModule.log.append(dict(name=self.name, source=self.module.source, grid=tuple(grid), block=tuple(block),
                                  args=tuple(args), shared_mem=shared_mem, opted_in=self.max_dynamic_shared_size_bytes))


class lib:  # noqa: N801 - mirrors cupy.lib
    class stride_tricks:  # noqa: N801
        @staticmethod
        def as_strided(x, shape=None, strides=None):
            return _np.lib.stride_tricks.as_strided(_host_view(x), shape, strides).view(ndarray)


__version__ = "strict-stand-in"
