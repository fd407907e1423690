"""Image denoisers: a small U-Net (Ronneberger et al. 2015, as DDPM uses it) and a DiT (Peebles & Xie 2023).

Both map (x_t (B, C, H, W), t (B,), optional condition y) to eps_hat (B, C, H, W). The time step enters
as a sinusoidal embedding passed through a 2-layer MLP (SiLU) to a vector c of width D; a class label
y (B,) adds a learned embedding to c (class num_classes is the "no label" slot that classifier-free
guidance trains with and samples against); the DiT can instead take a vector y (B, context_dim), a
caption's embedding, through a Linear (the zero vector is "no caption").

UNet (DDPM's design, two resolutions):
    conv3x3 in -> ResBlock(ch) -> downsample (stride-2 conv) -> ResBlock(2ch) -> self-attention over the
    (H/2)(W/2) positions -> upsample (nearest x2, conv3x3) -> concat the skip -> ResBlock(ch) ->
    GroupNorm, SiLU, conv3x3 out
    ResBlock(x, c): h = conv(SiLU(GN(x))) + Linear(SiLU(c)) per channel; h = conv(SiLU(GN(h))); x' + h,
    x' the input (through a 1x1 conv when the width changes).
DiT: the ViT's transformer reads patches (PatchEmbed, fixed 2-D sin-cos positions), each block conditioned
by adaptive layer norm (adaLN-Zero):
    (shift1, scale1, gate1, shift2, scale2, gate2) = Linear(SiLU(c))          each (B, 1, D)
    x = x + gate1 * attn(LN(x) (1 + scale1) + shift1)
    x = x + gate2 * mlp(LN(x) (1 + scale2) + shift2)
    with the Linear initialised to zero, every gate starts at 0: each block is the identity at
    initialisation, and the final layer (also zero) outputs 0, so training starts from "predict no noise".
"""
from __future__ import annotations

import numpy as np

from .. import ops as F
from ..checks import check_int
from ..models.patches import PatchEmbed, unpatchify
from ..models.pos_embed import sincos_2d
from ..nn import MLP, Conv2d, Embedding, GroupNorm, Linear, Module, ModuleList, MultiHeadAttention, Upsample
from ..nn.init import as_rng
from ..tensor import Tensor
from .denoisers import sinusoidal_embedding

__all__ = ["DiT", "UNet"]


class _Conditioning(Module):
    """c = MLP(sinusoidal(t)) (+ a label embedding, or + Linear(context)): (B, D).

    A condition is a class label (num_classes) or a vector such as a caption's embedding (context_dim),
    never both. Without one (y=None), a label model uses its "no label" class and a context model
    the zero vector: the unconditional model that classifier-free guidance trains and samples against.
    """

    def __init__(self, dim: int, num_classes: int | None, context_dim: int | None = None, *, seed, where: str):
        rng = as_rng(seed)
        self.where = where
        if num_classes and context_dim:
            raise ValueError(f"{where}: a denoiser is conditioned on class labels (num_classes={num_classes}) or on "
                             f"vectors (context_dim={context_dim}), not both")
        self.dim = dim
        self.fc1, self.fc2 = Linear(dim, dim, seed=rng), Linear(dim, dim, seed=rng)
        self.num_classes, self.context_dim = num_classes, context_dim
        self.labels = Embedding(num_classes + 1, dim, seed=rng) if num_classes else None
        self.context = Linear(context_dim, dim, seed=rng) if context_dim else None

    def forward(self, t, y=None):
        if y is not None and self.labels is None and self.context is None:
            raise ValueError(f"{self.where}: a condition y was given to a model built without num_classes or "
                             "context_dim (unconditional)")
        emb = sinusoidal_embedding(t, self.dim).astype(self.fc1.weight.dtype)    # the model's dtype
        c = self.fc2(F.silu(self.fc1(Tensor(emb, device=self.fc1.weight.device))))
        n = len(np.asarray(t))
        if self.labels is not None:
            y = np.full(n, self.num_classes) if y is None else np.asarray(y)
            c = c + self.labels(y)
        elif self.context is not None:
            if y is None:
                y = np.zeros((n, self.context_dim), dtype=self.fc1.weight.dtype)
            y = y if isinstance(y, Tensor) else Tensor(np.asarray(y, dtype=self.fc1.weight.dtype),
                                                        device=self.fc1.weight.device)
            if y.shape != (n, self.context_dim):
                raise ValueError(f"{self.where}: the context y must be ({n}, {self.context_dim}), one vector per "
                                 f"example, got shape {y.shape}")
            c = c + self.context(y)
        return c

    def drop(self, y, mask):
        """y with the rows where mask is True replaced by "no condition" (classifier-free guidance's dropout)."""
        mask = np.asarray(mask, dtype=bool)
        if self.labels is None and self.context is None:
            raise ValueError(f"{self.where}.drop_condition: the model is unconditional (built without num_classes or "
                             "context_dim)")
        y = np.array(y.numpy() if isinstance(y, Tensor) else y, copy=True)
        if y.shape[:1] != mask.shape:
            raise ValueError(f"{self.where}.drop_condition: y has {y.shape[:1]} rows and mask {mask.shape}; one flag "
                             "per row")
        y[mask] = self.num_classes if self.labels is not None else 0
        return y


