"""Reductions over axes, and the softmax family built on a stable logsumexp.

Shapes: a reduction over `axis` removes those axes (or keeps them as size 1 with
keepdims=True). Its backward re-inserts the removed axes and broadcasts the gradient
back over them (`expand_reduced`), which is the transpose of "sum over an axis".
"""
from __future__ import annotations

import math

from ..backend import xp_of
from ..tensor import Tensor
from ._common import expand_reduced, fast_kernel, normalize_axes, normalize_axis, quiet_errors, tensors_for

__all__ = ["sum", "mean", "max", "var", "logsumexp", "softmax", "log_softmax"]


def _count(shape, axes) -> int:
    """How many entries a reduction over `axes` combines."""
    return math.prod(shape[a] for a in axes)


def sum(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """sum_i x_i over `axis`.   d/dx_i = 1: every summed entry gets the output's gradient."""
    (x,) = tensors_for("sum", x)
    axes = normalize_axes("sum", axis, x.ndim)
    xp = xp_of(x.data)

    def backward(g):
        g = g if keepdims else expand_reduced(g, axes, x.shape)
        return (xp.broadcast_to(g, x.shape).copy(),)
    return Tensor.from_op(x.data.sum(axis=axes, keepdims=keepdims), (x,), backward, "sum")


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    """(1/n) sum_i x_i.   d/dx_i = 1/n."""
    (x,) = tensors_for("mean", x)
    axes = normalize_axes("mean", axis, x.ndim)
    n = _count(x.shape, axes)
    if n == 0:
        raise ValueError(f"mean: cannot average over empty axes {axes} of shape {x.shape}")
    xp = xp_of(x.data)

    def backward(g):
        g = g if keepdims else expand_reduced(g, axes, x.shape)
        return (xp.broadcast_to(g / n, x.shape).copy(),)
    return Tensor.from_op(x.data.mean(axis=axes, keepdims=keepdims), (x,), backward, "mean")


def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """max_i x_i.   d/dx_i = 1/k for each of the k entries equal to the max, 0 elsewhere.

    Splitting the gradient evenly among ties is a valid subgradient and keeps the backward
    symmetric; without ties it is the usual "gradient goes to the argmax".
    """
    (x,) = tensors_for("max", x)
    if x.size == 0:
        raise ValueError(f"max: cannot take the max of an empty tensor of shape {x.shape}")
    axes = normalize_axes("max", axis, x.ndim)
    y = x.data.max(axis=axes, keepdims=True)

    def backward(g):
        g = g if keepdims else expand_reduced(g, axes, x.shape)
        winners = x.data == y
        return (winners * (g / winners.sum(axis=axes, keepdims=True, dtype=g.dtype)),)
    out = y if keepdims else y.reshape([n for i, n in enumerate(x.shape) if i not in axes])
    return Tensor.from_op(out, (x,), backward, "max")


def var(x, axis=None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance (1/(n - ddof)) sum_i (x_i - mean)^2.   d/dx_i = 2 (x_i - mean) / (n - ddof).

    ddof=0 is the biased (population) variance that layer norm uses, NumPy's default;
    PyTorch's torch.var defaults to ddof=1. (The mean's own dependence on x_i drops out
    because sum_i (x_i - mean) = 0.)
    """
    (x,) = tensors_for("var", x)
    axes = normalize_axes("var", axis, x.ndim)
    n = _count(x.shape, axes)
    if n - ddof <= 0:
        raise ValueError(f"var: need more than ddof={ddof} values along axes {axes}, got {n} (shape {x.shape})")
    centred = x.data - x.data.mean(axis=axes, keepdims=True)
    y = (centred * centred).sum(axis=axes, keepdims=keepdims) / (n - ddof)

    def backward(g):
        g = g if keepdims else expand_reduced(g, axes, x.shape)
        return (g * centred * (2 / (n - ddof)),)
    return Tensor.from_op(y, (x,), backward, "var")


def logsumexp_array(v, axis, keepdims=True):
    """log sum_i e^(v_i), computed as m + log sum_i e^(v_i - m) with m = max_i v_i.

    Subtracting the max keeps every exponent <= 0, so nothing overflows at |v| = 1e4. A row
    that is all -inf (everything masked) has m = -inf; we shift it by 0 instead so that the
    result is -inf rather than NaN from (-inf) - (-inf).
    """
    xp = xp_of(v)
    m = v.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros((), v.dtype))
    with quiet_errors(xp):
        out = m + xp.log(xp.exp(v - m).sum(axis=axis, keepdims=True))
    return out if keepdims else out.squeeze(axis=axis)


def softmax_array(v, axis):
    """e^(v_i - m) / sum_j e^(v_j - m): the stable softmax; an all -inf row gives all zeros."""
    xp = xp_of(v)
    m = v.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros((), v.dtype))
    e = xp.exp(v - m)
    s = e.sum(axis=axis, keepdims=True)
    return e / xp.where(s > 0, s, xp.ones((), v.dtype))


def logsumexp(x, axis=-1, keepdims: bool = False) -> Tensor:
    """log sum_i e^(x_i).   d/dx_i = e^(x_i) / sum_j e^(x_j) = softmax(x)_i."""
    (x,) = tensors_for("logsumexp", x)
    axes = normalize_axes("logsumexp", axis, x.ndim)
    y = logsumexp_array(x.data, axes, keepdims=True)

    def backward(g):
        g = g if keepdims else expand_reduced(g, axes, x.shape)
        with quiet_errors(xp_of(g)):
            p = xp_of(g).exp(x.data - y)
        return (g * xp_of(g).nan_to_num(p),)
    out = y if keepdims else y.reshape([n for i, n in enumerate(x.shape) if i not in axes])
    return Tensor.from_op(out, (x,), backward, "logsumexp")


def softmax(x, axis: int = -1) -> Tensor:
    """y_i = e^(x_i) / sum_j e^(x_j).

    Backward: the Jacobian is dy_i/dx_k = y_i (delta_ik - y_k), so
        dL/dx_k = sum_i g_i y_i (delta_ik - y_k) = y_k (g_k - sum_i g_i y_i).
    """
    (x,) = tensors_for("softmax", x)
    axis = normalize_axis("softmax", axis, x.ndim)
    fast = fast_kernel("softmax", x) if axis == x.ndim - 1 else None
    if fast is not None:  # the same math in one compiled pass per row (tinyvision/kernels)
        rows = xp_of(x.data).ascontiguousarray(x.data).reshape(-1, x.shape[-1])
        y = fast.forward(rows)
        return Tensor.from_op(y.reshape(x.shape), (x,),
                              lambda g: (fast.backward(y, g.reshape(y.shape)).reshape(x.shape),), "softmax")
    y = softmax_array(x.data, axis)

    def backward(g):
        return (y * (g - (g * y).sum(axis=axis, keepdims=True)),)
    return Tensor.from_op(y, (x,), backward, "softmax")


def log_softmax(x, axis: int = -1) -> Tensor:
    """y_i = x_i - logsumexp(x).   dL/dx_k = g_k - softmax(x)_k sum_i g_i."""
    (x,) = tensors_for("log_softmax", x)
    axis = normalize_axis("log_softmax", axis, x.ndim)
    xp = xp_of(x.data)
    lse = logsumexp_array(x.data, axis)
    # a row that is all -inf (fully masked) stays -inf instead of (-inf) - (-inf) = NaN
    y = xp.where(xp.isneginf(lse), xp.asarray(-xp.inf, dtype=x.dtype), x.data - xp.where(xp.isneginf(lse), 0, lse))

    def backward(g):
        return (g - softmax_array(x.data, axis) * g.sum(axis=axis, keepdims=True),)
    return Tensor.from_op(y, (x,), backward, "log_softmax")

