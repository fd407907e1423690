"""Captioned shapes: pictures with the sentences that describe them, for contrastive image-text training.

CLIP (Radford et al. 2021) learns from (image, caption) pairs. Here the captions are written from
the scene's exact attributes (shapes.py), so every word is true of its picture and the questions
a lesson asks have known answers:

    style "full"    one object     "a small red circle on the left"   (size word when named, place
                                                                        when left or right)
                    two to five    "two small blue squares"           (all of one kind, no place)
    style "short"   one object     "a red circle"
                    two to five    "two blue squares"

A template may wrap the phrase: "a photo of a small red circle on the left". CLIP's zero-shot
classifier embeds prompts like "a photo of a {label}" and averages several per class (Radford et
al. 2021, "prompt engineering and ensembling"); zero_shot_prompts builds such prompts from the
words the training captions use, so a tokenizer trained on those captions knows every one.
Scenes with objects of different kinds are not captioned (caption raises ValueError).

Compositional split (as in CLEVR's CoGenT condition, Johnson et al. 2017): some (color, shape)
pairs never appear in training, although the colour and the shape each appear in others.
DEFAULT_HELD_OUT keeps out 4 of the 8 x 3 = 24 pairs. Can a model that has seen green squares
and blue circles name a green circle? captioned_shapes(split="test", combos="held_out") asks.

Probes for what contrastive models are known to get wrong, each an image with a few candidate
captions that differ in one word (a model that treats a caption as a bag of words cannot tell
them apart; Yuksekgonul et al. 2023):

    count_probe   "two small blue squares" or "three small blue squares"?   (the CLIP paper
                  lists counting among its weaknesses)
    side_probe    "... on the left" or "... on the right"?
    tiny_probe    "a tiny red circle on the left", "... square ..." or "... triangle ...", for a
                  4-pixel object, no larger than one patch: does patching hide its shape?

Randomness: one numpy Generator made from (seed, split), so the train and test splits of the same
seed are different pictures; the pictures are drawn first and the caption templates after, so
changing the templates never changes the pictures.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..nn.init import as_rng
from .shapes import COLORS, SHAPES, SIDES, SIZES, sample_scenes

__all__ = ["CAPTION_TEMPLATES", "COUNT_WORDS", "DEFAULT_HELD_OUT", "caption", "captioned_shapes", "count_probe",
           "partial_caption", "unique_caption_batches",
           "side_probe", "tiny_probe", "zero_shot_prompts"]

COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}   # one object is "a ..."
CAPTION_TEMPLATES = ("{}", "a photo of {}", "a picture of {}")
STYLES = ("full", "short")
SPLITS = ("train", "test")
COMBO_CHOICES = ("seen", "held_out", "all")
# Every colour keeps at least 2 of its 3 shapes in training and every shape at least 6 of its 8
# colours, so each word is learned, only some pairings are new (tests/test_captions.py checks).
DEFAULT_HELD_OUT = (("green", "circle"), ("blue", "square"), ("yellow", "triangle"), ("magenta", "circle"))


# --- one caption -------------------------------------------------------------------------------
def _phrase(attributes: dict, style: str) -> str:
    """The description without a template: "a small red circle on the left", "two blue squares"."""
    count, shape, color = attributes.get("count"), attributes.get("shape"), attributes.get("color")
    if not isinstance(count, numbers.Integral) or not 1 <= count <= max(COUNT_WORDS):
        raise ValueError(f"caption: count must be 1..{max(COUNT_WORDS)} (the count words), got {count!r}")
    if shape not in SHAPES or color not in COLORS:
        raise ValueError(f"caption: the objects must share one shape in {SHAPES} and one colour in {tuple(COLORS)}, "
                         f"got shape={shape!r} color={color!r} (scenes of mixed objects are not captioned)")
    size = attributes.get("size") if style == "full" else None
    if size is not None and size not in SIZES:
        raise ValueError(f"caption: size must be one of {tuple(SIZES)} or None, got {size!r}")
    adjectives = " ".join(w for w in (size, color) if w)
    if count > 1:
        return f"{COUNT_WORDS[count]} {adjectives} {shape}s"    # every shape name takes a plain -s
    side = attributes.get("side") if style == "full" else None
    place = f" on the {side}" if side in SIDES else ""          # "center" or None: no place
    return f"{_article(adjectives)} {adjectives} {shape}{place}"


def _article(word: str) -> str:
    """ "an" before a vowel ("an orange circle"), else "a"; right for every word the captions use."""
    return "an" if word[:1] in "aeiou" else "a"


def caption(attributes: dict, rng=None, style: str = "full", templates=CAPTION_TEMPLATES) -> str:
    """A caption for a scene's attributes (SceneSpec.attributes(): count, shape, color, size, side).

    rng None: the first template (the bare phrase); a Generator or int seed: a template drawn
    uniformly, so the same rng state gives the same caption. style: "full" or "short" (see above).
    """
    if style not in STYLES:
        raise ValueError(f"caption: style must be one of {STYLES}, got {style!r}")
    templates = _check_templates(templates)
    template = templates[0] if rng is None else templates[int(as_rng(rng).integers(len(templates)))]
    return template.format(_phrase(attributes, style))


def partial_caption(attributes: dict, rng, p_drop: float) -> str:
    """The bare caption of a scene with each of size, colour and side left out with probability p_drop.

    Web captions mention some of what a picture shows, never all of it; that is what lets CLIP
    read a short prompt ("a circle") as the sum of its words. Trained on complete captions only,
    the towers would give every full caption its own point and a shorter phrase no sensible place.
    The shape noun (and for several objects the count) is always kept.
    """
    if isinstance(p_drop, bool) or not isinstance(p_drop, numbers.Real) or not 0 <= p_drop <= 1:
        raise ValueError(f"partial_caption: p_drop must be a probability in [0, 1], got {p_drop!r}")
    rng = as_rng(rng)
    a = attributes
    words = [w for w in (a["size"], a["color"]) if rng.random() >= p_drop]
    if a["count"] > 1:
        return " ".join([COUNT_WORDS[a["count"]], *words, a["shape"] + "s"])
    noun = " ".join([*words, a["shape"]])
    place = f" on the {a['side']}" if a["side"] in ("left", "right") and rng.random() >= p_drop else ""
    return f"{_article(noun)} {noun}{place}"


def unique_caption_batches(captions, batch_size: int, rng):
    """Shuffled batches of indices in which no caption appears twice (the last ones may be smaller).

    A contrastive loss treats every other caption in the batch as a wrong answer; two images with
    the same caption would each be told the other's caption is wrong (a false negative).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"unique_caption_batches: batch_size must be an integer >= 1, got {batch_size!r}")
    return _unique_batches(captions, batch_size, as_rng(rng))     # checked now, not at the first next()


