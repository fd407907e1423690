"""Ops that neural-network layers are made of: layer, group and batch norm, dropout, embedding lookup.

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

__all__ = ["layer_norm", "group_norm", "batch_norm", "dropout", "embedding"]


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


# --- normalisation over channel groups and over the batch (conv nets) ----------------------------------
# Both normalise x (B, C, *spatial) over some set of values per row, then scale and shift each channel:
#     group_norm:  one row per (image, group of C/G channels): statistics over the group's channels and pixels
#     batch_norm:  one row per channel: statistics over every image and pixel of the batch
# Arranged as rows, the math is layer norm's (normalize_rows), and so is the backward, row by row:
#     dL/dx_row = r (h - mean(h) - x_hat mean(h x_hat)),   h = g * weight[channel]
#     dL/dweight[c] = sum of g x_hat over the batch and pixels of channel c,   dL/dbias[c] = sum of g there
def _channel_params(op: str, x, weight, bias):
    if x.ndim < 2:
        raise ValueError(f"{op}: x must be (B, C, ...) with a channel axis, got shape {x.shape}")
    c = x.shape[1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (c,):
            raise ValueError(f"{op}: {name} has shape {p.shape}, expected ({c},), one per channel of x {x.shape}")


def _normalise_rows_then_affine(op, tensors, x, weight, bias, eps, to_rows, from_rows, stats=None):
    """y = x_hat * weight + bias per channel, x_hat normalised row by row (to_rows / from_rows say how
    x is cut into rows). `stats`: fixed (mean, r) per row instead of the rows' own (batch norm in eval)."""
    xp = xp_of(x.data)
    # float16 statistics overflow early: computed in float32, as for layer norm
    v = x.data.astype(xp.float32) if x.dtype == xp.float16 else x.data
    rows = to_rows(v)
    if stats is None:
        x_hat_rows, r = normalize_rows(rows, eps)
    else:
        mean, r = stats
        x_hat_rows = (rows - mean) * r
    x_hat = from_rows(x_hat_rows)
    per_channel = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    y = x_hat if weight is None else x_hat * weight.data.reshape(per_channel)
    y = y if bias is None else y + bias.data.reshape(per_channel)
    others = (0,) + tuple(range(2, x.ndim))                  # every axis but the channel's

    def backward(g):
        g = g.astype(v.dtype, copy=False)
        h = to_rows(g if weight is None else g * weight.data.reshape(per_channel))
        if stats is None:
            dx_rows = r * (h - h.mean(axis=-1, keepdims=True) - x_hat_rows * (h * x_hat_rows).mean(axis=-1, keepdims=True))
        else:                                                # fixed statistics: an affine map of x
            dx_rows = h * r
        grads = [from_rows(dx_rows).astype(x.dtype, copy=False)]
        if weight is not None:
            grads.append((g * x_hat).sum(axis=others).astype(x.dtype, copy=False))
        if bias is not None:
            grads.append(g.sum(axis=others).astype(x.dtype, copy=False))
        return tuple(grads)
    return Tensor.from_op(y.astype(x.dtype, copy=False), tuple(tensors), backward, op)


