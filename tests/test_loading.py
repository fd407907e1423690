"""Loading is all or nothing: every way a checkpoint or a state dict can be wrong leaves the model
AND the optimizer bit-identical (every array hashed before and after), with an error that names
the file and the key. Also: files are sized before they are inflated, saving cleans up after
itself, and a ViT that cannot be built says which argument is wrong."""
import hashlib
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyvision as tv
from tinyvision import nn
from tinyvision.io import load_checkpoint, load_torch_state_dict, save_checkpoint, torch_state_dict
from tinyvision.models import ViT
from tinyvision.optim import SGD, AdamW, param_groups_no_decay


# --- a model and an optimizer with state, and their fingerprint -------------------------------------
def trained(seed, steps=2):
    """A TransformerBlock and an AdamW (two groups) that took `steps` steps: every buffer is set."""
    model = nn.TransformerBlock(16, 4, seed=seed)
    optimizer = AdamW(param_groups_no_decay(model, 0.05), lr=1e-2)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = tv.Tensor(rng.standard_normal((2, 5, 16)).astype(np.float32))
        optimizer.zero_grad()
        (model(x) ** 2).mean().backward()
        optimizer.step()
    return model, optimizer


def digest(value) -> tuple:
    array = np.asarray(value)
    return array.dtype.str, array.shape, hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def fingerprint(model, optimizer=None) -> dict:
    """A hash of every parameter, every optimizer buffer and hyperparameter: equal means bit-identical."""
    out = {f"model/{name}": digest(p.numpy()) for name, p in model.named_parameters()}
    if optimizer is not None:
        for i, group in enumerate(optimizer.param_groups):
            out.update({f"group{i}/{k}": repr(v) for k, v in group.items() if k != "params"})
            out[f"group{i}/params"] = [id(p) for p in group["params"]]
            for j, p in enumerate(group["params"]):
                for name, value in optimizer.state.get(id(p), {}).items():
                    out[f"state{i}.{j}/{name}"] = digest(value) if isinstance(value, np.ndarray) else repr(value)
    return out


