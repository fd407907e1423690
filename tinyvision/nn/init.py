"""Weight initialisers. Each takes an explicit seed (int or numpy Generator) and returns an array.

    trunc_normal: N(0, std^2) redrawn until inside [a, b]; a, b default to -2 std, +2 std.
        (timm's trunc_normal_ takes a, b as ABSOLUTE values, -2 and 2, so at std 0.02 it never
        truncates; pass a=-2, b=2 to reproduce it.)
    xavier_uniform: U(-bound, bound), bound = gain sqrt(6 / (fan_in + fan_out))  (Glorot & Bengio 2010,
        eq. 16): keeps the activation variance constant forwards and the gradient variance backwards.
    uniform_fan_in: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), what PyTorch's nn.Linear effectively uses.
"""
from __future__ import annotations

import math

import numpy as np

from ..checks import check_float_dtype, check_int, check_number, is_int

__all__ = ["as_rng", "trunc_normal", "uniform_fan_in", "xavier_uniform", "zeros"]


def as_rng(seed) -> np.random.Generator:
    """A numpy Generator from an int seed, or the Generator itself (so models can share one stream)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if not is_int(seed):
        raise TypeError(f"seed must be an int or numpy.random.Generator, got {seed!r}: every random "
                        "initialisation in tinyvision is seeded so runs are reproducible")
    if seed < 0:
        raise ValueError(f"seed must be an int >= 0 or a numpy.random.Generator, got {seed!r} "
                         "(numpy.random.default_rng takes no negative seeds)")
    return np.random.default_rng(int(seed))


def _check_shape(where: str, shape) -> tuple:
    """A shape as a tuple of ints >= 0 (an int n means (n,))."""
    if is_int(shape):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{where}: shape must be a tuple of ints, got {shape!r} ({type(shape).__name__})")
    return tuple(check_int(where, f"shape[{i}]", n, low=0) for i, n in enumerate(shape))


def trunc_normal(shape, std: float, seed, a: float | None = None, b: float | None = None,
                 dtype=np.float32) -> np.ndarray:
    """N(0, std^2) restricted to [a, b] (default [-2 std, 2 std]), std > 0; a, b are absolute values."""
    where = "trunc_normal"
    shape, dtype = _check_shape(where, shape), check_float_dtype(where, "dtype", dtype)
    std = check_number(where, "std", std, low=0.0, low_open=True)
    rng = as_rng(seed)
    lo = -2 * std if a is None else check_number(where, "a", a)
    hi = 2 * std if b is None else check_number(where, "b", b)
    if not lo < hi:
        raise ValueError(f"trunc_normal: need a < b, got a={lo}, b={hi}")
    out = rng.standard_normal(shape) * std
    bad = (out < lo) | (out > hi)
    for _ in range(1000):  # redraw only the rejected entries; ~4.6% per round at +-2 std
        if not bad.any():
            return out.astype(dtype)
        out[bad] = rng.standard_normal(int(bad.sum())) * std
        bad = (out < lo) | (out > hi)
    raise ValueError(f"trunc_normal: [a, b] = [{lo}, {hi}] holds too little of N(0, {std}^2) to sample by "
                     "rejection; choose bounds that contain a reasonable part of the distribution")


def xavier_uniform(shape, seed, gain: float = 1.0, dtype=np.float32) -> np.ndarray:
    """U(-bound, bound), bound = gain sqrt(6 / (fan_in + fan_out)), fan_in, fan_out = shape[-2:]; gain > 0."""
    where = "xavier_uniform"
    shape, dtype = _check_shape(where, shape), check_float_dtype(where, "dtype", dtype)
    if len(shape) < 2 or shape[-2] + shape[-1] == 0:
        raise ValueError(f"xavier_uniform: needs a weight of at least 2 axes (fan_in, fan_out), not both 0, "
                         f"got shape {shape}")
    gain = check_number(where, "gain", gain, low=0.0, low_open=True)
    fan_in, fan_out = shape[-2], shape[-1]
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return as_rng(seed).uniform(-bound, bound, shape).astype(dtype)


def uniform_fan_in(shape, fan_in: int, seed, dtype=np.float32) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) of the given shape; fan_in >= 1."""
    shape, dtype = _check_shape("uniform_fan_in", shape), check_float_dtype("uniform_fan_in", "dtype", dtype)
    fan_in = check_int("uniform_fan_in", "fan_in", fan_in, low=1)
    bound = 1 / math.sqrt(fan_in)
    return as_rng(seed).uniform(-bound, bound, shape).astype(dtype)


def zeros(shape, dtype=np.float32) -> np.ndarray:
    shape, dtype = _check_shape("zeros", shape), check_float_dtype("zeros", "dtype", dtype)
    return np.zeros(shape, dtype=dtype)
