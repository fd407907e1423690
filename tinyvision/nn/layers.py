"""The basic layers: Linear, LayerNorm, Embedding, Dropout, activations, Sequential, MLP.

Weight layout. Linear stores its weight as (in, out) so the forward reads like the math,
y = x W + b. PyTorch and timm store (out, in) and compute x W^T + b; converting between the
two is the job of `tinyvision.io.load_torch_state_dict`, through each layer's
`from_torch_layout`.
"""
from __future__ import annotations

import numpy as np

from .. import ops as F
from ..tensor import Tensor
from ..checks import check_bool, check_choice, check_float_dtype, check_int, check_number, check_probability
from .init import as_rng, uniform_fan_in
from .module import Module, Parameter


def tensor_input(where: str, x, min_ndim: int = 0):
    """A layer's input as a Tensor (arrays of numbers are wrapped), or a TypeError naming the layer.

    Layers read x.shape before any op sees x, so a None or a string would otherwise fail with an
    AttributeError deep in the layer."""
    if not isinstance(x, Tensor):
        if x is None or isinstance(x, (str, bytes, dict, set, bool)) or not hasattr(x, "__len__") and not hasattr(x, "shape"):
            raise TypeError(f"{where}: the input must be a Tensor, got {type(x).__name__} {x!r}"[:200])
        try:
            x = Tensor(x)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{where}: the input must be a Tensor of numbers, got {type(x).__name__} ({err})"[:300]) from None
    if x.ndim < min_ndim:
        raise ValueError(f"{where}: the input has shape {x.shape}; it needs at least {min_ndim} axes")
    return x

__all__ = ["Dropout", "Embedding", "GELU", "Identity", "LayerNorm", "Linear", "MLP", "ReLU", "Sequential", "Tanh"]


class Linear(Module):
    """y = x W + b.   x: (..., in_features), W: (in_features, out_features), b: (out_features,)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, seed, dtype=np.float32):
        in_features = check_int("Linear", "in_features", in_features, low=1)
        out_features = check_int("Linear", "out_features", out_features, low=1)
        bias = check_bool("Linear", "bias", bias)
        dtype = check_float_dtype("Linear", "dtype", dtype)
        rng = as_rng(seed)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(uniform_fan_in((in_features, out_features), in_features, rng, dtype))
        self.bias = Parameter(uniform_fan_in((out_features,), in_features, rng, dtype)) if bias else None

    def forward(self, x):
        x = tensor_input(f"Linear({self.in_features}, {self.out_features})", x, min_ndim=1)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}): input has shape {x.shape}, "
                             f"expected (..., {self.in_features})")
        return F.linear(x, self.weight, self.bias)

    @staticmethod
    def from_torch_layout(name: str, array):
        """PyTorch's Linear weight is (out, in); ours is (in, out)."""
        return array.T if name == "weight" else array

    @staticmethod
    def to_torch_layout(name: str, array):
        return array.T if name == "weight" else array

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class LayerNorm(Module):
    """Layer norm over the last axis with a learned scale (weight, init 1) and shift (bias, init 0).

    eps: PyTorch's nn.LayerNorm uses 1e-5; timm's ViT uses 1e-6. It must be > 0: a row whose
    values are all equal has variance 0, and 1 / sqrt(0 + eps) is then finite only thanks to eps.
    """

    def __init__(self, dim: int, eps: float = 1e-5, dtype=np.float32):
        dim = check_int("LayerNorm", "dim", dim, low=1)
        eps = check_number("LayerNorm", "eps", eps, low=0.0, low_open=True)
        dtype = check_float_dtype("LayerNorm", "dtype", dtype)
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, dtype=dtype))
        self.bias = Parameter(np.zeros(dim, dtype=dtype))

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class Embedding(Module):
    """A table of `num` learned vectors of size `dim`; forward(ids) looks rows up. Init N(0, 1)."""

    def __init__(self, num: int, dim: int, *, seed, dtype=np.float32):
        num, dim = check_int("Embedding", "num", num, low=1), check_int("Embedding", "dim", dim, low=1)
        dtype = check_float_dtype("Embedding", "dtype", dtype)
        self.num, self.dim = num, dim
        self.weight = Parameter(as_rng(seed).standard_normal((num, dim)).astype(dtype))

    def forward(self, ids):
        return F.embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.num}, {self.dim}"


