"""Handwritten digits: scikit-learn's bundled 8x8 images, split, normalised and optionally upsampled.

The data (Alpaydin & Kaynak 1998, the UCI "optdigits" test set) is 1797 grey images of the digits
0-9, 8x8 pixels, each pixel a count 0..16 of the ink on a 4x4 block of a 32x32 bitmap. It ships
inside scikit-learn, so nothing is downloaded.

    x = pixel / 16                     in [0, 1]
    x = (x - mean_train) / std_train   one scalar mean and std over all train pixels

The split is stratified: each class c, with n_c images, gives round(test_fraction n_c) of them
(at least one, at most n_c - 1) to test and the rest to train, drawn by `seed`. The same seed
gives the same split in every call, so `load_digits("train")` and `load_digits("test")` are
disjoint and together hold all 1797 images.

Why the TRAIN statistics normalise the test split too: the test set stands in for images the
model has never seen. Computing its own mean and std would use knowledge of the whole test set
(a leak), and at deployment there is no "set" at all, one image at a time. The model learned on
inputs mapped by x -> (x - mean_train) / std_train, so every later input goes through the same map.

Why one scalar mean and std rather than one per pixel: the border pixels are blank in almost
every image, so a per-pixel std is (near) zero there and dividing by it blows noise up.

`upsample=k` repeats each pixel k x k times (nearest neighbour), giving 8k x 8k images. It adds
no information, only pixels, and so more patches (tokens) per image for a ViT: 8x8 with 2x2
patches is 16 tokens, upsample=4 with 4x4 patches is 64.
"""
from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import numpy as np

from ..backend import optional_import

__all__ = ["DIGITS_CLASSES", "NormStats", "load_digits"]

DIGITS_CLASSES = tuple(str(d) for d in range(10))  # label i is the digit i


class NormStats(NamedTuple):
    """The mean and std that `load_digits` normalised with (train pixels in [0, 1])."""
    mean: float
    std: float

    def unnormalize(self, images: np.ndarray) -> np.ndarray:
        """Undo x -> (x - mean) / std, back to [0, 1], e.g. for plotting."""
        return images * self.std + self.mean


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 images as (N, 8, 8) pixel counts 0..16, and their labels (N,). Read once."""
    datasets = optional_import("sklearn.datasets", "dev", "the digits data set")
    bunch = datasets.load_digits()
    images, labels = bunch.images.astype(np.float64), bunch.target.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False  # shared by every call: never edit
    return images, labels


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each sorted; per class, round(test_fraction n_c) go to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(max(round(test_fraction * len(members)), 1), len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(split: str = "train", test_fraction: float = 0.2, seed: int = 0, upsample: int = 1,
                normalize: bool = True, dtype=np.float32, return_stats: bool = False):
    """One split of the 8x8 digits.

    Returns images (N, 1, 8 upsample, 8 upsample) of `dtype` and labels (N,) int64 in 0..9;
    with return_stats=True also the NormStats (train mean and std of pixels in [0, 1]), which
    are the same for both splits and whether or not `normalize` is on.
    With the defaults: 1438 train and 359 test images (round() halves to even, per class).
    """
    if split not in ("train", "test"):
        raise ValueError(f"load_digits: split must be 'train' or 'test', got {split!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not 0 < test_fraction < 1:
        raise ValueError(f"load_digits: test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        # Not a Generator: "train" and "test" are two calls that must draw the SAME split.
        raise ValueError(f"load_digits: seed must be an int (the same seed in both calls gives the same split), got {seed!r}")
    if isinstance(upsample, bool) or not isinstance(upsample, numbers.Integral) or upsample < 1:
        raise ValueError(f"load_digits: upsample must be an integer >= 1, got {upsample!r}")

    raw_images, raw_labels = _raw_digits()
    train_index, test_index = _stratified_split(raw_labels, float(test_fraction), int(seed))
    index = train_index if split == "train" else test_index

    images = raw_images[index] / 16.0                        # (N, 8, 8) in [0, 1]
    train_pixels = raw_images[train_index] / 16.0
    stats = NormStats(mean=float(train_pixels.mean()), std=float(train_pixels.std()))
    if normalize:
        images = (images - stats.mean) / stats.std
    if upsample > 1:
        # Nearest-neighbour: every pixel becomes a k x k block. The mean and std are unchanged
        # (each value is repeated k^2 times), so normalising before or after is the same.
        images = images.repeat(upsample, axis=1).repeat(upsample, axis=2)
    images = images[:, None].astype(dtype)                   # (N, 1, H, W): one grey channel
    labels = raw_labels[index].copy()
    return (images, labels, stats) if return_stats else (images, labels)
