"""GPU kernels in numba.cuda: FlashAttention forward and backward, row softmax, row layer norm.

Each kernel computes what the NumPy reference computes (attention: flash_reference.py and
tinyvision.ops.scaled_dot_product_attention; softmax: ops.softmax over the last axis; layer norm:
ops.layer_norm) and is tested equal to it. Written for reading, in the style of the first versions
in llm.c's dev/cuda, not tuned:

    attention forward    grid (query tiles, BH), one thread per query row. Each thread block walks
                         the key tiles; for each, its threads copy the K and V tile into shared
                         memory (one key row per thread), wait at a barrier, and every thread runs
                         the online softmax of flash_reference.py on its own row. Each K/V element
                         is read from global memory once per query tile instead of once per query.
    attention backward   three kernels, race-free as in attention_numba.py: D = rowsum(dO o O) (one
                         thread per row); dK, dV (grid over key tiles, one thread per key row, the
                         Q/dO tile in shared memory); dQ (grid over query tiles, one thread per
                         query row, the K/V tile in shared memory).
    softmax              one thread block per row: block-wide max, then sum (tree reductions in
                         shared memory), then the normalised row. Backward: y o (g - sum(g o y)).
    layer norm           one thread block per row: mean, then variance (biased), then
                         y = (x - mean) rstd w + b. Backward: dx per row as in ops/layers.py, dw and
                         db by one thread per column summing over rows.

The causal index logic is flash_reference.py's is_visible / key_end / query_start, compiled with
cuda.jit(device=True) from their single plain-Python definition (attention_numba.py compiles the same
functions for the CPU). Tile size, head dims and dtype are compile-time constants (shared-memory
arrays need them), so each combination is compiled once, like C++ template instances. Constants are
written ntype(0), ntype(-inf) so that a float32 attention kernel does its arithmetic in float32 (a bare
0.0 is a float64 and would promote it); softmax and layer norm reduce in float64 shared memory.

No max() or min() inside kernels: in Numba 0.68 they are generic (*args) overloads that the
built-in CUDA target fails to compile ("Signature mismatch"), so the kernels compare explicitly.
The simulator runs them as Python and would not notice; compiling to PTX with libNVVM does.

Barriers: every cuda.syncthreads() is reached by all threads of a block. Threads past the last
row still load tiles and wait at barriers; they only skip the arithmetic and the stores. (The
simulator does not catch a divergent barrier; a real GPU may hang or compute garbage.)

Arrays: NumPy arrays are copied to the device and the results come back as NumPy arrays; CuPy arrays
(anything with __cuda_array_interface__) stay on the device and the results are CuPy arrays.

Tested without a GPU under NUMBA_ENABLE_CUDASIM=1, on tiny shapes: the simulator runs each thread as
a Python thread, so it checks indexing, bounds and barriers, never speed. Importing this module
raises ImportError (the reason included) when numba.cuda finds no GPU and the simulator is off.
"""
from __future__ import annotations

import functools
import math
import types

import numpy as np
from numba import cuda
from numba.core import config
from numba.np import numpy_support

from . import register
from .flash_reference import check_attention_shapes, is_visible, key_end, query_start, softmax_scale

SIMULATED = bool(config.ENABLE_CUDASIM)


def _why_no_gpu():
    try:
        cuda.current_context()
    except Exception as err:  # CudaSupportError, driver missing, no device
        first_sentence = " ".join(str(err).split()).split(". ")[0]
        return f"{type(err).__name__}: {first_sentence}"
    return "numba.cuda.is_available() is False"


if not SIMULATED and not cuda.is_available():
    raise ImportError("numba.cuda kernels need an NVIDIA GPU (or NUMBA_ENABLE_CUDASIM=1 for the simulator): "
                      + _why_no_gpu())

__all__ = ["attention_forward", "attention_backward", "softmax_forward", "softmax_backward",
           "layer_norm_forward", "layer_norm_backward", "DEFAULT_TILE", "SIMULATED"]

DEFAULT_TILE = 32                     # query rows (= threads) and key rows per attention tile
SHARED_BYTES = 48 * 1024              # static shared memory one block may use on every CUDA GPU

# the single-source index helpers of flash_reference.py, compiled for the GPU
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


