"""tinyvision.data.captions: captions true of their pictures, the compositional split, prompts, probes.

Each caption is parsed back with a regular expression and compared with the scene's attributes;
the probes' answers are checked against the pixels (the colour, the side of the mass centre, the
number of blobs, the area of a 4-pixel shape), not against the attributes they were written from.
"""
import math
import re

import numpy as np
import pytest

from imaging import count_blobs
from tinyvision.data import (CAPTION_TEMPLATES, COLORS, COUNT_WORDS, DEFAULT_HELD_OUT, SHAPES, SIDES, caption,
                             captioned_shapes, count_probe, shape_mask, side_probe, tiny_probe, zero_shot_prompts)
from tinyvision.text import UNK, Tokenizer

NUMBER = {word: k for k, word in COUNT_WORDS.items()}
CAPTION = re.compile(rf"^(?:a photo of |a picture of )?(?:(?P<article>an?)|(?P<count>{'|'.join(NUMBER)})) "
                     rf"(?:(?P<size>tiny|small|large) )?(?P<color>{'|'.join(COLORS)}) "
                     rf"(?P<shape>{'|'.join(SHAPES)})(?P<plural>s?)(?: on the (?P<side>left|right))?$")


def parse(text):
    """A caption -> {count, size, color, shape, side}; fails the test when it does not parse."""
    m = CAPTION.match(text)
    assert m, f"caption {text!r} does not parse"
    count = NUMBER[m["count"]] if m["count"] else 1
    assert (m["plural"] == "s") == (count > 1), f"{text!r}: plural does not match the count"
    if m["article"]:
        first = (m["size"] or m["color"])[0]
        assert (m["article"] == "an") == (first in "aeiou"), f"{text!r}: wrong article"
    return {"count": count, "size": m["size"], "color": m["color"], "shape": m["shape"], "side": m["side"]}


def combos_of(attributes):
    return {(o["color"], o["shape"]) for a in attributes for o in a["objects"]}


def image_colour(image):
    """The one colour name of the object pixels of a (3, H, W) scene on black."""
    pixels = np.unique(image.reshape(3, -1).T[image.max(axis=0).ravel() > 0], axis=0)
    assert len(pixels) == 1, f"expected one object colour, found {pixels.tolist()}"
    return next(name for name, rgb in COLORS.items() if np.array_equal(pixels[0], rgb))


# --- one caption -------------------------------------------------------------------------------
def test_caption_examples_from_the_issue():
    one = {"count": 1, "shape": "circle", "color": "red", "size": "small", "side": "left"}
    assert caption(one) == "a small red circle on the left"
    assert caption(dict(one, side="center")) == caption(dict(one, side=None)) == "a small red circle"
    assert caption(one, style="short") == "a red circle"
    assert caption(dict(one, color="orange", size=None, side="right")) == "an orange circle on the right"
    two = {"count": 2, "shape": "square", "color": "blue", "size": "small", "side": None}
    assert caption(two, style="short") == "two blue squares"
    assert caption(two) == "two small blue squares"


def test_caption_templates_are_drawn_from_the_rng_and_repeat_with_it():
    one = {"count": 1, "shape": "triangle", "color": "green", "size": "large", "side": "right"}
    drawn = [caption(one, rng=np.random.default_rng(seed)) for seed in range(30)]
    assert set(drawn) == {t.format("a large green triangle on the right") for t in CAPTION_TEMPLATES}
    assert drawn == [caption(one, rng=np.random.default_rng(seed)) for seed in range(30)]
    assert caption(one, rng=3, templates=("{}",)) == "a large green triangle on the right"


@pytest.mark.parametrize("change, error", [({"count": 0}, "count must be 1..5"), ({"count": 6}, "count must be 1..5"),
                                           ({"shape": None}, "mixed objects"), ({"color": "purple"}, "one colour"),
                                           ({"size": "huge"}, "size must be")])
def test_caption_refuses_mixed_scenes_and_counts_without_words(change, error):
    one = {"count": 1, "shape": "circle", "color": "red", "size": "small", "side": "left"}
    with pytest.raises(ValueError, match=error):
        caption(dict(one, **change))


# --- data sets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["full", "short"])
def test_captions_match_their_attributes_and_pictures(style):
    images, captions, attributes = captioned_shapes(120, seed=1, count=(1, 3), sizes=("tiny", "small"), style=style,
                                                    held_out_combos=DEFAULT_HELD_OUT)
    assert images.shape == (120, 3, 32, 32) and images.dtype == np.float32 and len(captions) == len(attributes) == 120
    for image, text, a in zip(images, captions, attributes):
        said = parse(text)
        assert (said["count"], said["color"], said["shape"]) == (a["count"], a["color"], a["shape"]), text
        assert said["size"] == (a["size"] if style == "full" else None), text
        assert said["side"] == (a["side"] if style == "full" and a["count"] == 1 else None), text
        assert image_colour(image) == a["color"] and count_blobs(image.max(axis=0) > 0) == a["count"], text