class _ResBlock(Module):
    def __init__(self, c_in: int, c_out: int, cond_dim: int, groups: int, *, seed):
        rng = as_rng(seed)
        self.norm1, self.conv1 = GroupNorm(min(groups, c_in), c_in), Conv2d(c_in, c_out, 3, padding=1, seed=rng)
        self.cond = Linear(cond_dim, c_out, seed=rng)
        self.norm2, self.conv2 = GroupNorm(min(groups, c_out), c_out), Conv2d(c_out, c_out, 3, padding=1, seed=rng)
        self.skip = Conv2d(c_in, c_out, 1, seed=rng) if c_in != c_out else None

    def forward(self, x, c):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + F.reshape(self.cond(F.silu(c)), (c.shape[0], -1, 1, 1))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.skip is None else self.skip(x)) + h


class UNet(Module):
    """eps_theta for images (B, C, H, W) with H and W even; `ch` channels at full resolution, 2 ch at half."""

    def __init__(self, in_chans: int = 1, ch: int = 32, num_classes: int | None = None, heads: int = 4,
                 groups: int = 8, *, seed):
        in_chans, ch = check_int("UNet", "in_chans", in_chans, low=1), check_int("UNet", "ch", ch, low=1)
        rng = as_rng(seed)
        self.cond = _Conditioning(4 * ch, num_classes, seed=rng, where="UNet")
        self.inp = Conv2d(in_chans, ch, 3, padding=1, seed=rng)
        self.down_block = _ResBlock(ch, ch, 4 * ch, groups, seed=rng)
        self.down = Conv2d(ch, 2 * ch, 3, stride=2, padding=1, seed=rng)
        self.mid_block = _ResBlock(2 * ch, 2 * ch, 4 * ch, groups, seed=rng)
        self.attn_norm = GroupNorm(min(groups, 2 * ch), 2 * ch)
        self.attn = MultiHeadAttention(2 * ch, heads, seed=rng)
        self.up = Upsample(2)
        self.up_conv = Conv2d(2 * ch, ch, 3, padding=1, seed=rng)
        self.up_block = _ResBlock(2 * ch, ch, 4 * ch, groups, seed=rng)
        self.out_norm = GroupNorm(min(groups, ch), ch)
        self.out = Conv2d(ch, in_chans, 3, padding=1, seed=rng)

    def drop_condition(self, y, mask):
        return self.cond.drop(y, mask)

    def forward(self, x, t, y=None):
        if x.ndim != 4 or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"UNet: x must be (B, C, H, W) with even H and W, got shape {x.shape}")
        if np.shape(t) != (x.shape[0],):
            raise ValueError(f"UNet: t must hold one step per image, shape ({x.shape[0]},), got {np.shape(t)}")
        c = self.cond(t, y)
        skip = self.down_block(self.inp(x), c)                          # (B, ch, H, W)
        h = self.mid_block(self.down(skip), c)                          # (B, 2ch, H/2, W/2)
        b, d, hh, ww = h.shape
        tokens = F.permute(F.reshape(self.attn_norm(h), (b, d, hh * ww)), (0, 2, 1))
        h = h + F.reshape(F.permute(self.attn(tokens), (0, 2, 1)), (b, d, hh, ww))   # attention, residual
        h = self.up_conv(self.up(h))                                    # (B, ch, H, W)
        h = self.up_block(F.concatenate([h, skip], axis=1), c)
        return self.out(F.silu(self.out_norm(h)))


