"""The eye: patches, position tables and the Vision Transformer, against float64 NumPy and invariants."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyvision as tv
import tinyvision.ops as F
from tinyvision.gradcheck import gradcheck_module
from tinyvision.models import (PatchEmbed, ViT, interpolation_matrix, patchify, resample_pos_embed, sincos_2d,
                               unpatchify)
from tinyvision.optim import AdamW


def f64(module):
    return module.astype(np.float64)


def patches_by_loops(x, p):
    """Reference: visit patches row by row, flatten each in (C, P, P) order."""
    b, c, h, w = x.shape
    out = [x[:, :, i:i + p, j:j + p].reshape(b, -1) for i in range(0, h, p) for j in range(0, w, p)]
    return np.stack(out, axis=1)


image_shapes = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
                         st.integers(1, 4))  # B, C, gh, gw, P


@given(shape=image_shapes, seed=st.integers(0, 100))
def test_patchify_matches_loops_and_unpatchify_inverts_it(shape, seed):
    b, c, gh, gw, p = shape
    x = np.random.default_rng(seed).standard_normal((b, c, gh * p, gw * p))
    tokens = patchify(tv.Tensor(x), p)
    assert tokens.shape == (b, gh * gw, c * p * p)
    np.testing.assert_array_equal(tokens.numpy(), patches_by_loops(x, p))
    np.testing.assert_array_equal(unpatchify(tokens, p, c, (gh, gw)).numpy(), x)


@given(shape=image_shapes, d=st.integers(1, 5), seed=st.integers(0, 100))
def test_conv_patch_embedding_equals_flatten_then_linear(shape, d, seed):
    b, c, gh, gw, p = shape
    rng = np.random.default_rng(seed)
    pe = PatchEmbed((gh * p, gw * p), p, c, d, seed=seed)
    for prm in pe.parameters():
        prm.data = prm.data.astype(np.float64)
    x = rng.standard_normal((b, c, gh * p, gw * p))
    conv = pe(tv.Tensor(x)).numpy()
    linear = pe.forward_linear(tv.Tensor(x)).numpy()
    reference = patches_by_loops(x, p) @ pe.proj.weight.numpy().reshape(d, -1).T + pe.proj.bias.numpy()
    assert conv.shape == (b, gh * gw, d)
    np.testing.assert_allclose(conv, reference, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(linear, reference, rtol=1e-12, atol=1e-12)


def test_patch_size_that_does_not_divide_the_image_is_named():
    with pytest.raises(ValueError, match=r"patch size 5 does not divide the image height 32 \(32 % 5 = 2\)"):
        patchify(tv.Tensor(np.zeros((1, 3, 32, 30))), 5)


# --- position embeddings -----------------------------------------------------------------------------
def test_sincos_2d_formula_at_known_cells():
    table = sincos_2d(3, 4, 8)                      # D/4 = 2 frequencies: 1 and 1/100
    assert table.shape == (12, 8)
    y, x = 2, 3                                     # cell 2*4 + 3 = 11
    np.testing.assert_allclose(table[11], [np.sin(y), np.sin(y / 100), np.cos(y), np.cos(y / 100),
                                           np.sin(x), np.sin(x / 100), np.cos(x), np.cos(x / 100)])
    assert len({tuple(r) for r in np.round(table, 12)}) == 12  # every cell distinct


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_resample_to_the_same_grid_is_exactly_the_identity(mode):
    pos = np.random.default_rng(0).standard_normal((1, 1 + 12, 5)).astype(np.float32)
    np.testing.assert_array_equal(resample_pos_embed(pos, (3, 4), (3, 4), 1, mode), pos)
    assert np.allclose(interpolation_matrix(7, 7, mode), np.eye(7), atol=0, rtol=0)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@given(old=st.tuples(st.integers(1, 5), st.integers(1, 5)), new=st.tuples(st.integers(1, 7), st.integers(1, 7)),
       prefix=st.integers(0, 2), seed=st.integers(0, 100))
def test_resample_keeps_prefix_tokens_and_constant_fields(mode, old, new, prefix, seed):
    rng = np.random.default_rng(seed)
    d = 3
    pos = np.concatenate([rng.standard_normal((1, prefix, d)), np.broadcast_to(rng.standard_normal(d), (1, old[0] * old[1], d))], 1)
    out = resample_pos_embed(pos, new, old, prefix, mode)
    assert out.shape == (1, prefix + new[0] * new[1], d)
    np.testing.assert_array_equal(out[:, :prefix], pos[:, :prefix])           # bit-identical
    np.testing.assert_allclose(out[0, prefix:], np.broadcast_to(pos[0, -1], (new[0] * new[1], d)), rtol=1e-12)


def test_rectangular_grid_resample_is_not_the_identity():
    # (2, 8) and (4, 4) have the same 16 tokens; a resampler that only compares token counts
    # returns the table unchanged (timm PR #2737). The (2, 8) grid must really be resampled.
    grid = np.arange(16, dtype=np.float64).reshape(1, 16, 1)   # value = 8*row + col on the 2x8 grid
    out = resample_pos_embed(grid, (4, 4), (2, 8), num_prefix_tokens=0, interpolation="bilinear")
    assert not np.array_equal(out, grid)
    resampled = out.reshape(4, 4)
    # along rows: 2 -> 4 (upsampled, so rows repeat pairwise at the borders); along columns 8 -> 4 averages pairs
    np.testing.assert_allclose(resampled[0], [0.5, 2.5, 4.5, 6.5])
    np.testing.assert_allclose(resampled[-1], [8.5, 10.5, 12.5, 14.5])


def test_bilinear_reproduces_a_linear_ramp_away_from_the_border():
    old = np.arange(6, dtype=np.float64)
    m = interpolation_matrix(6, 12, "bilinear")
    s = (np.arange(12) + 0.5) * 0.5 - 0.5
    inside = (s >= 0) & (s <= 5)
    np.testing.assert_allclose((m @ old)[inside], s[inside], rtol=1e-12)


# The interpolation weights, pinned without torch (CI has none). The formula, as
# torch.nn.functional.interpolate(align_corners=False, antialias=False) defines it: output pixel i of
# n_out samples the input at s = (i + 1/2) n_in / n_out - 1/2. Bilinear clamps s at 0 and mixes pixels
# floor(s) and floor(s) + 1; bicubic mixes floor(s) - 1 .. floor(s) + 2 with Keys' (1981) kernel
#     W(x) = (a + 2)|x|^3 - (a + 3)|x|^2 + 1           |x| <= 1
#     W(x) = a|x|^3 - 5a|x|^2 + 8a|x| - 4a              1 < |x| < 2,   a = -3/4 (PyTorch's choice)
# and both clamp a pixel index outside 0 .. n_in - 1 to the border pixel, which then takes its weight.
def keys_cubic(x, a=-0.75):
    x = abs(x)
    if x <= 1:
        return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
    return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a if x < 2 else 0.0


def interpolation_by_the_formula(n_in, n_out, mode):
    """The (n_out, n_in) weights, one output pixel and one tap at a time, in float64."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        s = (i + 0.5) * n_in / n_out - 0.5
        if mode == "bilinear":
            s = max(s, 0.0)
            taps = {math.floor(s): 1 - (s - math.floor(s)), math.floor(s) + 1: s - math.floor(s)}
        else:
            taps = {j: keys_cubic(s - j) for j in range(math.floor(s) - 1, math.floor(s) + 3)}
        for j, weight in taps.items():
            m[i, min(max(j, 0), n_in - 1)] += weight
    return m


