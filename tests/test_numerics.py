"""Numbers at the extremes: every loss and normaliser against a float64 formula, for every kernel.

The inputs here are the ones a training run meets when something drifts: logits of 1e4 (float32)
and 3e4 (float16), masked classes at -inf, several equal large logits, a sigmoid saturated at
x = 40, layer norm of values whose squares overflow, attention scores that overflow. Each case is
checked against the same quantity computed in float64 (or, where float64 itself would overflow,
from a closed form), under every kernel choice that runs on this machine.
"""
import decimal
import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import kernels

IMPLS = ["reference"] + ([] if kernels.why_unavailable("numba") else ["numba"])
# the widest logits each dtype is checked at (PyTorch-style losses keep these finite)
EXTREME = {np.float16: 3e4, np.float32: 1e4, np.float64: 1e4}
# how far a result may sit from the float64 formula: a few units in the last place of the dtype,
# scaled by the size of the numbers that were combined
ULP = {np.float16: 1e-3, np.float32: 2e-7, np.float64: 1e-15}


@pytest.fixture(params=IMPLS)
def impl(request):
    with kernels.use(request.param):
        yield request.param


def log_softmax64(z):
    """float64 log softmax, written out: z - max - log sum exp(z - max)."""
    z = np.asarray(z, np.float64)
    m = z.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):
        return (z - m) - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def cross_entropy64(z, t, eps=0.0):
    lp = log_softmax64(z)
    picked = np.take_along_axis(lp, t[..., None], -1)[..., 0]
    out = -(1 - eps) * picked
    if eps:
        out = out - eps * lp.mean(axis=-1)
    return out


