"""Checkpoints (.npz, no pickle) and PyTorch state dicts: exact round trips, errors that name keys, and
timm's ViT layouts (class token + norm, average pooling + fc_norm) against a float64 NumPy reference."""
import math
import zipfile

import numpy as np
import pytest

import tinyvision as tv
from tinyvision import nn
from tinyvision.io import load_checkpoint, load_torch_state_dict, save_checkpoint, torch_state_dict
from tinyvision.models import ViT
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


# --- timm's ViT layouts: class token + norm, or average pooling + fc_norm ------------------------------
def layer_norm(x, weight, bias, eps=1e-6):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * weight + bias


def timm_vit_reference(sd, x, patch, heads, global_pool):
    """timm's VisionTransformer.forward in float64 NumPy, read off a state dict with timm's names and layout.

    Which final norm exists is read from the keys, as timm's layout has it: `norm` on every token
    before pooling, or `fc_norm` on the pooled vector after it (timm's default for global_pool="avg").
    """
    erf = np.vectorize(math.erf)
    b, c, h, w = x.shape
    d = sd["patch_embed.proj.weight"].shape[0]
    gh, gw = h // patch, w // patch
    patches = x.reshape(b, c, gh, patch, gw, patch).transpose(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, -1)
    t = patches @ sd["patch_embed.proj.weight"].reshape(d, -1).T + sd["patch_embed.proj.bias"]
    prefix = 1 if "cls_token" in sd else 0
    if prefix:
        t = np.concatenate([np.broadcast_to(sd["cls_token"], (b, 1, d)), t], axis=1)
    t = t + sd["pos_embed"]
    n, i = t.shape[1], 0
    while f"blocks.{i}.norm1.weight" in sd:
        p = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        qkv = layer_norm(t, p["norm1.weight"], p["norm1.bias"]) @ p["attn.qkv.weight"].T + p["attn.qkv.bias"]
        q, k, v = qkv.reshape(b, n, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)    # (B, h, N, d) each
        scores = q @ k.swapaxes(-1, -2) / math.sqrt(d // heads)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        o = (weights @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
        t = t + o @ p["attn.proj.weight"].T + p["attn.proj.bias"]
        hidden = layer_norm(t, p["norm2.weight"], p["norm2.bias"]) @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"]
        hidden = hidden / 2 * (1 + erf(hidden / math.sqrt(2)))                           # exact GELU
        t = t + hidden @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]
        i += 1
    if "norm.weight" in sd:
        t = layer_norm(t, sd["norm.weight"], sd["norm.bias"])
    feature = t[:, 0] if global_pool == "token" else t[:, prefix:].mean(axis=1)
    if "fc_norm.weight" in sd:
        feature = layer_norm(feature, sd["fc_norm.weight"], sd["fc_norm.bias"])
    return feature @ sd["head.weight"].T + sd["head.bias"]


def timm_vit_state_dict(rng, class_token, final_norm, depth=2, d=8, c=2, patch=4, tokens=4, mlp=32, classes=3):
    """Random float64 weights under timm's key names and PyTorch layout (Linear weight (out, in))."""
    sd = {"patch_embed.proj.weight": rng.standard_normal((d, c, patch, patch)) * 0.3,
          "patch_embed.proj.bias": rng.standard_normal(d) * 0.1}
    if class_token:
        sd["cls_token"] = rng.standard_normal((1, 1, d))
    sd["pos_embed"] = rng.standard_normal((1, tokens + class_token, d)) * 0.1
    for i in range(depth):
        for name, shape in [("norm1.weight", (d,)), ("norm1.bias", (d,)), ("attn.qkv.weight", (3 * d, d)),
                            ("attn.qkv.bias", (3 * d,)), ("attn.proj.weight", (d, d)), ("attn.proj.bias", (d,)),
                            ("norm2.weight", (d,)), ("norm2.bias", (d,)), ("mlp.fc1.weight", (mlp, d)),
                            ("mlp.fc1.bias", (mlp,)), ("mlp.fc2.weight", (d, mlp)), ("mlp.fc2.bias", (d,))]:
            sd[f"blocks.{i}.{name}"] = rng.standard_normal(shape) * (0.3 if "weight" in name else 0.1)
            if name.startswith("norm"):
                sd[f"blocks.{i}.{name}"] += 1.0 if name.endswith("weight") else 0.0
    sd[f"{final_norm}.weight"] = 1 + rng.standard_normal(d) * 0.2
    sd[f"{final_norm}.bias"] = rng.standard_normal(d) * 0.2
    sd["head.weight"] = rng.standard_normal((classes, d)) * 0.3
    sd["head.bias"] = rng.standard_normal(classes) * 0.1
    return sd


