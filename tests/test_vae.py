"""The VAE's math against closed forms and Monte Carlo: KL, the reparameterised gradient, the bounds.

References are float64 NumPy; Monte Carlo comparisons use a tolerance of 5 standard errors of the
estimate (a correct formula fails such a check about once in 3 million draws).
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyvision as tv
import tinyvision.ops as F
from tinyvision.models.vae import VAE, active_units, gaussian_kl, iwae_bound, log_likelihood, negative_elbo, reparameterize


def t64(a, grad=False):
    return tv.Tensor(np.asarray(a, np.float64), requires_grad=grad)


@given(st.integers(1, 4), st.integers(0, 10_000))
@settings(max_examples=15, deadline=None)
def test_closed_form_kl_equals_a_monte_carlo_estimate(latent, seed):
    rng = np.random.default_rng(seed)
    mu, logvar = rng.normal(0, 1.5, latent), rng.normal(0, 1.0, latent)
    kl = gaussian_kl(t64(mu[None]), t64(logvar[None])).numpy()[0]
    sigma = np.exp(0.5 * logvar)
    z = mu + sigma * rng.standard_normal((200_000, latent))
    log_q = (-0.5 * ((z - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(1)
    log_p = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(1)
    samples = log_q - log_p
    assert abs(kl - samples.mean()) < 5 * samples.std() / math.sqrt(len(samples)) + 1e-12


def test_kl_is_zero_exactly_at_the_prior_and_positive_elsewhere():
    assert gaussian_kl(t64(np.zeros((3, 5))), t64(np.zeros((3, 5)))).numpy().tolist() == [0.0, 0.0, 0.0]
    rng = np.random.default_rng(0)
    assert (gaussian_kl(t64(rng.normal(size=(50, 4))), t64(rng.normal(size=(50, 4)))).numpy() > 0).all()


@given(st.integers(0, 10_000))
@settings(max_examples=10, deadline=None)
def test_reparameterised_gradient_of_a_quadratic_equals_the_analytic_one(seed):
    """f(z) = sum_j a_j z_j^2 + b_j z_j:  E_q f = sum a (mu^2 + sigma^2) + b mu, so
    dE/dmu = 2 a mu + b and dE/dlogvar = a sigma^2. The sample mean of the pathwise gradient matches."""
    rng = np.random.default_rng(seed)
    latent, n = 3, 100_000
    mu0, logvar0, a, b = rng.normal(size=latent), rng.normal(size=latent), rng.normal(size=latent), rng.normal(size=latent)
    mu, logvar = t64(np.tile(mu0, (n, 1)), True), t64(np.tile(logvar0, (n, 1)), True)
    z = reparameterize(mu, logvar, t64(rng.standard_normal((n, latent))))
    F.sum(z * z * t64(a) + z * t64(b)).backward()
    sigma2 = np.exp(logvar0)
    for got, want in ((mu.grad, 2 * a * mu0 + b), (logvar.grad, a * sigma2)):
        se = got.std(axis=0) / math.sqrt(n)
        assert np.all(np.abs(got.mean(axis=0) - want) < 5 * se + 1e-9), (got.mean(axis=0), want)


def test_log_likelihoods_equal_their_formulas():
    rng = np.random.default_rng(0)
    x, logits = (rng.random((4, 6)) > 0.5).astype(float), rng.normal(0, 3, (4, 6))
    p = 1 / (1 + np.exp(-logits))
    want = (x * np.log(p) + (1 - x) * np.log(1 - p)).sum(1)
    np.testing.assert_allclose(log_likelihood(t64(x), t64(logits)).numpy(), want, rtol=1e-12)
    mean = rng.normal(size=(4, 6))
    want = (-0.5 * ((x - mean) / 0.3) ** 2 - math.log(0.3) - 0.5 * math.log(2 * math.pi)).sum(1)
    np.testing.assert_allclose(log_likelihood(t64(x), t64(mean), "gaussian", 0.3).numpy(), want, rtol=1e-12)


class _LinearGaussian(VAE):
    """Probabilistic PCA as a VAE: p(z) = N(0, I), p(x|z) = N(W z + c, s^2 I), exact posterior known."""

    def __init__(self, w, c, s, enc_mu, enc_logvar):
        self.image_shape, self.latent_dim, self.likelihood, self.sigma = (1, 1, w.shape[0]), w.shape[1], "gaussian", s
        self.w, self.c, self.enc_mu, self.enc_logvar = w, c, enc_mu, enc_logvar

    def encode(self, x):
        flat = x.numpy().reshape(x.shape[0], -1)
        mu = flat @ self.enc_mu[0].T + self.enc_mu[1]
        return t64(mu), t64(np.broadcast_to(self.enc_logvar, mu.shape))

    def decode(self, z):
        return t64(z.numpy() @ self.w.T + self.c)


def test_elbo_is_below_the_exact_log_likelihood_and_iwae_climbs_towards_it():
    rng = np.random.default_rng(3)
    d, latent, s, n = 5, 2, 0.5, 400
    w, c = rng.normal(size=(d, latent)), rng.normal(size=d)
    cov = w @ w.T + s ** 2 * np.eye(d)
    x = rng.multivariate_normal(c, cov, size=n)
    exact = -0.5 * (np.einsum("nd,de,ne->n", x - c, np.linalg.inv(cov), x - c) + np.linalg.slogdet(cov)[1]
                    + d * math.log(2 * math.pi))
    # a deliberately poor encoder: the exact posterior's mean map shifted by 1, its variance e^2 times too wide
    post_cov = np.linalg.inv(np.eye(latent) + w.T @ w / s ** 2)
    enc = (post_cov @ w.T / s ** 2, -(post_cov @ w.T / s ** 2) @ c + 1.0)
    model = _LinearGaussian(w, c, s, enc, np.log(np.diag(post_cov)) + 2.0)
    images = x.reshape(n, 1, 1, d)
    bounds = [iwae_bound(model, images, k, np.random.default_rng(7)) for k in (1, 10, 100, 1000)]
    means = [b.mean() for b in bounds]
    assert means[0] < exact.mean()                                      # the ELBO is below log p(x)
    assert all(a < b for a, b in zip(means, means[1:])), means          # tighter on average as k grows
    gap = exact.mean() - means[-1]
    assert gap < 0.1 * (exact.mean() - means[0])                        # most of the gap closed at k = 1000
    assert gap > -3 * bounds[-1].std() / math.sqrt(n)                   # and still a bound (up to noise)


def test_vae_trains_on_binary_digits_and_keeps_its_latents_active():
    from tinyvision.data import batches, load_digits
    from tinyvision.optim import Adam
    x, _ = load_digits("train", normalize=False)
    x = (x[:512] > 0.5).astype(np.float32)
    model = VAE(latent_dim=4, hidden=64, seed=0)
    opt, rng = Adam(model.parameters(), lr=2e-3), np.random.default_rng(0)
    first = None
    for epoch in range(8):
        for (b,) in batches(x, batch_size=64, seed=0, epoch=epoch):
            loss, recon, kl = negative_elbo(model, b, rng)
            first = loss.item() if first is None else first
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert loss.item() < 0.6 * first                 # ~44 nats at init (64 pixels at ln 2) down to below 26
    assert active_units(model, x)[0] >= 3
    assert model.decode_mean(tv.Tensor(np.zeros((2, 4), np.float32))).shape == (2, 1, 8, 8)


def test_vae_errors_name_the_argument():
    with pytest.raises(ValueError, match="VAE: arch='conv' halves the image twice"):
        VAE(image_shape=(1, 6, 6), arch="conv", seed=0)
    model = VAE(seed=0)
    with pytest.raises(ValueError, match=r"VAE: x must be images \(B,\) \+ \(1, 8, 8\), got shape \(2, 64\)"):
        model.encode(tv.Tensor(np.zeros((2, 64), np.float32)))
    with pytest.raises(ValueError, match=r"VAE.decode: z must be \(B, 8\), got shape \(2, 3\)"):
        model.decode(tv.Tensor(np.zeros((2, 3), np.float32)))
    with pytest.raises(ValueError, match="log_likelihood: likelihood must be one of"):
        log_likelihood(t64(np.zeros((1, 2))), t64(np.zeros((1, 2))), "poisson")


def test_mutual_information_gap_is_one_for_a_clean_code_and_near_zero_for_noise_or_a_shared_one():
    from tinyvision.models.vae import mutual_information_gap
    rng = np.random.default_rng(0)
    n = 6000
    factors = np.stack([rng.integers(0, 3, n), rng.integers(0, 4, n)], axis=1)
    clean = np.stack([factors[:, 1] + 0.01 * rng.normal(size=n), rng.normal(size=n), factors[:, 0] * 1.0], axis=1)
    mig, info = mutual_information_gap(clean, factors)
    assert info["best"].tolist() == [2, 0] and mig > 0.95
    noise, _ = mutual_information_gap(rng.normal(size=(n, 3)), factors)
    assert noise < 0.02
    copied = np.stack([factors[:, 0] * 1.0, factors[:, 0] * 1.0 + 0.001 * rng.normal(size=n)], axis=1)
    shared, info = mutual_information_gap(copied, factors[:, :1])     # two latents know it equally: no gap
    assert shared < 0.05 and info["mi"][0].min() > 0.9 * np.log(3)
    with pytest.raises(ValueError, match="mutual_information_gap: the gap needs at least 2 latents"):
        mutual_information_gap(np.zeros((5, 1)), np.zeros((5, 1)))


def test_conv_vae_encodes_decodes_and_backpropagates_with_the_shapes_it_promises():
    model = VAE(image_shape=(3, 8, 12), latent_dim=5, hidden=64, arch="conv", seed=0)
    x = (np.random.default_rng(0).random((4, 3, 8, 12)) > 0.5).astype(np.float32)
    mu, logvar = model.encode(tv.Tensor(x))
    assert mu.shape == logvar.shape == (4, 5)
    loss, recon, kl = negative_elbo(model, x, np.random.default_rng(1))
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())
    assert recon > 0 and kl >= 0 and model.decode_mean(mu).shape == (4, 3, 8, 12)


def test_grid_vae_keeps_the_code_an_image_each_cell_seeing_its_own_part():
    model = VAE(image_shape=(3, 8, 12), latent_dim=4 * 2 * 3, hidden=64, arch="grid", seed=0).astype(np.float64)
    assert model.latent_shape == (4, 2, 3)
    x = np.random.default_rng(0).random((2, 3, 8, 12))
    mu, logvar = model.encode(tv.Tensor(x))
    assert mu.shape == logvar.shape == (2, 24)
    # locality: changing the left third of the image leaves the code of the rightmost column of cells alone
    x2 = x.copy()
    x2[:, :, :, :4] = 1 - x2[:, :, :, :4]
    mu2 = model.encode(tv.Tensor(x2))[0].numpy().reshape(2, 4, 2, 3)
    grid = mu.numpy().reshape(2, 4, 2, 3)
    np.testing.assert_array_equal(mu2[..., 2], grid[..., 2])
    assert np.abs(mu2[..., 0] - grid[..., 0]).max() > 1e-6
    loss, recon, kl = negative_elbo(model, x, np.random.default_rng(1))
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())
    assert model.decode_mean(mu).shape == (2, 3, 8, 12)
    # and the decoder: changing the codes of the rightmost column of cells leaves the left pixels alone
    # (two 4x4 stride-2 transposed convs reach from cell column 2 down to pixel column 5 at most)
    z = mu.numpy().reshape(2, 4, 2, 3)
    z2 = z.copy()
    z2[..., 2] += 3.0
    far = model.decode_mean(z.reshape(2, -1)), model.decode_mean(z2.reshape(2, -1))
    np.testing.assert_array_equal(far[0][..., :5], far[1][..., :5])
    assert np.abs(far[0][..., 5:] - far[1][..., 5:]).max() > 1e-6
    with pytest.raises(ValueError, match=r"VAE: arch='grid' lays z out as k numbers on each of the \(H/4\)\(W/4\) = 6 cells; "
                                         "latent_dim=8 is not a multiple of 6"):
        VAE(image_shape=(3, 8, 12), latent_dim=8, arch="grid", seed=0)


def test_grid_vae_gradients_check():
    from tinyvision.gradcheck import gradcheck_module
    model = VAE(image_shape=(1, 4, 4), latent_dim=2, hidden=32, arch="grid", seed=0).astype(np.float64)
    x = np.random.default_rng(2).random((2, 1, 4, 4))
    eps = np.random.default_rng(3).standard_normal((2, 2))
    gradcheck_module(model, [x], names=["encoder.0.weight", "mu_head.0.weight", "logvar_head.0.weight",
                                        "decoder_in.0.weight", "decoder.2.weight"],
                     call=lambda m, xt: m(xt, eps)[0])
