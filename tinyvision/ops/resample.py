"""Resampling an image grid: one interpolation matrix per axis, and the upsample op built on them.

Every resampling mode here is linear in the input and acts on rows and columns separately, so along
one axis it is a matrix M (n_out, n_in), out = M @ in, and on an image y = M_h x M_w^T. The matrices
follow torch.nn.functional.interpolate(align_corners=False, antialias=False): output pixel i samples the
input at  s = (i + 0.5) in / out - 0.5  (pixel centres mapped onto pixel centres).
    nearest:   input pixel floor(i in / out), weight 1
    bilinear:  s clamped at 0; weights 1 - t and t on floor(s) and the next pixel (clamped at the edge)
    bicubic:   Keys' cubic convolution kernel, a = -0.75, over four neighbours, indices clamped
models/pos_embed.py resamples position tables with the same matrices.
"""
from __future__ import annotations

import numpy as np

from ..backend import xp_of
from ..checks import check_choice, check_int
from ..tensor import Tensor
from ._common import tensors_for
from .conv import _MAX_VALUES, _check_image, pair

__all__ = ["interpolation_matrix", "upsample"]

MODES = ("nearest", "bilinear", "bicubic")


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys (1981) cubic convolution weights for the 4 neighbours at offsets -1, 0, 1, 2 from floor(s)."""
    def near(d):   # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):    # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def interpolation_matrix(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """(n_out, n_in) matrix M with out = M @ in along one axis (float64); mode "nearest", "bilinear" or "bicubic"."""
    n_in = check_int("interpolation_matrix", "n_in", n_in, low=1)
    n_out = check_int("interpolation_matrix", "n_out", n_out, low=1)
    mode = check_choice("interpolation_matrix", "mode", mode, MODES)
    m = np.zeros((n_out, n_in))
    if mode == "nearest":                       # input index floor(i in / out), in integers: exact
        m[np.arange(n_out), (np.arange(n_out) * n_in) // n_out] = 1.0
        return m
    s = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    if mode == "bilinear":
        s = np.maximum(s, 0.0)
        i0 = np.floor(s).astype(int)
        t = s - i0
        i1 = np.minimum(i0 + 1, n_in - 1)
        rows = np.arange(n_out)
        np.add.at(m, (rows, i0), 1 - t)
        np.add.at(m, (rows, i1), t)
    else:  # bicubic
        i0 = np.floor(s).astype(int)
        w = _cubic_weights(s - i0)
        for j, offset in enumerate((-1, 0, 1, 2)):
            np.add.at(m, (np.arange(n_out), np.clip(i0 + offset, 0, n_in - 1)), w[:, j])
    return m


def upsample(x, scale_factor=2, mode: str = "nearest") -> Tensor:
    """Enlarge each image by whole factors (f_h, f_w): x (B, C, H, W) -> (B, C, f_h H, f_w W).

    Both modes are linear in x and act on rows and columns separately, so each is two small matrices
    (interpolation_matrix above), A_h (f_h H, H) and A_w (f_w W, W):
        y[b, c] = A_h x[b, c] A_w^T                 dL/dx[b, c] = A_h^T g[b, c] A_w
    nearest copies each pixel into an f_h x f_w block; bilinear blends the 2 x 2 nearest input pixels,
    PyTorch's align_corners=False. A decoder often follows nearest upsampling with a 3x3 conv instead of
    using a strided conv_transpose2d, which paints overlapping kernels unevenly (checkerboard artefacts,
    Odena et al. 2016).
    """
    (x,) = tensors_for("upsample", x)
    _check_image("upsample", "x", x)
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f'upsample: mode must be "nearest" or "bilinear", got {mode!r}')
    fh, fw = pair("upsample", "scale_factor", scale_factor, 1)
    b, c, h, w = x.shape
    if b * c * h * w * fh * fw > _MAX_VALUES:
        raise ValueError(f"upsample: x {x.shape} times {(fh, fw)} would hold {b * c * h * w * fh * fw:.3g} values: "
                         "too large to allocate")
    xp = xp_of(x.data)
    # an empty axis stays empty: a (0, 0) matrix
    a_h = xp.asarray(interpolation_matrix(h, fh * h, mode) if h else np.zeros((0, 0)), dtype=x.dtype)
    a_w = xp.asarray(interpolation_matrix(w, fw * w, mode) if w else np.zeros((0, 0)), dtype=x.dtype)
    y = a_h @ (x.data @ a_w.T)                       # (f_h H, H) @ (B, C, H, f_w W) -> (B, C, f_h H, f_w W)
    return Tensor.from_op(y, (x,), lambda g: (a_h.T @ (g @ a_w),), "upsample")
