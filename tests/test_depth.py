"""Monocular depth: the losses' invariances, the metrics' formulas, and scenes whose depth is geometry.

Eigen's loss with lambda = 1 is invariant to scaling the prediction and equals (1 / 2n^2) sum (d_i - d_j)^2;
with lambda = 0.5 it is not. MiDaS's alignment equals np.polyfit; its loss is invariant to any affine map
of the prediction and is 0 for pred = 3 gt - 2 (s = 1/3, t = 2/3). The scenes' ground depth follows the
pinhole formula, objects nearer are drawn larger (size cue on) and cover what is behind them, and each
switched-off cue is really off.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyvision as tv
from tinyvision.data.depth import DEPTH_CUES, OBJECT_SIZE, Z_SKY, depth_scenes
from tinyvision.gradcheck import gradcheck
from tinyvision.metrics import depth_metrics
from tinyvision.models.depth import DepthViT, scale_and_shift, scale_invariant_log_loss, ssi_loss


def f64(x):
    return tv.Tensor(np.asarray(x, dtype=np.float64), dtype=np.float64)


def eigen(p, t, lam):
    d = (p - np.log(t)).reshape(len(p), -1)
    n = d.shape[1]
    return np.mean(np.mean(d ** 2, 1) - lam * (d.sum(1) / n) ** 2)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.floats(0.1, 10), st.integers(0, 2 ** 31 - 1))
def test_eigen_loss_is_its_formula_and_scale_invariant_only_at_lambda_one(B, H, W, scale, seed):
    rng = np.random.default_rng(seed)
    p, t = rng.standard_normal((B, H, W)), rng.uniform(0.5, 20, (B, H, W))
    for lam in (0.0, 0.5, 1.0):
        np.testing.assert_allclose(scale_invariant_log_loss(f64(p), t, lam).item(), eigen(p, t, lam), rtol=1e-10, atol=1e-12)
    one = scale_invariant_log_loss(f64(p), t, 1.0).item()
    np.testing.assert_allclose(scale_invariant_log_loss(f64(p + np.log(scale)), t, 1.0).item(), one, rtol=1e-9, atol=1e-12)
    d = (p - np.log(t)).reshape(B, -1)
    pairs = np.mean([np.sum((di[:, None] - di[None]) ** 2) / (2 * len(di) ** 2) for di in d])
    np.testing.assert_allclose(one, pairs, rtol=1e-9, atol=1e-12)


def test_eigen_half_lambda_is_not_scale_invariant():
    rng = np.random.default_rng(0)
    t = rng.uniform(1, 10, (2, 4, 4))
    p = np.log(t) + rng.normal(0, 0.1, t.shape)
    a = scale_invariant_log_loss(f64(p), t, 0.5).item()
    b = scale_invariant_log_loss(f64(p + np.log(5)), t, 0.5).item()
    assert b > 10 * a
    assert scale_invariant_log_loss(f64(p + np.log(5)), t, 1.0).item() == pytest.approx(
        scale_invariant_log_loss(f64(p), t, 1.0).item(), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(2, 12), st.floats(-5, 5).filter(lambda a: abs(a) > 1e-2), st.floats(-5, 5),
       st.integers(0, 2 ** 31 - 1))
def test_ssi_alignment_is_least_squares_and_the_loss_ignores_any_affine_map(B, n, a, b, seed):
    rng = np.random.default_rng(seed)
    p, y = rng.standard_normal((B, n)), rng.standard_normal((B, n))
    s, t = scale_and_shift(f64(p), y)
    for i in range(B):
        np.testing.assert_allclose([s.numpy()[i], t.numpy()[i]], np.polyfit(p[i], y[i], 1), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ssi_loss(f64(a * p + b), y).item(), ssi_loss(f64(p), y).item(), rtol=1e-7, atol=1e-12)


def test_ssi_is_zero_for_an_affine_prediction_and_gradient_checks():
    gt = np.random.default_rng(1).uniform(0.1, 1, (2, 3, 3))
    s, t = scale_and_shift(f64(3 * gt - 2), gt)
    np.testing.assert_allclose(s.numpy(), 1 / 3, rtol=1e-10)
    np.testing.assert_allclose(t.numpy(), 2 / 3, rtol=1e-10)
    assert ssi_loss(f64(3 * gt - 2), gt).item() == pytest.approx(0, abs=1e-20)
    rng = np.random.default_rng(2)
    y = rng.standard_normal((2, 5))
    assert gradcheck(lambda p: ssi_loss(p, y), [rng.standard_normal((2, 5))]) < 1e-6
    t = rng.uniform(1, 5, (2, 5))
    assert gradcheck(lambda p: scale_invariant_log_loss(p, t, 0.5), [rng.standard_normal((2, 5))]) < 1e-6
    with pytest.raises(ValueError, match="scale_and_shift: a prediction is constant"):
        scale_and_shift(f64(np.ones((1, 4))), y[:1, :4])
    with pytest.raises(ValueError, match="scale_invariant_log_loss: depth must be > 0"):
        scale_invariant_log_loss(f64(np.zeros((1, 4))), np.zeros((1, 4)))


def test_depth_metrics_by_hand():
    t = np.array([[[1.0, 2.0], [4.0, 8.0]]])
    p = np.array([[[1.0, 2.4], [3.0, 8.0]]])                 # ratios 1, 1.2, 1.333, 1
    m = depth_metrics(p, t)
    assert m["abs_rel"] == pytest.approx((0 + 0.2 + 0.25 + 0) / 4)
    assert m["d1"] == 0.75 and m["d2"] == 1.0
    assert m["rmse"] == pytest.approx(np.sqrt((0.16 + 1) / 4))
    assert depth_metrics(2 * t, t, align="median")["abs_rel"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="depth_metrics: depths must be > 0"):
        depth_metrics(np.zeros((1, 2, 2)), t)


def test_scene_depth_is_the_pinhole_geometry_and_cues_switch_off():
    images, depth = depth_scenes(40, 32, seed=0)
    assert images.shape == (40, 3, 32, 32) and depth.shape == (40, 32, 32)
    H = 32
    rows = np.arange(H) + 0.5
    ground = rows > H / 3
    z_ground = np.where(ground, np.minimum(H / np.maximum(rows - H / 3, 1e-9), Z_SKY), Z_SKY)
    # columns no object touches are exactly the ground and sky of the formula
    sky_or_ground = np.all(np.isclose(depth, z_ground[None, :, None].astype(np.float32)), axis=1)   # (B, W)
    assert sky_or_ground.mean() > 0.5
    for i in range(40):
        cols = sky_or_ground[i]
        np.testing.assert_allclose(depth[i][:, cols], np.repeat(z_ground[:, None], cols.sum(), 1), rtol=1e-6)
    # size on: drawn size = OBJECT_SIZE f / Z for every object; off: not
    _, _, objects = depth_scenes(30, 32, seed=1, return_objects=True)
    assert all(s == pytest.approx(OBJECT_SIZE * H / z) for scene in objects for z, _, s, _, _ in scene)
    _, _, free = depth_scenes(30, 32, seed=1, cues=("occlusion", "texture"), return_objects=True)
    assert np.std([s * z / H for scene in free for z, _, s, _, _ in scene]) > 0.1
    # occlusion off: no two boxes overlap; on: some do
    def overlaps(scene):
        return any(a[4][0] < b[4][2] and b[4][0] < a[4][2] and a[4][1] < b[4][3] and b[4][1] < a[4][3]
                   for i, a in enumerate(scene) for b in scene[i + 1:])
    _, _, apart = depth_scenes(60, 32, seed=2, cues=("size", "texture"), count=(3, 3), return_objects=True)
    _, _, mixed = depth_scenes(60, 32, seed=2, count=(3, 3), return_objects=True)
    assert not any(map(overlaps, apart)) and any(map(overlaps, mixed))
    # texture off: every uncovered ground pixel has one colour; on: two stripe colours
    for cues, colours in ((("size", "occlusion"), 1), (DEPTH_CUES, 2)):
        img, dep = depth_scenes(10, 32, seed=3, cues=cues)
        bare = np.isclose(dep, z_ground[None, :, None].astype(np.float32)) & ground[None, :, None]
        assert len({tuple(c) for c in img.transpose(0, 2, 3, 1)[bare]}) == colours
    with pytest.raises(ValueError, match="depth_scenes: cues must be names from"):
        depth_scenes(2, seed=0, cues=("shading",))
    with pytest.raises(ValueError, match=r"depth_scenes: count must be \(lo, hi\) ints"):
        depth_scenes(2, seed=0, count=(3, 1))
    with pytest.raises(TypeError, match="depth_scenes: cues must be a sequence"):
        depth_scenes(2, seed=0, cues="size")
    assert DEPTH_CUES == ("size", "occlusion", "texture")


def test_depth_vit_paints_one_value_per_pixel_and_trains():
    model = DepthViT(img_size=16, patch_size=4, dim=16, depth=1, heads=2, seed=0)
    x = np.random.default_rng(0).random((2, 3, 16, 16)).astype(np.float32)
    out = model(x)
    assert out.shape == (2, 16, 16)
    loss = scale_invariant_log_loss(out, np.full((2, 16, 16), 3.0), 0.5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_maps_of_other_shapes_are_named_and_float32_alignment_does_not_cancel():
    with pytest.raises(ValueError, match=r"scale_invariant_log_loss: the prediction \(2, 16, 16\) and depth \(4, 8, 16\)"):
        scale_invariant_log_loss(tv.Tensor(np.zeros((2, 16, 16), np.float32)), np.ones((4, 8, 16)))
    with pytest.raises(ValueError, match=r"ssi_loss: the prediction \(2, 5\) and target_disparity \(2, 4\)"):
        ssi_loss(tv.Tensor(np.zeros((2, 5), np.float32)), np.ones((2, 4)))
    # a prediction with a large offset and a small spread, the target an exact affine map of it: in float32
    # the uncentred normal equations lose s (321 instead of 300); centred they keep it
    g = np.random.default_rng(0).standard_normal((1, 256))
    p = (10 + 0.01 * g).astype(np.float32)
    y = 300 * p.astype(np.float64) - 2999
    s, t = scale_and_shift(tv.Tensor(p), y)
    assert s.numpy()[0] == pytest.approx(300, rel=1e-3)
    assert ssi_loss(tv.Tensor(p), y).item() < 1e-6
