"""DINO's parts against float64 formulas, and the collapse that centring alone and sharpening alone cause.

Constant student logits give a loss of exactly ln K; the loss equals its NumPy formula (every pair of a
teacher view and another student view) and passes a gradient check; the EMA, the centre, the cosine and
the temperature schedules equal their formulas; the class token read at a smaller grid equals a ViT
whose position table was resampled; the crops keep what they should. A short run on random pictures
shows the two collapses: centring without sharpening drives the teacher to the uniform distribution
(entropy ln K), sharpening without centring drives it to one dimension (entropy near 0).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyvision as tv
from tinyvision.data.augment import color_jitter, multi_crop, random_resized_crop
from tinyvision.gradcheck import gradcheck
from tinyvision.models.dino import (DINO, DINOHead, cosine_schedule, dino_loss, ema_update, teacher_temperatures,
                                    update_center, vit_class_token)
from tinyvision.models.vit import ViT


def loss_formula(student, teacher, center, ts, tt):
    def softmax(z):
        z = np.exp(z - z.max(-1, keepdims=True))
        return z / z.sum(-1, keepdims=True)
    terms = [np.mean(np.sum(-softmax((t - center) / tt) * np.log(softmax(s / ts)), -1))
             for a, t in enumerate(teacher) for b, s in enumerate(student) if a != b]
    return np.mean(terms)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 5), st.integers(1, 2), st.integers(1, 4), st.integers(2, 9), st.floats(0.02, 0.5),
       st.floats(0.05, 1.0), st.integers(0, 2 ** 31 - 1))
def test_dino_loss_equals_the_formula(views, n_teacher, B, K, tt, ts, seed):
    n_teacher = min(n_teacher, views)
    rng = np.random.default_rng(seed)
    student = [rng.standard_normal((B, K)) for _ in range(views)]
    teacher = [rng.standard_normal((B, K)) for _ in range(n_teacher)]
    center = rng.standard_normal((1, K)) * 0.1
    got = dino_loss([tv.Tensor(s, dtype=np.float64) for s in student], teacher, center, ts, tt).item()
    np.testing.assert_allclose(got, loss_formula(student, teacher, center, ts, tt), rtol=1e-10)


def test_constant_student_logits_give_exactly_ln_k():
    rng = np.random.default_rng(0)
    K = 4096
    student = [tv.Tensor(np.full((3, K), 0.7), dtype=np.float64) for _ in range(10)]
    teacher = [rng.standard_normal((3, K)) for _ in range(2)]
    assert dino_loss(student, teacher, np.zeros((1, K))).item() == pytest.approx(np.log(K), rel=1e-12)


def test_dino_loss_gradient_checks_and_bad_views_are_named():
    rng = np.random.default_rng(1)
    teacher = [rng.standard_normal((2, 5)) for _ in range(2)]
    assert gradcheck(lambda a, b, c: dino_loss([a, b, c], teacher, np.zeros((1, 5))),
                     [rng.standard_normal((2, 5)) for _ in range(3)]) < 1e-6
    with pytest.raises(ValueError, match="dino_loss: one view alone gives no pair"):
        dino_loss([tv.Tensor(np.zeros((2, 5)))], teacher[:1], np.zeros((1, 5)))
    with pytest.raises(ValueError, match=r"dino_loss: the teacher's views \(2\) must be the first of the student's \(1\)"):
        dino_loss([tv.Tensor(np.zeros((2, 5)))], teacher, np.zeros((1, 5)))


def test_ema_centre_and_schedules_follow_their_formulas():
    a = DINOHead(4, 6, hidden_dim=8, bottleneck_dim=3, seed=0)
    b = DINOHead(4, 6, hidden_dim=8, bottleneck_dim=3, seed=1)
    before = [p.numpy().copy() for p in a.parameters()]
    ema_update(a, b, np.float64(0.9))                 # a schedule's value: the weights must stay float32
    for p, p0, q in zip(a.parameters(), before, b.parameters()):
        assert p.numpy().dtype == np.float32
        np.testing.assert_allclose(p.numpy(), 0.9 * p0 + 0.1 * q.numpy(), rtol=1e-6)
    t = [np.arange(6.0).reshape(2, 3), np.ones((2, 3))]
    np.testing.assert_allclose(update_center(np.full((1, 3), 2.0), t, 0.9),
                               0.9 * 2.0 + 0.1 * np.concatenate(t).mean(0, keepdims=True), rtol=1e-6)
    s = cosine_schedule(0.996, 1.0, 100)
    assert s[0] == 0.996 and s[50] == pytest.approx(0.998) and s[-1] < 1.0 and np.all(np.diff(s) > 0)
    np.testing.assert_allclose(s, 1.0 + 0.5 * (0.996 - 1.0) * (1 + np.cos(np.pi * np.arange(100) / 100)))
    w = cosine_schedule(1e-3, 1e-6, 20, warmup_steps=5)
    np.testing.assert_allclose(w[:5], np.linspace(0, 1e-3, 5))
    assert w[5] == pytest.approx(1e-3) and len(w) == 20
    np.testing.assert_allclose(teacher_temperatures(0.04, 0.07, 3, 5), [0.04, 0.055, 0.07, 0.07, 0.07])


def test_weight_normalised_rows_have_unit_norm_and_only_the_student_learns():
    head = DINOHead(4, 6, hidden_dim=8, bottleneck_dim=3, seed=0)
    v = head.last_layer.weight_v.numpy()
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(head.last_layer(tv.Tensor(x)).numpy(), x @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T,
                               rtol=1e-5, atol=1e-6)
    assert all(p is not head.last_layer.weight_g for p in head.parameters())    # g = 1 stays fixed
    vit = dict(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2, mlp_ratio=1.0)
    model = DINO(vit, out_dim=5, hidden_dim=8, bottleneck_dim=4, seed=0)
    teacher_backbone, teacher_head = model.teacher
    assert all(np.array_equal(p.numpy(), q.numpy()) for p, q in zip(teacher_backbone.parameters(), model.backbone.parameters()))
    assert len(model.parameters()) == len(model.backbone.parameters()) + len(model.head.parameters())


def test_a_smaller_crop_is_read_with_the_resampled_position_table():
    vit = ViT(img_size=16, patch_size=4, embed_dim=8, depth=1, num_heads=2, mlp_ratio=1.0, seed=0).astype(np.float64)
    small = ViT(img_size=16, patch_size=4, embed_dim=8, depth=1, num_heads=2, mlp_ratio=1.0, seed=0).astype(np.float64)
    small.set_image_size((8, 8))
    x = np.random.default_rng(0).random((2, 3, 8, 8))
    got = vit_class_token(vit, tv.Tensor(x, dtype=np.float64)).numpy()
    tokens = small.embed(tv.Tensor(x, dtype=np.float64))
    for block in small.blocks:
        tokens = block(tokens)
    np.testing.assert_allclose(got, small.norm(tokens)[:, 0].numpy(), atol=1e-10)


def test_crops_and_colour_jitter_keep_what_they_should():
    rng = np.random.default_rng(0)
    x = rng.random((3, 3, 12, 12)).astype(np.float32)
    same = random_resized_crop(x, rng, 12, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    np.testing.assert_allclose(same, x, atol=1e-6)                    # the whole picture at its own size
    jittered = color_jitter(x, rng, brightness=0.0)
    for i in range(3):                                                # a permutation of the channels
        assert sorted(map(tuple, jittered[i].reshape(3, -1).round(6))) == sorted(map(tuple, x[i].reshape(3, -1).round(6)))
    views = multi_crop(x, rng, n_local=3)
    assert [v.shape for v in views] == [(3, 3, 12, 12)] * 2 + [(3, 3, 6, 6)] * 3
    assert all(v.min() >= 0 and v.max() <= 1 for v in views)
    with pytest.raises(ValueError, match=r"random_resized_crop: scale must be \(lo, hi\) with 0 < lo <= hi <= 1"):
        random_resized_crop(x, rng, 6, scale=(0.0, 0.5))
    with pytest.raises(ValueError, match="random_resized_crop: out_size must be an int >= 1"):
        random_resized_crop(x, rng, 0)
    with pytest.raises(ValueError, match=r"color_jitter: brightness must be in \[0, 1\)"):
        color_jitter(x, rng, brightness=1.5)


def teacher_entropy_after(steps, center_momentum, teacher_temp, seed=0):
    """A short DINO run on random pictures; the mean entropy of the teacher's softmax at the end."""
    rng = np.random.default_rng(seed)
    vit = dict(img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2, mlp_ratio=2.0)
    model = DINO(vit, out_dim=16, hidden_dim=32, bottleneck_dim=8, seed=seed)
    opt = tv.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    pictures = rng.random((64, 3, 8, 8)).astype(np.float32)
    for _ in range(steps):
        views = multi_crop(pictures[rng.integers(0, 64, 16)], rng, n_local=0)
        model.train_step(views, opt, teacher_temp=teacher_temp, momentum=0.9, center_momentum=center_momentum)
    z = (model.teacher_out(pictures) - model.center.numpy()) / teacher_temp
    q = np.exp(z - z.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    return float(np.mean(-(q * np.log(q + 1e-30)).sum(1)))


def test_centring_alone_and_sharpening_alone_collapse_and_both_do_not():
    K = 16
    centring_only = teacher_entropy_after(150, 0.9, teacher_temp=1.0)      # no sharpening: tau_t = 1
    sharpening_only = teacher_entropy_after(150, None, teacher_temp=0.04)  # no centre
    both = teacher_entropy_after(150, 0.9, teacher_temp=0.04)
    assert centring_only > 0.95 * np.log(K), centring_only
    assert sharpening_only < 0.1, sharpening_only
    assert 0.1 < both < 0.95 * np.log(K), both


def test_the_teacher_starts_as_the_student_for_any_seed_and_other_position_tables_are_refused():
    vit = dict(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2, mlp_ratio=1.0)
    model = DINO(vit, out_dim=5, hidden_dim=8, bottleneck_dim=4, seed=np.random.default_rng(3))
    backbone, head = model.teacher
    for t, s in zip(backbone.parameters() + head.parameters(), model.backbone.parameters() + model.head.parameters()):
        np.testing.assert_array_equal(t.numpy(), s.numpy())
        assert t is not s and t.data is not s.data
    with pytest.raises(ValueError, match="DINO: the ViT needs a learned position table"):
        DINO({**vit, "pos_embed": "sincos"}, out_dim=5, seed=0)
