"""The Numba CPU kernels (tinyvision/kernels/rows_numba.py, gelu_numba.py, adamw_numba.py) equal the NumPy reference ops.

Every kernel is compared, forward and backward, with the plain NumPy op run under
kernels.use("reference") (the ops may themselves call the kernels under "auto"), on
hypothesis-drawn shapes: R rows in 1..40, D features in 1..67 (so 1 and odd sizes), float32 and
float64, inputs contiguous or not: column-major, or views with a gap between rows or between
columns (the gaps hold NaN, so a kernel that reads memory as if it were packed gives NaN).

Tolerances, |got - want| <= tol * (|want| + scale) with scale = max(1, max|want|):
    float64  1e-11   the kernels sum in another order than NumPy (SIMD lanes vs pairwise);
                     D <= 67 terms of eps = 2.2e-16 each, with room for layer norm's 1/sigma
    float32  2e-5    the kernels accumulate sums in float64 and round once, NumPy sums in float32
                     (up to D ulps of eps = 1.2e-7 apart); the kernels' own float32 exp is within
                     1.5 ulps and their Gaussian cdf within 3e-7, which for |x| <= 10 is at most
                     3e-6 in gelu, inside 2e-5 * max|want|
AdamW is compared bit for bit: the kernel repeats the reference's operations in its order.

The first run compiles every kernel for both dtypes (10-15 s); Numba's cache makes later runs
fast. Debug a failure with NUMBA_DISABLE_JIT=1, which runs the kernels as plain Python.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

numba = pytest.importorskip("numba", reason="the Numba CPU kernels need numba (pip install numba)")

import tinyvision.ops as F  # noqa: E402 - after the skip
from tinyvision import kernels, nn  # noqa: E402
from tinyvision.kernels import adamw_numba, gelu_numba, math_numba, rows_numba  # noqa: E402
from tinyvision.optim import Adam, AdamW  # noqa: E402
from tinyvision.tensor import Tensor  # noqa: E402

TOL = {np.float32: 2e-5, np.float64: 1e-11}
DTYPES = st.sampled_from([np.float32, np.float64])


def assert_close(got, want, what):
    """got equals want within the dtype's tolerance, and has want's dtype and shape."""
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    tol = TOL[want.dtype.type]
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=f"{what} ({want.dtype}, {want.shape})")


# Layouts of an input: the wrappers must copy all but the first to C order (or read them by their strides).
LAYOUTS = st.sampled_from(["contiguous", "column-major", "every other row", "every other column"])


def lay_out(a, layout):
    """The values of `a` in `layout`: column-major, or a view taking every other row (axis 0) or every
    other column (the last axis) of an array twice as large there, whose skipped entries are NaN."""
    if layout == "contiguous":
        return np.ascontiguousarray(a)
    if layout == "column-major":
        return np.asfortranarray(a)
    axis = 0 if layout == "every other row" else a.ndim - 1
    padded = np.full(a.shape[:axis] + (2 * a.shape[axis],) + a.shape[axis + 1:], np.nan, a.dtype)
    view = padded[(slice(None),) * axis + (slice(None, None, 2),)]
    view[...] = a
    return view


@st.composite
def matrices(draw, max_rows=40, max_features=67):
    """(x (R, D), g (R, D), rng) of one dtype; x and g each in one of LAYOUTS, mostly not C-contiguous."""
    rows, features = draw(st.integers(1, max_rows)), draw(st.integers(1, max_features))
    dtype = draw(DTYPES)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal((rows, features)) * draw(st.sampled_from([0.1, 1.0, 5.0]))).astype(dtype)
    g = rng.standard_normal((rows, features)).astype(dtype)
    return lay_out(x, draw(LAYOUTS)), lay_out(g, draw(LAYOUTS)), rng


def test_layouts_are_not_c_contiguous_and_keep_the_values():
    a = np.arange(12.0).reshape(3, 4)
    for layout in ("column-major", "every other row", "every other column"):
        b = lay_out(a, layout)
        assert not b.flags.c_contiguous, layout
        np.testing.assert_array_equal(b, a)


def reference(op, inputs, g, **kwargs):
    """The NumPy op's output and the gradients of sum(out * g) for each input (None stays None)."""
    with kernels.use("reference"):
        tensors = [None if a is None else Tensor(a, requires_grad=True, dtype=a.dtype) for a in inputs]
        out = op(*tensors, **kwargs)
        out.backward(g)
    return out.data, [None if t is None else t.grad for t in tensors]


