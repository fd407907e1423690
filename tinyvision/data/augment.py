"""Data augmentation: more training images for free, by transformations that keep the label.

A ViT has no built-in translation equivariance (a CNN's sliding kernel gives it one for free),
so it must see objects in many places to learn that position does not change the class.
Random shifts teach exactly that, which is why augmentation matters most for ViTs at small
data (Touvron et al. 2021, DeiT, sec. 6 and Table 8).
"""
from __future__ import annotations

import numpy as np

__all__ = ["random_shift"]


def random_shift(x: np.ndarray, rng: np.random.Generator, max_shift: int = 1, fill: float | None = None) -> np.ndarray:
    """Shift each image (B, C, H, W) by its own random (dy, dx) in [-max_shift, max_shift].

    Uncovered pixels take `fill` (default: the batch minimum, the background of normalised digits).
    Done as one padded copy and one gather, no Python loop over images.
    """
    if x.ndim != 4:
        raise ValueError(f"random_shift: x must be (B, C, H, W), got shape {x.shape}")
    if max_shift == 0:
        return x
    b, _, h, w = x.shape
    k = max_shift
    padded = np.pad(x, ((0, 0), (0, 0), (k, k), (k, k)), constant_values=x.min() if fill is None else fill)
    dy, dx = rng.integers(0, 2 * k + 1, size=(2, b))
    rows = dy[:, None] + np.arange(h)[None, :]                      # (B, H)
    cols = dx[:, None] + np.arange(w)[None, :]                      # (B, W)
    batch = np.arange(b)[:, None, None]
    # padded[b, :, rows[b, i], cols[b, j]] for every b, i, j; the channel axis comes out last
    out = padded.transpose(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
