"""FlashAttention forward and backward on the GPU in numba.cuda (shared code: device_numba_cuda.py).

Computes what attention_tiled.py and tinyvision.ops.scaled_dot_product_attention compute, and is tested
equal to them:

    forward    grid (query tiles, BH), one thread per query row. Each thread block walks the key
               tiles; for each, its threads copy the K and V tile into shared memory (one key row per
               thread), wait at a barrier, and every thread runs the online softmax of
               attention_tiled.py on its own row. Each K/V element is read from global memory once per
               query tile instead of once per query.
    backward   three kernels, race-free as in attention_numba.py: D = rowsum(dO o O) (one thread per
               row); dK, dV (grid over key tiles, one thread per key row, the Q/dO tile in shared
               memory); dQ (grid over query tiles, one thread per query row, the K/V tile in shared
               memory).

The causal index logic is attention_tiled.py's is_visible / key_end / query_start, compiled with
cuda.jit(device=True) from their single plain-Python definition (attention_numba.py compiles the same
functions for the CPU). Tile size, head dims and dtype are compile-time constants (shared-memory
arrays need them), so each combination is compiled once, like C++ template instances.
"""
from __future__ import annotations

import functools
import math
import types

import numpy as np
from numba import cuda
from numba.np import numpy_support

from . import register
from .attention_tiled import check_attention_shapes, is_visible, key_end, query_start, softmax_scale
from .device_numba_cuda import converted, float_dtype, on_device, returned

__all__ = ["attention_forward", "attention_backward", "DEFAULT_TILE"]


DEFAULT_TILE = 32                     # query rows (= threads) and key rows per attention tile
SHARED_BYTES = 48 * 1024              # static shared memory one block may use on every CUDA GPU

# the single-source index helpers of attention_tiled.py, compiled for the GPU
_is_visible = cuda.jit(device=True)(is_visible)
_key_end = cuda.jit(device=True)(key_end)
_query_start = cuda.jit(device=True)(query_start)


@cuda.jit(device=True)
def _allowed(keep, use_keep, b, i, j, nq, nk, causal):
    """The causal rule and the mask: may query i of batch x head b attend to key j?"""
    return _is_visible(i, j, nq, nk, causal) and (not use_keep or keep[b if keep.shape[0] > 1 else 0, i, j])


# --- attention forward -----------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _attention_forward_kernel(dtype, tile, d, dv):
    """The forward kernel for one (dtype, tile, d, dv): grid (ceil(Nq / tile), BH), tile threads."""
    ntype = numpy_support.from_dtype(np.dtype(dtype))

    @cuda.jit
    def attention_forward(q, k, v, keep, use_keep, causal, tau, o, lse):
        b, q0, r = cuda.blockIdx.y, cuda.blockIdx.x * tile, cuda.threadIdx.x
        nq, nk = q.shape[1], k.shape[1]
        i = q0 + r                                     # this thread's query row
        k_tile = cuda.shared.array((tile, d), ntype)   # K_j and V_j, shared by the block's rows
        v_tile = cuda.shared.array((tile, dv), ntype)
        s = cuda.local.array(tile, ntype)              # this row's scores against the tile
        acc = cuda.local.array(dv, ntype)              # O~ for this row
        for t in range(dv):
            acc[t] = 0
        m, l = ntype(-math.inf), ntype(0)              # ntype(...): float32 kernels stay float32
        # the loop bound is the same for every thread of the block, so all reach every barrier
        q1 = q0 + tile if q0 + tile < nq else nq       # one past the block's last query row
        for k0 in range(0, _key_end(q1, nq, nk, causal), tile):
            if k0 + r < nk:                            # cooperative load: thread r copies key row k0 + r
                for t in range(d):
                    k_tile[r, t] = k[b, k0 + r, t]
                for t in range(dv):
                    v_tile[r, t] = v[b, k0 + r, t]
            cuda.syncthreads()
            if i < nq:
                n_keys = tile if k0 + tile < nk else nk - k0
                m_new = m
                for c in range(n_keys):
                    s[c] = -math.inf
                    if _allowed(keep, use_keep, b, i, k0 + c, nq, nk, causal):
                        dot = ntype(0)
                        for t in range(d):
                            dot += q[b, i, t] * k_tile[c, t]
                        s[c] = tau * dot
                    if s[c] > m_new:                   # (no max(): see the module docstring)
                        m_new = s[c]
                if m_new > -math.inf:                  # the guard: no rescale while nothing is visible
                    alpha = math.exp(m - m_new)        # e^(m - m'), 0 while m = -inf
                    l *= alpha
                    for t in range(dv):
                        acc[t] *= alpha
                    for c in range(n_keys):
                        p = math.exp(s[c] - m_new)
                        l += p
                        for t in range(dv):
                            acc[t] += p * v_tile[c, t]
                    m = m_new
            cuda.syncthreads()                         # nobody overwrites the tile while it is read
        if i < nq:
            for t in range(dv):
                o[b, i, t] = acc[t] / l if l > 0 else ntype(0)
            lse[b, i] = m + math.log(l) if l > 0 else ntype(-math.inf)

    return attention_forward