# 4 -> 8 by hand. s = i/2 - 1/4: the fractional offsets t alternate 3/4, 1/4, so bicubic needs W at
# 1/4, 3/4, 5/4 and 7/4, in 256ths:
#     W(1/4) = 5/4 * 1/64 - 9/4 * 1/16 + 1                      = (5 - 36 + 256) / 256 = 225/256
#     W(3/4) = 5/4 * 27/64 - 9/4 * 9/16 + 1                     = (135 - 324 + 256) / 256 = 67/256
#     W(5/4) = -3/4 * (125/64 - 5 * 25/16 + 8 * 5/4 - 4)        = -3/4 * 9/64 = -27/256
#     W(7/4) = -3/4 * (343/64 - 5 * 49/16 + 8 * 7/4 - 4)        = -3/4 * 3/64 = -9/256
# Row 0 (s = -1/4): taps -2, -1, 0, 1 at distances 7/4, 3/4, 1/4, 5/4; -2 and -1 clamp to pixel 0,
# so pixel 0 gets (-9 + 67 + 225)/256 = 283/256 and pixel 1 gets -27/256. Row 1 (s = 1/4): taps -1 .. 2
# at 5/4, 1/4, 3/4, 7/4, tap -1 clamped: (-27 + 225, 67, -9)/256. Row 2 (s = 3/4): (-9 + 67, 225, -27)/256.
# Row 3 (s = 5/4) is interior: (-27, 225, 67, -9)/256. Rows 4..7 mirror rows 3..0.
BICUBIC_4_TO_8 = np.array([[283, -27, 0, 0], [198, 67, -9, 0], [58, 225, -27, 0], [-27, 225, 67, -9],
                           [-9, 67, 225, -27], [0, -27, 225, 58], [0, -9, 67, 198], [0, 0, -27, 283]]) / 256
