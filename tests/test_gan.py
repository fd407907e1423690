"""GANs: the losses from logits, the optimal discriminator, the 2-D mixtures and their mode metrics.

References are float64 NumPy: softplus(x) = logaddexp(0, x), sigma(x) = 1 / (1 + e^-x), and the numbers
of the reference notes (models.md, sec. 6; wave2.md, "GAN mode coverage"):
    d L_G / d l at l = -8: saturating -0.0003, non-saturating -0.9997; at l = 0 both -0.5
    D = 1/2 everywhere: L_D = 2 ln 2 = 1.386
    equal-variance Gaussians: the Bayes logit is ((mu1 - mu2) / s^2) x + (mu2^2 - mu1^2) / (2 s^2)
"""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyvision as tv
from tinyvision.data.mixtures import GaussianMixture2D, grid_of_gaussians, mode_coverage, ring_of_gaussians
from tinyvision.models.gan import (DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator,
                                   discriminator_loss, fit_discriminator, generate, generator_loss, softplus,
                                   train_gan)
from tinyvision.nn import Linear, Module

from strategies import shapes


def np_softplus(x):
    return np.logaddexp(0.0, np.asarray(x, dtype=np.float64))


def np_sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))       # 1 / (1 + e^-x) without overflow


def logit_gradient(l, kind):
    """d generator_loss / d l for a batch of one logit l, by the package's autograd in float64."""
    t = tv.Tensor(np.array([l], dtype=np.float64), requires_grad=True)
    generator_loss(t, kind).backward()
    return float(t.grad[0])


# --- the losses ----------------------------------------------------------------------------------
def test_at_minus_8_only_the_saturating_generator_gradient_vanishes():
    saturating, non_saturating = logit_gradient(-8.0, "saturating"), logit_gradient(-8.0, "non_saturating")
    assert round(saturating, 4) == -0.0003 and round(non_saturating, 4) == -0.9997    # models.md
    assert saturating == pytest.approx(-np_sigmoid(-8.0), rel=1e-12)                  # -sigma(l)
    assert non_saturating == pytest.approx(-np_sigmoid(8.0), rel=1e-12)               # -sigma(-l)
    assert non_saturating / saturating == pytest.approx(math.exp(8), rel=1e-9)        # e^-l times stronger


def test_at_zero_both_generator_gradients_are_minus_one_half():
    assert logit_gradient(0.0, "saturating") == pytest.approx(-0.5, abs=1e-15)
    assert logit_gradient(0.0, "non_saturating") == pytest.approx(-0.5, abs=1e-15)


@given(shape=shapes(min_dims=1, max_dims=2), seed=st.integers(0, 2 ** 16))
def test_generator_loss_gradients_are_minus_sigmoid_over_the_batch(shape, seed):
    l = 6 * np.random.default_rng(seed).standard_normal(shape)
    n = l.size
    for kind, loss, grad in (("non_saturating", np_softplus(-l).mean(), -np_sigmoid(-l) / n),
                             ("saturating", -np_softplus(l).mean(), -np_sigmoid(l) / n)):
        t = tv.Tensor(l, requires_grad=True, dtype=np.float64)
        out = generator_loss(t, kind)
        out.backward()
        np.testing.assert_allclose(out.item(), loss, rtol=1e-12, err_msg=kind)
        np.testing.assert_allclose(t.grad, grad, rtol=1e-10, atol=1e-300, err_msg=kind)


@given(real_shape=shapes(min_dims=1, max_dims=3), fake_shape=shapes(min_dims=1, max_dims=3))
def test_a_discriminator_that_says_one_half_everywhere_scores_2_ln_2(real_shape, fake_shape):
    for dtype in (np.float32, np.float64):
        loss = discriminator_loss(tv.Tensor(np.zeros(real_shape), dtype=dtype), tv.Tensor(np.zeros(fake_shape), dtype=dtype))
        assert loss.item() == pytest.approx(2 * math.log(2), rel=1e-6)


def test_the_discriminator_loss_gradients_are_the_two_halves_of_the_binary_cross_entropy():
    real, fake = np.array([-3.0, 0.5, 9.0]), np.array([2.0, -1.0])
    r, f = (tv.Tensor(a, requires_grad=True, dtype=np.float64) for a in (real, fake))
    loss = discriminator_loss(r, f)
    loss.backward()
    assert loss.item() == pytest.approx(np_softplus(-real).mean() + np_softplus(fake).mean(), rel=1e-14)
    np.testing.assert_allclose(r.grad, -np_sigmoid(-real) / 3, rtol=1e-13)
    np.testing.assert_allclose(f.grad, np_sigmoid(fake) / 2, rtol=1e-13)


