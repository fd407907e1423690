"""Reductions over axes, and the softmax family built on a stable logsumexp.

Shapes: a reduction over `axis` removes those axes (or keeps them as size 1 with
keepdims=True). Its backward re-inserts the removed axes and broadcasts the gradient
back over them (`expand_reduced`), which is the transpose of "sum over an axis".
"""
from __future__ import annotations

import math

from ..backend import xp_of
from ..checks import check_bool, check_int
from ..tensor import Tensor
from ._common import expand_reduced, fast_kernel, normalize_axes, normalize_axis, quiet_errors, tensors_for

__all__ = ["sum", "mean", "max", "var", "logsumexp", "softmax", "log_softmax"]


def _count(shape, axes) -> int:
    """How many entries a reduction over `axes` combines."""
    return math.prod(shape[a] for a in axes)


def sum(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """sum_i x_i over `axis`.   d/dx_i = 1: every summed entry gets the output's gradient."""
    (x,) = tensors_for("sum", x)
    keepdims = check_bool("sum", "keepdims", keepdims)
    axes = normalize_axes("sum", axis, x.ndim)
    xp = xp_of(x.data)

    def backward(g):
        g = g if keepdims else expand_reduced(g, axes, x.shape)
        return (xp.broadcast_to(g, x.shape).copy(),)
    return Tensor.from_op(x.data.sum(axis=axes, keepdims=keepdims), (x,), backward, "sum")


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    """(1/n) sum_i x_i.   d/dx_i = 1/n."""
    (x,) = tensors_for("mean", x)
    keepdims = check_bool("mean", "keepdims", keepdims)
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
    keepdims = check_bool("max", "keepdims", keepdims)
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
    keepdims = check_bool("var", "keepdims", keepdims)
    ddof = check_int("var", "ddof", ddof, low=0)
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


def _shift(v, axis):
    """The row maximum m (kept dims) that the softmax family subtracts, made safe to subtract.

    Subtracting the max keeps every exponent <= 0, so nothing overflows at |v| = 1e4. A row that
    is all -inf (everything masked) has m = -inf, and an empty axis has no max at all: both are
    shifted by 0 instead, so that (-inf) - (-inf) never makes a NaN.
    """
    xp = xp_of(v)
    axes = tuple(a % v.ndim for a in (axis if isinstance(axis, tuple) else (axis,)))
    if any(v.shape[a] == 0 for a in axes):
        return xp.zeros([1 if i in axes else n for i, n in enumerate(v.shape)], v.dtype)
    m = v.max(axis=axis, keepdims=True)
    return xp.where(xp.isfinite(m), m, xp.zeros((), v.dtype))


def _shifted_exp_sum(v, axis):
    """(m, e, s): m = _shift(v), e = e^(v - m), s = sum e over `axis` (kept dims)."""
    m = _shift(v, axis)
    with quiet_errors(xp_of(v)):
        e = xp_of(v).exp(v - m)
    return m, e, e.sum(axis=axis, keepdims=True)


def logsumexp_array(v, axis, keepdims=True):
    """log sum_i e^(v_i), computed as m + log sum_i e^(v_i - m) with m = max_i v_i.

    An all -inf row, and an empty axis (a sum of nothing is 0), give -inf.
    """
    m, _, s = _shifted_exp_sum(v, axis)
    with quiet_errors(xp_of(v)):
        out = m + xp_of(v).log(s)
    return out if keepdims else out.squeeze(axis=axis)


def log_softmax_array(v, axis):
    """v_i - logsumexp(v), computed as (v_i - m) - log s, never as v_i - (m + log s).

    The order matters in floating point: for four float32 logits of 1e8, m + log 4 rounds back to
    1e8 (the spacing of float32 there is 8), so v - (m + log s) would be 0 instead of -log 4.
    Subtracting m first leaves small numbers, where log s = 1.386 is kept exactly. An all -inf row
    stays -inf rather than NaN.
    """
    xp = xp_of(v)
    m, _, s = _shifted_exp_sum(v, axis)
    with quiet_errors(xp):
        out = (v - m) - xp.log(s)
    return xp.where(s > 0, out, xp.asarray(-xp.inf, dtype=v.dtype))


def softmax_array(v, axis):
    """e^(v_i - m) / sum_j e^(v_j - m): the stable softmax; an all -inf row gives all zeros."""
    xp = xp_of(v)
    _, e, s = _shifted_exp_sum(v, axis)
    return e / xp.where(s > 0, s, xp.ones((), v.dtype))


def logsumexp(x, axis=-1, keepdims: bool = False) -> Tensor:
    """log sum_i e^(x_i).   d/dx_i = e^(x_i) / sum_j e^(x_j) = softmax(x)_i.

    Over an empty axis the sum has no terms: the result is log 0 = -inf (as in NumPy and PyTorch).
    """
    (x,) = tensors_for("logsumexp", x)
    keepdims = check_bool("logsumexp", "keepdims", keepdims)
    axes = normalize_axes("logsumexp", axis, x.ndim)
    y = logsumexp_array(x.data, axes, keepdims=True)

    def backward(g):
        # softmax(x), not e^(x - y): y = m + log s is rounded to the spacing of m, and at x ~ 1e8
        # in float32 e^(x - y) would be 1 instead of 1/4
        g = g if keepdims else expand_reduced(g, axes, x.shape)
        return (g * softmax_array(x.data, axes),)
    out = y if keepdims else y.reshape([n for i, n in enumerate(x.shape) if i not in axes])
    return Tensor.from_op(out, (x,), backward, "logsumexp")


def softmax(x, axis: int = -1) -> Tensor:
    """y_i = e^(x_i) / sum_j e^(x_j).

    Backward: the Jacobian is dy_i/dx_k = y_i (delta_ik - y_k), so
        dL/dx_k = sum_i g_i y_i (delta_ik - y_k) = y_k (g_k - sum_i g_i y_i).
    """
    (x,) = tensors_for("softmax", x)
    axis = normalize_axis("softmax", axis, x.ndim)
    if (fast := fast_kernel("softmax", x) if axis == x.ndim - 1 and x.size else None) is not None:
        return _softmax_kernel(fast, x)    # the same math in one compiled pass per row (tinyvision/kernels)
    y = softmax_array(x.data, axis)

    def backward(g):
        return (y * (g - (g * y).sum(axis=axis, keepdims=True)),)
    return Tensor.from_op(y, (x,), backward, "softmax")


def _softmax_kernel(fast, x) -> Tensor:
    """softmax over the last axis by a kernel: its rows in, its rows out."""
    rows = xp_of(x.data).ascontiguousarray(x.data).reshape(-1, x.shape[-1])
    y = fast.forward(rows)
    return Tensor.from_op(y.reshape(x.shape), (x,),
                          lambda g: (fast.backward(y, g.reshape(y.shape)).reshape(x.shape),), "softmax")


def log_softmax(x, axis: int = -1) -> Tensor:
    """y_i = x_i - logsumexp(x).   dL/dx_k = g_k - softmax(x)_k sum_i g_i."""
    (x,) = tensors_for("log_softmax", x)
    axis = normalize_axis("log_softmax", axis, x.ndim)
    y = log_softmax_array(x.data, axis)

    def backward(g):
        return (g - softmax_array(x.data, axis) * g.sum(axis=axis, keepdims=True),)
    return Tensor.from_op(y, (x,), backward, "log_softmax")

