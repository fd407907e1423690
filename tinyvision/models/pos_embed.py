"""Position embeddings for patch tokens: learned, fixed 2-D sin-cos, and resampling to a new grid.

Attention is permutation-equivariant: shuffle the patch tokens and the outputs shuffle the same
way, so without positions a model cannot tell a picture from its shuffled patches. ViT adds a
vector per token slot, z_i = x_i + e_i.

- Learned (ViT's default): a (1, T, D) table, trunc_normal(std 0.02), T = N (+ 1 for the class token).
- 2-D sin-cos (fixed; MAE, He et al. 2022): a quarter of the D channels each for sin(y w_k), cos(y w_k),
  sin(x w_k), cos(x w_k), with w_k = 1 / 10000^(k / (D/4)), k = 0 .. D/4 - 1.
- Resampling (ViT sec. 3.2, "fine-tuning at higher resolution"): the table of a gh x gw grid is
  viewed as a D-channel image and interpolated to the new grid; prefix tokens (class, registers)
  have no position on the grid and are kept bit-for-bit.

Interpolation follows torch.nn.functional.interpolate(align_corners=False, antialias=False), one
(out x in) matrix per axis applied separably: ops/resample.py, interpolation_matrix, which ops.upsample
shares.
"""
from __future__ import annotations

import math

import numpy as np

from ..checks import check_choice, check_int, check_int_pair, check_number, is_int
from ..ops.resample import interpolation_matrix   # one (out x in) matrix per axis; also ops.upsample's

__all__ = ["interpolation_matrix", "resample_grid", "resample_pos_embed", "sincos_2d"]


_MODES = ("bilinear", "bicubic")


def _check_size(where: str, name: str, size) -> tuple:
    """A grid size: a pair (h, w) of ints >= 1 (an int alone is refused: grids here are never guessed square)."""
    if is_int(size):
        raise TypeError(f"{where}: {name} must be a pair (h, w) of ints >= 1, got the int {size!r}; "
                        f"pass ({size}, {size})")
    return check_int_pair(where, name, size, 1)


def sincos_2d(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> np.ndarray:
    """(gh*gw, D) fixed embeddings in raster order; D must be a multiple of 4, temperature > 0."""
    grid_h = check_int("sincos_2d", "grid_h", grid_h, low=1)
    grid_w = check_int("sincos_2d", "grid_w", grid_w, low=1)
    dim = check_int("sincos_2d", "dim", dim, low=4)
    if dim % 4:
        raise ValueError(f"sincos_2d: dim must be a multiple of 4 (sin/cos for each of y and x), got {dim}")
    temperature = check_number("sincos_2d", "temperature", temperature, low=0.0, low_open=True)
    k = np.arange(dim // 4, dtype=np.float64)
    omega = 1.0 / temperature ** (k / (dim // 4))                       # (D/4,)
    y, x = np.meshgrid(np.arange(grid_h, dtype=np.float64), np.arange(grid_w, dtype=np.float64), indexing="ij")
    y, x = y.reshape(-1, 1) * omega, x.reshape(-1, 1) * omega          # (N, D/4)
    return np.concatenate([np.sin(y), np.cos(y), np.sin(x), np.cos(x)], axis=1)


def resample_grid(grid: np.ndarray, new_size: tuple, mode: str = "bicubic") -> np.ndarray:
    """(gh, gw, D) -> (new_h, new_w, D) by separable interpolation; the same size is the identity."""
    grid = np.asarray(grid)
    if grid.ndim != 3:
        raise ValueError(f"resample_grid: grid must be (gh, gw, D), got shape {grid.shape}")
    new_size = _check_size("resample_grid", "new_size", new_size)
    mode = check_choice("resample_grid", "mode", mode, _MODES)
    gh, gw, _ = grid.shape
    if (gh, gw) == new_size:
        return grid.copy()
    mh = interpolation_matrix(gh, new_size[0], mode)
    mw = interpolation_matrix(gw, new_size[1], mode)
    return np.einsum("ih,hwd,jw->ijd", mh, grid.astype(np.float64), mw)


def resample_pos_embed(pos_embed, new_size: tuple, old_size: tuple | None = None, num_prefix_tokens: int = 1,
                       interpolation: str = "bicubic") -> np.ndarray:
    """Resample a (1, prefix + gh*gw, D) position table to a new (h, w) grid.

    old_size defaults to a square grid. A rectangular old grid must be given: a (2, 8) grid has
    as many tokens as a (4, 4) one, and treating it as square would silently scramble it (the
    early-return bug of timm PR #2737). Returns a new array of the input's dtype.
    """
    where = "resample_pos_embed"
    pos = np.asarray(pos_embed)
    if pos.ndim != 3 or pos.shape[0] != 1:
        raise ValueError(f"{where}: pos_embed must be (1, T, D), got shape {pos.shape}")
    new_size = _check_size(where, "new_size", new_size)
    old_size = None if old_size is None else _check_size(where, "old_size", old_size)
    num_prefix_tokens = check_int(where, "num_prefix_tokens", num_prefix_tokens, low=0)
    if num_prefix_tokens > pos.shape[1]:
        raise ValueError(f"{where}: num_prefix_tokens={num_prefix_tokens} is more than the {pos.shape[1]} tokens of "
                         f"pos_embed {pos.shape}")
    interpolation = check_choice(where, "interpolation", interpolation, _MODES)
    prefix, grid_tokens = pos[:, :num_prefix_tokens], pos[0, num_prefix_tokens:]
    n = grid_tokens.shape[0]
    if n == 0:
        raise ValueError(f"{where}: pos_embed {pos.shape} has no grid tokens after its {num_prefix_tokens} "
                         "prefix tokens")
    if old_size is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"resample_pos_embed: {n} grid tokens are not a square; pass old_size=(gh, gw)")
        old_size = (side, side)
    if old_size[0] * old_size[1] != n:
        raise ValueError(f"resample_pos_embed: old_size {tuple(old_size)} has {old_size[0] * old_size[1]} cells "
                         f"but the table has {n} grid tokens (after {num_prefix_tokens} prefix tokens)")
    grid = grid_tokens.reshape(old_size[0], old_size[1], -1)
    new = resample_grid(grid, tuple(new_size), interpolation).reshape(1, -1, pos.shape[-1])
    return np.concatenate([prefix, new.astype(pos.dtype)], axis=1)
