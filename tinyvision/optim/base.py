"""The Optimizer base class: parameter groups, per-parameter state, and saving / loading that state.

This is the plumbing every update rule shares (optimizers.py holds the rules themselves):
    - `params` is a list of Parameters or of group dicts {"params": [...], "lr": ...} (PyTorch's
      semantics): a key a group leaves out takes the optimizer's default; a subclass checks its
      hyperparameters in `_check_hyperparameters`;
    - `step()` calls the subclass's `_update(p, grad, state, group)` for every parameter with a
      gradient; `state` is that parameter's dict of buffers, created at its first update;
    - `state_dict()` flattens groups and buffers into NumPy arrays and plain numbers, so a checkpoint
      is a .npz file (tinyvision.io); `load_state_dict` checks every key, dtype, shape and value
      (`check_state_dict`) before it writes anything (`assign_checked`), so a bad state changes nothing.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..backend import to_device
from ..tensor import Tensor

__all__ = ["Optimizer", "check_params"]


# --- argument checks (the numbers go through tinyvision.checks) --------------------------------
def check_params(where: str, params) -> list:
    """A list of leaf Tensors from `params`, with the common mistakes named."""
    if isinstance(params, Tensor):
        # A Tensor is iterable (over its rows), so list(tensor) would silently give slices.
        raise TypeError(f"{where}: params must be a list of Parameters, got a single Tensor of shape "
                        f"{params.shape}; wrap it in a list: [p]")
    if callable(params):
        raise TypeError(f"{where}: params is a function ({getattr(params, '__name__', params)!r}); "
                        "did you mean model.parameters() rather than model.parameters?")
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{where}: params[{i}] is a {type(p).__name__}, not a Parameter")
        if not p.is_leaf:
            raise ValueError(f"{where}: params[{i}] (shape {p.shape}) is the output of an op "
                             f"({p._op!r}), not a leaf; only leaves (Parameters) can be optimized")
    return params


# --- the base class --------------------------------------------------------------------------
class Optimizer:
    """Parameter groups, per-parameter state, zero_grad / step / state_dict.

    A subclass names its hyperparameters in `defaults`, checks them in `_check_hyperparameters`,
    lists its per-parameter buffer names in `state_names`, and writes one update rule in
    `_update(p, grad, state, group)`. Create the optimizer after `model.to(device)`: the
    buffers are made on the device the parameter is on at its first step.
    """

    state_names: tuple = ()

    def __init__(self, params, defaults: dict):
        where = type(self).__name__
        self.defaults = self._check_hyperparameters(dict(defaults), where)
        if isinstance(params, dict):
            raise TypeError(f"{where}: params is one group dict; pass a list of groups: [group]")
        if isinstance(params, Tensor) or callable(params):
            check_params(where, params)  # raises the specific TypeError
        items = list(params)
        if items and all(isinstance(item, dict) for item in items):
            groups = items
        elif any(isinstance(item, dict) for item in items):
            raise TypeError(f"{where}: params mixes Parameters and group dicts; pass one kind only")
        else:
            groups = [{"params": items}]

        self.param_groups = []
        first_seen = {}  # id(parameter) -> the group it was first listed in
        for i, group in enumerate(groups):
            here = f"{where} param_groups[{i}]"
            if "params" not in group:
                raise ValueError(f"{here}: a group dict needs a 'params' key, got keys {sorted(group)}")
            unknown = sorted(set(group) - {"params"} - set(self.defaults))
            if unknown:
                raise ValueError(f"{here}: unknown keys {unknown}; {where} groups take 'params' and "
                                 f"{sorted(self.defaults)}")
            group_params = check_params(here, group["params"])
            for p in group_params:
                if id(p) in first_seen:
                    raise ValueError(f"{here}: a parameter of shape {p.shape} appears twice, in "
                                     f"param_groups[{first_seen[id(p)]}] and param_groups[{i}]; "
                                     "each parameter may be listed once")
                first_seen[id(p)] = i
            hyper = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
            self.param_groups.append({"params": group_params, **self._check_hyperparameters(hyper, here)})
        if not first_seen:
            raise ValueError(f"{where}: params is empty; the optimizer got no parameters to update")
        # Keyed by id(): the groups hold a reference to every parameter, so ids stay unique.
        self.state = {}

    def _check_hyperparameters(self, hyper: dict, where: str) -> dict:
        """Return `hyper` with every value checked and normalised (floats, tuples), or raise."""
        raise NotImplementedError(f"{type(self).__name__} must define _check_hyperparameters")  # abstract

    def _update(self, p, grad, state: dict, group: dict) -> None:
        """Apply the update rule to p.data in place, reading and writing the buffers in `state`."""
        raise NotImplementedError(f"{type(self).__name__} must define _update")  # abstract

    def _parameters(self) -> list:
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self) -> None:
        """Forget every gradient (None, as PyTorch's set_to_none), since backward() accumulates."""
        for p in self._parameters():
            p.grad = None

    def step(self) -> None:
        """One update of every parameter that has a gradient; the others are left untouched.

        Works on the raw arrays p.data and p.grad, so no graph is recorded.
        """
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.shape != p.data.shape:
                    raise ValueError(f"{type(self).__name__}.step: a gradient of shape {tuple(p.grad.shape)} "
                                     f"for a parameter of shape {p.shape}")
                self._update(p, p.grad, self.state.setdefault(id(p), {}), group)

    # --- saving and resuming ---------------------------------------------------------------
    def state_dict(self) -> dict:
        """A flat dict of NumPy arrays and numbers, ready for np.savez.

            "param_groups.{i}.{name}"   group i's hyperparameters (tuples as float64 arrays)
            "param_groups.{i}.params"   the indices of its parameters, counted over all groups
            "state.{j}.{name}"          parameter j's buffers, copied to the CPU
        Indexing parameters by position, not by name, is PyTorch's choice too: an optimizer sees
        a list of tensors and never learns their names.
        """
        out, start = {}, 0
        for i, group in enumerate(self.param_groups):
            for name, value in group.items():
                if name != "params":
                    is_pair = isinstance(value, tuple)  # betas
                    out[f"param_groups.{i}.{name}"] = np.asarray(value, np.float64) if is_pair else value
            out[f"param_groups.{i}.params"] = np.arange(start, start + len(group["params"]))
            start += len(group["params"])
        for j, p in enumerate(self._parameters()):
            for name, value in self.state.get(id(p), {}).items():
                is_count = isinstance(value, numbers.Number)  # "step"
                out[f"state.{j}.{name}"] = value if is_count else to_device(value, "cpu").copy()
        return out

    def state_dict_shapes(self) -> dict:
        """{key: shape} for every key `load_state_dict` accepts, given these groups and parameters.

        Every "param_groups.*" key is required; a parameter's "state.{j}.*" buffers come all
        together or not at all (a parameter that has not been updated yet has none). Checkpoint
        readers use the shapes to size what they read before reading it.
        """
        shapes = {}
        for i, group in enumerate(self.param_groups):
            for name, value in group.items():
                shapes[f"param_groups.{i}.{name}"] = (len(value),) if name == "params" else np.shape(value)
        for j, p in enumerate(self._parameters()):
            for name in self.state_names:
                shapes[f"state.{j}.{name}"] = () if name == "step" else tuple(p.shape)
        return shapes

    def state_dtype(self, p):
        """The dtype of p's buffers (momentum, moments): p's own, unless a subclass needs it wider."""
        return p.data.dtype

    def check_state_dict(self, state) -> tuple:
        """Everything `load_state_dict` checks, and what it would install; nothing is changed.

        Returns (groups, state) for `assign_checked`. Raises, naming the key, what was seen and
        what was expected:
            KeyError    missing group keys, unknown keys, a parameter with only some buffers
            TypeError   a value that is not a number of the right kind: a string or object array,
                        a float where a count is meant (a parameter index, a step: NaN or 2.5
                        are no step), a number where True / False is meant, an integer buffer
            ValueError  wrong shapes, groups holding other parameters, hyperparameters out of
                        range (through the subclass's own checks), a negative step
        """
        where = f"{type(self).__name__}.load_state_dict"
        try:
            state = dict(state)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{where}: state must be a dict from state_dict(), got {type(state).__name__}") from err
        shapes = self.state_dict_shapes()
        missing = sorted(k for k in shapes if k.startswith("param_groups.") and k not in state)
        unexpected = sorted(str(k) for k in state if k not in shapes)
        buffers = {}  # parameter index -> {buffer name: value}
        for key in state:
            if key in shapes and key.startswith("state."):
                _, j, name = key.split(".")
                buffers.setdefault(int(j), {})[name] = state[key]
        if missing or unexpected:
            raise KeyError(f"{where}: missing keys {missing}, unexpected keys {unexpected} "
                           f"({type(self).__name__} keeps buffers {list(self.state_names)})")
        partial = [f"parameter {j} has {sorted(saved)}" for j, saved in sorted(buffers.items())
                   if set(saved) != set(self.state_names)]
        if partial:
            raise KeyError(f"{where}: {'; '.join(partial)}, expected all of {sorted(self.state_names)} or none")

        # Every value as an array of the kind its key needs, with the shape the key needs.
        params = self._parameters()
        arrays = {}
        for key, value in state.items():
            if key.endswith(".params") or key.endswith(".step"):
                kinds, wanted = "iu", "integers"            # parameter indices, step counts
            elif key.startswith("state."):
                kinds, wanted = "f", "floats"               # buffers
            else:
                current = self.param_groups[int(key.split(".")[1])][key.split(".")[2]]
                is_flag = isinstance(current, bool)
                kinds, wanted = ("b", "True / False") if is_flag else ("fiu", "numbers")
            try:
                array = np.asarray(to_device(value, "cpu"))
            except (TypeError, ValueError) as err:
                raise TypeError(f"{where}: {key} is a {type(value).__name__} NumPy cannot read ({err})") from err
            if array.dtype.kind not in kinds:
                raise TypeError(f"{where}: {key} holds {array.dtype} values, expected {wanted}")
            if array.shape != shapes[key]:
                raise ValueError(f"{where}: {key} has shape {array.shape}, expected {shapes[key]}")
            arrays[key] = array

        new_groups, start = [], 0
        for i, group in enumerate(self.param_groups):
            indices = arrays[f"param_groups.{i}.params"].tolist()
            if indices != list(range(start, start + len(group["params"]))):
                raise ValueError(f"{where}: param_groups[{i}] holds parameters {indices} in the saved state but "
                                 f"{len(group['params'])} parameters here, starting at index {start}")
            start += len(group["params"])
            hyper = {name: _like(group[name], arrays[f"param_groups.{i}.{name}"]) for name in group if name != "params"}
            new_groups.append(self._check_hyperparameters(hyper, f"{where} param_groups[{i}]"))

        new_state = {}
        for j in sorted(buffers):
            p, own = params[j], {}
            for name in self.state_names:
                array = arrays[f"state.{j}.{name}"]
                if name == "step":
                    if array < 0:
                        raise ValueError(f"{where}: state.{j}.step is {int(array)}, expected a count >= 0")
                    own[name] = int(array)
                else:
                    own[name] = to_device(array.astype(self.state_dtype(p), copy=True), p.device)
            new_state[id(p)] = own
        return new_groups, new_state

    def assign_checked(self, checked: tuple) -> None:
        """Install what `check_state_dict` returned (no checks: they were made)."""
        new_groups, new_state = checked
        for group, hyper in zip(self.param_groups, new_groups):
            group.update(hyper)
        self.state = new_state

    def load_state_dict(self, state: dict) -> None:
        """Restore hyperparameters and buffers from `state_dict()` (or its .npz round trip).

        All or nothing: `check_state_dict` checks every key, kind, shape and value (the same
        groups with the same numbers of parameters, buffer shapes equal to parameter shapes, no
        missing or unexpected keys) before anything changes.
        """
        self.assign_checked(self.check_state_dict(state))


def _like(current, saved: np.ndarray):
    """`saved` (an array checked for kind and shape) in the Python type of `current`."""
    if isinstance(current, tuple):
        return tuple(float(x) for x in saved.ravel())
    if isinstance(current, bool):
        return bool(saved)
    return float(saved)