def softplus64(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


# --- the defects reported in issue 10, one test each ---------------------------------------------
def test_bce_refuses_broadcast_pairs():
    """(B, 1) logits against (B,) targets would average B x B pairs: 2.018 instead of 0.018."""
    with pytest.raises(ValueError, match=r"binary_cross_entropy_with_logits: logits has shape \(2, 1\) but target has \(2,\)"):
        F.binary_cross_entropy_with_logits(tv.Tensor([[4.0], [-4.0]]), tv.Tensor([1.0, 0.0]))
    loss = F.binary_cross_entropy_with_logits(tv.Tensor([4.0, -4.0]), tv.Tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(softplus64(-4.0), rel=1e-6)   # = 0.01815


@pytest.mark.parametrize("loss", ["mse_loss", "binary_cross_entropy_with_logits"])
def test_pairwise_losses_refuse_every_shape_mismatch(loss):
    for a, b in [((3, 1), (3,)), ((3,), (1,)), ((1, 3), (3, 1)), ((2, 3), (3,))]:
        with pytest.raises(ValueError, match=rf"{loss}: .* has shape {re_shape(a)} but .* has {re_shape(b)}"):
            getattr(F, loss)(tv.Tensor(np.zeros(a)), tv.Tensor(np.zeros(b)))


def re_shape(shape):
    return re.escape(str(tuple(shape)))


def test_cross_entropy_with_a_masked_class_is_finite(impl):
    """A -inf logit (a masked class) with a finite target logit: a finite loss, as in PyTorch."""
    z = np.array([[0.0, -np.inf, 2.0], [1.0, 1.0, -np.inf]], np.float32)
    logits = tv.Tensor(z, requires_grad=True)
    loss = F.cross_entropy(logits, np.array([0, 1]))
    loss.backward()
    assert loss.item() == pytest.approx(cross_entropy64(z, np.array([0, 1])).mean(), rel=1e-6)
    assert np.isfinite(logits.grad).all() and logits.grad[0, 1] == 0 and logits.grad[1, 2] == 0


def test_label_smoothing_with_a_masked_class_is_plus_infinity():
    """With eps > 0 the target puts eps/C on the masked class, whose probability is 0: the true
    cross-entropy is +inf (not NaN), and the gradient stays finite (p - q)."""
    logits = tv.Tensor(np.array([[0.0, -np.inf, 2.0]], np.float32), requires_grad=True)
    loss = F.cross_entropy(logits, np.array([0]), label_smoothing=0.1)
    assert loss.item() == np.inf
    loss.backward()
    assert np.isfinite(logits.grad).all()


def test_equal_large_logits_keep_their_precision(impl):
    """Four float32 logits of 1e8: log_softmax = -log 4 each (not 0), the loss log 4, the
    logsumexp gradient 1/4 each (not 1)."""
    z = np.full((1, 4), 1e8, np.float32)
    np.testing.assert_allclose(F.log_softmax(tv.Tensor(z)).numpy(), -math.log(4), rtol=1e-6)
    assert F.cross_entropy(tv.Tensor(z), np.array([2])).item() == pytest.approx(math.log(4), rel=1e-6)
    x = tv.Tensor(z, requires_grad=True)
    F.logsumexp(x).sum().backward()
    np.testing.assert_allclose(x.grad, 0.25, rtol=1e-6)


def test_bce_of_a_confident_right_answer_keeps_its_digits():
    """x = 30, y = 1: the loss is log(1 + e^-30) = 9.4e-14, not 30 + 9.4e-14 - 30 = 0 in float32."""
    loss = F.binary_cross_entropy_with_logits(tv.Tensor([30.0, -30.0]), tv.Tensor([1.0, 0.0]), reduction="none")
    np.testing.assert_allclose(loss.numpy(), math.log1p(math.exp(-30)), rtol=1e-6)


def test_bce_gradient_does_not_cancel():
    """d/dx = sigma(x) - y at x = 30, 40, y = 1: -sigma(-x), not a difference of two numbers near 1."""
    x = tv.Tensor(np.array([30.0, 40.0, -30.0, -40.0]), dtype=np.float64, requires_grad=True)
    y = tv.Tensor(np.array([1.0, 1.0, 0.0, 0.0]), dtype=np.float64)
    F.binary_cross_entropy_with_logits(x, y, reduction="sum").backward()
    expected = np.array([-1 / (1 + math.exp(30)), -1 / (1 + math.exp(40)),
                         1 / (1 + math.exp(30)), 1 / (1 + math.exp(40))])
    np.testing.assert_allclose(x.grad, expected, rtol=1e-14)


def test_clip_loss_logits_at_a_large_logit_scale_are_finite(impl):
    """Cosines scaled by e^88 = 1.65e38 (a raw logit scale of 88): the diagonal wins by a margin of
    order 1e38, so the loss is 0, not NaN."""
    cos = np.array([[1.0, 0.2, -0.5], [0.1, 0.9, 0.3], [-0.2, 0.4, 0.95]], np.float32)
    logits = tv.Tensor(cos * np.float32(math.exp(88)))
    for z in (logits, logits.T):
        loss = F.cross_entropy(z, np.arange(3))
        assert loss.item() == 0.0


# --- every loss against float64 at the extremes, hypothesis-drawn -----------------------------
@pytest.mark.parametrize("impl", IMPLS)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float16, np.float32, np.float64]),
       b=st.integers(1, 5), c=st.integers(1, 6), eps=st.sampled_from([0.0, 0.1]),
       masked=st.booleans(), tie=st.booleans())
