"""A valid call of every public op and layer, described argument by argument, for the API fuzz test.

Each case is Case(name, call, args) where `args` maps an argument name to (kind, valid value) and
`call(**values)` makes the call. tests/test_api_fuzz.py replaces one argument at a time by a bad
value of a kind-specific menu (wrong types, ranks, empty axes, dtypes, NaN / inf, extreme
magnitudes, nonsense hyper-parameters) and checks the outcome.

Kinds:
    tensor   a float32 Tensor            int      an int hyper-parameter     axis   an axis argument
    float    a float hyper-parameter     prob     a probability in [0, 1]   flag   a bool
    choice   a string from a fixed set   labels   an integer array          mask   a boolean array
    shape    a tuple of ints             sizes    a list of ints            pad    a pad-width list
    index    an indexing key             seed     an int seed
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import nn


@dataclass
class Case:
    name: str
    call: Callable
    args: dict
    module: bool = False      # a layer: call builds it and runs forward


def T(*shape, lo=-1.0, hi=1.0, seed=0):
    """A float32 tensor of `shape` with values in [lo, hi] (deterministic)."""
    rng = np.random.default_rng(seed)
    return tv.Tensor(rng.uniform(lo, hi, shape).astype(np.float32), requires_grad=True)


def _t(shape, **kw):
    return ("tensor", T(*shape, **kw))


CASES = [
    # elementwise
    *[Case(n, getattr(F, n), {"a": _t((2, 3)), "b": _t((3,), lo=0.5, hi=2.0)}) for n in ("add", "sub", "mul", "div")],
    *[Case(n, getattr(F, n), {"x": _t((2, 3))}) for n in ("neg", "exp", "tanh", "sigmoid", "relu")],
    *[Case(n, getattr(F, n), {"x": _t((2, 3), lo=0.5, hi=2.0)}) for n in ("log", "sqrt")],
    Case("pow", F.pow, {"x": _t((2, 3), lo=0.5, hi=2.0), "exponent": ("float", 2.0)}),
    Case("gelu", F.gelu, {"x": _t((2, 3)), "approximate": ("choice", "tanh"), "bias": _t((3,))}),
    Case("clip", F.clip, {"x": _t((2, 3)), "low": ("float", -0.5), "high": ("float", 0.5)}),
    Case("where", F.where, {"condition": ("mask", np.array([True, False, True])), "a": _t((2, 3)), "b": _t((2, 3))}),
    Case("masked_fill", F.masked_fill, {"x": _t((2, 3)), "mask": ("mask", np.array([True, False, True])),
                                        "value": ("float", -1.0)}),
    # reductions and softmax
    *[Case(n, getattr(F, n), {"x": _t((2, 3, 4)), "axis": ("axis", 1), "keepdims": ("flag", False)})
      for n in ("sum", "mean", "max", "logsumexp")],
    Case("var", F.var, {"x": _t((2, 3, 4)), "axis": ("axis", 1), "keepdims": ("flag", False), "ddof": ("int", 1)}),
    *[Case(n, getattr(F, n), {"x": _t((2, 3, 4)), "axis": ("axis", -1)}) for n in ("softmax", "log_softmax")],
    # shape
    Case("reshape", F.reshape, {"x": _t((2, 3, 4)), "shape": ("shape", (6, 4))}),
    Case("permute", F.permute, {"x": _t((2, 3, 4)), "axes": ("shape", (2, 0, 1))}),
    Case("transpose", F.transpose, {"x": _t((2, 3, 4)), "axes": ("shape", (0, 2))}),
    Case("getitem", F.getitem, {"x": _t((4, 3)), "index": ("index", (slice(1, 3), 0))}),
    Case("concatenate", lambda a, b, axis: F.concatenate([a, b], axis),
         {"a": _t((2, 3)), "b": _t((1, 3)), "axis": ("axis", 0)}),
    Case("stack", lambda a, b, axis: F.stack([a, b], axis), {"a": _t((2, 3)), "b": _t((2, 3)), "axis": ("axis", 1)}),
    Case("split", F.split, {"x": _t((5, 3)), "sections": ("sizes", [2]), "axis": ("axis", 0)}),
    Case("pad", F.pad, {"x": _t((2, 3)), "pad_width": ("pad", [(0, 1), (2, 0)]), "value": ("float", 0.5)}),
    # linear algebra
    Case("matmul", F.matmul, {"a": _t((2, 3)), "b": _t((3, 4))}),
    Case("linear", F.linear, {"x": _t((2, 3, 4)), "weight": _t((4, 5)), "bias": _t((5,))}),
    # layers and losses
    Case("layer_norm", F.layer_norm, {"x": _t((2, 5)), "weight": _t((5,)), "bias": _t((5,)), "eps": ("float", 1e-5)}),
    Case("dropout", F.dropout, {"x": _t((2, 5)), "p": ("prob", 0.3), "training": ("flag", True), "seed": ("seed", 0)}),
    Case("embedding", F.embedding, {"indices": ("labels", np.array([0, 2, 1])), "weight": _t((4, 3))}),
    Case("cross_entropy", F.cross_entropy, {"logits": _t((3, 4)), "target": ("labels", np.array([0, 3, 1])),
                                            "ignore_index": ("int", -100), "label_smoothing": ("prob", 0.1),
                                            "reduction": ("choice", "mean")}),
    Case("mse_loss", F.mse_loss, {"prediction": _t((3, 2)), "target": _t((3, 2)), "reduction": ("choice", "sum")}),
    Case("binary_cross_entropy_with_logits", F.binary_cross_entropy_with_logits,
         {"logits": _t((3, 2)), "target": _t((3, 2), lo=0.0, hi=1.0), "reduction": ("choice", "none")}),
    # attention
    Case("scaled_dot_product_attention", F.scaled_dot_product_attention,
         {"q": _t((2, 3, 4)), "k": _t((2, 5, 4)), "v": _t((2, 5, 2)), "mask": ("mask", np.ones((3, 5), bool)),
          "causal": ("flag", True), "scale": ("float", 0.5)}),
    # convolution and pooling
    Case("conv2d", F.conv2d, {"x": _t((1, 2, 5, 5)), "weight": _t((3, 2, 3, 3)), "bias": _t((3,)),
                              "stride": ("int", 1), "padding": ("int", 1)}),
    *[Case(n, getattr(F, n), {"x": _t((1, 2, 4, 4)), "kernel_size": ("int", 2), "stride": ("int", 2)})
      for n in ("avg_pool2d", "max_pool2d")],
    Case("conv_transpose2d", F.conv_transpose2d, {"x": _t((1, 2, 3, 3)), "weight": _t((2, 3, 3, 3)), "bias": _t((3,)),
                                                  "stride": ("int", 2), "padding": ("int", 1),
                                                  "output_padding": ("int", 1)}),
    Case("upsample", F.upsample, {"x": _t((1, 2, 3, 3)), "scale_factor": ("int", 2), "mode": ("choice", "bilinear")}),
    Case("group_norm", F.group_norm, {"x": _t((2, 4, 3, 3)), "num_groups": ("int", 2), "weight": _t((4,)),
                                      "bias": _t((4,)), "eps": ("float", 1e-5)}),
    Case("batch_norm", F.batch_norm, {"x": _t((2, 3, 2, 2)), "running_mean": _t((3,)),
                                      "running_var": _t((3,), lo=0.5, hi=2.0), "weight": _t((3,)), "bias": _t((3,)),
                                      "training": ("flag", True), "momentum": ("prob", 0.1), "eps": ("float", 1e-5)}),
    Case("leaky_relu", F.leaky_relu, {"x": _t((2, 3)), "negative_slope": ("float", 0.2)}),
    Case("silu", F.silu, {"x": _t((2, 3))}),
]

# layers: constructor arguments are checked by tests/test_hyperparameters.py; here the forward's input
LAYER_CASES = [
    Case("Linear", lambda x: nn.Linear(3, 4, seed=0)(x), {"x": _t((2, 3))}, module=True),
    Case("LayerNorm", lambda x: nn.LayerNorm(5)(x), {"x": _t((2, 5))}, module=True),
    Case("Embedding", lambda ids: nn.Embedding(4, 3, seed=0)(ids), {"ids": ("labels", np.array([0, 3]))}, module=True),
    Case("MLP", lambda x: nn.MLP(3, 8, seed=0)(x), {"x": _t((2, 3))}, module=True),
    Case("MultiHeadAttention", lambda x, mask, causal: nn.MultiHeadAttention(4, 2, seed=0)(x, mask=mask, causal=causal),
         {"x": _t((2, 3, 4)), "mask": ("mask", np.ones((3, 3), bool)), "causal": ("flag", False)}, module=True),
    Case("TransformerBlock", lambda x: nn.TransformerBlock(4, 2, seed=0)(x), {"x": _t((2, 3, 4))}, module=True),
    Case("Conv2d", lambda x: nn.Conv2d(2, 3, 3, padding=1, seed=0)(x), {"x": _t((1, 2, 5, 5))}, module=True),
    Case("MaxPool2d", lambda x: nn.MaxPool2d(2)(x), {"x": _t((1, 2, 4, 4))}, module=True),
    Case("AvgPool2d", lambda x: nn.AvgPool2d(2)(x), {"x": _t((1, 2, 4, 4))}, module=True),
    Case("Flatten", lambda x: nn.Flatten()(x), {"x": _t((2, 3, 4))}, module=True),
    Case("GELU", lambda x: nn.GELU()(x), {"x": _t((2, 3))}, module=True),
    Case("ConvTranspose2d", lambda x: nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1, seed=0)(x),
         {"x": _t((1, 2, 3, 3))}, module=True),
    Case("Upsample", lambda x: nn.Upsample(2, "bilinear")(x), {"x": _t((1, 2, 3, 3))}, module=True),
    Case("BatchNorm2d", lambda x: nn.BatchNorm2d(2)(x), {"x": _t((2, 2, 3, 3))}, module=True),
    Case("GroupNorm", lambda x: nn.GroupNorm(2, 4)(x), {"x": _t((2, 4, 3, 3))}, module=True),
    Case("LeakyReLU", lambda x: nn.LeakyReLU(0.2)(x), {"x": _t((2, 3))}, module=True),
    Case("SiLU", lambda x: nn.SiLU()(x), {"x": _t((2, 3))}, module=True),
]
