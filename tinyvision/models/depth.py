"""Monocular depth: a ViT that reads one picture and paints a depth map, and the losses that let it
learn depth up to the scale a single camera cannot know.

Model (a DPT-style readout, cut to its core): the ViT's patch tokens (B, N, D) -> LayerNorm -> Linear to
P*P values per token -> the tokens reassembled into a (B, H, W) map (unpatchify), read as log depth.

Losses, with d_i = (predicted log depth - true log depth) at pixel i, n pixels per picture:

    scale-invariant log loss (Eigen et al. 2014, eq. 4)
        D(lambda) = (1/n) sum_i d_i^2 - (lambda / n^2) (sum_i d_i)^2
    lambda = 1: exactly invariant to scaling the prediction (a scale is a constant added to every d_i),
    and equal to (1 / 2n^2) sum_ij (d_i - d_j)^2: only depth ratios inside the picture count.
    lambda = 0.5 (Eigen's training choice) keeps part of the absolute scale, so it is NOT invariant.

    scale-and-shift-invariant loss (MiDaS, Ranftl et al. 2020), in disparity (1 / depth) space
        (s, t) = argmin sum_i (s p_i + t - d*_i)^2      (closed form: 2x2 normal equations)
        L = (1 / 2n) sum_i (s p_i + t - d*_i)^2
    the prediction p is aligned to the truth d* before it is scored: any affine map of p gives the same
    loss, so models trained on data of unknown scale and shift (many cameras) can be mixed.
"""
from __future__ import annotations

import numpy as np

from .. import ops as F
from ..checks import check_number
from ..nn import LayerNorm, Linear, Module
from ..nn.init import as_rng
from ..tensor import Tensor
from .patches import unpatchify
from .vit import ViT

__all__ = ["DepthViT", "scale_and_shift", "scale_invariant_log_loss", "ssi_loss"]


class DepthViT(Module):
    """forward(images (B, C, H, W)) -> log depth (B, H, W)."""

    def __init__(self, img_size=32, patch_size=4, in_chans=3, dim=64, depth=3, heads=4, mlp_ratio=2.0, *, seed):
        rng = as_rng(seed)
        self.encoder = ViT(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=dim, depth=depth,
                           num_heads=heads, mlp_ratio=mlp_ratio, class_token=False, global_pool="avg", seed=rng)
        self.encoder.head = self.encoder.fc_norm = None          # every patch token is read; nothing is pooled
        self.norm = LayerNorm(dim)
        self.patch_size = patch_size
        self.readout = Linear(dim, patch_size * patch_size, seed=rng)

    def forward(self, images) -> Tensor:
        x = self.encoder.embed(images if isinstance(images, Tensor) else Tensor(np.asarray(images, np.float32)))
        for block in self.encoder.blocks:
            x = block(x)
        values = self.readout(self.norm(x))                                  # (B, N, P*P)
        grid = self.encoder.patch_embed.grid_size
        return unpatchify(values, self.patch_size, 1, tuple(grid))[:, 0]     # (B, H, W)


def _pair(where, pred, target, name):
    """pred as a Tensor (B, n) and target as a float64 array (B, n), after checking they are maps of one shape."""
    p = pred if isinstance(pred, Tensor) else Tensor(np.asarray(pred, dtype=np.float32))
    t = np.asarray(target.numpy() if isinstance(target, Tensor) else target, dtype=np.float64)
    if p.ndim < 2 or tuple(t.shape) != tuple(p.shape):
        raise ValueError(f"{where}: the prediction {tuple(p.shape)} and {name} {tuple(t.shape)} must be maps (B, ...) "
                         f"of one shape")
    return p.reshape(p.shape[0], -1), t.reshape(t.shape[0], -1)


def scale_invariant_log_loss(pred_log_depth, depth, lam: float = 0.5) -> Tensor:
    """Eigen's D(lambda) per picture, averaged over the batch (module docstring); depth in metres (> 0)."""
    lam = check_number("scale_invariant_log_loss", "lam", lam, low=0.0, high=1.0)
    p, t = _pair("scale_invariant_log_loss", pred_log_depth, depth, "depth")
    if not np.all(t > 0):
        raise ValueError("scale_invariant_log_loss: depth must be > 0 everywhere (its log is taken)")
    d = p - np.log(t).astype(p.dtype)
    n = p.shape[1]
    per_picture = F.mean(d * d, axis=1) - lam * F.pow(F.sum(d, axis=1) * (1.0 / n), 2)
    return F.mean(per_picture)


def scale_and_shift(pred, target) -> tuple:
    """The least-squares (s, t) per picture aligning pred to target: s pred + t ~ target. Tensors (B,) that
    carry gradients to pred (as in MiDaS); target is a constant.

    MiDaS solves the 2x2 normal equations as they stand; here they are solved centred,
        s = sum (p - mean p)(y - mean y) / sum (p - mean p)^2,   t = mean y - s mean p,
    the same solution without the cancellation that float32 suffers when p's offset dwarfs its spread."""
    p, y = _pair("scale_and_shift", pred, target, "target")
    return _align(p, y)


def _align(p, y):
    pc = p - F.mean(p, axis=1, keepdims=True)
    yc = y - y.mean(1, keepdims=True)
    var = F.sum(pc * pc, axis=1)
    if np.any(var.numpy() <= 0):
        raise ValueError("scale_and_shift: a prediction is constant over its picture, so no scale can be fitted "
                         "(the 2x2 normal equations are singular)")
    s = F.sum(pc * yc.astype(p.dtype), axis=1) / var
    return s, Tensor(y.mean(1).astype(p.dtype)) - s * F.mean(p, axis=1)


def ssi_loss(pred_disparity, target_disparity) -> Tensor:
    """MiDaS's data term: (1 / 2n) sum (s p + t - d*)^2 per picture after the closed-form alignment, averaged."""
    p, y = _pair("ssi_loss", pred_disparity, target_disparity, "target_disparity")
    s, t = _align(p, y)
    r = p * F.reshape(s, (-1, 1)) + F.reshape(t, (-1, 1)) - y.astype(p.dtype)
    return F.mean(F.mean(r * r, axis=1) * 0.5)