def test_cross_entropy_matches_float64_at_extremes(impl, seed, dtype, b, c, eps, masked, tie):
    with kernels.use(impl):
        rng = np.random.default_rng(seed)
        z = (rng.uniform(-1, 1, (b, c)) * EXTREME[dtype]).astype(dtype)
        if tie:                                     # several equal, large logits
            z[:, : (c + 1) // 2] = dtype(EXTREME[dtype])
        t = rng.integers(0, c, b)
        if masked and c > 1:                        # mask one class that is not the target
            other = (t + 1) % c
            z[np.arange(b), other] = -np.inf
        logits = tv.Tensor(z, requires_grad=True)
        loss = F.cross_entropy(logits, t, label_smoothing=eps, reduction="none")
        expected = cross_entropy64(z.astype(np.float64), t, eps)
        got = loss.numpy().astype(np.float64)
        assert not np.isnan(got).any()
        fits = np.abs(expected) < np.finfo(dtype).max
        np.testing.assert_array_equal(np.isinf(got[fits]), np.isinf(expected[fits]))
        finite = fits & np.isfinite(expected)
        np.testing.assert_allclose(got[finite], expected[finite], rtol=4 * ULP[dtype],
                                   atol=4 * ULP[dtype] * EXTREME[dtype])
        loss.backward(np.ones(loss.shape, dtype))
        p = np.exp(log_softmax64(z))
        q = np.eye(c)[t] * (1 - eps) + eps / c
        assert np.isfinite(logits.grad).all()
        np.testing.assert_allclose(logits.grad.astype(np.float64), p - q, atol=4 * ULP[dtype])


@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float16, np.float32, np.float64]),
       n=st.integers(1, 8), hard=st.booleans())
def test_bce_matches_float64_at_extremes(seed, dtype, n, hard):
    rng = np.random.default_rng(seed)
    x = (rng.uniform(-1, 1, n) * EXTREME[dtype]).astype(dtype)
    y = (rng.integers(0, 2, n) if hard else rng.uniform(0, 1, n)).astype(dtype)
    xt, yt = tv.Tensor(x, requires_grad=True), tv.Tensor(y, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(xt, yt, reduction="none")
    expected, expected_dx = bce_exact(x, y)
    # soft labels: x y is rounded at the scale of x; hard labels: nothing cancels, every digit counts
    # (and a value below the dtype's smallest subnormal is 0 there)
    tiny = float(np.finfo(dtype).smallest_subnormal)
    atol = tiny if hard else 4 * ULP[dtype] * EXTREME[dtype]
    np.testing.assert_allclose(loss.numpy().astype(np.float64), expected, rtol=4 * ULP[dtype], atol=atol)
    loss.backward(np.ones(loss.shape, dtype))
    np.testing.assert_allclose(xt.grad.astype(np.float64), expected_dx, rtol=4 * ULP[dtype],
                               atol=tiny if hard else 4 * ULP[dtype])
    np.testing.assert_allclose(yt.grad.astype(np.float64), -x.astype(np.float64), rtol=4 * ULP[dtype])


def bce_exact(x, y):
    """The definition -[y log sigma(x) + (1 - y) log(1 - sigma(x))] and its derivative sigma(x) - y,
    in 50-digit decimal arithmetic: no rounding in the oracle to hide a rounding in the code."""
    losses, grads = [], []
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        for xi, yi in zip(x.tolist(), y.tolist()):
            X, Y = decimal.Decimal(xi), decimal.Decimal(yi)
            def softplus(t):                 # log(1 + e^t); its series where 1 + e^t would round to 1
                u = t.exp()
                return u - u * u / 2 + u * u * u / 3 if u < decimal.Decimal("1e-12") else (1 + u).ln()
            losses.append(float(Y * softplus(-X) + (1 - Y) * softplus(X)))
            sigma = lambda t: 1 / (1 + (-t).exp())          # noqa: E731
            grads.append(float((1 - Y) * sigma(X) - Y * sigma(-X)))   # = sigma(X) - Y, kept exact at 50 digits
    return np.array(losses), np.array(grads)


@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float16, np.float32, np.float64]),
       n=st.integers(1, 8))
