"""Noise schedules: how much signal is left after t steps of adding noise (Ho et al. 2020, sec. 2).

The forward process adds a little Gaussian noise at each of T steps, beta_t the variance added at step t:
    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
and composes in closed form (a sum of independent Gaussians is Gaussian):
    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),    alpha_t = 1 - beta_t,  abar_t = prod_{s<=t} alpha_s
so x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, eps ~ N(0, I), in one step (q_sample).
SNR_t = abar_t / (1 - abar_t): the signal-to-noise ratio left at step t.

Indices run t = 0 .. T-1 (the code's convention, as in the reference repos): abar[0] = 1 - beta[0].
Sampling starts from pure noise N(0, I), which is only right if abar at the last step is ~0; every
schedule here is checked for it (tests/test_diffusion.py), and the one that does not reach it
(scaled_linear, Stable Diffusion's) says so in its docstring.

The posterior, one step back given x_0 (eq. 6-7), what a denoiser is trained to imitate:
    q(x_{t-1} | x_t, x_0) = N(mu_post, var_post I)
    mu_post = beta_t sqrt(abar_{t-1}) / (1 - abar_t) x_0 + (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t) x_t
    var_post = beta_t (1 - abar_{t-1}) / (1 - abar_t)                 (abar_{-1} = 1, so var_post[0] = 0)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..checks import check_choice, check_int, check_number

__all__ = ["KINDS", "Schedule", "make_schedule"]

KINDS = ("linear", "cosine", "scaled_linear")


@dataclass(frozen=True)
class Schedule:
    """A schedule's arrays, float64, each (T,), indexed by t = 0 .. T-1 (see the module docstring)."""
    betas: np.ndarray

    @property
    def T(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.betas

    @property
    def alpha_bar(self) -> np.ndarray:
        return np.cumprod(self.alphas)

    @property
    def alpha_bar_prev(self) -> np.ndarray:
        """abar_{t-1}, with abar_{-1} = 1 (nothing added before the first step)."""
        return np.concatenate([[1.0], self.alpha_bar[:-1]])

    @property
    def snr(self) -> np.ndarray:
        return self.alpha_bar / (1.0 - self.alpha_bar)

    @property
    def posterior_variance(self) -> np.ndarray:
        """var_post = beta_t (1 - abar_{t-1}) / (1 - abar_t); 0 at t = 0."""
        return self.betas * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)

    def posterior_mean(self, x0, xt, t):
        """mu_post(x_0, x_t) at step t (an int, or an int array broadcast against the leading axis)."""
        t, ab, ab_prev, beta = self._at(t, xt)
        return (beta * np.sqrt(ab_prev) / (1 - ab)) * x0 + ((1 - ab_prev) * np.sqrt(1 - beta) / (1 - ab)) * xt

    def q_sample(self, x0, t, eps):
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps: t noising steps at once."""
        _, ab, _, _ = self._at(t, x0)
        return np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps

    def x0_from_eps(self, xt, t, eps):
        """The x_0 that x_t and eps imply: (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        _, ab, _, _ = self._at(t, xt)
        return (xt - np.sqrt(1 - ab) * eps) / np.sqrt(ab)

    def eps_from_x0(self, xt, t, x0):
        _, ab, _, _ = self._at(t, xt)
        return (xt - np.sqrt(ab) * x0) / np.sqrt(1 - ab)

    def v_target(self, x0, t, eps):
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022), the v-prediction target."""
        _, ab, _, _ = self._at(t, x0)
        return np.sqrt(ab) * eps - np.sqrt(1 - ab) * x0

    def eps_from_v(self, xt, t, v):
        """The eps that x_t and v imply. With a = sqrt(abar_t), s = sqrt(1 - abar_t), a^2 + s^2 = 1:
        x_t = a x_0 + s eps and v = a eps - s x_0 give eps = s x_t + a v (and x_0 = a x_t - s v)."""
        _, ab, _, _ = self._at(t, xt)
        return np.sqrt(1 - ab) * xt + np.sqrt(ab) * v

    def _at(self, t, like):
        """(t, abar_t, abar_{t-1}, beta_t), the three shaped to broadcast over `like` (B, ...) when t is per example."""
        t = np.asarray(t)
        if t.dtype.kind not in "iu" or t.size == 0 or t.min() < 0 or t.max() >= self.T:
            raise ValueError(f"Schedule: t must be integer steps in 0..{self.T - 1}, got {t!r}"[:200])
        shape = t.shape + (1,) * (np.ndim(like) - t.ndim) if t.ndim else ()
        pick = [a[t].reshape(shape) for a in (self.alpha_bar, self.alpha_bar_prev, self.betas)]
        return (t, *pick)


def make_schedule(kind: str = "linear", T: int = 1000, *, beta_start: float | None = None,
                  beta_end: float | None = None, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """A noise schedule of T steps.

    linear (Ho et al. 2020; the 1000 / T scaling is improved-diffusion's get_named_beta_schedule, Nichol &
        Dhariwal 2021): betas = linspace(1e-4, 0.02, T) scaled by 1000 / T at both ends, so that any
        T adds about the noise of DDPM's T = 1000 (abar_T = 4.0e-5 at T = 1000, 7.7e-6 at T = 50). Unscaled,
        T = 50 would leave abar_T = 0.603: 78 % of the signal's scale, yet sampling starts from N(0, I).
    cosine (Nichol & Dhariwal 2021, eq. 17): abar(t) = f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) pi / 2),
        at T + 1 points; beta_t = 1 - abar_t / abar_{t-1}, capped at max_beta = 0.999 (which only the last
        step reaches). s = 0.008 keeps the first betas from being too small for 8-bit pixels.
    scaled_linear (Stable Diffusion / latent diffusion): betas = linspace(sqrt(0.00085), sqrt(0.012), T)^2.
        It does NOT reach pure noise: abar_T = 0.0047 at T = 1000 (a non-zero terminal SNR; Lin et al. 2024).
    """
    kind = check_choice("make_schedule", "kind", kind, KINDS)
    T = check_int("make_schedule", "T", T, low=1)
    if kind == "cosine":
        if beta_start is not None or beta_end is not None:
            raise ValueError("make_schedule: the cosine schedule has no beta_start / beta_end (it is set by s and max_beta)")
        s = check_number("make_schedule", "s", s, low=0.0)
        max_beta = check_number("make_schedule", "max_beta", max_beta, low=0.0, high=1.0, low_open=True)
        steps = np.arange(T + 1, dtype=np.float64)
        f = np.cos(((steps / T + s) / (1 + s)) * math.pi / 2) ** 2
        abar = f / f[0]
        betas = np.clip(1 - abar[1:] / abar[:-1], 0.0, max_beta)
        return Schedule(betas)
    default = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012)}[kind]
    lo = check_number("make_schedule", "beta_start", default[0] if beta_start is None else beta_start, low=0.0)
    hi = check_number("make_schedule", "beta_end", default[1] if beta_end is None else beta_end, low=0.0)
    if lo > hi:
        raise ValueError(f"make_schedule: beta_start {lo} is above beta_end {hi}; noise is added in growing steps")
    if kind == "linear":
        scale = 1000 / T
        betas = np.linspace(lo * scale, hi * scale, T)
    else:
        betas = np.linspace(math.sqrt(lo), math.sqrt(hi), T) ** 2
    if betas.max() >= 1:
        raise ValueError(f"make_schedule: {kind} with T={T} gives beta up to {betas.max():.3g}; a beta >= 1 erases "
                         "the signal in one step (and 1 - beta <= 0 makes sqrt(alpha) undefined): use more steps")
    return Schedule(betas)
