"""Hypothesis strategies for shapes and float64 arrays, built to hit the bugs that matter.

- sizes include 1 (broadcasting corner) and odd sizes;
- arrays are drawn non-contiguous (in a permuted layout and permuted back, or taken with a
  stride) so that each op gets a non-contiguous input in about half of its examples, because
  stride bugs hide behind contiguous inputs;
- values are drawn by a seeded NumPy generator inside a domain (e.g. "positive" for log),
  which keeps example generation fast and the inputs reproducible from the printed seed.
"""
import numpy as np
from hypothesis import strategies as st


@st.composite
def shapes(draw, min_dims=0, max_dims=3, min_side=1, max_side=5):
    # sampled_from, not integers, with 0 dims and sides of 1 listed last: hypothesis favours the low
    # end of a range and the first entry of a list, which made most shapes () or all ones, single
    # elements that test neither strides nor much else. They still come, just not most of the time.
    ndim = draw(st.sampled_from(sorted(range(min_dims, max_dims + 1), key=lambda n: n == 0)))
    sides = sorted(range(min_side, max_side + 1), key=lambda n: n == 1)
    return tuple(draw(st.sampled_from(sides)) for _ in range(ndim))


def broadcastable_to(draw, shape):
    """A shape that broadcasts to `shape`: some leading axes dropped, some axes set to 1."""
    drop = draw(st.integers(0, len(shape)))
    return tuple(1 if draw(st.booleans()) else n for n in shape[drop:])


def _values(rng, shape, domain):
    if domain == "real":
        return rng.standard_normal(shape)
    if domain == "positive":          # log, sqrt, fractional powers
        return rng.uniform(0.5, 2.0, shape)
    if domain == "probability":       # targets of the binary cross-entropy
        return rng.uniform(0.0, 1.0, shape)
    if domain == "away_from_zero":    # kinks at 0 (relu) and division
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape)
    if domain == "distinct":          # max: no ties within the finite-difference step
        n = int(np.prod(shape))
        return (rng.permutation(n).reshape(shape) * 0.1 + rng.uniform(0, 0.01, shape)).astype(np.float64)
    raise ValueError(domain)


@st.composite
def arrays(draw, shape, domain="real"):
    """A float64 array of `shape`: contiguous, permuted or strided, one draw in three each.

    permuted  the values laid out with the axes reversed and viewed back (a transpose: Fortran order);
    strided   every other element along one axis of an array twice as long there (on the last axis,
              x[..., ::2], neighbours have gaps; on an earlier one the row stride is not the row length).
    NumPy ignores the stride of an axis of size 1, so a view is non-contiguous only if it steps along an
    axis of size >= 2: permuted needs two such axes, strided one (drawn among them). A permuted draw on
    a shape with one such axis is strided instead; a shape with none (0-d, every side 1) has no strides
    to get wrong and stays contiguous. Two non-contiguous layouts in three, because hypothesis favours
    its first choice ("contiguous") and some draws are single elements: measured over a CI run of
    tests/test_ops.py, each op gets a non-contiguous input in 34-78 % of its examples (median 52 %).
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = tuple(shape)
    layout = draw(st.sampled_from(["contiguous", "permuted", "strided"]))
    long_axes = [axis for axis, n in enumerate(shape) if n >= 2]
    if layout == "permuted" and len(long_axes) < 2:
        layout = "strided"
    if layout == "contiguous" or not long_axes:
        return np.array(_values(rng, shape, domain), dtype=np.float64)   # not ascontiguousarray: it makes 0-d 1-d
    if layout == "permuted":
        order = tuple(reversed(range(len(shape))))      # reversing the axes is its own inverse
        return _values(rng, tuple(shape[i] for i in order), domain).transpose(order)
    axis = draw(st.sampled_from(long_axes[::-1]))       # the last long axis first
    doubled = shape[:axis] + (2 * shape[axis],) + shape[axis + 1:]
    return _values(rng, doubled, domain)[(slice(None),) * axis + (slice(None, None, 2),)]


def cast_keeping_strides(a, dtype):
    """A copy of `a` in `dtype` whose strides are a's, counted in elements; the skipped entries are NaN.

    So a view stays the same kind of view through a cast: astype packs a strided array, and
    tinyvision.gradcheck.copy_keep_layout turns every non-contiguous one into a copy strided along
    its last axis, which would hide a row stride or a negative stride from the op.
    """
    a = np.asarray(a)
    if a.size == 0:
        return np.empty(a.shape, dtype)
    step = [s // a.itemsize for s in a.strides]                           # element strides, maybe negative
    first = -sum(s * (n - 1) for s, n in zip(step, a.shape) if s < 0)    # where a[0, ..., 0] sits in memory
    memory = np.full(sum(abs(s) * (n - 1) for s, n in zip(step, a.shape)) + 1, np.nan, dtype)
    out = np.lib.stride_tricks.as_strided(memory[first:], a.shape, [s * memory.itemsize for s in step])
    out[...] = a
    return out


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