def read_arrays(path) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def write_arrays(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # np.savez may write object arrays (pickle): the reader must refuse them


@pytest.fixture
def saved(tmp_path):
    """(path of a checkpoint of a trained model + AdamW at step 5, the names of its last entries)."""
    model, optimizer = trained(0)
    path = tmp_path / "run.npz"
    save_checkpoint(path, model, optimizer, step=5)
    last_param = list(model.state_dict())[-1]
    last_buffer = max((k for k in optimizer.state_dict() if k.startswith("state.")), key=lambda k: int(k.split(".")[1]))
    return path, last_param, last_buffer.rsplit(".", 1)[0]


# --- every way the arrays of a checkpoint can be wrong -----------------------------------------------------
# (id, change to the dict of arrays, error type, regex the message must match). Bad values go on the LAST
# parameter or buffer, so a loader that writes as it goes would already have overwritten the others.
def _set(key, value):
    return lambda a, last, buf: a.update({key.format(last=last, buf=buf): value})


def _delete(key):
    return lambda a, last, buf: a.pop(key.format(last=last, buf=buf))


def _as(key, dtype):
    def change(a, last, buf):
        key_ = key.format(last=last, buf=buf)
        a[key_] = a[key_].astype(dtype)
    return change


ARRAY_CASES = [
    ("missing model key", _delete("model/{last}"), KeyError, r"missing keys \['mlp\.fc2\.bias'\]"),
    ("extra model key", _set("model/head.weight", np.zeros((16, 3), np.float32)), KeyError, r"unexpected keys \['head\.weight'\]"),
    ("stray key", _set("notes", np.zeros(2)), KeyError, r"unexpected keys \['notes'\]"),
    ("unknown meta key", _set("meta/epoch", np.asarray(3)), KeyError, r"unexpected keys \['meta/epoch'\]"),
    ("wrong shape", _set("model/{last}", np.zeros(15, np.float32)), ValueError, r"mlp\.fc2\.bias: file \(15,\) vs model \(16,\)"),
    ("string array of the right shape", _as("model/{last}", "<U8"), ValueError, r"model/mlp\.fc2\.bias: file dtype <U8"),
    ("bytes array of the right shape", _as("model/{last}", "S8"), ValueError, r"model/mlp\.fc2\.bias: file dtype \|S8"),
    ("object array of the right shape", _as("model/{last}", object), ValueError, r"only pickle can read.*mlp\.fc2\.bias"),
    ("int array for a float weight", _as("model/{last}", np.int64), ValueError, r"mlp\.fc2\.bias: a int64 array, expected a floating-point"),
    ("bool array for a float weight", _as("model/{last}", bool), ValueError, r"mlp\.fc2\.bias: a bool array"),
    ("complex array", _as("model/{last}", np.complex64), ValueError, r"mlp\.fc2\.bias: file dtype complex64"),
    ("float64 that overflows float32", _set("model/{last}", np.full(16, 1e300)), ValueError, r"mlp\.fc2\.bias.*overflow"),
    ("NaN step", _set("meta/step", np.asarray(np.nan)), ValueError, r"meta/step holds a float64 value"),
    ("fractional step", _set("meta/step", np.asarray(2.5)), ValueError, r"meta/step holds a float64"),
    ("negative step", _set("meta/step", np.asarray(-1)), ValueError, r"meta/step is -1, expected an integer >= 0"),
    ("string step", _set("meta/step", np.asarray("5")), ValueError, r"meta/step: file dtype <U1"),
    ("step of shape (2,)", _set("meta/step", np.asarray([5, 6])), ValueError, r"meta/step: file \(2,\) vs expected \(\)"),
    ("bool step", _set("meta/step", np.asarray(True)), ValueError, r"meta/step holds a bool"),
    ("format version 2", _set("meta/format_version", np.asarray(2)), ValueError, r"format version 2, this code reads version 1"),
    ("format version as a float", _set("meta/format_version", np.asarray(1.0)), ValueError, r"meta/format_version holds a float64"),
    ("no format version", _delete("meta/format_version"), ValueError, r"not a tinyvision checkpoint"),
    ("optimizer name of another class", _set("meta/optimizer", np.asarray("SGD")), ValueError, r"holds SGD state, the optimizer is a AdamW"),
    ("optimizer name that is a number", _set("meta/optimizer", np.asarray(3)), ValueError, r"meta/optimizer: file dtype int64"),
    ("optimizer name that is no name", _set("meta/optimizer", np.asarray("Adam W!")), ValueError, r"meta/optimizer is 'Adam W!'"),
    ("no optimizer state", _delete("meta/optimizer"), KeyError, r"no optimizer state"),
    ("missing optimizer group key", _delete("optim/param_groups.1.lr"), KeyError, r"missing keys \['param_groups\.1\.lr'\]"),
    ("extra optimizer key", _set("optim/state.0.momentum_buffer", np.zeros(1)), KeyError, r"unexpected keys \['state\.0\.momentum_buffer'\]"),
    ("optimizer buffers of a third group", _set("optim/param_groups.2.lr", np.asarray(0.1)), KeyError, r"unexpected keys \['param_groups\.2\.lr'\]"),
    ("optimizer buffer of the wrong shape", _set("optim/{buf}.exp_avg", np.zeros(3)), ValueError, r"exp_avg: file \(3,\) vs expected \(16,\)"),
    ("optimizer buffer of strings", _as("optim/{buf}.exp_avg_sq", "<U4"), ValueError, r"exp_avg_sq: file dtype <U4"),
    ("optimizer buffer of ints", _as("optim/{buf}.exp_avg_sq", np.int32), ValueError, r"exp_avg_sq holds int32 values, expected floats"),
    ("optimizer step NaN", _set("optim/{buf}.step", np.asarray(np.nan)), ValueError, r"\.step holds float64 values, expected integers"),
    ("optimizer step negative", _set("optim/{buf}.step", np.asarray(-3)), ValueError, r"\.step is -3, expected a count >= 0"),
    ("optimizer with part of its buffers", _delete("optim/{buf}.exp_avg"), KeyError, r"has \['exp_avg_sq', 'step'\], expected all of"),
    ("optimizer lr NaN", _set("optim/param_groups.1.lr", np.asarray(np.nan)), ValueError, r"param_groups\[1\]: lr must be a finite number"),
    ("optimizer lr a string", _set("optim/param_groups.1.lr", np.asarray("0.1")), ValueError, r"param_groups\.1\.lr: file dtype <U3"),
    ("optimizer betas of three", _set("optim/param_groups.0.betas", np.asarray([0.9, 0.99, 0.5])), ValueError, r"betas: file \(3,\) vs expected \(2,\)"),
    ("optimizer beta of 1", _set("optim/param_groups.0.betas", np.asarray([0.9, 1.0])), ValueError, r"betas\[1\] must be"),
    ("optimizer indices of other parameters", _set("optim/param_groups.1.params", np.arange(1, 1 + 8)), ValueError, r"param_groups\[1\] holds parameters"),
    ("optimizer indices as floats", _as("optim/param_groups.0.params", np.float64), ValueError, r"params holds float64 values, expected integers"),
]


@pytest.mark.parametrize("change, error, message", [c[1:] for c in ARRAY_CASES], ids=[c[0] for c in ARRAY_CASES])
def test_bad_checkpoint_leaves_model_and_optimizer_bit_identical(saved, change, error, message):
    path, last, buf = saved
    arrays = read_arrays(path)
    change(arrays, last, buf)
    write_arrays(path, arrays)
    model, optimizer = trained(1, steps=3)   # other weights, other buffers, another step count
    before = fingerprint(model, optimizer)
    with pytest.raises(error, match=message) as err:
        load_checkpoint(path, model, optimizer)
    assert str(path) in str(err.value), f"the message does not name the file: {err.value}"
    assert fingerprint(model, optimizer) == before


def test_a_good_checkpoint_still_loads_into_the_model_a_bad_one_left_alone(saved):
    path, last, _ = saved
    model, optimizer = trained(1, steps=3)
    good = read_arrays(path)
    write_arrays(path, {**good, "meta/step": np.asarray(np.nan)})
    with pytest.raises(ValueError):
        load_checkpoint(path, model, optimizer)
    write_arrays(path, good)
    assert load_checkpoint(path, model, optimizer)["step"] == 5
    source, source_optimizer = trained(0)
    assert fingerprint(model, optimizer) == {**fingerprint(source, source_optimizer),
                                             **{k: v for k, v in fingerprint(model, optimizer).items() if "/params" in k}}


# --- every way the file itself can be wrong --------------------------------------------------------------
def member_span(path, name) -> tuple:
    """(offset of the member's data in the file, its size): where to damage it."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_length + extra_length, info.compress_size


def truncate(path, last):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def flip_a_data_byte(path, last):
    start, size = member_span(path, f"model/{last}.npy")
    data = bytearray(path.read_bytes())
    data[start + size - 3] ^= 0xFF          # inside the array data, past the .npy header
    path.write_bytes(bytes(data))


def flip_a_header_byte(path, last):
    start, _ = member_span(path, f"model/{last}.npy")
    data = bytearray(path.read_bytes())
    data[start + 20] ^= 0x55                # inside the .npy header's dict literal
    path.write_bytes(bytes(data))


def random_bytes(path, last):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())


def pickle_bytes(path, last):
    path.write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.")


def single_npy(path, last):
    with open(path, "wb") as f:
        np.save(f, np.ones(16, np.float32))


def rewrite_zip(path, edit):
    """Copy the archive at `path` member by member through `edit(archive_out, name, bytes)`."""
    with zipfile.ZipFile(path) as archive:
        items = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for name, data in items:
            edit(out, name, data)


def duplicate_member(path, last):
    def edit(out, name, data):
        out.writestr(name, data)
        if name == f"model/{last}.npy":
            with pytest.warns(UserWarning, match="Duplicate name"):
                out.writestr(name, data)
    rewrite_zip(path, edit)


def bytes_after_the_array(path, last):
    rewrite_zip(path, lambda out, name, data: out.writestr(name, data + (b"\0" * 64 if name == f"model/{last}.npy" else b"")))


def forged_header_length(path, last):
    def edit(out, name, data):
        if name == f"model/{last}.npy":   # version 2.0, a header "length" of 3 GB
            data = b"\x93NUMPY\x02\x00" + struct.pack("<I", 3 * 2**30) + data[10:]
        out.writestr(name, data)
    rewrite_zip(path, edit)


def npy_version_3(path, last):
    rewrite_zip(path, lambda out, name, data: out.writestr(
        name, data[:6] + b"\x03\x00" + data[8:] if name == f"model/{last}.npy" else data))


def not_an_npy_member(path, last):
    rewrite_zip(path, lambda out, name, data: out.writestr(name, b"hello" * 30 if name == f"model/{last}.npy" else data))


def encrypted_flag(path, last):
    """Mark the member encrypted (bit 0 of the flags, in the central directory)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"model/{last}.npy")
    data = bytearray(path.read_bytes())
    name = f"model/{last}.npy".encode()
    central = data.find(b"PK\x01\x02")      # the central directory entries, each with its name at +46
    while data[central + 46:central + 46 + len(name)] != name:
        central = data.find(b"PK\x01\x02", central + 4)
    data[central + 8] |= 0x1
    path.write_bytes(bytes(data))
    assert info.flag_bits & 0x1 == 0


