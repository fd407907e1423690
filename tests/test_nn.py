"""nn: module mechanics, timm names, state dicts, and the transformer components against NumPy."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import nn
from tinyvision.gradcheck import gradcheck_module

TIMM_BLOCK_NAMES = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                    "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                    "mlp.fc2.weight", "mlp.fc2.bias"]


def f64(module):
    return module.astype(np.float64)


def test_transformer_block_uses_timm_parameter_names():
    assert [n for n, _ in nn.TransformerBlock(8, 2, seed=0).named_parameters()] == TIMM_BLOCK_NAMES


def test_module_list_names_are_indices():
    class Stack(nn.Module):
        def __init__(self):
            self.blocks = nn.ModuleList([nn.TransformerBlock(8, 2, seed=i) for i in range(2)])
    names = [n for n, _ in Stack().named_parameters()]
    assert names[0] == "blocks.0.norm1.weight" and names[-1] == "blocks.1.mlp.fc2.bias" and len(names) == 24


def test_shared_parameter_is_listed_once():
    class Tied(nn.Module):
        def __init__(self):
            self.a = nn.Linear(3, 3, seed=0)
            self.b = nn.Linear(3, 3, seed=1)
            self.b.weight = self.a.weight
    assert len(Tied().parameters()) == 3


def test_state_dict_round_trip_is_exact_and_strict():
    src, dst = nn.TransformerBlock(8, 2, seed=0), nn.TransformerBlock(8, 2, seed=1)
    dst.load_state_dict(src.state_dict())
    for (n, a), (_, b) in zip(src.named_parameters(), dst.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=n)
    state = src.state_dict()
    state["extra.weight"] = np.zeros(2)
    del state["norm1.bias"]
    with pytest.raises(KeyError, match=r"missing keys \['norm1.bias'\], unexpected keys \['extra.weight'\]"):
        dst.load_state_dict(state)
    report = dst.load_state_dict(state, strict=False)
    assert report == {"missing": ["norm1.bias"], "unexpected": ["extra.weight"]}
    bad = src.state_dict()
    bad["attn.qkv.weight"] = np.zeros((8, 8))
    with pytest.raises(ValueError, match=r"attn.qkv.weight: checkpoint \(8, 8\) vs model \(8, 24\)"):
        dst.load_state_dict(bad)


def test_state_dict_is_a_copy():
    m = nn.Linear(2, 2, seed=0)
    sd = m.state_dict()
    sd["weight"][:] = 99
    assert not (m.weight.numpy() == 99).any()


def test_train_eval_reaches_every_submodule():
    m = nn.TransformerBlock(8, 2, dropout=0.5, seed=0)
    m.eval()
    assert all(not sub.training for sub in m.modules())
    x = tv.randn((1, 3, 8), seed=0)
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())  # no dropout in eval
    m.train()
    assert all(sub.training for sub in m.modules())
    assert not np.array_equal(m(x).numpy(), m(x).numpy())  # masks differ between calls


def test_zero_grad_clears_every_parameter():
    m = nn.MLP(4, 8, seed=0)
    m(tv.randn((2, 4), seed=0)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_repr_shows_the_tree():
    text = repr(nn.TransformerBlock(8, 2, seed=0))
    for piece in ["(norm1): LayerNorm(8, eps=1e-06)", "(qkv): Linear(8, 24, bias=True)", "(act): GELU()"]:
        assert piece in text


def test_linear_matches_numpy_formula():
    lin = f64(nn.Linear(3, 4, seed=0))
    x = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_allclose(lin(tv.Tensor(x)).numpy(), x @ lin.weight.numpy() + lin.bias.numpy(), rtol=1e-12)


def _mha_reference(x, wqkv, bqkv, wproj, bproj, h):
    """Per-head attention in float64, heads computed one at a time and concatenated."""
    b, n, d = x.shape
    hd = d // h
    qkv = x @ wqkv + bqkv
    q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
    heads = []
    for i in range(h):
        sl = slice(i * hd, (i + 1) * hd)
        s = q[..., sl] @ k[..., sl].transpose(0, 2, 1) / math.sqrt(hd)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        heads.append(p @ v[..., sl])
    return np.concatenate(heads, -1) @ wproj + bproj


@given(b=st.integers(1, 2), n=st.integers(1, 6), h=st.sampled_from([1, 2, 3]), hd=st.integers(1, 4),
       seed=st.integers(0, 1000))
def test_multi_head_attention_equals_per_head_concatenation(b, n, h, hd, seed):
    d = h * hd
    mha = f64(nn.MultiHeadAttention(d, h, seed=seed))
    x = np.random.default_rng(seed).standard_normal((b, n, d))
    expected = _mha_reference(x, mha.qkv.weight.numpy(), mha.qkv.bias.numpy(), mha.proj.weight.numpy(),
                              mha.proj.bias.numpy(), h)
    np.testing.assert_allclose(mha(tv.Tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_block_with_zeroed_output_projections_is_identity():
    blk = nn.TransformerBlock(8, 2, seed=0)
    for lin in (blk.attn.proj, blk.mlp.fc2):
        lin.weight.data[:] = 0
        lin.bias.data[:] = 0
    x = tv.randn((2, 5, 8), seed=3)
    np.testing.assert_array_equal(blk(x).numpy(), x.numpy())


def test_block_without_positions_is_permutation_equivariant():
    blk = f64(nn.TransformerBlock(8, 2, seed=0))
    x = np.random.default_rng(0).standard_normal((1, 6, 8))
    perm = np.random.default_rng(1).permutation(6)
    np.testing.assert_allclose(blk(tv.Tensor(x[:, perm])).numpy(), blk(tv.Tensor(x)).numpy()[:, perm], rtol=1e-10)


def test_transformer_block_gradients_match_finite_differences():
    """d(block output)/d(input and every parameter), by backprop vs central differences in float64."""
    blk = f64(nn.TransformerBlock(4, 2, mlp_ratio=1.0, seed=0))
    x = np.random.default_rng(0).standard_normal((1, 3, 4))
    gradcheck_module(blk, [x])


def test_init_helpers_have_the_stated_statistics():
    w = nn.init.trunc_normal((200, 200), std=0.02, seed=0)
    assert np.abs(w).max() <= 0.04 and abs(w.std() - 0.02 * 0.88) < 0.001  # truncation at 2 std shrinks std to 0.88
    x = nn.init.xavier_uniform((100, 300), seed=0)
    bound = math.sqrt(6 / 400)
    assert np.abs(x).max() <= bound and abs(x.var() - bound ** 2 / 3) < 1e-4
    assert nn.init.zeros((3,)).sum() == 0


# --- conv-net layers: batch norm's buffers, group norm, transposed conv ------------------------------------
def test_batch_norm_keeps_running_statistics_as_buffers_saved_but_not_trained(tmp_path):
    from tinyvision.io import load_checkpoint, save_checkpoint
    from tinyvision.optim import SGD
    bn = nn.BatchNorm2d(3)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var"]
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    rng = np.random.default_rng(0)
    x = (3 + 2 * rng.standard_normal((8, 3, 4, 4))).astype(np.float32)
    opt = SGD(bn.parameters(), lr=0.1)
    loss = (bn(tv.Tensor(x)) ** 2).mean()
    loss.backward()
    opt.step()
    assert bn.running_mean.grad is None and bn.running_var.grad is None
    values = x.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * values.mean(1), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * values.var(1, ddof=1), rtol=1e-5)
    save_checkpoint(tmp_path / "bn.npz", bn)
    fresh = nn.BatchNorm2d(3)
    load_checkpoint(tmp_path / "bn.npz", fresh)
    for name, value in bn.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[name], value)


def test_batch_norm_eval_uses_running_statistics_so_one_image_does_not_depend_on_its_batch():
    bn = nn.BatchNorm2d(2)
    rng = np.random.default_rng(1)
    for _ in range(30):                                       # running statistics settle near the data's
        bn(tv.Tensor((1 + 3 * rng.standard_normal((16, 2, 3, 3))).astype(np.float32)))
    bn.eval()
    x = (1 + 3 * rng.standard_normal((4, 2, 3, 3))).astype(np.float32)
    alone = bn(tv.Tensor(x[:1])).numpy()
    together = bn(tv.Tensor(x)).numpy()[:1]
    np.testing.assert_array_equal(alone, together)
    fresh = nn.BatchNorm2d(2).eval()                          # mean 0, var 1: identity up to 1/sqrt(1 + eps)
    np.testing.assert_allclose(fresh(tv.Tensor(x)).numpy(), x / np.sqrt(1 + 1e-5), rtol=1e-6)
    with pytest.raises(ValueError, match="training needs more than one value per channel"):
        nn.BatchNorm2d(2)(tv.Tensor(np.ones((1, 2, 1, 1), np.float32)))


def test_group_norm_does_not_mix_images_and_is_layer_norm_with_one_group():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5, 5))
    gn = nn.GroupNorm(2, 4).astype(np.float64)
    np.testing.assert_allclose(gn(tv.Tensor(x[1:2])).numpy(), gn(tv.Tensor(x)).numpy()[1:2], rtol=1e-12, atol=1e-12)
    one = F.group_norm(tv.Tensor(x), 1).numpy()
    flat = F.layer_norm(tv.Tensor(x.reshape(3, -1)), None, None, 1e-5).numpy().reshape(x.shape)
    np.testing.assert_allclose(one, flat, rtol=1e-12, atol=1e-12)


def test_conv_transpose2d_layer_doubles_the_size_and_has_pytorch_layout_and_bound():
    layer = nn.ConvTranspose2d(3, 5, kernel_size=4, stride=2, padding=1, seed=0)
    assert layer.weight.shape == (3, 5, 4, 4) and layer.bias.shape == (5,)
    bound = 1 / math.sqrt(5 * 4 * 4)
    assert np.abs(layer.weight.numpy()).max() <= bound and np.abs(layer.weight.numpy()).max() > 0.9 * bound
    assert layer(tv.Tensor(np.ones((2, 3, 7, 7), np.float32))).shape == (2, 5, 14, 14)
    assert nn.Upsample(2)(tv.Tensor(np.ones((1, 1, 3, 4), np.float32))).shape == (1, 1, 6, 8)