def test_held_out_combos_never_appear_in_the_train_split():
    _, captions, attributes = captioned_shapes(400, seed=2, held_out_combos=DEFAULT_HELD_OUT, count=(1, 2),
                                               sizes=("small",))
    assert not combos_of(attributes) & set(DEFAULT_HELD_OUT)
    assert not {(p["color"], p["shape"]) for p in map(parse, captions)} & set(DEFAULT_HELD_OUT)


def test_test_split_holds_only_held_out_combos_or_all_of_them_as_asked():
    _, _, held = captioned_shapes(100, seed=3, held_out_combos=DEFAULT_HELD_OUT, split="test", combos="held_out")
    assert combos_of(held) == set(DEFAULT_HELD_OUT)
    _, _, everything = captioned_shapes(600, seed=3, held_out_combos=DEFAULT_HELD_OUT, split="test")
    assert combos_of(everything) == {(c, s) for c in COLORS for s in SHAPES}
    _, _, seen = captioned_shapes(200, seed=3, held_out_combos=DEFAULT_HELD_OUT, split="test", combos="seen")
    assert not combos_of(seen) & set(DEFAULT_HELD_OUT)


def test_every_colour_and_shape_still_appears_in_training():
    held = set(DEFAULT_HELD_OUT)
    assert len(held) == 4 and all(c in COLORS and s in SHAPES for c, s in held)
    for color in COLORS:
        assert sum((color, s) not in held for s in SHAPES) >= 2, color
    for shape in SHAPES:
        assert sum((c, shape) not in held for c in COLORS) >= 6, shape
    _, _, attributes = captioned_shapes(300, seed=4, held_out_combos=DEFAULT_HELD_OUT)
    seen = combos_of(attributes)
    assert {c for c, _ in seen} == set(COLORS) and {s for _, s in seen} == set(SHAPES)


@pytest.mark.parametrize("kwargs, error", [
    ({"combos": "all"}, "only combos='seen'"), ({"combos": "held_out"}, "only combos='seen'"),
    ({"split": "test", "combos": "held_out"}, "needs held_out_combos"), ({"split": "val"}, "split must be"),
    ({"split": "test", "combos": "unseen"}, "combos must be"), ({"count": 0}, "count must be"),
    ({"count": (2, 6)}, "count must be"), ({"style": "long"}, "style must be"),
    ({"templates": ("a {} {}",)}, "one '{}'"),
    ({"held_out_combos": [("purple", "circle")]}, "exclude_combos must hold"),
])
def test_bad_requests_raise_value_errors_naming_the_argument(kwargs, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        captioned_shapes(4, seed=0, **kwargs)


def test_scenes_and_captions_are_determined_by_seed_and_split():
    a = captioned_shapes(20, seed=5, held_out_combos=DEFAULT_HELD_OUT)
    b = captioned_shapes(20, seed=5, held_out_combos=DEFAULT_HELD_OUT)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    assert not np.array_equal(a[0], captioned_shapes(20, seed=6, held_out_combos=DEFAULT_HELD_OUT)[0])
    test = captioned_shapes(20, seed=5, held_out_combos=DEFAULT_HELD_OUT, split="test", combos="seen")
    assert not np.array_equal(a[0], test[0])                   # same seed, other split: other pictures
    plain = captioned_shapes(20, seed=5, held_out_combos=DEFAULT_HELD_OUT, templates=("{}",))
    np.testing.assert_array_equal(a[0], plain[0])              # templates never change the pictures


# --- zero-shot prompts -------------------------------------------------------------------------
@pytest.mark.parametrize("style, sizes", [("full", ("small", "large")), ("short", ("small",)),
                                          ("full", ("tiny", "small"))])
def test_zero_shot_prompts_use_only_words_of_the_training_captions(style, sizes):
    _, captions, _ = captioned_shapes(300, seed=7, held_out_combos=DEFAULT_HELD_OUT, style=style, sizes=sizes)
    tok = Tokenizer.train(captions)
    for kind, classes in (("shape", SHAPES), ("color", tuple(COLORS))):
        prompts = zero_shot_prompts(kind, style=style, sizes=sizes)
        assert tuple(prompts) == classes and all(len(p) >= 3 for p in prompts.values())
        for name, texts in prompts.items():
            for text in texts:
                assert name in text.split() and UNK not in tok.encode(text), (kind, text)
    with pytest.raises(ValueError, match="kind must be"):
        zero_shot_prompts("size")
    with pytest.raises(ValueError, match="style must be"):
        zero_shot_prompts("shape", style="long")


# --- probes ------------------------------------------------------------------------------------
def differ_in_one_word(candidates):
    words = [c.split() for c in candidates]
    return len({len(w) for w in words}) == 1 and sum(len(set(col)) > 1 for col in zip(*words)) == 1


def test_count_probe_answer_is_the_number_of_blobs():
    images, candidates, correct = count_probe(30, seed=8)
    assert images.shape == (30, 3, 32, 32) and correct.dtype == np.int64 and set(correct) == {0, 1}
    for image, options, k in zip(images, candidates, correct):
        assert len(options) == 2 and differ_in_one_word(options)
        assert parse(options[k])["count"] == count_blobs(image.max(axis=0) > 0)
        assert parse(options[k])["color"] == image_colour(image)


def test_side_probe_answer_is_the_side_of_the_mass_centre():
    images, candidates, correct = side_probe(30, seed=9)
    assert set(correct) == {0, 1}
    for image, options, k in zip(images, candidates, correct):
        assert differ_in_one_word(options) and [parse(o)["side"] for o in options] == list(SIDES)
        x = np.nonzero(image.max(axis=0) > 0)[1].mean() + 0.5
        assert parse(options[k])["side"] == ("left" if x < 16 else "right")


def test_tiny_probe_answer_is_the_shape_with_the_drawn_area():
    area = {s: shape_mask(s, (2, 2), 4, 4).sum() for s in SHAPES}      # 4 px: circle 12, square 16, triangle 8
    assert len(set(area.values())) == 3
    images, candidates, correct = tiny_probe(30, seed=10)
    assert set(correct) == {0, 1, 2}
    for image, options, k in zip(images, candidates, correct):
        assert differ_in_one_word(options) and [parse(o)["shape"] for o in options] == list(SHAPES)
        assert area[parse(options[k])["shape"]] == (image.max(axis=0) > 0).sum()
        assert parse(options[k])["size"] == "tiny"


def test_probes_are_determined_by_the_seed_and_can_avoid_held_out_combos():
    for probe in (count_probe, side_probe, tiny_probe):
        a, b = probe(10, seed=11), probe(10, seed=11)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1] and np.array_equal(a[2], b[2])
        _, candidates, correct = probe(40, seed=12, held_out_combos=DEFAULT_HELD_OUT)
        said = [parse(options[k]) for options, k in zip(candidates, correct)]
        assert not {(p["color"], p["shape"]) for p in said} & set(DEFAULT_HELD_OUT), probe.__name__


