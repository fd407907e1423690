"""Scenes for detection: every object's class (its shape) and box, read off the scene generator.

An object of size s pixels centred at (x, y) fills the square box [x - s/2, x + s/2] x [y - s/2, y + s/2]
(circle: its diameter; square: itself; triangle: base and height s), so the box is known exactly, never
estimated from pixels. Boxes are normalised to the canvas as DETR predicts them: (cx, cy, w, h) in [0, 1].
Objects do not overlap (shapes.sample_scene_specs places them apart), in any colour and in two sizes (8 and 12 pixels by default).
"""
from __future__ import annotations

import numpy as np

from .shapes import SHAPES, canvas_hw, make_scene, sample_scene_specs

__all__ = ["detection_scenes", "spec_targets"]


def spec_targets(spec) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n,) int64: SHAPES.index(shape), boxes (n, 4) float64: (cx, cy, w, h) / canvas) of one SceneSpec."""
    H, W = spec.canvas_size
    labels = np.array([SHAPES.index(o.shape) for o in spec.objects], dtype=np.int64)
    boxes = np.array([[o.center[0] / W, o.center[1] / H, o.size / W, o.size / H] for o in spec.objects],
                     dtype=np.float64).reshape(-1, 4)
    return labels, boxes


def detection_scenes(n: int, canvas_size=32, *, seed, count=(1, 4), sizes=("small", 12)
                     ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """n scenes of `count` objects: images (n, 3, H, W) float32 in [0, 1], and per scene (labels, boxes).

    count: an int or (lo, hi); sizes: as in shapes.sample_scene_specs. Classes are SHAPES (0 circle,
    1 square, 2 triangle); colour and size vary, so a detector must read the shape itself."""
    specs = sample_scene_specs(n, canvas_size, seed=seed, count=count, sizes=sizes)
    H, W = canvas_hw(canvas_size)
    images = np.stack([make_scene(s) for s in specs]) if specs else np.zeros((0, 3, H, W), np.float32)
    return images, [spec_targets(s) for s in specs]
