"""Data augmentation: more training images for free, by transformations that keep the label.

A ViT has no built-in translation equivariance (a CNN's sliding kernel gives it one for free),
so it must see objects in many places to learn that position does not change the class.
Random shifts teach exactly that, which is why augmentation matters most for ViTs at small
data (Touvron et al. 2021, DeiT, sec. 6 and Table 8).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["color_jitter", "multi_crop", "random_resized_crop", "random_shift"]


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


def random_resized_crop(x: np.ndarray, rng: np.random.Generator, out_size: int, scale=(0.4, 1.0),
                        ratio=(3 / 4, 4 / 3), flip: bool = True) -> np.ndarray:
    """Per image (B, C, H, W): a random box covering `scale` of the area with aspect `ratio`, resized to
    out_size x out_size (bilinear, pixel centres aligned), mirrored left-right with probability 1/2.

    The views of DINO's multi-crop (Caron et al. 2021, sec. 3.1): large crops are global views, small
    ones local views. A box that does not fit after 10 draws falls back to the whole picture."""
    if x.ndim != 4:
        raise ValueError(f"random_resized_crop: x must be (B, C, H, W), got shape {x.shape}")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"random_resized_crop: scale must be (lo, hi) with 0 < lo <= hi <= 1, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"random_resized_crop: ratio must be (lo, hi) with 0 < lo <= hi, got {ratio}")
    if isinstance(out_size, bool) or not isinstance(out_size, (int, np.integer)) or out_size < 1:
        raise ValueError(f"random_resized_crop: out_size must be an int >= 1 (pixels), got {out_size!r}")
    b, c, h, w = x.shape
    out = np.empty((b, c, out_size, out_size), dtype=x.dtype)
    centres = (np.arange(out_size) + 0.5) / out_size
    for i in range(b):
        for _ in range(10):
            area = h * w * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            cw, ch = math.sqrt(area * aspect), math.sqrt(area / aspect)
            if cw <= w and ch <= h:
                break
        else:
            cw, ch = float(w), float(h)
        x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
        ys, xs = y0 + centres * ch - 0.5, x0 + centres * cw - 0.5          # source coordinates of pixel centres
        out[i] = _bilinear(x[i], ys, xs)
        if flip and rng.random() < 0.5:
            out[i] = out[i][:, :, ::-1]
    return out


def _bilinear(image, ys, xs):
    """image (C, H, W) sampled at the grid ys x xs (pixel coordinates, clamped to the picture)."""
    h, w = image.shape[1:]
    ys, xs = np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = image[:, y0][:, :, x0] * (1 - wx) + image[:, y0][:, :, x1] * wx
    bottom = image[:, y1][:, :, x0] * (1 - wx) + image[:, y1][:, :, x1] * wx
    return top * (1 - wy) + bottom * wy


def color_jitter(x: np.ndarray, rng: np.random.Generator, brightness: float = 0.4) -> np.ndarray:
    """Per image: its colour channels in a random order and its brightness scaled by U(1 - b, 1 + b),
    clipped to [0, 1]. On the procedural scenes this changes an object's colour and keeps its shape."""
    if x.ndim != 4:
        raise ValueError(f"color_jitter: x must be (B, C, H, W), got shape {x.shape}")
    if not 0 <= brightness < 1:
        raise ValueError(f"color_jitter: brightness must be in [0, 1) (scales 1 - b .. 1 + b stay positive), "
                         f"got {brightness!r}")
    order = np.argsort(rng.random((x.shape[0], x.shape[1])), axis=1)
    out = np.take_along_axis(x, order[:, :, None, None], axis=1)
    scale = rng.uniform(1 - brightness, 1 + brightness, (x.shape[0], 1, 1, 1)).astype(x.dtype)
    return np.clip(out * scale, 0, 1)


def multi_crop(x: np.ndarray, rng: np.random.Generator, n_local: int = 4, global_size: int | None = None,
               local_size: int | None = None, global_scale=(0.4, 1.0), local_scale=(0.1, 0.4)) -> list[np.ndarray]:
    """DINO's views: [global, global, local * n_local], each colour-jittered; sizes default to the
    picture's side and half of it."""
    side = x.shape[-1]
    g, l_ = global_size or side, local_size or side // 2
    views = [random_resized_crop(x, rng, g, global_scale) for _ in range(2)]
    views += [random_resized_crop(x, rng, l_, local_scale) for _ in range(n_local)]
    return [color_jitter(v, rng) for v in views]