def test_partial_captions_keep_the_noun_and_drop_each_detail_at_its_rate():
    from tinyvision.data import partial_caption
    _, _, attributes = captioned_shapes(400, 16, seed=6, colors=("red", "blue"), sizes=("small", "large"))
    assert {a["color"] for a in attributes} == {"red", "blue"}
    rng = np.random.default_rng(0)
    full = [partial_caption(a, rng, 0.0) for a in attributes]
    assert full == [caption(a) for a in attributes]
    rng = np.random.default_rng(1)
    dropped = [partial_caption(a, rng, 0.3) for a in attributes]
    for a, text in zip(attributes, dropped):
        assert a["shape"] in text and all(word in caption(a) for word in text.split())
        assert text.startswith("an " if text.split()[1][0] in "aeiou" else "a ")
    kept_colour = np.mean([a["color"] in text for a, text in zip(attributes, dropped)])
    assert abs(kept_colour - 0.7) < 4 * math.sqrt(0.21 / len(attributes))
    assert [partial_caption(a, 5, 1.0) for a in attributes[:3]] == [f"a {a['shape']}" for a in attributes[:3]]
    with pytest.raises(ValueError, match="partial_caption: p_drop must be a probability in \\[0, 1\\], got 1.5"):
        partial_caption(attributes[0], rng, 1.5)


def test_unique_caption_batches_cover_every_index_once_without_a_repeated_caption():
    from tinyvision.data import unique_caption_batches
    captions = ["a", "b", "a", "c", "a", "b", "d"]
    batches = list(unique_caption_batches(captions, 3, np.random.default_rng(0)))
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))      # every index, once
    assert len(batches) >= 3                                               # "a" is there 3 times: 3 batches at least
    sizes = [len(b) for b in batches]
    distinct = [len({captions[i] for i in b}) for b in batches]
    assert max(sizes) <= 3 and min(sizes) >= 1 and distinct == sizes      # no caption twice in one batch
    with pytest.raises(ValueError, match="unique_caption_batches: batch_size must be an integer >= 1, got 0"):
        unique_caption_batches(captions, 0, np.random.default_rng(0))          # at the call, not at next()
