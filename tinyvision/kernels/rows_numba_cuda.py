"""Softmax and layer norm over rows on the GPU in numba.cuda (shared code: device_numba_cuda.py).

Each computes what its reference computes (ops.softmax over the last axis; ops.layer_norm) and is
tested equal to it:

    softmax      one thread block per row: block-wide max, then sum (tree reductions in shared
                 memory), then the normalised row. Backward: y o (g - sum(g o y)).
    layer norm   one thread block per row: mean, then variance (biased), then
                 y = (x - mean) rstd w + b. Backward: dx per row as in ops/layers.py, dw and db by
                 one thread per column summing over rows.
Both reduce in float64 shared memory.
"""
from __future__ import annotations

import math
import types

import numpy as np
from numba import cuda

from . import register
from .device_numba_cuda import converted, float_dtype, on_device, returned

__all__ = ["softmax_forward", "softmax_backward", "layer_norm_forward", "layer_norm_backward"]

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


# --- host side -------------------------------------------------------------------------------
def _threads(n):
    """Threads per row for softmax / layer norm: a power of two >= n, at most MAX_THREADS."""
    threads = 1
    while threads < min(n, MAX_THREADS):
        threads *= 2
    return threads


def _rows(name, x):
    if x.ndim != 2:
        raise ValueError(f"{name} (numba_cuda): expected rows (R, D), got shape {tuple(x.shape)}")
    return on_device(converted(x, float_dtype(x)))


def softmax_forward(x2d):
    """Softmax of each row of x2d (R, D)."""
    x, gpu = _rows("softmax forward", x2d)
    y = cuda.device_array(x.shape, x.dtype)
    _softmax_forward[x.shape[0], _threads(x.shape[1])](x, y)
    return returned(y, gpu)


def softmax_backward(y2d, g2d):
    """dL/dx for y = softmax(x) row-wise, given y (R, D) and g = dL/dy (R, D)."""
    y, gpu = _rows("softmax backward", y2d)
    g, _ = on_device(converted(g2d, y.dtype))
    dx = cuda.device_array(y.shape, y.dtype)
    _softmax_backward[y.shape[0], _threads(y.shape[1])](y, g, dx)
    return returned(dx, gpu)


def _param(p, n, dtype):
    """A device vector for an optional weight or bias (a dummy of ones when it is None)."""
    if p is None:
        return cuda.to_device(np.ones(1, dtype)), False
    if tuple(p.shape) != (n,):
        raise ValueError(f"layer_norm (numba_cuda): weight and bias must be ({n},), got {tuple(p.shape)}")
    return on_device(converted(p, dtype))[0], True


def layer_norm_forward(x2d, w=None, b=None, eps=1e-5):
    """(y (R, D), mean (R,), rstd (R,)) of layer norm over each row; w, b (D,) or None."""
    x, gpu = _rows("layer_norm forward", x2d)
    (w_dev, use_w), (b_dev, use_b) = _param(w, x.shape[1], x.dtype), _param(b, x.shape[1], x.dtype)
    y = cuda.device_array(x.shape, x.dtype)
    mean, rstd = cuda.device_array(x.shape[0], x.dtype), cuda.device_array(x.shape[0], x.dtype)
    _layer_norm_forward[x.shape[0], _threads(x.shape[1])](x, w_dev, b_dev, use_w, use_b, float(eps), y, mean, rstd)
    return returned(y, gpu), returned(mean, gpu), returned(rstd, gpu)


def layer_norm_backward(g2d, x2d, mean, rstd, w=None):
    """(dx (R, D), dw (D,) or None when w is None, db (D,)) given g = dL/dy and the forward's mean, rstd."""
    x, gpu = _rows("layer_norm backward", x2d)
    g, _ = on_device(converted(g2d, x.dtype))
    (mean, _), (rstd, _) = on_device(converted(mean, x.dtype)), on_device(converted(rstd, x.dtype))
    w_dev, use_w = _param(w, x.shape[1], x.dtype)
    dx = cuda.device_array(x.shape, x.dtype)
    dw, db = cuda.device_array(x.shape[1], x.dtype), cuda.device_array(x.shape[1], x.dtype)
    _layer_norm_backward_dx[x.shape[0], _threads(x.shape[1])](g, x, mean, rstd, w_dev, use_w, dx)
    _layer_norm_backward_params[(x.shape[1] + 63) // 64, 64](g, x, mean, rstd, dw, db)
    return returned(dx, gpu), (returned(dw, gpu) if use_w else None), returned(db, gpu)


register("softmax", "numba_cuda", types.SimpleNamespace(forward=softmax_forward, backward=softmax_backward))
register("layer_norm", "numba_cuda", types.SimpleNamespace(forward=layer_norm_forward, backward=layer_norm_backward))