# --- softmax and layer norm over rows --------------------------------------------------------
@cuda.jit(device=True)
def _block_reduce(buf, value, take_max):
    """The sum (or, with take_max, the max) of `value` over the threads of a block (a power of two):
    a tree reduction in shared memory, halving the active threads at each step."""
    tid = cuda.threadIdx.x
    buf[tid] = value
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2
    while stride > 0:
        if tid < stride:
            other = buf[tid + stride]
            if not take_max:
                buf[tid] += other
            elif other > buf[tid]:
                buf[tid] = other
        cuda.syncthreads()
        stride //= 2
    total = buf[0]
    cuda.syncthreads()                                 # all have read buf[0] before it is reused
    return total


@cuda.jit(device=True)
def _block_sum(buf, value):
    return _block_reduce(buf, value, False)


@cuda.jit(device=True)
def _block_max(buf, value):
    return _block_reduce(buf, value, True)


MAX_THREADS = 256                                      # threads per row for softmax and layer norm


@cuda.jit
def _softmax_forward(x, y):
    """y = e^(x - max) / sum e^(x - max) on row blockIdx.x; an all -inf row gives zeros."""
    row, tid, n = cuda.blockIdx.x, cuda.threadIdx.x, x.shape[1]
    buf = cuda.shared.array(MAX_THREADS, np.float64)
    m = -math.inf
    for c in range(tid, n, cuda.blockDim.x):
        if x[row, c] > m:
            m = x[row, c]
    m = _block_max(buf, m)
    if m == -math.inf:                                 # fully masked row: e^(-inf - 0) = 0 everywhere
        m = 0.0
    total = 0.0
    for c in range(tid, n, cuda.blockDim.x):
        e = math.exp(x[row, c] - m)
        y[row, c] = e
        total += e
    total = _block_sum(buf, total)
    inv = 1.0 / total if total > 0 else 0.0
    for c in range(tid, n, cuda.blockDim.x):
        y[row, c] *= inv


@cuda.jit
def _softmax_backward(y, g, dx):
    """dx = y o (g - sum(g o y)) on row blockIdx.x (the softmax Jacobian-vector product)."""
    row, tid, n = cuda.blockIdx.x, cuda.threadIdx.x, y.shape[1]
    buf = cuda.shared.array(MAX_THREADS, np.float64)
    dot = 0.0
    for c in range(tid, n, cuda.blockDim.x):
        dot += g[row, c] * y[row, c]
    dot = _block_sum(buf, dot)
    for c in range(tid, n, cuda.blockDim.x):
        dx[row, c] = y[row, c] * (g[row, c] - dot)


@cuda.jit
def _layer_norm_forward(x, w, b, use_w, use_b, eps, y, mean, rstd):
    """mu, r = 1/sqrt(var + eps) and y = (x - mu) r w + b on row blockIdx.x (biased variance)."""
    row, tid, n = cuda.blockIdx.x, cuda.threadIdx.x, x.shape[1]
    buf = cuda.shared.array(MAX_THREADS, np.float64)
    total = 0.0
    for c in range(tid, n, cuda.blockDim.x):
        total += x[row, c]
    mu = _block_sum(buf, total) / n
    total = 0.0
    for c in range(tid, n, cuda.blockDim.x):      # two passes: (x - mu)^2, not E[x^2] - mu^2
        total += (x[row, c] - mu) * (x[row, c] - mu)
    r = 1.0 / math.sqrt(_block_sum(buf, total) / n + eps)
    for c in range(tid, n, cuda.blockDim.x):
        out = (x[row, c] - mu) * r
        if use_w:
            out *= w[c]
        if use_b:
            out += b[c]
        y[row, c] = out
    if tid == 0:
        mean[row] = mu
        rstd[row] = r


@cuda.jit
def _layer_norm_backward_dx(g, x, mean, rstd, w, use_w, dx):
    """dx = r (h - mean(h) - x_hat mean(h o x_hat)), h = g o w, on row blockIdx.x (ops/layers.py)."""
    row, tid, n = cuda.blockIdx.x, cuda.threadIdx.x, x.shape[1]
    buf = cuda.shared.array(MAX_THREADS, np.float64)
    mu, r = mean[row], rstd[row]
    sum_h, sum_hx = 0.0, 0.0
    for c in range(tid, n, cuda.blockDim.x):
        h = g[row, c] * w[c] if use_w else g[row, c]
        sum_h += h
        sum_hx += h * (x[row, c] - mu) * r
    mean_h = _block_sum(buf, sum_h) / n
    mean_hx = _block_sum(buf, sum_hx) / n
    for c in range(tid, n, cuda.blockDim.x):
        h = g[row, c] * w[c] if use_w else g[row, c]
        dx[row, c] = r * (h - mean_h - (x[row, c] - mu) * r * mean_hx)