def _unique_batches(captions, batch_size, rng):
    order = list(rng.permutation(len(captions)))
    while order:
        batch, seen, rest = [], set(), []
        for i in order:
            if len(batch) < batch_size and captions[i] not in seen:
                batch.append(i)
                seen.add(captions[i])
            else:
                rest.append(i)
        yield np.array(batch)
        order = rest


def _check_templates(templates) -> tuple[str, ...]:
    templates = (templates,) if isinstance(templates, str) else tuple(templates)
    if not templates or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates):
        raise ValueError(f"caption: templates must be strings with one '{{}}' each, got {templates!r}")
    return templates


# --- data sets ---------------------------------------------------------------------------------
def _rng(seed, split: str) -> np.random.Generator:
    """A Generator from (seed, split): the same seed gives different pictures in each split."""
    if split not in SPLITS:
        raise ValueError(f"captioned_shapes: split must be one of {SPLITS}, got {split!r}")
    if isinstance(seed, np.random.Generator):
        return seed
    as_rng(seed)                                              # its TypeError for a missing or bad seed
    return np.random.default_rng((int(seed), SPLITS.index(split)))


def captioned_shapes(n: int, canvas_size=32, *, seed, held_out_combos=(), split: str = "train", combos=None,
                     count=1, sizes=("small", "large"), placement: str = "left_right", style: str = "full",
                     templates=CAPTION_TEMPLATES, max_tries: int = 100,
                     colors=tuple(COLORS)) -> tuple[np.ndarray, list[str], list[dict]]:
    """n captioned scenes: images (n, 3, H, W) float32 in [0, 1], captions (n str), attributes (n dicts).

    Every scene holds `count` objects of one kind (shape, colour and size shared): count an int or
    (lo, hi) within 1..5. held_out_combos: (color, shape) pairs of the compositional split. combos:
        "seen"      only pairs not held out; the default, and the only choice, for split="train"
        "held_out"  only held-out pairs (split="test")
        "all"       any pair; the default for split="test"
    sizes, placement, max_tries, colors: as in shapes.sample_scene_specs. style, templates: as in caption;
    with one template ("{}",) every caption is the bare phrase.
    """
    rng = _rng(seed, split)
    combos = ("seen" if split == "train" else "all") if combos is None else combos
    if combos not in COMBO_CHOICES:
        raise ValueError(f"captioned_shapes: combos must be one of {COMBO_CHOICES} or None, got {combos!r}")
    if split == "train" and combos != "seen":
        raise ValueError(f"captioned_shapes: split='train' allows only combos='seen' (the held-out pairs must never "
                         f"be trained on), got combos={combos!r}")
    held_out = tuple(tuple(pair) if isinstance(pair, list) else pair for pair in held_out_combos)
    if combos == "held_out" and not held_out:
        raise ValueError("captioned_shapes: combos='held_out' needs held_out_combos, e.g. DEFAULT_HELD_OUT")
    _count_range(count, "captioned_shapes")
    _check_templates(templates)
    if style not in STYLES:
        raise ValueError(f"captioned_shapes: style must be one of {STYLES}, got {style!r}")

    choose = {"seen": {"exclude_combos": held_out}, "held_out": {"allowed_combos": held_out}, "all": {}}[combos]
    images, attributes = sample_scenes(n, canvas_size, seed=rng, sizes=sizes, count=count, placement=placement,
                                       same_kind=True, max_tries=max_tries, colors=colors, **choose)
    captions = [caption(a, rng, style, templates) for a in attributes]   # after the pictures: see the docstring
    return images, captions, attributes