FILE_CASES = [
    ("truncated file", truncate, r"is not a \.npz checkpoint: not a readable zip archive"),
    ("corrupt member data", flip_a_data_byte, r"member 'model/mlp\.fc2\.bias\.npy' is damaged: Bad CRC-32"),
    ("corrupt member header", flip_a_header_byte, r"member 'model/mlp\.fc2\.bias\.npy' is damaged"),
    ("not a zip", random_bytes, r"is not a \.npz checkpoint"),
    ("a pickle", pickle_bytes, r"is not a \.npz checkpoint"),
    ("a single .npy", single_npy, r"holds a single \.npy array"),
    ("a member twice", duplicate_member, r"holds the member 'model/mlp\.fc2\.bias\.npy' twice"),
    ("bytes after the array", bytes_after_the_array, r"mlp\.fc2\.bias: the zip declares \d+ bytes but its \.npy header"),
    ("forged header length", forged_header_length, r"a \.npy header of 3221225472 bytes, expected at most 65536"),
    ("npy format 3.0", npy_version_3, r"\.npy format version \(3, 0\)"),
    ("a member that is no .npy", not_an_npy_member, r"it is not a \.npy array"),
    ("an encrypted member", encrypted_flag, r"the member is encrypted"),
]


@pytest.mark.parametrize("damage, message", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_damaged_file_gives_value_error_naming_it_and_changes_nothing(saved, damage, message):
    path, last, _ = saved
    damage(path, last)
    model, optimizer = trained(1, steps=3)
    before = fingerprint(model, optimizer)
    with pytest.raises(ValueError, match=message) as err:
        load_checkpoint(path, model, optimizer)
    assert str(path) in str(err.value)
    assert fingerprint(model, optimizer) == before


# --- zip bombs: sizes are checked before anything is inflated -------------------------------------------
def npy_header(shape, dtype="<f4") -> bytes:
    """A .npy 1.0 header for an array of `shape`, as np.save writes it."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def write_bomb(path, key, header, zeros):
    """Replace `key`'s member by a deflated `header` followed by `zeros` zero bytes (1000:1 compression)."""
    arrays = read_arrays(path)
    arrays.pop(key, None)
    write_arrays(path, arrays)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(key + ".npy", "w", force_zip64=True) as member:
            member.write(header)
            chunk = bytes(2**20)
            for _ in range(zeros // len(chunk)):
                member.write(chunk)


class InflationMeter:
    """Counts the bytes that zipfile inflates for us (ZipExtFile.read and read1)."""

    def __init__(self, monkeypatch):
        self.total = 0
        for method in ("read", "read1"):
            original = getattr(zipfile.ZipExtFile, method)

            def counted(f, *args, _original=original, **kwargs):
                data = _original(f, *args, **kwargs)
                self.total += len(data)
                return data
            monkeypatch.setattr(zipfile.ZipExtFile, method, counted)


BOMB_MB = 24  # a 24 MB member compresses to ~25 KB; the model's whole state is ~13 KB


@pytest.mark.parametrize("shape", [(BOMB_MB * 2**18,), (16,)], ids=["header declares a huge shape",
                                                                     "header declares the right shape"])
def test_zip_bomb_is_refused_from_declared_sizes_before_inflating(saved, monkeypatch, shape):
    path, last, _ = saved
    write_bomb(path, f"model/{last}", npy_header(shape), BOMB_MB * 2**20)
    assert os.path.getsize(path) < 200_000
    model, optimizer = trained(1, steps=3)
    before = fingerprint(model, optimizer)
    meter = InflationMeter(monkeypatch)
    with pytest.raises(ValueError, match=r"model/mlp\.fc2\.bias: declares \d+ bytes, expected at most \d+") as err:
        load_checkpoint(path, model, optimizer)
    assert str(path) in str(err.value)
    assert meter.total == 0, f"{meter.total} bytes were inflated before the bomb was refused"
    assert fingerprint(model, optimizer) == before


def test_loading_inflates_only_what_the_model_needs(saved, monkeypatch):
    """An unexpected key under strict=False is never read, however large it declares itself."""
    path, _, _ = saved
    write_bomb(path, "model/huge.extra", npy_header((BOMB_MB * 2**18,)), BOMB_MB * 2**20)
    model, optimizer = trained(1)
    meter = InflationMeter(monkeypatch)
    meta = load_checkpoint(path, model, optimizer, strict=False)
    assert meta["unexpected"] == ["huge.extra"]
    state_bytes = sum(p.numpy().nbytes for p in model.parameters()) * 3 + 2**16  # weights, m and v, headers
    assert meter.total < state_bytes, f"{meter.total} bytes inflated for a state of ~{state_bytes}"


# --- saving ------------------------------------------------------------------------------------------------
def test_saving_into_a_missing_folder_names_the_path_given(tmp_path):
    path = tmp_path / "no" / "such" / "run.npz"
    with pytest.raises(FileNotFoundError, match="save_checkpoint: cannot write") as err:
        save_checkpoint(path, nn.Linear(2, 2, seed=0))
    assert str(path) in str(err.value)
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()],
                         ids=["disk full", "interrupted"])
