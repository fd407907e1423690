"""The Vision Transformer (Dosovitskiy et al. 2021), read top to bottom like its Figure 1.

    tokens = PatchEmbed(image)                     (B, N, D)      eq. 1: x_p E
    tokens = [cls; tokens] + pos_embed              (B, 1+N, D)    eq. 1: + E_pos
    tokens = blocks(tokens)                         (B, 1+N, D)    eq. 2-3: pre-norm transformer
    feature = norm(tokens)[:, 0]  (or mean of patches)  (B, D)   eq. 4
    logits = head(feature)                          (B, classes)

Names follow timm (`patch_embed`, `cls_token`, `pos_embed`, `blocks`, `norm`, `head`) so every
state-dict key maps one-to-one onto timm's vision_transformer.py. Defaults here are tiny (a CPU
lesson trains them in minutes); timm's ViT-B/16 is img 224, patch 16, D 768, depth 12, 12 heads.

Init, as timm's default (init="timm"): pos_embed trunc_normal(0.02), cls_token normal(1e-6), every
Linear in the blocks and head trunc_normal(0.02) with zero bias, LayerNorm weight 1 bias 0.
The 0.02 suits widths near 768 (about 0.55 / sqrt(D)); at the tiny widths of a CPU lesson it
makes every Linear far smaller than 1 / sqrt(D), and training can stall. init="xavier" draws the
Linear weights xavier_uniform instead (Glorot & Bengio 2010; timm's "jax" init mode does the same).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ops as F
from ..nn import LayerNorm, Linear, Module, ModuleList, Parameter, TransformerBlock
from ..backend import to_device
from ..nn.init import as_rng, trunc_normal, xavier_uniform
from ..tensor import Tensor
from .patches import PatchEmbed, check_patch_grid
from .pos_embed import resample_pos_embed, sincos_2d

__all__ = ["ViT", "ViTOutput"]


@dataclass
class ViTOutput:
    """Everything a lesson may want to plot: logits, per-block tokens and attention maps."""
    logits: Tensor
    tokens: list = field(default_factory=list)       # after each block: (B, T, D) Tensors
    attention: list = field(default_factory=list)    # per block: (B, h, T, T) raw arrays


class ViT(Module):
    def __init__(self, img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=64, depth=4, num_heads=4,
                 mlp_ratio=4.0, qkv_bias=True, class_token=True, global_pool="token", pos_embed="learn",
                 dropout=0.0, eps=1e-6, init="timm", *, seed):
        if global_pool not in ("token", "avg"):
            raise ValueError(f'ViT: global_pool must be "token" or "avg", got {global_pool!r}')
        if global_pool == "token" and not class_token:
            raise ValueError('ViT: global_pool="token" reads the class token; use class_token=True or global_pool="avg"')
        if init not in ("timm", "xavier"):
            raise ValueError(f'ViT: init must be "timm" or "xavier", got {init!r}')
        if pos_embed not in ("learn", "sincos", "none"):
            raise ValueError(f'ViT: pos_embed must be "learn", "sincos" or "none", got {pos_embed!r}')
        rng = as_rng(seed)
        self.num_classes, self.embed_dim, self.global_pool = num_classes, embed_dim, global_pool
        self.num_prefix_tokens = 1 if class_token else 0
        self.pos_embed_kind = pos_embed

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, seed=rng)
        if class_token:
            self.cls_token = Parameter(rng.standard_normal((1, 1, embed_dim)).astype(np.float32) * 1e-6)
        n_tokens = self.patch_embed.num_patches + self.num_prefix_tokens
        if pos_embed == "learn":
            self.pos_embed = Parameter(trunc_normal((1, n_tokens, embed_dim), std=0.02, seed=rng))
        elif pos_embed == "sincos":
            # fixed: a plain Tensor, not a Parameter, so optimizers and state dicts leave it alone
            table = sincos_2d(*self.patch_embed.grid_size, embed_dim)
            prefix = np.zeros((self.num_prefix_tokens, embed_dim))
            self.fixed_pos_embed = Tensor(np.concatenate([prefix, table])[None].astype(np.float32))
        self.blocks = ModuleList([TransformerBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, dropout, eps, seed=rng)
                                  for _ in range(depth)])
        self.norm = LayerNorm(embed_dim, eps=eps)
        self.head = Linear(embed_dim, num_classes, seed=rng)
        for m in self.modules():
            if isinstance(m, Linear):
                w = (trunc_normal(m.weight.shape, std=0.02, seed=rng) if init == "timm"
                     else xavier_uniform(m.weight.shape, seed=rng))
                m.weight.data = to_device(w, m.weight.device)      # drawn on the host, kept on the model's device
                if m.bias is not None:
                    m.bias.data = np.zeros_like(m.bias.data)

    # --- the forward pass, in the order of the paper's figure ---------------------------------------
    def _check_input(self, x: Tensor):
        pe = self.patch_embed
        if x.ndim != 4 or x.shape[1] != pe.in_chans:
            raise ValueError(f"ViT: expected images (B, {pe.in_chans}, H, W), got shape {x.shape}")
        grid = check_patch_grid(x.shape[2], x.shape[3], pe.patch_size)
        if self.pos_embed_kind != "none" and grid != pe.grid_size:
            raise ValueError(f"ViT: a {x.shape[2]}x{x.shape[3]} image gives a {grid[0]}x{grid[1]} patch grid, but the "
                             f"position table is for {pe.grid_size[0]}x{pe.grid_size[1]} "
                             f"({pe.img_size[0]}x{pe.img_size[1]} images); call "
                             f"model.set_image_size(({x.shape[2]}, {x.shape[3]})) to resample it")

    def embed(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> input tokens (B, prefix + N, D): patches, class token, positions."""
        self._check_input(x)
        tokens = self.patch_embed(x)                                            # (B, N, D)
        if self.num_prefix_tokens:
            cls = F.mul(self.cls_token, np.ones((x.shape[0], 1, 1), dtype=tokens.dtype))  # (B, 1, D)
            tokens = F.concatenate([cls, tokens], axis=1)                       # (B, 1+N, D)
        if self.pos_embed_kind == "learn":
            tokens = tokens + self.pos_embed
        elif self.pos_embed_kind == "sincos":
            tokens = tokens + self.fixed_pos_embed
        return tokens

    def forward(self, x: Tensor, return_all: bool = False):
        """Logits (B, classes); with return_all=True a ViTOutput with every block's tokens and attention."""
        tokens = self.embed(x)
        out = ViTOutput(logits=None)
        for block in self.blocks:
            tokens = block(tokens, keep_attention=return_all)
            if return_all:
                out.tokens.append(tokens)
                out.attention.append(block.attn.last_attention)
        tokens = self.norm(tokens)
        if self.global_pool == "token":
            feature = tokens[:, 0]                                             # the class token
        else:
            feature = F.mean(tokens[:, self.num_prefix_tokens:], axis=1)       # mean of patch tokens
        out.logits = self.head(feature)
        return out if return_all else out.logits

    # --- changing resolution --------------------------------------------------------------------------
    def set_image_size(self, img_size, interpolation: str = "bicubic") -> None:
        """Accept images of a new size: resample the position table to the new patch grid.

        Learned tables are interpolated (prefix tokens kept); sin-cos tables are recomputed.
        """
        pe = self.patch_embed
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        new_grid = check_patch_grid(*img_size, pe.patch_size)
        if self.pos_embed_kind == "learn":
            table = resample_pos_embed(self.pos_embed.numpy(), new_grid, pe.grid_size, self.num_prefix_tokens,
                                       interpolation)
            self.pos_embed.data = to_device(table, self.pos_embed.device)
        elif self.pos_embed_kind == "sincos":
            prefix = np.zeros((self.num_prefix_tokens, self.embed_dim))
            table = np.concatenate([prefix, sincos_2d(*new_grid, self.embed_dim)])[None].astype(np.float32)
            self.fixed_pos_embed = Tensor(table, device=self.fixed_pos_embed.device)
        pe.img_size, pe.grid_size, pe.num_patches = img_size, new_grid, new_grid[0] * new_grid[1]

    def extra_repr(self):
        pe = self.patch_embed
        return (f"img={pe.img_size}, patch={pe.patch_size}, tokens={pe.num_patches}+{self.num_prefix_tokens}, "
                f"D={self.embed_dim}, depth={len(self.blocks)}, pool={self.global_pool!r}, pos={self.pos_embed_kind!r}")