LARGE = np.array([-100.0, -60.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 60.0, 100.0])


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-14), (np.float32, 2e-6)])
def test_the_losses_equal_their_float64_formulas_at_large_logits(dtype, rtol):
    # no exp of a positive number anywhere: e^100 overflows float32 (and 1 + e^-100 rounds to 1)
    real_logits, fake_logits = LARGE, LARGE[::-1].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # an overflow warning fails the test
        sp = softplus(tv.Tensor(LARGE, dtype=dtype)).numpy()
        ld = discriminator_loss(tv.Tensor(real_logits, dtype=dtype), tv.Tensor(fake_logits, dtype=dtype)).item()
        ns = generator_loss(tv.Tensor(fake_logits, dtype=dtype), "non_saturating").item()
        sat = generator_loss(tv.Tensor(fake_logits, dtype=dtype), "saturating").item()
    # softplus(-100) = 3.7e-44 is a float32 subnormal: compare it with an absolute tolerance there
    np.testing.assert_allclose(sp, np_softplus(LARGE), rtol=rtol, atol=0 if dtype == np.float64 else 1e-44)
    assert np.isfinite(sp).all() and sp[-1] == 100.0
    assert ld == pytest.approx(np_softplus(-real_logits).mean() + np_softplus(fake_logits).mean(), rel=rtol)
    assert ns == pytest.approx(np_softplus(-fake_logits).mean(), rel=rtol)
    assert sat == pytest.approx(-np_softplus(fake_logits).mean(), rel=rtol)


@given(seed=st.integers(0, 2 ** 16), scale=st.sampled_from([1.0, 30.0, 300.0]))
def test_softplus_is_logaddexp_and_its_gradient_is_sigmoid(seed, scale):
    x = scale * np.random.default_rng(seed).standard_normal(7)
    t = tv.Tensor(x, requires_grad=True, dtype=np.float64)
    y = softplus(t)
    y.backward(np.ones(7))
    np.testing.assert_allclose(y.numpy(), np_softplus(x), rtol=1e-14)
    np.testing.assert_allclose(t.grad, np_sigmoid(x), rtol=1e-12, atol=1e-300)


def test_generator_loss_rejects_an_unknown_kind_and_empty_logits():
    with pytest.raises(ValueError, match="generator_loss.*kind.*minimax"):
        generator_loss(tv.Tensor(np.zeros(3)), "minimax")
    with pytest.raises(ValueError, match="discriminator_loss: fake_logits is empty"):
        discriminator_loss(tv.Tensor(np.zeros(3)), tv.Tensor(np.zeros(0)))


# --- the optimal discriminator -----------------------------------------------------------------------
class LogisticD(Module):
    """Logistic regression: logit = w x + b, x (B, 1) -> (B,), in float64."""

    def __init__(self):
        self.fc = Linear(1, 1, seed=0, dtype=np.float64)

    def forward(self, x):
        return self.fc(x).reshape(-1)


def newton_logistic_mle(x, y, iterations=50):
    """The float64 maximum-likelihood (w, b) of logistic regression, by Newton's method: the optimum
    that minimising the binary cross-entropy on these samples must reach."""
    a = np.stack([x, np.ones_like(x)], 1)
    theta = np.zeros(2)
    for _ in range(iterations):
        p = np_sigmoid(a @ theta)
        hessian = (a * (p * (1 - p))[:, None]).T @ a
        theta -= np.linalg.solve(hessian, a.T @ (p - y))
    return theta


