"""Small image-analysis helpers the data tests share (no SciPy needed)."""
import numpy as np


def count_blobs(mask):
    """Connected components of a boolean (H, W) mask, 8-connected, by an iterative flood fill."""
    seen = np.zeros_like(mask)
    H, W = mask.shape
    blobs = 0
    for i, j in zip(*np.nonzero(mask)):
        if seen[i, j]:
            continue
        blobs += 1
        stack = [(i, j)]
        seen[i, j] = True
        while stack:
            y, x = stack.pop()
            for ny in range(max(y - 1, 0), min(y + 2, H)):
                for nx in range(max(x - 1, 0), min(x + 2, W)):
                    if mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
    return blobs
