"""Module and Parameter: how layers own their weights and find each other's.

A Module is an ordinary Python object. Assigning a Parameter or a Module to an attribute
registers it under that attribute's name, so names compose into dotted paths that match
timm and PyTorch (`blocks.0.attn.qkv.weight`). Those paths are the keys of `state_dict()`,
which is what checkpoints save and what `tinyvision.io.load_torch_state_dict` maps from.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..backend import check_device_name, to_device
from ..tensor import Tensor

__all__ = ["Buffer", "Module", "ModuleList", "Parameter"]

_INPUT_ERRORS = (TypeError, ValueError, IndexError, FloatingPointError)
_depth = 0      # how many Module calls are running (single-threaded use, as everywhere in tinyvision)


class Parameter(Tensor):
    """A Tensor that is a learnable weight: requires_grad is on, and Modules register it."""

    def __init__(self, data, dtype=None, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self):
        return "Parameter" + super().__repr__()[len("Tensor"):]


class Buffer(Tensor):
    """A Tensor a Module keeps as state but does not learn, such as batch norm's running statistics:
    saved by state_dict() and moved by .to() like a Parameter, but not in parameters(), so no
    optimizer updates it and no gradient reaches it (PyTorch's register_buffer)."""

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=False, dtype=dtype)

    def __repr__(self):
        return "Buffer" + super().__repr__()[len("Tensor"):]


