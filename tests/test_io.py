"""Checkpoints (.npz, no pickle) and PyTorch state dicts: exact round trips and errors that name keys."""
import zipfile

import numpy as np
import pytest

import tinyvision as tv
from tinyvision import nn
from tinyvision.io import load_checkpoint, load_torch_state_dict, save_checkpoint, torch_state_dict
from tinyvision.optim import SGD, AdamW, WarmupCosine, param_groups_no_decay


def block(seed):
    return nn.TransformerBlock(16, 4, seed=seed)


def perturbed_block(seed):
    """A block whose norm weights and biases are not at their init values either."""
    b = block(seed)
    rng = np.random.default_rng(seed + 100)
    for p in b.parameters():
        p.data = (p.data + rng.standard_normal(p.shape)).astype(np.float32)
    return b


def assert_same_bits(model_a, model_b):
    a, b = model_a.state_dict(), model_b.state_dict()
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes(), f"{name} differs"


def rewrite(path, change):
    """Apply `change` to the dict of arrays in the .npz at `path` and write it back."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# --- our checkpoints -------------------------------------------------------------------------
def test_checkpoint_round_trip_is_bitwise_exact(tmp_path):
    path = tmp_path / "block.npz"
    source, target = perturbed_block(0), block(1)
    save_checkpoint(path, source, step=7)
    meta = load_checkpoint(path, target)
    assert meta == {"format_version": 1, "step": 7, "optimizer": None}
    assert_same_bits(source, target)
    assert path.exists() and not (tmp_path / "block.npz.npz").exists()  # the file is named exactly path


def train_steps(model, optimizer, scheduler, steps, seed):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = tv.Tensor(rng.standard_normal((2, 5, 16)).astype(np.float32))
        optimizer.zero_grad()
        (model(x) ** 2).mean().backward()
        scheduler.step()
        optimizer.step()


def make_training(seed):
    model = block(seed)
    optimizer = AdamW(param_groups_no_decay(model, 0.05), lr=1e-2)
    return model, optimizer, WarmupCosine(optimizer, total_steps=10, warmup_steps=2)


def test_training_resumed_from_checkpoint_continues_bitwise_identically(tmp_path):
    path = tmp_path / "run.npz"
    model, optimizer, scheduler = make_training(0)
    train_steps(model, optimizer, scheduler, 3, seed=10)
    save_checkpoint(path, model, optimizer, step=3)
    train_steps(model, optimizer, scheduler, 3, seed=11)  # the run that never stopped

    resumed, resumed_optimizer, resumed_scheduler = make_training(1)  # other initial weights
    meta = load_checkpoint(path, resumed, resumed_optimizer)
    assert meta["step"] == 3 and meta["optimizer"] == "AdamW"
    resumed_scheduler.step_count = meta["step"]
    train_steps(resumed, resumed_optimizer, resumed_scheduler, 3, seed=11)
    assert_same_bits(model, resumed)


def test_checkpoint_loads_without_pickle_and_holds_no_object_arrays(tmp_path):
    path = tmp_path / "run.npz"
    model = block(0)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = np.ones(p.shape, dtype=np.float32)
    optimizer.step()
    save_checkpoint(path, model, optimizer, step=1)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert all(a.dtype != object for a in arrays.values())
    assert {k.split("/")[0] for k in arrays} == {"model", "optim", "meta"}
    assert arrays["model/attn.qkv.weight"].shape == (16, 48)
    assert str(arrays["meta/optimizer"]) == "SGD"


def test_checkpoint_with_wrong_shape_names_key_shapes_and_file(tmp_path):
    path = tmp_path / "bad.npz"
    save_checkpoint(path, block(0))
    rewrite(path, lambda a: a.update({"model/mlp.fc1.bias": np.zeros(63, np.float32)}))
    target = block(1)
    before = target.state_dict()
    with pytest.raises(ValueError, match=r"mlp\.fc1\.bias: file \(63,\) vs model \(64,\)") as err:
        load_checkpoint(path, target)
    assert str(path) in str(err.value)
    for name, value in target.state_dict().items():  # nothing was loaded
        np.testing.assert_array_equal(value, before[name])


def test_checkpoint_missing_and_unexpected_keys_are_named(tmp_path):
    path = tmp_path / "keys.npz"
    save_checkpoint(path, block(0))

    def change(arrays):
        del arrays["model/norm1.weight"]
        arrays["model/head.weight"] = np.zeros((16, 10), np.float32)

    rewrite(path, change)
    with pytest.raises(KeyError, match=r"missing keys \['norm1\.weight'\], unexpected keys \['head\.weight'\]") as err:
        load_checkpoint(path, block(1))
    assert str(path) in str(err.value)

    target = block(1)
    meta = load_checkpoint(path, target, strict=False)
    assert meta["missing"] == ["norm1.weight"] and meta["unexpected"] == ["head.weight"]
    np.testing.assert_array_equal(target.state_dict()["mlp.fc2.weight"], block(0).state_dict()["mlp.fc2.weight"])


def test_checkpoint_optimizer_of_another_class_is_refused(tmp_path):
    path = tmp_path / "sgd.npz"
    model = block(0)
    save_checkpoint(path, model, SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="holds SGD state, the optimizer is a AdamW"):
        load_checkpoint(path, model, AdamW(model.parameters()))
    save_checkpoint(path, model)
    with pytest.raises(KeyError, match="no optimizer state"):
        load_checkpoint(path, model, AdamW(model.parameters()))


def test_files_that_are_not_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        load_checkpoint(tmp_path / "absent.npz", block(0))
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match="is not a .npz checkpoint"):
        load_checkpoint(text, block(0))
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is not a .npz checkpoint"):
        load_checkpoint(empty, block(0))
    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    with pytest.raises(ValueError, match="single .npy array"):
        load_checkpoint(single, block(0))
    pickled = tmp_path / "objects.npz"
    with open(pickled, "wb") as f:
        np.savez(f, **{"model/norm1.weight": np.array([None, 1], dtype=object)})
    with pytest.raises(ValueError, match="only pickle can read"):
        load_checkpoint(pickled, block(0))
    foreign = tmp_path / "foreign.npz"
    with open(foreign, "wb") as f:
        np.savez(f, weights=np.ones(3))
    with pytest.raises(ValueError, match="not a tinyvision checkpoint"):
        load_checkpoint(foreign, block(0))
    assert zipfile.is_zipfile(foreign)


# --- PyTorch state dicts ---------------------------------------------------------------------
class TorchLikeArray:
    """Stands in for a torch tensor: np.asarray reads it through __array__, as it does torch's."""

    def __init__(self, array):
        self.array = array

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)