def test_mse_matches_float64_at_extremes(seed, dtype, n):
    """float16 differences of 6e4 square to 3.6e9: computed in float32, then inf in float16 only if
    the mean itself does not fit."""
    rng = np.random.default_rng(seed)
    big = {np.float16: 100.0, np.float32: 1e4, np.float64: 1e4}[dtype]   # mean squares that fit in dtype
    a, b = (rng.uniform(-1, 1, (2, n)) * big).astype(dtype)
    at = tv.Tensor(a, requires_grad=True)
    loss = F.mse_loss(at, tv.Tensor(b))
    d = a.astype(np.float64) - b.astype(np.float64)
    assert loss.item() == pytest.approx((d * d).mean(), rel=4 * ULP[dtype])
    loss.backward()
    np.testing.assert_allclose(at.grad.astype(np.float64), 2 * d / n, rtol=4 * ULP[dtype], atol=1e-6)


@pytest.mark.parametrize("loss, args", [
    ("mse_loss", (np.zeros(0), np.zeros(0))),
    ("binary_cross_entropy_with_logits", (np.zeros(0), np.zeros(0)))])
def test_losses_on_empty_input(loss, args):
    """sum of nothing is 0, "none" is empty, and the mean of nothing is refused by name."""
    a, b = (tv.Tensor(v) for v in args)
    assert getattr(F, loss)(a, b, reduction="sum").item() == 0
    assert getattr(F, loss)(a, b, reduction="none").shape == (0,)
    with pytest.raises(ValueError, match=rf"{loss}: the mean of an empty loss"):
        getattr(F, loss)(a, b)


# --- layer norm: statistics that do not overflow -------------------------------------------------
def layer_norm64(x):
    """x_hat in float64 from the row scaled by its largest value (exact in real arithmetic)."""
    x = np.asarray(x, np.float64)
    s = np.abs(x).max(axis=-1, keepdims=True)
    s = np.where(s > 0, s, 1)
    u = x / s
    c = u - u.mean(axis=-1, keepdims=True)
    return c / np.sqrt((c * c).mean(axis=-1, keepdims=True))


@pytest.mark.parametrize("impl", IMPLS)
@given(seed=st.integers(0, 2**32 - 1),
       case=st.sampled_from([(np.float16, 300.0), (np.float16, 6e4), (np.float32, 1e20), (np.float32, 1e30),
                             (np.float64, 1e160), (np.float64, 1e300)]),
       rows=st.integers(1, 4), d=st.integers(2, 33))
def test_layer_norm_statistics_do_not_overflow(impl, seed, case, rows, d):
    """Rows whose squared deviations overflow the dtype: the same x_hat as float64 (not zeros), and
    the NumPy and Numba implementations agree."""
    with kernels.use(impl):
        dtype, scale = case
        rng = np.random.default_rng(seed)
        x = (rng.uniform(-1, 1, (rows, d)) * scale * 0.5).astype(dtype)
        xt = tv.Tensor(x, requires_grad=True)
        y = F.layer_norm(xt, eps=1e-5)
        # x_hat is at most sqrt(D) ~ 6 in size: a few units in the last place of that, for each dtype
        np.testing.assert_allclose(y.numpy().astype(np.float64), layer_norm64(x), atol=4 * 6 * ULP[dtype])
        y.backward(np.ones(y.shape, dtype))
        assert np.isfinite(xt.grad).all()


# --- attention: one documented behaviour when the scores overflow -------------------------------
@pytest.mark.parametrize("poison", ["huge", "nan", "inf"])
def test_attention_scores_that_overflow_raise_in_every_kernel(impl, poison):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 5, 8)).astype(np.float32)
    k, v = q.copy(), rng.standard_normal((2, 5, 8)).astype(np.float32)
    if poison == "huge":
        q, k = q * np.float32(1e30), k * np.float32(1e30)
    else:
        k[1, 3, 2] = np.nan if poison == "nan" else np.inf
    with pytest.raises(FloatingPointError, match="scaled_dot_product_attention: the scores tau q.k are not finite"):
        F.scaled_dot_product_attention(tv.Tensor(q), tv.Tensor(k), tv.Tensor(v))