def _count_range(count, who: str) -> tuple[int, int]:
    """(lo, hi) from an int or a pair, within 1..5 (the counts that have words)."""
    pair = ((count, count) if isinstance(count, numbers.Integral)
            else tuple(count) if isinstance(count, (tuple, list)) else ())
    if not (len(pair) == 2 and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)
            and 1 <= pair[0] <= pair[1] <= max(COUNT_WORDS)):
        raise ValueError(f"{who}: count must be an int or a pair (lo, hi) within 1..{max(COUNT_WORDS)} "
                         f"(the counts that have words), got {count!r}")
    return int(pair[0]), int(pair[1])


# --- zero-shot prompts -------------------------------------------------------------------------
def zero_shot_prompts(kind: str, style: str = "full", sizes=("small", "large")) -> dict[str, list[str]]:
    """Prompts for a zero-shot classifier: {class name: [prompt, ...]}, classes in SHAPES or COLORS order.

    kind "shape": "a circle", "a photo of a circle", "a picture of a circle"; style "full" adds
        "a {size} circle" for each of sizes, "a circle on the left" and "a circle on the right".
    kind "color": "a small red {shape}", "a photo of a small red {shape}", "a picture of a small
        red {shape}" for each of sizes and each shape: size and shape are unknown, so the prompts
        cover every value (an ensemble over them). style "short" leaves the size out ("an orange
        circle").
    Use the style and sizes of the training captions (captioned_shapes with the default templates
    and placement): then every prompt word is one of theirs; a word the tokenizer never saw
    encodes as <unk>.
    """
    if style not in STYLES:
        raise ValueError(f"zero_shot_prompts: style must be one of {STYLES}, got {style!r}")
    sizes = tuple(sizes) if style == "full" else ()
    if kind == "shape":
        templates = ["a {}", "a photo of a {}", "a picture of a {}"]
        if style == "full":
            templates += [f"a {size} {{}}" for size in sizes] + ["a {} on the left", "a {} on the right"]
        return {shape: [t.format(shape) for t in templates] for shape in SHAPES}
    if kind == "color":
        return {color: [t.format(_phrase({"count": 1, "shape": shape, "color": color, "size": size}, "full"))
                        for t in CAPTION_TEMPLATES for size in (sizes or (None,)) for shape in SHAPES]
                for color in COLORS}
    raise ValueError(f"zero_shot_prompts: kind must be 'shape' or 'color', got {kind!r}")


