"""Running the process backwards: DDPM ancestral sampling, DDIM, DDIM inversion, classifier-free guidance.

Every sampler takes `denoise(x, t) -> eps_hat`, the model's estimate of the noise in x at step t (an
int; x a float64 array (B, ...)), and works in NumPy float64; the model may be a network, an oracle
(tests), or a guided pair (guided_denoiser). With eps_hat, x_0 is estimated and optionally clipped to
the data range (both reference repos clip to [-1, 1] before taking the mean):
    x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)

DDPM (Ho et al. 2020, Algorithm 2), every step t = T-1 .. 0:
    x_{t-1} = mu_post(x0_hat, x_t) + sigma_t z,   sigma_t^2 = var_post ("small") or beta_t ("large"),
    no noise at the last step (t = 0).
DDIM (Song et al. 2021, eq. 12), from step t to an earlier step s (any subsequence of the steps):
    sigma = eta sqrt((1 - abar_t / abar_s) (1 - abar_s) / (1 - abar_t))
    x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z
    eta = 0: deterministic; eta = 1 between consecutive steps: exactly DDPM's step with var_post.
    The last step goes to s = -1 with abar_{-1} = 1, i.e. returns x0_hat.
DDIM inversion: the deterministic step run the other way, from s up to t, with eps_hat at the current
    step (an approximation for a learned model, exact for an oracle):
    x_t = sqrt(abar_t) x0_hat(x_s) + sqrt(1 - abar_t) eps_hat(x_s, s)
"""
from __future__ import annotations

import numpy as np

from ..checks import check_choice, check_int, check_number
from .schedules import Schedule

__all__ = ["ddim_invert", "ddim_step", "ddim_timesteps", "ddpm_step", "guided_denoiser", "sample"]


