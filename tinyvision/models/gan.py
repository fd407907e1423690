"""Generative adversarial networks: a generator and a discriminator trained against each other.

Goodfellow et al. (2014). A generator G maps noise z ~ N(0, I) to samples; a discriminator D maps a
sample to a logit l = D(x), the log-odds that x is real, D's probability being sigma(l). The game:

    min_G max_D  V(D, G) = E_x~p_data log sigma(D(x)) + E_z log(1 - sigma(D(G(z))))       (eq. 1)

For a fixed G, the best discriminator is D*(x) = p_data(x) / (p_data(x) + p_g(x))           (Prop. 1)
so its logit is the log density ratio log p_data(x) - log p_g(x); against D*, the generator minimises
C(G) = -log 4 + 2 JSD(p_data || p_g), which is -log 4 exactly when p_g = p_data and D* = 1/2 (Thm. 1).

Everything here is written from logits with softplus(l) = log(1 + e^l), because
    -log sigma(l) = softplus(-l)          -log(1 - sigma(l)) = softplus(l)
and softplus is computed without overflow (ops.binary_cross_entropy_with_logits: max(l, 0) + log1p(e^-|l|)).

    discriminator_loss  L_D = mean softplus(-l_real) + mean softplus(l_fake)    (minus eq. 1, per sample)
    generator_loss      "saturating":      L_G = -mean softplus(l_fake)      (G minimises eq. 1's 2nd term)
                        "non_saturating":  L_G =  mean softplus(-l_fake)     (G maximises log D(G(z)), sec. 3)
Both generator losses push l_fake up, but with different strength. Per sample,
    d/dl [-softplus(l)] = -sigma(l)        d/dl [softplus(-l)] = -sigma(-l)
At l = -8 (D confidently says "fake", as it soon does against a poor G) the saturating gradient is
-sigma(-8) = -0.0003 and the non-saturating one -sigma(8) = -0.9997; at l = 0 both are -0.5. The
saturating loss gives G almost nothing to learn from exactly when G is worst; that is why the paper
itself recommends the non-saturating loss in practice, and why DCGAN trains G with label 1 (the same loss).

The models:
    MLPGenerator / MLPDiscriminator   small multi-layer perceptrons, for points in the plane (and, flat,
                                      for 8x8 digits); the discriminator can look at `pack` samples at
                                      once (PacGAN, Lin et al. 2018), a remedy for mode collapse
    DCGANGenerator / DCGANDiscriminator   the DCGAN pair (Radford et al. 2016; pytorch/examples
                                      dcgan/main.py) scaled down to 8x8 images
and train_gan, the alternating loop of pytorch/examples dcgan/main.py: a D step on a real batch
(label 1) and a fake batch G(z).detach() (label 0), then a G step on the same fake batch.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import ops as F
from ..checks import check_choice, check_int, check_number
from ..nn import BatchNorm2d, Conv2d, ConvTranspose2d, LeakyReLU, Linear, Module, Parameter, ReLU, Sequential, Tanh
from ..nn.init import as_rng
from ..nn.layers import tensor_input
from ..optim import Adam
from ..optim.schedule import warmup_cosine
from ..tensor import Tensor, no_grad

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "GANHistory", "GENERATOR_LOSSES", "MLPDiscriminator",
           "MLPGenerator", "discriminator_loss", "fit_discriminator", "generate", "generator_loss", "softplus", "train_gan"]

GENERATOR_LOSSES = ("non_saturating", "saturating")


# --- the losses, from logits -------------------------------------------------------------------
def softplus(x) -> Tensor:
    """log(1 + e^x), elementwise and without overflow: the binary cross-entropy of logit x against the
    label 0 is exactly softplus(x) (ops.binary_cross_entropy_with_logits, max(x, 0) + log1p(e^-|x|)).
    d/dx = sigma(x)."""
    x = tensor_input("softplus", x)
    return F.binary_cross_entropy_with_logits(x, np.zeros(x.shape), reduction="none")


def _logits(where: str, name: str, logits) -> Tensor:
    logits = tensor_input(f"{where}: {name}", logits)
    if logits.size == 0:
        raise ValueError(f"{where}: {name} is empty (shape {logits.shape}); the loss is a mean over the batch")
    return logits


def _mean_softplus(logits: Tensor, sign: int) -> Tensor:
    """mean softplus(sign * l) as the binary cross-entropy with label (1 - sign) / 2:
    label 0 gives softplus(l), label 1 gives softplus(l) - l = softplus(-l)."""
    label = np.zeros(logits.shape) if sign > 0 else np.ones(logits.shape)
    return F.binary_cross_entropy_with_logits(logits, label)


def discriminator_loss(real_logits, fake_logits) -> Tensor:
    """L_D = mean softplus(-l_real) + mean softplus(l_fake) = -[mean log D(x) + mean log(1 - D(G(z)))].

    real_logits: D's logits on real samples (any shape, e.g. (B,)); fake_logits: on generated ones.
    Each half is averaged over its own batch. A discriminator that says 1/2 everywhere (l = 0) scores
    2 ln 2 = 1.386, the value at the game's equilibrium (Goodfellow et al. 2014, Thm. 1: C(G) = -log 4).
        dL_D/dl_real = -sigma(-l_real) / B_real        dL_D/dl_fake = sigma(l_fake) / B_fake
    """
    real = _logits("discriminator_loss", "real_logits", real_logits)
    fake = _logits("discriminator_loss", "fake_logits", fake_logits)
    if real.dtype != fake.dtype:
        raise TypeError(f"discriminator_loss: real_logits are {real.dtype} but fake_logits are {fake.dtype}")
    return _mean_softplus(real, -1) + _mean_softplus(fake, +1)


def generator_loss(fake_logits, kind: str = "non_saturating") -> Tensor:
    """The generator's loss on D's logits for its samples (any shape, averaged).

    "non_saturating" (the default, Goodfellow et al. 2014 sec. 3):  L_G = mean softplus(-l)   = -mean log D(G(z))
    "saturating" (eq. 1 as written):                               L_G = -mean softplus(l)   = mean log(1 - D(G(z)))
    Gradients per sample (before the 1/B of the mean): -sigma(-l) and -sigma(l); see the module text.
    """
    kind = check_choice("generator_loss", "kind", kind, GENERATOR_LOSSES)
    fake = _logits("generator_loss", "fake_logits", fake_logits)
    return _mean_softplus(fake, -1) if kind == "non_saturating" else -_mean_softplus(fake, +1)


# --- models --------------------------------------------------------------------------------------
def _shape(where: str, name: str, shape) -> tuple:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not shape:
        raise ValueError(f"{where}: {name} must be a non-empty shape, got {shape}")
    return tuple(check_int(where, f"{name}[{i}]", n, low=1) for i, n in enumerate(shape))


class MLPGenerator(Module):
    """z (B, latent_dim) -> [Linear -> ReLU] x depth -> Linear -> (tanh) -> samples (B, *out_shape).

    out_shape (2,) for points in the plane (output "linear": any real value); (1, 8, 8) for digits with
    output "tanh" (pixels in [-1, 1], as DCGAN).
    """

    def __init__(self, latent_dim: int = 8, out_shape=(2,), hidden: int = 128, depth: int = 2,
                 output: str = "linear", *, seed):
        where = "MLPGenerator"
        self.latent_dim = check_int(where, "latent_dim", latent_dim, low=1)
        self.out_shape = _shape(where, "out_shape", out_shape)
        hidden, depth = check_int(where, "hidden", hidden, low=1), check_int(where, "depth", depth, low=1)
        self.output = check_choice(where, "output", output, ("linear", "tanh"))
        rng = as_rng(seed)
        layers, width = [], self.latent_dim
        for _ in range(depth):
            layers += [Linear(width, hidden, seed=rng), ReLU()]
            width = hidden
        layers.append(Linear(width, math.prod(self.out_shape), seed=rng))
        if self.output == "tanh":
            layers.append(Tanh())
        self.net = Sequential(*layers)

    def forward(self, z):
        z = tensor_input("MLPGenerator", z)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"MLPGenerator: z has shape {z.shape}, expected (B, latent_dim={self.latent_dim})")
        return self.net(z).reshape((z.shape[0],) + self.out_shape)


class MLPDiscriminator(Module):
    """x (B, *in_shape) -> logits (B / pack,):  [Linear -> LeakyReLU(0.2)] x depth -> Linear.

    pack = m > 1 is PacGAN (Lin et al. 2018): the batch is cut into groups of m consecutive samples and
    each group, concatenated into one vector of m * prod(in_shape) numbers, gets one logit, all real or
    all fake. A group of m samples from a collapsed generator looks alike, and D can see it; a single
    sample cannot show that. B must be a multiple of m.
    """

    def __init__(self, in_shape=(2,), hidden: int = 128, depth: int = 2, pack: int = 1, *, seed):
        where = "MLPDiscriminator"
        self.in_shape = _shape(where, "in_shape", in_shape)
        hidden, depth = check_int(where, "hidden", hidden, low=1), check_int(where, "depth", depth, low=1)
        self.pack = check_int(where, "pack", pack, low=1)
        rng = as_rng(seed)
        layers, width = [], self.pack * math.prod(self.in_shape)
        for _ in range(depth):
            layers += [Linear(width, hidden, seed=rng), LeakyReLU(0.2)]
            width = hidden
        layers.append(Linear(width, 1, seed=rng))
        self.net = Sequential(*layers)

    def forward(self, x):
        x = tensor_input("MLPDiscriminator", x)
        if x.shape[1:] != self.in_shape or x.ndim < 2:
            raise ValueError(f"MLPDiscriminator: x has shape {x.shape}, expected (B, *in_shape) = (B, "
                             f"{', '.join(map(str, self.in_shape))})")
        if x.shape[0] % self.pack:
            raise ValueError(f"MLPDiscriminator: batch of {x.shape[0]} is not a multiple of pack={self.pack}")
        groups = x.reshape(x.shape[0] // self.pack, self.pack * math.prod(self.in_shape))
        return self.net(groups).reshape(-1)


def _dcgan_init(module: Module, rng) -> None:
    """DCGAN's init (pytorch/examples dcgan/main.py weights_init): conv weights N(0, 0.02),
    batch-norm weights N(1, 0.02) and biases 0."""
    for m in module.modules():
        if isinstance(m, (Conv2d, ConvTranspose2d)):
            m.weight = Parameter(0.02 * rng.standard_normal(m.weight.shape), dtype=m.weight.dtype)
        elif isinstance(m, BatchNorm2d):
            m.weight = Parameter(1 + 0.02 * rng.standard_normal(m.weight.shape), dtype=m.weight.dtype)
            m.bias = Parameter(np.zeros(m.bias.shape), dtype=m.bias.dtype)


class DCGANGenerator(Module):
    """The DCGAN generator, for 8x8 images: z (B, latent_dim) -> images (B, C, 8, 8) in [-1, 1].

        z as (B, nz, 1, 1)
        -> ConvTranspose 2x2, stride 1        (B, 4w, 2, 2) -> BatchNorm -> ReLU
        -> ConvTranspose 4x4, stride 2, pad 1 (B, 2w, 4, 4) -> BatchNorm -> ReLU
        -> ConvTranspose 4x4, stride 2, pad 1 (B, C, 8, 8)  -> Tanh
    pytorch/examples' version goes 1 -> 4 -> 8 -> 16 -> 32 -> 64 pixels with ngf = 64; the pattern (BN + ReLU
    on every layer but the last, Tanh output, no pooling) is the same.
    """

    def __init__(self, latent_dim: int = 32, width: int = 32, out_chans: int = 1, *, seed):
        where = "DCGANGenerator"
        self.latent_dim = check_int(where, "latent_dim", latent_dim, low=1)
        w = check_int(where, "width", width, low=1)
        out_chans = check_int(where, "out_chans", out_chans, low=1)
        rng = as_rng(seed)
        self.net = Sequential(
            ConvTranspose2d(self.latent_dim, 4 * w, 2, 1, 0, bias=False, seed=rng), BatchNorm2d(4 * w), ReLU(),
            ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False, seed=rng), BatchNorm2d(2 * w), ReLU(),
            ConvTranspose2d(2 * w, out_chans, 4, 2, 1, bias=False, seed=rng), Tanh(),
        )
        _dcgan_init(self, rng)

    def forward(self, z):
        z = tensor_input("DCGANGenerator", z)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"DCGANGenerator: z has shape {z.shape}, expected (B, latent_dim={self.latent_dim})")
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


class DCGANDiscriminator(Module):
    """The DCGAN discriminator, for 8x8 images: (B, C, 8, 8) -> logits (B,).

        -> Conv 4x4, stride 2, pad 1 (B, w, 4, 4)  -> LeakyReLU(0.2)          (no BatchNorm on the first layer)
        -> Conv 4x4, stride 2, pad 1 (B, 2w, 2, 2) -> BatchNorm -> LeakyReLU(0.2)
        -> Conv 2x2                  (B, 1, 1, 1)  -> the logit (DCGAN adds a Sigmoid; we keep the logit)
    """

    def __init__(self, width: int = 32, in_chans: int = 1, *, seed):
        where = "DCGANDiscriminator"
        w = check_int(where, "width", width, low=1)
        self.in_chans = check_int(where, "in_chans", in_chans, low=1)
        rng = as_rng(seed)
        self.net = Sequential(
            Conv2d(self.in_chans, w, 4, 2, 1, bias=False, seed=rng), LeakyReLU(0.2),
            Conv2d(w, 2 * w, 4, 2, 1, bias=False, seed=rng), BatchNorm2d(2 * w), LeakyReLU(0.2),
            Conv2d(2 * w, 1, 2, 1, 0, bias=False, seed=rng),
        )
        _dcgan_init(self, rng)

    def forward(self, x):
        x = tensor_input("DCGANDiscriminator", x)
        if x.ndim != 4 or x.shape[1:] != (self.in_chans, 8, 8):
            raise ValueError(f"DCGANDiscriminator: x has shape {x.shape}, expected (B, {self.in_chans}, 8, 8)")
        return self.net(x).reshape(-1)


# --- training ------------------------------------------------------------------------------------
@dataclass
class GANHistory:
    """What train_gan records, one entry per step: the two losses, and D's mean probability on the
    real and on the fake batch of its step (sigma of the logits). snapshots: {step: generate(fixed z)}
    after that many steps, the same z every time so the pictures show one set of samples move."""

    steps: list = field(default_factory=list)
    d_loss: list = field(default_factory=list)
    g_loss: list = field(default_factory=list)
    d_real: list = field(default_factory=list)
    d_fake: list = field(default_factory=list)
    snapshots: dict = field(default_factory=dict)
    seconds: float = 0.0


def generate(generator, n: int, *, seed, batch_size: int = 1024) -> np.ndarray:
    """n samples G(z), z ~ N(0, I) drawn from `seed`, as a NumPy array (no graph is recorded).
    The generator is used in the mode it is in (train or eval)."""
    n = check_int("generate", "n", n, low=1)
    batch_size = check_int("generate", "batch_size", batch_size, low=1)
    rng = as_rng(seed)
    z = rng.standard_normal((n, generator.latent_dim)).astype(_dtype_of(generator))
    with no_grad():
        parts = [generator(Tensor(z[i:i + batch_size])).numpy() for i in range(0, n, batch_size)]
    return np.concatenate(parts)


def _dtype_of(module) -> np.dtype:
    """The dtype of a module's first parameter: batches and z are made in it (float32 by default)."""
    return next(iter(module.parameters())).dtype


