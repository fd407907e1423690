"""Denoisers: networks eps_theta(x_t, t) that estimate the noise in x_t, and the loss that trains them.

Training (Ho et al. 2020, Algorithm 1, "L_simple"): draw x_0 from the data, t uniformly from 0..T-1 and
eps ~ N(0, I), form x_t = q_sample(x_0, t, eps), and regress the noise:
    L = mean over the batch and the coordinates of (eps - eps_theta(x_t, t))^2
or, with prediction="x0" or "v", the network's output regresses x_0, or v = sqrt(abar_t) eps -
sqrt(1 - abar_t) x_0 (Salimans & Ho 2022), instead; the samplers still take eps, which as_denoiser
recovers from the output (Schedule.eps_from_x0, eps_from_v). Same information, different weighting
over t: eps is easy to predict at high noise and x_0 at low noise; v is between.
The network is told t through a sinusoidal embedding (Vaswani et al. 2017, sec. 3.5):
    emb(t) = [sin(t w_0), ..., sin(t w_{h-1}), cos(t w_0), ..., cos(t w_{h-1})],  w_k = 10000^(-k / h),  h = dim / 2
(diffusers' get_timestep_embedding with downscale_freq_shift = 0; DDPM's own code divides by h - 1.)

MLPDenoiser, for points in the plane (tiny-diffusion's shape): the input coordinates and the time each
get a sinusoidal embedding (the coordinates scaled by 25, so that fine detail of the data is visible
to the network), concatenated, then residual blocks x + GELU(Linear(x)) and a Linear to the data's size.
"""
from __future__ import annotations

import numpy as np

from .. import ops as F
from ..checks import check_choice, check_int, check_number
from ..nn import Linear, Module, ModuleList
from ..nn.init import as_rng
from ..tensor import Tensor, no_grad
from .schedules import Schedule

__all__ = ["MLPDenoiser", "PREDICTIONS", "as_denoiser", "diffusion_loss", "sinusoidal_embedding"]

PREDICTIONS = ("eps", "x0", "v")