def test_load_torch_state_dict_transposes_linear_weights_to_match_numpy_reference():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(4, 8, seed=0, dtype=np.float64), nn.LayerNorm(8, dtype=np.float64),
                          nn.Linear(8, 3, seed=1, dtype=np.float64))
    torch_state = {  # PyTorch layout: Linear weight (out, in)
        "0.weight": rng.standard_normal((8, 4)), "0.bias": rng.standard_normal(8),
        "1.weight": rng.standard_normal(8), "1.bias": rng.standard_normal(8),
        "2.weight": rng.standard_normal((3, 8)), "2.bias": rng.standard_normal(3),
    }
    report = load_torch_state_dict(model, {k: TorchLikeArray(v) for k, v in torch_state.items()})
    assert report == {"missing": [], "unexpected": [], "mismatched": []}

    x = rng.standard_normal((5, 4))
    h = x @ torch_state["0.weight"].T + torch_state["0.bias"]
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    h = h * torch_state["1.weight"] + torch_state["1.bias"]
    expected = h @ torch_state["2.weight"].T + torch_state["2.bias"]
    np.testing.assert_allclose(model(tv.Tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_load_torch_state_dict_names_missing_unexpected_and_misshaped_keys():
    source = torch_state_dict(block(0))
    state = dict(source)
    del state["norm2.bias"]
    state["attn.relative_position_bias_table"] = np.zeros((7, 4), np.float32)
    state["attn.qkv.weight"] = state["attn.qkv.weight"].T  # our (in, out) layout, not torch's
    with pytest.raises(ValueError) as err:
        load_torch_state_dict(block(1), state)
    message = str(err.value)
    for expected in ["missing keys ['norm2.bias']", "unexpected keys ['attn.relative_position_bias_table']",
                     "attn.qkv.weight: torch shape (16, 48), expected torch shape (48, 16)"]:
        assert expected in message, f"{expected!r} not in {message!r}"

    target = block(1)
    report = load_torch_state_dict(target, state, strict=False)
    assert report["missing"] == ["norm2.bias"] and report["unexpected"] == ["attn.relative_position_bias_table"]
    assert [m.split(":")[0] for m in report["mismatched"]] == ["attn.qkv.weight"]
    loaded = target.state_dict()
    np.testing.assert_array_equal(loaded["mlp.fc1.weight"], source["mlp.fc1.weight"].T)
    np.testing.assert_array_equal(loaded["attn.qkv.weight"], block(1).state_dict()["attn.qkv.weight"])  # untouched


def test_torch_state_dict_then_load_torch_state_dict_is_exact():
    source, target = perturbed_block(0), block(1)
    state = torch_state_dict(source)
    assert state["mlp.fc1.weight"].shape == (64, 16) and state["norm1.weight"].shape == (16,)
    assert all(a.flags.c_contiguous for a in state.values())
    load_torch_state_dict(target, state)
    assert_same_bits(source, target)
