"""Multi-head self-attention and the pre-norm transformer block, with timm's parameter names.

MultiHeadAttention (Vaswani et al. 2017, sec. 3.2.2), x: (B, N, D), h heads of size d = D / h:
    W_qkv (D, 3D), b (3D,)     one packed Linear, columns laid out [q | k | v], heads contiguous in each
    q = x W_qkv[:, :D] + b[:D] (B, N, D), likewise k and v with the next D columns
    q, k, v                    (B, h, N, d)   reshape (B, N, h, d), permute (0, 2, 1, 3)
    o_head = softmax(q k^T / sqrt(d)) v    (B, h, N, d), one scaled_dot_product_attention op
    y = concat_heads(o) W_proj + b          (B, N, D)

TransformerBlock, pre-norm (as in ViT, Dosovitskiy et al. 2021, eq. 2-3):
    x = x + attn(norm1(x))
    x = x + mlp(norm2(x))

KVCache: a decoder writing one token at a time needs the keys and values of every earlier token; they
do not change (a causal token never sees later ones), so each block keeps them and only the new
token's q, k, v are computed: forward(x_new, causal=True, cache=layer_cache) concatenates the new k, v
to the kept ones. The causal mask is aligned bottom-right (key j is visible to query i when
j <= i + Nk - Nq), so the new queries see the whole past and themselves, as in a full recompute.

CrossAttention: queries from one sequence x (B, Nq, D), keys and values from another, context (B, Nk, Dc)
(an image's patch tokens, for a resampler's latents or a Q-Former's queries):
    q = x W_q + b_q,  [k | v] = context W_kv + b_kv,  y = concat_heads(softmax(q k^T / sqrt(d)) v) W_proj + b
"""
from __future__ import annotations

from .. import ops as F
from ..backend import to_device
from ..checks import check_bool, check_int, check_number, check_probability
from .init import as_rng
from .layers import MLP, Dropout, LayerNorm, Linear, tensor_input
from .module import Module

__all__ = ["CrossAttention", "KVCache", "MultiHeadAttention", "TransformerBlock"]


def _check_heads(where: str, dim, num_heads, dim_name: str = "dim", heads_name: str = "num_heads") -> tuple:
    """(D, h) as ints >= 1 with h dividing D, so that every head gets d = D / h channels."""
    dim, num_heads = check_int(where, dim_name, dim, low=1), check_int(where, heads_name, num_heads, low=1)
    if dim % num_heads:
        raise ValueError(f"{where}: {dim_name}={dim} is not divisible by {heads_name}={num_heads} "
                         f"(each head takes {dim_name} / {heads_name} channels)")
    return dim, num_heads


class KVCache:
    """The kept keys and values of a decoder, one (k, v) pair per block, each (B, h, N_past, d); `length`
    is N_past, the number of tokens seen so far (the position of the next one)."""

    def __init__(self, depth: int):
        depth = check_int("KVCache", "depth", depth, low=1)
        self.layers = [_LayerCache() for _ in range(depth)]

    @property
    def length(self) -> int:
        k = self.layers[0].k
        return 0 if k is None else k.shape[2]


class _LayerCache:
    """One block's kept keys and values (None before the first token)."""

    def __init__(self):
        self.k = self.v = None

    def extend(self, k, v):
        """(k, v) of the past and the new tokens: the kept ones with the new ones appended, which are kept."""
        if self.k is not None:
            if self.k.shape[:2] != k.shape[:2] or self.k.shape[3] != k.shape[3]:
                raise ValueError(f"KVCache: new keys of shape {k.shape} do not continue the kept {self.k.shape} "
                                 f"(the batch, heads and head size must match)")
            k, v = F.concatenate([self.k, k], axis=2), F.concatenate([self.v, v], axis=2)
        self.k, self.v = k, v
        return k, v


