"""The layers of a convolutional network: Conv2d, ConvTranspose2d, Upsample, the pools, Flatten, and the
normalisations conv nets use (BatchNorm2d, GroupNorm).

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
from ..checks import check_bool, check_float_dtype, check_int, check_int_pair, check_number
from .init import as_rng, uniform_fan_in
from .layers import tensor_input
from .module import Buffer, Module, Parameter

__all__ = ["AvgPool2d", "BatchNorm2d", "Conv2d", "ConvTranspose2d", "Flatten", "GroupNorm", "MaxPool2d", "Upsample"]


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


class ConvTranspose2d(Module):
    """y = conv_transpose2d(x, weight, bias): x (B, D, H, W) -> (B, C, H_out, W_out), a decoder's upsampling step.

    weight: (in_channels D, out_channels C, kh, kw), PyTorch's layout; H_out = (H - 1) s - 2 p + kh +
    output_padding. Init U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C kh kw, the bound PyTorch's
    nn.ConvTranspose2d ends up with (it computes fan_in from the weight's second axis).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                 bias: bool = True, *, seed, dtype=np.float32):
        in_channels = check_int("ConvTranspose2d", "in_channels", in_channels, low=1)
        out_channels = check_int("ConvTranspose2d", "out_channels", out_channels, low=1)
        self.kernel_size = check_int_pair("ConvTranspose2d", "kernel_size", kernel_size, 1)
        self.stride = check_int_pair("ConvTranspose2d", "stride", stride, 1)
        self.padding = check_int_pair("ConvTranspose2d", "padding", padding, 0)
        self.output_padding = check_int_pair("ConvTranspose2d", "output_padding", output_padding, 0)
        if any(o >= s for o, s in zip(self.output_padding, self.stride)):
            raise ValueError(f"ConvTranspose2d: output_padding {self.output_padding} must be smaller than the "
                             f"stride {self.stride}")
        bias = check_bool("ConvTranspose2d", "bias", bias)
        dtype = check_float_dtype("ConvTranspose2d", "dtype", dtype)
        rng = as_rng(seed)
        self.in_channels, self.out_channels = in_channels, out_channels
        fan_in = out_channels * self.kernel_size[0] * self.kernel_size[1]
        self.weight = Parameter(uniform_fan_in((in_channels, out_channels) + self.kernel_size, fan_in, rng, dtype))
        self.bias = Parameter(uniform_fan_in((out_channels,), fan_in, rng, dtype)) if bias else None

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, output_padding={self.output_padding}, bias={self.bias is not None}")


class Upsample(Module):
    """Enlarge by whole factors, "nearest" or "bilinear" (ops.upsample). No parameters."""

    def __init__(self, scale_factor=2, mode: str = "nearest"):
        self.scale_factor = check_int_pair("Upsample", "scale_factor", scale_factor, 1)
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f'Upsample: mode must be "nearest" or "bilinear", got {mode!r}')
        self.mode = mode

    def forward(self, x):
        return F.upsample(x, self.scale_factor, self.mode)

    def extra_repr(self):
        return f"scale_factor={self.scale_factor}, mode={self.mode!r}"


class BatchNorm2d(Module):
    """Batch norm over (B, H, W) per channel (ops.batch_norm), PyTorch's names and defaults.

    weight (init 1) and bias (init 0) are learned; running_mean (init 0) and running_var (init 1) are
    Buffers: saved in checkpoints, updated by each training-mode forward with `momentum` (0.1), used in
    eval mode (model.eval()), so that a prediction for one image does not depend on its batch-mates.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, dtype=np.float32):
        num_features = check_int("BatchNorm2d", "num_features", num_features, low=1)
        self.eps = check_number("BatchNorm2d", "eps", eps, low=0.0, low_open=True)
        self.momentum = check_number("BatchNorm2d", "momentum", momentum, low=0.0, high=1.0)
        dtype = check_float_dtype("BatchNorm2d", "dtype", dtype)
        self.num_features = num_features
        self.weight = Parameter(np.ones(num_features, dtype=dtype))
        self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        self.running_mean = Buffer(np.zeros(num_features, dtype=dtype))
        self.running_var = Buffer(np.ones(num_features, dtype=dtype))

    def forward(self, x):
        x = tensor_input(f"BatchNorm2d({self.num_features})", x)
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d({self.num_features}): x must be (B, C, H, W), got shape {x.shape}")
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class GroupNorm(Module):
    """Group norm (ops.group_norm): statistics per image over groups of channels; weight 1, bias 0 at init."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, dtype=np.float32):
        num_groups = check_int("GroupNorm", "num_groups", num_groups, low=1)
        num_channels = check_int("GroupNorm", "num_channels", num_channels, low=1)
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_groups={num_groups} does not divide num_channels={num_channels}")
        self.eps = check_number("GroupNorm", "eps", eps, low=0.0, low_open=True)
        dtype = check_float_dtype("GroupNorm", "dtype", dtype)
        self.num_groups, self.num_channels = num_groups, num_channels
        self.weight = Parameter(np.ones(num_channels, dtype=dtype))
        self.bias = Parameter(np.zeros(num_channels, dtype=dtype))

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"


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
