"""Numba CPU kernels for the row ops of a ViT step: softmax and layer norm (bias + GELU: gelu_numba.py,
AdamW: adamw_numba.py, which share this file's conventions and wrappers' helpers).

Each kernel computes what its NumPy reference computes (ops/reduce.py softmax, ops/layers.py
layer_norm, ops/elementwise.py gelu, optim/optimizers.py Adam._update), forward and backward,
and tests/test_kernels_cpu.py checks that they agree. What changes is how:

    NumPy reference                           Numba kernel
    one pass over memory per ufunc call,      one loop that reads each input once and writes
    a temporary array per intermediate        each output once; intermediates stay in registers
    SIMD exp/erf inside each ufunc            loops that LLVM turns into SIMD code, so exp is
                                              written out (math_numba.py)
    one core                                  rows (or chunks of rows) spread over the cores, when
                                              the BLAS is not using them (_threads.py)

Kernels and their measured speed-up over the NumPy op (forward + backward, float32, ViT-tiny at
batch 128; the op run through autograd under kernels.use("reference") vs the kernel called directly;
interleaved medians of 25; 2-core AMD EPYC VM, NumPy 2.4, Numba 0.68 without SVML; measured alone:
after a multi-threaded matmul, the kernels run on 1 thread by default, see _threads.py):
                                                      2 threads   1 thread
    softmax     (8320, 192), rows in parallel          3.4x        2.0x
                (24960, 65), attention's rows          3.8x        2.0x
    layer_norm  (8320, 192), weight and bias           8.0-9.2x    5.1x
    gelu        (8320, 768), bias fused, exact         7.4-7.6x    4.6x
                                         tanh form     5.6-5.9x    4.1x
    adamw       ViT-tiny's 90 tensors (2.7M values)    2.9-3.2x    3.0x
First call: ~7 s of compiling per dtype for all four; later processes load the cache in 0.3 s.

Choices shared by every kernel:
- @njit(cache=True): compiled on first call, once per dtype (float32 and float64 each get their
  own machine code), and saved next to this file in __pycache__, so the compile cost (seconds)
  is paid once per machine, not once per process. Time a kernel only after a warm-up call.
- fastmath=False (Numba's default): LLVM may not reorder arithmetic, fuse a*b + c into one
  rounding (FMA), or assume there are no NaN or inf. That keeps each result within rounding of
  the NumPy reference, lets NaN/inf propagate as in NumPy, and keeps AdamW bit-for-bit equal to
  the reference. One exception, the row reductions (_sum, _dot, ...) in math_numba.py.
- error_model="numpy": a division by zero gives inf/nan as in NumPy instead of raising, which
  also removes a zero-check branch from the loops.
- The wrappers (the public functions) check shapes, make inputs C-contiguous and allocate the
  outputs; the kernels (the _underscored @njit functions) are nothing but loops.

Debugging: NUMBA_DISABLE_JIT=1 runs every kernel as plain Python (prange becomes range, the
float32 helpers fall back to math.exp and math.erf), so print() and pdb work inside them:
    NUMBA_DISABLE_JIT=1 pytest tests/test_kernels_cpu.py

Threads: prange uses Numba's pool (numba.get_num_threads()). After a NumPy matmul, OpenBLAS's
threads keep spinning and slow the next kernel down; see _threads.py for the trap and the fixes.
"""
from __future__ import annotations

import math
import types

import numpy as np
from numba import njit, prange

from . import KernelDeclined, register
from ._threads import kernel_threads, limit_blas_threads
from .math_numba import _centred_dot, _centred_sum_sq, _dot, _exp, _has_nan_or_inf, _sum

__all__ = ["softmax_forward", "softmax_backward", "layer_norm_forward", "layer_norm_backward",
           "limit_blas_threads", "read_only"]

# Sums across rows (layer norm's dweight and dbias, GELU's dbias) cut the rows into this many
# chunks; each chunk adds into its own row of a partial-sum array, and the wrapper adds up the
# chunks. A fixed count (not one per thread) keeps the result independent of the thread count.
_CHUNKS = 64