def group_norm(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """Group normalisation (Wu & He 2018): x (B, C, *spatial), the C channels in G groups of C/G.

        mu, sigma^2 over each image's group (its C/G channels and all their pixels; biased variance)
        y[b, c] = (x[b, c] - mu[b, g(c)]) / sqrt(sigma^2[b, g(c)] + eps) * weight[c] + bias[c]
    No statistics cross the batch, so it behaves the same in training and in evaluation and at batch
    size 1 (diffusion U-Nets use it for that). G = 1 normalises each whole image (layer norm over
    (C, H, W)); G = C each channel of each image (instance norm).
    """
    tensors = tensors_for("group_norm", *[a for a in (x, weight, bias) if a is not None])
    x = tensors[0]
    weight = tensors[1] if weight is not None else None
    bias = tensors[-1] if bias is not None else None
    _channel_params("group_norm", x, weight, bias)
    groups = check_int("group_norm", "num_groups", num_groups, low=1)
    if x.shape[1] % groups:
        raise ValueError(f"group_norm: num_groups={groups} does not divide the C={x.shape[1]} channels of x {x.shape}")
    eps = check_number("group_norm", "eps", eps, low=0.0, low_open=True)
    b = x.shape[0]
    if x.size == 0:
        return Tensor.from_op(xp_of(x.data).zeros(x.shape, x.dtype), tuple(tensors),
                              lambda g: tuple(xp_of(x.data).zeros(t.shape, t.dtype) for t in tensors), "group_norm")
    return _normalise_rows_then_affine("group_norm", tensors, x, weight, bias, eps,
                                       to_rows=lambda a: a.reshape(b * groups, -1),
                                       from_rows=lambda rows: rows.reshape(x.shape))


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalisation (Ioffe & Szegedy 2015, Algorithm 1): x (B, C, *spatial), one row per channel.

    training=True: mu, sigma^2 of each channel over the batch and the pixels (biased variance, n values),
        y = (x - mu) / sqrt(sigma^2 + eps) * weight + bias, differentiated through mu and sigma^2; and,
        when given, running_mean and running_var (C,) are updated in place:
            running_mean <- (1 - momentum) running_mean + momentum mu
            running_var  <- (1 - momentum) running_var  + momentum sigma^2 n / (n - 1)   (unbiased, as PyTorch)
    training=False: the running statistics stand in for mu and sigma^2 (required), so the op is a fixed
        affine map of x: dL/dx = g weight / sqrt(running_var + eps). With a fresh layer's statistics
        (mean 0, var 1), weight 1 and bias 0 it is the identity up to 1/sqrt(1 + eps).
    The running statistics are arrays or Tensors and never receive gradients. A channel with a single
    value in training has no spread to normalise by: that is an error, as in PyTorch.
    """
    tensors = tensors_for("batch_norm", *[a for a in (x, weight, bias) if a is not None])
    x = tensors[0]
    weight = tensors[1] if weight is not None else None
    bias = tensors[-1] if bias is not None else None
    _channel_params("batch_norm", x, weight, bias)
    training = check_bool("batch_norm", "training", training)
    momentum = check_number("batch_norm", "momentum", momentum, low=0.0, high=1.0)
    eps = check_number("batch_norm", "eps", eps, low=0.0, low_open=True)
    xp, c = xp_of(x.data), x.shape[1]
    stats = {}
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is None:
            continue
        array = t.data if isinstance(t, Tensor) else t
        if not hasattr(array, "shape") or tuple(array.shape) != (c,) or xp_of(array) is not xp \
                or getattr(array, "dtype", None) is None or array.dtype.kind != "f":
            raise ValueError(f"batch_norm: {name} must be a float array or Tensor of shape ({c},) on x's device, "
                             f"got {type(array).__name__} {getattr(array, 'shape', '')}")
        stats[name] = array
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    n = x.size // c if c else 0
    spatial = x.shape[2:]

    def to_rows(a):
        return xp.moveaxis(a, 1, 0).reshape(c, -1)          # (C, B * pixels)

    def from_rows(rows):
        return xp.moveaxis(rows.reshape((c, x.shape[0]) + spatial), 0, 1)

    if not training:
        if not stats:
            raise ValueError("batch_norm: training=False normalises with running_mean and running_var; give them "
                             "(or training=True to use the batch's own statistics)")
        r = 1 / xp.sqrt(stats["running_var"].astype(xp.float64) + eps)
        mean, r = (stats["running_mean"].astype(x.dtype if x.dtype != xp.float16 else xp.float32)[:, None],
                   r.astype(x.dtype if x.dtype != xp.float16 else xp.float32)[:, None])
        return _normalise_rows_then_affine("batch_norm", tensors, x, weight, bias, eps, to_rows, from_rows, (mean, r))
    if n < 2:
        raise ValueError(f"batch_norm: training needs more than one value per channel to normalise, got x {x.shape}")
    out = _normalise_rows_then_affine("batch_norm", tensors, x, weight, bias, eps, to_rows, from_rows)
    if stats:
        rows = to_rows(x.data.astype(xp.float64))
        mu, var = rows.mean(axis=1), rows.var(axis=1)
        for name, value in (("running_mean", mu), ("running_var", var * n / (n - 1))):
            array = stats[name]
            array[...] = ((1 - momentum) * array + momentum * value).astype(array.dtype)
    return out


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
