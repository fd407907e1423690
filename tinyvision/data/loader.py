"""Mini-batches: aligned slices of several arrays, in a shuffled order that a seed fixes.

Stochastic gradient descent steps on the loss of a mini-batch, a random subset of the data. One
epoch visits every example exactly once: take a permutation of 0..N-1 and cut it into batches,

    order = permutation(N)                 (or 0..N-1 with shuffle=False)
    batch b = arrays[order[b B : (b + 1) B]]    for b = 0, 1, ..., ceil(N / B) - 1

The last batch is smaller when B does not divide N; drop_last=True leaves it out (then every
batch has exactly B rows, and the N mod B left-over examples change from epoch to epoch).

The permutation comes from its own Generator, np.random.default_rng((seed, epoch)): the same seed
and epoch give the same batches in every run, a new epoch gives a new order, and no global
random state is touched. (seed and epoch enter as a pair, not as seed + epoch, so that seed 0
epoch 1 and seed 1 epoch 0 are different orders.)
"""
from __future__ import annotations

import numbers
from collections.abc import Iterator

import numpy as np

__all__ = ["batches"]


def batches(*arrays, batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
            drop_last: bool = False) -> Iterator[tuple]:
    """Yield tuples (a[idx], b[idx], ...) of aligned batches of the arrays (all N along axis 0).

        for x, y in batches(images, labels, batch_size=64, seed=0, epoch=epoch): ...

    Without shuffling, the batches are views (basic slices); with it, copies.
    """
    if not arrays:
        raise ValueError("batches: give at least one array")
    for name, value, low in (("batch_size", batch_size, 1), ("seed", seed, 0), ("epoch", epoch, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"batches: {name} must be an integer >= {low}, got {value!r}")
    if not all(hasattr(a, "shape") and len(a.shape) >= 1 for a in arrays):
        raise ValueError(f"batches: every argument must be an array with at least one axis, got types "
                         f"{[type(a).__name__ for a in arrays]}")
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError(f"batches: all arrays must have the same first dimension N, got shapes "
                         f"{[tuple(a.shape) for a in arrays]}")

    order = np.random.default_rng((int(seed), int(epoch))).permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield tuple(a[start:start + batch_size] for a in arrays)
        else:
            index = order[start:start + batch_size]
            yield tuple(a[index] for a in arrays)
