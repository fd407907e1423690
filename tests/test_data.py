"""tinyvision.data: the digits split, the shapes generator and the batch iterator.

The shapes tests check each picture against its spec: the colours of every object's pixels, the
area against the formula, the side of the mass centre, and the number of separate blobs (counted
with a plain flood fill) against the count.
"""
import math
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imaging import count_blobs
from tinyvision.data import (COLORS, SHAPES, ObjectSpec, SceneSpec, batches, counting_task, left_right_task,
                             load_digits, make_scene, region_center, sample_scene_specs, sample_scenes, shape_mask,
                             size_px, tiny_object_task)

sklearn_datasets = pytest.importorskip("sklearn.datasets")


# --- digits ------------------------------------------------------------------------------------
def as_keys(images):
    """Each (1, 8, 8) image of 0..16 pixel counts as bytes, to compare splits as multisets."""
    return Counter(np.rint(im * 16).astype(np.uint8).tobytes() for im in images)


def test_digits_train_and_test_are_disjoint_and_together_all_1797():
    train, _ = load_digits("train", normalize=False)
    test, _ = load_digits("test", normalize=False)
    everything = sklearn_datasets.load_digits().images[:, None] / 16
    assert len(train) + len(test) == 1797
    assert as_keys(train) + as_keys(test) == as_keys(everything)


def test_digits_split_is_stratified_by_class():
    _, train_labels = load_digits("train", test_fraction=0.25)
    _, test_labels = load_digits("test", test_fraction=0.25)
    per_class = np.bincount(np.concatenate([train_labels, test_labels]), minlength=10)
    expected = np.array([round(0.25 * n) for n in per_class])
    np.testing.assert_array_equal(np.bincount(test_labels, minlength=10), expected)


