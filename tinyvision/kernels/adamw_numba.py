"""The fused Numba AdamW update (and Adam's, with L2 decay): one pass over p, g, m and v per tensor.

The reference is Adam._update in optim/optimizers.py (Kingma & Ba 2015, Algorithm 1; the decoupled
decay of Loshchilov & Hutter 2019); tests/test_kernels_cpu.py checks this kernel equal to it bit for
bit. What changes: NumPy's update makes one pass and one temporary per line (~10 passes over 4
arrays); this loop reads each value once and keeps the intermediates in registers. The kernel
choices shared with the other Numba kernels (cache=True, fastmath off, error_model="numpy") are
explained in rows_numba.py.
"""
from __future__ import annotations

import math
import types

import numpy as np
from numba import njit, prange

from . import register
from ._threads import kernel_threads
from .rows_numba import _FLOATS, _float_array, _same_shape

__all__ = ["adamw_update"]


# --- AdamW ------------------------------------------------------------------------------------
@njit(cache=True, parallel=True, error_model="numpy")
def _adam_update(p, g, m, v, decay, l2, beta1, one_minus_beta1, beta2, one_minus_beta2,
                 correction1, correction2, lr, eps):
    """One Adam/AdamW step on flat arrays, in place; every scalar arrives in p's dtype.

        g <- g + l2 p                     (Adam's L2 decay; l2 = 0 for AdamW)
        p <- p decay                      (AdamW's decoupled decay, decay = 1 - lr wd; 1 for Adam)
        m <- beta1 m + (1 - beta1) g      v <- beta2 v + (1 - beta2) g^2
        p <- p - lr (m / correction1) / (sqrt(v / correction2) + eps)

    Optimizations:
        - one pass: reads p, g, m, v once and writes p, m, v once; the reference makes about
          14 whole-array passes (m *= b1, (1-b1) g, m += ..., g*g, ..., m_hat, v_hat, sqrt,
          + eps, lr m_hat, /, p -= ...), 9 of them into temporaries
        - no FMA contraction (fastmath=False) and the same operation order and scalar roundings
          as the reference, so the result is bit-for-bit the reference's
        - parallel for every size: waking the pool costs ~2 us here, so even the many small
          parameters (biases, norms) need no serial version
    """
    for i in prange(p.size):
        gi = g[i]
        if l2 != 0:
            gi = gi + l2 * p[i]
        pi = p[i] * decay
        mi = m[i] * beta1
        mi = mi + one_minus_beta1 * gi
        vi = v[i] * beta2
        vi = vi + one_minus_beta2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] = pi - lr * (mi / correction1) / (math.sqrt(vi / correction2) + eps)


def adamw_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step,
                 decoupled: bool = True) -> None:
    """One AdamW (decoupled=True) or Adam-with-L2 (decoupled=False) step, in place on param,
    exp_avg (m) and exp_avg_sq (v); `step` is this parameter's t = 1, 2, ... after incrementing.

    The scalars are formed in Python float64 exactly as the reference forms them, then rounded
    once to the parameter's dtype, which is what NumPy does to a Python float meeting a float32
    array; so the kernel repeats the reference's roundings one for one.
    """
    buffers = {"param": param, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    for name, a in buffers.items():
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous or a.dtype.type not in _FLOATS:
            raise TypeError(f"adamw: {name} is updated in place, so it must be a C-contiguous float32/float64 "
                            f"NumPy array; got {type(a).__name__} {getattr(a, 'dtype', '')}")
        if a.dtype != param.dtype:
            raise TypeError(f"adamw: {name} is {a.dtype} but param is {param.dtype}; the buffers take the param's dtype")
    # grad is only read: any layout will do. It is cast to param's dtype first; a float64 grad for a
    # float32 param would make the reference do this one step in float64 (rounding differs, ~1 ulp).
    grad = _float_array("adamw", "grad", grad, param.dtype)
    _same_shape("adamw", "param, grad, exp_avg and exp_avg_sq", param, grad, exp_avg, exp_avg_sq)
    dt = param.dtype.type
    wd = float(weight_decay)
    decay = 1 - lr * wd if decoupled and wd != 0 else 1.0
    l2 = wd if not decoupled else 0.0
    with kernel_threads():
        _adam_update(param.reshape(-1), grad.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
                     dt(decay), dt(l2), dt(beta1), dt(1 - beta1), dt(beta2), dt(1 - beta2),
                     dt(1 - beta1 ** step), dt(1 - beta2 ** step), dt(lr), dt(eps))


register("adamw", "numba", types.SimpleNamespace(update=adamw_update))