# --- probes: (images (n, 3, H, W), candidates: n lists of captions, correct (n,) int64) ---------
def _probe_scenes(n, canvas_size, seed, held_out_combos, combos, **options):
    images, _, attributes = captioned_shapes(n, canvas_size, seed=seed, held_out_combos=held_out_combos, split="test",
                                             combos=combos, templates=("{}",), **options)
    return images, attributes


def count_probe(n: int, canvas_size=32, *, seed, count=(2, 3), sizes=("small",), held_out_combos=(),
                combos: str = "seen", style: str = "full") -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """How many? count objects of one kind, count in lo..hi; candidates the captions for lo, ..., hi.

    ("two small blue squares", "three small blue squares"); correct = count - lo. Placed anywhere.
    """
    lo, hi = _count_range(count, "count_probe")
    images, attributes = _probe_scenes(n, canvas_size, seed, held_out_combos, combos, count=(lo, hi), sizes=sizes,
                                       placement="anywhere")
    candidates = [[caption(dict(a, count=k), style=style) for k in range(lo, hi + 1)] for a in attributes]
    return images, candidates, np.array([a["count"] - lo for a in attributes], dtype=np.int64)


def side_probe(n: int, canvas_size=32, *, seed, sizes=("small",), held_out_combos=(),
               combos: str = "seen") -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """Left or right? One object in one half; candidates ("a small red circle on the left", "... on the right").

    correct = SIDES.index(side) (0 left, 1 right).
    """
    images, attributes = _probe_scenes(n, canvas_size, seed, held_out_combos, combos, count=1, sizes=sizes,
                                       placement="left_right")
    candidates = [[caption(dict(a, side=side)) for side in SIDES] for a in attributes]
    return images, candidates, np.array([SIDES.index(a["side"]) for a in attributes], dtype=np.int64)


def tiny_probe(n: int, canvas_size=32, *, seed, size="tiny", held_out_combos=(), combos: str = "seen",
               style: str = "full") -> tuple[np.ndarray, list[list[str]], np.ndarray]:
    """Which shape is the tiny object? One candidate per shape: "a tiny red circle on the left", "... square ...", ...

    correct = SHAPES.index(shape). size: "tiny" (4 pixels on a 32 canvas, MIN_NAMED_SIZE) or pixels.
    The candidates differ in the shape word alone. If the training captions never say "tiny" it
    encodes as <unk>, the same in every candidate, so it favours none; train with sizes that
    include "tiny" to ask only whether the model can see the shape. style="short" gives "a red circle".
    """
    images, attributes = _probe_scenes(n, canvas_size, seed, held_out_combos, combos, count=1, sizes=(size,),
                                       placement="left_right")
    candidates = [[caption(dict(a, shape=shape), style=style) for shape in SHAPES] for a in attributes]
    return images, candidates, np.array([SHAPES.index(a["shape"]) for a in attributes], dtype=np.int64)
