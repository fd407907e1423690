"""The variational autoencoder (Kingma & Welling 2014): a latent space learned by compressing and sampling.

An encoder maps an image x to a Gaussian over a small latent vector z, q(z|x) = N(mu(x), diag sigma^2(x));
a decoder maps z back to a distribution over images, p(x|z). Training maximises the evidence lower
bound (ELBO) on log p(x), one image at a time:

    log p(x) >= ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)),          p(z) = N(0, I)
                       reconstruction     keeps q close to the prior, so that z ~ N(0, I) decodes to images

Shapes: x (B, D) with D = C H W (images are flattened), mu and logvar (B, L), z (B, L).

- Reparameterisation (sec. 2.4): z = mu + sigma * eps, eps ~ N(0, I), sigma = exp(logvar / 2), so z
  is a differentiable function of (mu, logvar) and the noise is an input: dz/dmu = 1, dz/dlogvar = z-mu over 2.
- KL between diagonal Gaussians and the standard normal, in closed form (appendix B):
      KL = -1/2 sum_j (1 + logvar_j - mu_j^2 - exp(logvar_j))          (B,): nats per image
- Likelihoods: "bernoulli" (pixels in [0, 1]; the decoder outputs logits; -log p(x|z) = the summed
  binary cross-entropy, exact for binary pixels) or "gaussian" with a fixed sigma (the decoder outputs
  the mean; -log p = |x - mean|^2 / (2 sigma^2) + D/2 log(2 pi sigma^2)).
  Both are SUMMED over pixels, like the KL: averaging one and summing the other weights the KL by D
  and blurs the model (the pytorch/examples bug, models.md section 5).
- beta-VAE (Higgins et al. 2017): reconstruction + beta KL; beta > 1 presses q towards the prior.
- IWAE bound (Burda et al. 2016, eq. 8): E_{z_1..z_k ~ q}[log (1/k) sum_i p(x, z_i) / q(z_i|x)]; k = 1 is the ELBO and
  the bound tightens towards log p(x) as k grows: the number to report as the model's log-likelihood.
- Active units (Burda et al. 2016): latent j is active when Var_x(E_q[z_j | x]) > 0.01; a unit the
  encoder ignores (posterior collapse) carries no information about x.
- Mutual information gap (Chen et al. 2018), for data whose generating factors v_k are known: for each
  factor, the mutual information with the latent that knows it best minus that with the runner-up,
  over the factor's entropy; 1 when one latent alone encodes the factor, 0 when none or several do.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops as F
from ..checks import check_choice, check_int, check_number
from ..nn import Conv2d, ConvTranspose2d, Flatten, Linear, Module, ReLU, Sequential
from ..nn.init import as_rng
from ..nn.layers import tensor_input
from ..tensor import Tensor, no_grad

__all__ = ["VAE", "active_units", "gaussian_kl", "iwae_bound", "log_likelihood", "mutual_information_gap",
           "negative_elbo", "reparameterize"]

LIKELIHOODS = ("bernoulli", "gaussian")
_LOG_2PI = math.log(2 * math.pi)


# --- the math, on Tensors: usable with any encoder and decoder ------------------------------------------
def reparameterize(mu, logvar, eps) -> Tensor:
    """z = mu + exp(logvar / 2) * eps: a sample of N(mu, diag exp(logvar)) that gradients flow through."""
    return mu + F.exp(logvar * 0.5) * eps


def gaussian_kl(mu, logvar) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per row: -1/2 sum_j (1 + logvar - mu^2 - exp(logvar)), (B,)."""
    return F.sum(1 + logvar - mu * mu - F.exp(logvar), axis=-1) * -0.5


def log_likelihood(x, decoded, likelihood: str = "bernoulli", sigma: float = 1.0) -> Tensor:
    """log p(x | z) per row, summed over the D pixels (B,). `decoded`: logits (bernoulli) or means (gaussian)."""
    likelihood = check_choice("log_likelihood", "likelihood", likelihood, LIKELIHOODS)
    if likelihood == "bernoulli":
        return -F.sum(F.binary_cross_entropy_with_logits(decoded, x, reduction="none"), axis=-1)
    sigma = check_number("log_likelihood", "sigma", sigma, low=0.0, low_open=True)
    d = decoded.shape[-1]
    sq = F.sum((x - decoded) * (x - decoded), axis=-1)
    return sq * (-0.5 / sigma ** 2) - 0.5 * d * (_LOG_2PI + 2 * math.log(sigma))