# --- the float32 math the kernels vectorise -----------------------------------------------------
@numba.njit
def _apply(f, a, out1, out2):
    """out1, out2 = f(a) elementwise, for a scalar helper f that returns a pair."""
    for i in range(a.size):
        out1[i], out2[i] = f(a[i])


@numba.njit
def _exp_pair(a):
    return math_numba._exp32(a), a


def test_float32_exp_is_within_one_and_a_half_ulps_of_exact():
    a = np.concatenate([np.linspace(-87.33, 88.37, 100_001), [-1e-30, 0.0, -0.0]]).astype(np.float32)
    got, unused = np.empty_like(a), np.empty_like(a)
    _apply(_exp_pair, a, got, unused)
    exact = np.exp(a.astype(np.float64))
    ulps = np.abs(got - exact) / np.spacing(exact.astype(np.float32))
    assert ulps.max() <= 1.5, f"exp32({a[ulps.argmax()]}) = {got[ulps.argmax()]}, exact {exact[ulps.argmax()]}"
    special = np.array([-np.inf, -100.0, 100.0, np.inf, np.nan], np.float32)
    got, unused = np.empty_like(special), np.empty_like(special)
    _apply(_exp_pair, special, got, unused)
    np.testing.assert_array_equal(got, [0, 0, np.inf, np.inf, np.nan])


def test_float32_gaussian_cdf_and_pdf_match_erf_and_exp():
    u = np.linspace(-12, 12, 100_001).astype(np.float32)
    cdf, pdf = np.empty_like(u), np.empty_like(u)
    _apply(math_numba._gaussian32, u, cdf, pdf)
    exact_cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in u.astype(np.float64)])
    exact_pdf = np.exp(-0.5 * u.astype(np.float64) ** 2) / math.sqrt(2 * math.pi)
    # A&S 7.1.26 is good to 1.5e-7 in erf, i.e. 7.5e-8 in Phi; float32 rounding adds a few 6e-8
    assert np.abs(cdf - exact_cdf).max() < 4e-7
    assert np.abs(pdf - exact_pdf).max() < 1e-7


# --- registration -------------------------------------------------------------------------------
@pytest.mark.parametrize("op, functions", [("softmax", ("forward", "backward")), ("layer_norm", ("forward", "backward")),
                                           ("gelu", ("forward", "backward")), ("adamw", ("update",))])
def test_kernels_are_registered_under_their_op_names(op, functions):
    assert kernels.why_unavailable("numba") is None
    kernel = kernels.kernel(op, "numba")
    for name in functions:
        assert callable(getattr(kernel, name)), f"kernel({op!r}, 'numba') has no {name}()"
    with kernels.use("numba"):
        assert kernels.implementation(op, "cpu") == "numba"


# --- softmax ------------------------------------------------------------------------------------
@given(matrices(), st.sampled_from([0.0, 0.3]), st.booleans())
def test_softmax_equals_reference(case, masked_fraction, mask_whole_rows):
    x, g, rng = case                                  # x is this example's own array: masked in place, layout kept
    x[rng.random(x.shape) < masked_fraction] = -np.inf
    if mask_whole_rows:
        x[rng.random(x.shape[0]) < 0.3] = -np.inf  # fully masked rows
    want_y, (want_dx,) = reference(F.softmax, [x], g, axis=-1)
    y = rows_numba.softmax_forward(x)
    assert_close(y, want_y, "softmax forward")
    assert_close(rows_numba.softmax_backward(y, g), want_dx, "softmax backward")


