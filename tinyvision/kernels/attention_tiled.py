"""FlashAttention in plain NumPy: exact attention computed tile by tile, never holding the N x N matrix.

Dao, Fu, Ermon, Rudra & Re 2022, "FlashAttention" (Alg. 1); Dao 2023, "FlashAttention-2" (Alg. 1
forward, Alg. 2 backward). This file is the readable blocked algorithm and the oracle for the compiled
kernels (attention_numba.py on the CPU, attention_numba_cuda.py on the GPU). All of them equal the dense op
tinyvision.ops.scaled_dot_product_attention, which materialises S = tau Q K^T and P = softmax(S).

Shapes: Q (BH, Nq, d), K (BH, Nk, d), V (BH, Nk, dv), O (BH, Nq, dv), L (BH, Nq); BH is batch x heads
flattened. Queries are cut into blocks of Bq rows, keys into blocks of Bk rows; tau = 1/sqrt(d).

Forward: the online softmax (FA2 Alg. 1, outer loop over query blocks, inner over key blocks).
For a query block Q_i start with m = -inf, l = 0, O~ = 0; for each key block K_j, V_j:
    S   = tau Q_i K_j^T                     (Bq, Bk)   masked entries set to -inf
    m'  = max(m, rowmax(S))                            the running row max
    P~  = exp(S - m')                                  (Bq, Bk)
    l   = e^(m - m') l + rowsum(P~)                    the running row sum
    O~  = e^(m - m') O~ + P~ V_j                       the unnormalised output
    m   = m'
and after the last block  O_i = O~ / l,  L_i = m + log l  (the row logsumexp: all the backward keeps).
Why it is exact: the factor e^(m - m') moves every earlier term onto the new max, so after the last
block l = sum_k e^(S_k - m) and O~ = sum_k e^(S_k - m) V_k over all keys seen, and O~ / l is
softmax(S) V. FA1 divided by l at every step; FA2 divides once at the end (fewer non-matmul FLOPs).

Backward (FA2 Alg. 2): nothing N x N was stored, so P is recomputed per tile from L:
    D_i  = rowsum(dO_i o O_i)                (Bq,)     equals rowsum(P o dP), see below
    P    = exp(tau Q_i K_j^T - L_i)          (Bq, Bk)  exactly softmax(S) on this tile
    dV_j += P^T dO_i
    dP   = dO_i V_j^T
    dS   = P o (dP - D_i)                              the softmax backward, row by row
    dQ_i += tau dS K_j,      dK_j += tau dS^T Q_i
D trick: rowsum(P o dP) = sum_k P_k (dO . V_k) = dO . (sum_k P_k V_k) = dO . O, a length-dv dot product
instead of a length-Nk one. FA2 loops over key blocks outside (dK_j, dV_j stay in fast memory) and
query blocks inside; on a GPU dQ_i is then shared between key blocks and needs atomic adds.

Masks. `keep` is boolean (Nq, Nk) or (BH, Nq, Nk), True where a query may attend (PyTorch's
convention). `causal=True` is aligned bottom-right as in flash-attn: query i sees key j iff
j <= i + (Nk - Nq). Key blocks entirely right of that diagonal are skipped, not computed and masked.

Fully masked rows. m stays -inf, and the rescale e^(m - m') = e^(-inf - (-inf)) = NaN would poison the
row (flashinfer-ai/flashinfer PR #4401, tracel-ai/burn PR #4697). The guard: where m' = -inf, use 0 as
the reference max, so every exponential is e^(-inf) = 0. Such a row ends with l = 0, O = 0 and
L = -inf, and the backward, recomputing P = e^(S - 0) = 0 for it, passes no gradient. Masking uses
-inf, never a finite sentinel like -1e4, which could beat real scores that are lower still.

Memory. Dense attention keeps the (Nq, Nk) matrix per head; the tiled one a (Bq, Bk) tile, the (Bq, dv)
accumulator and m, l: constant in N. See attention_memory_bytes.

The three helpers is_visible, key_end and query_start hold all the index logic of the causal rule.
They are plain Python on scalars (is_visible also works on NumPy arrays), written once and compiled
by the kernels, minitorch-style: njit(inline="always") in attention_numba.py, cuda.jit(device=True)
in attention_numba_cuda.py. Each is self-contained (calls no other helper) so that it compiles for both.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["flash_forward", "flash_backward", "attention_memory_bytes", "is_visible", "key_end",
           "query_start", "check_attention_shapes", "softmax_scale"]


# --- index logic, written once for NumPy, Numba CPU and numba.cuda -----------------------------
def is_visible(i, j, nq, nk, causal):
    """May query i attend to key j under the causal rule? (j <= i + Nk - Nq, bottom-right aligned.)"""
    return j <= i + (nk - nq) if causal else j < nk


def key_end(q_end, nq, nk, causal):
    """Keys [0, key_end) hold every key that a query row < q_end can see; later key blocks are skipped."""
    end = q_end + (nk - nq) if causal else nk      # one past the last key that row q_end - 1 sees
    if end < 0:                                     # (no max/min: numba 0.68's CUDA target cannot compile them)
        return 0
    return nk if end > nk else end


def query_start(k_start, nq, nk, causal):
    """The first query row that can see key k_start (or any later key); earlier queries are skipped."""
    start = k_start - (nk - nq) if causal else 0
    if start < 0:
        return 0
    return nq if start > nq else start


# --- input checks shared by every implementation ---------------------------------------------
def check_attention_shapes(name, q, k, v, keep=None):
    """(BH, Nq, Nk, d, dv) after checking q (BH, Nq, d), k (BH, Nk, d), v (BH, Nk, dv), keep; ValueError if not."""
    for arg, t, want in (("q", q, "(BH, Nq, d)"), ("k", k, "(BH, Nk, d)"), ("v", v, "(BH, Nk, dv)")):
        if t.ndim != 3:
            raise ValueError(f"{name}: {arg} must be 3-D {want}, got shape {tuple(t.shape)}")
    bh, nq, d = q.shape
    nk, dv = v.shape[1], v.shape[2]
    if tuple(k.shape) != (bh, nk, d) or v.shape[0] != bh:
        raise ValueError(f"{name}: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not fit "
                         f"(BH, Nq, d), (BH, Nk, d), (BH, Nk, dv): BH, d and Nk must agree")
    if keep is not None:
        if keep.dtype != bool:
            raise ValueError(f"{name}: keep must be boolean (True = may attend), got dtype {keep.dtype}")
        if tuple(keep.shape) not in ((nq, nk), (1, nq, nk), (bh, nq, nk)):
            raise ValueError(f"{name}: keep has shape {tuple(keep.shape)}, expected ({nq}, {nk}) or "
                             f"({bh}, {nq}, {nk}) = (Nq, Nk) or (BH, Nq, Nk)")
    return bh, nq, nk, d, dv


def softmax_scale(d, scale=None):
    """tau = 1/sqrt(d) (Vaswani et al. 2017, eq. 1) unless a scale is given."""
    return 1.0 / math.sqrt(d) if scale is None else float(scale)


def _float_arrays(*arrays):
    """The arrays as one float dtype: float32 if all are float32, else float64."""
    dtype = np.float32 if all(np.asarray(a).dtype == np.float32 for a in arrays) else np.float64
    return [np.asarray(a, dtype=dtype) for a in arrays]


def _keep3(keep):
    """keep as (1 or BH, Nq, Nk) so that it broadcasts over the batch x heads axis; None stays None."""
    if keep is None:
        return None
    keep = np.asarray(keep)
    return keep[None] if keep.ndim == 2 else keep


def _tile_visible(keep, q0, q1, k0, k1, nq, nk, causal):
    """The (1 or BH, q1-q0, k1-k0) "may attend" tile: the causal rule and the mask, if any."""
    rows = np.arange(q0, q1)[:, None]
    cols = np.arange(k0, k1)[None, :]
    visible = np.broadcast_to(is_visible(rows, cols, nq, nk, causal), (q1 - q0, k1 - k0))[None]
    return visible if keep is None else visible & keep[:, q0:q1, k0:k1]


def _finite_or_zero(m):
    """The reference max for the exponentials: m, or 0 where m = -inf (a row with nothing visible yet)."""
    return np.where(np.isneginf(m), np.zeros((), m.dtype), m)


# --- forward ---------------------------------------------------------------------------------
def flash_forward(q, k, v, keep=None, causal=False, scale=None, block_q=16, block_k=16):
    """(O, L) = (softmax(tau Q K^T masked) V, row logsumexp), tile by tile (FA2 Alg. 1).

    q (BH, Nq, d), k (BH, Nk, d), v (BH, Nk, dv); keep bool (Nq, Nk) or (BH, Nq, Nk) or None.
    Returns o (BH, Nq, dv) and lse (BH, Nq); a fully masked row has o = 0 and lse = -inf.
    """
    bh, nq, nk, d, dv = check_attention_shapes("flash_forward", q, k, v, keep)
    q, k, v = _float_arrays(q, k, v)
    tau = q.dtype.type(softmax_scale(d, scale))
    keep = _keep3(keep)
    o = np.zeros((bh, nq, dv), q.dtype)
    lse = np.full((bh, nq), -np.inf, q.dtype)
    for q0 in range(0, nq, block_q):                                  # outer loop: query blocks
        q1 = min(q0 + block_q, nq)
        m = np.full((bh, q1 - q0), -np.inf, q.dtype)                  # running row max
        l = np.zeros((bh, q1 - q0), q.dtype)                          # running sum of e^(S - m)
        acc = np.zeros((bh, q1 - q0, dv), q.dtype)                    # O~, not yet divided by l
        for k0 in range(0, key_end(q1, nq, nk, causal), block_k):     # inner loop: key blocks
            k1 = min(k0 + block_k, nk)
            s = tau * (q[:, q0:q1] @ k[:, k0:k1].swapaxes(1, 2))      # (BH, Bq, Bk)
            s = np.where(_tile_visible(keep, q0, q1, k0, k1, nq, nk, causal), s, q.dtype.type(-np.inf))
            m_new = np.maximum(m, s.max(axis=2))
            ref = _finite_or_zero(m_new)                              # the guard: -inf - (-inf) never occurs
            alpha = np.exp(m - ref)                                   # e^(m - m'), 0 while m = -inf
            p = np.exp(s - ref[..., None])                            # P~, 0 at masked entries
            l = alpha * l + p.sum(axis=2)
            acc = alpha[..., None] * acc + p @ v[:, k0:k1]
            m = m_new
        seen = l > 0                                                  # False only for fully masked rows
        l_safe = np.where(seen, l, np.ones((), l.dtype))
        o[:, q0:q1] = acc / l_safe[..., None]                         # divide once, at the end (FA2)
        lse[:, q0:q1] = np.where(seen, m + np.log(l_safe), q.dtype.type(-np.inf))
    return o, lse


# --- backward --------------------------------------------------------------------------------
def flash_backward(q, k, v, o, lse, do, keep=None, causal=False, scale=None, block_q=16, block_k=16):
    """(dQ, dK, dV) of L(O) given dO = dL/dO, recomputing P tile by tile from lse (FA2 Alg. 2).

    q, k, v, keep, causal, scale as in flash_forward; o (BH, Nq, dv) and lse (BH, Nq) are its outputs;
    do (BH, Nq, dv). Returns dq (BH, Nq, d), dk (BH, Nk, d), dv (BH, Nk, dv); fully masked rows get 0.
    """
    bh, nq, nk, d, dv_ = check_attention_shapes("flash_backward", q, k, v, keep)
    for arg, t, want in (("o", o, (bh, nq, dv_)), ("lse", lse, (bh, nq)), ("do", do, (bh, nq, dv_))):
        if tuple(t.shape) != want:
            raise ValueError(f"flash_backward: {arg} has shape {tuple(t.shape)}, expected {want}")
    q, k, v, o, lse, do = _float_arrays(q, k, v, o, lse, do)
    tau = q.dtype.type(softmax_scale(d, scale))
    keep = _keep3(keep)
    big_d = (do * o).sum(axis=2)                                      # D = rowsum(dO o O), (BH, Nq)
    ref = _finite_or_zero(lse)                                        # L, or 0 for fully masked rows
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for k0 in range(0, nk, block_k):                                  # outer loop: key blocks (FA2 Alg. 2)
        k1 = min(k0 + block_k, nk)
        first = query_start(k0, nq, nk, causal) // block_q * block_q  # causal: skip blocks above the diagonal
        for q0 in range(first, nq, block_q):                          # inner loop: query blocks
            q1 = min(q0 + block_q, nq)
            s = tau * (q[:, q0:q1] @ k[:, k0:k1].swapaxes(1, 2))
            s = np.where(_tile_visible(keep, q0, q1, k0, k1, nq, nk, causal), s, q.dtype.type(-np.inf))
            p = np.exp(s - ref[:, q0:q1, None])                       # P recomputed: softmax(S) on this tile
            dv[:, k0:k1] += p.swapaxes(1, 2) @ do[:, q0:q1]           # dV_j += P^T dO_i
            dp = do[:, q0:q1] @ v[:, k0:k1].swapaxes(1, 2)            # dP = dO_i V_j^T
            ds = p * (dp - big_d[:, q0:q1, None])                     # dS = P o (dP - D_i)
            dq[:, q0:q1] += tau * (ds @ k[:, k0:k1])                  # dQ_i += tau dS K_j
            dk[:, k0:k1] += tau * (ds.swapaxes(1, 2) @ q[:, q0:q1])   # dK_j += tau dS^T Q_i
    return dq, dk, dv


# --- memory, for the lesson's curve ----------------------------------------------------------
def attention_memory_bytes(n, d, block, naive, itemsize=4):
    """Bytes of working memory per (batch x head) beyond the inputs Q, K, V and the output O.

    naive=True: the score matrix S (N, N) of dense attention (P overwrites it): N^2 items.
    naive=False: one (block, block) score tile, the (block, d) accumulator O~ and m, l (block each):
    constant in N. (The output L adds N items in both cases and is left out.)
    """
    if naive:
        return n * n * itemsize
    return (block * block + block * d + 2 * block) * itemsize
