"""The layers of a convolutional network: Conv2d, AvgPool2d, MaxPool2d and Flatten.

A classic CNN (LeNet, LeCun et al. 1998) stacks Conv2d -> ReLU -> MaxPool2d a few times, then
Flatten turns each (C, H, W) feature map into one vector for the Linear classifier. The math
of each layer is in tinyvision/ops/conv.py; these Modules hold the weights and the settings.

Weight layout. Conv2d stores its weight as (out_channels, in_channels, kh, kw) = (D, C, kh, kw),
exactly PyTorch's and timm's layout (ViT's `patch_embed.proj` is such a conv), so a checkpoint
loads as it is: unlike Linear, Conv2d needs no `from_torch_layout`.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops as F
from ..checks import check_bool, check_float_dtype, check_int, check_int_pair
from .init import as_rng, uniform_fan_in
from .layers import tensor_input
from .module import Module, Parameter

__all__ = ["AvgPool2d", "Conv2d", "Flatten", "MaxPool2d"]


class Conv2d(Module):
    """y = conv2d(x, weight, bias).   x: (B, C, H, W) -> (B, D, H_out, W_out).

    weight: (D, C, kh, kw), bias: (D,), both U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
    fan_in = C kh kw, the numbers each output sees: the bound PyTorch's nn.Conv2d ends up with.
    kernel_size, stride and padding: an int or an (h, w) pair.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, bias: bool = True,
                 *, seed, dtype=np.float32):
        in_channels = check_int("Conv2d", "in_channels", in_channels, low=1)
        out_channels = check_int("Conv2d", "out_channels", out_channels, low=1)
        self.kernel_size = check_int_pair("Conv2d", "kernel_size", kernel_size, 1)
        self.stride = check_int_pair("Conv2d", "stride", stride, 1)
        self.padding = check_int_pair("Conv2d", "padding", padding, 0)
        bias = check_bool("Conv2d", "bias", bias)
        dtype = check_float_dtype("Conv2d", "dtype", dtype)
        rng = as_rng(seed)
        self.in_channels, self.out_channels = in_channels, out_channels
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.weight = Parameter(uniform_fan_in((out_channels, in_channels) + self.kernel_size, fan_in, rng, dtype))
        self.bias = Parameter(uniform_fan_in((out_channels,), fan_in, rng, dtype)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}")


class _Pool2d(Module):
    """A pooling window of kernel_size, one every `stride` pixels (default: kernel_size, no overlap)."""

    pool = None   # the op, set by each subclass

    def __init__(self, kernel_size, stride=None):
        name = type(self).__name__
        self.kernel_size = check_int_pair(name, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else check_int_pair(name, "stride", stride, 1)

    def forward(self, x):
        return type(self).pool(x, self.kernel_size, self.stride)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class AvgPool2d(_Pool2d):
    """Mean over each window (ops.avg_pool2d)."""
    pool = staticmethod(F.avg_pool2d)


class MaxPool2d(_Pool2d):
    """Maximum over each window (ops.max_pool2d)."""
    pool = staticmethod(F.max_pool2d)


class Flatten(Module):
    """(B, d1, d2, ...) -> (B, d1 d2 ...): every axis from start_dim on merged into one, batch kept."""

    def __init__(self, start_dim: int = 1):
        self.start_dim = check_int("Flatten", "start_dim", start_dim)

    def forward(self, x):
        x = tensor_input(f"Flatten(start_dim={self.start_dim})", x)
        if not -x.ndim <= self.start_dim < x.ndim:
            raise ValueError(f"Flatten(start_dim={self.start_dim}): x of shape {x.shape} has no axis {self.start_dim}")
        start = self.start_dim % x.ndim
        return F.reshape(x, x.shape[:start] + (math.prod(x.shape[start:]),))

    def extra_repr(self):
        return f"start_dim={self.start_dim}"
