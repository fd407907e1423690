"""The Vision Transformer (Dosovitskiy et al. 2021), read top to bottom like its Figure 1.

    tokens = PatchEmbed(image)                     (B, N, D)      eq. 1: x_p E
    tokens = [cls; tokens] + pos_embed              (B, 1+N, D)    eq. 1: + E_pos
    tokens = blocks(tokens)                         (B, 1+N, D)    eq. 2-3: pre-norm transformer
    feature = norm(tokens)[:, 0]                    (B, D)         eq. 4, global_pool="token"
    feature = fc_norm(mean(tokens[:, 1:]))          (B, D)         global_pool="avg"
    logits = head(feature)                          (B, classes)

Where the final LayerNorm sits follows timm. With the class token (global_pool="token") it is
`norm`, applied to every token before the class token is read. With average pooling it is
`fc_norm`, applied once to the pooled vector, and `norm` is absent (timm's nn.Identity):
    feature = LayerNorm(1/N sum_i tokens_i)   not   1/N sum_i LayerNorm(tokens_i).
The two differ (a mean of normalised tokens is not normalised), so a timm checkpoint only gives
timm's logits if the norm is in timm's place. `fc_norm` overrides the choice as timm's argument
does: None means "fc_norm exactly when global_pool is avg".

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
from ..checks import check_bool, check_choice, check_int, check_int_pair, check_number, check_probability
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
    """The ViT of timm's vision_transformer.py, same parameter names and math, for the settings below.

    img_size an int or (H, W); patch_size P an int dividing both; embed_dim D divisible by
    num_heads; depth >= 0 blocks; global_pool "token" (class token) or "avg" (mean of patch
    tokens); fc_norm None (timm's default: True exactly for "avg"), True or False. Every argument
    is checked here, so a wrong one is named at construction, not deep inside the first forward.
    """

    def __init__(self, img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=64, depth=4, num_heads=4,
                 mlp_ratio=4.0, qkv_bias=True, class_token=True, global_pool="token", pos_embed="learn",
                 dropout=0.0, eps=1e-6, init="timm", fc_norm=None, *, seed):
        img_size = check_int_pair("ViT", "img_size", img_size, low=1)
        patch_size = check_int("ViT", "patch_size", patch_size, low=1)
        in_chans = check_int("ViT", "in_chans", in_chans, low=1)
        num_classes = check_int("ViT", "num_classes", num_classes, low=1)
        embed_dim = check_int("ViT", "embed_dim", embed_dim, low=1)
        depth = check_int("ViT", "depth", depth, low=0)
        num_heads = check_int("ViT", "num_heads", num_heads, low=1)
        mlp_ratio = check_number("ViT", "mlp_ratio", mlp_ratio, low=0.0, low_open=True)
        qkv_bias = check_bool("ViT", "qkv_bias", qkv_bias)
        class_token = check_bool("ViT", "class_token", class_token)
        global_pool = check_choice("ViT", "global_pool", global_pool, ("token", "avg"))
        pos_embed = check_choice("ViT", "pos_embed", pos_embed, ("learn", "sincos", "none"))
        dropout = check_probability("ViT", "dropout", dropout)
        eps = check_number("ViT", "eps", eps, low=0.0, low_open=True)
        init = check_choice("ViT", "init", init, ("timm", "xavier"))
        use_fc_norm = global_pool == "avg" if fc_norm is None else check_bool("ViT", "fc_norm", fc_norm)
        if global_pool == "token" and not class_token:
            raise ValueError('ViT: global_pool="token" reads the class token; use class_token=True or global_pool="avg"')
        if embed_dim % num_heads:
            raise ValueError(f"ViT: embed_dim={embed_dim} is not divisible by num_heads={num_heads}; each head "
                             f"takes embed_dim / num_heads channels (try num_heads in "
                             f"{[h for h in range(1, embed_dim + 1) if embed_dim % h == 0][:8]})")
        for side, name in zip(img_size, ("height", "width")):
            if side % patch_size:
                raise ValueError(f"ViT: patch_size={patch_size} does not divide the image {name} {side} "
                                 f"(img_size={img_size}); expected a patch size that divides both sides")
        if int(embed_dim * mlp_ratio) < 1:
            raise ValueError(f"ViT: mlp_ratio={mlp_ratio} gives an MLP of int({embed_dim} * {mlp_ratio}) = 0 "
                             f"hidden units; expected mlp_ratio >= 1 / embed_dim = {1 / embed_dim:g}")
        if pos_embed == "sincos" and embed_dim % 4:
            raise ValueError(f'ViT: pos_embed="sincos" needs embed_dim divisible by 4 (sin and cos of y and x), '
                             f"got embed_dim={embed_dim}")
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
        # timm's layout: one final LayerNorm, before pooling (`norm`) or after it (`fc_norm`); the other is None
        self.norm = None if use_fc_norm else LayerNorm(embed_dim, eps=eps)
        self.fc_norm = LayerNorm(embed_dim, eps=eps) if use_fc_norm else None
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
        if self.norm is not None:
            tokens = self.norm(tokens)                                         # every token, before pooling
        if self.global_pool == "token":
            feature = tokens[:, 0]                                             # the class token (B, D)
        else:
            feature = F.mean(tokens[:, self.num_prefix_tokens:], axis=1)       # mean of patch tokens (B, D)
        if self.fc_norm is not None:
            feature = self.fc_norm(feature)                                    # the pooled vector, after pooling
        out.logits = self.head(feature)
        return out if return_all else out.logits

    # --- changing resolution --------------------------------------------------------------------------
    def set_image_size(self, img_size, interpolation: str = "bicubic") -> None:
        """Accept images of a new size: resample the position table to the new patch grid.

        Learned tables are interpolated (prefix tokens kept); sin-cos tables are recomputed.
        """
        pe = self.patch_embed
        img_size = check_int_pair("ViT.set_image_size", "img_size", img_size, low=1)
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
                f"D={self.embed_dim}, depth={len(self.blocks)}, pool={self.global_pool!r}, pos={self.pos_embed_kind!r}, "
                f"final norm={'fc_norm' if self.fc_norm is not None else 'norm'}")