TIMM_LAYOUTS = [  # (our ViT arguments, the final norm timm's state dict has)
    (dict(global_pool="avg", class_token=True), "fc_norm"),              # timm global_pool='avg': fc_norm by default
    (dict(global_pool="avg", class_token=False), "fc_norm"),
    (dict(global_pool="avg", class_token=True, fc_norm=False), "norm"),  # timm fc_norm=False
    (dict(global_pool="token", class_token=True), "norm"),               # timm's default ViT
    (dict(global_pool="token", class_token=True, fc_norm=True), "fc_norm"),
]


@pytest.mark.parametrize("kwargs, final_norm", TIMM_LAYOUTS, ids=[f"{k}-{n}" for k, n in TIMM_LAYOUTS])
def test_timm_state_dict_loads_under_timm_names_and_gives_the_numpy_reference_logits(kwargs, final_norm):
    rng = np.random.default_rng(0)
    sd = timm_vit_state_dict(rng, kwargs["class_token"], final_norm)
    model = ViT(img_size=8, patch_size=4, in_chans=2, num_classes=3, embed_dim=8, depth=2, num_heads=2, seed=1,
                **kwargs).astype(np.float64)
    assert load_torch_state_dict(model, sd) == {"missing": [], "unexpected": [], "mismatched": []}
    x = rng.standard_normal((3, 2, 8, 8))
    expected = timm_vit_reference(sd, x, patch=4, heads=2, global_pool=kwargs["global_pool"])
    np.testing.assert_allclose(model(tv.Tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_avg_pool_vit_has_fc_norm_and_no_norm_as_timm():
    names = [n for n, _ in ViT(global_pool="avg", class_token=False, seed=0).named_parameters()]
    assert names[-4:] == ["fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"]
    assert not any(n.startswith("norm.") for n in names)
    token_names = [n for n, _ in ViT(seed=0).named_parameters()]
    assert token_names[-4:] == ["norm.weight", "norm.bias", "head.weight", "head.bias"]


def test_fc_norm_normalises_the_pooled_vector_not_each_token():
    """LayerNorm(mean of tokens) is not mean(LayerNorm(tokens)): the norm's place changes the logits."""
    rng = np.random.default_rng(0)
    sd = timm_vit_state_dict(rng, True, "fc_norm")
    x = rng.standard_normal((2, 2, 8, 8))
    model = ViT(img_size=8, patch_size=4, in_chans=2, num_classes=3, embed_dim=8, depth=2, num_heads=2,
                global_pool="avg", seed=0).astype(np.float64)
    load_torch_state_dict(model, sd)
    moved = {("norm" + k[len("fc_norm"):] if k.startswith("fc_norm") else k): v for k, v in sd.items()}
    norm_first = timm_vit_reference(moved, x, patch=4, heads=2, global_pool="avg")
    assert not np.allclose(model(tv.Tensor(x)).numpy(), norm_first, rtol=1e-3)


def assert_same_bits_dict(a, b):
    assert list(a) == list(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_timm_avg_pool_state_dict_with_norm_keys_is_refused_by_name():
    """A state dict whose final norm is in the other place names both keys, and changes nothing."""
    sd = timm_vit_state_dict(np.random.default_rng(0), True, "norm")
    model = ViT(img_size=8, patch_size=4, in_chans=2, num_classes=3, embed_dim=8, depth=2, num_heads=2,
                global_pool="avg", seed=0)
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"missing keys \['fc_norm\.weight', 'fc_norm\.bias'\]; unexpected keys "
                                         r"\['norm\.weight', 'norm\.bias'\]"):
        load_torch_state_dict(model, sd)
    assert_same_bits_dict(model.state_dict(), before)


@pytest.mark.parametrize("kwargs", [dict(global_pool="avg", class_token=True), dict(global_pool="avg", class_token=False),
                                    dict(global_pool="token", class_token=True)], ids=["avg+cls", "avg", "token"])
def test_timm_vit_logits_match_ours_after_loading_its_state_dict(kwargs):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed; it only runs timm, the reference here")
    timm_vit = pytest.importorskip("timm.models.vision_transformer", reason="timm is not installed; it is the reference here")
    torch.manual_seed(0)
    reference = timm_vit.VisionTransformer(img_size=8, patch_size=4, in_chans=2, num_classes=3, embed_dim=8, depth=2,
                                           num_heads=2, **kwargs).double().eval()
    with torch.no_grad():   # timm inits the final norms at 1 and 0; move them so the test sees where they act
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model = ViT(img_size=8, patch_size=4, in_chans=2, num_classes=3, embed_dim=8, depth=2, num_heads=2, seed=1,
                **kwargs).astype(np.float64)
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    assert load_torch_state_dict(model, state) == {"missing": [], "unexpected": [], "mismatched": []}
    x = np.random.default_rng(0).standard_normal((3, 2, 8, 8))
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(tv.Tensor(x)).numpy(), expected, rtol=1e-9, atol=1e-12)