def test_softmax_of_fully_masked_rows_is_zero_not_nan():
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 1.0]], np.float32)
    y = rows_numba.softmax_forward(x)
    assert not np.isnan(y).any()
    np.testing.assert_array_equal(y[0], 0)
    np.testing.assert_array_equal(rows_numba.softmax_backward(y, np.ones_like(x))[0], 0)


def test_softmax_of_a_row_with_nan_or_inf_is_what_the_reference_gives():
    x = np.array([[0.0, np.nan, 1.0], [2.0, np.inf, 1.0], [np.nan, -np.inf, 0.0]], np.float32)
    with np.errstate(invalid="ignore"):  # the reference's inf / inf
        want, _ = reference(F.softmax, [x], np.ones_like(x), axis=-1)
    np.testing.assert_allclose(rows_numba.softmax_forward(x), want, rtol=1e-6)  # nan exactly where want has nan


def test_softmax_does_not_overflow():
    y = rows_numba.softmax_forward(np.array([[1e4, 0.0, -1e4]], np.float32))
    np.testing.assert_array_equal(y, [[1, 0, 0]])


# --- layer norm ---------------------------------------------------------------------------------
@given(matrices(), st.booleans(), st.booleans(), st.sampled_from([1e-5, 1e-2]), LAYOUTS)
def test_layer_norm_equals_reference(case, with_weight, with_bias, eps, vector_layout):
    x, g, rng = case
    d = x.shape[1]
    weight = lay_out(rng.standard_normal(d).astype(x.dtype), vector_layout) if with_weight else None
    bias = lay_out(rng.standard_normal(d).astype(x.dtype), vector_layout) if with_bias else None
    want_y, (want_dx, want_dw, want_db) = reference(F.layer_norm, [x, weight, bias], g, eps=eps)
    y, mean, rstd = rows_numba.layer_norm_forward(x, weight, bias, eps)
    assert_close(y, want_y, "layer_norm forward")
    assert_close(mean, x.mean(axis=1), "layer_norm mean")
    assert_close(rstd, 1 / np.sqrt(x.var(axis=1) + x.dtype.type(eps)), "layer_norm rstd")
    dx, dw, db = rows_numba.layer_norm_backward(g, x, mean, rstd, weight)
    assert_close(dx, want_dx, "layer_norm dx")
    assert (dw is None) == (weight is None), "dweight must be None exactly when weight is None"
    if weight is not None:
        assert_close(dw, want_dw, "layer_norm dweight")
    if bias is not None:
        assert_close(db, want_db, "layer_norm dbias")


def test_layer_norm_rejects_a_wrong_weight_shape():
    with pytest.raises(ValueError, match=r"weight has shape \(3,\), expected \(4,\)"):
        rows_numba.layer_norm_forward(np.ones((2, 4)), np.ones(3))


# --- GELU ---------------------------------------------------------------------------------------
@given(st.lists(st.integers(1, 9), min_size=0, max_size=2), st.integers(1, 67), DTYPES,
       st.sampled_from(["none", "tanh"]), st.booleans(), st.integers(0, 2**32 - 1), st.lists(LAYOUTS, min_size=3, max_size=3))
def test_gelu_equals_reference_with_and_without_fused_bias(lead_shape, d, dtype, approximate, with_bias, seed, layouts):
    rng = np.random.default_rng(seed)
    shape = (*lead_shape, d)
    x = lay_out(rng.uniform(-10, 10, shape).astype(dtype), layouts[0])  # the tails: gelu -> 0 below, -> x above
    g = lay_out(rng.standard_normal(shape).astype(dtype), layouts[1])
    bias = lay_out(rng.standard_normal(d).astype(dtype), layouts[2]) if with_bias else None
    if with_bias:
        want_y, (want_dx, want_db) = reference(lambda x, b: F.gelu(x + b, approximate), [x, bias], g)
    else:
        want_y, (want_dx,) = reference(lambda x: F.gelu(x, approximate), [x], g)
    assert_close(gelu_numba.gelu_forward(x, bias, approximate), want_y, f"gelu({approximate}) forward")
    dx, db = gelu_numba.gelu_backward(g, x, bias, approximate)
    assert_close(dx, want_dx, f"gelu({approximate}) dx")
    if with_bias:
        assert_close(db, want_db, f"gelu({approximate}) dbias")
    else:
        assert db is None