def _real_sampler(real, where: str = "train_gan", name: str = "real"):
    """f(n, rng) -> a batch: a callable is used as it is; an array is sampled without replacement within a
    batch (with replacement when it has fewer rows than the batch); each batch is an independent draw."""
    if callable(real):
        return real
    data = np.asarray(real)
    if data.ndim < 2 or len(data) < 1:
        raise ValueError(f"{where}: {name} must be a callable {name}(n, rng) or an array (N, ...) of examples, "
                         f"got shape {data.shape}")
    return lambda n, rng: data[rng.choice(len(data), n, replace=len(data) < n)]


def fit_discriminator(discriminator, real, fake, *, steps: int, batch_size: int = 256, lr: float = 1e-3,
                      betas=(0.9, 0.999), schedule: str = "cosine", seed) -> list:
    """Train D alone, against a FIXED fake distribution, by minimising discriminator_loss; return the losses.

    real, fake: arrays (N, ...) of samples or callables f(n, rng) -> n samples (a frozen generator:
    lambda n, rng: generate(G, n, seed=rng)). The minimiser of the expected loss is the optimal
    discriminator of Goodfellow et al. (2014, Prop. 1): sigma(D*(x)) = p(x) / (p(x) + q(x)), i.e. the
    logit D*(x) = log p(x) - log q(x). Adam, with the lr lowered to 0 along a cosine by default, so that
    the last steps' gradient noise does not move D away from where it settled (D's capacity and the
    finite samples also keep it from D* exactly).
    """
    where = "fit_discriminator"
    steps = check_int(where, "steps", steps, low=1)
    batch_size = check_int(where, "batch_size", batch_size, low=1)
    lr = check_number(where, "lr", lr, low=0.0)
    schedule = check_choice(where, "schedule", schedule, ("constant", "cosine"))
    sample_real, sample_fake = _real_sampler(real, where, "real"), _real_sampler(fake, where, "fake")
    rng = as_rng(seed)
    dtype = _dtype_of(discriminator)
    opt = Adam(discriminator.parameters(), lr=lr, betas=betas)
    discriminator.train()
    losses = []
    for step in range(steps):
        if schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = warmup_cosine(step, steps, 0, lr)
        x_real = Tensor(np.asarray(sample_real(batch_size, rng), dtype=dtype))
        x_fake = Tensor(np.asarray(sample_fake(batch_size, rng), dtype=dtype))
        loss = discriminator_loss(discriminator(x_real), discriminator(x_fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    opt.zero_grad()
    return losses


def train_gan(generator, discriminator, real, *, steps: int, batch_size: int = 64, lr: float = 2e-4,
              betas=(0.5, 0.999), loss: str = "non_saturating", d_steps: int = 1, schedule: str = "constant",
              seed, snapshot_at=(), snapshot_n: int = 512, log=None, log_every: int = 0) -> GANHistory:
    """Train a GAN in place, pytorch/examples dcgan/main.py's loop; return its GANHistory.

    real: an array (N, ...) of training examples, or a callable real(n, rng) returning n of them.
    Each step:
        d_steps times: x = a real batch, fake = G(z), z ~ N(0, I) (B, latent_dim)
                       L_D = discriminator_loss(D(x), D(fake.detach()))        detach: no backward into G
                       Adam step on D's parameters
        L_G = generator_loss(D(fake), loss) on the last fake batch, through the updated D
        Adam step on G's parameters (D's gradients from this backward are cleared before D's next step)
    Adam(lr, betas) for both networks; DCGAN uses lr 2e-4, betas (0.5, 0.999). schedule "cosine" lowers
    both learning rates to 0 along a half cosine (optim.warmup_cosine without warm-up), "constant" keeps them.
    Every random draw (batches, z, snapshot z) comes from `seed`.
    """
    where = "train_gan"
    steps = check_int(where, "steps", steps, low=1)
    batch_size = check_int(where, "batch_size", batch_size, low=1)
    lr = check_number(where, "lr", lr, low=0.0)
    loss = check_choice(where, "loss", loss, GENERATOR_LOSSES)
    d_steps = check_int(where, "d_steps", d_steps, low=1)
    schedule = check_choice(where, "schedule", schedule, ("constant", "cosine"))
    log_every = check_int(where, "log_every", log_every, low=0)
    if isinstance(snapshot_at, (int, np.integer)) or not hasattr(snapshot_at, "__iter__"):
        raise TypeError(f"{where}: snapshot_at must be a list of steps (e.g. [0, {steps}]), got {snapshot_at!r}")
    snapshot_at = sorted({check_int(where, "snapshot_at[]", s, low=0, high=steps + 1) for s in snapshot_at})
    check_int(where, "snapshot_n", snapshot_n, low=1)
    if log is not None and not callable(log):
        raise TypeError(f"{where}: log must be a function of one line of text, or None; got {type(log).__name__}")
    if getattr(generator, "latent_dim", None) is None:
        raise TypeError(f"{where}: the generator needs a latent_dim attribute (the size of z), "
                        f"got a {type(generator).__name__} without one")
    sample_real = _real_sampler(real)
    rng = as_rng(seed)
    snapshot_seed = int(rng.integers(2 ** 31))     # one fixed z for every snapshot
    dtype = _dtype_of(discriminator)
    opt_g = Adam(generator.parameters(), lr=lr, betas=betas)
    opt_d = Adam(discriminator.parameters(), lr=lr, betas=betas)
    generator.train()
    discriminator.train()
    history, start = GANHistory(), time.perf_counter()

    def snapshot(step):
        history.snapshots[step] = generate(generator, snapshot_n, seed=snapshot_seed)

    if 0 in snapshot_at:
        snapshot(0)
    for step in range(steps):
        if schedule == "cosine":
            for opt in (opt_g, opt_d):
                for group in opt.param_groups:
                    group["lr"] = warmup_cosine(step, steps, 0, lr)
        for _ in range(d_steps):
            x_real = Tensor(np.asarray(sample_real(batch_size, rng), dtype=dtype))
            z = Tensor(rng.standard_normal((batch_size, generator.latent_dim)).astype(dtype))
            fake = generator(z)
            # detach: this backward stops at the fake samples; G's gradient would be thrown away anyway
            real_logits, fake_logits = discriminator(x_real), discriminator(fake.detach())
            loss_d = discriminator_loss(real_logits, fake_logits)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        loss_g = generator_loss(discriminator(fake), loss)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

        history.steps.append(step + 1)
        history.d_loss.append(loss_d.item())
        history.g_loss.append(loss_g.item())
        with no_grad():
            history.d_real.append(float(F.sigmoid(real_logits).numpy().mean()))
            history.d_fake.append(float(F.sigmoid(fake_logits).numpy().mean()))
        if step + 1 in snapshot_at:
            snapshot(step + 1)
        if log is not None and log_every and (step + 1) % log_every == 0:
            log(f"step {step + 1}: D loss {history.d_loss[-1]:.3f}, G loss {history.g_loss[-1]:.3f}, "
                f"D(real) {history.d_real[-1]:.3f}, D(fake) {history.d_fake[-1]:.3f}")
    opt_d.zero_grad()      # the last G step left gradients in D's parameters
    history.seconds = time.perf_counter() - start
    return history
