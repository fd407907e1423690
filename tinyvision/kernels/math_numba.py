"""Vectorisable math for the Numba CPU kernels (rows_numba.py): exp, the Gaussian cdf / pdf, row sums.

Kept apart from the kernels because it is a different idea: how to write a function so that LLVM
can turn a loop over it into SIMD code. Every helper is @njit(inline="always") or a tiny @njit
reduction, compiled into the kernel that calls it.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit
from numba.extending import overload

# --- Vectorisable math ------------------------------------------------------------------------
# LLVM turns a loop into SIMD code only if every operation in it has a SIMD form. math.exp and
# math.erf are calls into libm, one element at a time (this Numba has no SVML, Intel's vector
# math library), so a loop containing one runs scalar: ~2.4 ns per exp, ~10 ns per erf, where
# NumPy's own SIMD exp takes ~0.5 ns. For float32 we therefore write exp out in + - * / and
# comparisons, which LLVM vectorises, and build the Gaussian cdf from that exp. float64 keeps
# libm: it is the precision the gradient checks run in, not the one training runs in.
_F32 = np.float32
_LN2 = math.log(2)
_LN2_HI = _F32(round(_LN2 * 512) / 512)       # 0.693359375, 9 significant bits: k * _LN2_HI is exact
_LN2_LO = _F32(_LN2 - float(_LN2_HI))         # the rest of ln 2
# Between these, k = round(a / ln 2) stays in -126..127, the exponents of normal float32 numbers.
_EXP_MIN, _EXP_MAX = _F32(-87.33), _F32(88.37)
_TAYLOR = tuple(_F32(1 / math.factorial(n)) for n in range(8))
_INV_SQRT_2, _INV_SQRT_2PI = 1 / math.sqrt(2), 1 / math.sqrt(2 * math.pi)
# Abramowitz & Stegun (1964), Handbook of Mathematical Functions, eq. 7.1.26
_AS_P = _F32(0.3275911)
_AS_A = tuple(_F32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429))


@njit(inline="always")
def _exp32(a):
    """e^a for a float32 a, in operations that vectorise; within 1.5 ulps of exact (tests check).

        e^a = 2^k e^r,   k = round(a / ln 2),   r = a - k ln 2  in [-ln2/2, ln2/2]
    r is formed as (a - k hi) - k lo with ln 2 = hi + lo and hi short enough that k hi is exact
    (Cody & Waite 1980), so r keeps all its bits. e^r is its Taylor series up to r^7/7!: the first
    term left out is below 0.35^8/8! = 5e-9, under float32's rounding of 6e-8. 2^k is built
    directly: the float32 whose exponent field is k + 127 and whose mantissa is zero.
    Outside [-87.33, 88.37]: 0 below (float32's subnormals are flushed to 0), inf above (a little
    early: e^a passes float32's largest value only at 88.72); nan stays nan.
    """
    c0, c1, c2, c3, c4, c5, c6, c7 = _TAYLOR
    clamped = a if a > _EXP_MIN else _EXP_MIN  # nan becomes _EXP_MIN here; the last line restores it
    clamped = clamped if clamped < _EXP_MAX else _EXP_MAX
    k = np.floor(clamped * _F32(1 / _LN2) + _F32(0.5))  # np.floor stays float32; math.floor is an int
    r = (clamped - k * _LN2_HI) - k * _LN2_LO
    e_r = ((((((c7 * r + c6) * r + c5) * r + c4) * r + c3) * r + c2) * r + c1) * r + c0
    two_k = np.int32((np.int32(k) + np.int32(127)) << np.int32(23)).view(np.float32)
    e = e_r * two_k
    e = e if a >= _EXP_MIN else _F32(0)
    e = e if a <= _EXP_MAX else _F32(np.inf)
    return e if a == a else a


@njit(inline="always")
def _gaussian32(u):
    """(Phi(u), phi(u)), the standard normal cdf and pdf, for a float32 u, from one exponential.

    A&S 7.1.26: for x >= 0, erfc(x) = (a1 t + a2 t^2 + ... + a5 t^5) e^(-x^2) + eps, t = 1/(1 + p x),
    |eps| <= 1.5e-7. With x = |u|/sqrt 2, e^(-x^2) = e^(-u^2/2) is sqrt(2 pi) phi(u), the very
    exponential GELU's derivative needs. Phi(u) = erfc(x)/2 for u < 0 and 1 - erfc(x)/2 for u >= 0:
    the left tail comes out directly, without the cancellation in 1 + erf(u/sqrt 2).
    Phi is within 3e-7 of exact (5 ulps of 1; the reference's float32 erf is within 6e-8).
    """
    a1, a2, a3, a4, a5 = _AS_A
    x = abs(u) * _F32(_INV_SQRT_2)
    t = _F32(1) / (_F32(1) + _AS_P * x)
    e = _exp32(-x * x)
    tail = ((((a5 * t + a4) * t + a3) * t + a2) * t + a1) * t * e * _F32(0.5)
    return (_F32(1) - tail if u >= 0 else tail), e * _F32(_INV_SQRT_2PI)


@njit(inline="always")
def _gaussian64(u):
    """(Phi(u), phi(u)) through libm's erf and exp, as the reference computes them."""
    return 0.5 * (1 + math.erf(u * _INV_SQRT_2)), math.exp(-0.5 * u * u) * _INV_SQRT_2PI


# One name per function, one implementation per dtype: inside a kernel, _exp(a) compiles to
# _exp32 when a is float32 and to libm's exp otherwise (numba's @overload picks by type at compile
# time). Called from plain Python, as under NUMBA_DISABLE_JIT=1, they are just the libm versions.
def _exp(a):
    return math.exp(a)


def _gaussian(u):
    return _gaussian64(u)


@overload(_exp)
def _exp_by_type(a):
    return (lambda a: _exp32(a)) if a == numba.float32 else (lambda a: math.exp(a))


@overload(_gaussian)
def _gaussian_by_type(u):
    return (lambda u: _gaussian32(u)) if u == numba.float32 else (lambda u: _gaussian64(u))


# Row reductions. A sum is a chain: each += waits for the previous one (3-4 cycles), and without
# permission to reorder LLVM must keep the chain. fastmath={"reassoc"} grants only that (no FMA,
# no assumption that values are finite): LLVM then keeps 8-16 partial sums in a SIMD register,
# a different order than NumPy's pairwise sum but no less accurate (9x faster on rows of 192
# here). Kept in these small functions so that the flag reaches nothing else. Accumulated in float64.
@njit(fastmath={"reassoc"}, error_model="numpy")
def _sum(a):
    """sum_j a_j"""
    total = 0.0
    for j in range(a.size):
        total += a[j]
    return total


@njit(fastmath={"reassoc"}, error_model="numpy")
def _dot(a, b):
    """sum_j a_j b_j"""
    total = 0.0
    for j in range(a.size):
        total += a[j] * b[j]
    return total


@njit(fastmath={"reassoc"}, error_model="numpy")
def _centred_sum_sq(a, mu):
    """sum_j (a_j - mu)^2"""
    total = 0.0
    for j in range(a.size):
        c = a[j] - mu
        total += c * c
    return total


@njit(error_model="numpy")
def _has_nan_or_inf(a):
    """True if a holds a NaN or an inf (such a row is the input's own doing, not an overflow)"""
    for j in range(a.size):
        if not math.isfinite(a[j]):
            return True
    return False


@njit(fastmath={"reassoc"}, error_model="numpy")
def _centred_dot(a, b, c, mu):
    """sum_j a_j b_j (c_j - mu)"""
    total = 0.0
    for j in range(a.size):
        total += a[j] * b[j] * (c[j] - mu)
    return total
