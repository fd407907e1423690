"""Video transformers: the invariances that decide what each attention can learn, against float64 math.

TimeSformer's space-only model cannot tell frame order (its logits are invariant to reversing a clip);
divided and joint attention cannot either while the time embedding is zero, and can once it is not;
divided attention at T = 1 is spatial attention (while temporal_fc is zero, as initialised); temporal
attention is equivariant to permuting patch positions consistently across frames; joint attention is
the plain attention over all T N tokens (a float64 NumPy transformer here); the tubelet embedding is
a 3-D convolution written out in loops.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyvision as tv
from tinyvision.gradcheck import gradcheck_module
from tinyvision.models.video import ATTENTIONS, DividedBlock, TubeletEmbed, VideoTransformer, attention_scores


def model(attention, T=3, seed=0, **kw):
    kw = {"img_size": 8, "patch_size": 4, "in_chans": 2, "dim": 8, "depth": 1, "num_heads": 2, "num_classes": 3,
          **kw}
    return VideoTransformer(T, attention=attention, seed=seed, **kw).astype(np.float64)


def clip(T=3, b=2, seed=1, c=2, size=8):
    return np.random.default_rng(seed).standard_normal((b, T, c, size, size))


def logits(m, x):
    with tv.no_grad():
        return m(tv.Tensor(x, dtype=np.float64)).numpy()


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_reversing_the_frames_changes_nothing_until_the_time_embedding_is_learned(attention):
    m, x = model(attention), clip()
    reversed_x = x[:, ::-1].copy()
    np.testing.assert_allclose(logits(m, reversed_x), logits(m, x), rtol=1e-10, atol=1e-12)
    m.time_embed.data[...] = np.random.default_rng(5).standard_normal(m.time_embed.shape)
    gap = np.abs(logits(m, reversed_x) - logits(m, x)).max()
    if attention == "space":        # no time embedding at all: blind to order, whatever is learned
        assert gap < 1e-10
    else:
        assert gap > 1e-6


def test_divided_block_at_one_frame_is_the_spatial_block_while_temporal_fc_is_zero():
    rng = np.random.default_rng(0)
    block = DividedBlock(8, 2, seed=0).astype(np.float64)
    x = rng.standard_normal((2, 1, 5, 8))
    with tv.no_grad():
        np.testing.assert_allclose(block(tv.Tensor(x, dtype=np.float64)).numpy()[:, 0],
                                   block.spatial(tv.Tensor(x[:, 0], dtype=np.float64)).numpy(), rtol=1e-12, atol=1e-12)
        # the pitfall: with temporal_fc trained, softmax over one key is 1 and the branch is NOT zero
        block.temporal_fc.weight.data[...] = rng.standard_normal(block.temporal_fc.weight.shape)
        gap = np.abs(block(tv.Tensor(x, dtype=np.float64)).numpy()[:, 0]
                     - block.spatial(tv.Tensor(x[:, 0], dtype=np.float64)).numpy()).max()
    assert gap > 1e-6


@given(perm_seed=st.integers(0, 1000), T=st.integers(1, 4), n=st.integers(1, 6))
@settings(max_examples=15, deadline=None)
def test_divided_block_is_equivariant_to_one_permutation_of_patches_in_every_frame(perm_seed, T, n):
    rng = np.random.default_rng(perm_seed)
    block = DividedBlock(8, 2, seed=0).astype(np.float64)
    block.temporal_fc.weight.data[...] = rng.standard_normal(block.temporal_fc.weight.shape)
    x = rng.standard_normal((2, T, n, 8))
    perm = rng.permutation(n)
    with tv.no_grad():
        out = block(tv.Tensor(x, dtype=np.float64)).numpy()
        out_perm = block(tv.Tensor(x[:, :, perm], dtype=np.float64)).numpy()
    np.testing.assert_allclose(out_perm, out[:, :, perm], rtol=1e-10, atol=1e-12)


# --- joint attention against a float64 NumPy transformer -----------------------------------------------
def np_layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def np_attention(x, p, prefix, heads):
    """Multi-head softmax attention over the L tokens of x (B, L, D), weights p[prefix + 'qkv.weight'], ..."""
    b, L, d = x.shape
    qkv = x @ p[prefix + "qkv.weight"] + p[prefix + "qkv.bias"]
    q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(b, L, heads, d // heads).transpose(0, 2, 1, 3) for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // heads)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = (a @ v).transpose(0, 2, 1, 3).reshape(b, L, d)
    return o @ p[prefix + "proj.weight"] + p[prefix + "proj.bias"]


def np_block(x, blk):
    """One pre-norm block on (B, L, D): plain softmax attention over all L tokens, then the GELU MLP."""
    from scipy.special import erf
    p = {k: v.data for k, v in blk.named_parameters()}
    x = x + np_attention(np_layer_norm(x, p["norm1.weight"], p["norm1.bias"], 1e-6), p, "attn.", blk.attn.num_heads)
    y = np_layer_norm(x, p["norm2.weight"], p["norm2.bias"], 1e-6)
    hid = y @ p["mlp.fc1.weight"] + p["mlp.fc1.bias"]
    hid = 0.5 * hid * (1 + erf(hid / math.sqrt(2)))
    return x + hid @ p["mlp.fc2.weight"] + p["mlp.fc2.bias"]


def np_divided(x, blk):
    """TimeSformer's divided block on (B, T, N, D), from the formulas: time over each patch, then space per frame."""
    p = {k: v.data for k, v in blk.named_parameters()}
    b, T, n, d = x.shape
    xt = x.transpose(0, 2, 1, 3).reshape(b * n, T, d)
    t_out = np_attention(np_layer_norm(xt, p["temporal_norm.weight"], p["temporal_norm.bias"], 1e-6), p,
                         "temporal_attn.", blk.temporal_attn.num_heads)
    t_out = t_out @ p["temporal_fc.weight"] + p["temporal_fc.bias"]
    x = x + t_out.reshape(b, n, T, d).transpose(0, 2, 1, 3)
    return np_block(x.reshape(b * T, n, d), blk.spatial).reshape(b, T, n, d)


