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
"""
from __future__ import annotations

from .. import ops as F
from ..backend import to_device
from ..checks import check_bool, check_int, check_number, check_probability
from .init import as_rng
from .layers import MLP, Dropout, LayerNorm, Linear, tensor_input
from .module import Module

__all__ = ["MultiHeadAttention", "TransformerBlock"]


def _check_heads(where: str, dim, num_heads, dim_name: str = "dim", heads_name: str = "num_heads") -> tuple:
    """(D, h) as ints >= 1 with h dividing D, so that every head gets d = D / h channels."""
    dim, num_heads = check_int(where, dim_name, dim, low=1), check_int(where, heads_name, num_heads, low=1)
    if dim % num_heads:
        raise ValueError(f"{where}: {dim_name}={dim} is not divisible by {heads_name}={num_heads} "
                         f"(each head takes {dim_name} / {heads_name} channels)")
    return dim, num_heads


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

    def forward(self, x, mask=None, causal: bool = False, keep_attention: bool = False):
        x = tensor_input(f"MultiHeadAttention(dim={self.dim})", x)
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"MultiHeadAttention(dim={self.dim}): x has shape {x.shape}, expected (B, N, {self.dim})")
        b, n, _ = x.shape
        q, k, v = (F.permute(F.reshape(self._project(x, i), (b, n, self.num_heads, self.head_dim)), (0, 2, 1, 3))
                   for i in range(3))
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

    def forward(self, x, mask=None, causal: bool = False, keep_attention: bool = False):
        x = x + self.attn(self.norm1(x), mask=mask, causal=causal, keep_attention=keep_attention)
        return x + self.mlp(self.norm2(x))