def test_a_failed_save_leaves_no_tmp_file_and_the_old_checkpoint_intact(tmp_path, monkeypatch, failure):
    path = tmp_path / "run.npz"
    model, optimizer = trained(0)
    save_checkpoint(path, model, optimizer, step=1)
    old = path.read_bytes()
    calls = []

    def failing_write_array(f, array, **kwargs):
        calls.append(1)
        if len(calls) == 5:   # fail midway, after four arrays were written to the .tmp file
            raise failure
        return original(f, array, **kwargs)
    original = np.lib.format.write_array
    monkeypatch.setattr(np.lib.format, "write_array", failing_write_array)
    with pytest.raises(type(failure)) as err:
        save_checkpoint(path, model, optimizer, step=2)
    if isinstance(failure, OSError):
        assert str(path) in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]
    assert path.read_bytes() == old


@pytest.mark.parametrize("step, error", [(True, TypeError), (2.0, TypeError), ("3", TypeError), (-1, ValueError)])
def test_save_checkpoint_step_must_be_a_count(tmp_path, step, error):
    with pytest.raises(error, match=r"save_checkpoint: step must be an int >= 0 or None"):
        save_checkpoint(tmp_path / "x.npz", nn.Linear(2, 2, seed=0), step=step)
    assert os.listdir(tmp_path) == []


