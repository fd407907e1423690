"""Data sets for the lessons, generated or bundled, so nothing is downloaded.

    digits.py   scikit-learn's 8x8 handwritten digits: stratified split, normalised, upsampled
    shapes.py   coloured circles, squares and triangles with exact attributes; tiny-object,
                counting and left / right tasks; compositional splits by (color, shape)
    captions.py those scenes with captions ("a small red circle on the left"), a compositional
                split, partial captions, batches without repeated captions, zero-shot prompts, and
                count / side / tiny-object probes
    motion.py   clips of a shape sliding left or right on a wrapping canvas: direction and shape tasks;
                strips for generation (no wrap), and the object's track (centres, steadiness)
    loader.py   seeded mini-batches of aligned arrays
    augment.py  label-preserving transformations (random shifts)

Importing this package needs NumPy alone: scikit-learn is imported when the digits are loaded.
"""
from .augment import random_shift
from .captions import (CAPTION_TEMPLATES, COUNT_WORDS, DEFAULT_HELD_OUT, caption, captioned_shapes, count_probe,
                       partial_caption, side_probe, tiny_probe, unique_caption_batches, zero_shot_prompts)
from .digits import DIGITS_CLASSES, NormStats, load_digits
from .loader import batches
from .motion import (DIRECTIONS, motion_steadiness, motion_task, moving_shapes, object_centres, shape_task,
                     sliding_shapes)
from .shapes import (COLORS, REGIONS, SHAPES, SIDES, SIZES, ObjectSpec, SceneSpec, counting_task, draw_shape,
                     left_right_task, make_scene, read_object, region_center, sample_scene_specs, sample_scenes, shape_mask,
                     side_of, size_px, tiny_object_task)

__all__ = ["CAPTION_TEMPLATES", "COLORS", "COUNT_WORDS", "DEFAULT_HELD_OUT", "DIGITS_CLASSES", "DIRECTIONS",
           "REGIONS", "SHAPES", "SIDES", "SIZES", "NormStats", "ObjectSpec", "SceneSpec", "batches", "caption",
           "captioned_shapes", "count_probe", "counting_task", "draw_shape", "left_right_task", "load_digits",
           "make_scene", "motion_steadiness", "motion_task", "moving_shapes", "object_centres", "partial_caption",
           "random_shift", "read_object", "region_center", "sample_scene_specs", "sample_scenes", "shape_mask",
           "shape_task", "side_of", "side_probe", "size_px", "sliding_shapes", "tiny_object_task", "tiny_probe",
           "unique_caption_batches", "zero_shot_prompts"]