def test_digits_same_seed_same_split_different_seed_different_split():
    a, la = load_digits("test", seed=3)
    b, lb = load_digits("test", seed=3)
    c, _ = load_digits("test", seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert as_keys(a) != as_keys(c)


def test_digits_shapes_dtypes_and_upsample_equals_np_repeat():
    images, labels = load_digits("train")
    big, big_labels = load_digits("train", upsample=3)
    assert images.shape == (len(labels), 1, 8, 8) and images.dtype == np.float32
    assert labels.dtype == np.int64 and set(labels) == set(range(10))
    assert big.shape == (len(labels), 1, 24, 24)
    np.testing.assert_array_equal(big, np.repeat(np.repeat(images, 3, axis=2), 3, axis=3))
    np.testing.assert_array_equal(big_labels, labels)


def test_digits_both_splits_are_normalised_with_the_train_statistics():
    train, _, stats = load_digits("train", return_stats=True)
    test, _, test_stats = load_digits("test", return_stats=True)
    raw_train, _ = load_digits("train", normalize=False)
    raw_test, _ = load_digits("test", normalize=False)
    assert abs(train.mean()) < 1e-5 and abs(train.std() - 1) < 1e-5
    assert test_stats == stats == (pytest.approx(raw_train.mean(), rel=1e-5), pytest.approx(raw_train.std(), rel=1e-5))
    assert abs(raw_test.mean() - stats.mean) > 1e-3   # the test set's own mean would give a different map
    np.testing.assert_allclose(test, (raw_test - stats.mean) / stats.std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.unnormalize(test), raw_test, atol=1e-6)


@pytest.mark.parametrize("kwargs, words", [
    ({"split": "val"}, ["split", "'train'", "'test'"]),
    ({"test_fraction": 1.0}, ["test_fraction"]),
    ({"upsample": 0}, ["upsample"]),
    ({"seed": np.random.default_rng(0)}, ["seed"]),
])
def test_digits_bad_arguments_raise_naming_the_argument(kwargs, words):
    with pytest.raises(ValueError) as err:
        load_digits(**kwargs)
    assert all(word in str(err.value) for word in words), str(err.value)


def test_importing_tinyvision_data_imports_neither_sklearn_nor_matplotlib():
    code = "import sys, tinyvision.data; print([m for m in ('sklearn', 'matplotlib') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- shapes: helpers -----------------------------------------------------------------------------
def foreground(image):
    """(3, H, W) on the black background -> boolean (H, W) of the object pixels."""
    return image.max(axis=0) > 0


@st.composite
def scene_options(draw):
    """Options for sample_scene_specs that can always be met (the "center" region holds one object)."""
    placement = draw(st.sampled_from(["anywhere", "left_right", "top", "center"]))
    counts = {"anywhere": [1, (0, 4), (2, 4)], "center": [1]}.get(placement, [1, (1, 2)])
    return {
        "canvas_size": draw(st.sampled_from([24, 32, (32, 40)])),
        "seed": draw(st.integers(0, 2**31)),
        "count": draw(st.sampled_from(counts)),
        "sizes": draw(st.sampled_from([("tiny",), ("tiny", "small"), (4, 5, 6), (1, 2, 3)])),
        "placement": placement,
        "same_kind": draw(st.booleans()),
    }


# --- shapes: pictures match their specs ----------------------------------------------------------
@given(scene_options())
def test_every_object_pixel_has_exactly_its_colour_and_the_rest_is_background(options):
    for spec in sample_scene_specs(3, **options):
        image = make_scene(spec)
        covered = np.zeros(spec.canvas_size, dtype=bool)
        for obj in spec.objects:
            mask = shape_mask(obj.shape, obj.center, obj.size, spec.canvas_size)
            assert mask.any(), f"{obj} drew no pixel"
            np.testing.assert_array_equal(image[:, mask].T, np.broadcast_to(np.float32(COLORS[obj.color]), (mask.sum(), 3)))
            covered |= mask
        assert (image[:, ~covered] == 0).all()


@given(scene_options())
def test_sampled_scenes_hold_exactly_count_separate_objects(options):
    images, attrs = sample_scenes(3, **options)
    for image, record in zip(images, attrs):
        assert count_blobs(foreground(image)) == record["count"] == len(record["objects"])


def test_densely_packed_squares_never_touch():
    # Squares fill their boxes, so two boxes closer than 1 pixel would merge into one blob.
    images, attrs = sample_scenes(40, 24, seed=0, count=(4, 6), shapes=("square",), sizes=(6,))
    for image, record in zip(images, attrs):
        assert count_blobs(foreground(image)) == record["count"]
        boxes = [(o["x"] - 3, o["y"] - 3) for o in record["objects"]]
        for i, (x0, y0) in enumerate(boxes):
            for x1, y1 in boxes[i + 1:]:
                assert abs(x0 - x1) >= 7 or abs(y0 - y1) >= 7, f"boxes at {(x0, y0)} and {(x1, y1)} are closer than 1 px"


@pytest.mark.parametrize("shape, area", [("circle", math.pi * 40**2 / 4), ("square", 40**2), ("triangle", 40**2 / 2)])
@pytest.mark.parametrize("center", [(24.0, 24.0), (24.5, 24.5), (23.3, 24.7)])
def test_shape_area_is_the_formula_within_three_percent_at_size_40(shape, area, center):
    assert shape_mask(shape, center, 40, 48).sum() == pytest.approx(area, rel=0.03)


@given(st.sampled_from(SHAPES), st.integers(1, 20), st.floats(0, 1), st.floats(0, 1))
def test_shape_stays_inside_its_box_and_a_square_covers_exactly_s_by_s(shape, size, fx, fy):
    cx, cy = size / 2 + fx * (40 - size), size / 2 + fy * (40 - size)
    rows, cols = np.nonzero(shape_mask(shape, (cx, cy), size, 40))
    assert (cols + 0.5 >= cx - size / 2).all() and (cols + 0.5 <= cx + size / 2).all()
    assert (rows + 0.5 >= cy - size / 2).all() and (rows + 0.5 <= cy + size / 2).all()
    if shape == "square":
        assert len(rows) == size * size


def test_shapes_differ_from_size_4_and_circle_equals_square_at_size_3():
    masks = {s: shape_mask(s, (8, 8), 4, 16) for s in SHAPES}
    assert {s: int(m.sum()) for s, m in masks.items()} == {"circle": 12, "square": 16, "triangle": 8}
    np.testing.assert_array_equal(shape_mask("circle", (8.5, 8.5), 3, 16), shape_mask("square", (8.5, 8.5), 3, 16))


def test_left_right_task_puts_the_mass_centre_in_the_labelled_half():
    images, labels = left_right_task(200, 32, seed=0)
    assert set(labels) == {0, 1}
    for image, label in zip(images, labels):
        mass_centre_x = np.nonzero(foreground(image))[1].mean() + 0.5
        assert (mass_centre_x > 16) == bool(label), f"label {label}, mass centre x {mass_centre_x}"


def test_tiny_object_task_labels_match_the_drawn_shape():
    images, labels = tiny_object_task(60, 32, object_size=4, seed=0)
    pixels_per_shape = {0: 12, 1: 16, 2: 8}      # circle, square, triangle at size 4 (grid-aligned)
    assert set(labels) == {0, 1, 2}
    for image, label in zip(images, labels):
        rows, cols = np.nonzero(foreground(image))
        assert len(rows) == pixels_per_shape[int(label)] and np.ptp(rows) < 4 and np.ptp(cols) < 4


def test_counting_task_labels_are_counts_from_0_to_max_count():
    images, labels = counting_task(100, max_count=3, seed=0)
    assert set(labels) == {0, 1, 2, 3}
    assert [count_blobs(foreground(im)) for im in images[:20]] == list(labels[:20])


def test_same_kind_scenes_share_shape_colour_and_size():
    _, attrs = sample_scenes(30, seed=0, count=(2, 4), same_kind=True, sizes=("tiny", "small"))
    for record in attrs:
        assert len({(o["shape"], o["color"], o["size_px"]) for o in record["objects"]}) == 1
        assert None not in (record["shape"], record["color"], record["size_px"])


def test_attributes_of_an_explicit_scene():
    left = ObjectSpec("circle", "red", 8, region_center("left", 32), size_name="small")
    right = ObjectSpec("square", "blue", 8, region_center("right", 32))
    one = SceneSpec([left], 32).attributes()
    assert one == {"shape": "circle", "color": "red", "size": "small", "size_px": 8, "x": 8.0, "y": 16.0,
                   "side": "left", "count": 1, "objects": one["objects"]}
    two = SceneSpec([left, right], 32).attributes()
    assert (two["count"], two["shape"], two["side"], two["size_px"]) == (2, None, None, 8)
    assert [o["side"] for o in two["objects"]] == ["left", "right"]


def test_named_sizes_scale_with_the_canvas_and_never_go_below_4_pixels():
    assert [size_px(s, 32) for s in ("tiny", "small", "large")] == [4, 8, 16]
    assert [size_px(s, (64, 80)) for s in ("tiny", "small", "large")] == [8, 16, 32]
    assert size_px("tiny", 16) == 4


# --- shapes: seeds and splits --------------------------------------------------------------------
def test_scenes_are_determined_by_the_seed():
    a, attrs_a = sample_scenes(20, seed=7, count=(1, 3))
    b, attrs_b = sample_scenes(20, seed=7, count=(1, 3))
    c, _ = sample_scenes(20, seed=8, count=(1, 3))
    np.testing.assert_array_equal(a, b)
    assert attrs_a == attrs_b
    assert not np.array_equal(a, c)


def test_excluded_combos_never_appear_and_allowed_combos_are_all_that_appear():
    held_out = [("red", "circle"), ("blue", "square")]
    _, attrs = sample_scenes(300, seed=0, count=(1, 3), exclude_combos=held_out)
    seen = {(o["color"], o["shape"]) for record in attrs for o in record["objects"]}
    assert seen.isdisjoint(held_out) and len(seen) == len(COLORS) * len(SHAPES) - 2
    _, attrs = sample_scenes(100, seed=0, allowed_combos=held_out)
    assert {(r["color"], r["shape"]) for r in attrs} == set(held_out)


@pytest.mark.parametrize("kwargs, words", [
    ({"count": 20, "sizes": ("large",)}, ["cannot fit", "16", "canvas"]),
    ({"count": 2, "sizes": (16,), "placement": "left"}, ["cannot fit", "'left'"]),
    ({"colors": ("red", "mauve")}, ["colors", "'mauve'", "'red'", "'green'"]),
    ({"shapes": ("hexagon",)}, ["shapes", "'hexagon'", "'circle'"]),
    ({"placement": "middle"}, ["placement", "'middle'", "'left_right'"]),
    ({"sizes": ("huge",)}, ["size", "'huge'", "'tiny'"]),
    ({"exclude_combos": [("circle", "red")]}, ["exclude_combos", "(color, shape)"]),
    ({"allowed_combos": [("red", "circle")], "shapes": ("square",)}, ["no (color, shape) pair"]),
    ({"count": (3, 1)}, ["count"]),
])
def test_impossible_or_unknown_requests_raise_value_errors_naming_the_argument(kwargs, words):
    with pytest.raises(ValueError) as err:
        sample_scenes(5, 32, seed=0, **kwargs)
    assert all(word in str(err.value) for word in words), str(err.value)


def test_scene_spec_rejects_objects_off_the_canvas_or_in_the_background_colour():
    with pytest.raises(ValueError, match="outside"):
        SceneSpec([ObjectSpec("square", "red", 8, (2, 16))], 32)
    with pytest.raises(ValueError, match="background"):
        SceneSpec([ObjectSpec("square", "white", 8, (16, 16))], 32, background="white")
    with pytest.raises(ValueError, match="color must be one of"):
        ObjectSpec("square", (1, 0, 0), 8, (16, 16))


# --- batches -------------------------------------------------------------------------------------
@given(st.integers(0, 50), st.integers(1, 20), st.booleans(), st.booleans(), st.integers(0, 5))
def test_batches_visit_every_index_once_per_epoch_and_keep_arrays_aligned(n, batch_size, shuffle, drop_last, epoch):
    x, y = np.arange(n), np.arange(n) * 10
    seen = []
    for bx, by in batches(x, y, batch_size=batch_size, shuffle=shuffle, seed=1, epoch=epoch, drop_last=drop_last):
        np.testing.assert_array_equal(by, bx * 10)
        assert len(bx) == batch_size or (not drop_last and len(bx) == n % batch_size)
        seen.extend(bx)
    if drop_last:
        assert len(seen) == n - n % batch_size and len(set(seen)) == len(seen)
    else:
        assert sorted(seen) == list(range(n))
    if not shuffle:
        assert seen == sorted(seen)


def test_batches_same_seed_and_epoch_same_order_otherwise_different():
    x = np.arange(100)

    def order(**kw):
        return np.concatenate([b for (b,) in batches(x, batch_size=16, **kw)])

    np.testing.assert_array_equal(order(seed=3, epoch=2), order(seed=3, epoch=2))
    assert not np.array_equal(order(seed=3, epoch=2), order(seed=4, epoch=2))
    assert not np.array_equal(order(seed=3, epoch=2), order(seed=3, epoch=3))
    assert not np.array_equal(order(seed=0, epoch=1), order(seed=1, epoch=0))


def test_batches_drop_last_leaves_out_the_short_batch():
    x = np.zeros((10, 3))
    assert [len(b) for (b,) in batches(x, batch_size=4, shuffle=False)] == [4, 4, 2]
    assert [len(b) for (b,) in batches(x, batch_size=4, shuffle=False, drop_last=True)] == [4, 4]


def test_batches_leave_the_global_random_state_alone():
    before = np.random.get_state()[1].copy()
    list(batches(np.arange(10), batch_size=3, seed=0))
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_batches_with_mismatched_first_dimensions_raise_naming_the_shapes():
    with pytest.raises(ValueError, match=r"same first dimension.*\(5, 2\).*\(4,\)"):
        next(batches(np.zeros((5, 2)), np.zeros(4), batch_size=2))
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(np.zeros(4), batch_size=0))


