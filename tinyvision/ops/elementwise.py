"""Elementwise ops: arithmetic with broadcasting, and the pointwise functions of deep learning.

Each op computes its forward on raw arrays and defines `backward(g)` right beside it,
with the local derivative in a comment. Broadcast inputs get `unbroadcast(...)` in the
backward: an input copied along an axis receives the sum of the copies' gradients.
"""
from __future__ import annotations

import math
import numbers

from ..backend import xp_of
from ..special import erf
from ..checks import check_number, check_real
from ..tensor import Tensor
from ._common import broadcast_shape, check_finite_result, fast_kernel, quiet_errors, tensors_for, unbroadcast

__all__ = ["add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "tanh", "sigmoid",
           "relu", "leaky_relu", "silu", "gelu", "clip", "where", "masked_fill"]


def _binary(op, a, b):
    a, b = tensors_for(op, a, b)
    broadcast_shape(op, a.shape, b.shape)
    return a, b


def add(a, b) -> Tensor:
    """a + b.   d/da = 1, d/db = 1."""
    a, b = _binary("add", a, b)

    def backward(g):
        return unbroadcast(g, a.shape), unbroadcast(g, b.shape)
    return Tensor.from_op(a.data + b.data, (a, b), backward, "add")


def sub(a, b) -> Tensor:
    """a - b.   d/da = 1, d/db = -1."""
    a, b = _binary("sub", a, b)

    def backward(g):
        return unbroadcast(g, a.shape), unbroadcast(-g, b.shape)
    return Tensor.from_op(a.data - b.data, (a, b), backward, "sub")


def mul(a, b) -> Tensor:
    """a * b.   d/da = b, d/db = a."""
    a, b = _binary("mul", a, b)

    def backward(g):
        return unbroadcast(g * b.data, a.shape), unbroadcast(g * a.data, b.shape)
    return Tensor.from_op(a.data * b.data, (a, b), backward, "mul")


def div(a, b) -> Tensor:
    """a / b.   d/da = 1/b, d/db = -a/b^2."""
    a, b = _binary("div", a, b)

    def backward(g):
        return unbroadcast(g / b.data, a.shape), unbroadcast(-g * a.data / (b.data * b.data), b.shape)
    return Tensor.from_op(a.data / b.data, (a, b), backward, "div")


def neg(x) -> Tensor:
    """-x.   d/dx = -1."""
    (x,) = tensors_for("neg", x)
    return Tensor.from_op(-x.data, (x,), lambda g: (-g,), "neg")


def pow(x, exponent) -> Tensor:  # noqa: A001 - the name users expect
    """x ** p for a constant number p.   d/dx = p * x^(p-1).

    Integer powers are written as products (x*x*x, not x**3.0): for floats, NumPy's power
    goes through exp/log and is many times slower than two multiplications.
    """
    (x,) = tensors_for("pow", x)
    if not isinstance(exponent, numbers.Real) or isinstance(exponent, bool):
        raise TypeError(f"pow: the exponent must be a number, got {type(exponent).__name__} "
                        "(a tensor exponent is exp(p * log(x)))")
    p = float(exponent)
    if not math.isfinite(p):
        raise ValueError(f"pow: the exponent must be finite, got {exponent!r}")

    def power(base, q):
        if q == int(q) and 0 <= q <= 4:
            out = xp_of(base).ones_like(base)
            for _ in range(int(q)):
                out = out * base
            return out
        return base ** base.dtype.type(q)

    with quiet_errors(xp_of(x.data)):
        y = power(x.data, p)
    check_finite_result("pow", y, f"x ** {p} is undefined for negative x")

    def backward(g):
        if p == 0:          # x^0 = 1 is constant; avoid 0 * 0^-1 = NaN at x = 0
            return (xp_of(g).zeros_like(g),)
        return (g * p * power(x.data, p - 1),)
    return Tensor.from_op(y, (x,), backward, "pow")


def exp(x) -> Tensor:
    """e^x.   d/dx = e^x (the output itself)."""
    (x,) = tensors_for("exp", x)
    y = xp_of(x.data).exp(x.data)
    return Tensor.from_op(y, (x,), lambda g: (g * y,), "exp")


def log(x) -> Tensor:
    """Natural log.   d/dx = 1/x."""
    (x,) = tensors_for("log", x)
    xp = xp_of(x.data)
    with quiet_errors(xp):
        y = check_finite_result("log", xp.log(x.data), "log is undefined for negative inputs")
    return Tensor.from_op(y, (x,), lambda g: (g / x.data,), "log")


