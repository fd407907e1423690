"""Scaled dot-product attention as one op (Vaswani et al. 2017, eq. 1), with its own backward.

    S = tau Q K^T          (..., Nq, Nk)   tau = 1/sqrt(d) unless given
    P = softmax(S)          row-wise, masked entries set to -inf first
    O = P V                 (..., Nq, dv)
Q: (..., Nq, d), K: (..., Nk, d), V: (..., Nk, dv); leading axes (batch, heads) broadcast.

Backward, with G = dL/dO (the same steps FlashAttention recomputes block by block):
    dV = P^T G
    dP = G V^T
    dS = P * (dP - D),  D = rowsum(dP * P)      (softmax backward; D also equals rowsum(G * O))
    dQ = tau dS K,      dK = tau dS^T Q

Masks: `mask` is boolean, broadcastable to (..., Nq, Nk), True where a query MAY attend to a key
(PyTorch's convention). `causal=True` lets query i see keys j <= i + (Nk - Nq): aligned at the
bottom right, as in flash-attn, which is the usual i >= j when Nq == Nk. A query row with every
key masked outputs 0 and passes no gradient, never NaN.

Overflow, one behaviour for every implementation: if a score tau q.k overflows the dtype, or q or k
holds a NaN or an inf, the op raises FloatingPointError (the softmax of such scores is not defined:
NumPy would give NaN and a tiled kernel zeros). The check costs one pass over q and k: no score can
exceed max(1, |tau|) d max|q| max|k| (each partial dot product is bounded by it), and only when that
bound passes the dtype's largest value are the scores computed densely and looked at. The tiled
kernels also accumulate sum_j e^(s_j - m) v_j, up to Nk max|v|, before dividing: where that could
overflow, the dense path (P normalised first) runs instead, so every path gives the same finite O.

This file is the dense reference. When the kernel switch picks a tiled kernel (tinyvision/kernels,
FlashAttention) and the weights P are not asked for, `_flash` runs the same math without ever
storing P; tests/test_ops.py checks both paths against the same float64 formula.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import xp_of
from ..checks import check_number
from ..tensor import Tensor
from ._common import broadcast_shape, fast_kernel, overflow_allowed, product_threads, tensors_for, unbroadcast
from .reduce import softmax_array

__all__ = ["scaled_dot_product_attention", "attention_mask"]


def attention_mask(nq: int, nk: int, mask=None, causal: bool = False, xp=None):
    """The boolean "may attend" matrix combining an optional mask and the causal rule (None if neither)."""
    if xp is None:
        import numpy as xp  # noqa: PLC0415
    keep = None
    if causal:
        i = xp.arange(nq)[:, None]
        j = xp.arange(nk)[None, :]
        keep = j <= i + (nk - nq)
    if mask is not None:
        mask = xp.asarray(mask.data if isinstance(mask, Tensor) else mask)
        if mask.dtype != bool:
            raise TypeError(f"scaled_dot_product_attention: mask must be boolean (True = may attend), got dtype {mask.dtype}")
        if broadcast_shape("scaled_dot_product_attention (mask)", mask.shape[-2:], (nq, nk)) != (nq, nk):
            raise ValueError(f"scaled_dot_product_attention: mask has shape {tuple(mask.shape)}; its last two axes "
                             f"must broadcast to (Nq, Nk) = ({nq}, {nk})")
        keep = mask if keep is None else (keep & mask)
    return keep


def scaled_dot_product_attention(q, k, v, mask=None, causal: bool = False, scale: float | None = None,
                                 return_weights: bool = False):
    """softmax(tau Q K^T + mask) V.  Returns O, or (O, P) with the attention weights P as a raw array."""
    q, k, v = tensors_for("scaled_dot_product_attention", q, k, v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim < 2:
            raise ValueError(f"scaled_dot_product_attention: {name} must be (..., N, d), got shape {t.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: q is {q.shape} and k is {k.shape}; their last axis "
                         "(the head dim d) must match")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: k is {k.shape} and v is {v.shape}; they must have the "
                         "same number of keys Nk (axis -2)")
    nq, nk = q.shape[-2], k.shape[-2]
    batch = broadcast_shape("scaled_dot_product_attention (batch axes of q, k, v)",
                            q.shape[:-2], k.shape[:-2], v.shape[:-2])
    for name, flag in (("causal", causal), ("return_weights", return_weights)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"scaled_dot_product_attention: {name} must be True or False, got {flag!r}")
    if scale is None and q.shape[-1] == 0:
        raise ValueError(f"scaled_dot_product_attention: q is {q.shape}; the head dim d is 0, so the default "
                         "scale 1/sqrt(d) is undefined (pass scale= or use d >= 1)")
    if scale is not None:
        scale = check_number("scaled_dot_product_attention", "scale", scale)
    xp = xp_of(q.data)
    tau = q.dtype.type(1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    keep = attention_mask(nq, nk, mask, causal, xp)
    if keep is not None:
        broadcast_shape("scaled_dot_product_attention (mask)", keep.shape, batch + (nq, nk))
    safe = _scores_cannot_overflow(q.data, k.data, float(tau))
    # a tiled kernel also sums e^(s - m) v over up to Nk keys before dividing by l (FA2): Nk max|v|
    # must fit too, while the dense P V, with P already normalised, stays below max|v|
    tiled_safe = safe and _sum_fits(v.data, nk)

    empty = min(q.size, k.size, v.size) == 0     # the dense code gives the empty or all-zero result
    fast = None if (return_weights or not tiled_safe or empty) else fast_kernel("attention", q, k, v)
    if fast is not None:
        return _flash(fast, q, k, v, mask, causal, float(tau), batch)

    per_call = nq * nk * max(q.shape[-1], v.shape[-1])     # multiply-adds of one (batch, head)'s product
    with overflow_allowed(xp), product_threads(q.data, per_call):   # an overflow is looked for below
        s = (q.data @ k.data.swapaxes(-1, -2)) * tau
    if not safe and not bool(xp.isfinite(s).all()):
        raise FloatingPointError(
            "scaled_dot_product_attention: the scores tau q.k are not finite (an overflow of "
            f"{q.dtype}, or a NaN / inf in q or k: max|q| = {float(xp.abs(q.data).max())}, "
            f"max|k| = {float(xp.abs(k.data).max())}, tau = {float(tau)}); scale the inputs down or "
            "compute in float64")
    if keep is not None:
        s = xp.where(keep, s, xp.asarray(-xp.inf, dtype=s.dtype))
    p = softmax_array(s, -1)  # an all -inf row gives zeros, so its output row is 0
    with product_threads(q.data, per_call):
        o = p @ v.data

    def backward(g):
        with product_threads(g, per_call):
            dv = p.swapaxes(-1, -2) @ g
            dp = g @ v.data.swapaxes(-1, -2)
            ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
            dq = (ds @ k.data) * tau
            dk = (ds.swapaxes(-1, -2) @ q.data) * tau
        return unbroadcast(dq, q.shape), unbroadcast(dk, k.shape), unbroadcast(dv, v.shape)
    out = Tensor.from_op(o, (q, k, v), backward, "scaled_dot_product_attention")
    return (out, p) if return_weights else out


def _scores_cannot_overflow(q, k, tau) -> bool:
    """True when no partial sum of tau q.k can overflow q's dtype: |tau q.k| <= max(1, |tau|) d max|q| max|k|.

    False also for a NaN or an inf in q or k. One pass over q and k, against the N^2 d of attention.
    """
    if q.size == 0 or k.size == 0:
        return True
    top_q, top_k = _largest_magnitude(q), _largest_magnitude(k)
    bound = max(1.0, abs(tau)) * q.shape[-1] * top_q * top_k    # a Python float: float64, may be inf
    return math.isfinite(bound) and bound < float(np.finfo(q.dtype).max)


def _largest_magnitude(a) -> float:
    """max|a| as max(max a, -min a): two reductions and no |a| temporary (half the time of abs().max()
    on a (128, 3, 65, 64) float32 view); np.maximum, unlike Python's max, passes a NaN on."""
    return float(xp_of(a).maximum(a.max(), -a.min()))