@pytest.mark.parametrize("mu_data, mu_fake, sigma", [(1.0, -0.5, 1.5), (2.0, 2.5, 0.5)])
def test_a_logistic_discriminator_converges_to_the_bayes_log_ratio(mu_data, mu_fake, sigma):
    # p = N(mu_data, s^2) (real, label 1), q = N(mu_fake, s^2) (fake, label 0). log p/q is linear in x:
    w_star = (mu_data - mu_fake) / sigma ** 2
    b_star = (mu_fake ** 2 - mu_data ** 2) / (2 * sigma ** 2)
    n = 20_000
    rng = np.random.default_rng(0)
    real = mu_data + sigma * rng.standard_normal((n, 1))
    fake = mu_fake + sigma * rng.standard_normal((n, 1))
    d = LogisticD()
    # batch_size = n: every step sees all the samples (in a new order), so Adam minimises the empirical loss
    fit_discriminator(d, real, fake, steps=1500, batch_size=n, lr=0.05, seed=0)
    fitted = np.array([d.fc.weight.numpy()[0, 0], d.fc.bias.numpy()[0]])
    x, y = np.concatenate([real[:, 0], fake[:, 0]]), np.concatenate([np.ones(n), np.zeros(n)])
    mle = newton_logistic_mle(x, y)
    # 1. optimisation: the trained D is the minimiser of its loss on these samples
    np.testing.assert_allclose(fitted, mle, atol=2e-4)
    # 2. statistics: the minimiser on 2n samples scatters around (w*, b*) with covariance I^-1, the inverse
    # Fisher information sum_i sigma_i (1 - sigma_i) a_i a_i^T at the true parameters. 5 standard errors:
    # a correct D misses with probability < 1e-5 per coordinate; a D off by 10% of w* misses always.
    a = np.stack([x, np.ones_like(x)], 1)
    p = np_sigmoid(a @ np.array([w_star, b_star]))
    se = np.sqrt(np.diag(np.linalg.inv((a * (p * (1 - p))[:, None]).T @ a)))
    assert 5 * se[0] < 0.1 * abs(w_star)         # the test can tell a 10% error in the slope
    np.testing.assert_array_less(np.abs(fitted - [w_star, b_star]), 5 * se + 2e-4)


def test_fit_discriminator_on_the_ring_approaches_p_over_p_plus_q():
    p = ring_of_gaussians(std=0.2)
    q = GaussianMixture2D("q", [[0.0, 0.0]], 0.7)
    d = MLPDiscriminator((2,), hidden=64, seed=0)
    x = np.concatenate([p.sample(2000, seed=1)[0], q.sample(2000, seed=2)[0]])     # where the data are
    d_star = p.density(x) / (p.density(x) + q.density(x))

    def mean_error():
        with tv.no_grad():
            return np.abs(tv.ops.sigmoid(d(tv.Tensor(x))).numpy() - d_star).mean()
    untrained = mean_error()
    fit_discriminator(d, lambda n, r: p.sample(n, seed=r)[0], lambda n, r: q.sample(n, seed=r)[0],
                      steps=600, batch_size=256, lr=3e-3, seed=0)
    mae = mean_error()
    assert mae < 0.08, mae
    assert untrained > 0.2 and np.abs(0.5 - d_star).mean() > 0.2     # the untrained D and a constant 1/2 are far off


# --- the 2-D mixtures ----------------------------------------------------------------------------------
def test_the_ring_and_the_grid_follow_the_protocol():
    ring, grid = ring_of_gaussians(), grid_of_gaussians()
    assert ring.num_modes == 8 and ring.std == 0.01
    np.testing.assert_allclose(np.linalg.norm(ring.centers, axis=1), 1.0)
    np.testing.assert_allclose(ring.centers[2], [0.0, 1.0], atol=1e-15)          # angles 2 pi k / 8
    assert grid.num_modes == 25 and grid.std == 0.05
    assert sorted(set(grid.centers[:, 0])) == sorted(set(grid.centers[:, 1])) == [-4.0, -2.0, 0.0, 2.0, 4.0]


@pytest.mark.parametrize("mixture", [ring_of_gaussians(), grid_of_gaussians(), ring_of_gaussians(5, 3.0, 0.5)],
                         ids=["ring", "grid", "wide-ring"])
def test_mixture_samples_have_the_right_weights_means_and_stds(mixture):
    n = 50_000
    x, modes = mixture.sample(n, seed=0, dtype=np.float64)
    k = mixture.num_modes
    counts = np.bincount(modes, minlength=k)
    # equal weights: each count is Binomial(n, 1/k); 5 standard deviations
    assert np.abs(counts - n / k).max() < 5 * math.sqrt(n * (1 / k) * (1 - 1 / k))
    for j in range(k):
        pts = x[modes == j]
        se_mean = mixture.std / math.sqrt(len(pts))
        np.testing.assert_array_less(np.abs(pts.mean(0) - mixture.centers[j]), 5 * se_mean)
        # the sample std of m normal values has a standard error of about std / sqrt(2 m)
        np.testing.assert_array_less(np.abs(pts.std(0) - mixture.std), 5 * mixture.std / math.sqrt(2 * len(pts)))


@given(seed=st.integers(0, 2 ** 20))
def test_real_ring_samples_cover_every_mode_and_are_high_quality_at_the_gaussian_rate(seed):
    # the squared distance of a 2-D standard normal is chi-square with 2 degrees of freedom:
    # P(r < 3) = 1 - e^(-9/2) = 0.98889
    ring = ring_of_gaussians()
    x, modes = ring.sample(2500, seed=seed)
    cov = mode_coverage(x, ring)
    expected = 1 - math.exp(-4.5)
    assert cov["modes_covered"] == 8
    assert abs(cov["high_quality"] - expected) < 5 * math.sqrt(expected * (1 - expected) / 2500)
    assert sum(cov["counts"]) == round(cov["high_quality"] * 2500)