def sinusoidal_embedding(values, dim: int, max_period: float = 10000.0) -> np.ndarray:
    """(N,) numbers -> (N, dim) float32: sin then cos of values * w_k, w_k = max_period^(-k / (dim / 2))."""
    dim = check_int("sinusoidal_embedding", "dim", dim, low=2)
    max_period = check_number("sinusoidal_embedding", "max_period", max_period, low=0.0, low_open=True)
    if dim % 2:
        raise ValueError(f"sinusoidal_embedding: dim must be even (a sin and a cos per frequency), got {dim}")
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    w = max_period ** (-np.arange(dim // 2) / (dim // 2))
    angles = values[:, None] * w[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


class MLPDenoiser(Module):
    """eps_theta(x, t) for x (B, data_dim) and integer steps t (B,): embeddings, residual GELU blocks, Linear."""

    def __init__(self, data_dim: int = 2, hidden: int = 128, depth: int = 3, emb_dim: int = 32,
                 input_scale: float = 25.0, *, seed):
        self.data_dim = check_int("MLPDenoiser", "data_dim", data_dim, low=1)
        hidden = check_int("MLPDenoiser", "hidden", hidden, low=1)
        depth = check_int("MLPDenoiser", "depth", depth, low=0)
        self.emb_dim = check_int("MLPDenoiser", "emb_dim", emb_dim, low=2)
        if self.emb_dim % 2:
            raise ValueError(f"MLPDenoiser: emb_dim must be even, got {emb_dim}")
        self.input_scale = check_number("MLPDenoiser", "input_scale", input_scale, low=0.0, low_open=True)
        rng = as_rng(seed)
        self.inp = Linear(self.emb_dim * (self.data_dim + 1), hidden, seed=rng)
        self.blocks = ModuleList([Linear(hidden, hidden, seed=rng) for _ in range(depth)])
        self.out = Linear(hidden, self.data_dim, seed=rng)

    def forward(self, x, t):
        x = x if isinstance(x, Tensor) else Tensor(np.asarray(x, np.float32))
        t = np.asarray(t)
        if x.ndim != 2 or x.shape[1] != self.data_dim or t.shape != (x.shape[0],):
            raise ValueError(f"MLPDenoiser: x must be (B, {self.data_dim}) and t (B,), got {x.shape} and {t.shape}")
        coords = [sinusoidal_embedding(x.numpy()[:, j] * self.input_scale, self.emb_dim) for j in range(self.data_dim)]
        h = Tensor(np.concatenate(coords + [sinusoidal_embedding(t, self.emb_dim)], axis=1).astype(self.inp.weight.dtype),
                   device=self.inp.weight.device)
        h = F.gelu(self.inp(h))
        for block in self.blocks:
            h = h + F.gelu(block(h))
        return self.out(h)


def diffusion_loss(model, schedule: Schedule, x0, rng, y=None, p_uncond: float = 0.0, prediction: str = "eps") -> Tensor:
    """L_simple on a batch x_0 (B, ...): one t and one eps per example; returns the mean squared error.

    y: the batch's conditions (labels or vectors) for a conditional model; each row is replaced by "no
    condition" with probability p_uncond (model.drop_condition), so that one network learns both the
    conditional and the unconditional model that classifier-free guidance combines (Ho & Salimans 2022).
    prediction: what the output regresses: "eps", "x0" or "v" (the module docstring); the same in as_denoiser."""
    p_uncond = check_number("diffusion_loss", "p_uncond", p_uncond, low=0.0, high=1.0)
    prediction = check_choice("diffusion_loss", "prediction", prediction, PREDICTIONS)
    x0 = np.asarray(x0, dtype=np.float64)
    t = rng.integers(0, schedule.T, size=len(x0))
    eps = rng.standard_normal(x0.shape)
    xt = schedule.q_sample(x0, t, eps)
    if y is None:
        if p_uncond > 0:
            raise ValueError("diffusion_loss: p_uncond drops conditions, but no condition y was given")
        pred = model(Tensor(xt.astype(np.float32)), t)
    else:
        if len(y) != len(x0):
            raise ValueError(f"diffusion_loss: y has {len(y)} conditions for {len(x0)} examples")
        if p_uncond > 0:
            y = model.drop_condition(y, rng.random(len(x0)) < p_uncond)
        pred = model(Tensor(xt.astype(np.float32)), t, y)
    if pred.shape != x0.shape:
        raise ValueError(f"diffusion_loss: the model returned shape {pred.shape}, expected the data's {x0.shape}")
    if prediction == "eps":
        target = eps
    else:
        target = x0 if prediction == "x0" else schedule.v_target(x0, t, eps)
    diff = pred - Tensor(target.astype(np.float32), device=pred.device)
    return F.mean(diff * diff)


def as_denoiser(model, y=None, prediction: str = "eps", schedule: Schedule | None = None):
    """The sampler's view of a trained model: denoise(x, t) -> eps_hat as float64, t one int for the batch;
    y: the condition of every row (labels or vectors), or None for the model's unconditional prediction.
    prediction: what the model was trained to output; "x0" and "v" are turned into eps with `schedule`."""
    prediction = check_choice("as_denoiser", "prediction", prediction, PREDICTIONS)
    if prediction != "eps" and schedule is None:
        raise ValueError(f"as_denoiser: prediction={prediction!r} needs the schedule to turn the output into eps")

    def denoise(x, t):
        xt = np.asarray(x, np.float64)
        x = Tensor(xt.astype(np.float32))
        with no_grad():
            out = model(x, np.full(len(x), t)) if y is None else model(x, np.full(len(x), t), y)
        out = out.numpy().astype(np.float64)
        if prediction == "x0":
            return schedule.eps_from_x0(xt, t, out)
        return schedule.eps_from_v(xt, t, out) if prediction == "v" else out
    return denoise
