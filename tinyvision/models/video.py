"""Video transformers: a clip as tokens in space and time, and four ways to let them attend.

A clip x is (B, T, C, H, W). Embedding (Bertasius et al. 2021, TimeSformer; Arnab et al. 2021, ViViT):
    frame-wise   each frame cut into N = (H/P)(W/P) patches, as the ViT does (PatchEmbed): (B, T, N, D)
    tubelet      a patch extended over t frames, a (C, t, P, P) block flattened and multiplied by one
                 weight (D, C, t, P, P) (a 3-D convolution with kernel = stride): (B, T/t, N, D)
    + pos_embed (1, 1, N, D), learned, the same for every frame
    + time_embed (1, T', 1, D), learned, starting at ZERO (TimeSformer's init), the same for every patch
The attention, one option (attention=):
    "space"       every frame on its own (B T, N, D), no time embedding; the frames' outputs are pooled
                  at the end. It cannot tell frame order: reversing a clip gives the same logits.
    "joint"       all T N tokens attend to each other (B, T N, D): (T N)^2 scores per layer and head.
    "divided"     TimeSformer's block: temporal attention over the same patch in every frame
                  ((B N), T, D), then spatial attention within each frame ((B T), N, D), each with its
                  residual, then the MLP: T N^2 + N T^2 scores. The temporal branch ends in a Linear
                  (temporal_fc) that starts at zero, so at initialisation the block is a ViT block per frame.
    "factorised"  ViViT's model 2: a spatial transformer per frame, its tokens averaged into one per frame
                  (B, T, D), + time_embed, then a temporal transformer over those T frame tokens.
Every variant ends with LayerNorm, the mean over its tokens, and a Linear head. With frame-wise
embedding (tubelet=1) and the time embedding at zero, no attention here knows which frame is which
(attention without positions is equivariant to permuting its tokens), so joint and divided attention
are ALSO blind to frame order until time_embed is learned (tests/test_video.py checks each of these).
A tubelet's weight differs per frame inside it, so tubelet embeddings see order within a tubelet.

attention_scores(attention, T, N) counts the query-key pairs per layer and head, the cost that grows.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops as F
from ..checks import check_choice, check_int, check_number
from ..nn import LayerNorm, Linear, Module, ModuleList, MultiHeadAttention, Parameter, TransformerBlock
from ..nn.init import as_rng, trunc_normal
from ..nn.layers import tensor_input
from .patches import PatchEmbed, check_patch_grid

__all__ = ["ATTENTIONS", "DividedBlock", "TubeletEmbed", "VideoTransformer", "attention_scores"]

ATTENTIONS = ("space", "joint", "divided", "factorised")


def attention_scores(attention: str, T: int, N: int) -> int:
    """Query-key pairs a layer scores (per head) for one clip of T frames of N patches."""
    attention = check_choice("attention_scores", "attention", attention, ATTENTIONS)
    T, N = check_int("attention_scores", "T", T, low=1), check_int("attention_scores", "N", N, low=1)
    return {"space": T * N * N, "joint": (T * N) ** 2, "divided": T * N * N + N * T * T,
            "factorised": T * N * N + T * T}[attention]


class TubeletEmbed(Module):
    """(B, T, C, H, W) -> (B, T/t, N, D): each t x P x P block of every channel, flattened in (C, t, P, P)
    order, times weight (D, C, t, P, P) reshaped to (D, C t P P), plus bias: Conv3d with kernel = stride."""

    def __init__(self, img_size: int, patch_size: int, tubelet: int, in_chans: int, embed_dim: int, *, seed):
        where = "TubeletEmbed"
        self.img_size = check_int(where, "img_size", img_size, low=1)
        self.patch_size = check_int(where, "patch_size", patch_size, low=1)
        self.tubelet = check_int(where, "tubelet", tubelet, low=1)
        self.in_chans = check_int(where, "in_chans", in_chans, low=1)
        self.embed_dim = check_int(where, "embed_dim", embed_dim, low=1)
        self.grid_size = check_patch_grid(self.img_size, self.img_size, self.patch_size, where)
        fan_in = self.in_chans * self.tubelet * self.patch_size ** 2
        rng = as_rng(seed)
        bound = 1 / math.sqrt(fan_in)                     # PyTorch's Conv3d default, as Conv2d's here
        shape = (self.embed_dim, self.in_chans, self.tubelet, self.patch_size, self.patch_size)
        self.weight = Parameter(rng.uniform(-bound, bound, shape).astype(np.float32))
        self.bias = Parameter(rng.uniform(-bound, bound, (self.embed_dim,)).astype(np.float32))

    def forward(self, x):
        x = tensor_input("TubeletEmbed", x)
        if x.ndim != 5 or x.shape[2] != self.in_chans or x.shape[3:] != (self.img_size, self.img_size):
            raise ValueError(f"TubeletEmbed: expected clips (B, T, {self.in_chans}, {self.img_size}, {self.img_size}), "
                             f"got shape {x.shape}")
        b, T, c, h, w = x.shape
        t, p = self.tubelet, self.patch_size
        if T % t:
            raise ValueError(f"TubeletEmbed: T={T} frames do not split into tubelets of {t}")
        gh, gw = self.grid_size
        x = F.reshape(x, (b, T // t, t, c, gh, p, gw, p))
        x = F.permute(x, (0, 1, 4, 6, 3, 2, 5, 7))               # (B, T/t, gh, gw, C, t, P, P)
        x = F.reshape(x, (b, T // t, gh * gw, c * t * p * p))
        w_mat = F.reshape(self.weight, (self.embed_dim, c * t * p * p))
        return F.linear(x, F.permute(w_mat, (1, 0)), self.bias)


class DividedBlock(Module):
    """TimeSformer's divided space-time block on x (B, T, N, D); see the module docstring."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, *, seed):
        rng = as_rng(seed)
        self.temporal_norm = LayerNorm(dim, eps=1e-6)
        self.temporal_attn = MultiHeadAttention(dim, num_heads, seed=rng)
        self.temporal_fc = Linear(dim, dim, seed=rng)
        self.temporal_fc.weight.data[...] = 0            # the temporal branch starts silent
        self.temporal_fc.bias.data[...] = 0
        self.spatial = TransformerBlock(dim, num_heads, mlp_ratio=mlp_ratio, seed=rng)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"DividedBlock: x must be tokens (B, T, N, D), got shape {x.shape}")
        b, T, n, d = x.shape
        xt = F.reshape(F.permute(x, (0, 2, 1, 3)), (b * n, T, d))                # one sequence per patch
        res = self.temporal_fc(self.temporal_attn(self.temporal_norm(xt)))
        x = x + F.permute(F.reshape(res, (b, n, T, d)), (0, 2, 1, 3))
        xs = self.spatial(F.reshape(x, (b * T, n, d)))                          # one sequence per frame
        return F.reshape(xs, (b, T, n, d))


