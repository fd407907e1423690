"""Helpers every op file shares: argument checks and the reduction that undoes broadcasting."""
from __future__ import annotations

import contextlib

import numpy as np

from ..backend import xp_of
from ..checks import scalar
from ..tensor import Tensor, as_tensor


def tensors_for(op: str, *args):
    """Make Tensors of an op's inputs and check they can meet.

    Tensors must agree on device and dtype (a float32 tensor never silently meets a float64
    one); plain numbers and arrays are constants and take the first tensor's dtype and device.
    """
    like = next((a for a in args if isinstance(a, Tensor)), None)
    if like is None:
        raise TypeError(f"{op}: expected at least one Tensor argument, got {[type(a).__name__ for a in args]}")
    out = []
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            if a.device != like.device:
                raise ValueError(f"{op}: argument {i} is on device {a.device!r} but argument 0 is on "
                                 f"{like.device!r}; move one with .to({like.device!r})")
            if a.dtype != like.dtype:
                raise TypeError(f"{op}: argument {i} has dtype {a.dtype} but another argument has "
                                f"{like.dtype}; convert one with .astype(...)")
        out.append(a if isinstance(a, Tensor) else _constant(op, i, a, like))
    return out


def _constant(op: str, i: int, value, like: Tensor) -> Tensor:
    """A plain number or array argument as a constant Tensor like `like`, or a TypeError naming the op."""
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, (str, bytes, dict, set)):
        raise TypeError(f"{op}: argument {i} must be a Tensor, a number or an array of numbers, "
                        f"got {type(value).__name__} {value!r}"[:300])
    try:
        return as_tensor(value, like)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{op}: argument {i} must be a Tensor, a number or an array of numbers, "
                        f"got {type(value).__name__} ({err})"[:300]) from None


def broadcast_shape(op: str, *shapes) -> tuple:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(f"{op}: shapes {' and '.join(str(tuple(s)) for s in shapes)} cannot be broadcast "
                         "together (trailing dimensions must be equal or 1)") from None


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`: the backward of NumPy broadcasting.

    Broadcasting copies an input along new leading axes and along axes of size 1; each copy
    receives its own gradient, and the input's gradient is their sum.
    """
    shape = tuple(shape)
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    ones = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if ones:
        grad = grad.sum(axis=ones, keepdims=True)
    return grad


def normalize_axes(op: str, axis, ndim: int) -> tuple:
    """axis (None, int or tuple, negatives allowed) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if getattr(axis, "ndim", None) == 1:      # a 1-d integer array of axes
        axis = tuple(axis.tolist())
    axes = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    out = []
    for a in axes:
        a = scalar(a)
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{op}: axis must be None, an int or a tuple of ints, got {axis!r}"[:200])
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))


def normalize_axis(op: str, axis, ndim: int) -> int:
    """One axis (an int, negatives allowed) as a non-negative int, for ops that act along one axis."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: axis must be one int, got {axis!r}")
    return normalize_axes(op, axis, ndim)[0]


def expand_reduced(grad, axes, shape):
    """Re-insert reduced axes (as size 1) so a reduced gradient broadcasts back to `shape`."""
    return grad.reshape([1 if i in axes else n for i, n in enumerate(shape)])


def check_finite_result(op: str, array, hint: str):
    """Raise instead of returning NaN where an op's domain was left (no silent NaN)."""
    xp = xp_of(array)
    if array.size and bool(xp.isnan(array).any()):
        raise FloatingPointError(f"{op}: the result contains NaN; {hint}")
    return array


def fast_kernel(op: str, x, *others):
    """The fast kernel chosen for `op` on x's device (tinyvision.kernels), or None for the NumPy code.

    `others` are the op's other input tensors, for kernels that accept only some inputs (cuda_c)."""
    from .. import kernels  # noqa: PLC0415 - kernels imports nothing from ops; late to keep import light
    if x.dtype not in (np.float32, np.float64):   # the kernels are compiled for these two
        return None
    impl = kernels.implementation(op, x.device, tuple(t.data for t in (x,) + others) if others else ())
    return None if impl == "reference" else kernels.kernel(op, impl)


class quiet_errors:
    """Silence NumPy's divide/invalid warnings inside an op that reports bad values itself."""

    def __init__(self, xp):
        self.state = xp.errstate(divide="ignore", invalid="ignore") if hasattr(xp, "errstate") else None

    def __enter__(self):
        if self.state is not None:
            self.state.__enter__()

    def __exit__(self, *exc):
        if self.state is not None:
            self.state.__exit__(*exc)


class overflow_allowed(quiet_errors):
    """Silence NumPy's overflow warning where an op detects the overflow and handles it itself."""

    def __init__(self, xp):
        self.state = xp.errstate(over="ignore") if hasattr(xp, "errstate") else None


__all__ = ["broadcast_shape", "check_finite_result",  "expand_reduced", "fast_kernel", "normalize_axes",
           "normalize_axis", "overflow_allowed", "product_threads", "quiet_errors", "tensors_for", "unbroadcast"]


def product_threads(data, multiply_adds: int):
    """Context for a matrix product of `multiply_adds` per BLAS call on `data`'s device: small CPU
    products run on one BLAS thread (kernels/_threads.py, blas_threads_for, explains why); a no-op
    for CuPy arrays."""
    from ..kernels._threads import blas_threads_for as cpu_rule  # noqa: PLC0415 - kernels imports nothing from ops
    return cpu_rule(multiply_adds) if isinstance(data, np.ndarray) else contextlib.nullcontext()
