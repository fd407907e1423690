"""A LLaVA-style vision-language model: an eye, a translator, and a language model that talks.

    images (B, C, H, W) -> eye (a ViT, frozen) -> its tokens after the second-to-last block (B, N, Dv)
                        -> connector -> k visual tokens (B, k, D) in the language model's width
    [visual tokens | prompt tokens | answer tokens] -> causal language model -> next-token logits

The eye is read one block before its end, as LLaVA does (its scripts use hidden_states[-2]): the last
block of a contrastively trained tower is shaped for the one pooled vector it was trained on, the one
before it still describes every patch. Its class token is dropped unless keep_cls=True.

Connectors ("translators"), each stating how many visual tokens it hands the language model:
    linear      W x + b on every patch token (LLaVA 1.0)                                  k = N
    mlp         Linear, GELU, Linear (LLaVA-1.5's mlp2x_gelu)                             k = N
    perceiver   the patches projected to the resampler's width; k learned latents attend to
                [patch tokens | latents] (Flamingo's resampler), then an MLP, each with its residual,
                `depth` times; then Linear to D                                           k fixed
    qformer     k learned queries (drawn normal, std 0.02): self-attention among themselves, cross-attention
                to the patch tokens, an MLP, each with its residual, `depth` times (BLIP-2's Q-Former,
                without its text half); then Linear to D                                  k fixed
The first two keep every patch; the last two compress any number of patches to k tokens.

The language model (CausalLM) is a decoder-only transformer: token and position embeddings, pre-norm
blocks with causal self-attention, a final LayerNorm and a linear head to the vocabulary. Training is
next-token prediction with the loss only on the answer (every other target is IGNORE = -100, which
cross_entropy skips), as LLaVA's instruction tuning does. Decoding is greedy or sampled, with a KVCache
(nn/attention.py) so that each new token costs one position, not the whole sequence; its output equals
decoding without the cache (tests/test_vlm.py).
"""
from __future__ import annotations

import numpy as np

from .. import ops as F
from ..checks import check_bool, check_choice, check_int, check_number
from ..nn import (MLP, CrossAttention, KVCache, LayerNorm, Linear, Module, ModuleList, MultiHeadAttention, Parameter,
                  TransformerBlock)
from ..nn.init import as_rng, trunc_normal
from ..tensor import Tensor, no_grad

__all__ = ["CONNECTORS", "IGNORE", "CausalLM", "Connector", "VisionLanguageModel", "answer_targets"]

IGNORE = -100                                        # the target of a position that carries no loss
CONNECTORS = ("linear", "mlp", "perceiver", "qformer")