class VideoTransformer(Module):
    """Clips (B, T, C, H, W) -> logits (B, num_classes), with one of ATTENTIONS (module docstring)."""

    def __init__(self, num_frames: int, img_size: int, patch_size: int, in_chans: int = 3, dim: int = 64,
                 depth: int = 2, num_heads: int = 4, num_classes: int = 2, attention: str = "divided",
                 tubelet: int = 1, mlp_ratio: float = 2.0, *, seed):
        where = "VideoTransformer"
        self.attention = check_choice(where, "attention", attention, ATTENTIONS)
        self.num_frames = check_int(where, "num_frames", num_frames, low=1)
        tubelet = check_int(where, "tubelet", tubelet, low=1)
        if self.num_frames % tubelet:
            raise ValueError(f"{where}: num_frames={num_frames} is not a multiple of tubelet={tubelet}")
        depth = check_int(where, "depth", depth, low=1)
        num_classes = check_int(where, "num_classes", num_classes, low=1)
        mlp_ratio = check_number(where, "mlp_ratio", mlp_ratio, low=0.0, low_open=True)
        rng = as_rng(seed)
        self.tubelet = tubelet
        if tubelet == 1:
            self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, dim, seed=rng)
        else:
            self.patch_embed = TubeletEmbed(img_size, patch_size, tubelet, in_chans, dim, seed=rng)
        self.img_size, self.in_chans = img_size, in_chans
        n = self.patch_embed.grid_size[0] * self.patch_embed.grid_size[1]
        self.pos_embed = Parameter(trunc_normal((1, 1, n, dim), std=0.02, seed=rng))
        self.time_embed = Parameter(np.zeros((1, self.num_frames // tubelet, 1, dim), np.float32))
        if self.attention == "divided":
            self.blocks = ModuleList([DividedBlock(dim, num_heads, mlp_ratio, seed=rng) for _ in range(depth)])
        else:
            self.blocks = ModuleList([TransformerBlock(dim, num_heads, mlp_ratio=mlp_ratio, seed=rng)
                                      for _ in range(depth)])
        if self.attention == "factorised":
            self.temporal_blocks = ModuleList([TransformerBlock(dim, num_heads, mlp_ratio=mlp_ratio, seed=rng)
                                               for _ in range(depth)])
        self.norm = LayerNorm(dim, eps=1e-6)
        self.head = Linear(dim, num_classes, seed=rng)

    def tokens(self, x):
        """(B, T', N, D): patches embedded, with positions, and times for "joint" and "divided" ("space" has
        none; "factorised" adds them to its frame tokens, after the spatial transformer)."""
        x = tensor_input("VideoTransformer", x)
        if x.ndim != 5 or x.shape[1] != self.num_frames or x.shape[2] != self.in_chans:
            raise ValueError(f"VideoTransformer: expected clips (B, {self.num_frames}, {self.in_chans}, H, W), "
                             f"got shape {x.shape}")
        b, T = x.shape[:2]
        if self.tubelet == 1:
            tok = self.patch_embed(F.reshape(x, (b * T,) + x.shape[2:]))           # (B T, N, D)
            tok = F.reshape(tok, (b, T) + tok.shape[1:])
        else:
            tok = self.patch_embed(x)
        tok = tok + self.pos_embed
        return tok + self.time_embed if self.attention in ("joint", "divided") else tok

    def forward(self, x):
        h = self.tokens(x)
        b, T, n, d = h.shape
        if self.attention == "divided":
            for block in self.blocks:
                h = block(h)
        elif self.attention == "joint":
            h = F.reshape(h, (b, T * n, d))
            for block in self.blocks:
                h = block(h)
        else:                                                   # space and factorised: frames alone first
            h = F.reshape(h, (b * T, n, d))
            for block in self.blocks:
                h = block(h)
            h = F.reshape(h, (b, T, n, d))
            if self.attention == "factorised":
                h = F.mean(h, axis=2) + F.reshape(self.time_embed, (1, T, d))     # one token per frame
                for block in self.temporal_blocks:
                    h = block(h)
        h = self.norm(h)
        pooled = F.mean(F.reshape(h, (b, -1, d)), axis=1)      # every token of the clip, averaged
        return self.head(pooled)
