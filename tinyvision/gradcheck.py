"""Checking a hand-written backward against central finite differences.

For a function f with tensor output y, pick a fixed random projection c (same shape as y)
and the scalar L(x) = sum(c * f(x)). Its gradient by backprop, dL/dx = vector-Jacobian
product c^T J, must equal the central difference at every input element x_i:

    dL/dx_i  ~  (L(x + h e_i) - L(x - h e_i)) / (2h)         error O(h^2)

A random c (not all ones) matters: with c = 1 a backward that mixes up output positions can
still pass, because every output would carry the same weight. In float64 with h = 1e-6 the
rounding error is about 1e-10 / h and the truncation error about h^2 f''', so agreement to
~1e-6 relative is expected from a correct backward; a wrong one is usually off by O(1).
"""
from __future__ import annotations

import numpy as np

from .backend import to_device
from .tensor import Tensor

__all__ = ["GradcheckError", "copy_keep_layout", "gradcheck", "gradcheck_module", "numerical_grad"]


class GradcheckError(AssertionError):
    """A backward disagreed with finite differences; the message names where and by how much."""


def copy_keep_layout(a: np.ndarray, dtype=None) -> np.ndarray:
    """A copy of `a` (optionally cast) that is non-contiguous whenever `a` is.

    np.copy and astype compact a strided slice into a contiguous array, which would hide exactly
    the stride bugs a non-contiguous test input is meant to find.
    """
    dtype = a.dtype if dtype is None else np.dtype(dtype)
    if a.ndim == 0 or a.flags.c_contiguous or a.flags.f_contiguous:
        return a.astype(dtype, order="K", copy=True)
    out = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype)[..., ::2]   # strided like x[..., ::2]
    out[...] = a
    return out


def numerical_grad(fn, tensors, c, which: int, h: float = 1e-6) -> np.ndarray:
    """Central-difference dL/dx for input `which`, L = sum(c * fn(*tensors)); inputs restored after.

    The outputs are subtracted elementwise BEFORE the projection by c: an output entry that does not
    depend on x (a masked fill of -1e4, say) then cancels exactly, instead of adding its rounding
    error, ~|value| 1e-16 / h, to every derivative.
    """
    x = tensors[which].data
    grad = np.zeros(x.shape, dtype=np.float64)
    for idx in np.ndindex(*x.shape):
        old = x[idx]
        x[idx] = old + h
        up = np.array(fn(*tensors).data, dtype=np.float64)
        x[idx] = old - h
        down = np.array(fn(*tensors).data, dtype=np.float64)
        x[idx] = old
        grad[idx] = float(((up - down) * c).sum()) / (2 * h)
    return grad


def gradcheck(fn, inputs, name: str | None = None, h: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-5,
              seed: int = 0, check: tuple | None = None) -> float:
    """Compare backprop with finite differences for every element of every input.

    fn: Tensors -> Tensor. inputs: float64 arrays (their strides are kept, so a transposed,
    non-contiguous array stays non-contiguous). check: indices of inputs to differentiate
    (default all). Returns the largest |analytic - numerical|; raises GradcheckError naming the
    op, input, index, expected (numerical) and received (analytic) derivative otherwise.
    """
    name = name or getattr(fn, "__name__", "fn")
    arrays = []
    for i, a in enumerate(inputs):
        a = to_device(a.data, "cpu") if isinstance(a, Tensor) else np.asarray(a)
        if a.dtype != np.float64:
            raise TypeError(f"gradcheck({name}): input {i} has dtype {a.dtype}; finite differences need float64")
        arrays.append(copy_keep_layout(a))  # keep the layout, never touch the caller's array
    check = tuple(range(len(arrays))) if check is None else tuple(check)
    # a float64 check of the math, always on the CPU (whatever backend.default_device says)
    tensors = [Tensor(a, requires_grad=i in check, device="cpu") for i, a in enumerate(arrays)]

    out = fn(*tensors)
    if out.dtype != np.float64:
        raise TypeError(f"gradcheck({name}): output dtype is {out.dtype}, expected float64")
    c = np.random.default_rng(seed).standard_normal(out.shape)
    (out * Tensor(c, device="cpu")).sum().backward()

    worst = 0.0
    for i in check:
        analytic = tensors[i].grad if tensors[i].grad is not None else np.zeros(arrays[i].shape)
        numeric = numerical_grad(fn, tensors, c, i, h)
        err = np.abs(analytic - numeric)
        excess = err / (atol + rtol * np.abs(numeric))  # > 1 means outside tolerance
        if (excess > 1).any():
            idx = tuple(int(j) for j in np.unravel_index(np.argmax(excess), excess.shape))
            raise GradcheckError(
                f"gradcheck({name}): input {i} of shape {arrays[i].shape}, index {idx} (x = {float(arrays[i][idx]):.6g}): "
                f"expected {float(numeric[idx]):.6g} (finite differences), received {float(analytic[idx]):.6g} (backward) "
                f"for dL/dx with L = sum(c * f(x)), c a fixed random projection; "
                f"{int((excess > 1).sum())} of {excess.size} entries differ, largest error {float(err.max()):.3g}")
        worst = max(worst, float(err.max()) if err.size else 0.0)
    return worst


def gradcheck_module(module, inputs, names=None, call=None, **kwargs) -> float:
    """gradcheck a Module's output with respect to its inputs AND its parameters (float64).

    The module's parameters named in `names` (default: all) are temporarily replaced by the
    checker's own leaf tensors, so finite differences perturb them like any input.
    call(module, *input_tensors) -> output replaces module(*inputs), e.g. to pass integer token
    ids that are not differentiable inputs: gradcheck_module(text, [], call=lambda m: m(ids)).
    """
    params = dict(module.named_parameters())
    names = list(params) if names is None else list(names)
    unknown = [n for n in names if n not in params]
    if unknown:
        raise KeyError(f"gradcheck_module: no parameters named {unknown}")
    owners = {}
    for mod_name, mod in module.named_modules():
        for attr in getattr(mod, "_registered", []):
            full = f"{mod_name}.{attr}" if mod_name else attr
            if full in names:
                owners[full] = (mod, attr)
    n_in = len(inputs)

    def fn(*tensors):
        saved = {n: getattr(*owners[n]) for n in names}
        try:
            for n, t in zip(names, tensors[n_in:]):
                object.__setattr__(owners[n][0], owners[n][1], t)
            return module(*tensors[:n_in]) if call is None else call(module, *tensors[:n_in])
        finally:
            for n, p in saved.items():
                object.__setattr__(owners[n][0], owners[n][1], p)
    arrays = list(inputs) + [params[n].numpy() for n in names]
    return gradcheck(fn, arrays, name=kwargs.pop("name", type(module).__name__), **kwargs)