# --- attention backward ----------------------------------------------------------------------
@cuda.jit
def _rowsum_product(do, o, big_d):
    """D_i = rowsum(dO_i o O_i), one thread per (batch x head, query row)."""
    row = cuda.grid(1)
    if row < o.shape[0] * o.shape[1]:
        b, i = row // o.shape[1], row % o.shape[1]
        total = 0.0
        for t in range(o.shape[2]):
            total += do[b, i, t] * o[b, i, t]
        big_d[b, i] = total


@functools.lru_cache(maxsize=None)
def _attention_backward_kernels(dtype, tile, d, dv):
    """(dk_dv, dq) kernels for one (dtype, tile, d, dv); grids (key tiles, BH) and (query tiles, BH)."""
    ntype = numpy_support.from_dtype(np.dtype(dtype))

    @cuda.jit
    def attention_dk_dv(q, k, v, do, lse, big_d, keep, use_keep, causal, tau, dk, dv_out):
        """dV_j = sum_i P_ij dO_i,  dK_j = tau sum_i dS_ij Q_i; thread r owns key row j = k0 + r."""
        b, k0, r = cuda.blockIdx.y, cuda.blockIdx.x * tile, cuda.threadIdx.x
        nq, nk = q.shape[1], k.shape[1]
        j = k0 + r
        q_tile = cuda.shared.array((tile, d), ntype)
        do_tile = cuda.shared.array((tile, dv), ntype)
        k_row = cuda.local.array(d, ntype)
        v_row = cuda.local.array(dv, ntype)
        dk_acc = cuda.local.array(d, ntype)
        dv_acc = cuda.local.array(dv, ntype)
        for t in range(d):
            dk_acc[t] = 0
            k_row[t] = k[b, j, t] if j < nk else ntype(0)
        for t in range(dv):
            dv_acc[t] = 0
            v_row[t] = v[b, j, t] if j < nk else ntype(0)
        first = _query_start(k0, nq, nk, causal) // tile * tile   # causal: skip tiles above the diagonal
        for q0 in range(first, nq, tile):
            if q0 + r < nq:                            # cooperative load of Q_i and dO_i
                for t in range(d):
                    q_tile[r, t] = q[b, q0 + r, t]
                for t in range(dv):
                    do_tile[r, t] = do[b, q0 + r, t]
            cuda.syncthreads()
            if j < nk:
                for c in range(tile if q0 + tile < nq else nq - q0):
                    i = q0 + c
                    if lse[b, i] == -math.inf or not _allowed(keep, use_keep, b, i, j, nq, nk, causal):
                        continue                       # P_ij = 0: no contribution
                    dot, dp = ntype(0), ntype(0)
                    for t in range(d):
                        dot += q_tile[c, t] * k_row[t]
                    for t in range(dv):
                        dp += do_tile[c, t] * v_row[t]
                    p = math.exp(tau * dot - lse[b, i])          # P recomputed from L
                    ds = p * (dp - big_d[b, i])                  # dS = P (dP - D)
                    for t in range(dv):
                        dv_acc[t] += p * do_tile[c, t]
                    for t in range(d):
                        dk_acc[t] += ds * q_tile[c, t]
            cuda.syncthreads()
        if j < nk:
            for t in range(d):
                dk[b, j, t] = tau * dk_acc[t]
            for t in range(dv):
                dv_out[b, j, t] = dv_acc[t]

    @cuda.jit
    def attention_dq(q, k, v, do, lse, big_d, keep, use_keep, causal, tau, dq):
        """dQ_i = tau sum_j dS_ij K_j; thread r owns query row i = q0 + r."""
        b, q0, r = cuda.blockIdx.y, cuda.blockIdx.x * tile, cuda.threadIdx.x
        nq, nk = q.shape[1], k.shape[1]
        i = q0 + r
        k_tile = cuda.shared.array((tile, d), ntype)
        v_tile = cuda.shared.array((tile, dv), ntype)
        dq_acc = cuda.local.array(d, ntype)
        for t in range(d):
            dq_acc[t] = 0
        q1 = q0 + tile if q0 + tile < nq else nq
        for k0 in range(0, _key_end(q1, nq, nk, causal), tile):
            if k0 + r < nk:
                for t in range(d):
                    k_tile[r, t] = k[b, k0 + r, t]
                for t in range(dv):
                    v_tile[r, t] = v[b, k0 + r, t]
            cuda.syncthreads()
            if i < nq and lse[b, i] > -math.inf:
                for c in range(tile if k0 + tile < nk else nk - k0):
                    if not _allowed(keep, use_keep, b, i, k0 + c, nq, nk, causal):
                        continue
                    dot, dp = ntype(0), ntype(0)
                    for t in range(d):
                        dot += q[b, i, t] * k_tile[c, t]
                    for t in range(dv):
                        dp += do[b, i, t] * v_tile[c, t]
                    ds = math.exp(tau * dot - lse[b, i]) * (dp - big_d[b, i])
                    for t in range(d):
                        dq_acc[t] += ds * k_tile[c, t]
            cuda.syncthreads()
        if i < nq:
            for t in range(d):
                dq[b, i, t] = tau * dq_acc[t]

    return attention_dk_dv, attention_dq


