"""Saving and loading weights: our own .npz checkpoints, and PyTorch state dicts.

Checkpoints are one .npz file (a zip of .npy arrays), written with np.savez and read with
np.load(path, allow_pickle=False). Keys:

    model/<dotted name>     a parameter, e.g. model/attn.qkv.weight, in our layout
    optim/<key>             the optimizer's state_dict() (see tinyvision.optim)
    meta/format_version     1
    meta/step               the training step, when given
    meta/optimizer          the optimizer's class name, e.g. "AdamW", when one was saved

Why not pickle (what torch.save uses): unpickling runs whatever code the file names, so
loading a downloaded pickle is running a stranger's program. A .npz of plain numeric arrays
holds data only, and allow_pickle=False makes NumPy refuse anything else (an object array).

Weight layout. Our Linear computes y = x W + b with W of shape (in, out), the way the math is
written. PyTorch's nn.Linear stores weight as (out, in) and computes y = x W^T + b. So a
PyTorch Linear weight must be transposed on the way in, and back on the way out. Which
parameters need that is each layer's business: a layer class that stores something in a
different layout defines `from_torch_layout(name, array)` and `to_torch_layout(name, array)`
(Linear does); layers without them (LayerNorm, Embedding) store PyTorch's layout already.
`load_torch_state_dict` and `torch_state_dict` ask the layer that owns each parameter.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

__all__ = ["load_checkpoint", "load_torch_state_dict", "save_checkpoint", "torch_state_dict"]

FORMAT_VERSION = 1


# --- our checkpoints -------------------------------------------------------------------------
def save_checkpoint(path, module, optimizer=None, step: int | None = None) -> None:
    """Write the module's parameters (and the optimizer's state, and the step) to one .npz file.

    The file is written to path + ".tmp" and then renamed, so a run killed mid-save leaves the
    previous checkpoint intact. The file is named exactly `path` (np.savez given a file name
    would append ".npz").
    """
    path = os.fspath(path)
    arrays = {f"model/{name}": value for name, value in module.state_dict().items()}
    arrays["meta/format_version"] = np.asarray(FORMAT_VERSION)
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"save_checkpoint: step must be an integer >= 0 or None, got {step!r}")
        arrays["meta/step"] = np.asarray(step, dtype=np.int64)
    if optimizer is not None:
        arrays["meta/optimizer"] = np.asarray(type(optimizer).__name__)
        arrays.update({f"optim/{key}": np.asarray(value) for key, value in optimizer.state_dict().items()})
    bad = [key for key, value in arrays.items() if value.dtype == object]
    if bad:  # cannot happen with our own state dicts; guards the no-pickle promise anyway
        raise TypeError(f"save_checkpoint: {bad} would be stored as Python objects (pickle)")

    with open(path + ".tmp", "wb") as f:
        np.savez(f, **arrays)
    os.replace(path + ".tmp", path)


def _read_npz(path: str, who: str) -> dict:
    """Every array in the .npz at `path`, read without pickle; clear errors for anything else."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{who}: no checkpoint file at {path!r}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        # A pickle or a text file gives ValueError; an empty or truncated file EOFError / BadZipFile.
        raise ValueError(f"{who}: {path!r} is not a .npz checkpoint ({err})") from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{who}: {path!r} holds a single .npy array, not a .npz checkpoint")
    with npz:
        try:
            return {key: npz[key] for key in npz.files}
        except ValueError as err:  # an object array, refused because it would need pickle
            raise ValueError(f"{who}: {path!r} holds an array that only pickle can read ({err})") from err


