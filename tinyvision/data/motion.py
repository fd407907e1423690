"""Clips of a moving shape: tasks where time matters, and a control where it does not.

One shape (from shapes.py: a shape, a colour and a size) slides horizontally by `speed` pixels a frame,
to the left or to the right, on a canvas that WRAPS around (what leaves on one side comes back on the
other). Its first position is uniform over the canvas width (and its row uniform), so every single
frame, in either direction, is an object at a uniformly random place: no one frame says anything
about the direction. Only the order of the frames does; and reversing a clip turns a left-mover into
a right-mover with the same distribution, so a model blind to frame order scores exactly chance.

Frame k of a clip is its first frame rolled by k * speed * (+1 right, -1 left) pixels along the width:
exact, no resampling. Clips are (n, T, 3, H, W) float32 in [0, 1].
    motion_task(...)   label = 0 left, 1 right  (time matters)
    shape_task(...)    label = SHAPES.index(shape) of a moving object (appearance suffices: the control)
"""
from __future__ import annotations

import numpy as np

from ..checks import check_int
from ..nn.init import as_rng
from .shapes import COLORS, SHAPES, draw_shape, size_px

__all__ = ["DIRECTIONS", "moving_shapes", "motion_task", "shape_task"]

DIRECTIONS = ("left", "right")


def moving_shapes(n: int, frames: int = 4, canvas_size: int = 16, speed: int = 2, size="small", *, seed,
                  colors=tuple(COLORS)) -> tuple[np.ndarray, list[dict]]:
    """n clips (n, frames, 3, H, W) and one dict per clip: shape, color, direction, and x0, y: the object's
    centre in the first frame (a pixel edge: a square of size 4 covers columns x0 - 2 .. x0 + 1)."""
    where = "moving_shapes"
    n, frames = check_int(where, "n", n, low=0), check_int(where, "frames", frames, low=1)
    canvas_size = check_int(where, "canvas_size", canvas_size, low=4)
    speed = check_int(where, "speed", speed, low=1)
    if 2 * speed >= canvas_size:
        raise ValueError(f"{where}: speed={speed} pixels a frame must be below half the {canvas_size}-pixel canvas "
                         f"(on a wrapping canvas, +{speed} and -{canvas_size - speed} are the same move)")
    s = size_px(size, canvas_size)
    if s > canvas_size - 2:
        raise ValueError(f"{where}: an object of {s} pixels does not fit the {canvas_size}-pixel canvas with a margin")
    bad = [c for c in colors if c not in COLORS]
    if not colors or bad:
        raise ValueError(f"{where}: colors must be names in {tuple(COLORS)}, got {tuple(colors)!r}")
    rng = as_rng(seed)
    clips = np.zeros((n, frames, 3, canvas_size, canvas_size), np.float32)
    records = []
    for i in range(n):
        shape, color = SHAPES[rng.integers(len(SHAPES))], colors[rng.integers(len(colors))]
        direction = DIRECTIONS[rng.integers(2)]
        x0, y = int(rng.integers(canvas_size)), int(rng.integers(s // 2 + 1, canvas_size - s // 2))
        base = np.zeros((canvas_size, canvas_size, 3), np.float32)
        draw_shape(base, shape, color, (canvas_size / 2, y), s)           # centred, then rolled into place
        step = speed if direction == "right" else -speed
        for k in range(frames):
            shift = (x0 - canvas_size // 2 + k * step) % canvas_size
            clips[i, k] = np.roll(base, shift, axis=1).transpose(2, 0, 1)
        records.append({"shape": shape, "color": color, "direction": direction, "x0": x0, "y": y})
    return clips, records


def motion_task(n: int, frames: int = 4, canvas_size: int = 16, speed: int = 2, *, seed, **options):
    """(clips, labels): which way does the object move? 0 left, 1 right; each frame alone is uninformative."""
    clips, records = moving_shapes(n, frames, canvas_size, speed, seed=seed, **options)
    return clips, np.array([DIRECTIONS.index(r["direction"]) for r in records], dtype=np.int64)


def shape_task(n: int, frames: int = 4, canvas_size: int = 16, speed: int = 2, *, seed, **options):
    """(clips, labels): which shape moves? SHAPES.index(shape); any one frame answers it."""
    clips, records = moving_shapes(n, frames, canvas_size, speed, seed=seed, **options)
    return clips, np.array([SHAPES.index(r["shape"]) for r in records], dtype=np.int64)
