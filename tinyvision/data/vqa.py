"""Questions and answers about procedural scenes, generated from what the scene generator knows.

Every scene is drawn by shapes.py, so its objects' shapes, colours, sizes and places are known, and a
question's answer is read off them, never guessed. One question per scene; each kind asks for one
skill, so a model's accuracy per kind says which skill it lacks:
    color     "what color is the circle ?"              1-3 objects of different shapes     -> a colour
    shape     "what shape is the red object ?"          1-3 objects of different colours    -> a shape
    count     "how many squares are there ?"            1-4 small objects                   -> zero .. four
    side      "is the red circle on the left or the right ?"  1-2 objects off the middle    -> left / right
    presence  "is there a blue triangle ?"              1-3 objects; half the time the pair asked
                                                        for is absent                       -> yes / no
    tiny      "what color is the tiny object ?"         one tiny object (1/8 of the canvas) and
                                                        one large of another colour          -> a colour
    digit     "what digit is written ?"                 a handwritten digit (scikit-learn's, 2x) in
                                                        white, and one shape                 -> zero .. nine
held_out: (colour, shape) pairs that no training scene contains; split="test" scenes may contain them
(a compositional test: the words were seen, the pair was not). Answers are single words, so accuracy is
exact match of the first answer token.
"""
from __future__ import annotations

import numpy as np

from ..checks import check_choice, check_int
from ..nn.init import as_rng
from .shapes import SHAPES, SceneSpec, make_scene, sample_scene_specs

__all__ = ["NUMBER_WORDS", "QUESTION_KINDS", "answer_vocabulary", "scene_captions", "vqa_pairs"]

QUESTION_KINDS = ("color", "shape", "count", "side", "presence", "tiny", "digit")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VQA_COLORS = ("red", "green", "blue", "yellow", "magenta", "cyan")


def answer_vocabulary(kind: str) -> tuple:
    """Every answer a question of this kind can have (chance = 1 / len for a uniform guess)."""
    check_choice("answer_vocabulary", "kind", kind, QUESTION_KINDS)
    return {"color": VQA_COLORS, "shape": SHAPES, "count": NUMBER_WORDS[:5], "side": ("left", "right"),
            "presence": ("yes", "no"), "tiny": VQA_COLORS, "digit": NUMBER_WORDS}[kind]


def _plural(shape: str) -> str:
    return shape + "s"


def vqa_pairs(n: int, canvas_size: int = 32, *, seed, kinds=QUESTION_KINDS, held_out=(), split: str = "train",
              negatives: float = 0.5) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """n scenes, each with one question: (images (n, 3, H, W) float32 in [0, 1], questions, answers, kinds).

    kinds: the question kinds to draw from, uniformly. negatives: the share of presence questions whose
    answer is "no" (lesson 05 raises it to lower hallucination)."""
    where = "vqa_pairs"
    n = check_int(where, "n", n, low=0)
    canvas_size = check_int(where, "canvas_size", canvas_size, low=16)
    split = check_choice(where, "split", split, ("train", "test"))
    if isinstance(kinds, str):
        raise TypeError(f"{where}: kinds must be a sequence of kinds from {QUESTION_KINDS}, got the string {kinds!r}")
    kinds = tuple(kinds)
    if "digit" in kinds and canvas_size < 32:
        raise ValueError(f"{where}: a digit (16 pixels wide) fills half the canvas, which needs canvas_size >= 32, "
                         f"got {canvas_size}")
    for k in kinds:
        check_choice(where, "kinds", k, QUESTION_KINDS)
    if not kinds:
        raise ValueError(f"{where}: kinds must name at least one of {QUESTION_KINDS}")
    if not 0.0 <= float(negatives) <= 1.0:
        raise ValueError(f"{where}: negatives must be a share in [0, 1], got {negatives!r}")
    held_out = _held_out_pairs(where, held_out)
    rng = as_rng(seed)
    exclude = held_out if split == "train" else ()
    digits = None
    images, questions, answers, drawn = [], [], [], []
    for _ in range(n):
        kind = kinds[rng.integers(len(kinds))]
        sub = int(rng.integers(2 ** 31))
        if kind == "digit":
            if digits is None:
                from .digits import load_digits  # noqa: PLC0415 - only digit questions need scikit-learn's digits
                digits = load_digits("train" if split == "train" else "test", normalize=False, upsample=2, seed=0)
            image, question, answer = _digit_scene(rng, digits, canvas_size, sub, exclude)
        else:
            image, question, answer = _shape_question(kind, rng, canvas_size, sub, exclude, negatives)
        images.append(image)
        questions.append(question)
        answers.append(answer)
        drawn.append(kind)
    H = W = canvas_size
    return (np.stack(images) if images else np.zeros((0, 3, H, W), np.float32)), questions, answers, drawn


