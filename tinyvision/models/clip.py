"""CLIP: an image encoder and a text encoder trained so that matching pairs meet (Radford et al. 2021).

    image (B, C, H, W) -> ViT -> head = projection      -> normalise -> I (B, E)
    ids   (B, L)       -> TextTransformer -> projection -> normalise -> T (B, E)
    logits = exp(logit_scale) * I T^T   (+ logit_bias for SigLIP)             (B, B)

The text encoder is a transformer with a causal mask (each token sees only the tokens before it),
read out at the end-of-text token: under the causal mask that is the only position that has seen
the whole caption (openai/CLIP #306), so it summarises it. Names follow open_clip where it has them
(`visual`, `token_embedding`, `positional_embedding`, `ln_final`, `text_projection`, `logit_scale`,
`logit_bias`); the blocks are tinyvision's TransformerBlock with timm's names.

`logit_scale` is the RAW parameter: the temperature is s = exp(logit_scale), initialised to
log(1/0.07) (s = 14.3) for the CLIP loss, log(10) for SigLIP, and clamped to at most log(100)
after every step (`clamp_logit_scale` in contrastive.py). It and `logit_bias` are 0-d, so
`param_groups_no_decay` keeps them out of weight decay (open_clip #815: decayed, s collapses).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .. import ops as F
from ..backend import device_of, to_device
from ..checks import check_int, check_number
from ..nn import Embedding, LayerNorm, Module, ModuleList, Parameter, TransformerBlock
from ..nn.init import as_rng, trunc_normal
from ..text import eot_index
from .contrastive import l2_normalize
from .vit import ViT

__all__ = ["CLIP", "TextTransformer"]


class TextTransformer(Module):
    """ids (B, L) -> text features (B, E), read at each row's end-of-text token.

    vocab_size V >= 1 with the end token eot_id in [0, V); context_length L >= 1; width D >= 1
    divisible by heads h; depth >= 0 blocks (0 leaves embeddings, ln_final and the projection).
    """

    def __init__(self, vocab_size: int, context_length: int, width: int, depth: int, heads: int, embed_dim: int,
                 eot_id: int, mlp_ratio: float = 4.0, eps: float = 1e-5, *, seed):
        where = "TextTransformer"
        vocab_size = check_int(where, "vocab_size", vocab_size, low=1)
        context_length = check_int(where, "context_length", context_length, low=1)
        width, depth = check_int(where, "width", width, low=1), check_int(where, "depth", depth, low=0)
        heads, embed_dim = check_int(where, "heads", heads, low=1), check_int(where, "embed_dim", embed_dim, low=1)
        if width % heads:
            raise ValueError(f"{where}: width={width} is not divisible by heads={heads} "
                             "(each head takes width / heads channels)")
        eot_id = check_int(where, "eot_id", eot_id)
        if not 0 <= eot_id < vocab_size:
            raise ValueError(f"{where}: eot_id must be an id of the vocabulary, in [0, vocab_size={vocab_size}), "
                             f"got {eot_id}; the text encoder pools at that token")
        mlp_ratio = check_number(where, "mlp_ratio", mlp_ratio, low=0.0, low_open=True)
        eps = check_number(where, "eps", eps, low=0.0, low_open=True)
        rng = as_rng(seed)
        self.context_length, self.width, self.eot_id = context_length, width, eot_id
        self.token_embedding = Embedding(vocab_size, width, seed=rng)
        self.token_embedding.weight.data = to_device(trunc_normal((vocab_size, width), std=0.02, seed=rng),
                                                     self.token_embedding.weight.device)
        self.positional_embedding = Parameter(trunc_normal((context_length, width), std=0.01, seed=rng))
        self.blocks = ModuleList([TransformerBlock(width, heads, mlp_ratio, eps=eps, seed=rng) for _ in range(depth)])
        self.ln_final = LayerNorm(width, eps=eps)
        self.text_projection = Parameter(trunc_normal((width, embed_dim), std=width ** -0.5, seed=rng))

    def forward(self, ids) -> "F.Tensor":
        ids = to_device(ids, "cpu") if device_of(ids) == "cuda" else np.asarray(ids)
        if ids.ndim != 2 or ids.shape[1] > self.context_length:
            raise ValueError(f"TextTransformer: ids must be (B, L) with L <= {self.context_length}, got shape {ids.shape}")
        eot = eot_index(ids, self.eot_id)                                         # (B,), raises if a row has none
        b, length = ids.shape
        x = self.token_embedding(ids) + self.positional_embedding[:length]       # (B, L, D)
        for block in self.blocks:
            x = block(x, causal=True)
        x = self.ln_final(x)
        pooled = x[np.arange(b), eot]                                             # (B, D)
        return F.matmul(pooled, self.text_projection)                            # (B, E)


class CLIP(Module):
    """Two towers and a temperature. forward(images, ids) -> (I, T), both L2-normalised (B, E)."""

    def __init__(self, embed_dim: int, vision: dict, text: dict, init_logit_scale: float = math.log(1 / 0.07),
                 init_logit_bias: float | None = None, *, seed):
        """vision: ViT keyword arguments (without num_classes); text: TextTransformer keyword arguments
        (without embed_dim). init_logit_bias=None gives no bias (CLIP); a number adds one (SigLIP)."""
        embed_dim = check_int("CLIP", "embed_dim", embed_dim, low=1)
        for name, kwargs, own in (("vision", vision, "num_classes"), ("text", text, "embed_dim")):
            if not isinstance(kwargs, Mapping):
                raise TypeError(f"CLIP: {name} must be a dict of keyword arguments, got {type(kwargs).__name__}")
            taken = sorted({own, "seed"} & set(kwargs))
            if taken:
                raise ValueError(f"CLIP: {name} must not set {taken}; CLIP sets them (embed_dim={embed_dim}, seed)")
        init_logit_scale = check_number("CLIP", "init_logit_scale", init_logit_scale)
        if init_logit_bias is not None:
            init_logit_bias = check_number("CLIP", "init_logit_bias", init_logit_bias)
        rng = as_rng(seed)
        self.visual = ViT(**vision, num_classes=embed_dim, seed=rng)   # its head is the projection to E
        self.text = TextTransformer(**text, embed_dim=embed_dim, seed=rng)
        self.logit_scale = Parameter(np.array(init_logit_scale, dtype=np.float32))
        self.logit_bias = None if init_logit_bias is None else Parameter(np.array(init_logit_bias, dtype=np.float32))

    def encode_image(self, images):
        return l2_normalize(self.visual(images))

    def encode_text(self, ids):
        return l2_normalize(self.text(ids))

    def forward(self, images, ids):
        return self.encode_image(images), self.encode_text(ids)