def test_saved_checkpoint_reads_with_numpy_alone_and_without_pickle(tmp_path):
    path = tmp_path / "run.npz"
    model, optimizer = trained(0)
    save_checkpoint(path, model, optimizer, step=3)
    arrays = read_arrays(path)   # allow_pickle=False
    assert arrays["meta/step"].dtype == np.int64 and int(arrays["meta/step"]) == 3
    for name, value in model.state_dict().items():
        assert digest(arrays[f"model/{name}"]) == digest(value)


# --- in memory: Module.load_state_dict, Optimizer.load_state_dict, load_torch_state_dict --------------
BAD_VALUES = {
    "string": lambda shape: np.full(shape, "1.0"),
    "object": lambda shape: np.empty(shape, dtype=object),
    "int": lambda shape: np.ones(shape, dtype=np.int64),
    "bool": lambda shape: np.ones(shape, dtype=bool),
    "complex": lambda shape: np.ones(shape, dtype=np.complex128),
    "wrong shape": lambda shape: np.ones(shape + (2,), dtype=np.float32),
    "overflow": lambda shape: np.full(shape, 1e39),
    "a Python string": lambda shape: "weights",
    "None": lambda shape: None,
}


@given(position=st.integers(0, 11), bad=st.sampled_from(sorted(BAD_VALUES)))
def test_module_load_state_dict_refuses_any_bad_entry_before_writing(position, bad):
    source, target = nn.TransformerBlock(16, 4, seed=0), nn.TransformerBlock(16, 4, seed=1)
    state = source.state_dict()
    name = list(state)[position]
    state[name] = BAD_VALUES[bad](state[name].shape)
    before = fingerprint(target)
    with pytest.raises((TypeError, ValueError), match=r"load_state_dict\(TransformerBlock\).*" + name.replace(".", r"\.")):
        target.load_state_dict(state)
    assert fingerprint(target) == before


