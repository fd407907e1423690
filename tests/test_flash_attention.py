"""FlashAttention: the tiled reference, the Numba CPU kernel and the numba.cuda kernels.

The oracle is the dense op tinyvision.ops.scaled_dot_product_attention (run with the NumPy
implementation, float64) and its autograd gradients. The tiled reference
(kernels/attention_tiled.py) must equal it for every shape, mask and block size; the compiled
kernels must equal the reference. Shapes are drawn below, at and past the block size and not
multiples of it; masks are none, causal (also Nq != Nk, aligned bottom-right), random, and random
with whole rows masked (output 0, gradient 0, never NaN).

Tests named *_simulated run the numba.cuda kernels; without a GPU they need NUMBA_ENABLE_CUDASIM=1
(the simulator runs every GPU thread as a Python thread: indexing and barriers only, no timing).
    NUMBA_ENABLE_CUDASIM=1 pytest -q tests/test_flash_attention.py -k simulated
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import kernels
from tinyvision.kernels import attention_numba
from tinyvision.kernels.attention_tiled import (attention_memory_bytes, flash_backward, flash_forward, is_visible,
                                                key_end, query_start)
from attention_cases import as_dtype, assert_close, attention_cases, causal_visible, dense_attention, masked_scores


def run_reference(case, block_q=16, block_k=16):
    args = (case["keep"], case["causal"], case["scale"])
    o, lse = flash_forward(case["q"], case["k"], case["v"], *args, block_q=block_q, block_k=block_k)
    grads = flash_backward(case["q"], case["k"], case["v"], o, lse, case["do"], *args, block_q=block_q, block_k=block_k)
    return o, lse, grads


def run_kernel(kernel, case, block=None):
    args = (case["keep"], case["causal"], case["scale"], block)
    o, lse = kernel.forward(case["q"], case["k"], case["v"], *args)
    grads = kernel.backward(case["q"], case["k"], case["v"], o, lse, case["do"], *args)
    return o, lse, grads



# --- the tiled NumPy reference equals dense attention ----------------------------------------
@given(attention_cases(), st.sampled_from([1, 5, 16, 64]), st.sampled_from([1, 7, 16, 64]))
def test_flash_reference_forward_equals_dense_attention(case, block_q, block_k):
    o, _, _ = run_reference(case, block_q, block_k)
    assert_close("O", o, dense_attention(case)[0])


@given(attention_cases(), st.sampled_from([1, 5, 16, 64]), st.sampled_from([1, 7, 16, 64]))
def test_flash_reference_backward_equals_dense_gradients(case, block_q, block_k):
    _, _, grads = run_reference(case, block_q, block_k)
    for name, got, want in zip(("dQ", "dK", "dV"), grads, dense_attention(case)[1]):
        assert_close(name, got, want)


@given(attention_cases())
def test_lse_equals_row_logsumexp_of_masked_scores(case):
    s = masked_scores(case)
    m = s.max(axis=2, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):                         # log 0 = -inf for fully masked rows
        want = (m_safe + np.log(np.exp(s - m_safe).sum(axis=2, keepdims=True)))[..., 0]
    assert_close("L", run_reference(case)[1], want)


@given(attention_cases(max_n=24))
def test_tiled_result_is_independent_of_block_sizes(case):
    base = run_reference(case, 16, 16)
    for block_q, block_k in [(1, 1), (5, 5), (64, 64), (5, 16), (16, 1)]:
        o, lse, grads = run_reference(case, block_q, block_k)
        for name, got, want in zip(("O", "L", "dQ", "dK", "dV"), (o, lse) + grads, base[:2] + base[2]):
            assert_close(f"{name} with blocks ({block_q}, {block_k}) vs (16, 16)", got, want)


@given(attention_cases())
def test_d_rowsum_do_o_equals_rowsum_p_dp(case):
    """D = rowsum(dO o O) (what the backward uses) equals rowsum(P o dP) with P recomputed from L."""
    o, lse, _ = run_reference(case)
    lse_safe = np.where(np.isfinite(lse), lse, 0)[..., None]
    p = np.exp(masked_scores(case) - lse_safe)                # P = e^(S - L): 0 on fully masked rows
    dp = case["do"] @ case["v"].swapaxes(1, 2)
    assert_close("rowsum(P o dP)", (p * dp).sum(axis=2), (case["do"] * o).sum(axis=2))


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_fully_masked_rows_give_zero_output_zero_gradients_and_no_nan(impl):
    rng = np.random.default_rng(0)
    bh, nq, nk, d = 2, 12, 5, 4                                # causal with Nq > Nk: rows 0..6 see no key
    case = dict(q=rng.standard_normal((bh, nq, d)), k=rng.standard_normal((bh, nk, d)),
                v=rng.standard_normal((bh, nk, d)), do=rng.standard_normal((bh, nq, d)),
                keep=np.ones((nq, nk), bool), causal=True, scale=None)
    case["keep"][9] = False                                    # and row 9 by the mask
    masked = [0, 1, 2, 3, 4, 5, 6, 9]
    o, lse, (dq, dk, dv) = run_reference(case, 4, 3) if impl == "reference" else \
        run_kernel(attention_numba, case, (4, 3))
    for name, a in (("O", o), ("dQ", dq), ("dK", dk), ("dV", dv)):
        assert not np.isnan(a).any(), f"{impl}: NaN in {name}"
    assert np.all(o[:, masked] == 0) and np.all(dq[:, masked] == 0), f"{impl}: masked rows must give O = 0, dQ = 0"
    assert np.all(np.isneginf(lse[:, masked])) and np.all(np.isfinite(np.delete(lse, masked, axis=1)))
    want_o, want_grads = dense_attention(case)
    for name, got, want in zip(("O", "dQ", "dK", "dV"), (o, dq, dk, dv), (want_o,) + want_grads):
        assert_close(f"{impl} {name}", got, want)


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_causal_block_never_reads_keys_right_of_its_diagonal(impl):
    """NaN in V and K for keys 8.. cannot reach query rows 0..7 (block 8): those key blocks are skipped.

    Masking alone would not do: a masked score gives P = 0, and 0 * NaN = NaN.
    """
    rng = np.random.default_rng(1)
    n, d = 32, 4
    case = dict(q=rng.standard_normal((1, n, d)), k=rng.standard_normal((1, n, d)), v=rng.standard_normal((1, n, d)),
                do=rng.standard_normal((1, n, d)), keep=None, causal=True, scale=None)
    first = {n_: a[:, :8].copy() for n_, a in case.items() if isinstance(a, np.ndarray)}
    case["k"][:, 8:] = np.nan
    case["v"][:, 8:] = np.nan
    o, lse, _ = run_reference(case, 8, 8) if impl == "reference" else run_kernel(attention_numba, case, 8)
    want_o, _ = dense_attention(dict(first, keep=None, causal=True, scale=None))
    assert_close(f"{impl} O of rows 0..7", o[:, :8], want_o)


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_causal_backward_never_reads_queries_left_of_a_key_block(impl):
    """NaN in Q and dO of query rows 0..7 cannot reach dK, dV of keys 8.. (block 8): skipped, not masked."""
    rng = np.random.default_rng(2)
    n, d = 32, 4
    case = dict(q=rng.standard_normal((1, n, d)), k=rng.standard_normal((1, n, d)), v=rng.standard_normal((1, n, d)),
                do=rng.standard_normal((1, n, d)), keep=None, causal=True, scale=None)
    _, _, (_, want_dk, want_dv) = run_reference(case, 8, 8)
    o, lse = flash_forward(case["q"], case["k"], case["v"], causal=True)
    case["q"][:, :8] = np.nan
    case["do"][:, :8] = np.nan
    args = (case["q"], case["k"], case["v"], o, lse, case["do"])
    if impl == "reference":
        _, dk, dv = flash_backward(*args, causal=True, block_q=8, block_k=8)
    else:
        _, dk, dv = attention_numba.backward(*args, causal=True, block=8)
    assert_close(f"{impl} dK of keys 8..", dk[:, 8:], want_dk[:, 8:])
    assert_close(f"{impl} dV of keys 8..", dv[:, 8:], want_dv[:, 8:])


def test_causal_rule_written_out_in_the_tests_is_bottom_right_aligned():
    """The tests' own rule (attention_cases.causal_visible) on shapes worked by hand."""
    np.testing.assert_array_equal(causal_visible(3, 3), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(causal_visible(2, 4), [[1, 1, 1, 0], [1, 1, 1, 1]])    # Nq < Nk: shifted right
    np.testing.assert_array_equal(causal_visible(4, 2), [[0, 0], [0, 0], [1, 0], [1, 1]])  # Nq > Nk: top rows see nothing


@given(st.integers(1, 12), st.integers(1, 12), st.booleans())
def test_is_visible_equals_the_written_out_rule(nq, nk, causal):
    """attention_tiled.is_visible, on scalars (as the kernels call it) and on index arrays, equals the tests' rule."""
    want = causal_visible(nq, nk) if causal else np.ones((nq, nk), bool)
    scalars = np.array([[bool(is_visible(i, j, nq, nk, causal)) for j in range(nk)] for i in range(nq)])
    np.testing.assert_array_equal(scalars, want)
    on_arrays = is_visible(np.arange(nq)[:, None], np.arange(nk)[None, :], nq, nk, causal)   # broadcasts i against j
    np.testing.assert_array_equal(np.broadcast_to(on_arrays, (nq, nk)), want)


@given(st.integers(1, 12), st.integers(1, 12), st.booleans())
def test_causal_index_helpers_match_brute_force(nq, nk, causal):
    """key_end and query_start give exactly the keys / queries the causal rule allows, nothing skipped wrongly."""
    seen = causal_visible(nq, nk) if causal else np.ones((nq, nk), bool)
    for q_end in range(1, nq + 1):
        visible_keys = np.flatnonzero(seen[:q_end].any(axis=0))
        assert key_end(q_end, nq, nk, causal) == (visible_keys.max() + 1 if visible_keys.size else 0)
    for k_start in range(nk):
        seeing = np.flatnonzero(seen[:, k_start:].any(axis=1))
        assert query_start(k_start, nq, nk, causal) == (seeing.min() if seeing.size else nq)


def test_attention_memory_is_quadratic_for_dense_and_constant_in_n_for_tiles():
    dense = [attention_memory_bytes(n, 64, 64, naive=True) for n in (256, 512, 1024)]
    tiled = [attention_memory_bytes(n, 64, 64, naive=False) for n in (256, 512, 1024)]
    assert dense[1] == 4 * dense[0] and dense[2] == 16 * dense[0]
    assert tiled[0] == tiled[1] == tiled[2] < dense[0]
    assert attention_memory_bytes(1024, 64, 64, naive=True) == 1024 * 1024 * 4


# --- the Numba CPU kernel equals the reference -----------------------------------------------
def check_numba_equals_reference(dtype, case, block):
    case = as_dtype(case, dtype)
    o, lse, grads = run_kernel(attention_numba, case, block)
    assert o.dtype == lse.dtype == dtype and all(g.dtype == dtype for g in grads)
    want = run_reference(as_dtype(case, np.float64))             # float64 on the same (rounded) inputs
    for name, got, ref in zip(("O", "L", "dQ", "dK", "dV"), (o, lse) + grads, want[:2] + want[2]):
        assert_close(f"numba {np.dtype(dtype).name} {name}", got, ref, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(case=attention_cases(), block=st.sampled_from([None, 1, 5, 16, (3, 8)]))
def test_numba_attention_equals_reference(dtype, case, block):
    check_numba_equals_reference(dtype, case, block)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d", [8, 64, 128])
@given(case=attention_cases(max_bh=2, max_n=12, head_dims=(8,)))
def test_numba_attention_equals_reference_for_head_dims_8_64_128(dtype, d, case):
    rng = np.random.default_rng(d)
    for name in ("q", "k"):                                    # widen the head dim, keep everything else
        case[name] = rng.standard_normal(case[name].shape[:2] + (d,))
    check_numba_equals_reference(dtype, case, 16)


def as_strided_views(case):
    """The same values as views the kernels must not read as packed memory: q column-major over (N, d),
    k every other row and v every other column of a larger array (the skipped entries NaN), dO with
    its BH axis reversed (a negative stride), keep transposed."""
    def every_other(a, axis):
        padded = np.full(a.shape[:axis] + (2 * a.shape[axis],) + a.shape[axis + 1:], np.nan, a.dtype)
        view = padded[(slice(None),) * axis + (slice(None, None, 2),)]
        view[...] = a
        return view
    views = dict(case, q=np.ascontiguousarray(case["q"].swapaxes(1, 2)).swapaxes(1, 2), k=every_other(case["k"], 1),
                 v=every_other(case["v"], 2), do=np.ascontiguousarray(case["do"][::-1])[::-1])
    if case["keep"] is not None:
        views["keep"] = np.ascontiguousarray(case["keep"].swapaxes(-1, -2)).swapaxes(-1, -2)
    return views


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("causal, mask", [(False, False), (True, False), (False, True), (True, True)])
def test_numba_attention_reads_strided_and_transposed_views_by_their_strides(dtype, causal, mask):
    """Views in, the same bits out as from packed copies, and the reference's values."""
    rng = np.random.default_rng(6)
    bh, nq, nk, d, dv = 2, 9, 13, 5, 3
    keep = rng.random((nq, nk)) < 0.7 if mask else None
    case = as_dtype(dict(q=rng.standard_normal((bh, nq, d)), k=rng.standard_normal((bh, nk, d)),
                         v=rng.standard_normal((bh, nk, dv)), do=rng.standard_normal((bh, nq, dv)),
                         keep=keep, causal=causal, scale=None), dtype)
    views = as_strided_views(case)
    assert not any(views[n].flags.c_contiguous for n in ("q", "k", "v", "do")), "the views must not be C-contiguous"
    check_numba_equals_reference(dtype, views, (4, 5))
    got, want = run_kernel(attention_numba, views, (4, 5)), run_kernel(attention_numba, case, (4, 5))
    for name, a, b in zip(("O", "L", "dQ", "dK", "dV"), got[:2] + got[2], want[:2] + want[2]):
        np.testing.assert_array_equal(a, b, err_msg=f"numba {name} from views differs from packed inputs")


def test_numba_attention_is_registered_for_the_switch():
    assert kernels.kernel("attention", "numba").forward is attention_numba.forward
    assert kernels.kernel("attention", "numba").backward is attention_numba.backward


def test_numba_attention_rejects_bad_shapes_naming_them():
    q = np.zeros((2, 5, 8))
    with pytest.raises(ValueError, match=r"k \(2, 5, 4\)"):
        attention_numba.forward(q, np.zeros((2, 5, 4)), np.zeros((2, 5, 8)))
    with pytest.raises(ValueError, match="keep has shape"):
        attention_numba.forward(q, q, q, np.ones((3, 5), bool))


# --- numba.cuda kernels, on a GPU or in the simulator ------------------------------------------
_CUDA_WHY = kernels.why_unavailable("numba_cuda")
simulated = pytest.mark.skipif(_CUDA_WHY is not None,
                               reason=f"numba.cuda kernels unavailable here: {_CUDA_WHY}")

SIM_CASES = {  # tiny: the simulator costs about a millisecond per GPU thread
    "N=7x6, random mask with a masked row, tile 4": dict(bh=1, nq=7, nk=6, d=4, dv=3, mask=True, causal=False, tile=4),
    "Nq=7 > Nk=6 causal (rows 0 masked), tile 4": dict(bh=1, nq=7, nk=6, d=4, dv=3, mask=False, causal=True, tile=4),
    "Nq=5 < Nk=8 causal + mask, tile 4": dict(bh=1, nq=5, nk=8, d=8, dv=8, mask=True, causal=True, tile=4),
    "N=6 < one tile of 8, no mask": dict(bh=1, nq=6, nk=6, d=2, dv=5, mask=False, causal=False, tile=8),
    "N=8 = two tiles of 4, causal": dict(bh=1, nq=8, nk=8, d=3, dv=2, mask=False, causal=True, tile=4),
}


def sim_case(bh, nq, nk, d, dv, mask, causal, tile, seed=0):
    rng = np.random.default_rng(seed)
    keep = None
    if mask:
        keep = rng.random((nq, nk)) < 0.6
        keep[1] = False
    case = dict(q=rng.standard_normal((bh, nq, d)), k=rng.standard_normal((bh, nk, d)),
                v=rng.standard_normal((bh, nk, dv)), do=rng.standard_normal((bh, nq, dv)),
                keep=keep, causal=causal, scale=None)
    return case, tile


@simulated
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(SIM_CASES))
def test_cuda_attention_forward_backward_equal_reference_simulated(name, dtype):
    """numba.cuda attention (simulated: indexing and barriers only, no timing) equals attention_tiled."""
    case, tile = sim_case(**SIM_CASES[name])
    case = as_dtype(case, dtype)
    o, lse, grads = run_kernel(kernels.kernel("attention", "numba_cuda"), case, tile)
    want = run_reference(as_dtype(case, np.float64))
    for label, got, ref in zip(("O", "L", "dQ", "dK", "dV"), (o, lse) + grads, want[:2] + want[2]):
        assert_close(f"cuda {label}", got, ref, dtype)
    assert o.dtype == dtype


@simulated
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cuda_attention_takes_strided_and_transposed_views_simulated(dtype):
    """numba.cuda attention (simulated) on views: the same bits as on packed copies (the wrapper packs them)."""
    case, tile = sim_case(**dict(SIM_CASES["Nq=5 < Nk=8 causal + mask, tile 4"], bh=2))
    case = as_dtype(case, dtype)
    views = as_strided_views(case)
    assert not any(views[n].flags.c_contiguous for n in ("q", "k", "v", "do")), "the views must not be C-contiguous"
    attention = kernels.kernel("attention", "numba_cuda")
    got, want = run_kernel(attention, views, tile), run_kernel(attention, case, tile)
    for name, a, b in zip(("O", "L", "dQ", "dK", "dV"), got[:2] + got[2], want[:2] + want[2]):
        np.testing.assert_array_equal(a, b, err_msg=f"cuda {name} from views differs from packed inputs")


@simulated
def test_cuda_softmax_forward_backward_equal_numpy_simulated():
    """Row softmax on the GPU (simulated: indexing and barriers only) equals ops.softmax, incl. an all -inf row."""
    softmax = kernels.kernel("softmax", "numba_cuda")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 11)) * 3
    x[1] = -np.inf                                             # a fully masked row gives zeros
    x[2, :4] = -np.inf
    x[3, 10] = 800.0                                           # e^800 overflows unless the true max is subtracted
    g = rng.standard_normal((4, 11))
    with kernels.use("reference"):
        xt = tv.Tensor(x, requires_grad=True)
        y_ref = F.softmax(xt, axis=-1)
        y_ref.backward(g)
    y = softmax.forward(x)
    assert_close("softmax y", y, y_ref.numpy())
    assert_close("softmax dx", softmax.backward(y, g), xt.grad)


