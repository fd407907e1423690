"""Diffusion, the process and its samplers (Ho et al. 2020; Song et al. 2021; Ho & Salimans 2022).

Read in this order:
    schedules.py   the forward process: beta schedules, abar, SNR, q(x_t | x_0), the posterior
    sampling.py    the reverse process: DDPM, DDIM (and its inversion), classifier-free guidance
    denoisers.py   the networks that estimate the noise, the sinusoidal time embedding, L_simple
    unet.py        image denoisers: a small U-Net, and a DiT whose ViT blocks are conditioned by adaLN-Zero
    video.py       a DiT for clips: frames alone, or with divided space-time attention (lesson 09b)
Everything here is NumPy float64 math, checked against closed forms and published values in
tests/test_diffusion.py; the denoising networks that supply eps_hat are models of their own.
"""
from .denoisers import PREDICTIONS, MLPDenoiser, as_denoiser, diffusion_loss, sinusoidal_embedding
from .sampling import ddim_invert, ddim_step, ddim_timesteps, ddpm_step, guided_denoiser, sample
from .schedules import KINDS, Schedule, make_schedule
from .unet import DiT, UNet
from .video import VideoDiT

__all__ = ["DiT", "VideoDiT", "KINDS", "MLPDenoiser", "PREDICTIONS", "UNet", "Schedule", "as_denoiser", "diffusion_loss", "sinusoidal_embedding", "ddim_invert", "ddim_step", "ddim_timesteps", "ddpm_step", "guided_denoiser",
           "make_schedule", "sample"]