# --- host side -------------------------------------------------------------------------------
def _tile(block, d, dv, itemsize):
    """Query rows (= threads) and key rows per tile: `block`, or the largest <= DEFAULT_TILE that fits."""
    row_bytes = (d + dv) * itemsize                    # one row of the K and V tiles (or Q and dO)
    if block is None:
        return max(1, min(DEFAULT_TILE, SHARED_BYTES // row_bytes))
    tile = int(block if np.isscalar(block) else block[0])
    if tile < 1:
        raise ValueError(f"attention (numba_cuda): the tile must be >= 1, got {block!r}")
    if tile * row_bytes > SHARED_BYTES:
        raise ValueError(f"attention (numba_cuda): tile {tile} with d={d}, dv={dv} needs {tile * row_bytes} "
                         f"bytes of shared memory, more than {SHARED_BYTES}; use a smaller block")
    return tile


def _attention_args(name, q, k, v, keep, scale):
    bh, nq, nk, d, dv = check_attention_shapes(name, q, k, v, keep)
    dtype = float_dtype(q, k, v)
    (q, gpu), (k, _), (v, _) = (on_device(converted(a, dtype)) for a in (q, k, v))
    if keep is None:                                   # a dummy keeps one kernel signature
        keep_dev, use_keep = cuda.to_device(np.ones((1, 1, 1), dtype=bool)), False
    else:
        keep_dev, use_keep = on_device(keep.reshape((-1, nq, nk)))[0], True
    tau = np.dtype(dtype).type(softmax_scale(d, scale))
    return q, k, v, keep_dev, use_keep, tau, gpu, dtype, (bh, nq, nk, d, dv)


def attention_forward(q, k, v, keep=None, causal=False, scale=None, block=None):
    """(o (BH, Nq, dv), lse (BH, Nq)) as attention_tiled.flash_forward.

    block: rows per tile, for queries and keys alike (a pair uses its first entry); None: 32, or
    fewer when the K and V tiles would not fit in 48 KiB of shared memory.
    """
    q, k, v, keep, use_keep, tau, gpu, dtype, (bh, nq, nk, d, dv) = _attention_args(
        "attention forward (numba_cuda)", q, k, v, keep, scale)
    tile = _tile(block, d, dv, np.dtype(dtype).itemsize)
    o = cuda.device_array((bh, nq, dv), dtype)
    lse = cuda.device_array((bh, nq), dtype)
    kernel = _attention_forward_kernel(np.dtype(dtype).name, tile, d, dv)
    kernel[((nq + tile - 1) // tile, bh), tile](q, k, v, keep, use_keep, bool(causal), tau, o, lse)
    return returned(o, gpu), returned(lse, gpu)


def attention_backward(q, k, v, o, lse, do, keep=None, causal=False, scale=None, block=None):
    """(dq, dk, dv) as attention_tiled.flash_backward, from the forward's (o, lse) and dO."""
    q, k, v, keep, use_keep, tau, gpu, dtype, (bh, nq, nk, d, dv) = _attention_args(
        "attention backward (numba_cuda)", q, k, v, keep, scale)
    for arg, t, want in (("o", o, (bh, nq, dv)), ("lse", lse, (bh, nq)), ("do", do, (bh, nq, dv))):
        if tuple(t.shape) != want:
            raise ValueError(f"attention backward (numba_cuda): {arg} has shape {tuple(t.shape)}, expected {want}")
    (o, _), (lse, _), (do, _) = (on_device(converted(a, dtype)) for a in (o, lse, do))
    tile = _tile(block, d, dv, np.dtype(dtype).itemsize)
    big_d = cuda.device_array((bh, nq), dtype)
    _rowsum_product[(bh * nq + 63) // 64, 64](do, o, big_d)
    dq, dk = cuda.device_array((bh, nq, d), dtype), cuda.device_array((bh, nk, d), dtype)
    dv_out = cuda.device_array((bh, nk, dv), dtype)
    dk_dv, dq_kernel = _attention_backward_kernels(np.dtype(dtype).name, tile, d, dv)
    dk_dv[((nk + tile - 1) // tile, bh), tile](q, k, v, do, lse, big_d, keep, use_keep, bool(causal), tau, dk, dv_out)
    dq_kernel[((nq + tile - 1) // tile, bh), tile](q, k, v, do, lse, big_d, keep, use_keep, bool(causal), tau, dq)
    return returned(dq, gpu), returned(dk, gpu), returned(dv_out, gpu)


register("attention", "numba_cuda", types.SimpleNamespace(forward=attention_forward, backward=attention_backward))
