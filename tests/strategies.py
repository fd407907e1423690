"""Hypothesis strategies for shapes and float64 arrays, built to hit the bugs that matter.

- sizes include 1 (broadcasting corner) and odd sizes;
- arrays are drawn non-contiguous half the time (drawn in a permuted layout and permuted
  back, or taken with a stride), because stride bugs hide behind contiguous inputs;
- values are drawn by a seeded NumPy generator inside a domain (e.g. "positive" for log),
  which keeps example generation fast and the inputs reproducible from the printed seed.
"""
import numpy as np
from hypothesis import strategies as st


@st.composite
def shapes(draw, min_dims=0, max_dims=3, min_side=1, max_side=5):
    ndim = draw(st.integers(min_dims, max_dims))
    return tuple(draw(st.integers(min_side, max_side)) for _ in range(ndim))


def broadcastable_to(draw, shape):
    """A shape that broadcasts to `shape`: some leading axes dropped, some axes set to 1."""
    drop = draw(st.integers(0, len(shape)))
    return tuple(1 if draw(st.booleans()) else n for n in shape[drop:])


def _values(rng, shape, domain):
    if domain == "real":
        return rng.standard_normal(shape)
    if domain == "positive":          # log, sqrt, fractional powers
        return rng.uniform(0.5, 2.0, shape)
    if domain == "away_from_zero":    # kinks at 0 (relu) and division
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape)
    if domain == "distinct":          # max: no ties within the finite-difference step
        n = int(np.prod(shape))
        return (rng.permutation(n).reshape(shape) * 0.1 + rng.uniform(0, 0.01, shape)).astype(np.float64)
    raise ValueError(domain)


@st.composite
def arrays(draw, shape, domain="real"):
    """A float64 array of `shape`, non-contiguous about half the time."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layout = draw(st.sampled_from(["contiguous", "permuted", "strided"]))
    shape = tuple(shape)
    if layout == "permuted" and len(shape) >= 2:
        order = list(reversed(range(len(shape))))
        a = _values(rng, tuple(shape[i] for i in order), domain)
        return a.transpose(np.argsort(order))
    if layout == "strided" and len(shape) >= 1:
        wide = _values(rng, shape[:-1] + (2 * shape[-1],), domain)
        return wide[..., ::2]
    return np.ascontiguousarray(_values(rng, shape, domain))


@st.composite
def axis_of(draw, ndim, allow_none=True, allow_tuple=True):
    """An axis argument for a reduction: None, an int (maybe negative) or a tuple of ints."""
    if ndim == 0:
        return None
    kinds = ["int"] + (["none"] if allow_none else []) + (["tuple"] if allow_tuple and ndim > 1 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(axes)