def test_attention_with_large_but_finite_scores_equals_float64(impl):
    """Inputs of 1e19 and 1e18: the bound d max|q| max|k| ~ 7e38 passes float32's 3.4e38, the scores
    (~3e37) do not; the dense check finds every score finite, and the result equals float64 attention."""
    rng = np.random.default_rng(1)
    q = rng.standard_normal((1, 4, 8)) * 1e19
    k = rng.standard_normal((1, 4, 8)) * 1e18
    v = rng.standard_normal((1, 4, 8))
    got = F.scaled_dot_product_attention(*(tv.Tensor(a.astype(np.float32)) for a in (q, k, v))).numpy()
    s = q.astype(np.float32).astype(np.float64) @ k.astype(np.float32).astype(np.float64).swapaxes(-1, -2) / math.sqrt(8)
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(got, (p / p.sum(-1, keepdims=True)) @ v.astype(np.float32), atol=1e-5)


def test_attention_with_no_keys_gives_zeros(impl):
    q = tv.Tensor(np.ones((2, 3, 4), np.float32), requires_grad=True)
    k = tv.Tensor(np.ones((2, 0, 4), np.float32), requires_grad=True)
    v = tv.Tensor(np.ones((2, 0, 5), np.float32), requires_grad=True)
    out = F.scaled_dot_product_attention(q, k, v)
    assert out.shape == (2, 3, 5) and not out.numpy().any()
    out.sum().backward()
    assert not q.grad.any() and k.grad.shape == (2, 0, 4)


# --- optimizers: float16 parameters --------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("opt", ["Adam", "AdamW"])
def test_float16_adam_steps_stay_finite_with_small_gradients(impl, opt):
    """Gradients of 1e-4: in float16 (1 - beta2) g^2 = 1e-11 and eps = 1e-8 both round to 0, and a
    float16 update would be m / 0 = inf. The state is float32, so each step is the float32 step
    rounded to float16."""
    rng = np.random.default_rng(0)
    start = rng.standard_normal(64)
    grads = [rng.uniform(-2e-4, 2e-4, 64) for _ in range(3)]
    results = {}
    for dtype in (np.float16, np.float32):
        p = tv.nn.Parameter(start.astype(dtype))
        optimizer = getattr(tv.optim, opt)([p], lr=1e-2)
        with kernels.use(impl):
            for g in grads:
                p.grad = g.astype(dtype)
                optimizer.step()
        results[dtype] = p.numpy().astype(np.float64)
    assert np.isfinite(results[np.float16]).all()
    # float16 rounding at each of 3 steps on values of size ~2: within 3 float16 ulps of the float32 run
    np.testing.assert_allclose(results[np.float16], results[np.float32], atol=3 * 2 * 2.0**-10)


# --- determinism: what is promised ----------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
def test_same_seed_same_kernels_same_threads_give_identical_bits(impl):
    """Two trainings with the same seed, kernel choice and thread count end with bit-identical weights
    (the README's determinism promise). The Numba kernels split work into a fixed number of chunks,
    not one per thread, so their sums are added in the same order every time."""
    from tinyvision.models.vit import ViT
    from tinyvision.training import train_classifier
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    weights = []
    for _ in range(2):
        model = ViT(img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=16, depth=1, num_heads=2, seed=7)
        with kernels.use(impl):
            train_classifier(model, x, y, epochs=2, batch_size=16, seed=3)
        weights.append({k: v.copy() for k, v in model.state_dict().items()})
    for k in weights[0]:
        assert np.array_equal(weights[0][k], weights[1][k]), k
    assert any(not np.array_equal(weights[0][k], ViT(img_size=8, patch_size=4, in_chans=1, num_classes=3,
                                                     embed_dim=16, depth=1, num_heads=2, seed=7).state_dict()[k])
               for k in weights[0]), "training changed nothing: the comparison above would be empty"


