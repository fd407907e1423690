"""Loss functions, each fused into one op with a closed-form, numerically stable backward.

reduction: "mean" (default), "sum", or "none" (the per-element losses).
"""
from __future__ import annotations

import numpy as np

from ..backend import xp_of
from ..checks import check_choice, check_int, check_number
from ..tensor import Tensor
from ._common import tensors_for
from .elementwise import sigmoid_array
from .reduce import log_softmax_array, softmax_array

__all__ = ["cross_entropy", "mse_loss", "binary_cross_entropy_with_logits"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op, reduction):
    check_choice(op, "reduction", reduction, _REDUCTIONS)


def _wide(xp, a):
    """float16 is widened to float32 for a loss's arithmetic (its largest value is 65504, so the
    sums and products inside a loss overflow long before its inputs do); the result is cast back."""
    return a.astype(np.float32) if a.dtype == np.float16 else a


def _narrow(a, dtype):
    """Cast a loss (or gradient) computed in float32 back to float16; a value beyond float16's range
    becomes inf, which is what it is in that dtype (no warning: it is the documented result)."""
    with np.errstate(over="ignore"):
        return a.astype(dtype, copy=False)


def _same_shape(op, names, a, b):
    """Losses compare element by element, so their inputs must have the same shape: broadcasting
    (B, 1) against (B,) would pair every prediction with every target (B x B terms) and average
    the wrong differences without a sound. PyTorch refuses this too."""
    if a.shape != b.shape:
        raise ValueError(f"{op}: {names[0]} has shape {a.shape} but {names[1]} has {b.shape}; they must be "
                         "equal (reshape one explicitly, e.g. logits.reshape(-1))")


def _reduce(op, losses, reduction, count):
    if reduction == "mean" and count == 0:
        raise ValueError(f"{op}: the mean of an empty loss is 0/0; got an input with no elements "
                         "(use reduction='sum' or 'none' if that is intended)")
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
    label_smoothing = check_number("cross_entropy", "label_smoothing", label_smoothing, 0.0, 1.0)
    ignore_index = check_int("cross_entropy", "ignore_index", ignore_index)
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
    z = _wide(xp, logits.data)
    # log p = (z - m) - log s (see log_softmax_array): exact for equal large logits
    log_p = log_softmax_array(z, -1)
    # (with C = 0 classes every target is ignore_index, checked above: there is nothing to pick)
    picked = xp.take_along_axis(log_p, safe_t[..., None], axis=-1)[..., 0] if c else xp.zeros(t.shape, z.dtype)
    losses = -picked if label_smoothing < 1 else xp.zeros(t.shape, z.dtype)    # (1 - 1) * inf would be NaN
    if label_smoothing:
        # the smoothing term mean_c(-log p_c) only when eps > 0: with eps = 0 it would add
        # 0 * inf = NaN for a masked (-inf) class. With eps > 0 and a masked class the loss is +inf,
        # the true cross-entropy of a target that puts mass eps/C on a class of probability 0.
        losses = (1 - label_smoothing) * losses - label_smoothing * (log_p.mean(axis=-1) if c else 0)
    losses = xp.where(valid, losses, 0)
    out, scale = _reduce("cross_entropy", losses, reduction, count)

    def backward(g):
        one_hot = xp.arange(c) == safe_t[..., None]
        q = (one_hot * (1 - label_smoothing) + label_smoothing / c).astype(z.dtype)
        gl = (g * scale)[..., None] if reduction == "none" else g * scale
        return (_narrow((softmax_array(z, -1) - q) * valid[..., None] * gl, logits.dtype),)
    return Tensor.from_op(_narrow(xp.asarray(out), logits.dtype), (logits,), backward, "cross_entropy")


def mse_loss(prediction, target, reduction: str = "mean") -> Tensor:
    """(prediction - target)^2.   d/dprediction = 2 (prediction - target) = -d/dtarget."""
    _check_reduction("mse_loss", reduction)
    prediction, target = tensors_for("mse_loss", prediction, target)
    _same_shape("mse_loss", ("prediction", "target"), prediction, target)
    xp = xp_of(prediction.data)
    diff = _wide(xp, prediction.data) - _wide(xp, target.data)
    out, scale = _reduce("mse_loss", diff * diff, reduction, prediction.size)

    def backward(g):
        d = _narrow(2 * diff * (g * scale), prediction.dtype)
        return d, -d
    return Tensor.from_op(_narrow(xp.asarray(out), prediction.dtype), (prediction, target), backward, "mse_loss")


def binary_cross_entropy_with_logits(logits, target, reduction: str = "mean") -> Tensor:
    """-[y log sigma(x) + (1 - y) log(1 - sigma(x))] from logits x, for targets y in [0, 1].

    Written as softplus(x) - x y, with softplus(x) = log(1 + e^x) = max(x, 0) + log(1 + e^-|x|):
    no exponent is ever positive, so x = +-1e4 gives the exact linear tail, not inf or NaN.
        d/dx = sigma(x) - y = (1 - y) sigma(x) - y sigma(-x),        d/dy = -x
    The second form of d/dx subtracts no nearly equal numbers when y is 0 or 1: at x = 40, y = 1,
    sigma(x) - y rounds to 1 - 1 = 0, while -sigma(-40) = -4.2e-18 is exact.
    """
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    logits, target = tensors_for("binary_cross_entropy_with_logits", logits, target)
    _same_shape("binary_cross_entropy_with_logits", ("logits", "target"), logits, target)
    xp = xp_of(logits.data)
    x, y = _wide(xp, logits.data), _wide(xp, target.data)
    if y.size and not (float(y.min()) >= 0 and float(y.max()) <= 1):   # NaN fails both comparisons
        raise ValueError(f"binary_cross_entropy_with_logits: targets must be in [0, 1], got values "
                         f"from {float(y.min())} to {float(y.max())}")
    # (max(x, 0) - x y) first: for y = 1, x > 0 it is exactly 0, and the small log1p term keeps every
    # digit (adding 30 and then subtracting it again would round the loss at x = 30 to 0)
    losses = (xp.maximum(x, 0) - x * y) + xp.log1p(xp.exp(-xp.abs(x)))
    out, scale = _reduce("binary_cross_entropy_with_logits", losses, reduction, logits.size)

    def backward(g):
        gs = g * scale
        dx = ((1 - y) * sigmoid_array(x) - y * sigmoid_array(-x)) * gs
        return _narrow(dx, logits.dtype), _narrow(-x * gs, logits.dtype)
    return Tensor.from_op(_narrow(xp.asarray(out), logits.dtype), (logits, target), backward,
                          "binary_cross_entropy_with_logits")
