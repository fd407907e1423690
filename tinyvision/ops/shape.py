"""Ops that move values around without changing them: reshape, permute, index, join, split, pad.

Their backwards are the inverse movements: a reshape is undone by the reverse reshape, a
permutation by the inverse permutation, indexing by scattering the gradient back into zeros
(adding where an index repeats), a concatenation by cutting the gradient apart.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import scatter_add, xp_of
from ..checks import check_real, is_int
from ..tensor import Tensor
from ._common import normalize_axes, normalize_axis, tensors_for

_MAX_BYTES = 2**40     # 1 TiB: a size no machine allocates, refused by name instead of deep in NumPy

__all__ = ["reshape", "transpose", "permute", "getitem", "concatenate", "stack", "split", "pad"]


def _ints(op: str, name: str, value, allow_int: bool = True) -> tuple:
    """A tuple of ints from an int or a sequence of ints. Floats are refused, never truncated:
    reshape((2.9, 2.1)) would silently become (2, 2)."""
    if allow_int and is_int(value):
        return (int(value),)
    if not isinstance(value, (tuple, list)) and not (isinstance(value, np.ndarray) and value.ndim == 1):
        raise TypeError(f"{op}: {name} must be {'an int or ' if allow_int else ''}a sequence of ints, "
                        f"got {type(value).__name__} {value!r}"[:200])
    bad = [v for v in value if not is_int(v)]
    if bad:
        raise TypeError(f"{op}: {name} must hold ints, got {list(value)!r} (an entry {bad[0]!r} of type "
                        f"{type(bad[0]).__name__}); round explicitly if a float was meant"[:250])
    return tuple(int(v) for v in value)


def reshape(x, shape) -> Tensor:
    """The same values in a new shape (one entry may be -1).   Backward: reshape back."""
    (x,) = tensors_for("reshape", x)
    shape = _ints("reshape", "shape", shape)
    known = math.prod(n for n in shape if n != -1)
    if shape.count(-1) > 1 or any(n < -1 for n in shape) or (
            -1 not in shape and known != x.size) or (-1 in shape and (known == 0 or x.size % known)):
        raise ValueError(f"reshape: cannot view {x.size} values of shape {x.shape} as shape {shape}")
    return Tensor.from_op(x.data.reshape(shape), (x,), lambda g: (g.reshape(x.shape),), "reshape")


def permute(x, axes) -> Tensor:
    """Reorder the axes: output axis i is input axis axes[i].   Backward: the inverse permutation."""
    (x,) = tensors_for("permute", x)
    axes = _ints("permute", "axes", axes, allow_int=x.ndim == 1)
    if len(axes) != x.ndim or sorted(a % max(x.ndim, 1) for a in axes) != list(range(x.ndim)):
        raise ValueError(f"permute: axes {axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
    inverse = tuple(int(i) for i in np.argsort([a % x.ndim for a in axes]))
    return Tensor.from_op(x.data.transpose(axes), (x,), lambda g: (g.transpose(inverse),), "permute")


def transpose(x, axes=None) -> Tensor:
    """Reverse the axes (axes=None, the matrix transpose for 2-D), or swap the two axes given."""
    (x,) = tensors_for("transpose", x)
    if axes is None:
        return permute(x, tuple(reversed(range(x.ndim))))
    axes = _ints("transpose", "axes", axes, allow_int=False)
    if len(axes) != 2:
        raise ValueError(f"transpose: give two axes to swap, got {axes}; use permute for a full order")
    a, b = normalize_axes("transpose", axes[0], x.ndim)[0], normalize_axes("transpose", axes[1], x.ndim)[0]
    order = list(range(x.ndim))
    order[a], order[b] = order[b], order[a]
    return permute(x, order)


def _raw_index(index, xp):
    """Tensor and array indices become arrays of x's library; ints, slices, None, ... pass."""
    if isinstance(index, tuple):
        return tuple(_raw_index(i, xp) for i in index)
    if isinstance(index, Tensor):
        values = index.data
        if bool((values != xp_of(values).round(values)).any()):
            raise TypeError("getitem: a Tensor used as an index must hold whole numbers; pass an integer array")
        return xp.asarray(values.astype(np.int64))
    if isinstance(index, (list, np.ndarray)) or hasattr(index, "__cuda_array_interface__"):
        return xp.asarray(index)
    return index


def getitem(x, index) -> Tensor:
    """x[index] with NumPy's rules (ints, slices, None, ..., integer or boolean arrays).

    Backward: dL/dx is zero except at the picked positions, which receive g; a position
    picked twice by an integer array receives both gradients (scatter_add, not assignment).
    """
    (x,) = tensors_for("getitem", x)
    xp = xp_of(x.data)
    index = _raw_index(index, xp)
    try:
        y = x.data[index]
    except IndexError as err:
        raise IndexError(f"getitem: index {index!r} does not fit shape {x.shape}: {err}") from None

    # Basic indexing (ints, slices, None, ...) picks each position at most once, so assigning the
    # gradient is exact and much faster; only integer/boolean arrays can repeat a position.
    advanced = any(hasattr(i, "shape") for i in (index if isinstance(index, tuple) else (index,)))

    def backward(g):
        grad = xp.zeros_like(x.data)
        if advanced:
            scatter_add(grad, index, g)
        else:
            grad[index] = g
        return (grad,)
    # basic indexing gives a view of x, as reshape and permute do (and as NumPy and PyTorch do); an
    # integer or boolean array index gives NumPy's own copy
    return Tensor.from_op(y if y.ndim else xp.array(y), (x,), backward, "getitem")