@given(T=st.integers(1, 4), n=st.integers(1, 5), seed=st.integers(0, 1000))
@settings(max_examples=10, deadline=None)
def test_divided_block_equals_the_formulas_in_float64(T, n, seed):
    rng = np.random.default_rng(seed)
    block = DividedBlock(8, 2, seed=seed).astype(np.float64)
    block.temporal_fc.weight.data[...] = rng.standard_normal(block.temporal_fc.weight.shape)
    block.temporal_fc.bias.data[...] = rng.standard_normal(block.temporal_fc.bias.shape)
    x = rng.standard_normal((2, T, n, 8))
    with tv.no_grad():
        got = block(tv.Tensor(x, dtype=np.float64)).numpy()
    np.testing.assert_allclose(got, np_divided(x, block), rtol=1e-9, atol=1e-11)
    if T > 1 and n > 1:        # time mixes the same patch across frames: patch 1 of frame 1 reaches patch 0 of frame 0
        x2 = x.copy()
        x2[:, 1, 1] += rng.standard_normal(8)       # not a constant: LayerNorm would remove it
        blk_t = np_divided(x2, block) - np_divided(x, block)
        assert np.abs(blk_t[:, 0]).max() > 1e-6


@pytest.mark.parametrize("T", [1, 3])
def test_joint_attention_is_plain_attention_over_all_t_n_tokens(T):
    m = model("joint", T=T, depth=2)
    m.time_embed.data[...] = np.random.default_rng(3).standard_normal(m.time_embed.shape)
    x = clip(T=T)
    with tv.no_grad():
        tokens = m.tokens(tv.Tensor(x, dtype=np.float64)).numpy()           # (B, T, N, D)
    h = tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])               # (B, T N, D): one sequence
    for blk in m.blocks:
        h = np_block(h, blk)
    h = np_layer_norm(h, m.norm.weight.data, m.norm.bias.data, 1e-6).mean(1)
    np.testing.assert_allclose(logits(m, x), h @ m.head.weight.data + m.head.bias.data, rtol=1e-9, atol=1e-11)


def test_tubelet_embedding_is_a_3d_convolution_written_out():
    emb = TubeletEmbed(img_size=4, patch_size=2, tubelet=2, in_chans=3, embed_dim=5, seed=0).astype(np.float64)
    x = np.random.default_rng(2).standard_normal((2, 4, 3, 4, 4))
    with tv.no_grad():
        got = emb(tv.Tensor(x, dtype=np.float64)).numpy()                 # (B, T/2, N, D)
    w, bias = emb.weight.data, emb.bias.data                               # (D, C, t, P, P)
    want = np.zeros((2, 2, 4, 5))
    for b in range(2):
        for tt in range(2):
            for i in range(2):
                for j in range(2):
                    block = x[b, 2 * tt:2 * tt + 2, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2]   # (t, C, P, P)
                    for d in range(5):
                        want[b, tt, i * 2 + j, d] = (w[d] * block.transpose(1, 0, 2, 3)).sum() + bias[d]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_every_variant_gradient_checks_on_a_tiny_clip(attention):
    m = model(attention, T=2, img_size=4, patch_size=2, dim=4, num_heads=2)
    m.time_embed.data[...] = 0.1
    if attention == "divided":
        m.blocks[0].temporal_fc.weight.data[...] = 0.2
    names = ["pos_embed", "head.weight"] + (["time_embed"] if attention != "space" else [])
    names += {"divided": ["blocks.0.temporal_attn.qkv.weight", "blocks.0.temporal_fc.weight"],
              "factorised": ["temporal_blocks.0.attn.qkv.weight"]}.get(attention, ["blocks.0.attn.qkv.weight"])
    gradcheck_module(m, [clip(T=2, b=1, size=4)], names=names)