class MultiHeadAttention(Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, dropout: float = 0.0, *, seed):
        dim, num_heads = _check_heads("MultiHeadAttention", dim, num_heads)
        qkv_bias = check_bool("MultiHeadAttention", "qkv_bias", qkv_bias)
        dropout = check_probability("MultiHeadAttention", "dropout", dropout)
        rng = as_rng(seed)
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias, seed=rng)
        self.proj = Linear(dim, dim, seed=rng)
        self.proj_drop = Dropout(dropout, seed=rng)
        self.last_attention = None  # (B, h, N, N) NumPy weights of the last call with keep_attention=True

    def forward(self, x, mask=None, causal: bool = False, keep_attention: bool = False, cache=None):
        """x (B, N, D) -> (B, N, D). cache: a block's entry of a KVCache (KVCache.layers[i]): the keys and
        values of x are appended to it and attention runs over all of them (module docstring)."""
        x = tensor_input(f"MultiHeadAttention(dim={self.dim})", x)
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"MultiHeadAttention(dim={self.dim}): x has shape {x.shape}, expected (B, N, {self.dim})")
        b, n, _ = x.shape
        q, k, v = (F.permute(F.reshape(self._project(x, i), (b, n, self.num_heads, self.head_dim)), (0, 2, 1, 3))
                   for i in range(3))
        if cache is not None:
            if not isinstance(cache, _LayerCache):
                raise TypeError(f"MultiHeadAttention: cache must be one block's KVCache entry (cache.layers[i]), "
                                f"got {type(cache).__name__}")
            k, v = cache.extend(k, v)
        # keep_attention=False lets the op take a tiled kernel (no N x N matrix); the weights, when kept,
        # are copied to the host so that plotting code never touches GPU memory
        result = F.scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, return_weights=keep_attention)
        out, weights = result if keep_attention else (result, None)
        self.last_attention = None if weights is None else to_device(weights, "cpu")
        out = F.reshape(F.permute(out, (0, 2, 1, 3)), (b, n, self.dim))
        return self.proj_drop(self.proj(out))

    def _project(self, x, i: int):
        """x W + b with columns [iD, (i+1)D) of the packed qkv Linear: q (i = 0), k (1) or v (2).

        Three products of width D give the numbers of one of width 3D sliced afterwards (up to the BLAS's rounding), but
        nothing of width 3D is ever sliced: a slice's backward fills a zero gradient the size of
        what it was cut from, three times over (once per q, k, v) in every block. Slicing the
        (D, 3D) weight instead costs that only at the weight's size.
        """
        cols = slice(i * self.dim, (i + 1) * self.dim)
        bias = None if self.qkv.bias is None else self.qkv.bias[cols]
        return F.linear(x, self.qkv.weight[:, cols], bias)

    def extra_repr(self):
        return f"dim={self.dim}, num_heads={self.num_heads}"


class TransformerBlock(Module):
    """Pre-norm block: x + attn(norm1(x)), then + mlp(norm2(x)). LayerNorm eps 1e-6 as timm's ViT.

    The MLP's hidden width is int(dim * mlp_ratio), which must come to at least 1.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 dropout: float = 0.0, eps: float = 1e-6, *, seed):
        where = "TransformerBlock"
        dim, num_heads = _check_heads(where, dim, num_heads)
        mlp_ratio = check_number(where, "mlp_ratio", mlp_ratio, low=0.0, low_open=True)
        if int(dim * mlp_ratio) < 1:
            raise ValueError(f"{where}: mlp_ratio={mlp_ratio} gives an MLP of int({dim} * {mlp_ratio}) = 0 hidden "
                             f"units; it must be at least 1 / dim = {1 / dim:g}")
        qkv_bias = check_bool(where, "qkv_bias", qkv_bias)
        dropout = check_probability(where, "dropout", dropout)
        eps = check_number(where, "eps", eps, low=0.0, low_open=True)
        rng = as_rng(seed)
        self.norm1 = LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias, dropout=dropout, seed=rng)
        self.norm2 = LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout=dropout, seed=rng)

    def forward(self, x, mask=None, causal: bool = False, keep_attention: bool = False, cache=None):
        x = x + self.attn(self.norm1(x), mask=mask, causal=causal, keep_attention=keep_attention, cache=cache)
        return x + self.mlp(self.norm2(x))


class CrossAttention(Module):
    """Multi-head attention of x (B, Nq, dim) over context (B, Nk, context_dim); the module docstring."""

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None, qkv_bias: bool = True, *, seed):
        dim, num_heads = _check_heads("CrossAttention", dim, num_heads)
        context_dim = dim if context_dim is None else check_int("CrossAttention", "context_dim", context_dim, low=1)
        qkv_bias = check_bool("CrossAttention", "qkv_bias", qkv_bias)
        rng = as_rng(seed)
        self.dim, self.num_heads, self.head_dim, self.context_dim = dim, num_heads, dim // num_heads, context_dim
        self.q = Linear(dim, dim, bias=qkv_bias, seed=rng)
        self.kv = Linear(context_dim, 2 * dim, bias=qkv_bias, seed=rng)
        self.proj = Linear(dim, dim, seed=rng)

    def forward(self, x, context, mask=None):
        where = f"CrossAttention(dim={self.dim}, context_dim={self.context_dim})"
        x, context = tensor_input(where, x), tensor_input(where, context)
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"{where}: x has shape {x.shape}, expected (B, Nq, {self.dim})")
        if context.ndim != 3 or context.shape[-1] != self.context_dim or context.shape[0] != x.shape[0]:
            raise ValueError(f"{where}: context has shape {context.shape}, expected ({x.shape[0]}, Nk, {self.context_dim})")
        b, nq, nk, h, d = x.shape[0], x.shape[1], context.shape[1], self.num_heads, self.head_dim
        heads = lambda t, n: F.permute(F.reshape(t, (b, n, h, d)), (0, 2, 1, 3))     # noqa: E731
        q = heads(self.q(x), nq)
        k, v = (heads(F.linear(context, self.kv.weight[:, i * self.dim:(i + 1) * self.dim],
                               None if self.kv.bias is None else self.kv.bias[i * self.dim:(i + 1) * self.dim]), nk)
                for i in range(2))
        out = F.scaled_dot_product_attention(q, k, v, mask=mask)
        return self.proj(F.reshape(F.permute(out, (0, 2, 1, 3)), (b, nq, self.dim)))

    def extra_repr(self):
        return f"dim={self.dim}, num_heads={self.num_heads}, context_dim={self.context_dim}"
