"""A judge for generated digits: a small CNN trained on the real 8x8 digits, and the scores built on it.

Generated images have no labels, so they are scored by a classifier trained on real ones, the way
Inception Score and FID score ImageNet samples with an Inception network (Salimans et al. 2016;
Heusel et al. 2017). Ours is SmallCNN on digits with pixels in [0, 1]:
    judge_digits(judge, images)    its class probabilities and its 128 penultimate features per image
    class_coverage(probs)          how many of the 10 classes the samples hit, and how confidently
    frechet_distance(a, b)         the distance between two Gaussians fitted to two sets of features:
        FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))
The same judge scores every model, so the numbers compare models with each other, and against a
held-out set of real digits (the floor: what real images score against real images of the same
size). They do not compare with published FIDs, which use Inception features on other data.
"""
from __future__ import annotations

import numpy as np

from ..checks import check_int, check_number
from ..ops.reduce import softmax_array
from ..tensor import Tensor, no_grad
from .cnn import SmallCNN

__all__ = ["class_coverage", "energy_distance", "frechet_distance", "judge_digits", "train_digit_judge"]


def train_digit_judge(epochs: int = 20, seed: int = 0):
    """SmallCNN trained on the digits' training split, pixels in [0, 1] (load_digits(normalize=False))."""
    from ..data import load_digits  # noqa: PLC0415 - data is only needed to train
    from ..training import train_classifier  # noqa: PLC0415
    epochs = check_int("train_digit_judge", "epochs", epochs, low=1)
    x, y = load_digits("train", normalize=False, seed=0)
    judge = SmallCNN(img_size=8, seed=seed)
    train_classifier(judge, x, y, epochs=epochs, seed=seed)
    return judge.eval()


def judge_digits(judge, images, batch_size: int = 512) -> tuple:
    """(probs (N, 10), features (N, F)) for images (N, 1, 8, 8) in [0, 1]; F = the input of the last Linear."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != (1, 8, 8):
        raise ValueError(f"judge_digits: images must be (N, 1, 8, 8) in [0, 1], got shape {images.shape}")
    probs, feats = [], []
    with no_grad():
        for start in range(0, len(images), batch_size):
            h = Tensor(images[start:start + batch_size])
            for layer in judge[:-1]:                    # every layer but the classifier
                h = layer(h)
            logits = judge[-1](h).numpy().astype(np.float64)
            probs.append(softmax_array(logits, 1))
            feats.append(h.numpy().astype(np.float64))
    if not probs:
        return np.zeros((0, 10)), np.zeros((0, judge[-1].weight.shape[0]))
    return np.concatenate(probs), np.concatenate(feats)


def class_coverage(probs, min_share: float = 0.02) -> dict:
    """Which classes the samples hit: a class counts as present when at least `min_share` of the samples
    are judged to be it (argmax); also the mean confidence (max probability) and the predicted shares."""
    min_share = check_number("class_coverage", "min_share", min_share, low=0.0, high=1.0, low_open=True)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError(f"class_coverage: probs must be (N, classes) with N >= 1, got shape {probs.shape}")
    shares = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1]) / len(probs)
    return {"classes_present": int((shares >= min_share).sum()), "confidence": float(probs.max(axis=1).mean()),
            "shares": [round(float(s), 4) for s in shares]}


def _sqrt_psd(m):
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clamped at 0)."""
    values, vectors = np.linalg.eigh((m + m.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(features_a, features_b) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) for two sets of feature vectors (rows).

    S_a S_b is not symmetric, but it is similar to R = S_a^(1/2) S_b S_a^(1/2), which is symmetric
    positive semi-definite with the same eigenvalues; so tr (S_a S_b)^(1/2) = sum of sqrt(eig(R)),
    computed with two symmetric eigendecompositions instead of a general matrix square root.
    Covariances are the unbiased sample ones (N - 1): with few samples the distance is biased upward
    (Chong & Forsyth 2020), so compare distances at the same sample size.
    """
    a, b = (np.asarray(f, dtype=np.float64) for f in (features_a, features_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"frechet_distance: two (N, F) feature sets with the same F and N >= 2 each, got "
                         f"{a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a, s_b = np.cov(a, rowvar=False).reshape(a.shape[1], -1), np.cov(b, rowvar=False).reshape(b.shape[1], -1)
    root_a = _sqrt_psd(s_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)


def energy_distance(a, b, max_points: int = 2000, seed: int = 0) -> float:
    """The energy distance between two samples of points (Szekely & Rizzo 2013), for low-dimensional data:
        D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'|,     returned as D (0 exactly when the laws are equal)
    with the plain (V-statistic) means over all pairs. It needs no density, no features and no bins, so
    it suits 2-D toy data; larger samples are subsampled to max_points (pairs cost N^2 memory)."""
    a, b = (np.asarray(p, dtype=np.float64) for p in (a, b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"energy_distance: two (N, d) samples with the same d and N >= 1, got {a.shape} and {b.shape}")
    max_points = check_int("energy_distance", "max_points", max_points, low=2)
    rng = np.random.default_rng(seed)
    a, b = (p[rng.choice(len(p), max_points, replace=False)] if len(p) > max_points else p for p in (a, b))

    def mean_dist(u, v):
        return float(np.sqrt(((u[:, None, :] - v[None, :, :]) ** 2).sum(-1)).mean())
    return float(np.sqrt(max(2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b), 0.0)))