_FLOATS = (np.float32, np.float64)

# --- wrappers' helpers ------------------------------------------------------------------------
def read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view of `a` (no copy), for a kernel's inputs.

    Numba compiles one machine-code version per argument type, and an array's type includes
    whether it is writeable: a broadcast or an np.asarray of a read-only buffer is not. Without
    this, the same kernel was compiled again for every mix of writeable and read-only inputs
    (20 versions of the attention forward in the test suite, ~5 s each); with it, one per dtype.
    """
    view = a.view()
    view.flags.writeable = False
    return view


def _float_array(op: str, name: str, a, dtype=None) -> np.ndarray:
    """`a` as a C-contiguous float32/float64 NumPy array (of `dtype` when given), read-only."""
    a = np.asarray(a, dtype=dtype, order="C")  # not ascontiguousarray, which makes 0-d arrays 1-d
    if a.dtype.type not in _FLOATS:
        raise TypeError(f"{op}: {name} must be float32 or float64, got {a.dtype}")
    return read_only(a)


def _rows(op: str, name: str, a, dtype=None) -> np.ndarray:
    """`a` checked to be 2-D (R rows, D features), C-contiguous."""
    a = _float_array(op, name, a, dtype)
    if a.ndim != 2:
        raise ValueError(f"{op}: {name} must be 2-D (R rows, D features), got shape {a.shape}")
    return a


def _vector(op: str, name: str, a, d: int, dtype) -> np.ndarray:
    """A (D,) parameter, in the activations' dtype."""
    a = _float_array(op, name, a, dtype)
    if a.shape != (d,):
        raise ValueError(f"{op}: {name} has shape {a.shape}, expected ({d},) to match the last axis D={d}")
    return a


def _same_shape(op: str, names: str, *arrays) -> None:
    shapes = [a.shape for a in arrays]
    if len(set(shapes)) != 1:
        raise ValueError(f"{op}: {names} must have the same shape, got {', '.join(map(str, shapes))}")


def _chunk(c, n_chunks, n):
    """The half-open range [start, stop) of chunk c when n items are cut into n_chunks parts."""
    return c * n // n_chunks, (c + 1) * n // n_chunks


_chunk_jit = njit(inline="always")(_chunk)  # the same helper, compiled into the kernels


# --- softmax ----------------------------------------------------------------------------------
@njit(cache=True, parallel=True, error_model="numpy")
def _softmax_forward(x, y):
    """y[r] = exp(x[r] - m) / sum(exp(x[r] - m)),  m = max(x[r]) (0 when m is not finite).

    Optimizations:
        - one row per prange iteration: rows are independent, so no synchronisation
        - four sweeps over a row that sits in L1 (max, exp, sum, scale) instead of the
          reference's five whole-array passes and three whole-array temporaries
        - exp as _exp (vectorised for float32), the sum as _sum (vectorised, float64)
    """
    n_rows, d = x.shape
    dt = x.dtype.type
    for r in prange(n_rows):
        row, out = x[r], y[r]
        m = row[0]
        for j in range(1, d):
            m = row[j] if (row[j] > m or row[j] != row[j]) else m  # a nan wins, as in np.max
        # An all -inf row (fully masked) would give (-inf) - (-inf) = nan: shift by 0 instead,
        # so every exp is 0 and the row comes out as zeros, as in the reference (which also
        # shifts by 0 when the max is +inf or nan).
        if not math.isfinite(m):
            m = dt(0)
        for j in range(d):
            out[j] = _exp(row[j] - m)
        total = _sum(out)
        scale = dt(1 / total) if total > 0 else dt(1)
        for j in range(d):
            out[j] = out[j] * scale


