"""A denoiser for short clips: the DiT of unet.py, frame by frame or with attention across time.

x_t is a clip (B, T, C, H, W); every frame is cut into N patches (PatchEmbed, shared), given fixed 2-D
sin-cos positions and a time-of-frame embedding (sinusoidal in the frame index), and the tokens
(B, T, N, D) go through blocks conditioned on the diffusion step by adaLN-Zero, as in DiT:
    temporal="none"     each frame is denoised on its own ((B T), N, D): the image DiT applied per frame.
                        Nothing ties frame 1 to frame 0, so a clip is T unrelated pictures.
    temporal="divided"  before each DiT block, TimeSformer's temporal attention: every patch attends to
                        the same patch in the other frames ((B N), T, D), x = x + fc(attn(LN(x))), fc
                        starting at zero (so at initialisation the model is the per-frame one).
model(x, t, alone=True) runs a "divided" model with its temporal attention switched off: every frame on
its own, an image model. Training with some batches alone and some not (Ho et al. 2022 train their video
model on images this way) gives one network that generates both ways: the cleanest ablation, since the
per-frame and the space-time sampler share every spatial weight.
The output has the clip's shape (eps, x0 or v, whichever diffusion_loss trained it on). Lesson 09b trains both on clips of a moving shape and
measures whether the object keeps its shape and colour from frame to frame.
"""
from __future__ import annotations

import numpy as np

from .. import ops as F
from ..checks import check_choice, check_int
from ..models.patches import PatchEmbed, unpatchify
from ..models.pos_embed import sincos_2d
from ..nn import LayerNorm, Linear, Module, ModuleList, MultiHeadAttention
from ..nn.init import as_rng
from ..tensor import Tensor
from .denoisers import sinusoidal_embedding
from .unet import _Conditioning, _DiTBlock, _zero_final_layers

__all__ = ["VideoDiT"]


class _TemporalMix(Module):
    """x + fc(attn(LN(x))) over the frames of each patch; x (B, T, N, D); fc starts at zero."""

    def __init__(self, dim: int, heads: int, *, seed):
        rng = as_rng(seed)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.attn = MultiHeadAttention(dim, heads, seed=rng)
        self.fc = Linear(dim, dim, seed=rng)
        self.fc.weight.data[...] = 0
        self.fc.bias.data[...] = 0

    def forward(self, x):
        b, T, n, d = x.shape
        xt = F.reshape(F.permute(x, (0, 2, 1, 3)), (b * n, T, d))
        res = self.fc(self.attn(self.norm(xt)))
        return x + F.permute(F.reshape(res, (b, n, T, d)), (0, 2, 1, 3))


class VideoDiT(Module):
    """A denoiser for clips (B, T, C, H, W); temporal="none" (per frame) or "divided" (module docstring).
    img_size: an int (square frames) or (H, W)."""

    def __init__(self, num_frames: int, img_size: int, patch_size: int = 4, in_chans: int = 3, dim: int = 48,
                 depth: int = 2, heads: int = 4, temporal: str = "divided", *, seed):
        where = "VideoDiT"
        self.temporal = check_choice(where, "temporal", temporal, ("none", "divided"))
        self.num_frames = check_int(where, "num_frames", num_frames, low=1)
        depth = check_int(where, "depth", depth, low=1)
        rng = as_rng(seed)
        self.patch = PatchEmbed(img_size, patch_size, in_chans, dim, seed=rng)
        pos = sincos_2d(*self.patch.grid_size, dim)[None, None]                       # (1, 1, N, D)
        frames = sinusoidal_embedding(np.arange(self.num_frames), dim)[None, :, None]  # (1, T, 1, D)
        self.pos = Tensor((pos + frames).astype(np.float32))
        self.cond = _Conditioning(dim, None, seed=rng, where=where)
        self.blocks = ModuleList([_DiTBlock(dim, heads, seed=rng) for _ in range(depth)])
        if self.temporal == "divided":
            self.mix = ModuleList([_TemporalMix(dim, heads, seed=rng) for _ in range(depth)])
        self.final_ada, self.final = _zero_final_layers(dim, patch_size * patch_size * in_chans, rng)
        self.dim, self.patch_size, self.in_chans = dim, patch_size, in_chans

    def forward(self, x, t, y=None, *, alone: bool = False):
        if not isinstance(alone, (bool, np.bool_)):
            raise TypeError(f"VideoDiT: alone must be True or False, got {type(alone).__name__}")
        if y is not None:
            raise ValueError("VideoDiT: the model is unconditional; it takes no condition y")
        if x.ndim != 5 or x.shape[1] != self.num_frames or x.shape[2] != self.in_chans:
            raise ValueError(f"VideoDiT: x must be clips (B, {self.num_frames}, {self.in_chans}, H, W), got shape {x.shape}")
        b, T = x.shape[:2]
        if np.shape(t) != (b,):
            raise ValueError(f"VideoDiT: t must hold one step per clip, shape ({b},), got {np.shape(t)}")
        c = self.cond(t)                                                       # (B, D)
        c_frames = F.reshape(F.concatenate([F.reshape(c, (b, 1, self.dim))] * T, axis=1), (b * T, self.dim))
        h = self.patch(F.reshape(x, (b * T,) + x.shape[2:]))                    # (B T, N, D)
        n = h.shape[1]
        h = F.reshape(h, (b, T, n, self.dim)) + self.pos
        for k, block in enumerate(self.blocks):
            if self.temporal == "divided" and not alone:
                h = self.mix[k](h)
            h = F.reshape(block(F.reshape(h, (b * T, n, self.dim)), c_frames), (b, T, n, self.dim))
        mods = F.reshape(self.final_ada(F.silu(c_frames)), (b * T, 2, 1, self.dim))
        h = F.layer_norm(F.reshape(h, (b * T, n, self.dim)), None, None, 1e-6) * (1 + mods[:, 1]) + mods[:, 0]
        out = unpatchify(self.final(h), self.patch_size, self.in_chans, self.patch.grid_size)   # (B T, C, H, W)
        return F.reshape(out, x.shape)