class _DiTBlock(Module):
    def __init__(self, dim: int, heads: int, *, seed):
        rng = as_rng(seed)
        self.dim = dim
        self.attn = MultiHeadAttention(dim, heads, seed=rng)
        self.mlp = MLP(dim, 4 * dim, seed=rng)
        self.ada = Linear(dim, 6 * dim, seed=rng)
        self.ada.weight.data[...] = 0          # adaLN-Zero: every gate, shift and scale starts at 0
        self.ada.bias.data[...] = 0

    def forward(self, x, c):
        mods = F.reshape(self.ada(F.silu(c)), (c.shape[0], 6, 1, self.dim))
        shift1, scale1, gate1, shift2, scale2, gate2 = (mods[:, k] for k in range(6))
        h = F.layer_norm(x, None, None, 1e-6) * (1 + scale1) + shift1
        x = x + gate1 * self.attn(h)
        h = F.layer_norm(x, None, None, 1e-6) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


def _zero_final_layers(dim: int, out_features: int, rng) -> tuple:
    """adaLN-Zero's last two Linears, both zero: the final modulation (dim -> 2 dim) and the patch readout
    (dim -> out_features), so that an untrained denoiser outputs exactly 0."""
    layers = Linear(dim, 2 * dim, seed=rng), Linear(dim, out_features, seed=rng)
    for layer in layers:
        layer.weight.data[...] = 0
        layer.bias.data[...] = 0
    return layers


class DiT(Module):
    """eps_theta for images (B, C, H, W): patches -> adaLN-Zero transformer blocks -> patches back."""

    def __init__(self, img_size: int = 8, patch_size: int = 2, in_chans: int = 1, dim: int = 64, depth: int = 4,
                 heads: int = 4, num_classes: int | None = None, context_dim: int | None = None, *, seed):
        rng = as_rng(seed)
        self.patch = PatchEmbed(img_size, patch_size, in_chans, dim, seed=rng)
        self.pos = Tensor(sincos_2d(*self.patch.grid_size, dim).astype(np.float32)[None])
        self.cond = _Conditioning(dim, num_classes, context_dim, seed=rng, where="DiT")
        self.blocks = ModuleList([_DiTBlock(dim, heads, seed=rng) for _ in range(depth)])
        self.final_ada, self.final = _zero_final_layers(dim, patch_size * patch_size * in_chans, rng)
        self.dim, self.patch_size, self.in_chans = dim, patch_size, in_chans

    def drop_condition(self, y, mask):
        """y (labels or context vectors) with the rows where mask is True set to "no condition"."""
        return self.cond.drop(y, mask)

    def forward(self, x, t, y=None):
        if np.shape(t) != (x.shape[0],):
            raise ValueError(f"DiT: t must hold one step per image, shape ({x.shape[0]},), got {np.shape(t)}")
        c = self.cond(t, y)
        h = self.patch(x) + self.pos
        for block in self.blocks:
            h = block(h, c)
        mods = F.reshape(self.final_ada(F.silu(c)), (c.shape[0], 2, 1, self.dim))
        h = F.layer_norm(h, None, None, 1e-6) * (1 + mods[:, 1]) + mods[:, 0]
        return unpatchify(self.final(h), self.patch_size, self.in_chans, self.patch.grid_size)