@njit(cache=True, parallel=True, error_model="numpy")
def _softmax_backward(y, g, dx):
    """dx[r] = y[r] * (g[r] - sum_j g[r, j] y[r, j])   (the softmax Jacobian-vector product).

    Optimizations:
        - the dot product and the output in two sweeps of an L1-resident row, no temporaries
        - rows in parallel
    """
    n_rows, d = y.shape
    dt = y.dtype.type
    for r in prange(n_rows):
        dot = dt(_dot(g[r], y[r]))
        for j in range(d):
            dx[r, j] = y[r, j] * (g[r, j] - dot)


def softmax_forward(x):
    """Softmax over the last axis of each row of x (R, D); an all -inf row gives zeros."""
    x = _rows("softmax", "x", x)
    y = np.empty_like(x)
    if x.size:
        with kernel_threads():
            _softmax_forward(x, y)
    return y


def softmax_backward(y, g):
    """dL/dx for y = softmax(x) (R, D) and upstream gradient g (R, D)."""
    y = _rows("softmax backward", "y", y)
    g = _rows("softmax backward", "g", g, y.dtype)
    _same_shape("softmax backward", "y and g", y, g)
    dx = np.empty_like(y)
    if y.size:
        with kernel_threads():
            _softmax_backward(y, g, dx)
    return dx


# --- layer norm -------------------------------------------------------------------------------
@njit(cache=True, parallel=True, error_model="numpy")
def _layer_norm_forward(x, weight, bias, eps, half_max, y, mean, rstd, out_of_range):
    """mu = mean(x[r]), r = 1/sqrt(mean((x[r] - mu)^2) + eps), y[r] = (x[r] - mu) r weight + bias.

    Two-pass statistics (the mean, then the mean of squared deviations), not Welford: a row of
    D = 192..768 values is in L1 after the first pass, so the second is nearly free; summing
    (x - mu)^2 avoids the cancellation of E[x^2] - E[x]^2 as Welford does, but without Welford's
    division per element and serial update, so it vectorises. Both sums in float64.

    Optimizations:
        - rows in parallel (prange); each row read three times from L1, written once
        - no temporaries: the reference allocates centred, its square, x_hat and y
        - the output pass in x's dtype with mu and r rounded to it, as the reference computes
          it (and for float32, twice as many values per SIMD instruction)

    Range: x - mu must fit x's dtype. A row whose deviations may not (sqrt(D var) > half the
    dtype's largest value, or var itself overflowing float64) is only marked in out_of_range;
    layer_norm_forward then declines, and the op runs the reference, which rescales such rows.
    No extra pass for ordinary rows.
    """
    n_rows, d = x.shape
    dt = x.dtype.type
    for r in prange(n_rows):
        row = x[r]
        mu = _sum(row) / d
        var = _centred_sum_sq(row, mu) / d
        # every |x_j - mu| <= sqrt(D var): below half the dtype's largest value, nothing overflows
        if not math.isfinite(mu) or not math.sqrt(var * d) <= half_max:
            out_of_range[r] = not _has_nan_or_inf(row)
        rs = 1 / math.sqrt(var + eps)
        mean[r], rstd[r] = mu, rs
        mu_, rs_ = dt(mu), dt(rs)
        for j in range(d):
            y[r, j] = (row[j] - mu_) * rs_ * weight[j] + bias[j]


@njit(cache=True, parallel=True, error_model="numpy")
def _layer_norm_backward(g, x, mean, rstd, weight, dx, dweight_parts, dbias_parts):
    """dx[r] = r (h - mean(h) - x_hat mean(h x_hat)),  h = g weight;  per-chunk sums of g x_hat, g.

    Optimizations:
        - one parallel loop over chunks of rows gives dx and the parameter gradients together:
          each chunk adds its rows' g x_hat and g into its own row of dweight_parts/dbias_parts,
          so no two threads write the same memory (no race) and the wrapper adds _CHUNKS rows
        - x_hat is recomputed from x, mean and rstd (two operations) instead of being stored
        - per row: the two means (vectorised reductions), then one sweep for dx and the partials
    """
    n_rows, d = x.shape
    n_chunks = dweight_parts.shape[0]
    dt = x.dtype.type
    for c in prange(n_chunks):
        start, stop = _chunk_jit(c, n_chunks, n_rows)
        for r in range(start, stop):
            mu, rs = mean[r], rstd[r]
            mean_h = dt(_dot(g[r], weight) / d)
            mean_h_xhat = dt(_centred_dot(g[r], weight, x[r], mu) * rs / d)
            for j in range(d):
                x_hat = (x[r, j] - mu) * rs
                dx[r, j] = rs * (g[r, j] * weight[j] - mean_h - x_hat * mean_h_xhat)
                dweight_parts[c, j] += g[r, j] * x_hat
                dbias_parts[c, j] += g[r, j]