def sqrt(x) -> Tensor:
    """x^(1/2).   d/dx = 1 / (2 sqrt(x))."""
    (x,) = tensors_for("sqrt", x)
    xp = xp_of(x.data)
    with quiet_errors(xp):
        y = check_finite_result("sqrt", xp.sqrt(x.data), "sqrt is undefined for negative inputs")
    return Tensor.from_op(y, (x,), lambda g: (g / (2 * y),), "sqrt")


def tanh(x) -> Tensor:
    """tanh(x).   d/dx = 1 - tanh(x)^2."""
    (x,) = tensors_for("tanh", x)
    y = xp_of(x.data).tanh(x.data)
    return Tensor.from_op(y, (x,), lambda g: (g * (1 - y * y),), "tanh")


def sigmoid_array(x):
    """1 / (1 + e^-x) without overflow: e^-|x| is at most 1, whatever the sign of x."""
    xp = xp_of(x)
    z = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + z), z / (1 + z))


def sigmoid(x) -> Tensor:
    """sigma(x) = 1 / (1 + e^-x).   d/dx = sigma(x) (1 - sigma(x))."""
    (x,) = tensors_for("sigmoid", x)
    y = sigmoid_array(x.data)
    return Tensor.from_op(y, (x,), lambda g: (g * y * (1 - y),), "sigmoid")


def relu(x) -> Tensor:
    """max(x, 0).   d/dx = 1 where x > 0, else 0 (we pick 0 at the kink)."""
    (x,) = tensors_for("relu", x)
    positive = x.data > 0
    return Tensor.from_op(x.data * positive, (x,), lambda g: (g * positive,), "relu")


def leaky_relu(x, negative_slope: float = 0.01) -> Tensor:
    """x where x > 0, else negative_slope x (Maas et al. 2013; DCGAN's discriminator uses 0.2).

    d/dx = 1 where x > 0, else negative_slope (the kink takes the left side, as relu's does). A small
    slope keeps a gradient flowing through units that a plain ReLU would switch off for good.
    """
    (x,) = tensors_for("leaky_relu", x)
    slope = check_number("leaky_relu", "negative_slope", negative_slope)
    xp = xp_of(x.data)
    one, factor = x.data.dtype.type(1), x.data.dtype.type(slope)
    local = xp.where(x.data > 0, one, factor)             # 1 or negative_slope: the derivative, elementwise
    return Tensor.from_op(x.data * local, (x,), lambda g: (g * local,), "leaky_relu")


def silu(x) -> Tensor:
    """SiLU, also called swish: x sigma(x) (Elfwing et al. 2018; Ramachandran et al. 2017).

        d/dx = sigma(x) + x sigma(x) (1 - sigma(x)) = sigma(x) (1 + x (1 - sigma(x)))
    Smooth, not monotone (a dip to -0.278 at x = -1.278); the diffusion U-Net's activation.
    """
    (x,) = tensors_for("silu", x)
    s = sigmoid_array(x.data)
    return Tensor.from_op(x.data * s, (x,), lambda g: (g * (s * (1 + x.data * (1 - s))),), "silu")


_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def gelu(x, approximate: str = "none", bias=None) -> Tensor:
    """Gaussian error linear unit, GELU(x) = x Phi(x) (Hendrycks & Gimpel 2016).

    approximate="none" (exact, what timm's nn.GELU uses):
        y = x/2 (1 + erf(x/sqrt 2)),      dy/dx = Phi(x) + x phi(x),  phi(x) = e^(-x^2/2)/sqrt(2 pi)
    approximate="tanh" (the GPT-2 / BERT form):
        y = x/2 (1 + tanh u),  u = sqrt(2/pi) (x + 0.044715 x^3)
        dy/dx = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) sqrt(2/pi) (1 + 3*0.044715 x^2)
    bias (D,), optional: GELU(x + bias), the bias added along the last axis, for the Linear layer
    before the activation (MLP's fc1): a kernel adds it on the fly and never stores x + bias.
        dL/dbias = sum of dL/d(x + bias) over every axis but the last
    """
    tensors = tensors_for("gelu", x) if bias is None else tensors_for("gelu", x, bias)
    x, b = tensors[0], (tensors[1] if bias is not None else None)
    if approximate not in ("none", "tanh"):
        raise ValueError(f'gelu: approximate must be "none" or "tanh", got {approximate!r}')
    if b is not None and (x.ndim == 0 or b.shape != x.shape[-1:]):
        raise ValueError(f"gelu: bias has shape {b.shape}, expected ({x.shape[-1] if x.ndim else 'D'},) to add "
                         f"along the last axis of x, which has shape {x.shape}")
    if (fast := fast_kernel("gelu", *tensors) if x.size else None) is not None:
        return _gelu_kernel(fast, x, b, approximate)   # one compiled pass, no temporaries (tinyvision/kernels)
    xp = xp_of(x.data)
    v = x.data if b is None else x.data + b.data
    if approximate == "none":
        cdf = 0.5 * (1 + erf(v * v.dtype.type(1 / math.sqrt(2))))
        y = v * cdf

        def dgelu(g):
            pdf = xp.exp(-0.5 * v * v) * v.dtype.type(1 / math.sqrt(2 * math.pi))
            return g * (cdf + v * pdf)
    else:
        t = xp.tanh(_SQRT_2_OVER_PI * (v + 0.044715 * v * v * v))
        y = 0.5 * v * (1 + t)

        def dgelu(g):
            du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * v * v)
            return g * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * du)

    def backward(g):
        du = dgelu(g).astype(x.dtype, copy=False)
        return (du,) if b is None else (du, du.sum(axis=tuple(range(x.ndim - 1))).astype(b.dtype, copy=False))
    return Tensor.from_op(y.astype(x.dtype, copy=False), tuple(tensors), backward, "gelu")


