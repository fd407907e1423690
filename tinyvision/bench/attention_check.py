"""The accuracy check of the GPU bench: dense attention in float64 as the oracle, and the bound each
implementation must meet before it is timed (tinyvision/bench/gpu.py says why it checks at every size).

The oracle runs on the arrays' own device (NumPy or CuPy: xp_of), a few heads at a time, so that it
can check sizes whose float64 N x N matrices would not fit at once; tinyvision's own dense op
(ops/attention.py) computes the same formulas but keeps every head's matrices alive for autograd.
The bound: max abs error <= tol x max(1, max |reference|), tol by precision:
    float32 and 3xTF32 implementations   2e-4   (float32 errs ~1e-6 here: sums of up to 16,384 terms,
                                                 each rounded at 6e-8; a wrong index errs by order 1)
    TF32 (v3-tf32; cupy naive with CUPY_TF32=1)   O 5e-3, gradients 2e-2 (inputs keep 10 mantissa bits:
                                                 2^-11 per product; the host emulation of v3-tf32 measured
                                                 gradients off by up to 1.3e-2 of their size at scale 2, d 128)
"""
from __future__ import annotations

import math
import os

from tinyvision.backend import xp_of
from tinyvision.kernels.attention_cuda_c_layout import VERSIONS, precision_of

__all__ = ["FLOAT32_TOL", "TF32_GRAD_TOL", "TF32_TOL", "check_error", "dense_float64", "dense_rows_float64",
           "tolerance"]

FLOAT32_TOL = 2e-4
TF32_TOL = 5e-3
TF32_GRAD_TOL = 2e-2


# --- the oracle: dense attention in float64, on the arrays' own device -------------------------------
def _causal_visible(xp, rows, nq, nk):
    """(len(rows), Nk) bool: query i sees key j iff j <= i + (Nk - Nq) (bottom-right aligned, as flash-attn)."""
    return xp.arange(nk)[None, :] <= rows[:, None] + (nk - nq)


def _softmax_rows(s, visible):
    """softmax over the last axis, -inf where not visible (every row must see at least one key)."""
    xp = xp_of(s)
    if visible is not None:
        s = xp.where(visible, s, -xp.inf)
    p = xp.exp(s - s.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def dense_float64(q, k, v, do, causal=False, scale=None, max_bytes=2 ** 31):
    """O and (dQ, dK, dV) of dense attention in float64, from q, k, v, dO (BH, N, d) of any float dtype,
    on their device (NumPy or CuPy), a group of heads at a time so that one float64 (heads, Nq, Nk)
    matrix stays under max_bytes (three such live at once):

        S = tau Q K^T (-inf where causal hides a key),  P = softmax_rows(S),  O = P V
        dV = P^T dO,  dP = dO V^T,  dS = P o (dP - D),  dQ = tau dS K,  dK = tau dS^T Q
    with D_i = sum_j P_ij dP_ij = dO_i . O_i (the softmax backward, row by row).
    """
    xp = xp_of(q)
    bh, nq, d = q.shape
    nk = k.shape[1]
    tau = 1 / math.sqrt(d) if scale is None else scale
    visible = _causal_visible(xp, xp.arange(nq), nq, nk) if causal else None
    o, dq, dk, dv = (xp.empty(a.shape, xp.float64) for a in (do, q, k, v))
    group = max(1, max_bytes // (nq * nk * 8))
    for h0 in range(0, bh, group):
        h = slice(h0, h0 + group)
        qh, kh, vh, doh = (xp.asarray(a[h], dtype=xp.float64) for a in (q, k, v, do))
        p = _softmax_rows(tau * (qh @ kh.swapaxes(1, 2)), visible)
        o[h] = p @ vh
        dv[h] = p.swapaxes(1, 2) @ doh
        ds = doh @ vh.swapaxes(1, 2)                              # dP
        ds -= (doh * o[h]).sum(axis=-1, keepdims=True)            # dP - D
        ds *= p                                                   # dS, in place: one N x N buffer fewer
        del p
        dq[h] = tau * (ds @ kh)
        dk[h] = tau * (ds.swapaxes(1, 2) @ qh)
        del ds
    return o, (dq, dk, dv)


def dense_rows_float64(q, k, v, heads, rows, causal=False, scale=None):
    """O of dense attention in float64 at query `rows` of `heads` only: (len(heads), len(rows), d).

    Memory rows x Nk per head instead of Nq x Nk: the check for sequences whose N x N does not fit."""
    xp = xp_of(q)
    heads, rows = xp.asarray(heads), xp.asarray(rows)
    nq, d = q.shape[1:]
    nk = k.shape[1]
    tau = 1 / math.sqrt(d) if scale is None else scale
    qr = xp.asarray(q[heads[:, None], rows[None, :]], dtype=xp.float64)          # (H, R, d)
    kh, vh = (xp.asarray(a[heads], dtype=xp.float64) for a in (k, v))            # (H, Nk, d)
    visible = _causal_visible(xp, rows, nq, nk) if causal else None
    return _softmax_rows(tau * (qr @ kh.swapaxes(1, 2)), visible) @ vh


def tolerance(label: str, name: str = "O") -> float:
    """TF32_TOL (O) or TF32_GRAD_TOL (dQ, dK, dV) for a TF32 version (v3-tf32) and for cupy naive when
    CUPY_TF32=1 lets cuBLAS use TF32; else FLOAT32_TOL."""
    tf32 = (precision_of(label) == "tf32" if label in VERSIONS
            else label == "cupy naive" and os.environ.get("CUPY_TF32") == "1")
    if not tf32:
        return FLOAT32_TOL
    return TF32_TOL if name == "O" else TF32_GRAD_TOL


def check_error(label, name, got, want, where) -> tuple[float, float]:
    """(max abs error, bound) of got against the float64 reference; AssertionError when it is past the bound."""
    xp = xp_of(want)
    err = float(xp.abs(xp.asarray(got, dtype=xp.float64) - want).max())
    bound = tolerance(label, name) * max(1.0, float(xp.abs(want).max()))
    if not err <= bound:                                         # also catches NaN
        raise AssertionError(f"{label} at {where}: {name} differs from dense float64 attention by {err:.3g} "
                             f"(bound {bound:.3g}): not timing a wrong kernel")
    return err, bound
