"""Attention test cases and the float64 oracle, shared by every attention kernel's tests.

attention_cases draws q, k, v, dO (non-contiguous about half the time: transposed or strided views), a
mask kind (none, causal, random, whole rows masked; causal also with Nq != Nk), keep in each accepted
shape and layout, and a scale.
dense_attention is the oracle: the dense NumPy op and its autograd gradients in float64, given the
causal rule as an explicit mask written out here (visible), never taken from the code under test.
"""
import numpy as np
from hypothesis import strategies as st

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import kernels
from strategies import arrays, cast_keeping_strides

TOL = {np.float64: dict(rtol=1e-9, atol=1e-11), np.float32: dict(rtol=2e-4, atol=2e-5)}


# --- helpers ---------------------------------------------------------------------------------
def assert_close(name, got, want, dtype=np.float64):
    """got == want within the dtype's tolerance, with -inf in the same places and no NaN anywhere."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
    assert not np.isnan(got).any(), f"{name}: NaN at {np.argwhere(np.isnan(got))[:5].tolist()}"
    finite = np.isfinite(want)
    same_infs = np.array_equal(np.isfinite(got), finite) and np.array_equal(got[~finite], want[~finite])
    assert same_infs, f"{name}: infinities at {np.argwhere(~np.isfinite(got))[:5].tolist()}, " \
                      f"expected at {np.argwhere(~finite)[:5].tolist()}"
    err = np.abs(got[finite] - want[finite])
    bound = TOL[dtype]["atol"] + TOL[dtype]["rtol"] * np.abs(want[finite])
    if (err > bound).any():
        worst = int(np.argmax(err - bound))
        where = np.argwhere(finite)[worst].tolist()
        raise AssertionError(f"{name}: max abs error {err.max():.3g} (at {where}: got {got[finite][worst]!r}, "
                             f"expected {want[finite][worst]!r}), tolerance {TOL[dtype]}")


def causal_visible(nq, nk):
    """(Nq, Nk) bool, the causal rule aligned at the bottom right (flash-attn's convention, and the one
    attention_tiled.py and ops/attention.py document): query i sees key j iff j <= i + (Nk - Nq), so the
    last query sees every key and each earlier one a key fewer. That is the lower triangle of the
    (Nq, Nk) matrix with its diagonal moved Nk - Nq to the right: np.tril keeps j - i <= Nk - Nq."""
    return np.tril(np.ones((nq, nk), bool), k=nk - nq)


def visible(case):
    """keep & the causal rule: where each query may attend, (Nq, Nk) or (1 | BH, Nq, Nk)."""
    nq, nk = case["q"].shape[1], case["k"].shape[1]
    rule = causal_visible(nq, nk) if case["causal"] else np.ones((nq, nk), bool)
    return rule if case["keep"] is None else rule & case["keep"]


def dense_attention(case):
    """(o, (dq, dk, dv)) from the dense NumPy op and autograd, float64 — the oracle.

    The causal rule goes in as part of the mask (visible), so the op's own causal code is not trusted here."""
    with kernels.use("reference"):
        q, k, v = (tv.Tensor(case[n].astype(np.float64), requires_grad=True) for n in "qkv")
        out = F.scaled_dot_product_attention(q, k, v, mask=visible(case), causal=False, scale=case["scale"])
        out.backward(case["do"].astype(np.float64))
    return out.numpy(), (q.grad, k.grad, v.grad)


def masked_scores(case):
    """S = tau Q K^T with -inf where the query may not attend (dense, float64)."""
    q, k = case["q"].astype(np.float64), case["k"].astype(np.float64)
    tau = 1 / np.sqrt(q.shape[-1]) if case["scale"] is None else case["scale"]
    return np.where(visible(case), tau * q @ k.swapaxes(1, 2), -np.inf)


def as_dtype(case, dtype):
    """The case with its float arrays copied to `dtype`, each with its own strides: astype would pack a
    strided view, and no kernel would ever see one."""
    return {n: (cast_keeping_strides(a, dtype) if isinstance(a, np.ndarray) and a.dtype != bool else a)
            for n, a in case.items()}


MASKS = ["none", "causal", "random", "random+causal", "masked rows", "masked rows+causal"]


@st.composite
def attention_cases(draw, max_bh=3, max_n=40, head_dims=(1, 3, 8, 16), masks=tuple(MASKS), same_head_dims=False):
    """q, k, v, dO (non-contiguous half the time), a mask kind, keep, causal and scale."""
    bh, nq, nk = draw(st.integers(1, max_bh)), draw(st.integers(1, max_n)), draw(st.integers(1, max_n))
    d = draw(st.sampled_from(head_dims))
    dv = d if same_head_dims else draw(st.sampled_from(head_dims))
    kind = draw(st.sampled_from(masks))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    keep = None
    if kind.startswith("random") or kind.startswith("masked rows"):
        keep = rng.random((draw(st.sampled_from([1, bh])), nq, nk)) < 0.6
        if kind.startswith("masked rows"):
            keep[:, rng.random(nq) < 0.4] = False          # whole rows: nothing to attend to
        keep = keep[0] if keep.shape[0] == 1 and draw(st.booleans()) else keep   # (Nq, Nk) or (1|BH, Nq, Nk)
        if draw(st.booleans()):                            # the same mask as a transposed (column-major) view
            keep = np.ascontiguousarray(keep.swapaxes(-1, -2)).swapaxes(-1, -2)
    return dict(q=draw(arrays((bh, nq, d))), k=draw(arrays((bh, nk, d))), v=draw(arrays((bh, nk, dv))),
                do=draw(arrays((bh, nq, dv))), keep=keep, causal=kind.endswith("causal"),
                scale=draw(st.sampled_from([None, None, 0.3, 2.0])))