@given(position=st.integers(0, 11), bad=st.sampled_from(sorted(BAD_VALUES)))
def test_load_torch_state_dict_refuses_any_bad_entry_before_writing(position, bad):
    state = torch_state_dict(nn.TransformerBlock(16, 4, seed=0))
    name = list(state)[position]
    state[name] = BAD_VALUES[bad](state[name].shape)
    target = nn.TransformerBlock(16, 4, seed=1)
    before = fingerprint(target)
    with pytest.raises((TypeError, ValueError), match=name.replace(".", r"\.")):
        load_torch_state_dict(target, state)
    assert fingerprint(target) == before


OPTIMIZER_BAD = [
    ("step NaN", lambda s, j: s.update({f"state.{j}.step": np.nan}), TypeError, r"step holds float64 values"),
    ("step 2.5", lambda s, j: s.update({f"state.{j}.step": 2.5}), TypeError, r"step holds float64 values"),
    ("step True", lambda s, j: s.update({f"state.{j}.step": True}), TypeError, r"step holds bool values"),
    ("step -1", lambda s, j: s.update({f"state.{j}.step": -1}), ValueError, r"step is -1"),
    ("buffer of strings", lambda s, j: s.update({f"state.{j}.exp_avg": s[f"state.{j}.exp_avg"].astype(str)}), TypeError, r"exp_avg holds <U"),
    ("buffer of objects", lambda s, j: s.update({f"state.{j}.exp_avg": s[f"state.{j}.exp_avg"].astype(object)}), TypeError, r"exp_avg holds object"),
    ("buffer of the wrong shape", lambda s, j: s.update({f"state.{j}.exp_avg": np.zeros(3)}), ValueError, r"has shape \(3,\), expected"),
    ("lr a string", lambda s, j: s.update({"param_groups.0.lr": "0.1"}), TypeError, r"param_groups\.0\.lr holds <U3"),
    ("lr NaN", lambda s, j: s.update({"param_groups.0.lr": float("nan")}), ValueError, r"lr must be a finite number"),
    ("eps negative", lambda s, j: s.update({"param_groups.1.eps": -1.0}), ValueError, r"eps must be"),
    ("missing buffer", lambda s, j: s.pop(f"state.{j}.exp_avg_sq"), KeyError, r"expected all of"),
    ("unknown key", lambda s, j: s.update({"state.0.momentum_buffer": np.zeros(1)}), KeyError, r"unexpected keys"),
    ("missing group key", lambda s, j: s.pop("param_groups.1.weight_decay"), KeyError, r"missing keys"),
]


@pytest.mark.parametrize("change, error, message", [c[1:] for c in OPTIMIZER_BAD], ids=[c[0] for c in OPTIMIZER_BAD])
def test_optimizer_load_state_dict_refuses_before_writing(change, error, message):
    source_model, source = trained(0)
    model, optimizer = trained(1, steps=3)
    state = source.state_dict()
    last = max(int(k.split(".")[1]) for k in state if k.startswith("state."))
    change(state, last)
    before = fingerprint(model, optimizer)
    with pytest.raises(error, match=r"AdamW\.load_state_dict.*" + message):
        optimizer.load_state_dict(state)
    assert fingerprint(model, optimizer) == before


