"""Coloured shapes on a blank canvas: a procedural data set in which every attribute is known.

Every image is drawn from a SceneSpec, a list of objects each with a shape, a colour, a size and a
centre, so the labels (which shape, what colour, how many, on which side) are exact, and any
combination can be asked for or held out: tiny objects (does the patch size hide them?), several
objects (counting), left / right placement, and colour-shape pairs kept out of training
(compositional generalisation, as in CLEVR; Johnson et al. 2017).

Geometry. Pixel (row i, column j) covers [j, j+1) x [i, i+1); its centre is (x, y) = (j + 0.5, i + 0.5),
x to the right and y DOWN, as in an image. A pixel belongs to a shape when its centre lies inside it
(no anti-aliasing, so every pixel of an object has exactly the object's colour). A shape of size s
fills an s x s box centred at (cx, cy); with r = s / 2:

    circle     (x - cx)^2 + (y - cy)^2 <= r^2                                    area pi s^2 / 4
    square     -r <= x - cx < r  and  -r <= y - cy < r                           area s^2
    triangle   apex up, base s, height s: with depth t = y - (cy - r) below the apex,
               0 <= t < s  and  |x - cx| <= t / 2                                area s^2 / 2

The straight edges are half-open, like a pixel's own [j, j+1), so that a square of integer size
always covers exactly s x s pixels, even when its edges pass through pixel centres.

Counting pixel centres misses the area by about the perimeter, which is small next to the area
for large s and everything for small s: at s = 3 the circle and the square are the same 3x3 block,
at s = 4 they differ (12 pixels against 16, the triangle 8). So no named size goes below 4 pixels.

Sampled objects sit on the pixel grid (integer size, box corner at integer coordinates), inside
their region, at least GAP = 1 pixel apart (boxes never touch, even diagonally), which rejection
sampling ensures. Everything random comes from one numpy Generator made from `seed`.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ..nn.init import as_rng

__all__ = [
    "COLORS", "GAP", "MIN_NAMED_SIZE", "REGIONS", "SHAPES", "SIDES", "SIZES",
    "ObjectSpec", "SceneSpec", "canvas_hw", "counting_task", "draw_shape", "left_right_task", "make_scene",
    "read_object", "region_center", "sample_scene_specs", "sample_scenes", "shape_mask", "side_of", "size_px",
    "tiny_object_task",
]

SHAPES = ("circle", "square", "triangle")   # a classifier's label is the index in this tuple
# RGB in [0, 1], far apart from each other and from the black background; the closest pair
# (orange against red or yellow) is 0.5 apart in one channel. All values are exact in float32.
COLORS = {
    "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0), "cyan": (0.0, 1.0, 1.0), "orange": (1.0, 0.5, 0.0), "white": (1.0, 1.0, 1.0),
}
SIZES = {"tiny": 1 / 8, "small": 1 / 4, "large": 1 / 2}  # fraction of the shorter canvas side
MIN_NAMED_SIZE = 4                                       # pixels; below it shapes merge (see above)
# Named regions as (x0, y0, x1, y1), fractions of the canvas width and height.
REGIONS = {
    "anywhere": (0.0, 0.0, 1.0, 1.0),
    "left": (0.0, 0.0, 0.5, 1.0), "right": (0.5, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5), "bottom": (0.0, 0.5, 1.0, 1.0),
    "center": (0.25, 0.25, 0.75, 0.75),
}
SIDES = ("left", "right")  # left_right_task's labels
GAP = 1                    # pixels between the boxes of two sampled objects


# --- names, sizes and places -------------------------------------------------------------------
def _check_choice(where: str, arg: str, value, allowed) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{where}: {arg} must be one of {tuple(allowed)}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def canvas_hw(canvas_size) -> tuple[int, int]:
    """(H, W) from an int (a square canvas) or an (H, W) pair; both at least 1."""
    if _is_int(canvas_size):
        hw = (canvas_size, canvas_size)
    else:
        hw = tuple(canvas_size) if isinstance(canvas_size, (tuple, list)) else ()
    if len(hw) != 2 or not all(_is_int(v) and v >= 1 for v in hw):
        raise ValueError(f"canvas_size must be an int >= 1 or a pair (H, W) of them, got {canvas_size!r}")
    return int(hw[0]), int(hw[1])


def size_px(size, canvas_size) -> int:
    """A size in pixels: a name in SIZES (a fraction of the shorter side, at least MIN_NAMED_SIZE), or an int >= 1."""
    if isinstance(size, str):
        _check_choice("size_px", "size", size, SIZES)
        return max(MIN_NAMED_SIZE, round(SIZES[size] * min(canvas_hw(canvas_size))))
    if not _is_int(size) or size < 1:
        raise ValueError(f"size_px: size must be one of {tuple(SIZES)} or an int >= 1 (pixels), got {size!r}")
    return int(size)


def region_center(region: str, canvas_size) -> tuple[float, float]:
    """The centre (x, y) of a named region, e.g. region_center("left", 32) == (8.0, 16.0)."""
    _check_choice("region_center", "region", region, REGIONS)
    H, W = canvas_hw(canvas_size)
    x0, y0, x1, y1 = REGIONS[region]
    return (x0 + x1) / 2 * W, (y0 + y1) / 2 * H


def side_of(x: float, width: int) -> str:
    """"left" or "right" by the centre x against the middle of the canvas; "center" on the line."""
    return "left" if x < width / 2 else "right" if x > width / 2 else "center"


def _rgb(color, arg: str = "color") -> np.ndarray:
    """A colour name in COLORS, or an RGB triple in [0, 1], as a float32 (3,) array."""
    rgb = np.asarray(COLORS.get(color, ()) if isinstance(color, str) else color, dtype=np.float32)
    if rgb.shape != (3,) or not ((rgb >= 0) & (rgb <= 1)).all():
        raise ValueError(f"{arg} must be one of {tuple(COLORS)} or an RGB triple in [0, 1], got {color!r}")
    return rgb


# --- drawing -----------------------------------------------------------------------------------
def shape_mask(shape: str, center, size: float, canvas_size) -> np.ndarray:
    """Boolean (H, W): the pixels whose centres lie inside the shape (formulas in the module docstring)."""
    _check_choice("shape_mask", "shape", shape, SHAPES)
    H, W = canvas_hw(canvas_size)
    cx, cy = center
    r = size / 2
    dx = np.arange(W) + 0.5 - cx             # (W,)   pixel centre minus shape centre
    dy = (np.arange(H) + 0.5 - cy)[:, None]  # (H, 1) broadcasts against dx to (H, W)
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (-r <= dx) & (dx < r) & (-r <= dy) & (dy < r)
    depth = dy + r                           # triangle: distance below the apex at y = cy - r
    return (depth >= 0) & (depth < size) & (np.abs(dx) <= depth / 2)


def draw_shape(canvas: np.ndarray, shape: str, color, center, size: float) -> np.ndarray:
    """Paint one shape into canvas (H, W, 3) in place; returns its boolean (H, W) mask.

    color: a name in COLORS or an RGB triple in [0, 1]; center: (x, y) in pixels; size: pixels.
    """
    if canvas.ndim != 3 or canvas.shape[2] != 3:
        raise ValueError(f"draw_shape: canvas must be (H, W, 3), got shape {canvas.shape}")
    mask = shape_mask(shape, center, size, canvas.shape[:2])
    canvas[mask] = _rgb(color)
    return mask


# --- scenes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectSpec:
    """One object: shape and color are names, size is in pixels, center = (x, y) in pixels.

    size_name is the named size it was drawn from ("tiny", ...), or None for an explicit size.
    """
    shape: str
    color: str
    size: float
    center: tuple[float, float]
    size_name: str | None = None

    def __post_init__(self):
        _check_choice("ObjectSpec", "shape", self.shape, SHAPES)
        _check_choice("ObjectSpec", "color", self.color, COLORS)
        if self.size_name is not None:
            _check_choice("ObjectSpec", "size_name", self.size_name, SIZES)
        if not isinstance(self.size, numbers.Real) or isinstance(self.size, bool) or not 0 < self.size < math.inf:
            raise ValueError(f"ObjectSpec: size must be a positive number of pixels, got {self.size!r}")
        if len(self.center) != 2:
            raise ValueError(f"ObjectSpec: center must be (x, y), got {self.center!r}")
        object.__setattr__(self, "center", (float(self.center[0]), float(self.center[1])))

    def attributes(self, width: int) -> dict:
        """shape, color, size (name or None), size_px, x, y, side (on a canvas `width` wide)."""
        x, y = self.center
        size = int(self.size) if float(self.size).is_integer() else float(self.size)
        return {"shape": self.shape, "color": self.color, "size": self.size_name, "size_px": size,
                "x": x, "y": y, "side": side_of(x, width)}


@dataclass(frozen=True)
class SceneSpec:
    """Objects on a canvas, drawn in order (a later object covers an earlier one where they overlap).

    canvas_size: int or (H, W); background: a name in COLORS or an RGB triple. Every object's box
    must lie on the canvas, and no object may have the background's colour (it would be invisible).
    """
    objects: tuple[ObjectSpec, ...]
    canvas_size: tuple[int, int] = (32, 32)
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "canvas_size", canvas_hw(self.canvas_size))
        H, W = self.canvas_size
        background = _rgb(self.background, "background")
        for obj in self.objects:
            (cx, cy), r = obj.center, obj.size / 2
            if cx - r < 0 or cx + r > W or cy - r < 0 or cy + r > H:
                raise ValueError(f"SceneSpec: {obj} has its box outside the {H} x {W} canvas")
            if np.array_equal(_rgb(obj.color), background):
                raise ValueError(f"SceneSpec: {obj} has the background's colour {self.background!r}")

    @property
    def count(self) -> int:
        return len(self.objects)

    @property
    def side(self) -> str | None:
        """The side of the only object; None unless there is exactly one."""
        return side_of(self.objects[0].center[0], self.canvas_size[1]) if self.count == 1 else None

    def attributes(self) -> dict:
        """A flat record for labels and captions:

        shape, color, size, size_px: the objects' common value, or None when they differ (or none);
        x, y, side: the object's, when there is exactly one, else None;
        count; objects: one dict per object (shape, color, size, size_px, x, y, side).
        """
        objects = [obj.attributes(self.canvas_size[1]) for obj in self.objects]
        record = {}
        for key in ("shape", "color", "size", "size_px"):
            values = {o[key] for o in objects}
            record[key] = values.pop() if len(values) == 1 else None
        for key in ("x", "y", "side"):
            record[key] = objects[0][key] if len(objects) == 1 else None
        record["count"] = len(objects)
        record["objects"] = objects
        return record


def make_scene(spec: SceneSpec) -> np.ndarray:
    """Render a scene: float32 (3, H, W) in [0, 1], channels first like every image in tinyvision."""
    H, W = spec.canvas_size
    canvas = np.empty((H, W, 3), dtype=np.float32)
    canvas[:] = _rgb(spec.background, "background")
    for obj in spec.objects:
        draw_shape(canvas, obj.shape, obj.color, obj.center, obj.size)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1))


# --- sampling ----------------------------------------------------------------------------------
def _combos(shapes, colors, allowed_combos, exclude_combos) -> list[tuple[str, str]]:
    """The (color, shape) pairs to draw from: colors x shapes, kept if allowed, dropped if excluded."""
    for s in shapes:
        _check_choice("sample_scenes", "shapes", s, SHAPES)
    for c in colors:
        _check_choice("sample_scenes", "colors", c, COLORS)
    for arg, pairs in (("allowed_combos", allowed_combos or ()), ("exclude_combos", exclude_combos)):
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2 and pair[0] in COLORS and pair[1] in SHAPES):
                raise ValueError(f"sample_scenes: {arg} must hold (color, shape) pairs with color in "
                                 f"{tuple(COLORS)} and shape in {SHAPES}, got {pair!r}")
    combos = [(c, s) for c in colors for s in shapes]
    if allowed_combos is not None:
        combos = [pair for pair in combos if pair in set(allowed_combos)]
    combos = [pair for pair in combos if pair not in set(exclude_combos)]
    if not combos:
        raise ValueError(f"sample_scenes: no (color, shape) pair is left from colors={tuple(colors)}, "
                         f"shapes={tuple(shapes)}, allowed_combos={allowed_combos}, exclude_combos={exclude_combos}")
    return combos


def _place(rng, sizes: list[int], region: str, H: int, W: int, max_tries: int) -> list[tuple[int, int]]:
    """Top-left corners (x0, y0) for boxes of `sizes` inside `region`, GAP pixels apart.

    Rejection sampling: each box draws max_tries candidate corners and takes the first that is
    clear of the boxes already placed; if none is, the scene starts over, at most max_tries times.
    """
    fx0, fy0, fx1, fy1 = REGIONS[region]
    lo_x, hi_x, lo_y, hi_y = math.ceil(fx0 * W), math.floor(fx1 * W), math.ceil(fy0 * H), math.floor(fy1 * H)
    # A necessary condition only (each box and its gap cover (s + GAP)^2 of the region, which
    # grows by GAP on each axis): it catches hopeless requests at once; the tries find the rest.
    area_needed = sum((s + GAP) ** 2 for s in sizes)
    if max(sizes, default=0) > min(hi_x - lo_x, hi_y - lo_y) or area_needed > (hi_x - lo_x + GAP) * (hi_y - lo_y + GAP):
        raise ValueError(f"sample_scenes: {len(sizes)} objects of sizes {sizes} px ({GAP} px apart) cannot fit in "
                         f"the {region!r} region ({hi_y - lo_y} x {hi_x - lo_x} px) of a {H} x {W} canvas: ask "
                         "for a smaller count or sizes, or a larger canvas_size")
    for _ in range(max_tries):
        corners = []
        for s in sizes:
            x0 = rng.integers(lo_x, hi_x - s + 1, size=max_tries)
            y0 = rng.integers(lo_y, hi_y - s + 1, size=max_tries)
            clear = np.ones(max_tries, dtype=bool)
            for (px, py), ps in zip(corners, sizes):  # the boxes placed so far and their sizes
                # Two boxes are apart when one ends (plus the gap) before the other starts, in x or in y.
                clear &= (x0 + s + GAP <= px) | (px + ps + GAP <= x0) | (y0 + s + GAP <= py) | (py + ps + GAP <= y0)
            if not clear.any():
                break                        # stuck: start the scene over
            i = int(np.argmax(clear))        # the first clear candidate
            corners.append((int(x0[i]), int(y0[i])))
        else:
            return corners
    raise ValueError(f"sample_scenes: could not place {len(sizes)} objects of sizes {sizes} px in the {region!r} "
                     f"region of a {H} x {W} canvas in {max_tries} restarts of {max_tries} tries per object: "
                     "ask for a smaller count or sizes, a larger canvas_size, or a larger max_tries")


def sample_scene_specs(n: int, canvas_size=32, *, seed, shapes=SHAPES, colors=tuple(COLORS), sizes=("small",),
                       count=1, placement: str = "anywhere", same_kind: bool = False, allowed_combos=None,
                       exclude_combos=(), background=(0.0, 0.0, 0.0), max_tries: int = 100) -> list[SceneSpec]:
    """n random scenes (specs only; see sample_scenes for the images). Same seed, same scenes.

    sizes: names in SIZES and / or ints (pixels), drawn uniformly per object.
    count: an int, or (lo, hi) for a count drawn uniformly from lo..hi inclusive (0 allowed).
    placement: a name in REGIONS (every object's box inside it), or "left_right" (a fair coin per
        scene picks "left" or "right"; with one object, its side is then never "center").
    same_kind: all objects of a scene share one shape, colour and size ("two blue squares").
    allowed_combos / exclude_combos: (color, shape) pairs to keep only / to leave out, e.g.
        exclude_combos=[("red", "circle")] for a compositional split; drawn uniformly from what is left.
    """
    rng = as_rng(seed)
    H, W = canvas_hw(canvas_size)
    if not _is_int(n) or n < 0:
        raise ValueError(f"sample_scenes: n must be an int >= 0, got {n!r}")
    lo, hi = (count, count) if _is_int(count) else tuple(count) if isinstance(count, (tuple, list)) else (None, None)
    if not (_is_int(lo) and _is_int(hi) and 0 <= lo <= hi):
        raise ValueError(f"sample_scenes: count must be an int >= 0 or a pair (lo, hi) with 0 <= lo <= hi, got {count!r}")
    if placement != "left_right":
        _check_choice("sample_scenes", "placement", placement, (*REGIONS, "left_right"))
    if not _is_int(max_tries) or max_tries < 1:
        raise ValueError(f"sample_scenes: max_tries must be an int >= 1, got {max_tries!r}")
    combos = _combos(tuple(shapes), tuple(colors), allowed_combos, tuple(exclude_combos))
    if not sizes:
        raise ValueError(f"sample_scenes: sizes must name at least one size, got {sizes!r}")
    size_choices = [(size_px(s, (H, W)), s if isinstance(s, str) else None) for s in sizes]

    specs = []
    for _ in range(n):
        k = int(rng.integers(lo, hi + 1))
        region = ("left", "right")[rng.integers(2)] if placement == "left_right" else placement
        kinds = [(combos[rng.integers(len(combos))], size_choices[rng.integers(len(size_choices))])
                 for _ in range(1 if same_kind else k)]
        kinds = kinds * k if same_kind else kinds
        kinds.sort(key=lambda kind: -kind[1][0])   # largest first: they are the hardest to fit
        corners = _place(rng, [px for _, (px, _) in kinds], region, H, W, max_tries)
        objects = [ObjectSpec(shape, color, px, (x0 + px / 2, y0 + px / 2), name)
                   for ((color, shape), (px, name)), (x0, y0) in zip(kinds, corners)]
        specs.append(SceneSpec(objects, (H, W), background))
    return specs


def sample_scenes(n: int, canvas_size=32, *, seed, **options) -> tuple[np.ndarray, list[dict]]:
    """n random scenes: images (n, 3, H, W) float32 in [0, 1], and one attribute dict per image.

    The options are sample_scene_specs's; the dicts are SceneSpec.attributes() (shape, color, size,
    size_px, x, y, side, count, objects). Use different seeds for train and test.
    """
    specs = sample_scene_specs(n, canvas_size, seed=seed, **options)
    H, W = canvas_hw(canvas_size)
    images = np.stack([make_scene(spec) for spec in specs]) if specs else np.zeros((0, 3, H, W), np.float32)
    return images, [spec.attributes() for spec in specs]


# --- ready-made tasks: (images (n, 3, H, W) float32, labels (n,) int64) ------------------------
def tiny_object_task(n: int, canvas_size=32, object_size: int = 4, *, seed) -> tuple[np.ndarray, np.ndarray]:
    """Which shape is the one small object? label = SHAPES.index(shape) (0 circle, 1 square, 2 triangle).

    The object is object_size pixels across, anywhere, in any colour. With patch size P, an object
    smaller than P lies inside one or two patches and fills a fraction (object_size / P)^2 of each,
    the question lesson 03 asks of ViT. Below 4 pixels the shapes are not distinguishable at all.
    """
    images, attrs = sample_scenes(n, canvas_size, seed=seed, sizes=(object_size,))
    return images, np.array([SHAPES.index(a["shape"]) for a in attrs], dtype=np.int64)


def counting_task(n: int, max_count: int = 4, canvas_size=32, *, seed,
                  sizes=("tiny", "small")) -> tuple[np.ndarray, np.ndarray]:
    """How many objects? label = count, drawn uniformly from 0..max_count (max_count + 1 classes).

    Shapes, colours and sizes vary per object so that the coloured area is only a rough cue to
    the count (with identical objects, area / object area would be the answer).
    """
    images, attrs = sample_scenes(n, canvas_size, seed=seed, count=(0, max_count), sizes=sizes)
    return images, np.array([a["count"] for a in attrs], dtype=np.int64)


def left_right_task(n: int, canvas_size=32, *, seed, sizes=("tiny", "small")) -> tuple[np.ndarray, np.ndarray]:
    """Is the one object on the left or the right half? label = SIDES.index(side) (0 left, 1 right)."""
    images, attrs = sample_scenes(n, canvas_size, seed=seed, placement="left_right", sizes=sizes)
    return images, np.array([SIDES.index(a["side"]) for a in attrs], dtype=np.int64)


# --- reading a picture back --------------------------------------------------------------------------
def read_object(image, threshold: float = 0.5) -> dict | None:
    """The attributes of the one object in a picture on a black background, read off its pixels.

    image: (3, H, W) in [0, 1]. The object is every pixel with a channel above `threshold`; None when
    fewer than 3 pixels are. Then, with the object's bounding box:
        color    the name in COLORS nearest (squared RGB distance) to the mean colour of its pixels
        side     "left" / "right" / "center" by the mean x of its pixel centres (side_of)
        size_px  the longer side of the box
        shape    "square" when it fills over 0.9 of the box; else "triangle" when the top half of
                 the box holds under 0.75 of the bottom half's pixels (apex up); else "circle"
    On every drawn single object of size >= MIN_NAMED_SIZE this returns what was drawn
    (tests/test_data.py); on a generated picture it is a judge that needs no training, so
    that it cannot share a model's blind spots. Stray pixels count as part of the object.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"read_object: image must be (3, H, W), got shape {image.shape}")
    mask = image.max(axis=0) > threshold
    if mask.sum() < 3:
        return None
    rows, cols = np.nonzero(mask)
    box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    half = box.shape[0] // 2
    top, bottom = box[:half].sum(), box[box.shape[0] - half:].sum()
    if box.mean() > 0.9:
        shape = "square"
    elif top < 0.75 * bottom:
        shape = "triangle"
    else:
        shape = "circle"
    palette = np.array(list(COLORS.values()), dtype=np.float64)
    mean_rgb = image[:, mask].mean(axis=1)
    color = list(COLORS)[int(((palette - mean_rgb) ** 2).sum(axis=1).argmin())]
    return {"shape": shape, "color": color, "side": side_of(float(cols.mean()) + 0.5, image.shape[2]),
            "size_px": int(max(box.shape))}