# --- the language model --------------------------------------------------------------------------------
class CausalLM(Module):
    """A decoder-only transformer over token ids, optionally after a prefix of embeddings (visual tokens).

    forward(ids (B, L), prefix=None (B, P, dim), cache=None) -> logits (B, P + L, vocab_size); with a
    KVCache, the positions continue from cache.length and only the new tokens are computed."""

    def __init__(self, vocab_size: int, context_length: int, dim: int = 64, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 4.0, *, seed):
        where = "CausalLM"
        self.vocab_size = check_int(where, "vocab_size", vocab_size, low=1)
        self.context_length = check_int(where, "context_length", context_length, low=1)
        self.dim, self.depth = check_int(where, "dim", dim, low=1), check_int(where, "depth", depth, low=1)
        rng = as_rng(seed)
        self.token_embed = Parameter(trunc_normal((self.vocab_size, dim), std=0.02, seed=rng))
        self.pos_embed = Parameter(trunc_normal((self.context_length, dim), std=0.01, seed=rng))
        self.blocks = ModuleList([TransformerBlock(dim, heads, mlp_ratio, eps=1e-5, seed=rng) for _ in range(depth)])
        self.norm = LayerNorm(dim, eps=1e-5)
        self.head = Linear(dim, self.vocab_size, seed=rng)

    def embed_tokens(self, ids) -> Tensor:
        ids = np.asarray(ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"CausalLM: ids must be a (B, L) integer array, got {ids.dtype} of shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"CausalLM: token ids must be in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}")
        return F.embedding(ids, self.token_embed)

    def forward(self, ids, prefix=None, cache: KVCache | None = None) -> Tensor:
        x = self.embed_tokens(ids)
        if prefix is not None:
            if not isinstance(prefix, Tensor):
                raise TypeError(f"CausalLM: prefix must be a Tensor (B, P, {self.dim}), got {type(prefix).__name__}")
            if prefix.ndim != 3 or prefix.shape[0] != x.shape[0] or prefix.shape[2] != self.dim:
                raise ValueError(f"CausalLM: prefix must be ({x.shape[0]}, P, {self.dim}), got shape {prefix.shape}")
            x = F.concatenate([prefix, x], axis=1)
        start = 0 if cache is None else cache.length
        if cache is not None and len(cache.layers) != self.depth:
            raise ValueError(f"CausalLM: the cache has {len(cache.layers)} blocks, the model {self.depth}")
        if start + x.shape[1] > self.context_length:
            raise ValueError(f"CausalLM: {start} cached + {x.shape[1]} new positions exceed the context length "
                             f"{self.context_length}")
        x = x + self.pos_embed[start:start + x.shape[1]]
        for i, block in enumerate(self.blocks):
            x = block(x, causal=True, cache=None if cache is None else cache.layers[i])
        return self.head(self.norm(x))

    def generate(self, ids, prefix=None, max_new: int = 8, stop_id: int | None = None, use_cache: bool = True,
                 temperature: float = 0.0, rng=None) -> np.ndarray:
        """New token ids (B, max_new) after ids (and prefix): greedy (temperature 0) or sampled from
        softmax(logits / temperature) with rng. A row that has produced stop_id repeats it from then on."""
        max_new = check_int("CausalLM.generate", "max_new", max_new, low=0)
        use_cache = check_bool("CausalLM.generate", "use_cache", use_cache)
        temperature = check_number("CausalLM.generate", "temperature", temperature, low=0.0)
        if temperature > 0 and rng is None:
            raise ValueError("CausalLM.generate: sampling (temperature > 0) draws from rng; pass one")
        rng = None if rng is None else as_rng(rng)
        ids = np.asarray(ids)
        with no_grad():
            cache = KVCache(self.depth) if use_cache else None
            seq = ids
            logits = self(ids, prefix, cache)                 # checks ids: (B, L) integers in the vocabulary
            out = np.zeros((ids.shape[0], max_new), dtype=np.int64)
            done = np.zeros(ids.shape[0], dtype=bool)
            for step in range(max_new):
                last = logits.numpy()[:, -1].astype(np.float64)
                if temperature == 0:
                    nxt = last.argmax(axis=1)
                else:
                    p = np.exp((last - last.max(axis=1, keepdims=True)) / temperature)
                    p /= p.sum(axis=1, keepdims=True)
                    nxt = np.array([rng.choice(self.vocab_size, p=row) for row in p])
                if stop_id is not None:
                    nxt = np.where(done, stop_id, nxt)
                    done |= nxt == stop_id
                out[:, step] = nxt
                if step + 1 == max_new:
                    break
                if use_cache:
                    logits = self(nxt[:, None], None, cache)
                else:
                    seq = np.concatenate([seq, nxt[:, None]], axis=1)
                    logits = self(seq, prefix)
        return out


