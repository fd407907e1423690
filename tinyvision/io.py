"""Saving and loading weights: our own .npz checkpoints, and PyTorch state dicts.

Checkpoints are one .npz file (a zip of .npy arrays, what np.savez writes and np.load reads).
Keys:

    model/<dotted name>     a parameter, e.g. model/attn.qkv.weight, in our layout
    optim/<key>             the optimizer's state_dict() (see tinyvision.optim)
    meta/format_version     1
    meta/step               the training step, when given
    meta/optimizer          the optimizer's class name, e.g. "AdamW", when one was saved

Why not pickle (what torch.save uses): unpickling runs whatever code the file names, so
loading a downloaded pickle is running a stranger's program. A .npz of plain numeric arrays
holds data only; arrays are written and read with allow_pickle=False, so an object array is
refused both ways.

Loading is all or nothing. Every key, shape, dtype and meta value is checked before the first
parameter is written, so a bad file leaves the model and the optimizer exactly as they were.
And a file is sized before it is read: each zip member declares its uncompressed size, and each
.npy starts with a short header (shape, dtype). Both are checked against what the model expects
before any array data is inflated, so a small file that would inflate to gigabytes (a "zip
bomb") is refused after reading a few hundred bytes of it.

Weight layout. Our Linear computes y = x W + b with W of shape (in, out), the way the math is
written. PyTorch's nn.Linear stores weight as (out, in) and computes y = x W^T + b. So a
PyTorch Linear weight must be transposed on the way in, and back on the way out. Which
parameters need that is each layer's business: a layer class that stores something in a
different layout defines `from_torch_layout(name, array)` and `to_torch_layout(name, array)`
(Linear does); layers without them (LayerNorm, Embedding) store PyTorch's layout already.
`load_torch_state_dict` and `torch_state_dict` ask the layer that owns each parameter.
"""
from __future__ import annotations

import io
import math
import os
import struct
import zipfile
import zlib

import numpy as np

from .checks import is_int

__all__ = ["load_checkpoint", "load_torch_state_dict", "save_checkpoint", "torch_state_dict"]

FORMAT_VERSION = 1
NPY_MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 64 * 1024   # np.save writes headers of ~128 bytes; the format itself allows 4 GiB
MAX_NAME_CHARS = 64            # meta/optimizer: a class name
LOAD_ERRORS = (KeyError, TypeError, ValueError)
# What reading a damaged member can raise: zipfile (a bad CRC, a bad local header), zlib, struct,
# NumPy's header parser, and our own short-read checks (ValueError).
MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, SyntaxError, struct.error,
                 NotImplementedError, RuntimeError)


# --- our checkpoints: writing ----------------------------------------------------------------
def save_checkpoint(path, module, optimizer=None, step: int | None = None) -> None:
    """Write the module's parameters (and the optimizer's state, and the step) to one .npz file.

    The file is written to path + ".tmp" and then renamed, so a run killed mid-save leaves the
    previous checkpoint intact; if writing fails the .tmp file is removed. The file is named
    exactly `path` (np.savez given a file name would append ".npz"). Each array is written with
    np.lib.format.write_array(allow_pickle=False), the same bytes np.savez writes.
    """
    path = os.fspath(path)
    if not os.path.basename(path):
        raise ValueError(f"save_checkpoint: path must name a file, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"save_checkpoint: cannot write {path!r}: the folder {folder!r} does not exist "
                                "(create it first, e.g. os.makedirs(folder, exist_ok=True))")
    if step is not None and not is_int(step):
        raise TypeError(f"save_checkpoint: step must be an int >= 0 or None, got {step!r} ({type(step).__name__})")
    if step is not None and step < 0:
        raise ValueError(f"save_checkpoint: step must be an int >= 0 or None, got {step!r}")

    arrays = {f"model/{name}": value for name, value in module.state_dict().items()}
    arrays["meta/format_version"] = np.asarray(FORMAT_VERSION, dtype=np.int64)
    if step is not None:
        arrays["meta/step"] = np.asarray(step, dtype=np.int64)
    if optimizer is not None:
        arrays["meta/optimizer"] = np.asarray(type(optimizer).__name__)
        arrays.update({f"optim/{key}": np.asarray(value) for key, value in optimizer.state_dict().items()})
    bad = [key for key, value in arrays.items() if value.dtype.hasobject]
    if bad:  # cannot happen with our own state dicts; guards the no-pickle promise anyway
        raise TypeError(f"save_checkpoint: {bad} would be stored as Python objects (pickle)")

    tmp = path + ".tmp"
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
            for key, value in arrays.items():
                with archive.open(key + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, value, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException as err:
        # A full disk, a permission error, Ctrl-C: never leave a half-written .tmp behind.
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError):
            raise type(err)(f"save_checkpoint: could not write {path!r} ({err})") from err
        raise