@cuda.jit
def _layer_norm_backward_params(g, x, mean, rstd, dw, db):
    """dw_c = sum over rows of g o x_hat, db_c = sum over rows of g; one thread per column c."""
    c = cuda.grid(1)
    if c < x.shape[1]:
        sum_w, sum_b = 0.0, 0.0
        for row in range(x.shape[0]):
            sum_w += g[row, c] * (x[row, c] - mean[row]) * rstd[row]
            sum_b += g[row, c]
        dw[c] = sum_w
        db[c] = sum_b


# --- host side: device arrays in, the caller's kind of array out -----------------------------
def _on_device(x):
    """(device array, True if the caller passed a GPU array). NumPy arrays are copied over."""
    if hasattr(x, "__cuda_array_interface__"):
        return cuda.as_cuda_array(x), True
    return cuda.to_device(np.ascontiguousarray(x)), False


def _returned(dev_array, on_gpu):
    """Back in the caller's kind of array: CuPy (zero-copy view) for GPU input, NumPy otherwise."""
    if on_gpu:
        import cupy  # noqa: PLC0415 - only reached with GPU arrays, where CuPy is installed
        return cupy.asarray(dev_array)
    return dev_array.copy_to_host()


def _float_dtype(*arrays):
    return np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64


def _converted(x, dtype):
    """x in `dtype` on its own side (host or device), converted only when needed."""
    return x if x.dtype == dtype else x.astype(dtype)


def _threads(n):
    """Threads per row for softmax / layer norm: a power of two >= n, at most MAX_THREADS."""
    threads = 1
    while threads < min(n, MAX_THREADS):
        threads *= 2
    return threads


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
    dtype = _float_dtype(q, k, v)
    (q, gpu), (k, _), (v, _) = (_on_device(_converted(a, dtype)) for a in (q, k, v))
    if keep is None:                                   # a dummy keeps one kernel signature
        keep_dev, use_keep = cuda.to_device(np.ones((1, 1, 1), dtype=bool)), False
    else:
        keep_dev, use_keep = _on_device(keep.reshape((-1, nq, nk)))[0], True
    tau = np.dtype(dtype).type(softmax_scale(d, scale))
    return q, k, v, keep_dev, use_keep, tau, gpu, dtype, (bh, nq, nk, d, dv)


