"""Loss functions, each fused into one op with a closed-form, numerically stable backward.

reduction: "mean" (default), "sum", or "none" (the per-element losses).
"""
from __future__ import annotations

import math

from ..backend import xp_of
from ..tensor import Tensor
from ._common import broadcast_shape, tensors_for, unbroadcast
from .elementwise import sigmoid_array
from .reduce import logsumexp_array, softmax_array

__all__ = ["cross_entropy", "mse_loss", "binary_cross_entropy_with_logits"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(losses, reduction, count):
    if reduction == "none":
        return losses, 1.0
    total = losses.sum()
    return (total / count, 1.0 / count) if reduction == "mean" else (total, 1.0)


def cross_entropy(logits, target, ignore_index: int = -100, label_smoothing: float = 0.0,
                  reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy of integer class targets.

    logits: (..., C); target: integers (...), each in [0, C) or equal to ignore_index.
    With q the target distribution, (1 - eps) on the true class plus eps/C everywhere
    (label smoothing, Szegedy et al. 2016), and log p = log_softmax(logits):
        loss_n = -sum_c q_c log p_c,            "mean" averages over non-ignored positions.
        dloss_n/dlogits = p - q                 (zero for ignored positions)
    """
    _check_reduction("cross_entropy", reduction)
    (logits,) = tensors_for("cross_entropy", logits)
    xp = xp_of(logits.data)
    t = xp.asarray(target.data if isinstance(target, Tensor) else target)
    if logits.ndim == 0 or t.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: target has shape {tuple(t.shape)}, expected logits' shape without "
                         f"the class axis, {logits.shape[:-1]} (logits are {logits.shape} = (..., C))")
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class indices, got dtype {t.dtype}")
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    c = logits.shape[-1]
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= c))
    if bool(bad.any()):
        raise IndexError(f"cross_entropy: targets must be in [0, {c}) or equal ignore_index={ignore_index}; "
                         f"found {int(t[bad].reshape(-1)[0])}")
    count = int(valid.sum())
    if reduction == "mean" and count == 0:
        raise ValueError(f"cross_entropy: every target equals ignore_index={ignore_index}, so the mean "
                         "loss is 0/0 (check the label masking)")
    safe_t = xp.where(valid, t, 0)
    log_p = logits.data - logsumexp_array(logits.data, -1)
    picked = xp.take_along_axis(log_p, safe_t[..., None], axis=-1)[..., 0]
    losses = -(1 - label_smoothing) * picked - label_smoothing * log_p.mean(axis=-1)
    losses = xp.where(valid, losses, 0).astype(logits.dtype)
    out, scale = _reduce(losses, reduction, count)

    def backward(g):
        one_hot = xp.arange(c) == safe_t[..., None]
        q = (one_hot * (1 - label_smoothing) + label_smoothing / c).astype(logits.dtype)
        gl = (g * scale)[..., None] if reduction == "none" else g * scale
        return ((softmax_array(logits.data, -1) - q) * valid[..., None] * gl,)
    return Tensor.from_op(xp.asarray(out, dtype=logits.dtype), (logits,), backward, "cross_entropy")


def mse_loss(prediction, target, reduction: str = "mean") -> Tensor:
    """(prediction - target)^2.   d/dprediction = 2 (prediction - target) = -d/dtarget."""
    _check_reduction("mse_loss", reduction)
    prediction, target = tensors_for("mse_loss", prediction, target)
    if prediction.shape != target.shape:
        # (B, 1) against (B,) would broadcast to (B, B) and average the wrong differences
        raise ValueError(f"mse_loss: prediction has shape {prediction.shape} but target has {target.shape}; "
                         "they must be equal (reshape one explicitly)")
    shape = prediction.shape
    xp = xp_of(prediction.data)
    diff = prediction.data - target.data
    n = math.prod(shape)
    out, scale = _reduce(diff * diff, reduction, n)

    def backward(g):
        d = 2 * diff * (g * scale)
        return unbroadcast(d, prediction.shape), unbroadcast(-d, target.shape)
    return Tensor.from_op(xp.asarray(out, dtype=prediction.dtype), (prediction, target), backward, "mse_loss")


def binary_cross_entropy_with_logits(logits, target, reduction: str = "mean") -> Tensor:
    """-[y log sigma(x) + (1 - y) log(1 - sigma(x))] from logits x, for targets y in [0, 1].

    Written as softplus(x) - x y, with softplus(x) = log(1 + e^x) = max(x, 0) + log(1 + e^-|x|):
    no exponent is ever positive, so x = +-1e4 gives the exact linear tail, not inf or NaN.
        d/dx = sigma(x) - y,        d/dy = -x
    """
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    logits, target = tensors_for("binary_cross_entropy_with_logits", logits, target)
    shape = broadcast_shape("binary_cross_entropy_with_logits", logits.shape, target.shape)
    xp = xp_of(logits.data)
    x, y = logits.data, target.data
    if y.size and (float(y.min()) < 0 or float(y.max()) > 1):
        raise ValueError(f"binary_cross_entropy_with_logits: targets must be in [0, 1], got values "
                         f"from {float(y.min())} to {float(y.max())}")
    losses = xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x))) - x * y
    n = math.prod(shape)
    out, scale = _reduce(losses, reduction, n)

    def backward(g):
        gs = g * scale
        return unbroadcast((sigmoid_array(x) - y) * gs, logits.shape), unbroadcast(-x * gs, target.shape)
    return Tensor.from_op(xp.asarray(out, dtype=logits.dtype), (logits, target), backward,
                           "binary_cross_entropy_with_logits")