def test_mode_coverage_of_hand_made_samples():
    ring, grid = ring_of_gaussians(), grid_of_gaussians()
    c = ring.centers
    assert mode_coverage(c, ring) == {"modes_covered": 8, "high_quality": 1.0, "counts": [1] * 8, "num_samples": 8}
    one = mode_coverage(np.repeat(c[3:4], 100, axis=0), ring)                        # collapsed on mode 3
    assert one["modes_covered"] == 1 and one["high_quality"] == 1.0 and one["counts"][3] == 100
    off = mode_coverage(np.zeros((50, 2)), ring)                                      # the centre of the ring
    assert off["modes_covered"] == 0 and off["high_quality"] == 0.0
    half = mode_coverage(np.concatenate([c, np.full((8, 2), 5.0)]), ring)            # 8 good, 8 far away
    assert half["modes_covered"] == 8 and half["high_quality"] == 0.5
    # the 3-std boundary, along a diagonal (per-axis Mahalanobis = Euclidean / std here); strictly inside
    diag = np.array([1.0, 1.0]) / math.sqrt(2) * ring.std
    near = mode_coverage(np.stack([c[0] + 2.99 * diag, c[0] + 3.01 * diag]), ring)
    assert near["high_quality"] == 0.5 and near["counts"][0] == 1
    assert mode_coverage(grid.centers + 0.1, grid)["modes_covered"] == 25          # 0.1 = 2.83 std of 0.05
    assert mode_coverage(grid.centers + 0.11, grid)["modes_covered"] == 0          # 3.11 std


def test_mode_coverage_names_what_is_wrong():
    ring = ring_of_gaussians()
    with pytest.raises(ValueError, match=r"mode_coverage: samples must be \(N, 2\).*\(5, 3\)"):
        mode_coverage(np.zeros((5, 3)), ring)
    with pytest.raises(ValueError, match="mode_coverage: samples contain NaN"):
        mode_coverage(np.full((2, 2), np.nan), ring)
    with pytest.raises(ValueError, match="GaussianMixture2D: centers must be"):
        GaussianMixture2D("bad", np.zeros((3,)), 1.0)


def test_mixture_density_integrates_to_one():
    ring = ring_of_gaussians(std=0.2)
    g = np.linspace(-2.5, 2.5, 501)
    xy = np.stack(np.meshgrid(g, g), -1)
    assert ring.density(xy).sum() * (g[1] - g[0]) ** 2 == pytest.approx(1.0, abs=1e-6)


# --- the models and the loop ---------------------------------------------------------------------------
def test_model_shapes():
    z = tv.randn((6, 4), seed=0)
    assert MLPGenerator(4, (2,), hidden=8, seed=0)(z).shape == (6, 2)
    digits = MLPGenerator(4, (1, 8, 8), hidden=8, output="tanh", seed=0)(z).numpy()
    assert digits.shape == (6, 1, 8, 8) and np.abs(digits).max() <= 1
    g = DCGANGenerator(latent_dim=4, width=4, seed=0)
    images = g(z)
    assert images.shape == (6, 1, 8, 8) and np.abs(images.numpy()).max() <= 1
    assert DCGANDiscriminator(width=4, seed=0)(images).shape == (6,)
    assert MLPDiscriminator((1, 8, 8), hidden=8, seed=0)(images).shape == (6,)
    with pytest.raises(ValueError, match=r"MLPGenerator: z has shape \(6, 4\), expected \(B, latent_dim=3\)"):
        MLPGenerator(3, seed=0)(z)
    with pytest.raises(ValueError, match=r"DCGANDiscriminator: x has shape \(6, 2\), expected \(B, 1, 8, 8\)"):
        DCGANDiscriminator(width=4, seed=0)(tv.randn((6, 2), seed=0))


def test_dcgan_init_draws_conv_weights_with_std_0_02():
    g = DCGANGenerator(latent_dim=64, width=32, seed=0)
    w = g.net[3].weight.numpy()                       # the 4w -> 2w transposed conv: 128 * 64 * 16 values
    assert abs(w.std() - 0.02) < 0.001 and abs(w.mean()) < 0.001
    bn = g.net[1]
    assert abs(bn.weight.numpy().mean() - 1) < 0.01 and not bn.bias.numpy().any()


