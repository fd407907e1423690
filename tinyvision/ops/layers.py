"""Ops that neural-network layers are made of: layer norm, dropout, embedding lookup.

Layer norm is one fused op rather than a chain of mean/var/div ops: its hand-derived
backward needs one pass and no saved intermediates beyond x_hat and 1/sigma.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import scatter_add, xp_of
from ..checks import check_bool, check_int, check_number
from ..kernels import KernelDeclined
from ..tensor import Tensor
from ._common import fast_kernel, overflow_allowed, quiet_errors, tensors_for

__all__ = ["layer_norm", "dropout", "embedding"]


def layer_norm(x, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """Normalise over the last axis D, then scale and shift (Ba, Kiros & Hinton 2016, eq. 4).

        mu = mean(x),  sigma^2 = mean((x - mu)^2)  (biased),  r = 1 / sqrt(sigma^2 + eps)
        x_hat = (x - mu) r,   y = x_hat * weight + bias           x: (..., D); weight, bias: (D,)

    Backward. With h = g * weight (the gradient reaching x_hat) and means over D:
        dL/dx = r * (h - mean(h) - x_hat * mean(h * x_hat))
    The two subtracted terms are the gradient flowing through mu and through sigma: moving
    all x_i together, or scaling them about mu, does not change x_hat, so h loses its
    components along those two directions.
        dL/dweight = sum over (...) of g * x_hat,     dL/dbias = sum over (...) of g
    """
    args = [a for a in (x, weight, bias) if a is not None]
    tensors = tensors_for("layer_norm", *args)
    x = tensors[0]
    weight = tensors[1] if weight is not None else None
    bias = tensors[-1] if bias is not None else None
    if x.ndim == 0:
        raise ValueError("layer_norm: x must have at least one axis (the features D)")
    d = x.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (d,):
            raise ValueError(f"layer_norm: {name} has shape {p.shape}, expected ({d},) to match x's last axis of shape {x.shape}")
    xp = xp_of(x.data)
    # eps > 0 keeps 1/sqrt(var + eps) finite; a NaN or inf eps would make every output NaN or 0
    eps = check_number("layer_norm", "eps", eps, low=0.0, low_open=True)
    # a fused kernel (one pass for the statistics, one for the output) when the switch picks one and it
    # does not decline (rows whose deviations overflow the dtype: the reference below rescales them)
    if (fast := fast_kernel("layer_norm", x) if x.size else None) is not None and \
            (y := _layer_norm_kernel(fast, tensors, x, weight, bias, eps)) is not None:
        return y
    if x.size == 0:   # no rows, or D = 0: the empty result, and empty gradients
        return Tensor.from_op(xp.zeros(x.shape, x.dtype), tuple(tensors),
                              lambda g: tuple(xp.zeros(t.shape, t.dtype) for t in tensors), "layer_norm")
    # float16 statistics overflow at |x| ~ 256 ((x - mu)^2 > 65504): compute in float32, as PyTorch does
    v = x.data.astype(xp.float32) if x.dtype == xp.float16 else x.data
    x_hat, r = normalize_rows(v, eps)
    y = x_hat
    if weight is not None:
        y = y * weight.data
    if bias is not None:
        y = y + bias.data
    lead = tuple(range(x.ndim - 1))

    def backward(g):
        g = g.astype(v.dtype, copy=False)
        h = g * weight.data if weight is not None else g
        dx = r * (h - h.mean(axis=-1, keepdims=True) - x_hat * (h * x_hat).mean(axis=-1, keepdims=True))
        grads = [dx.astype(x.dtype, copy=False)]
        if weight is not None:
            grads.append((g * x_hat).sum(axis=lead).astype(x.dtype, copy=False))
        if bias is not None:
            grads.append(g.sum(axis=lead).astype(x.dtype, copy=False))
        return tuple(grads)
    return Tensor.from_op(y.astype(x.dtype, copy=False), tuple(tensors), backward, "layer_norm")


def _layer_norm_kernel(fast, tensors, x, weight, bias, eps):
    """layer_norm by a kernel, or None when the kernel declines the input (kernels.KernelDeclined)."""
    xp, d = xp_of(x.data), x.shape[-1]
    rows = xp.ascontiguousarray(x.data).reshape(-1, d)
    w, b = (None if p is None else p.data for p in (weight, bias))
    try:
        y_rows, mean, rstd = fast.forward(rows, w, b, eps)
    except KernelDeclined:
        return None

    def backward(g):
        dx, dw, db = fast.backward(xp.ascontiguousarray(g).reshape(-1, d), rows, mean, rstd, w)
        return (dx.reshape(x.shape),) + ((dw,) if weight is not None else ()) + ((db,) if bias is not None else ())
    return Tensor.from_op(y_rows.reshape(x.shape), tuple(tensors), backward, "layer_norm")


def normalize_rows(v, eps):
    """(x_hat, r): x_hat = (v - mu) r and r = 1 / sqrt(sigma^2 + eps), statistics over the last axis.

    The plain formula squares x - mu, which overflows once |x - mu| passes the square root of the
    dtype's largest value (1.8e19 in float32): sigma^2 = inf, r = 0, and the row would silently come
    out as zeros. Such rows (rare; found by checking sigma^2) are redone with the row scaled by
    s = max |v| first, which changes nothing in exact arithmetic:
        x_hat = (v/s - mean(v/s)) / sqrt(var(v/s) + eps/s^2),   r = 1 / (s sqrt(var(v/s) + eps/s^2))
    """
    xp = xp_of(v)
    with overflow_allowed(xp), quiet_errors(xp):   # an overflow is detected and the row redone just below
        mu = v.mean(axis=-1, keepdims=True)
        centred = v - mu
        var = (centred * centred).mean(axis=-1, keepdims=True)
        r = 1 / xp.sqrt(var + v.dtype.type(eps))
        x_hat = centred * r
    overflowed = ~xp.isfinite(var[..., 0]) & xp.isfinite(v).all(axis=-1)
    if bool(overflowed.any()):
        rows = v[overflowed]
        s = xp.abs(rows).max(axis=-1, keepdims=True)
        scaled = rows / s
        c = scaled - scaled.mean(axis=-1, keepdims=True)
        with overflow_allowed(xp), quiet_errors(xp):   # s * s = inf makes eps / s^2 = 0, to the last bit
            root = xp.sqrt((c * c).mean(axis=-1, keepdims=True) + v.dtype.type(eps) / (s * s))
            # root = 0: a row of equal values whose eps / s^2 underflowed; then x_hat = 0 and r = 1/sqrt(eps)
            x_hat[overflowed] = xp.where(root > 0, c / root, 0)
            r[overflowed] = xp.where(root > 0, 1 / (s * root), 1 / math.sqrt(eps))
    return x_hat, r


def dropout(x, p: float, training: bool = True, seed=None) -> Tensor:
    """Zero each entry with probability p and scale the survivors by 1/(1-p) ("inverted" dropout).

    The scaling keeps E[y] = x, so evaluation (training=False) is the identity. Backward: the
    same mask and scale, d/dx = mask / (1 - p). `seed` (an int or numpy Generator) is required
    when entries are actually dropped, so that every run is reproducible.
    """
    (x,) = tensors_for("dropout", x)
    p = check_number("dropout", "p", p, 0.0, 1.0)
    if not check_bool("dropout", "training", training) or p == 0:
        return x
    if seed is None:
        raise ValueError("dropout: pass seed= (an int or numpy.random.Generator) so the mask is reproducible")
    if not isinstance(seed, np.random.Generator):
        seed = check_int("dropout", "seed", seed, low=0)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    xp = xp_of(x.data)
    keep = xp.asarray(rng.random(x.shape) >= p)
    scale = x.dtype.type(0 if p == 1 else 1 / (1 - p))
    mask = keep * scale
    return Tensor.from_op(x.data * mask, (x,), lambda g: (g * mask,), "dropout")


def embedding(indices, weight) -> Tensor:
    """Row lookup: out[..., :] = weight[indices[...], :].   indices: int (...), weight: (V, D).

    Backward: row v of dL/dweight is the sum of g over every position whose index is v
    (scatter_add), which is the matmul backward of one_hot(indices) @ weight without ever
    building the one-hot matrix.
    """
    (weight,) = tensors_for("embedding", weight)
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be (V, D), got shape {weight.shape}")
    xp = xp_of(weight.data)
    idx = indices.data if isinstance(indices, Tensor) else indices
    idx = xp.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {idx.dtype}")
    v = weight.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= v):
        raise IndexError(f"embedding: indices must be in [0, {v}) for a table of {v} rows; "
                         f"got values from {int(idx.min())} to {int(idx.max())}")

    def backward(g):
        grad = xp.zeros_like(weight.data)
        scatter_add(grad, idx.reshape(-1), g.reshape(-1, weight.shape[1]))
        return (grad,)
    return Tensor.from_op(weight.data[idx], (weight,), backward, "embedding")