# --- our checkpoints: reading, sizes first -----------------------------------------------------
def _open_archive(path: str, who: str) -> zipfile.ZipFile:
    """The zip archive at `path`, or FileNotFoundError / ValueError saying what the file is instead."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{who}: no checkpoint file at {path!r}")
    with open(path, "rb") as f:
        start = f.read(len(NPY_MAGIC))
    if start == NPY_MAGIC:
        raise ValueError(f"{who}: {path!r} holds a single .npy array, not a .npz checkpoint")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as err:
        raise ValueError(f"{who}: {path!r} is not a .npz checkpoint: not a readable zip archive ({err}); "
                         "is it empty, truncated, or another kind of file (a pickle, text)?") from err


def _members(archive: zipfile.ZipFile, path: str, who: str) -> dict:
    """{key: ZipInfo}; np.savez stores key "model/x" as the member "model/x.npy"."""
    members = {}
    for info in archive.infolist():
        key = info.filename[:-len(".npy")] if info.filename.endswith(".npy") else info.filename
        if key in members:
            raise ValueError(f"{who}: {path!r} holds the member {info.filename!r} twice; which copy is meant "
                             "is ambiguous, so the file is refused")
        members[key] = info
    return members


def _read_exactly(f, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"the member ends after {len(data)} of the {n} bytes of its {what} (truncated)")
    return data


def _read_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple:
    """(shape, dtype, fortran_order, data_offset) from a member's .npy header, inflating only the header.

    The .npy format: 6 bytes magic, 2 bytes version, the header length (2 bytes in version 1.0,
    4 in 2.0), then the header, a Python dict literal {'descr', 'fortran_order', 'shape'}. The
    length is checked before the header is read, so a forged length cannot make us inflate more.
    """
    if info.flag_bits & 0x1:
        raise ValueError("the member is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"compression method {info.compress_type}; np.savez writes stored (0) or deflated (8) members")
    with archive.open(info) as f:
        start = _read_exactly(f, len(NPY_MAGIC) + 2, ".npy magic")
        if start[:len(NPY_MAGIC)] != NPY_MAGIC:
            raise ValueError(f"it is not a .npy array (it starts {start[:len(NPY_MAGIC)]!r})")
        version = tuple(start[len(NPY_MAGIC):])
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy format version {version}; this reader takes 1.0 and 2.0")
        length_format = "<H" if version == (1, 0) else "<I"
        length_bytes = _read_exactly(f, struct.calcsize(length_format), ".npy header length")
        (length,) = struct.unpack(length_format, length_bytes)
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"a .npy header of {length} bytes, expected at most {MAX_HEADER_BYTES}")
        header = _read_exactly(f, length, ".npy header")
    # NumPy's own parser (a literal, never eval'd code) on the bytes read above.
    buffer = io.BytesIO(start + length_bytes + header)
    np.lib.format.read_magic(buffer)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(buffer, max_header_size=MAX_HEADER_BYTES)
    return tuple(shape), dtype, fortran_order, len(start) + len(length_bytes) + length


def _read_data(archive: zipfile.ZipFile, info: zipfile.ZipInfo, header: tuple) -> np.ndarray:
    """The array of a member whose header and declared size were checked; reading to its end checks its CRC."""
    shape, dtype, fortran_order, offset = header
    with archive.open(info) as f:
        _read_exactly(f, offset, ".npy header")
        data = _read_exactly(f, math.prod(shape) * dtype.itemsize, "array data")
        if f.read(1):
            raise ValueError("the member holds bytes after its array")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    return array.copy()  # writable, and owning its memory


def _expected_members(module, optimizer, members: dict) -> tuple:
    """({key: (shape, kinds)} for the members that will be read, [unexpected keys], [missing model keys]).

    kinds are the dtype kinds accepted before reading: numbers (float, int, bool) of at most 8
    bytes for arrays, a short string for meta/optimizer. Finer rules (float for weights, ints
    for counts) are the module's and the optimizer's own checks, run on the arrays once read.
    """
    numeric = "biuf"
    wanted, unexpected = {}, []
    own = dict(module.named_state())
    for name, p in own.items():
        if f"model/{name}" in members:
            wanted[f"model/{name}"] = (tuple(p.shape), numeric)
    meta = {"meta/format_version": ((), numeric), "meta/step": ((), numeric), "meta/optimizer": ((), "U")}
    wanted.update({k: v for k, v in meta.items() if k in members})
    optim_shapes = optimizer.state_dict_shapes() if optimizer is not None else {}
    for key in members:
        if key.startswith("model/") and key[len("model/"):] not in own:
            unexpected.append(key[len("model/"):])
        elif key.startswith("optim/") and optimizer is not None:
            if key[len("optim/"):] in optim_shapes:
                wanted[key] = (tuple(optim_shapes[key[len("optim/"):]]), numeric)
        elif not key.startswith(("model/", "optim/")) and key not in meta:
            unexpected.append(key)  # a stray key, or a meta key this version does not know
    missing = [name for name in own if f"model/{name}" not in members]
    return wanted, unexpected, missing


def _header_problem(key: str, header: tuple, wanted: tuple, info: zipfile.ZipInfo) -> str | None:
    """What is wrong with a member, judged from its .npy header and its declared size alone, or None."""
    shape, dtype, _, offset = header
    expected_shape, kinds = wanted
    if shape != expected_shape:
        if key.startswith("model/"):
            return f"{key[len('model/'):]}: file {shape} vs model {expected_shape}"
        return f"{key}: file {shape} vs expected {expected_shape}"
    if kinds == "U" and (dtype.kind != "U" or dtype.itemsize > 4 * MAX_NAME_CHARS):
        return f"{key}: file dtype {dtype}, expected a string of at most {MAX_NAME_CHARS} characters"
    if kinds != "U" and (dtype.kind not in kinds or dtype.itemsize > 8):
        return f"{key}: file dtype {dtype}, expected numbers of at most 8 bytes (float, int, bool)"
    if info.file_size != offset + math.prod(shape) * dtype.itemsize:
        return (f"{key}: the zip declares {info.file_size} bytes but its .npy header ({shape}, {dtype}) "
                f"makes {offset + math.prod(shape) * dtype.itemsize}")
    return None


def _read_checked(archive, members: dict, headers: dict, wanted: dict, keys: list, who: str) -> dict:
    """{key: array} for `keys`, after every one of them passed `_header_problem`: sizes before data."""
    wrong = [problem for key in keys if (problem := _header_problem(key, headers[key], wanted[key], members[key]))]
    if wrong:
        raise ValueError(f"{who}: shape mismatch or bad sizes for " + "; ".join(wrong))
    arrays = {}
    for key in keys:
        try:
            arrays[key] = _read_data(archive, members[key], headers[key])
        except MEMBER_ERRORS as err:
            raise ValueError(f"{who}: member {members[key].filename!r} is damaged: {err}") from err
    return arrays


def _check_meta(arrays: dict, optimizer, who: str) -> dict:
    """{"format_version", "step", "optimizer"} from the meta/ arrays, each checked for kind and value."""
    def count(key, low):
        value = arrays[key]
        if value.dtype.kind not in "iu":
            raise ValueError(f"{who}: {key} holds a {value.dtype} value {value!r}, expected an integer >= {low}")
        if value < low:
            raise ValueError(f"{who}: {key} is {int(value)}, expected an integer >= {low}")
        return int(value)

    version = count("meta/format_version", 0)
    if version != FORMAT_VERSION:
        raise ValueError(f"{who}: checkpoint format version {version}, this code reads version {FORMAT_VERSION}")
    step = count("meta/step", 0) if "meta/step" in arrays else None
    saved_optimizer = str(arrays["meta/optimizer"]) if "meta/optimizer" in arrays else None
    if saved_optimizer is not None and not saved_optimizer.isidentifier():
        raise ValueError(f"{who}: meta/optimizer is {saved_optimizer!r}, expected a class name such as 'AdamW'")
    if optimizer is not None:
        if saved_optimizer is None:
            raise KeyError(f"{who}: an optimizer was passed but the file holds no optimizer state")
        if saved_optimizer != type(optimizer).__name__:
            raise ValueError(f"{who}: the file holds {saved_optimizer} state, the optimizer is a "
                             f"{type(optimizer).__name__}")
    return {"format_version": version, "step": step, "optimizer": saved_optimizer}


def load_checkpoint(path, module, optimizer=None, strict: bool = True) -> dict:
    """Load a file written by `save_checkpoint` into `module` (and `optimizer`); return its metadata.

    Returns {"format_version": int, "step": int or None, "optimizer": class name or None}, plus
    "missing" and "unexpected" model keys when strict=False.

    All or nothing: the file is checked in full before anything is written, so on any error the
    module and the optimizer are exactly as before. In order:
      1. the file is a zip archive (ValueError naming the file otherwise);
      2. the members that will be read (the model's keys, the optimizer's, meta/) are sized from
         the zip's declared sizes alone, before anything is inflated: none may be larger than a
         header plus its expected shape in 8-byte numbers;
      3. their .npy headers (a few hundred bytes each): an object array (pickle) is refused;
      4. meta/format_version, meta/step (integers >= 0) and meta/optimizer (the optimizer's class);
      5. keys: with strict=True, missing or unexpected model keys raise KeyError; unknown or
         missing optimizer keys always do (unknown ones are never read);
      6. each header against what is expected: the parameter's shape, a numeric dtype (no
         strings), and a declared size equal to the header plus exactly its data;
      7. the data, read and checked against the zip's CRC (a corrupt member is a ValueError);
      8. values: float weights for float parameters, then the optimizer's own checks (through
         `Module.check_state_dict` and `Optimizer.check_state_dict`).
    Apart from KeyError for keys, everything wrong in the file is a ValueError naming the file,
    the key, what was found and what was expected.
    """
    path = os.fspath(path)
    who = f"load_checkpoint({path!r})"
    with _open_archive(path, who) as archive:
        members = _members(archive, path, who)
        wanted, unexpected, missing = _expected_members(module, optimizer, members)

        # Sizes first, from the zip's central directory alone: nothing is inflated yet. A member we
        # read holds at most a header and prod(shape) numbers of 8 bytes (or a short string).
        too_big = []
        for key, (shape, kinds) in wanted.items():
            bound = MAX_HEADER_BYTES + 16 + (4 * MAX_NAME_CHARS if kinds == "U" else 8 * math.prod(shape))
            if members[key].file_size > bound:
                too_big.append(f"{key}: declares {members[key].file_size} bytes, expected at most {bound} "
                               f"for shape {shape}")
        if too_big:
            raise ValueError(f"{who}: members larger than the model allows (refused before reading them): "
                             + "; ".join(too_big))

        headers = {}
        for key in wanted:
            try:
                headers[key] = _read_header(archive, members[key])
            except MEMBER_ERRORS as err:
                raise ValueError(f"{who}: member {members[key].filename!r} is damaged: {err}") from err
        pickled = [key for key, (_, dtype, _, _) in headers.items() if dtype.hasobject]
        if pickled:
            raise ValueError(f"{who}: {path!r} holds an array that only pickle can read: {pickled} are object "
                             "arrays, refused (allow_pickle=False)")

        if "meta/format_version" not in members:
            raise ValueError(f"{who}: no meta/format_version key, so this is not a tinyvision checkpoint "
                             f"(its keys begin {sorted(members)[:5]})")
        # The meta values first (a few bytes): they say which optimizer the optim/ keys belong to.
        arrays = _read_checked(archive, members, headers, wanted, [k for k in headers if k.startswith("meta/")], who)
        out = _check_meta(arrays, optimizer, who)

        if strict and (missing or unexpected):
            raise KeyError(f"{who}: missing keys {missing}, unexpected keys {unexpected} "
                           "(pass strict=False to load the keys that do match)")
        if optimizer is not None:
            shapes = optimizer.state_dict_shapes()
            saved = {key[len("optim/"):] for key in members if key.startswith("optim/")}
            optim_missing = sorted(k for k in shapes if k.startswith("param_groups.") and k not in saved)
            optim_unexpected = sorted(saved - set(shapes))
            if optim_missing or optim_unexpected:
                raise KeyError(f"{who}: optimizer state: missing keys {optim_missing}, unexpected keys "
                               f"{optim_unexpected} ({type(optimizer).__name__} keeps buffers "
                               f"{list(optimizer.state_names)})")
        arrays.update(_read_checked(archive, members, headers, wanted,
                                    [k for k in headers if not k.startswith("meta/")], who))

    model = {key[len("model/"):]: value for key, value in arrays.items() if key.startswith("model/")}
    try:
        values, _ = module.check_state_dict(model, strict=False)
        checked_optimizer = None
        if optimizer is not None:
            optim = {key[len("optim/"):]: value for key, value in arrays.items() if key.startswith("optim/")}
            checked_optimizer = optimizer.check_state_dict(optim)
    except LOAD_ERRORS as err:
        raise (KeyError if isinstance(err, KeyError) else ValueError)(f"{who}: {err.args[0]}") from err

    # Everything is checked: from here on nothing can fail, so the model and the optimizer change together.
    module.assign_checked(values)
    if optimizer is not None:
        optimizer.assign_checked(checked_optimizer)
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


def _is_batch_counter(modules: dict, key: str) -> bool:
    """True for "<path>.num_batches_tracked" where <path> is one of the module's batch-norm layers."""
    path, _, local = key.rpartition(".")
    return local == "num_batches_tracked" and hasattr(modules.get(path), "running_var")