def _diag_gaussian_log_density(z, mu, logvar):
    """log N(z; mu, diag exp(logvar)) per row, as NumPy float64 (for the IWAE bound)."""
    return -0.5 * (((z - mu) ** 2) * np.exp(-logvar) + logvar + _LOG_2PI).sum(axis=-1)


# --- the model ---------------------------------------------------------------------------------------------
class VAE(Module):
    """Encoder -> (mu, logvar) -> z -> decoder, for images (B, C, H, W) (flattened to D = C H W inside).

    arch="mlp": x (D) -> Linear -> ReLU -> hidden -> two Linear heads mu, logvar (L each); the decoder
        mirrors it, L -> hidden -> ReLU -> D (the pytorch/examples VAE, 784-400-20, scaled down).
    arch="conv" (images of side divisible by 4): two stride-2 3x3 convs (C -> w -> 2w channels, w = hidden // 16; side / 4),
        flatten, the two heads; the decoder a Linear back to (2w, side/4, side/4) and two stride-2
        4x4 transposed convs (padding 1: each doubles the side).
    arch="grid": the same convolutions, but the code stays an image: the heads are 1x1 convs, so z is a
        grid of k = latent_dim / ((H/4)(W/4)) numbers per cell, `latent_shape` = (k, H/4, W/4), each
        cell describing its own part of the picture (Stable Diffusion's autoencoder, scaled down: the
        space latent diffusion works in). z is still passed around flattened, (B, latent_dim); the
        decoder starts with a 1x1 conv from k to 2w channels.
    The decoder outputs logits (bernoulli likelihood) or means (gaussian); `decode_mean` gives the
    image the decoder expects, sigmoid(logits) or the means.
    """

    def __init__(self, image_shape=(1, 8, 8), latent_dim: int = 8, hidden: int = 256, arch: str = "mlp",
                 likelihood: str = "bernoulli", sigma: float = 1.0, *, seed):
        if not (isinstance(image_shape, tuple) and len(image_shape) == 3):
            raise TypeError(f"VAE: image_shape must be a tuple (C, H, W), got {image_shape!r}")
        c, h, w = (check_int("VAE", "image_shape", n, low=1) for n in image_shape)
        self.image_shape = (c, h, w)
        self.latent_dim = check_int("VAE", "latent_dim", latent_dim, low=1)
        hidden = check_int("VAE", "hidden", hidden, low=1)
        self.arch = check_choice("VAE", "arch", arch, ("mlp", "conv", "grid"))
        self.likelihood = check_choice("VAE", "likelihood", likelihood, LIKELIHOODS)
        self.sigma = check_number("VAE", "sigma", sigma, low=0.0, low_open=True)
        rng = as_rng(seed)
        d = c * h * w
        if self.arch == "mlp":
            self.encoder = Sequential(Flatten(), Linear(d, hidden, seed=rng), ReLU())
            feat = hidden
            self.decoder = Sequential(Linear(self.latent_dim, hidden, seed=rng), ReLU(), Linear(hidden, d, seed=rng))
        else:
            if h % 4 or w % 4:
                raise ValueError(f"VAE: arch={self.arch!r} halves the image twice; image_shape {image_shape} needs H and W "
                                 "divisible by 4")
            width = max(1, hidden // 16)
            self._grid = (2 * width, h // 4, w // 4)
            feat = 2 * width * (h // 4) * (w // 4)
            convs = [Conv2d(c, width, 3, stride=2, padding=1, seed=rng), ReLU(),
                     Conv2d(width, 2 * width, 3, stride=2, padding=1, seed=rng), ReLU()]
            up = [ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, seed=rng), ReLU(),
                  ConvTranspose2d(width, c, 4, stride=2, padding=1, seed=rng), Flatten()]
            if self.arch == "conv":
                self.encoder = Sequential(*convs, Flatten())
                self.decoder_in = Sequential(Linear(self.latent_dim, feat, seed=rng), ReLU())
            else:
                cells = (h // 4) * (w // 4)
                if self.latent_dim % cells:
                    raise ValueError(f"VAE: arch='grid' lays z out as k numbers on each of the (H/4)(W/4) = {cells} cells; "
                                     f"latent_dim={latent_dim} is not a multiple of {cells}")
                self.latent_shape = (self.latent_dim // cells, h // 4, w // 4)
                self.encoder = Sequential(*convs)
                self.decoder_in = Sequential(Conv2d(self.latent_shape[0], 2 * width, 1, seed=rng), ReLU())
            self.decoder = Sequential(*up)
        if self.arch == "grid":
            k = self.latent_shape[0]
            self.mu_head = Sequential(Conv2d(2 * width, k, 1, seed=rng), Flatten())
            self.logvar_head = Sequential(Conv2d(2 * width, k, 1, seed=rng), Flatten())
        else:
            self.mu_head = Linear(feat, self.latent_dim, seed=rng)
            self.logvar_head = Linear(feat, self.latent_dim, seed=rng)

    def encode(self, x):
        """(mu, logvar), each (B, L), for images x (B, C, H, W)."""
        x = self._images(x)
        h = self.encoder(x)
        return self.mu_head(h), self.logvar_head(h)

    def decode(self, z):
        """Logits (bernoulli) or means (gaussian) of p(x|z), flattened: (B, D)."""
        z = tensor_input(f"VAE.decode(latent_dim={self.latent_dim})", z)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"VAE.decode: z must be (B, {self.latent_dim}), got shape {z.shape}")
        if self.arch == "mlp":
            return self.decoder(z)
        if self.arch == "grid":
            h = self.decoder_in(F.reshape(z, (z.shape[0],) + self.latent_shape))
        else:
            h = F.reshape(self.decoder_in(z), (z.shape[0],) + self._grid)
        return self.decoder(h)

    def decode_mean(self, z) -> np.ndarray:
        """The images the decoder expects for z, (B, C, H, W) as NumPy: sigmoid(logits) or the means."""
        with no_grad():
            out = self.decode(z)
            out = F.sigmoid(out) if self.likelihood == "bernoulli" else out
        return out.numpy().reshape((-1,) + self.image_shape)

    def forward(self, x, eps):
        """(decoded (B, D), mu, logvar, z) with z = mu + sigma * eps; eps (B, L) is the caller's noise."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, eps)
        return self.decode(z), mu, logvar, z

    def _images(self, x):
        x = tensor_input(f"VAE(image_shape={self.image_shape})", x)
        if x.ndim != 4 or x.shape[1:] != self.image_shape:
            raise ValueError(f"VAE: x must be images (B,) + {self.image_shape}, got shape {x.shape}")
        return x

    def extra_repr(self):
        return f"image_shape={self.image_shape}, latent_dim={self.latent_dim}, arch={self.arch!r}, " \
               f"likelihood={self.likelihood!r}"


def negative_elbo(model: VAE, x, rng, beta: float = 1.0) -> tuple:
    """(loss, reconstruction, kl): loss = mean over the batch of -log p(x|z) + beta KL, one z per image;
    reconstruction and kl are the batch means in nats (floats), for logging."""
    beta = check_number("negative_elbo", "beta", beta, low=0.0)
    rng = as_rng(rng)
    x = model._images(x)
    eps = rng.standard_normal((x.shape[0], model.latent_dim)).astype(x.dtype)
    decoded, mu, logvar, _ = model(x, eps)
    flat = F.reshape(x, (x.shape[0], -1))
    recon = -log_likelihood(flat, decoded, model.likelihood, model.sigma)
    kl = gaussian_kl(mu, logvar)
    loss = F.mean(recon + kl * beta)
    return loss, float(recon.numpy().mean()), float(kl.numpy().mean())


def iwae_bound(model: VAE, x, k: int, rng, batch_size: int = 256) -> np.ndarray:
    """The importance-weighted bound per image (N,), in nats, with k samples of q(z|x) each (no gradients):
        log (1/k) sum_i exp(log p(x|z_i) + log p(z_i) - log q(z_i|x))
    summed stably (log-sum-exp). k = 1 is an unbiased one-sample ELBO; larger k is a tighter bound."""
    k = check_int("iwae_bound", "k", k, low=1)
    batch_size = check_int("iwae_bound", "batch_size", batch_size, low=1)
    rng = as_rng(rng)
    x = np.asarray(x.data if isinstance(x, Tensor) else x)
    out = []
    with no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            n = len(xb)
            mu, logvar = (t.numpy().astype(np.float64) for t in model.encode(Tensor(xb)))
            eps = rng.standard_normal((k, n, model.latent_dim))
            z = mu + np.exp(0.5 * logvar) * eps                                  # (k, n, L)
            decoded = model.decode(Tensor(z.reshape(k * n, -1).astype(xb.dtype)))
            flat = Tensor(np.broadcast_to(xb.reshape(n, -1), (k, n, xb[0].size)).reshape(k * n, -1))
            log_px = log_likelihood(flat, decoded, model.likelihood, model.sigma).numpy().astype(np.float64)
            log_w = (log_px.reshape(k, n) + _diag_gaussian_log_density(z, 0.0, np.zeros_like(z))
                     - _diag_gaussian_log_density(z, mu, logvar))
            top = log_w.max(axis=0)
            out.append(top + np.log(np.exp(log_w - top).mean(axis=0)))
    return np.concatenate(out) if out else np.zeros(0)


def active_units(model: VAE, x, threshold: float = 0.01) -> tuple:
    """(number of active latents, per-latent Var_x(mu_j(x))): a latent is active when the encoder's mean
    for it varies across the data by more than `threshold` (Burda et al. 2016 use 0.01)."""
    threshold = check_number("active_units", "threshold", threshold, low=0.0)
    with no_grad():
        mu, _ = model.encode(Tensor(np.asarray(x)))
    variance = mu.numpy().astype(np.float64).var(axis=0)
    return int((variance > threshold).sum()), variance


def _entropy(counts) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information_gap(codes, factors, bins: int = 20) -> tuple:
    """(MIG, {"mi": (K, L) matrix in nats, "gap": (K,) normalised gaps, "best": (K,) best latent per factor}).

    codes (N, L): one code per image (the encoder's mu); factors (N, K): the true discrete factors.
    Each latent is cut into `bins` equal-width bins over its range (Chen et al. 2018 estimate I(z_j; v_k)
    from samples of q; a histogram of the means is the common shortcut, as in disentanglement_lib):
        I(z_j; v_k) = sum_{a, b} p(a, b) log (p(a, b) / (p(a) p(b)))      from the joint counts
        gap_k = (I_(1) - I_(2)) / H(v_k)    (I_(1) >= I_(2): the two largest over latents j)
        MIG = mean over k of gap_k
    """
    codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or len(codes) < 2:
        raise ValueError(f"mutual_information_gap: codes (N, L) and factors (N, K) with the same N >= 2, got "
                         f"{codes.shape} and {factors.shape}")
    if codes.shape[1] < 2:
        raise ValueError(f"mutual_information_gap: the gap needs at least 2 latents, got codes of shape {codes.shape}")
    bins = check_int("mutual_information_gap", "bins", bins, low=2)
    binned = []
    for j in range(codes.shape[1]):
        lo, hi = codes[:, j].min(), codes[:, j].max()
        edges = np.linspace(lo, hi, bins + 1)[1:-1] if hi > lo else np.zeros(0)
        binned.append(np.digitize(codes[:, j], edges))
    mi = np.zeros((factors.shape[1], codes.shape[1]))
    entropies = np.zeros(factors.shape[1])
    for k in range(factors.shape[1]):
        values, v = np.unique(factors[:, k], return_inverse=True)
        entropies[k] = _entropy(np.bincount(v))
        for j, zb in enumerate(binned):
            joint = np.zeros((bins, len(values)))
            np.add.at(joint, (zb, v), 1)
            mi[k, j] = _entropy(joint.sum(1)) + _entropy(joint.sum(0)) - _entropy(joint.ravel())
    top = np.sort(mi, axis=1)[:, ::-1]
    gaps = np.where(entropies > 0, (top[:, 0] - top[:, 1]) / np.where(entropies > 0, entropies, 1), 0.0)
    return float(gaps.mean()), {"mi": mi, "gap": gaps, "best": mi.argmax(axis=1)}