@pytest.mark.parametrize("raw_scale", [88.0, 88.7])
def test_clip_loss_at_the_edge_of_float32_is_finite(raw_scale):
    """e^88.7 = 3.3e38 still fits float32: the loss and every gradient are finite (0 here: each
    caption is nearest its own image)."""
    from tinyvision.models.contrastive import clip_loss
    rng = np.random.default_rng(0)
    i = rng.standard_normal((4, 8)).astype(np.float32)
    image, text = tv.Tensor(i, requires_grad=True), tv.Tensor(i + np.float32(0.1) * rng.standard_normal((4, 8)).astype(np.float32), requires_grad=True)
    scale = tv.Tensor(np.float32(raw_scale), requires_grad=True)
    loss = clip_loss(image, text, scale, normalize=True)
    loss.backward()
    assert loss.item() == 0.0 and np.isfinite(image.grad).all() and np.isfinite(scale.grad).all()


def test_clip_loss_refuses_a_logit_scale_whose_exp_overflows():
    from tinyvision.models.contrastive import clip_loss
    emb = tv.Tensor(np.eye(3, dtype=np.float32))
    with pytest.raises(FloatingPointError, match=r"clip_loss: exp\(logit_scale\) overflows float32 \(logit_scale = 89"):
        clip_loss(emb, emb, tv.Tensor(np.float32(89.0)))


def test_float16_adam_state_survives_a_save_and_load_in_float32():
    """The float32 moments of a float16 parameter come back as float32 from load_state_dict."""
    p = tv.nn.Parameter(np.ones(4, np.float16))
    optimizer = tv.optim.AdamW([p], lr=1e-2)
    p.grad = np.full(4, 1e-4, np.float16)
    optimizer.step()
    saved = optimizer.state_dict()
    again = tv.optim.AdamW([p], lr=1e-2)
    again.load_state_dict(saved)
    state = again.state[id(p)]
    assert state["exp_avg_sq"].dtype == np.float32
    np.testing.assert_array_equal(state["exp_avg_sq"], optimizer.state[id(p)]["exp_avg_sq"])
    assert state["exp_avg_sq"].min() > 0    # (1 - beta2) g^2 = 1e-11: 0 in float16


@pytest.mark.parametrize("impl", IMPLS)
def test_attention_with_values_near_the_dtype_limit_is_the_same_under_every_kernel(impl):
    """v = 1e38 in float32 with uniform weights: O = 1e38 (a mean of values), not the inf a tiled
    kernel's unnormalised sum over Nk = 8 keys would reach."""
    q = k = tv.Tensor(np.zeros((1, 3, 4), np.float32))
    v = tv.Tensor(np.full((1, 8, 4), 1e38, np.float32))
    k = tv.Tensor(np.zeros((1, 8, 4), np.float32))
    with kernels.use(impl):
        out = F.scaled_dot_product_attention(q, k, v).numpy()
    np.testing.assert_allclose(out, 1e38, rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("row", [[1e38] * 4, [3e38, -3e38, 3e38], [1e30, -1e30, 3.0, 0.0]], ids=["equal", "spread", "mixed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_rows_at_the_dtype_limit(impl, row, dtype):
    """Rows of equal huge values normalise to 0 (not NaN); rows whose deviations approach the
    dtype's largest value give float64's answer (not inf) under every kernel; gradients finite."""
    scale = 1.0 if dtype == np.float32 else 5e269      # 3e38 -> 1.5e308: deviations of 3e308 overflow float64
    x = (np.array([row], np.float64) * scale).astype(dtype)
    xt = tv.Tensor(x, requires_grad=True)
    with kernels.use(impl):
        y = F.layer_norm(xt)
        y.backward(np.ones(y.shape, dtype))
    np.testing.assert_allclose(y.numpy().astype(np.float64), layer_norm64(x) if np.ptp(x.astype(np.float64)) else 0, atol=1e-5)
    assert np.isfinite(xt.grad).all()