def test_tubelet_model_runs_and_costs_are_counted():
    m = model("divided", T=4, tubelet=2)
    assert logits(m, clip(T=4)).shape == (2, 3) and m.time_embed.shape == (1, 2, 1, 8)
    assert attention_scores("joint", 8, 16) == 128 ** 2
    assert attention_scores("divided", 8, 16) == 8 * 256 + 16 * 64
    assert attention_scores("space", 8, 16) == 8 * 256 and attention_scores("factorised", 8, 16) == 8 * 256 + 64


def test_bad_clips_and_settings_are_named():
    m = model("space")
    with pytest.raises(ValueError, match=r"VideoTransformer: expected clips \(B, 3, 2, H, W\), got shape \(2, 4, 2, 8, 8\)"):
        m(tv.Tensor(clip(T=4)))
    with pytest.raises(ValueError, match="VideoTransformer: attention must be one of"):
        VideoTransformer(4, 8, 4, attention="axial", seed=0)
    with pytest.raises(ValueError, match="VideoTransformer: num_frames=3 is not a multiple of tubelet=2"):
        VideoTransformer(3, 8, 4, tubelet=2, seed=0)
    with pytest.raises(ValueError, match="TubeletEmbed: expected clips"):
        TubeletEmbed(8, 4, 2, 3, 8, seed=0)(tv.Tensor(np.zeros((1, 2, 3, 4, 4))))


# --- the clip denoiser (tinyvision/diffusion/video.py) -------------------------------------------------------
def _video_dit(temporal, rng, **kw):
    from tinyvision.diffusion.video import VideoDiT
    kw = {"patch_size": 2, "dim": 8, "depth": 2, "heads": 2, **kw}
    m = VideoDiT(3, (4, 6), temporal=temporal, seed=0, **kw).astype(np.float64)
    with tv.no_grad():
        x = rng.standard_normal((2, 3, 3, 4, 6))
        assert not m(tv.Tensor(x, dtype=np.float64), np.array([5, 700])).numpy().any()   # adaLN-Zero: output 0
    for p in m.parameters():                                                             # leave the zero init
        p.data[...] = p.data + rng.standard_normal(p.shape) * 0.2
    return m


def _denoise(m, x, t, **kw):
    with tv.no_grad():
        return m(tv.Tensor(x, dtype=np.float64), t, **kw).numpy()


def test_video_dit_per_frame_keeps_frames_apart_and_divided_mixes_them():
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((2, 3, 3, 4, 6)), np.array([5, 700])
    x2 = x.copy()
    x2[:, 2] += rng.standard_normal(x2[:, 2].shape)                  # change the last frame only
    per_frame, divided = _video_dit("none", rng), _video_dit("divided", rng)
    assert np.abs(_denoise(per_frame, x, t)[:, :2] - _denoise(per_frame, x2, t)[:, :2]).max() == 0
    assert np.abs(_denoise(divided, x, t)[:, :2] - _denoise(divided, x2, t)[:, :2]).max() > 1e-3
    assert np.abs(_denoise(divided, x, t, alone=True)[:, :2] - _denoise(divided, x2, t, alone=True)[:, :2]).max() == 0


def test_video_dit_alone_is_the_image_model_frame_by_frame():
    # alone=True runs each frame through the spatial blocks only: the same function as a per-frame model
    # (temporal="none") holding the same spatial weights, in float64
    rng = np.random.default_rng(2)
    m = _video_dit("divided", rng)
    x, t = rng.standard_normal((2, 3, 3, 4, 6)), np.array([40, 900])
    out = _denoise(m, x, t, alone=True)
    assert np.abs(out - _denoise(m, x, t)).max() > 1e-3              # the temporal path matters when switched on
    plain = m.__class__(3, (4, 6), patch_size=2, dim=8, depth=2, heads=2, temporal="none", seed=0).astype(np.float64)
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("mix.")})
    np.testing.assert_allclose(_denoise(plain, x, t), out, rtol=0, atol=1e-12)


def test_video_dit_gradients_check_and_bad_clips_are_named():
    from tinyvision.diffusion.video import VideoDiT
    rng = np.random.default_rng(1)
    m = _video_dit("divided", rng, depth=1)
    t = np.array([3])
    gradcheck_module(m, [rng.standard_normal((1, 3, 3, 4, 6))],
                     names=["mix.0.attn.qkv.weight", "mix.0.fc.weight", "final.weight", "blocks.0.ada.weight"],
                     call=lambda mm, xt: mm(xt, t))
    with pytest.raises(ValueError, match=r"VideoDiT: x must be clips \(B, 3, 3, H, W\), got shape \(1, 2, 3, 4, 6\)"):
        m(tv.Tensor(np.zeros((1, 2, 3, 4, 6))), t)
    with pytest.raises(ValueError, match="VideoDiT: temporal must be one of"):
        VideoDiT(2, 4, temporal="joint", seed=0)
    with pytest.raises(TypeError, match="VideoDiT: alone must be True or False, got str"):
        m(tv.Tensor(np.zeros((1, 3, 3, 4, 6))), t, alone="yes")