def _gelu_kernel(fast, x, b, approximate) -> Tensor:
    """gelu(x + b) by a kernel. (ascontiguousarray makes a 0-d array 1-d: the reshapes give the shape back.)"""
    xp = xp_of(x.data)
    v = xp.ascontiguousarray(x.data)
    bias = None if b is None else b.data

    def backward(g):
        dx, dbias = fast.backward(xp.ascontiguousarray(g).reshape(v.shape), v, bias, approximate)
        return (dx.reshape(x.shape),) + (() if b is None else (dbias,))
    return Tensor.from_op(fast.forward(v, bias, approximate).reshape(x.shape), (x,) if b is None else (x, b),
                          backward, "gelu")


def clip(x, low=None, high=None) -> Tensor:
    """min(max(x, low), high).   d/dx = 1 inside [low, high], 0 where the value was clipped."""
    (x,) = tensors_for("clip", x)
    if low is None and high is None:
        raise ValueError("clip: give at least one of low and high")
    low, high = (None if b is None else check_real("clip", name, b) for name, b in (("low", low), ("high", high)))
    if low is not None and high is not None and low > high:
        raise ValueError(f"clip: low={low} is greater than high={high}")
    xp = xp_of(x.data)
    y = xp.clip(x.data, low, high)
    inside = y == x.data
    return Tensor.from_op(y, (x,), lambda g: (g * inside,), "clip")


def _as_bool_mask(op, mask, like):
    xp = xp_of(like.data)
    mask = mask.data if isinstance(mask, Tensor) else mask
    mask = xp.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"{op}: the condition/mask must be a boolean array, got dtype {mask.dtype}")
    return mask


def where(condition, a, b) -> Tensor:
    """condition ? a : b, elementwise with broadcasting.   d/da = [condition], d/db = [not condition]."""
    a, b = tensors_for("where", a, b)
    cond = _as_bool_mask("where", condition, a)
    shape = broadcast_shape("where", cond.shape, a.shape, b.shape)
    xp = xp_of(a.data)

    def backward(g):
        zero = xp.zeros((), dtype=g.dtype)
        return (unbroadcast(xp.where(cond, g, zero), a.shape), unbroadcast(xp.where(cond, zero, g), b.shape))
    y = xp.broadcast_to(xp.where(cond, a.data, b.data), shape)
    return Tensor.from_op(xp.ascontiguousarray(y), (a, b), backward, "where")


def masked_fill(x, mask, value: float) -> Tensor:
    """x with `value` where mask is True.   d/dx = [not mask] (a filled entry is a constant)."""
    (x,) = tensors_for("masked_fill", x)
    value = check_real("masked_fill", "value", value)
    mask = _as_bool_mask("masked_fill", mask, x)
    if broadcast_shape("masked_fill", x.shape, mask.shape) != x.shape:
        raise ValueError(f"masked_fill: mask of shape {tuple(mask.shape)} must broadcast to x's shape {x.shape}")
    xp = xp_of(x.data)
    y = xp.where(mask, xp.asarray(value, dtype=x.dtype), x.data)
    return Tensor.from_op(y, (x,), lambda g: (xp.where(mask, xp.zeros((), g.dtype), g),), "masked_fill")