def torch_state_dict(module) -> dict:
    """{dotted name: NumPy array in PyTorch's layout}: the inverse of `load_torch_state_dict`."""
    modules = dict(module.named_modules())
    return {name: np.ascontiguousarray(_to_torch(*_owner(modules, name), p.numpy()))
            for name, p in module.named_state()}


def load_torch_state_dict(module, state: dict, strict: bool = True) -> dict:
    """Load a PyTorch / timm state dict into `module`, converting each layout through its layer.

    `state` maps dotted names to arrays in PyTorch's layout: NumPy arrays, or anything
    np.asarray accepts. From PyTorch that is `{k: v.numpy() for k, v in sd.items()}`, or
    `sd` itself for a CPU float32 state dict (bfloat16 must be cast with .float() first).
    Torch is never imported here.

    All or nothing: everything is checked before the first parameter is written. With
    strict=True, missing, unexpected and mis-shaped keys are reported together, by name, in
    one ValueError. With strict=False the matching keys are loaded and the rest returned:
    {"missing": [...], "unexpected": [...], "mismatched": [...]}; buffers are loaded like
    parameters (batch norm's running statistics), and batch norm's num_batches_tracked is skipped. An entry that is not a
    float array (a string, an object, an integer tensor) is a TypeError whatever `strict` is.
    """
    who = f"load_torch_state_dict({type(module).__name__})"
    if not hasattr(state, "keys") or not hasattr(state, "__getitem__"):
        raise TypeError(f"{who}: state must be a dict of arrays, got {type(state).__name__}")
    modules = dict(module.named_modules())
    own = dict(module.named_state())
    missing = [k for k in own if k not in state]
    # PyTorch's batch norm also saves num_batches_tracked, a step counter used only when momentum is None
    # (a cumulative average); tinyvision's batch norm always has a momentum, so the counter is not needed
    unexpected = [k for k in state.keys() if k not in own and not _is_batch_counter(modules, k)]
    mismatched, converted, wrong_kind = [], {}, []
    for name, p in own.items():
        if name not in state:
            continue
        owner, local = _owner(modules, name)
        try:
            array = np.asarray(state[name])
        except (TypeError, ValueError, RuntimeError) as err:  # a bfloat16 torch tensor, say
            wrong_kind.append(f"{name}: a {type(state[name]).__name__} NumPy cannot read ({err})")
            continue
        if array.dtype.kind != "f":
            wrong_kind.append(f"{name}: a {array.dtype} array, expected floats")
            continue
        # The torch shape we need: our shape passed through the layer's layout (on a free view).
        expected = _to_torch(owner, local, np.broadcast_to(np.uint8(0), p.shape)).shape
        if array.shape != expected:
            mismatched.append(f"{name}: torch shape {array.shape}, expected torch shape {expected}")
        else:
            converted[name] = _from_torch(owner, local, array)
    if wrong_kind:
        raise TypeError(f"{who}: not float arrays: " + "; ".join(wrong_kind))
    if strict and (missing or unexpected or mismatched):
        raise ValueError(f"{who}: missing keys {missing}; unexpected keys {unexpected}; mismatched shapes "
                         f"{mismatched} (pass strict=False to load the keys that do match)")
    try:
        values, _ = module.check_state_dict(converted, strict=False)
    except LOAD_ERRORS as err:
        raise type(err)(f"{who}: {err.args[0]}") from err
    module.assign_checked(values)
    return {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}
