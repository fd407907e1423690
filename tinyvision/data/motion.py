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

For generation (lesson 09b) the canvas does not wrap: sliding_shapes keeps the object whole in every
frame, on one row of a strip, so that a generated frame can be judged as one picture of one object.
    sliding_shapes(...)      clips of a shape crossing a strip (H, W) by `speed` pixels a frame
    object_centres(clips)    (n, T): the mean column of each frame's object pixels (NaN on an empty frame)
    motion_steadiness(...)   per clip: every step the same signed shift of `speed` pixels? and the jerk
"""
from __future__ import annotations

import numpy as np

from ..checks import check_int, check_number
from ..nn.init import as_rng
from .shapes import COLORS, SHAPES, canvas_hw, draw_shape, size_px

__all__ = ["DIRECTIONS", "motion_steadiness", "motion_task", "moving_shapes", "object_centres", "shape_task",
           "sliding_shapes"]

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


def sliding_shapes(n: int, frames: int = 4, canvas_size=(6, 12), speed: int = 1, size: int = 4, *, seed,
                   colors=tuple(COLORS)) -> tuple[np.ndarray, list[dict]]:
    """n clips (n, frames, 3, H, W) of one shape crossing a strip, and one dict per clip (shape, color,
    direction, x0: the centre's column in frame 0, y: its row).

    The object sits on the middle row and moves `speed` pixels a frame, left or right; its first
    column is uniform over the places from which it stays whole on the canvas in every frame."""
    where = "sliding_shapes"
    n, frames = check_int(where, "n", n, low=0), check_int(where, "frames", frames, low=1)
    speed, size = check_int(where, "speed", speed, low=1), check_int(where, "size", size, low=1)
    H, W = canvas_hw(canvas_size)
    lo, hi = size // 2, W - (size - size // 2) - (frames - 1) * speed   # centre columns of frame 0 (moving right)
    if size > H or hi < lo:
        raise ValueError(f"{where}: an object of {size} pixels moving {speed} pixels a frame for {frames} frames "
                         f"does not stay whole on a canvas of {H}x{W}")
    bad = [c for c in colors if c not in COLORS]
    if not colors or bad:
        raise ValueError(f"{where}: colors must be names in {tuple(COLORS)}, got {tuple(colors)!r}")
    rng = as_rng(seed)
    clips = np.zeros((n, frames, 3, H, W), np.float32)
    records = []
    y = H / 2
    for i in range(n):
        shape, color = SHAPES[rng.integers(len(SHAPES))], colors[rng.integers(len(colors))]
        direction = DIRECTIONS[rng.integers(2)]
        x0 = int(rng.integers(lo, hi + 1))
        step = speed
        if direction == "left":                       # mirror the start, so left-movers cover the same places
            x0, step = W - x0, -speed
        for k in range(frames):
            frame = np.zeros((H, W, 3), np.float32)
            draw_shape(frame, shape, color, (x0 + k * step, y), size)
            clips[i, k] = frame.transpose(2, 0, 1)
        records.append({"shape": shape, "color": color, "direction": direction, "x0": x0, "y": y})
    return clips, records


def object_centres(clips, threshold: float = 0.5) -> np.ndarray:
    """(n, T) float64: the mean column (pixel centres, 0.5 = the first column's centre) of the pixels whose
    brightest channel is above `threshold` in each frame of clips (n, T, C, H, W); NaN where none is."""
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.shape[2] == 0:
        raise ValueError(f"object_centres: clips must be (n, T, C, H, W) with C >= 1, got shape {clips.shape}")
    threshold = check_number("object_centres", "threshold", threshold)
    mask = clips.max(axis=2) > threshold                                  # (n, T, H, W)
    counts = mask.sum(axis=(2, 3))
    columns = np.arange(clips.shape[-1]) + 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, (mask * columns).sum(axis=(2, 3)) / counts, np.nan)


def motion_steadiness(centres, speed: float, tolerance: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(steady (n,) bool, jerk (n,) float64) from object centres (n, T).

    steady: every frame-to-frame shift is within `tolerance` of +speed, or every one within it of -speed
    (one direction, the right pace); False when a frame has no object. jerk: the mean |change of the
    shift| from step to step, the flicker of the motion in pixels (0 for T < 3; NaN with an empty frame
    when T >= 3)."""
    centres = np.asarray(centres, dtype=np.float64)
    if centres.ndim != 2:
        raise ValueError(f"motion_steadiness: centres must be (n, T), got shape {centres.shape}")
    speed = check_number("motion_steadiness", "speed", speed, low=0.0)
    tolerance = check_number("motion_steadiness", "tolerance", tolerance, low=0.0)
    shifts = np.diff(centres, axis=1)                                     # (n, T - 1)
    with np.errstate(invalid="ignore"):
        steady = (np.all(np.abs(shifts - speed) <= tolerance, axis=1)
                  | np.all(np.abs(shifts + speed) <= tolerance, axis=1))
    jerk = np.abs(np.diff(shifts, axis=1)).mean(axis=1) if centres.shape[1] >= 3 else np.zeros(len(centres))
    return steady & ~np.isnan(centres).any(axis=1), jerk