class Dropout(Module):
    """Inverted dropout while training, identity in eval(). Owns a seeded Generator it draws masks from.

    p in [0, 1): p = 1 would zero every activation and every gradient behind the layer.
    """

    def __init__(self, p: float = 0.0, *, seed):
        self.p = check_probability("Dropout", "p", p)
        self.rng = as_rng(seed)

    def forward(self, x):
        return F.dropout(x, self.p, self.training, seed=self.rng)

    def extra_repr(self):
        return f"p={self.p}"


class Identity(Module):
    def forward(self, x):
        return x


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class LeakyReLU(Module):
    """x for x > 0, negative_slope x otherwise (ops.leaky_relu); DCGAN's discriminator uses 0.2."""

    def __init__(self, negative_slope: float = 0.01):
        self.negative_slope = check_number("LeakyReLU", "negative_slope", negative_slope)

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class SiLU(Module):
    """x sigma(x) (ops.silu), the activation of diffusion U-Nets."""

    def forward(self, x):
        return F.silu(x)


class GELU(Module):
    """GELU, exact erf form by default (as timm); approximate="tanh" for the GPT-2 form."""

    def __init__(self, approximate: str = "none"):
        self.approximate = check_choice("GELU", "approximate", approximate, ("none", "tanh"))

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return "" if self.approximate == "none" else f"approximate={self.approximate!r}"


class Sequential(Module):
    """Apply modules in order; they are registered as "0", "1", ... like PyTorch."""

    def __init__(self, *modules):
        self._order = []
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: argument {i} is a {type(m).__name__}, not a Module")
            setattr(self, str(i), m)
            self._order.append(m)

    def __getitem__(self, i):
        return self._order[i]

    def __len__(self):
        return len(self._order)

    def forward(self, x):
        for m in self._order:
            x = m(x)
        return x


class MLP(Module):
    """The transformer feed-forward block (timm's Mlp): fc1 -> act -> dropout -> fc2 -> dropout.

    x: (..., in_features) -> (..., out_features); hidden is usually 4 x in_features;
    out_features=None means in_features.
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None,
                 act: str = "gelu", dropout: float = 0.0, *, seed):
        in_features = check_int("MLP", "in_features", in_features, low=1)
        hidden_features = check_int("MLP", "hidden_features", hidden_features, low=1)
        out_features = in_features if out_features is None else check_int("MLP", "out_features", out_features, low=1)
        acts = {"gelu": GELU, "gelu_tanh": lambda: GELU("tanh"), "relu": ReLU, "tanh": Tanh}
        act = check_choice("MLP", "act", act, tuple(sorted(acts)))
        dropout = check_probability("MLP", "dropout", dropout)
        rng = as_rng(seed)
        self.fc1 = Linear(in_features, hidden_features, seed=rng)
        self.act = acts[act]()
        self.drop = Dropout(dropout, seed=rng)
        self.fc2 = Linear(hidden_features, out_features, seed=rng)

    def forward(self, x):
        if isinstance(self.act, GELU) and type(self.fc1) is Linear:   # a replaced fc1 runs as it is
            # fc1's bias goes into the GELU op, which adds it on the fly (F.gelu's bias): the same
            # numbers as act(fc1(x)) without storing x W + b before the activation
            h = F.gelu(F.linear(x, self.fc1.weight), self.act.approximate, self.fc1.bias)
        else:
            h = self.act(self.fc1(x))
        return self.drop(self.fc2(self.drop(h)))