def _sum_fits(v, n) -> bool:
    """True when a sum of n terms, each at most max|v| in size, cannot overflow v's dtype."""
    if v.size == 0:
        return True
    top = _largest_magnitude(v)
    return math.isfinite(top) and n * top < float(np.finfo(v.dtype).max)


def _flash(fast, q, k, v, mask, causal, tau, batch):
    """The same attention through a tiled kernel (tinyvision/kernels): O(N) extra memory, no P matrix.

    The kernels take 3-D arrays (BH, N, d): the broadcast batch axes are flattened into BH, and the
    gradients are summed back to each input's own batch shape (unbroadcast). The causal rule goes to
    the kernel as a flag (it skips the key tiles past the diagonal); a mask that is the same for every
    batch x head stays one (Nq, Nk) matrix instead of being copied BH times.
    """
    xp = xp_of(q.data)
    nq, nk = q.shape[-2], k.shape[-2]

    def flat(t):
        return xp.ascontiguousarray(xp.broadcast_to(t.data, batch + t.shape[-2:])).reshape((-1,) + t.shape[-2:])
    q3, k3, v3 = flat(q), flat(k), flat(v)
    keep = attention_mask(nq, nk, mask, False, xp)
    if keep is not None:
        shared = keep.ndim <= 2 or all(n == 1 for n in keep.shape[:-2])
        lead = keep.shape[:-2] if shared else batch
        keep = xp.ascontiguousarray(xp.broadcast_to(keep, lead + (nq, nk))).reshape((nq, nk) if shared else (-1, nq, nk))
    o, lse = fast.forward(q3, k3, v3, keep, causal, tau, None)

    def backward(g):
        dq, dk, dv = fast.backward(q3, k3, v3, o, lse, xp.ascontiguousarray(g).reshape(o.shape), keep, causal, tau, None)
        return (unbroadcast(dq.reshape(batch + q.shape[-2:]), q.shape), unbroadcast(dk.reshape(batch + k.shape[-2:]), k.shape),
                unbroadcast(dv.reshape(batch + v.shape[-2:]), v.shape))
    return Tensor.from_op(o.reshape(batch + (nq, v.shape[-1])), (q, k, v), backward, "scaled_dot_product_attention")
