"""Every differentiable op of tinyvision, as functions on Tensors (import tinyvision.ops as F).

Each op lives in the file of its idea, forward and hand-written backward side by side:
    elementwise.py  arithmetic, exp/log, activations (relu, leaky_relu, silu, gelu), where/masked_fill, clip
    reduce.py       sum/mean/max/var, logsumexp, softmax, log_softmax
    shape.py        reshape, permute/transpose, indexing, concatenate/stack/split, pad
    linalg.py       matmul, linear (x W + b)
    layers.py       layer_norm, group_norm, batch_norm, dropout, embedding
    losses.py       cross_entropy, mse_loss, binary_cross_entropy_with_logits
    attention.py    scaled_dot_product_attention
    conv.py         conv2d (by im2col), conv_transpose2d, avg_pool2d, max_pool2d
    resample.py     upsample (nearest, bilinear), by one interpolation matrix per axis
`tests/op_registry.py` pairs every name in __all__ with a float64 NumPy reference; a test fails
when an op is added here without one.
"""
from .attention import attention_mask, scaled_dot_product_attention
from .conv import avg_pool2d, conv2d, conv_transpose2d, max_pool2d
from .elementwise import (add, clip, div, exp, gelu, leaky_relu, log, masked_fill, mul, neg, pow, relu, sigmoid,
                          silu, sqrt, sub, tanh, where)
from .layers import batch_norm, dropout, embedding, group_norm, layer_norm
from .linalg import linear, matmul
from .losses import binary_cross_entropy_with_logits, cross_entropy, mse_loss
from .resample import upsample
from .reduce import log_softmax, logsumexp, max, mean, softmax, sum, var
from .shape import concatenate, getitem, pad, permute, reshape, split, stack, transpose

__all__ = [
    # elementwise
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "leaky_relu", "silu", "gelu",
    "clip", "where", "masked_fill",
    # reductions and softmax
    "sum", "mean", "max", "var", "logsumexp", "softmax", "log_softmax",
    # shape
    "reshape", "transpose", "permute", "getitem", "concatenate", "stack", "split", "pad",
    # linear algebra
    "matmul", "linear",
    # layers and losses
    "layer_norm", "group_norm", "batch_norm", "dropout", "embedding", "cross_entropy", "mse_loss", "binary_cross_entropy_with_logits",
    # attention
    "scaled_dot_product_attention",
    # convolution and pooling
    "conv2d", "conv_transpose2d", "upsample", "avg_pool2d", "max_pool2d",
]
# attention_mask builds a boolean matrix; it is a helper, not a differentiable op. Likewise the raw-array
# window helpers (sliding_windows, fold_windows, im2col) stay in tinyvision.ops.conv.