def ddim_timesteps(T: int, steps: int, offset: int = 0) -> list:
    """The "leading" spacing of diffusers: steps evenly spaced by T // steps from `offset`, last first.
    T = 1000, steps = 10: [900, 800, ..., 0]; offset 1 with 5 steps: [801, 601, 401, 201, 1]."""
    T, steps = check_int("ddim_timesteps", "T", T, low=1), check_int("ddim_timesteps", "steps", steps, low=1)
    offset = check_int("ddim_timesteps", "offset", offset, low=0)
    if steps > T:
        raise ValueError(f"ddim_timesteps: steps={steps} is more than the T={T} steps of the process")
    ts = np.arange(steps) * (T // steps) + offset
    if ts[-1] >= T:
        raise ValueError(f"ddim_timesteps: offset {offset} pushes the last step to {ts[-1]}, past T - 1 = {T - 1}")
    return [int(t) for t in ts[::-1]]


def _x0_hat(schedule, x, t, eps, clip):
    x0 = schedule.x0_from_eps(x, t, eps)
    return x0 if clip is None else np.clip(x0, -clip, clip)


def ddpm_step(schedule: Schedule, x, t: int, eps, rng, clip: float | None = None, variance: str = "small"):
    """x_{t-1} from x_t (see the module docstring); variance "small" (var_post) or "large" (beta_t);
    no noise is added at t = 0."""
    variance = check_choice("ddpm_step", "variance", variance, ("small", "large"))
    t = check_int("ddpm_step", "t", t, low=0)
    if t > 0 and rng is None:
        raise ValueError("ddpm_step: every step but the last draws noise; pass rng")
    x0 = _x0_hat(schedule, x, t, eps, clip)
    mean = schedule.posterior_mean(x0, x, t)
    if t == 0:
        return mean
    var = schedule.posterior_variance[t] if variance == "small" else schedule.betas[t]
    return mean + np.sqrt(var) * rng.standard_normal(np.shape(x))


def ddim_step(schedule: Schedule, x, t: int, s: int, eps, eta: float = 0.0, rng=None, clip: float | None = None,
              clipped_eps: bool = False):
    """x_s from x_t, s < t (s = -1: the end, x0_hat); eta scales the noise (0 deterministic).

    clipped_eps: after clipping x0_hat, recompute the noise from it, eps = (x_t - sqrt(abar_t) x0_hat)
    / sqrt(1 - abar_t), so that the step's two terms agree (diffusers' use_clipped_model_output; off
    by default, as there). Off, a clipped x0_hat with the unclipped eps points the step at an x_s the
    model never predicted; with strong guidance, whose eps overshoots, that breaks the samples
    (lesson 08 measures it)."""
    eta = check_number("ddim_step", "eta", eta, low=0.0)
    if clipped_eps and clip is None:
        raise ValueError("ddim_step: clipped_eps=True recomputes eps from a clipped x0_hat; pass clip (e.g. 1.0)")
    if not -1 <= s < t:
        raise ValueError(f"ddim_step: the next step s={s} must be below t={t} (and >= -1)")
    x0 = _x0_hat(schedule, x, t, eps, clip)
    if clipped_eps:
        eps = schedule.eps_from_x0(x, t, x0)
    ab_t = schedule.alpha_bar[t]
    ab_s = schedule.alpha_bar[s] if s >= 0 else 1.0
    sigma = eta * np.sqrt((1 - ab_t / ab_s) * (1 - ab_s) / (1 - ab_t))
    out = np.sqrt(ab_s) * x0 + np.sqrt(max(1 - ab_s - sigma ** 2, 0.0)) * eps
    if sigma > 0:
        if rng is None:
            raise ValueError("ddim_step: eta > 0 draws noise; pass rng")
        out = out + sigma * rng.standard_normal(np.shape(x))
    return out


def sample(denoise, schedule: Schedule, shape, rng, sampler: str = "ddpm", steps: int | None = None,
           eta: float = 0.0, clip: float | None = None, x_T=None, variance: str = "small", clipped_eps: bool = False):
    """Draw x_0 from x_T ~ N(0, I) (or the given x_T): "ddpm" through all T steps, "ddim" through
    `steps` of them (ddim_timesteps, default all T). clip: x0_hat clipped to [-clip, clip] at every
    step (None: not); clipped_eps: see ddim_step (DDPM's step uses x0_hat alone, so needs no such fix)."""
    sampler = check_choice("sample", "sampler", sampler, ("ddpm", "ddim"))
    if sampler == "ddpm" and steps is not None:
        raise ValueError("sample: DDPM takes every one of the T steps; `steps` is for sampler='ddim'")
    if x_T is None:
        if rng is None:
            raise ValueError("sample: x_T ~ N(0, I) is drawn from rng; pass rng (or x_T)")
        x = rng.standard_normal(shape)
    else:
        x = np.array(x_T, dtype=np.float64)
        wanted = tuple(int(n) for n in np.atleast_1d(shape))
        if x.shape != wanted:
            raise ValueError(f"sample: x_T has shape {x.shape}, expected {wanted}")

    def eps_at(x, t):
        eps = np.asarray(denoise(x, t))
        if eps.shape != x.shape:
            raise ValueError(f"sample: denoise(x, t={t}) returned shape {eps.shape}, expected x's shape {x.shape}")
        return eps
    if sampler == "ddpm":
        for t in range(schedule.T - 1, -1, -1):
            x = ddpm_step(schedule, x, t, eps_at(x, t), rng, clip, variance)
        return x
    ts = ddim_timesteps(schedule.T, schedule.T if steps is None else steps)
    for t, s in zip(ts, ts[1:] + [-1]):
        x = ddim_step(schedule, x, t, s, eps_at(x, t), eta, rng, clip, clipped_eps)
    return x


def ddim_invert(denoise, schedule: Schedule, x0, steps: int | None = None):
    """Deterministic DDIM run from x_0 up to the last of `steps` steps: the x_T that DDIM (eta = 0) maps
    back to x_0 (exactly with an oracle denoiser; approximately with a learned one)."""
    ts = ddim_timesteps(schedule.T, schedule.T if steps is None else steps)[::-1]          # ascending
    x = np.array(x0, dtype=np.float64)
    x0_hat, eps = x, None
    for i, t in enumerate(ts):
        if i > 0:
            eps = denoise(x, ts[i - 1])
            x0_hat = schedule.x0_from_eps(x, ts[i - 1], eps)
        else:
            eps = denoise(x, t)       # at x_0 itself: the noise direction the model sees at the first step
        x = np.sqrt(schedule.alpha_bar[t]) * x0_hat + np.sqrt(1 - schedule.alpha_bar[t]) * eps
    return x


def guided_denoiser(denoise_cond, denoise_uncond, w: float):
    """Classifier-free guidance (Ho & Salimans 2022): eps = eps_u + w (eps_c - eps_u).
    w = 0 is the unconditional model, w = 1 the conditional one, w > 1 pushes past it. (lucidrains'
    cond_scale is this w; the paper's w is ours minus 1: eps = (1 + w) eps_c - w eps_u.)"""
    w = check_number("guided_denoiser", "w", w)

    def denoise(x, t):
        eps_u = denoise_uncond(x, t)
        return eps_u + w * (denoise_cond(x, t) - eps_u)
    return denoise