@simulated
@pytest.mark.parametrize("affine", [True, False])
def test_cuda_layer_norm_forward_backward_equal_numpy_simulated(affine):
    """Row layer norm on the GPU (simulated: indexing and barriers only) equals ops.layer_norm and its grads."""
    layer_norm = kernels.kernel("layer_norm", "numba_cuda")
    rng = np.random.default_rng(4)
    x, g = rng.standard_normal((3, 7)) * 2 + 1, rng.standard_normal((3, 7))
    w, b = (rng.standard_normal(7), rng.standard_normal(7)) if affine else (None, None)
    with kernels.use("reference"):
        xt = tv.Tensor(x, requires_grad=True)
        wt, bt = (tv.Tensor(w, requires_grad=True), tv.Tensor(b, requires_grad=True)) if affine else (None, None)
        y_ref = F.layer_norm(xt, wt, bt, eps=1e-5)
        y_ref.backward(g)
    y, mean, rstd = layer_norm.forward(x, w, b, 1e-5)
    assert_close("layer_norm y", y, y_ref.numpy())
    assert_close("layer_norm mean", mean, x.mean(axis=1))
    assert_close("layer_norm rstd", rstd, 1 / np.sqrt(x.var(axis=1) + 1e-5))
    dx, dw, db = layer_norm.backward(g, x, mean, rstd, w)
    assert_close("layer_norm dx", dx, xt.grad)
    assert_close("layer_norm db", db, g.sum(axis=0))
    if affine:
        assert_close("layer_norm dw", dw, wt.grad)
    else:
        assert dw is None
