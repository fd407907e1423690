"""Scenes with known depth: why one camera can tell how far things are.

A pinhole camera at height h = 1 above a flat ground looks horizontally; the horizon is the image row
y_h. A point on the ground at distance Z appears at row

    y = y_h + f h / Z                 (perspective: the farther, the closer to the horizon)

so every ground row has its depth, Z(y) = f h / (y - y_h); above the horizon is the sky (depth Z_SKY).
Objects stand on the ground, facing the camera: one of real height S at distance Z is drawn s = f S / Z
pixels tall with its base on row y_h + f h / Z. Four cues tell a single picture's depth, and each can be
switched off, so a model's use of each can be measured (lesson 13):

    size         every object has the same real size S = 0.6 m: its drawn size is 0.6 f / Z
                 (off: S drawn from 0.3-1.2 m, so size alone says nothing)
    occlusion    objects are drawn far to near, a nearer one covering a farther one where they overlap
                 (off: objects never overlap)
    texture      the ground has stripes every metre, which crowd towards the horizon
                 (off: the ground is one flat colour)
    perspective  an object's base row says its distance (always on: the camera is fixed)

The depth map is metres per pixel: the ground's Z(y), the sky's Z_SKY, an object's Z over its pixels.
"""
from __future__ import annotations

import numpy as np

from ..checks import check_int
from ..nn.init import as_rng
from .shapes import SHAPES, shape_mask

__all__ = ["DEPTH_CUES", "Z_SKY", "depth_scenes"]

DEPTH_CUES = ("size", "occlusion", "texture")
OBJECT_SIZE = 0.6                # metres: below the camera's height (1 m), so objects stay under the horizon
Z_SKY = 30.0                     # metres: the depth given to sky pixels (beyond every object)
_SKY = np.array([0.55, 0.75, 1.0], np.float32)
_GROUND = (np.array([0.45, 0.35, 0.2], np.float32), np.array([0.3, 0.22, 0.12], np.float32))   # stripe colours
_OBJECT_COLOURS = np.array([[1, 0, 0], [0, 0.8, 0], [0.1, 0.3, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], np.float32)


def depth_scenes(n: int, canvas_size: int = 32, *, seed, cues=DEPTH_CUES, count=(1, 3), z_range=(1.6, 8.0),
                 return_objects: bool = False):
    """n scenes: images (n, 3, H, W) float32 in [0, 1] and depth (n, H, W) float32 in metres.

    cues: the cues kept on (module docstring), a subset of DEPTH_CUES; count: objects per scene (lo, hi);
    z_range: the objects' distances in metres. The horizon is at a third of the height, f = H.
    return_objects: also return, per scene, its objects as (z, x, drawn size, shape, box (x0, y0, x1, y1))."""
    where = "depth_scenes"
    n = check_int(where, "n", n, low=0)
    size = check_int(where, "canvas_size", canvas_size, low=16)
    if isinstance(cues, str):
        raise TypeError(f"{where}: cues must be a sequence of names from {DEPTH_CUES}, got the string {cues!r}")
    bad = [c for c in cues if c not in DEPTH_CUES]
    if bad:
        raise ValueError(f"{where}: cues must be names from {DEPTH_CUES}, got {bad}")
    if (not isinstance(count, (tuple, list)) or len(count) != 2
            or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in count)
            or not 0 <= count[0] <= count[1]):
        raise ValueError(f"{where}: count must be (lo, hi) ints with 0 <= lo <= hi, got {count!r}")
    lo, hi = count
    z_near, z_far = z_range
    if not 0 < z_near < z_far < Z_SKY:
        raise ValueError(f"{where}: z_range must be (near, far) with 0 < near < far < {Z_SKY}, got {z_range}")
    rng = as_rng(seed)
    H = W = size
    f, horizon = float(H), H / 3
    rows = np.arange(H) + 0.5                                          # pixel centres
    below = rows > horizon
    ground_z = np.where(below, f / np.maximum(rows - horizon, 1e-9), Z_SKY)
    ground_z = np.minimum(ground_z, Z_SKY)
    stripe = (np.floor(ground_z) % 2).astype(int)                      # one stripe colour per metre of ground
    images = np.empty((n, 3, H, W), np.float32)
    depths = np.empty((n, H, W), np.float32)
    drawn = []
    for i in range(n):
        image = np.empty((H, W, 3), np.float32)
        image[~below] = _SKY
        if "texture" in cues:
            image[below] = np.array(_GROUND)[stripe[below]][:, None]
        else:
            image[below] = _GROUND[0]
        depth = np.repeat(ground_z[:, None], W, axis=1).astype(np.float32)
        objects = _place_objects(rng, int(rng.integers(lo, hi + 1)), f, horizon, W, z_near, z_far,
                                 "size" in cues, "occlusion" in cues)
        drawn.append([(z, x, s, shape, box) for z, x, s, shape, _, box in objects])
        for z, x, s, shape, colour, _ in sorted(objects, key=lambda o: -o[0]):      # far to near
            base = horizon + f / z
            mask = shape_mask(shape, (x, base - s / 2), s, (H, W))
            image[mask] = colour
            depth[mask] = z
        images[i] = image.transpose(2, 0, 1)
        depths[i] = depth
    return (images, depths, drawn) if return_objects else (images, depths)


def _place_objects(rng, k, f, horizon, width, z_near, z_far, same_size, may_overlap):
    """k objects (z, x centre px, drawn size px, shape, colour, box); without may_overlap, their boxes are apart
    (an object that finds no free place in 100 draws is left out, so a crowded scene may hold fewer)."""
    placed = []
    for _ in range(k):
        for _ in range(100):
            z = float(np.exp(rng.uniform(np.log(z_near), np.log(z_far))))   # uniform in log distance
            real = OBJECT_SIZE if same_size else float(rng.uniform(0.5 * OBJECT_SIZE, 2 * OBJECT_SIZE))
            s = f * real / z
            x = float(rng.uniform(s / 2, width - s / 2)) if s < width else width / 2
            box = (x - s / 2, horizon + f / z - s, x + s / 2, horizon + f / z)
            if may_overlap or all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1]
                                  for b in (p[-1] for p in placed)):
                placed.append((z, x, s, SHAPES[rng.integers(len(SHAPES))],
                               _OBJECT_COLOURS[rng.integers(len(_OBJECT_COLOURS))], box))
                break
    return placed
