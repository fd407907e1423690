"""Mixtures of 2-D Gaussians, the standard test of whether a GAN covers every mode, and the mode metrics.

A generator that learns only some modes of its data (mode collapse) can still fool a discriminator
sample by sample. On a mixture whose modes are known, collapse is counted directly. The protocol is
the one of VEEGAN (Srivastava et al. 2017, sec. 5.1) and PacGAN (Lin et al. 2018, sec. 5 and the
code of fjxmlzn/PacGAN, config.py and pacgan/extensions.py):

    ring_of_gaussians()   8 modes on a circle of radius 1, angles 2 pi k / 8, std 0.01 per axis
    grid_of_gaussians()   25 modes at {-4, -2, 0, 2, 4}^2, std 0.05 per axis
    every mode has the same weight; the protocol draws 2,500 generated samples.

mode_coverage(samples, mixture):
    distance of a sample x to mode k, in standard deviations (the Euclidean distance over std; every
    mode is isotropic):
        d_k(x) = sqrt( sum_axes (x - mu_k)^2 / std^2 )
    x is HIGH QUALITY when min_k d_k(x) < 3 (strictly, as the PacGAN code);
    a mode is COVERED when it is the nearest mode of at least one high-quality sample;
    high_quality = (high-quality samples) / (all samples).
A generator that puts all its mass on one mode scores 1 mode and up to 100% high quality; one that
spreads mass evenly around the ring covers all 8 modes with almost no high-quality samples. The two
numbers are read together.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checks import check_int, check_number
from ..nn.init import as_rng

__all__ = ["GaussianMixture2D", "grid_of_gaussians", "mode_coverage", "ring_of_gaussians"]


@dataclass(frozen=True)
class GaussianMixture2D:
    """An equal-weight mixture of K isotropic Gaussians in the plane.

    centers: (K, 2) float64, the modes mu_k.   std: the standard deviation of every mode, per axis.
    """

    name: str
    centers: np.ndarray
    std: float

    def __post_init__(self):
        centers = np.asarray(self.centers, dtype=np.float64)
        if centers.ndim != 2 or centers.shape[1] != 2 or len(centers) < 1:
            raise ValueError(f"GaussianMixture2D: centers must be (K, 2) with K >= 1, got shape {centers.shape}")
        object.__setattr__(self, "centers", centers)
        object.__setattr__(self, "std", check_number("GaussianMixture2D", "std", self.std, low=0.0, low_open=True))

    @property
    def num_modes(self) -> int:
        return len(self.centers)

    def sample(self, n: int, *, seed, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(points (n, 2) of `dtype`, mode index (n,) int64): a mode uniformly at random, then
        mu_k + std * N(0, I). seed: an int or a numpy Generator (which is advanced)."""
        n = check_int(f"{self.name}.sample", "n", n, low=0)
        rng = as_rng(seed)
        modes = rng.integers(0, self.num_modes, n)
        points = self.centers[modes] + self.std * rng.standard_normal((n, 2))
        return points.astype(dtype), modes

    def density(self, points) -> np.ndarray:
        """p(x) = (1/K) sum_k N(x; mu_k, std^2 I) for points (..., 2), in float64."""
        x = np.asarray(points, dtype=np.float64)
        if x.shape[-1:] != (2,):
            raise ValueError(f"{self.name}.density: points must be (..., 2), got shape {x.shape}")
        sq = ((x[..., None, :] - self.centers) ** 2).sum(-1) / self.std ** 2        # (..., K)
        return np.exp(-0.5 * sq).mean(-1) / (2 * np.pi * self.std ** 2)


def ring_of_gaussians(modes: int = 8, radius: float = 1.0, std: float = 0.01) -> GaussianMixture2D:
    """`modes` Gaussians at radius * (cos 2 pi k / modes, sin 2 pi k / modes). Defaults: PacGAN's ring."""
    modes = check_int("ring_of_gaussians", "modes", modes, low=1)
    radius = check_number("ring_of_gaussians", "radius", radius, low=0.0, low_open=True)
    angles = 2 * np.pi * np.arange(modes) / modes
    return GaussianMixture2D("ring_of_gaussians", radius * np.stack([np.cos(angles), np.sin(angles)], 1), std)


def grid_of_gaussians(side: int = 5, spacing: float = 2.0, std: float = 0.05) -> GaussianMixture2D:
    """side x side Gaussians on a square grid centred on 0, `spacing` apart. Defaults: PacGAN's grid,
    modes at {-4, -2, 0, 2, 4}^2."""
    side = check_int("grid_of_gaussians", "side", side, low=1)
    spacing = check_number("grid_of_gaussians", "spacing", spacing, low=0.0, low_open=True)
    axis = spacing * (np.arange(side) - (side - 1) / 2)
    xx, yy = np.meshgrid(axis, axis, indexing="ij")
    return GaussianMixture2D("grid_of_gaussians", np.stack([xx.ravel(), yy.ravel()], 1), std)


def mode_coverage(samples, mixture: GaussianMixture2D, max_std: float = 3.0) -> dict:
    """How many modes the samples cover, and which share of them is high quality (see the module text).

    samples: (N, 2). Returns {"modes_covered": int, "high_quality": float in [0, 1],
    "counts": high-quality samples per mode (K,) as a list, "num_samples": N}.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2 or len(x) == 0:
        raise ValueError(f"mode_coverage: samples must be (N, 2) with N >= 1, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("mode_coverage: samples contain NaN or inf (a diverged generator?)")
    max_std = check_number("mode_coverage", "max_std", max_std, low=0.0, low_open=True)
    # (N, K) distances in standard deviations; a mode is the nearest one by this distance
    dist = np.sqrt(((x[:, None, :] - mixture.centers[None]) ** 2).sum(-1)) / mixture.std
    nearest, d_min = dist.argmin(1), dist.min(1)
    good = d_min < max_std
    counts = np.bincount(nearest[good], minlength=mixture.num_modes)
    return {"modes_covered": int((counts > 0).sum()), "high_quality": float(good.mean()),
            "counts": counts.tolist(), "num_samples": len(x)}