class Module:
    """Base class of every layer and model.

    Subclasses set Parameters and sub-Modules as attributes in __init__ and define forward().
    Calling the module calls forward.
    """

    training = True

    def __setattr__(self, name, value):
        # Registration is attribute order: __dict__ keeps insertion order, so named_parameters()
        # lists weights in the order the layer was built, as PyTorch does.
        if isinstance(value, (Parameter, Buffer, Module)) and not hasattr(self, "_registered"):
            object.__setattr__(self, "_registered", [])
        if isinstance(value, (Parameter, Buffer, Module)) and name not in self._registered:
            self._registered.append(name)
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        """forward(); an input error raised anywhere inside is prefixed with the name of the module the
        user called (the outermost one), so "layer_norm: weight has shape (4,), expected (3,)" deep in
        a model reads "ViT: layer_norm: ..." and says which call went wrong. Only the message of the
        built-in error types changes: the same exception object, traceback and cause go on up."""
        global _depth
        _depth += 1
        try:
            return self.forward(*args, **kwargs)
        except _INPUT_ERRORS as err:
            name = type(self).__name__
            message = err.args[0] if len(err.args) == 1 and isinstance(err.args[0], str) else None
            if _depth == 1 and type(err) in _INPUT_ERRORS and message is not None \
                    and not message.startswith((name + ":", name + "(")):
                err.args = (f"{name}: {message}",)
            raise
        finally:
            _depth -= 1

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
        return _first_names(self._walk_parameters(prefix))

    def _walk_parameters(self, prefix, kind=None):
        kind = kind or Parameter
        for name in getattr(self, "_registered", []):
            value = getattr(self, name)
            if isinstance(value, kind):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value._walk_parameters(prefix + name + ".", kind)

    def named_buffers(self, prefix: str = ""):
        """(dotted name, Buffer) for every buffer in this module and below, each once."""
        return _first_names(self._walk_parameters(prefix, Buffer))

    def named_state(self):
        """Every parameter, then every buffer: what state_dict() saves and load_state_dict() fills."""
        yield from self.named_parameters()
        yield from self.named_buffers()

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
        """{dotted name: NumPy array copy} of every parameter and buffer."""
        return {name: p.numpy().copy() for name, p in self.named_state()}

    def check_state_dict(self, state, strict: bool = True) -> tuple:
        """Everything `load_state_dict` checks, and the arrays it would write; nothing is changed.

        Returns (values, report): values {dotted name: array already cast to the parameter's
        dtype and placed on its device}, report {"missing": [...], "unexpected": [...]}.
        Raises, naming every offending key:
            KeyError    with strict=True, keys missing from `state` or unknown to the model
            ValueError  a shape that differs from the parameter's; a float64 value too large for
                        a float32 parameter (the cast would turn it into inf)
            TypeError   `state` not a dict; an entry that is not a numeric array of the
                        parameter's kind: a string, an object, a bool or complex array, or an
                        integer array for a float weight (usually a quantized tensor that needs
                        its scale; casting it would load the raw codes as weights). Checked
                        before shapes: a string's shape means nothing.
        Checking everything first is what makes loading all-or-nothing: a bad last entry must not
        leave the first ones overwritten.
        """
        where = f"load_state_dict({type(self).__name__})"
        if not isinstance(state, Mapping):
            raise TypeError(f"{where}: state must be a dict of arrays, got {type(state).__name__}")
        own = dict(self.named_state())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"{where}: missing keys {missing}, unexpected keys {unexpected} "
                           "(pass strict=False to load the keys that do match)")
        arrays, wrong_kind = {}, []
        for name, p in own.items():
            if name in state:
                array, problem = _numeric_array(state[name], p.dtype)
                if problem:
                    wrong_kind.append(f"{name}: {problem}")
                else:
                    arrays[name] = array
        if wrong_kind:
            raise TypeError(f"{where}: wrong kind of array for " + "; ".join(wrong_kind))
        wrong_shape = [f"{k}: checkpoint {a.shape} vs model {own[k].shape}" for k, a in arrays.items()
                       if a.shape != own[k].shape]
        if wrong_shape:
            raise ValueError(f"{where}: shape mismatch for " + "; ".join(wrong_shape))

        values, overflow = {}, []
        for name, array in arrays.items():
            p = own[name]
            with np.errstate(over="ignore"):
                value = array.astype(p.dtype, copy=True)  # a copy: the model never shares the caller's memory
            if not np.array_equal(np.isfinite(value), np.isfinite(array)):
                overflow.append(name)
            values[name] = to_device(value, p.device)
        if overflow:
            raise ValueError(f"{where}: values of {overflow} are finite in the checkpoint but overflow the "
                             f"parameters' dtype (inf after the cast)")
        return values, {"missing": missing, "unexpected": unexpected}

    def assign_checked(self, values: dict) -> None:
        """Write the arrays that `check_state_dict` returned into the parameters and buffers (no checks: they were made)."""
        own = dict(self.named_state())
        for name, value in values.items():
            own[name].data = value

    def load_state_dict(self, state: dict, strict: bool = True) -> dict:
        """Copy arrays into the parameters of the same names, all of them or none.

        Shapes must match exactly and values must be numeric arrays of the parameter's kind
        (see `check_state_dict`, which runs in full before anything is written). With
        strict=True, keys missing from `state` and keys the model does not have are errors;
        with strict=False they are returned for inspection. Returns {"missing": [...],
        "unexpected": [...]}.
        """
        values, report = self.check_state_dict(state, strict)
        self.assign_checked(values)
        return report

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


def _first_names(pairs):
    """(name, tensor) pairs with each tensor once: a shared (tied) tensor keeps its first name."""
    seen = set()
    for name, t in pairs:
        if id(t) not in seen:
            seen.add(id(t))
            yield name, t


def _numeric_array(value, dtype) -> tuple:
    """(value as a host NumPy array, None), or (None, what is wrong with it) unless it is of `dtype`'s kind.

    The kinds: float parameters take float arrays of any width (float16, float64: the cast is
    exact or rounds), never ints, bools, complex numbers, strings or objects.
    """
    try:
        array = np.asarray(to_device(value, "cpu"))
    except (TypeError, ValueError, RuntimeError) as err:  # a ragged list, a bfloat16 torch tensor, ...
        return None, f"{type(value).__name__} that NumPy cannot read as an array ({err})"
    kind = np.dtype(dtype).kind
    if array.dtype.kind != kind:
        names = {"f": "floating-point", "i": "signed integer", "u": "unsigned integer", "b": "bool"}
        return None, f"a {array.dtype} array, expected a {names.get(kind, kind)} array like the parameter ({dtype})"
    return array, None


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