def test_optimizer_load_state_dict_wants_a_dict():
    _, optimizer = trained(0)
    with pytest.raises(TypeError, match=r"AdamW\.load_state_dict: state must be a dict from state_dict\(\), got list"):
        optimizer.load_state_dict([1, 2])


def test_optimizer_state_dict_shapes_names_every_key_state_dict_writes():
    _, optimizer = trained(0)
    shapes = optimizer.state_dict_shapes()
    state = optimizer.state_dict()
    assert set(state) == set(shapes)
    assert all(np.shape(state[k]) == shapes[k] for k in state)
    fresh = SGD(nn.Linear(2, 2, seed=0).parameters(), lr=0.1)
    assert fresh.state_dict_shapes()["param_groups.0.params"] == (2,)


# --- ViT hyper-parameters: a config that cannot be built says which argument and why ------------------
VIT_ARGS = [
    (dict(img_size=-8), ValueError, r"ViT: img_size must be an int >= 1 or a pair \(h, w\) of them, got -8"),
    (dict(img_size=(32, 0)), ValueError, r"ViT: img_size .* got \(32, 0\)"),
    (dict(img_size=32.0), TypeError, r"ViT: img_size .* got 32\.0 \(float\)"),
    (dict(depth=-1), ValueError, r"ViT: depth must be an int >= 0, got -1"),
    (dict(depth=2.5), TypeError, r"ViT: depth must be an int >= 0, got 2\.5 \(float\)"),
    (dict(depth=True), TypeError, r"ViT: depth must be an int >= 0, got True \(bool\)"),
    (dict(num_heads=0), ValueError, r"ViT: num_heads must be an int >= 1, got 0"),
    (dict(num_heads=-4), ValueError, r"ViT: num_heads must be an int >= 1, got -4"),
    (dict(num_heads=False), TypeError, r"ViT: num_heads must be an int >= 1, got False \(bool\)"),
    (dict(embed_dim=0), ValueError, r"ViT: embed_dim must be an int >= 1, got 0"),
    (dict(embed_dim="64"), TypeError, r"ViT: embed_dim must be an int >= 1, got '64' \(str\)"),
    (dict(embed_dim=30, num_heads=4), ValueError, r"ViT: embed_dim=30 is not divisible by num_heads=4"),
    (dict(patch_size=5), ValueError, r"ViT: patch_size=5 does not divide the image height 32"),
    (dict(img_size=(32, 30)), ValueError, r"ViT: patch_size=4 does not divide the image width 30"),
    (dict(patch_size=0), ValueError, r"ViT: patch_size must be an int >= 1, got 0"),
    (dict(in_chans=0), ValueError, r"ViT: in_chans must be an int >= 1, got 0"),
    (dict(num_classes=0), ValueError, r"ViT: num_classes must be an int >= 1, got 0"),
    (dict(num_classes=10.0), TypeError, r"ViT: num_classes must be an int >= 1, got 10\.0 \(float\)"),
    (dict(mlp_ratio=0), ValueError, r"ViT: mlp_ratio must be a finite number > 0\.0, got 0"),
    (dict(mlp_ratio=float("nan")), ValueError, r"ViT: mlp_ratio must be a finite number"),
    (dict(mlp_ratio=0.01), ValueError, r"ViT: mlp_ratio=0\.01 gives an MLP of int\(64 \* 0\.01\) = 0 hidden units"),
    (dict(dropout=1.0), ValueError, r"ViT: dropout must be a finite number in \[0\.0, 1\.0\), got 1\.0"),
    (dict(eps=0.0), ValueError, r"ViT: eps must be a finite number > 0\.0, got 0\.0"),
    (dict(qkv_bias=1), TypeError, r"ViT: qkv_bias must be True or False, got 1 \(int\)"),
    (dict(class_token="yes"), TypeError, r"ViT: class_token must be True or False, got 'yes' \(str\)"),
    (dict(fc_norm=0), TypeError, r"ViT: fc_norm must be True or False, got 0 \(int\)"),
    (dict(global_pool="max"), ValueError, r"ViT: global_pool must be one of \('token', 'avg'\), got 'max'"),
    (dict(global_pool="token", class_token=False), ValueError, r"ViT: global_pool=\"token\" reads the class token"),
    (dict(pos_embed="sincos", embed_dim=6, num_heads=2), ValueError, r"ViT: pos_embed=\"sincos\" needs embed_dim divisible by 4"),
    (dict(init="kaiming"), ValueError, r"ViT: init must be one of \('timm', 'xavier'\), got 'kaiming'"),
]