# Bilinear, same s clamped at 0: pixel floor(s) gets 1 - t, the next one t (clamped to pixel 3 at the end).
BILINEAR_4_TO_8 = np.array([[4, 0, 0, 0], [3, 1, 0, 0], [1, 3, 0, 0], [0, 3, 1, 0],
                            [0, 1, 3, 0], [0, 0, 3, 1], [0, 0, 1, 3], [0, 0, 0, 4]]) / 4
# 5 -> 3 (downsampling, no antialias): s = 1/3, 2, 11/3.
BILINEAR_5_TO_3 = np.array([[2, 1, 0, 0, 0], [0, 0, 3, 0, 0], [0, 0, 0, 1, 2]]) / 3
PINNED = {("bicubic", 4, 8): BICUBIC_4_TO_8, ("bilinear", 4, 8): BILINEAR_4_TO_8, ("bilinear", 5, 3): BILINEAR_5_TO_3}


@pytest.mark.parametrize("mode, n_in, n_out", list(PINNED), ids=[f"{m}-{a}to{b}" for m, a, b in PINNED])
def test_interpolation_weights_equal_the_hand_derived_ones(mode, n_in, n_out):
    want = PINNED[(mode, n_in, n_out)]
    np.testing.assert_allclose(interpolation_by_the_formula(n_in, n_out, mode), want, rtol=0, atol=1e-15)
    np.testing.assert_allclose(interpolation_matrix(n_in, n_out, mode), want, rtol=0, atol=1e-15,
                               err_msg=f"{mode} {n_in} -> {n_out}: weights differ from the hand-derived ones")


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@given(n_in=st.integers(1, 9), n_out=st.integers(1, 12))
def test_interpolation_matrix_equals_the_formula_pixel_by_pixel(mode, n_in, n_out):
    np.testing.assert_allclose(interpolation_matrix(n_in, n_out, mode), interpolation_by_the_formula(n_in, n_out, mode),
                               rtol=0, atol=1e-14, err_msg=f"{mode} {n_in} -> {n_out}")


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_resample_pos_embed_applies_the_weights_along_rows_then_columns(mode):
    grid = np.random.default_rng(1).standard_normal((3, 5, 4))            # (gh, gw, D)
    out = resample_pos_embed(np.concatenate([np.ones((1, 1, 4)), grid.reshape(1, 15, 4)], 1), (7, 2), (3, 5), 1, mode)
    mh, mw = interpolation_by_the_formula(3, 7, mode), interpolation_by_the_formula(5, 2, mode)
    want = np.array([[sum(mh[i, h] * mw[j, w] * grid[h, w] for h in range(3) for w in range(5)) for j in range(2)]
                     for i in range(7)])
    np.testing.assert_allclose(out[0, 1:].reshape(7, 2, 4), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_resample_matches_torch_interpolate(mode):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed; it is only the reference here")
    grid = np.random.default_rng(0).standard_normal((3, 5, 4))
    ours = resample_pos_embed(grid.reshape(1, 15, 4), (7, 2), (3, 5), 0, mode).reshape(7, 2, 4)
    t = torch.from_numpy(grid).permute(2, 0, 1)[None]
    theirs = torch.nn.functional.interpolate(t, size=(7, 2), mode=mode, align_corners=False)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


# --- the ViT ---------------------------------------------------------------------------------------------
def tiny_vit(**kw):
    cfg = dict(img_size=8, patch_size=4, in_chans=2, num_classes=3, embed_dim=8, depth=2, num_heads=2, seed=0)
    cfg.update(kw)
    return ViT(**cfg)


def test_vit_shapes_and_timm_names():
    model = tiny_vit()
    x = tv.randn((5, 2, 8, 8), seed=0)
    out = model(x, return_all=True)
    assert out.logits.shape == (5, 3)
    assert len(out.tokens) == 2 and all(t.shape == (5, 1 + 4, 8) for t in out.tokens)
    assert all(a.shape == (5, 2, 5, 5) for a in out.attention)
    np.testing.assert_allclose(out.attention[0].sum(-1), 1, rtol=1e-5)
    names = [n for n, _ in model.named_parameters()]
    assert names[:4] == ["patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed"]
    assert "blocks.1.attn.qkv.weight" in names and names[-4:] == ["norm.weight", "norm.bias", "head.weight", "head.bias"]
    assert model.pos_embed.shape == (1, 5, 8)


def test_class_token_output_is_invariant_to_patch_order_without_positions():
    model = f64(tiny_vit(pos_embed="none", img_size=12, patch_size=4))
    x = np.random.default_rng(0).standard_normal((2, 2, 12, 12))
    tokens = patchify(tv.Tensor(x), 4).numpy()
    perm = np.random.default_rng(1).permutation(9)
    shuffled = unpatchify(tv.Tensor(tokens[:, perm]), 4, 2, (3, 3))
    np.testing.assert_allclose(model(shuffled).numpy(), model(tv.Tensor(x)).numpy(), rtol=1e-10)
    # with learned positions the same shuffle is visible
    with_pos = f64(tiny_vit(img_size=12, patch_size=4))
    assert not np.allclose(with_pos(shuffled).numpy(), with_pos(tv.Tensor(x)).numpy(), rtol=1e-6)


def test_mean_pooling_without_class_token_is_invariant_to_patch_order_without_positions():
    model = f64(tiny_vit(pos_embed="none", class_token=False, global_pool="avg"))
    x = np.random.default_rng(0).standard_normal((1, 2, 8, 8))
    flipped = x.reshape(1, 2, 2, 4, 2, 4)[:, :, ::-1, :, ::-1].reshape(1, 2, 8, 8)  # patch grid reversed
    np.testing.assert_allclose(model(tv.Tensor(flipped)).numpy(), model(tv.Tensor(x)).numpy(), rtol=1e-10)


def test_tiny_vit_gradients_match_finite_differences():
    model = f64(tiny_vit(img_size=4, patch_size=2, in_chans=1, embed_dim=4, depth=1, mlp_ratio=1.0))
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4))
    gradcheck_module(model, [x], names=["patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.0.attn.qkv.weight",
                                        "blocks.0.norm2.weight", "head.weight"])


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_tiny_vit_learns_a_separable_toy_set(pool):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 8, 8)).astype(np.float32) * 0.3
    y = rng.integers(0, 2, 32)
    x[y == 1, :, :4, :] += 1.0                 # class 1: bright top half
    model = tiny_vit(in_chans=1, num_classes=2, global_pool=pool)
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(tv.Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_wrong_channels_and_wrong_image_size_are_explained():
    model = tiny_vit()
    with pytest.raises(ValueError, match=r"expected images \(B, 2, H, W\), got shape \(1, 3, 8, 8\)"):
        model(tv.Tensor(np.zeros((1, 3, 8, 8), np.float32)))
    with pytest.raises(ValueError, match=r"a 12x12 image gives a 3x3 patch grid, but the position table is for 2x2.*set_image_size"):
        model(tv.Tensor(np.zeros((1, 2, 12, 12), np.float32)))


@pytest.mark.parametrize("pos", ["learn", "sincos"])
def test_set_image_size_resamples_and_then_accepts_the_new_size(pos):
    model = tiny_vit(pos_embed=pos, embed_dim=8)
    before = model.pos_embed.numpy().copy() if pos == "learn" else None
    model.set_image_size(16)
    assert model(tv.randn((1, 2, 16, 16), seed=0)).shape == (1, 3)
    if pos == "learn":
        assert model.pos_embed.shape == (1, 1 + 16, 8)
        np.testing.assert_array_equal(model.pos_embed.numpy()[:, 0], before[:, 0])  # class slot untouched
    else:
        np.testing.assert_allclose(model.fixed_pos_embed.numpy()[0, 1:], sincos_2d(4, 4, 8), rtol=1e-6)


def test_small_cnn_shapes_and_it_learns_the_toy_set():
    from tinyvision.models import SmallCNN
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 8, 8)).astype(np.float32) * 0.3
    y = rng.integers(0, 2, 32)
    x[y == 1, :, :4, :] += 1.0
    cnn = SmallCNN(img_size=8, in_chans=1, num_classes=2, width=4, seed=0)
    assert cnn(tv.Tensor(x)).shape == (32, 2)
    opt = AdamW(cnn.parameters(), lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(30):
        loss = F.cross_entropy(cnn(tv.Tensor(x)), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    with pytest.raises(ValueError, match="multiple of 4"):
        SmallCNN(img_size=10, seed=0)


def test_module_to_moves_fixed_tables_too(monkeypatch):
    """Module.to must move every tensor the model owns, including the fixed sin-cos table.

    No GPU here: a stand-in for CuPy's to_device marks arrays as "cuda" so the walk can be checked."""
    import tinyvision.nn.module as module_mod

    class FakeGPU(np.ndarray):
        pass
    FakeGPU.__module__ = "cupy._fake"
    monkeypatch.setattr(module_mod, "to_device", lambda a, device: np.asarray(a).view(FakeGPU))
    model = tiny_vit(pos_embed="sincos")
    model.to("cuda")
    assert model.fixed_pos_embed.device == "cuda"
    assert all(p.device == "cuda" for p in model.parameters())