def answer_targets(ids, answer_start) -> np.ndarray:
    """Next-token targets (B, L) for ids (B, L): target[:, i] = ids[:, i + 1] where token i + 1 belongs to
    the answer (i + 1 >= answer_start, per row), IGNORE elsewhere (the prompt, the last position, padding
    id 0 after the answer). The logits at position i predict token i + 1."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"answer_targets: ids must be a (B, L) integer array, got {ids.dtype} of shape {ids.shape}")
    starts = np.asarray(answer_start)
    if starts.shape not in ((), (ids.shape[0],)) or not np.issubdtype(starts.dtype, np.integer):
        raise ValueError(f"answer_targets: answer_start must be one int or one per row ({ids.shape[0]},), got "
                         f"{starts.dtype} of shape {starts.shape}")
    starts = np.broadcast_to(starts, (ids.shape[0],))
    targets = np.full(ids.shape, IGNORE, dtype=np.int64)
    nxt = np.arange(1, ids.shape[1])
    keep = (nxt[None, :] >= starts[:, None]) & (ids[:, 1:] != 0)
    targets[:, :-1] = np.where(keep, ids[:, 1:], IGNORE)
    return targets


# --- connectors: from the eye's width to the language model's ---------------------------------------------
class _ResamplerLayer(Module):
    """One layer of a resampler: latents attend (to the patches, and for the Perceiver to themselves too),
    then an MLP; Q-Former layers also run self-attention among the queries first. Pre-norm, residuals."""

    def __init__(self, dim: int, context_dim: int, heads: int, kind: str, *, seed):
        rng = as_rng(seed)
        self.kind = kind
        if kind == "qformer":
            self.norm_self = LayerNorm(dim, eps=1e-6)
            self.attn_self = MultiHeadAttention(dim, heads, seed=rng)
        self.norm_q = LayerNorm(dim, eps=1e-6)
        self.norm_ctx = LayerNorm(context_dim, eps=1e-6)
        self.cross = CrossAttention(dim, heads, context_dim, seed=rng)
        self.norm_mlp = LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, 4 * dim, seed=rng)

    def forward(self, latents, patches):
        if self.kind == "qformer":
            latents = latents + self.attn_self(self.norm_self(latents))
        h = self.norm_q(latents)
        ctx = self.norm_ctx(patches)
        if self.kind == "perceiver":                  # keys and values: the patches AND the latents themselves
            ctx = F.concatenate([ctx, h], axis=1)
        latents = latents + self.cross(h, ctx)
        return latents + self.mlp(self.norm_mlp(latents))


class Connector(Module):
    """Visual features (B, N, in_dim) -> visual tokens (B, k, out_dim); kind in CONNECTORS (module docstring).

    num_tokens: the k of "perceiver" and "qformer" (their learned latents / queries); "linear" and "mlp"
    keep all N, so they take none. width: the resampler's own width (default out_dim)."""

    def __init__(self, kind: str, in_dim: int, out_dim: int, num_tokens: int | None = None, depth: int = 1,
                 heads: int = 4, width: int | None = None, *, seed):
        where = "Connector"
        self.kind = check_choice(where, "kind", kind, CONNECTORS)
        in_dim, out_dim = check_int(where, "in_dim", in_dim, low=1), check_int(where, "out_dim", out_dim, low=1)
        rng = as_rng(seed)
        self.in_dim, self.out_dim = in_dim, out_dim
        if self.kind in ("linear", "mlp"):
            if num_tokens is not None:
                raise ValueError(f"{where}: kind={kind!r} keeps every patch token; num_tokens is for perceiver / qformer")
            self.num_latents = None
            self.net = (Linear(in_dim, out_dim, seed=rng) if self.kind == "linear"
                        else MLP(in_dim, out_dim, out_dim, seed=rng))
            return
        if num_tokens is None:
            raise ValueError(f"{where}: kind={kind!r} compresses the patches to num_tokens learned latents; give num_tokens")
        self.num_latents = check_int(where, "num_tokens", num_tokens, low=1)
        width = out_dim if width is None else check_int(where, "width", width, low=1)
        depth = check_int(where, "depth", depth, low=1)
        std = 1.0 if self.kind == "perceiver" else 0.02          # Flamingo: randn latents; BLIP-2: N(0, 0.02) queries
        self.latents = Parameter((as_rng(rng).standard_normal((self.num_latents, width)) * std).astype(np.float32))
        if self.kind == "perceiver":                  # patches and latents are keys side by side: one width
            self.inp = Linear(in_dim, width, seed=rng)
        context_dim = width if self.kind == "perceiver" else in_dim
        self.layers = ModuleList([_ResamplerLayer(width, context_dim, heads, self.kind, seed=rng)
                                  for _ in range(depth)])
        self.norm = LayerNorm(width, eps=1e-6)
        self.out = Linear(width, out_dim, seed=rng)

    def num_tokens(self, num_patches: int) -> int:
        """How many visual tokens the language model receives for an image of num_patches tokens."""
        return num_patches if self.num_latents is None else self.num_latents

    def forward(self, features):
        if features.ndim != 3 or features.shape[2] != self.in_dim:
            raise ValueError(f"Connector({self.kind}): features must be (B, N, {self.in_dim}), got shape {features.shape}")
        if self.num_latents is None:
            return self.net(features)
        b = features.shape[0]
        latents = F.mul(self.latents, np.ones((b, 1, 1), dtype=self.latents.dtype))     # (B, k, width)
        if self.kind == "perceiver":
            features = self.inp(features)
        for layer in self.layers:
            latents = layer(latents, features)
        return self.out(self.norm(latents))

    def extra_repr(self):
        k = "N" if self.num_latents is None else self.num_latents
        return f"kind={self.kind!r}, {self.in_dim} -> {self.out_dim}, tokens={k}"


