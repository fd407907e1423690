"""Module and Parameter: how layers own their weights and find each other's.

A Module is an ordinary Python object. Assigning a Parameter or a Module to an attribute
registers it under that attribute's name, so names compose into dotted paths that match
timm and PyTorch (`blocks.0.attn.qkv.weight`). Those paths are the keys of `state_dict()`,
which is what checkpoints save and what `tinyvision.io.load_torch_state_dict` maps from.
"""
from __future__ import annotations

import numpy as np

from ..backend import check_device_name, to_device
from ..tensor import Tensor

__all__ = ["Module", "ModuleList", "Parameter"]


class Parameter(Tensor):
    """A Tensor that is a learnable weight: requires_grad is on, and Modules register it."""

    def __init__(self, data, dtype=None, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self):
        return "Parameter" + super().__repr__()[len("Tensor"):]


class Module:
    """Base class of every layer and model.

    Subclasses set Parameters and sub-Modules as attributes in __init__ and define forward().
    Calling the module calls forward.
    """

    training = True

    def __setattr__(self, name, value):
        # Registration is attribute order: __dict__ keeps insertion order, so named_parameters()
        # lists weights in the order the layer was built, as PyTorch does.
        if isinstance(value, (Parameter, Module)) and not hasattr(self, "_registered"):
            object.__setattr__(self, "_registered", [])
        if isinstance(value, (Parameter, Module)) and name not in self._registered:
            self._registered.append(name)
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")  # abstract

    # --- walking the tree --------------------------------------------------------------------
    def named_children(self):
        for name in getattr(self, "_registered", []):
            value = getattr(self, name)
            if isinstance(value, Module):
                yield name, value

    def children(self):
        return [m for _, m in self.named_children()]

    def named_parameters(self, prefix: str = ""):
        """(dotted name, Parameter) for every parameter in this module and below, each once."""
        seen = set()
        for name, p in self._walk_parameters(prefix):
            if id(p) not in seen:  # a shared (tied) weight is listed once, under its first name
                seen.add(id(p))
                yield name, p

    def _walk_parameters(self, prefix):
        for name in getattr(self, "_registered", []):
            value = getattr(self, name)
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value._walk_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_modules(self, prefix: str = ""):
        """(dotted name, module) for this module ("") and every module below it, depth first."""
        yield prefix.rstrip("."), self
        for name, child in self.named_children():
            yield from child.named_modules(prefix + name + ".")

    def modules(self):
        return [m for _, m in self.named_modules()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # --- modes and gradients ---------------------------------------------------------------
    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, device: str):
        """Move every parameter to `device` in place (their identity is kept, so optimizers still see them)."""
        check_device_name(device)
        for t in self._owned_tensors():
            t.data = to_device(t.data, device)
            if t.grad is not None:
                t.grad = to_device(t.grad, device)
        return self

    def astype(self, dtype):
        """Cast every parameter and fixed table to a float dtype in place (e.g. float64 for exact checks)."""
        for t in self._owned_tensors():
            t.data = t.data.astype(dtype)
            t.grad = None if t.grad is None else t.grad.astype(dtype)
        return self

    def _owned_tensors(self):
        """Parameters, plus fixed tables held as plain Tensors (e.g. ViT's sin-cos positions), each once."""
        seen = {}
        for p in self.parameters():
            seen[id(p)] = p
        for m in self.modules():
            for value in vars(m).values():
                if isinstance(value, Tensor) and id(value) not in seen:
                    seen[id(value)] = value
        return list(seen.values())

    # --- state dicts ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{dotted name: NumPy array copy} of every parameter."""
        return {name: p.numpy().copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict, strict: bool = True) -> dict:
        """Copy arrays into the parameters of the same names.

        Shapes must match exactly. With strict=True, keys missing from `state` and keys the
        model does not have are errors; with strict=False they are returned for inspection.
        Returns {"missing": [...], "unexpected": [...]}.
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict({type(self).__name__}): missing keys {missing}, unexpected keys "
                           f"{unexpected} (pass strict=False to load the keys that do match)")
        wrong = [f"{k}: checkpoint {tuple(np.shape(state[k]))} vs model {own[k].shape}"
                 for k in own if k in state and tuple(np.shape(state[k])) != own[k].shape]
        if wrong:
            raise ValueError(f"load_state_dict({type(self).__name__}): shape mismatch for " + "; ".join(wrong))
        for k, p in own.items():
            if k in state:
                value = np.asarray(to_device(state[k], "cpu"), dtype=p.dtype)
                p.data = to_device(value.copy(), p.device)
        return {"missing": missing, "unexpected": unexpected}

    # --- printing -----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """One line of settings shown after the class name (override in layers)."""
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        own = [f"{n}: {tuple(getattr(self, n).shape)}" for n in getattr(self, "_registered", [])
               if isinstance(getattr(self, n), Parameter)]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")" if self.extra_repr() or not own else head + ", ".join(own) + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules registered as "0", "1", ... (timm's `blocks.0`, `blocks.1`)."""

    def __init__(self, modules=()):
        self._items = []
        for m in modules:
            self.append(m)

    def append(self, module: Module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds Modules, got {type(module).__name__}")
        setattr(self, str(len(self._items)), module)
        self._items.append(module)
        return self

    def __getitem__(self, i):
        return self._items[i]

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(self._items)