def test_a_packed_discriminator_scores_groups_of_consecutive_samples():
    d = MLPDiscriminator((2,), hidden=8, pack=2, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 2)).astype(np.float32)
    logits = d(tv.Tensor(x)).numpy()
    assert logits.shape == (3,)
    np.testing.assert_allclose(logits, d.net(tv.Tensor(x.reshape(3, 4))).numpy().reshape(-1))
    swapped = x.copy()
    swapped[[0, 1]] = x[[1, 0]]                        # the order inside a group matters: it is one vector
    assert d(tv.Tensor(swapped)).numpy()[0] != logits[0]
    with pytest.raises(ValueError, match="MLPDiscriminator: batch of 5 is not a multiple of pack=2"):
        d(tv.Tensor(x[:5]))


def small_gan(seed=0):
    return MLPGenerator(2, (2,), hidden=32, seed=seed), MLPDiscriminator((2,), hidden=32, seed=seed + 1)


def shifted_gaussian(n, rng):
    return np.array([2.0, -1.0]) + 0.3 * rng.standard_normal((n, 2))


def test_train_gan_is_reproducible_and_records_every_step():
    runs = []
    for _ in range(2):
        g, d = small_gan()
        h = train_gan(g, d, shifted_gaussian, steps=5, batch_size=16, seed=3, snapshot_at=(0, 5), snapshot_n=10)
        runs.append((h, g.state_dict()))
    (h, state), (h2, state2) = runs
    assert h.steps == [1, 2, 3, 4, 5] and len(h.d_loss) == len(h.g_loss) == len(h.d_real) == 5
    assert h.d_loss == h2.d_loss and h.g_loss == h2.g_loss
    assert all(np.array_equal(state[k], state2[k]) for k in state)
    assert set(h.snapshots) == {0, 5} and h.snapshots[5].shape == (10, 2)
    assert not np.array_equal(h.snapshots[0], h.snapshots[5])     # same z, moved generator


def test_a_small_gan_moves_its_samples_onto_a_shifted_gaussian():
    g, d = small_gan()
    before = generate(g, 1000, seed=0).mean(0)
    train_gan(g, d, shifted_gaussian, steps=400, batch_size=64, lr=2e-3, schedule="cosine", seed=0)
    after = generate(g, 1000, seed=0)
    # 400 steps of a tiny GAN do not converge (seeds 0-3 end 0.1-0.35 from the mean), but a generator
    # pushed the wrong way, or not at all, stays about 2.2 away
    assert np.linalg.norm(before - [2.0, -1.0]) > 1.5
    assert np.linalg.norm(after.mean(0) - [2.0, -1.0]) < 0.5
    assert 0.05 < after.std(0).mean() < 0.6                      # not collapsed to a point (data: 0.3)


def test_train_gan_checks_its_arguments():
    g, d = small_gan()
    with pytest.raises(ValueError, match="train_gan: loss must be one of"):
        train_gan(g, d, shifted_gaussian, steps=1, seed=0, loss="wasserstein")
    with pytest.raises(ValueError, match=r"train_gan: real must be a callable real\(n, rng\) or an array"):
        train_gan(g, d, np.zeros(3), steps=1, seed=0)
    with pytest.raises(TypeError, match="train_gan: the generator needs a latent_dim"):
        train_gan(Linear(2, 2, seed=0), d, shifted_gaussian, steps=1, seed=0)


def test_train_gan_checks_its_snapshot_settings_before_training_and_coverage_needs_a_positive_share():
    from tinyvision.models.judge import class_coverage
    g, d = MLPGenerator(2, (2,), hidden=8, seed=0), MLPDiscriminator((2,), hidden=8, seed=0)
    data = ring_of_gaussians().sample(64, seed=0)[0]
    with pytest.raises(TypeError, match=r"train_gan: snapshot_at must be a list of steps \(e.g. \[0, 2\]\), got 100"):
        train_gan(g, d, data, steps=2, seed=0, snapshot_at=100)
    with pytest.raises(ValueError, match=r"train_gan: snapshot_at\[\] must be an int"):
        train_gan(g, d, data, steps=2, seed=0, snapshot_at=[5])
    with pytest.raises(ValueError, match="train_gan: snapshot_n must be an int"):
        train_gan(g, d, data, steps=2, seed=0, snapshot_n=0)
    with pytest.raises(TypeError, match="train_gan: log must be a function"):
        train_gan(g, d, data, steps=2, seed=0, log="print")
    with pytest.raises(ValueError, match="class_coverage: min_share must be"):
        class_coverage(np.full((3, 10), 0.1), min_share=0.0)