# --- the whole model ------------------------------------------------------------------------------------
class VisionLanguageModel(Module):
    """eye (a ViT, frozen: its parameters are not this model's to train), connector, language model.

    layer: which block's output the eye is read at (-2: the second-to-last, LLaVA's choice; -1: the last).
    keep_cls: keep the eye's class token among the visual tokens (it has to have one)."""

    def __init__(self, eye, connector: Connector, lm: CausalLM, layer: int = -2, keep_cls: bool = False):
        where = "VisionLanguageModel"
        depth = len(eye.blocks)
        layer = check_int(where, "layer", layer, low=-depth, high=depth)
        self.layer = layer % depth                                   # index of the last block run
        self.keep_cls = check_bool(where, "keep_cls", keep_cls)
        if self.keep_cls and not eye.num_prefix_tokens:
            raise ValueError(f"{where}: keep_cls=True, but the eye has no class token")
        if connector.in_dim != eye.embed_dim or connector.out_dim != lm.dim:
            raise ValueError(f"{where}: the connector maps {connector.in_dim} -> {connector.out_dim}, but the eye is "
                             f"{eye.embed_dim} wide and the language model {lm.dim}")
        self._eye = [eye]                                            # kept out of parameters(): frozen
        self.connector, self.lm = connector, lm

    @property
    def eye(self):
        return self._eye[0]

    def eye_features(self, images) -> Tensor:
        """The eye's tokens after block `layer` (B, N (+1 with keep_cls), Dv), computed without gradients."""
        eye = self.eye
        with no_grad():
            dtype = eye.parameters()[0].dtype
            x = eye.embed(images if isinstance(images, Tensor) else Tensor(np.asarray(images, dtype=dtype), dtype=dtype))
            for block in eye.blocks[:self.layer + 1]:
                x = block(x)
        drop = 0 if self.keep_cls else eye.num_prefix_tokens
        return x[:, drop:]

    def visual_tokens(self, images=None, features=None) -> Tensor:
        """The connector's tokens (B, k, D) for images, or for eye features computed before (the eye is
        frozen, so a training loop may compute them once: features = eye_features(images))."""
        if (images is None) == (features is None):
            raise ValueError("VisionLanguageModel: give images or their eye features, one of the two")
        return self.connector(self.eye_features(images) if features is None else features)

    def forward(self, images, ids, blank: bool = False, features=None) -> Tensor:
        """Logits (B, L, vocab) of the text positions of [visual tokens | ids]. blank=True replaces the
        visual tokens by zeros: what the language model says without the picture."""
        vis = self.visual_tokens(images, features)
        if blank:
            vis = vis * 0.0
        return self.lm(ids, prefix=vis)[:, vis.shape[1]:]

    def loss(self, images, ids, answer_start, features=None, blank: bool = False) -> Tensor:
        """Mean cross-entropy of the answer tokens (answer_targets), every other position ignored.
        blank=True: with the visual tokens zeroed, the language model's loss on text alone."""
        logits = self(images, ids, blank=blank, features=features)
        return F.cross_entropy(logits, answer_targets(ids, answer_start), ignore_index=IGNORE)

    def answer(self, images, prompt_ids, max_new: int = 4, stop_id: int | None = None, blank: bool = False,
               use_cache: bool = True, features=None) -> np.ndarray:
        """Greedy answer ids (B, max_new) to prompt_ids (B, L) about images (or their eye features)."""
        with no_grad():
            vis = self.visual_tokens(images, features)
            if blank:
                vis = vis * 0.0
        return self.lm.generate(prompt_ids, prefix=vis, max_new=max_new, stop_id=stop_id, use_cache=use_cache)
