"""The CLIP model: towers, end-of-text pooling, temperature, and that a few steps lower the loss."""
import math

import numpy as np
import pytest

import tinyvision as tv
from tinyvision.gradcheck import gradcheck_module
from tinyvision.models import CLIP, TextTransformer
from tinyvision.models.contrastive import clamp_logit_scale, clip_loss
from tinyvision.optim import AdamW, param_groups_no_decay

EOT, PAD = 2, 0


def tiny_clip(**kw):
    return CLIP(embed_dim=8, vision=dict(img_size=8, patch_size=4, in_chans=3, embed_dim=8, depth=1, num_heads=2,
                                         class_token=False, global_pool="avg", init="xavier"),
                text=dict(vocab_size=12, context_length=6, width=8, depth=1, heads=2, eot_id=EOT), seed=0, **kw)


def test_towers_give_unit_vectors_of_the_joint_width():
    model = tiny_clip()
    images = tv.randn((3, 3, 8, 8), seed=0)
    ids = np.array([[1, 5, 6, EOT, PAD, PAD], [1, 7, EOT, PAD, PAD, PAD], [1, 4, 4, 9, 10, EOT]])
    i, t = model(images, ids)
    assert i.shape == t.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(i.numpy(), axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(t.numpy(), axis=1), 1, rtol=1e-5)


def test_text_features_ignore_everything_after_the_end_token():
    # causal mask + reading out at EOT: tokens after EOT (padding, or anything) cannot matter
    text = TextTransformer(vocab_size=12, context_length=6, width=8, depth=2, heads=2, embed_dim=4, eot_id=EOT, seed=0)
    a = text(np.array([[1, 5, 6, EOT, PAD, PAD]])).numpy()
    b = text(np.array([[1, 5, 6, EOT, 9, 11]])).numpy()
    c = text(np.array([[1, 5, 7, EOT, PAD, PAD]])).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)  # a token before EOT does matter


def test_missing_end_token_is_an_error_not_a_silent_index_zero():
    text = TextTransformer(vocab_size=12, context_length=6, width=8, depth=1, heads=2, embed_dim=4, eot_id=EOT, seed=0)
    with pytest.raises(ValueError, match=r"rows \[1\] of ids \(2, 4\) have no end token"):
        text(np.array([[1, 5, EOT, PAD], [1, 5, 6, 7]]))
    with pytest.raises(ValueError, match=r"L <= 6"):
        text(np.ones((1, 7), dtype=int))


def test_logit_scale_starts_at_one_over_0_07_and_is_not_decayed():
    model = tiny_clip()
    assert math.isclose(float(np.exp(model.logit_scale.numpy())), 1 / 0.07, rel_tol=1e-6)
    decay, no_decay = param_groups_no_decay(model, 0.1)
    assert any(p is model.logit_scale for p in no_decay["params"])
    assert not any(p is model.logit_scale for p in decay["params"])
    siglip = tiny_clip(init_logit_scale=math.log(10), init_logit_bias=-10.0)
    assert float(siglip.logit_bias.numpy()) == -10.0


def test_text_transformer_gradients_match_finite_differences():
    text = TextTransformer(vocab_size=6, context_length=4, width=4, depth=1, heads=2, embed_dim=3, eot_id=EOT,
                           mlp_ratio=1.0, seed=0)
    for p in text.parameters():
        p.data = p.data.astype(np.float64)
    ids = np.array([[1, 3, EOT, PAD], [1, 4, 5, EOT]])
    gradcheck_module(text, [], call=lambda m: m(ids), name="TextTransformer")


def test_a_few_steps_lower_the_clip_loss_and_the_scale_stays_clamped():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    ids = np.stack([[1, 3 + i % 8, EOT, PAD, PAD, PAD] for i in range(8)])
    images += (np.arange(8) / 4.0)[:, None, None, None]   # each pair is distinguishable
    model = tiny_clip()
    opt = AdamW(param_groups_no_decay(model, 0.1), lr=1e-2)
    losses = []
    for _ in range(25):
        i, t = model(tv.Tensor(images), ids)
        loss = clip_loss(i, t, model.logit_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        clamp_logit_scale(model.logit_scale)
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert 0 <= float(model.logit_scale.numpy()) <= math.log(100)