def test_random_shift_moves_each_image_by_at_most_k_and_keeps_content():
    from tinyvision.data import random_shift
    x = np.zeros((50, 2, 7, 9), np.float32)
    x[:, :, 3, 4] = 1.0                                    # one bright pixel in the middle
    out = random_shift(x, np.random.default_rng(0), max_shift=2, fill=0.0)
    assert out.shape == x.shape
    where = np.argwhere(out[:, 0] == 1.0)                  # (image, row, col), one hit per image
    assert len(where) == 50 and np.array_equal(where[:, 0], np.arange(50))
    assert np.abs(where[:, 1] - 3).max() <= 2 and np.abs(where[:, 2] - 4).max() <= 2
    assert len({(r, c) for _, r, c in where}) > 10        # shifts really vary
    np.testing.assert_array_equal(out[:, 0], out[:, 1])    # channels move together
    np.testing.assert_array_equal(random_shift(x, np.random.default_rng(0), 0), x)


@given(shape=st.sampled_from(SHAPES), color=st.sampled_from(sorted(COLORS)), canvas=st.sampled_from([16, 24, 32]),
       size=st.integers(4, 16), fx=st.floats(0, 1), fy=st.floats(0, 1))
def test_read_object_returns_what_was_drawn(shape, color, canvas, size, fx, fy):
    from tinyvision.data import read_object
    size = min(size, canvas // 2)
    lo, hi = size / 2, canvas - size / 2
    cx, cy = round(lo + fx * (hi - lo)), round(lo + fy * (hi - lo))      # integer centres
    if size % 2:
        cx, cy = cx + 0.5 if cx + 0.5 <= hi else cx - 0.5, cy + 0.5 if cy + 0.5 <= hi else cy - 0.5
    spec = SceneSpec((ObjectSpec(shape, color, size, (cx, cy)),), canvas)
    image = make_scene(spec)
    got = read_object(image)
    assert got is not None
    want = spec.objects[0].attributes(canvas)
    assert (got["shape"], got["color"], got["side"]) == (shape, color, want["side"])
    box = shape_mask(shape, (cx, cy), size, canvas)
    assert got["size_px"] == max(np.ptp(np.nonzero(box)[0]), np.ptp(np.nonzero(box)[1])) + 1


def test_read_object_on_noise_and_bad_input():
    from tinyvision.data import read_object
    assert read_object(np.zeros((3, 8, 8))) is None
    speck = np.zeros((3, 8, 8))
    speck[0, 2, 2:4] = 1
    assert read_object(speck) is None                   # 2 pixels: not an object
    with pytest.raises(ValueError, match=r"read_object: image must be \(3, H, W\), got shape \(8, 8\)"):
        read_object(np.zeros((8, 8)))


def test_moving_shapes_roll_exactly_and_reversal_swaps_the_direction():
    from tinyvision.data import motion_task, moving_shapes
    clips, records = moving_shapes(40, frames=4, canvas_size=16, speed=2, seed=0)
    assert clips.shape == (40, 4, 3, 16, 16) and clips.dtype == np.float32
    for clip, r in zip(clips, records):
        step = 2 if r["direction"] == "right" else -2
        for k in range(4):
            np.testing.assert_array_equal(clip[k], np.roll(clip[0], k * step, axis=2))
        assert clip[0].max() == 1.0 and COLORS[r["color"]] in {tuple(clip[0][:, i, j]) for i, j in zip(*np.nonzero(clip[0].max(0)))}
    # reversed, a right-mover IS a left-mover: its frames roll the other way
    right = clips[[r["direction"] == "right" for r in records]][0][::-1]
    for k in range(4):
        np.testing.assert_array_equal(right[k], np.roll(right[0], -2 * k, axis=2))
    _, labels = motion_task(2000, seed=1)
    assert abs(labels.mean() - 0.5) < 0.05
    with pytest.raises(ValueError, match="moving_shapes: speed=8 pixels a frame must be below half the 16-pixel canvas"):
        moving_shapes(2, frames=8, canvas_size=16, speed=8, seed=0)
    with pytest.raises(ValueError, match="moving_shapes: colors must be names in"):
        moving_shapes(2, seed=0, colors=("mauve",))


def test_one_frame_of_a_moving_shape_says_nothing_about_its_direction():
    # The object in frame k sits at column (x0 + k * step) mod W, x0 drawn uniformly from all W columns:
    # a uniform place in every frame, whichever the direction. Checked on the pixels of the squares
    # (which fill their columns), and every x0 is seen in both directions.
    from tinyvision.data import moving_shapes
    clips, records = moving_shapes(600, frames=4, canvas_size=16, speed=2, seed=3)
    for clip, r in zip(clips, records):
        if r["shape"] != "square":
            continue
        step = 2 if r["direction"] == "right" else -2
        for k in range(4):
            columns = set(np.nonzero(clip[k].max(axis=(0, 1)))[0].tolist())
            assert columns == {(r["x0"] + k * step + j) % 16 for j in range(-2, 2)}
    for direction in ("left", "right"):
        assert {r["x0"] for r in records if r["direction"] == direction} == set(range(16))


def test_sliding_shapes_stay_whole_and_move_exactly_speed_pixels_a_frame():
    from tinyvision.data import motion_steadiness, object_centres, read_object, sliding_shapes
    clips, records = sliding_shapes(300, frames=4, canvas_size=(6, 12), speed=1, size=4, seed=0, colors=("red", "blue"))
    assert clips.shape == (300, 4, 3, 6, 12) and clips.dtype == np.float32
    for clip, r in zip(clips, records):
        step = 1 if r["direction"] == "right" else -1
        whole = read_object(clip[0])
        assert (whole["shape"], whole["color"]) == (r["shape"], r["color"])
        for k in range(4):                  # shifted, not rolled: nothing wraps, nothing is cut at an edge
            np.testing.assert_array_equal(clip[k], np.roll(clip[0], k * step, axis=2))
            assert clip[k].max(axis=0).sum() == clip[0].max(axis=0).sum()
    # left-movers start where right-movers end: both cover the same columns
    starts = {d: {r["x0"] for r in records if r["direction"] == d} for d in ("left", "right")}
    assert starts["right"] == set(range(2, 8)) and starts["left"] == {12 - x for x in range(2, 8)}
    centres = object_centres(clips)
    np.testing.assert_allclose(centres[:, 1:] - centres[:, :-1],
                               np.array([[1.0 if r["direction"] == "right" else -1.0] * 3 for r in records]))
    steady, jerk = motion_steadiness(centres, speed=1)
    assert steady.all() and not jerk.any()
    with pytest.raises(ValueError, match=r"sliding_shapes: an object of 4 pixels moving 3 pixels a frame for 4 frames "
                                         r"does not stay whole on a canvas of 6x12"):
        sliding_shapes(2, frames=4, canvas_size=(6, 12), speed=3, seed=0)


def test_object_centres_and_motion_steadiness_against_hand_made_tracks():
    from tinyvision.data import motion_steadiness, object_centres
    clips = np.zeros((1, 3, 3, 2, 8))
    clips[0, 0, 1, 0, 2] = 1.0          # one pixel at column 2: centre 2.5
    clips[0, 1, 0, :, 3:5] = 0.9        # columns 3 and 4: centre 4.0
    clips[0, 2, 2, 1, 7] = 0.4          # below the threshold: an empty frame
    np.testing.assert_array_equal(object_centres(clips), [[2.5, 4.0, np.nan]])
    tracks = np.array([[0.0, 1.0, 2.0, 3.0],      # steady, right
                       [5.0, 4.2, 3.0, 2.1],      # steady within 0.5, left
                       [0.0, 1.0, 2.0, 1.0],      # turns back
                       [0.0, 2.0, 4.0, 6.0],      # the wrong pace
                       [0.0, 1.0, np.nan, 3.0]])  # a frame without the object
    steady, jerk = motion_steadiness(tracks, speed=1)
    assert steady.tolist() == [True, True, False, False, False]
    np.testing.assert_allclose(jerk[:4], [0.0, (0.4 + 0.3) / 2, 1.0, 0.0])
    assert np.isnan(jerk[4])
    assert motion_steadiness(tracks[:, :2], speed=1)[1].tolist() == [0.0] * 5
    with pytest.raises(ValueError, match=r"object_centres: clips must be \(n, T, C, H, W\) with C >= 1, got shape \(3, 2, 8\)"):
        object_centres(np.zeros((3, 2, 8)))
    with pytest.raises(ValueError, match=r"motion_steadiness: centres must be \(n, T\)"):
        motion_steadiness(np.zeros(4), speed=1)