def _check_joinable(op, tensors, axis, same_axis_size):
    tensors = tensors_for(op, *tensors) if tensors else []
    if not tensors:
        raise ValueError(f"{op}: needs at least one tensor")
    ref = tensors[0].shape
    for i, t in enumerate(tensors):
        if len(t.shape) != len(ref) or any(
                a != b for d, (a, b) in enumerate(zip(t.shape, ref)) if same_axis_size or d != axis % max(len(ref), 1)):
            what = "the same shape" if same_axis_size else f"the same shape except along axis {axis}"
            raise ValueError(f"{op}: tensor {i} has shape {t.shape} but tensor 0 has {ref}; they must have {what}")
    return tensors


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join along an existing axis.   Backward: cut g back into the input widths along that axis."""
    tensors = list(tensors)
    tensors = tensors_for("concatenate", *tensors) if tensors else []
    if tensors:              # the axis is checked before the shapes, which are compared along it
        axis = normalize_axis("concatenate", axis, tensors[0].ndim)
    tensors = _check_joinable("concatenate", tensors, axis, same_axis_size=False)
    xp = xp_of(tensors[0].data)
    edges = [int(e) for e in np.cumsum([t.shape[axis] for t in tensors])[:-1]]

    def backward(g):
        return tuple(xp.split(g, edges, axis=axis))
    y = xp.concatenate([t.data for t in tensors], axis=axis)
    return Tensor.from_op(y, tuple(tensors), backward, "concatenate")


def stack(tensors, axis: int = 0) -> Tensor:
    """Join along a new axis.   Backward: input i gets the slice g[..., i, ...] of that axis."""
    tensors = _check_joinable("stack", list(tensors), axis, same_axis_size=True)
    axis = normalize_axis("stack", axis, tensors[0].ndim + 1)
    xp = xp_of(tensors[0].data)

    def backward(g):
        return tuple(xp.take(g, i, axis=axis) for i in range(len(tensors)))
    return Tensor.from_op(xp.stack([t.data for t in tensors], axis=axis), tuple(tensors), backward, "stack")


def split(x, sections, axis: int = 0) -> list:
    """Cut x along `axis` into `sections` equal parts (an int) or at the given indices (a list).

    Each piece is an indexing op, so its backward is getitem's.
    """
    (x,) = tensors_for("split", x)
    axis = normalize_axis("split", axis, x.ndim)
    n = x.shape[axis]
    if is_int(sections):
        if sections <= 0 or n % sections:
            raise ValueError(f"split: axis {axis} of shape {x.shape} has {n} entries, which cannot be cut "
                             f"into {sections} equal parts")
        cuts = [n // sections * i for i in range(1, sections)]
    else:
        cuts = list(_ints("split", "sections", sections, allow_int=False))
        if cuts != sorted(cuts) or any(not 0 <= c <= n for c in cuts):
            raise ValueError(f"split: indices {cuts} must be increasing and within 0..{n} (axis {axis}, shape {x.shape})")
    bounds = [0, *cuts, n]
    lead = (slice(None),) * axis
    return [getitem(x, lead + (slice(lo, hi),)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def pad(x, pad_width, value: float = 0.0) -> Tensor:
    """Constant padding, pad_width as NumPy's ((before, after), ...) per axis or one (before, after).

    Backward: the gradient of the padded border is dropped; the inner block is x's gradient.
    """
    (x,) = tensors_for("pad", x)
    if is_int(pad_width) or isinstance(pad_width, np.ndarray):
        flat = np.asarray(pad_width, dtype=object).reshape(-1)
    else:
        flat = np.asarray(pad_width, dtype=object).reshape(-1) if isinstance(pad_width, (tuple, list)) else None
    if flat is None or not flat.size or not all(is_int(w) for w in flat):
        raise TypeError(f"pad: pad_width must be an int, a (before, after) pair of ints or one such pair per "
                        f"axis, got {pad_width!r}"[:200])
    try:
        widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (x.ndim, 2))
    except ValueError:
        raise ValueError(f"pad: pad_width {pad_width} does not fit {x.ndim} axes; give one (before, after) pair, "
                         f"or one per axis") from None
    if (widths < 0).any():
        raise ValueError(f"pad: pad widths must be >= 0, got {pad_width}")
    value = check_real("pad", "value", value)
    padded = tuple(int(n + b + a) for n, (b, a) in zip(x.shape, widths))
    if math.prod(padded) * x.dtype.itemsize > _MAX_BYTES:
        raise ValueError(f"pad: padding {x.shape} by {pad_width} gives shape {padded}, "
                         f"{math.prod(padded) * x.dtype.itemsize / 2**30:.3g} GiB: too large")
    xp = xp_of(x.data)
    y = xp.pad(x.data, [tuple(int(v) for v in w) for w in widths], mode="constant", constant_values=value)
    inner = tuple(slice(int(b), int(b) + n) for (b, _), n in zip(widths, x.shape))
    return Tensor.from_op(y, (x,), lambda g: (g[inner].copy(),), "pad")