def scene_captions(n: int, canvas_size: int = 32, *, seed, held_out=(), split: str = "train",
                   count=(1, 3)) -> tuple[np.ndarray, list[str]]:
    """n scenes of `count` objects (as the colour and shape questions draw them) and a caption naming every
    object from left to right: "a red circle and a blue square". (images (n, 3, H, W) float32, captions)

    The captions are the first stage of a LLaVA-style training (lesson 05): they tie every object's colour
    to its shape, which is what a question about one object of several needs."""
    where = "scene_captions"
    n = check_int(where, "n", n, low=0)
    canvas_size = check_int(where, "canvas_size", canvas_size, low=16)
    split = check_choice(where, "split", split, ("train", "test"))
    exclude = _held_out_pairs(where, held_out) if split == "train" else ()
    rng = as_rng(seed)
    images, captions = [], []
    for _ in range(n):
        spec = _scene(int(rng.integers(2 ** 31)), canvas_size, exclude, count=count)
        objects = sorted(spec.objects, key=lambda o: o.center[0])
        images.append(make_scene(spec))
        captions.append(" and ".join(f"a {o.color} {o.shape}" for o in objects))
    H = W = canvas_size
    return (np.stack(images) if images else np.zeros((0, 3, H, W), np.float32)), captions


def _held_out_pairs(where, held_out):
    held_out = tuple(tuple(p) if isinstance(p, (tuple, list)) else (p,) for p in held_out)
    if any(len(p) != 2 for p in held_out):
        raise ValueError(f"{where}: held_out must be (colour, shape) pairs, e.g. [('green', 'circle')], got {held_out}")
    bad = [p for p in held_out if p[0] not in VQA_COLORS or p[1] not in SHAPES]
    if bad:
        raise ValueError(f"{where}: held_out pairs must be (colour in {VQA_COLORS}, shape in {SHAPES}), got {bad}")
    return held_out


def _scene(sub, canvas_size, exclude, **options):
    rng = np.random.default_rng(sub)                 # sub: an int or a tuple of ints
    return sample_scene_specs(1, canvas_size, seed=rng, colors=VQA_COLORS, exclude_combos=exclude, **options)[0]


def _distinct(spec, key):
    values = [getattr(o, key) for o in spec.objects]
    return len(set(values)) == len(values)


def _shape_question(kind, rng, canvas_size, sub, exclude, negatives):
    for attempt in range(100):                      # redraw scenes that cannot ask the question unambiguously
        seed = (sub, attempt)
        if kind in ("color", "shape"):               # name the object by the other attribute, unique in the scene
            by = "shape" if kind == "color" else "color"
            spec = _scene(seed, canvas_size, exclude, count=(1, 3))
            if not _distinct(spec, by):
                continue
            obj = spec.objects[rng.integers(spec.count)]
            question = f"what color is the {obj.shape} ?" if kind == "color" else f"what shape is the {obj.color} object ?"
            return make_scene(spec), question, getattr(obj, kind)
        if kind == "count":
            spec = _scene(seed, canvas_size, exclude, count=(1, 4))
            shape = SHAPES[rng.integers(len(SHAPES))]
            k = sum(o.shape == shape for o in spec.objects)
            return make_scene(spec), f"how many {_plural(shape)} are there ?", NUMBER_WORDS[k]
        if kind == "side":
            spec = _scene(seed, canvas_size, exclude, count=(1, 2))
            pairs = [(o.color, o.shape) for o in spec.objects]
            off = [o for o in spec.objects if o.attributes(canvas_size)["side"] != "center"
                   and pairs.count((o.color, o.shape)) == 1]
            if not off:
                continue
            obj = off[rng.integers(len(off))]
            side = obj.attributes(canvas_size)["side"]
            return make_scene(spec), f"is the {obj.color} {obj.shape} on the left or the right ?", side
        if kind == "presence":
            spec = _scene(seed, canvas_size, exclude, count=(1, 3))
            present = {(o.color, o.shape) for o in spec.objects}
            if rng.random() < negatives:
                absent = [(c, s) for c in VQA_COLORS for s in SHAPES if (c, s) not in present and (c, s) not in exclude]
                color, shape = absent[rng.integers(len(absent))]
                answer = "no"
            else:
                color, shape = sorted(present)[rng.integers(len(present))]
                answer = "yes"
            return make_scene(spec), f"is there a {color} {shape} ?", answer
        if kind == "tiny":
            tiny = _scene(seed, canvas_size, exclude, count=1, sizes=("tiny",))
            big = _scene((sub, attempt, 1), canvas_size, exclude, count=1, sizes=("large",))
            t, b = tiny.objects[0], big.objects[0]
            r = (t.size + b.size) / 2 + 1
            if t.color == b.color or (abs(t.center[0] - b.center[0]) < r and abs(t.center[1] - b.center[1]) < r):
                continue
            spec = SceneSpec((b, t), tiny.canvas_size)
            return make_scene(spec), "what color is the tiny object ?", t.color
    raise RuntimeError(f"vqa_pairs: no scene for a {kind!r} question in 100 draws")


def _digit_scene(rng, digits, canvas_size, sub, exclude):
    images, labels = digits
    i = int(rng.integers(len(images)))
    glyph = images[i, 0]                                               # (16, 16) ink in [0, 1]
    g = glyph.shape[0]
    spec = _scene(sub, canvas_size, exclude, count=1, placement="left_right")
    image = make_scene(spec)
    obj = spec.objects[0]
    # the digit fills the other half of the canvas from the shape (placement="left_right" keeps it in one)
    x0 = 0 if obj.center[0] > canvas_size / 2 else canvas_size - g
    y0 = int(rng.integers(0, canvas_size - g + 1))
    patch = image[:, y0:y0 + g, x0:x0 + g]
    image[:, y0:y0 + g, x0:x0 + g] = np.maximum(patch, glyph[None])    # white ink over the background
    return image, "what digit is written ?", NUMBER_WORDS[int(labels[i])]