@pytest.mark.parametrize("kwargs, error, message", VIT_ARGS, ids=[repr(c[0]) for c in VIT_ARGS])
def test_vit_refuses_nonsense_hyperparameters_by_name(kwargs, error, message):
    with pytest.raises(error, match=message):
        ViT(**kwargs, seed=0)


INT_ARGS = {"img_size": 1, "patch_size": 1, "in_chans": 1, "num_classes": 1, "embed_dim": 1, "depth": 0, "num_heads": 1}


@given(name=st.sampled_from(sorted(INT_ARGS)),
       value=st.one_of(st.integers(-10**6, 0), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                       st.text(max_size=3), st.none(), st.just(b"4")))
def test_vit_integer_arguments_take_only_ints_in_range(name, value):
    if isinstance(value, int) and not isinstance(value, bool) and value >= INT_ARGS[name]:
        return   # depth=0 is a valid (blockless) ViT
    with pytest.raises((TypeError, ValueError), match=rf"ViT: {name} must be an int >= {INT_ARGS[name]}") as err:
        ViT(**{name: value}, seed=0)
    assert isinstance(err.value, TypeError) == (not isinstance(value, int) or isinstance(value, bool))


def test_vit_with_depth_zero_is_patch_embedding_then_head():
    model = ViT(img_size=8, patch_size=4, in_chans=1, num_classes=2, embed_dim=8, depth=0, num_heads=2, seed=0)
    assert model(tv.randn((3, 1, 8, 8), seed=0)).shape == (3, 2)



# --- on the device: checked arrays are placed on the parameters' device before anything is written -------
DEVICE_RESUME = """
import os, sys, tempfile
import numpy as np, cupy
import tinyvision as tv
from tinyvision.io import load_checkpoint, save_checkpoint
from tinyvision.models import ViT
from tinyvision.optim import AdamW

def trained(seed):
    model = ViT(img_size=8, patch_size=4, in_chans=2, num_classes=3, embed_dim=8, depth=1, num_heads=2,
                global_pool="avg", seed=seed).to("cuda")
    optimizer = AdamW(model.parameters(), lr=1e-2)
    x = tv.Tensor(cupy.asarray(np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)))
    for _ in range(2):
        optimizer.zero_grad(); (model(x) ** 2).mean().backward(); optimizer.step()
    return model, optimizer, x

source, source_optimizer, x = trained(0)
path = os.path.join(tempfile.mkdtemp(), "run.npz")
save_checkpoint(path, source, source_optimizer, step=2)
model, optimizer, _ = trained(1)
load_checkpoint(path, model, optimizer)
assert all(type(p.data).__module__.startswith("cupy") for p in model.parameters())
assert all(type(v).__module__.startswith("cupy") for s in optimizer.state.values() for k, v in s.items() if k != "step")
for m, o in ((source, source_optimizer), (model, optimizer)):   # one more step each: the same bits
    o.zero_grad(); (m(x) ** 2).mean().backward(); o.step()
assert all(np.array_equal(p.numpy(), q.numpy()) for p, q in zip(source.parameters(), model.parameters()))
print("ok")
"""


def test_checkpoint_resumes_onto_device_parameters_under_the_strict_cupy_stand_in():
    """Loaded weights and buffers land on "cuda" (tests/strict_cupy computes with NumPy but refuses mixing)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TINYVISION_KERNELS="reference",
               PYTHONPATH=os.pathsep.join([os.path.join(root, "tests", "strict_cupy"), root]))
    env.pop("TINYVISION_DEVICE", None)
    proc = subprocess.run([sys.executable, "-c", DEVICE_RESUME], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