def attention_forward(q, k, v, keep=None, causal=False, scale=None, block=None):
    """(o (BH, Nq, dv), lse (BH, Nq)) as flash_reference.flash_forward.

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
    return _returned(o, gpu), _returned(lse, gpu)


def attention_backward(q, k, v, o, lse, do, keep=None, causal=False, scale=None, block=None):
    """(dq, dk, dv) as flash_reference.flash_backward, from the forward's (o, lse) and dO."""
    q, k, v, keep, use_keep, tau, gpu, dtype, (bh, nq, nk, d, dv) = _attention_args(
        "attention backward (numba_cuda)", q, k, v, keep, scale)
    for arg, t, want in (("o", o, (bh, nq, dv)), ("lse", lse, (bh, nq)), ("do", do, (bh, nq, dv))):
        if tuple(t.shape) != want:
            raise ValueError(f"attention backward (numba_cuda): {arg} has shape {tuple(t.shape)}, expected {want}")
    (o, _), (lse, _), (do, _) = (_on_device(_converted(a, dtype)) for a in (o, lse, do))
    tile = _tile(block, d, dv, np.dtype(dtype).itemsize)
    big_d = cuda.device_array((bh, nq), dtype)
    _rowsum_product[(bh * nq + 63) // 64, 64](do, o, big_d)
    dq, dk = cuda.device_array((bh, nq, d), dtype), cuda.device_array((bh, nk, d), dtype)
    dv_out = cuda.device_array((bh, nk, dv), dtype)
    dk_dv, dq_kernel = _attention_backward_kernels(np.dtype(dtype).name, tile, d, dv)
    dk_dv[((nk + tile - 1) // tile, bh), tile](q, k, v, do, lse, big_d, keep, use_keep, bool(causal), tau, dk, dv_out)
    dq_kernel[((nq + tile - 1) // tile, bh), tile](q, k, v, do, lse, big_d, keep, use_keep, bool(causal), tau, dq)
    return _returned(dq, gpu), _returned(dk, gpu), _returned(dv_out, gpu)


def _rows(name, x):
    if x.ndim != 2:
        raise ValueError(f"{name} (numba_cuda): expected rows (R, D), got shape {tuple(x.shape)}")
    return _on_device(_converted(x, _float_dtype(x)))


def softmax_forward(x2d):
    """Softmax of each row of x2d (R, D)."""
    x, gpu = _rows("softmax forward", x2d)
    y = cuda.device_array(x.shape, x.dtype)
    _softmax_forward[x.shape[0], _threads(x.shape[1])](x, y)
    return _returned(y, gpu)


def softmax_backward(y2d, g2d):
    """dL/dx for y = softmax(x) row-wise, given y (R, D) and g = dL/dy (R, D)."""
    y, gpu = _rows("softmax backward", y2d)
    g, _ = _on_device(_converted(g2d, y.dtype))
    dx = cuda.device_array(y.shape, y.dtype)
    _softmax_backward[y.shape[0], _threads(y.shape[1])](y, g, dx)
    return _returned(dx, gpu)


def _param(p, n, dtype):
    """A device vector for an optional weight or bias (a dummy of ones when it is None)."""
    if p is None:
        return cuda.to_device(np.ones(1, dtype)), False
    if tuple(p.shape) != (n,):
        raise ValueError(f"layer_norm (numba_cuda): weight and bias must be ({n},), got {tuple(p.shape)}")
    return _on_device(_converted(p, dtype))[0], True


def layer_norm_forward(x2d, w=None, b=None, eps=1e-5):
    """(y (R, D), mean (R,), rstd (R,)) of layer norm over each row; w, b (D,) or None."""
    x, gpu = _rows("layer_norm forward", x2d)
    (w_dev, use_w), (b_dev, use_b) = _param(w, x.shape[1], x.dtype), _param(b, x.shape[1], x.dtype)
    y = cuda.device_array(x.shape, x.dtype)
    mean, rstd = cuda.device_array(x.shape[0], x.dtype), cuda.device_array(x.shape[0], x.dtype)
    _layer_norm_forward[x.shape[0], _threads(x.shape[1])](x, w_dev, b_dev, use_w, use_b, float(eps), y, mean, rstd)
    return _returned(y, gpu), _returned(mean, gpu), _returned(rstd, gpu)


def layer_norm_backward(g2d, x2d, mean, rstd, w=None):
    """(dx (R, D), dw (D,) or None when w is None, db (D,)) given g = dL/dy and the forward's mean, rstd."""
    x, gpu = _rows("layer_norm backward", x2d)
    g, _ = _on_device(_converted(g2d, x.dtype))
    (mean, _), (rstd, _) = _on_device(_converted(mean, x.dtype)), _on_device(_converted(rstd, x.dtype))
    w_dev, use_w = _param(w, x.shape[1], x.dtype)
    dx = cuda.device_array(x.shape, x.dtype)
    dw, db = cuda.device_array(x.shape[1], x.dtype), cuda.device_array(x.shape[1], x.dtype)
    _layer_norm_backward_dx[x.shape[0], _threads(x.shape[1])](g, x, mean, rstd, w_dev, use_w, dx)
    _layer_norm_backward_params[(x.shape[1] + 63) // 64, 64](g, x, mean, rstd, dw, db)
    return _returned(dx, gpu), (_returned(dw, gpu) if use_w else None), _returned(db, gpu)


register("attention", "numba_cuda", types.SimpleNamespace(forward=attention_forward, backward=attention_backward))
register("softmax", "numba_cuda", types.SimpleNamespace(forward=softmax_forward, backward=softmax_backward))
register("layer_norm", "numba_cuda", types.SimpleNamespace(forward=layer_norm_forward, backward=layer_norm_backward))