def load_checkpoint(path, module, optimizer=None, strict: bool = True) -> dict:
    """Load a file written by `save_checkpoint` into `module` (and `optimizer`); return its metadata.

    Returns {"format_version": int, "step": int or None, "optimizer": class name or None}, plus
    "missing" and "unexpected" model keys when strict=False. Everything is checked before
    anything is loaded: wrong shapes always raise ValueError; with strict=True, missing or
    unexpected keys raise KeyError. Every message names the keys and the file.
    """
    path = os.fspath(path)
    who = f"load_checkpoint({path!r})"
    arrays = _read_npz(path, who)
    model = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optim = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    meta = {k[len("meta/"):]: v for k, v in arrays.items() if k.startswith("meta/")}
    stray = sorted(k for k in arrays if not k.startswith(("model/", "optim/", "meta/")))
    if "format_version" not in meta:
        raise ValueError(f"{who}: no meta/format_version key, so this is not a tinyvision checkpoint "
                         f"(its keys begin {sorted(arrays)[:5]})")
    if int(meta["format_version"]) != FORMAT_VERSION:
        raise ValueError(f"{who}: checkpoint format version {int(meta['format_version'])}, this code reads "
                         f"version {FORMAT_VERSION}")

    own = dict(module.named_parameters())
    missing = [k for k in own if k not in model]
    unexpected = [k for k in model if k not in own] + stray
    if strict and (missing or unexpected):
        raise KeyError(f"{who}: missing keys {missing}, unexpected keys {unexpected} "
                       "(pass strict=False to load the keys that do match)")
    wrong = [f"{k}: file {v.shape} vs model {own[k].shape}"
             for k, v in model.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise ValueError(f"{who}: shape mismatch for " + "; ".join(wrong))

    saved_optimizer = meta["optimizer"].item() if "optimizer" in meta else None
    if optimizer is not None:
        if saved_optimizer is None:
            raise KeyError(f"{who}: an optimizer was passed but the file holds no optimizer state")
        if saved_optimizer != type(optimizer).__name__:
            raise ValueError(f"{who}: the file holds {saved_optimizer} state, the optimizer is a "
                             f"{type(optimizer).__name__}")
        try:  # checks everything, then loads; so if it raises, nothing has changed
            optimizer.load_state_dict(optim)
        except (KeyError, ValueError) as err:
            raise type(err)(f"{who}: {err.args[0]}") from err

    module.load_state_dict({k: v for k, v in model.items() if k in own}, strict=False)
    out = {"format_version": int(meta["format_version"]),
           "step": int(meta["step"]) if "step" in meta else None,
           "optimizer": saved_optimizer}
    if not strict:
        out.update(missing=missing, unexpected=unexpected)
    return out


# --- PyTorch state dicts ---------------------------------------------------------------------
def _owner(modules: dict, name: str):
    """(the module that owns parameter `name`, the parameter's local name): 'attn.qkv.weight' -> (qkv, 'weight')."""
    prefix, _, local = name.rpartition(".")
    return modules[prefix], local


def _from_torch(owner, local: str, array):
    convert = getattr(type(owner), "from_torch_layout", None)
    return convert(local, array) if convert is not None else array


def _to_torch(owner, local: str, array):
    convert = getattr(type(owner), "to_torch_layout", None)
    return convert(local, array) if convert is not None else array


def torch_state_dict(module) -> dict:
    """{dotted name: NumPy array in PyTorch's layout}: the inverse of `load_torch_state_dict`."""
    modules = dict(module.named_modules())
    return {name: np.ascontiguousarray(_to_torch(*_owner(modules, name), p.numpy()))
            for name, p in module.named_parameters()}


def load_torch_state_dict(module, state: dict, strict: bool = True) -> dict:
    """Load a PyTorch / timm state dict into `module`, converting each layout through its layer.

    `state` maps dotted names to arrays in PyTorch's layout: NumPy arrays, or anything
    np.asarray accepts. From PyTorch that is `{k: v.numpy() for k, v in sd.items()}`, or
    `sd` itself for a CPU float32 state dict (bfloat16 must be cast with .float() first).
    Torch is never imported here.

    With strict=True, missing, unexpected and mis-shaped keys are reported together, by
    name, in one ValueError. With strict=False the matching keys are loaded and the rest
    returned: {"missing": [...], "unexpected": [...], "mismatched": [...]}; buffers that we do
    not model (BatchNorm's running statistics, say) appear under "unexpected".
    """
    modules = dict(module.named_modules())
    own = dict(module.named_parameters())
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched, converted = [], {}
    for name, p in own.items():
        if name not in state:
            continue
        owner, local = _owner(modules, name)
        array = np.asarray(state[name])
        # The torch shape we need: our shape passed through the layer's layout (on a free view).
        expected = _to_torch(owner, local, np.broadcast_to(np.uint8(0), p.shape)).shape
        if array.shape != expected:
            mismatched.append(f"{name}: torch shape {array.shape}, expected torch shape {expected}")
        else:
            converted[name] = _from_torch(owner, local, array)
    if strict and (missing or unexpected or mismatched):
        raise ValueError(f"load_torch_state_dict({type(module).__name__}): missing keys {missing}; "
                         f"unexpected keys {unexpected}; mismatched shapes {mismatched} "
                         "(pass strict=False to load the keys that do match)")
    module.load_state_dict(converted, strict=False)
    return {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}