def layer_norm_forward(x, weight=None, bias=None, eps: float = 1e-5):
    """Layer norm over the last axis of x (R, D) -> (y (R, D), mean (R,), rstd (R,)).

    weight and bias (D,) are optional (None: 1 and 0). mean and rstd = 1/sqrt(var + eps) are in
    x's dtype and are what layer_norm_backward needs besides x.
    """
    x = _rows("layer_norm", "x", x)
    n_rows, d = x.shape
    if d == 0:
        raise ValueError(f"layer_norm: x has shape {x.shape}; need at least one feature (D >= 1)")
    weight = read_only(np.ones(d, x.dtype)) if weight is None else _vector("layer_norm", "weight", weight, d, x.dtype)
    bias = read_only(np.zeros(d, x.dtype)) if bias is None else _vector("layer_norm", "bias", bias, d, x.dtype)
    y = np.empty_like(x)
    mean, rstd = np.empty(n_rows, x.dtype), np.empty(n_rows, x.dtype)
    out_of_range = np.zeros(n_rows, np.bool_)
    with kernel_threads():
        _layer_norm_forward(x, weight, bias, float(eps), float(np.finfo(x.dtype).max) / 2, y, mean, rstd, out_of_range)
    if out_of_range.any():
        raise KernelDeclined(f"layer_norm: {int(out_of_range.sum())} rows have deviations from their mean near "
                             f"the largest {x.dtype} (max |x| = {float(np.abs(x).max()):.3g}); the reference "
                             "rescales them")
    return y, mean, rstd


def layer_norm_backward(g, x, mean, rstd, weight=None):
    """(dx (R, D), dweight (D,) or None, dbias (D,)) for layer_norm_forward's y.

    dweight is None when weight is None. dbias is always returned: the kernel gets it for free,
    and the caller drops it when the layer has no bias.
    """
    x = _rows("layer_norm backward", "x", x)
    g = _rows("layer_norm backward", "g", g, x.dtype)
    _same_shape("layer_norm backward", "g and x", g, x)
    n_rows, d = x.shape
    mean = _vector("layer_norm backward", "mean", mean, n_rows, x.dtype)
    rstd = _vector("layer_norm backward", "rstd", rstd, n_rows, x.dtype)
    w = read_only(np.ones(d, x.dtype)) if weight is None else _vector("layer_norm backward", "weight", weight, d, x.dtype)
    dx = np.empty_like(x)
    n_chunks = max(1, min(_CHUNKS, n_rows))
    dweight_parts, dbias_parts = np.zeros((n_chunks, d)), np.zeros((n_chunks, d))
    with kernel_threads():
        _layer_norm_backward(g, x, mean, rstd, w, dx, dweight_parts, dbias_parts)
    dweight = dweight_parts.sum(axis=0).astype(x.dtype) if weight is not None else None
    return dx, dweight, dbias_parts.sum(axis=0).astype(x.dtype)


# --- registration: what tinyvision.kernels.kernel(op, "numba") returns --------------------------
register("softmax", "numba", types.SimpleNamespace(forward=softmax_forward, backward=softmax_backward))
register("layer_norm", "numba", types.SimpleNamespace(forward=layer_norm_forward, backward=layer_norm_backward))