# --- AdamW --------------------------------------------------------------------------------------
@given(st.lists(st.sampled_from([(), (1,), (5,), (3, 7), (40, 67)]), min_size=1, max_size=3), DTYPES,
       st.sampled_from([1e-3, 0.1]), st.sampled_from([0.0, 0.05]), st.booleans(), st.integers(0, 2**32 - 1), LAYOUTS)
def test_adamw_equals_the_optimizer_bit_for_bit(shapes, dtype, lr, weight_decay, decoupled, seed, grad_layout):
    rng = np.random.default_rng(seed)
    params = [nn.Parameter(rng.standard_normal(s), dtype=dtype) for s in shapes]
    betas, eps = (0.9, 0.99), 1e-8
    optimizer = (AdamW if decoupled else Adam)(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    mine = [(p.data.copy(), np.zeros_like(p.data), np.zeros_like(p.data)) for p in params]
    for step in range(1, 5):
        # gradients over six orders of magnitude, as arrays of the parameter's dtype (also when 0-d)
        grads = [np.asarray(rng.standard_normal(p.shape) * 10.0 ** rng.integers(-4, 2), dtype) for p in params]
        grads = [lay_out(grad, grad_layout) if grad.ndim else grad for grad in grads]   # grad is only read: any layout
        with kernels.use("reference"):
            for p, grad in zip(params, grads):
                p.grad = grad
            optimizer.step()
        for (p, m, v), grad in zip(mine, grads):
            adamw_numba.adamw_update(p, grad, m, v, lr, *betas, eps, weight_decay, step, decoupled=decoupled)
        for i, (param, (p, m, v)) in enumerate(zip(params, mine)):
            state = optimizer.state[id(param)]
            for name, got, want in (("param", p, param.data), ("exp_avg", m, state["exp_avg"]),
                                    ("exp_avg_sq", v, state["exp_avg_sq"])):
                np.testing.assert_array_equal(got, want, err_msg=f"step {step}, params[{i}] {param.shape}: {name}")


def test_adamw_large_parameter_split_over_threads_matches():
    rng = np.random.default_rng(0)
    n = 40_003  # prange cuts it into one block per thread; an odd size leaves a ragged last block
    param = nn.Parameter(rng.standard_normal(n), dtype=np.float32)
    optimizer = AdamW([param], lr=1e-2, weight_decay=0.1)
    p, m, v = param.data.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    for step in (1, 2):
        grad = rng.standard_normal(n).astype(np.float32)
        with kernels.use("reference"):
            param.grad = grad
            optimizer.step()
        adamw_numba.adamw_update(p, grad, m, v, 1e-2, 0.9, 0.999, 1e-8, 0.1, step)
    np.testing.assert_array_equal(p, param.data)


def test_adamw_refuses_a_non_contiguous_parameter():
    p = np.zeros((4, 4), np.float32).T[::2]
    with pytest.raises(TypeError, match="C-contiguous"):
        adamw_numba.adamw_update(p, np.zeros_like(p), np.zeros_like(p), np.zeros_like(p), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)


# --- threads ------------------------------------------------------------------------------------
def test_limit_blas_threads_caps_blas_and_restores_it():
    pytest.importorskip("threadpoolctl", reason="limit_blas_threads needs threadpoolctl")
    from tinyvision.kernels._threads import thread_report
    before = thread_report()["blas_threads"]
    with rows_numba.limit_blas_threads(1):
        assert all(n == 1 for n in thread_report()["blas_threads"].values())
    assert thread_report()["blas_threads"] == before
