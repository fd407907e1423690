"""Boxes and the Hungarian matching that lets a detector predict a set (DETR, Carion et al. 2020).

Boxes are normalised to the picture: (cx, cy, w, h) in [0, 1] as DETR predicts them, converted to
corners (x0, y0, x1, y1) to measure overlap.

    IoU(A, B)   = |A n B| / |A u B|
    GIoU(A, B)  = IoU - (|C| - |A u B|) / |C|        C: the smallest box enclosing A and B
                  (Rezatofighi et al. 2019, eq. 1), in (-1, 1]: 1 for equal boxes, towards -1 as they
                  drift apart, so it still has a gradient when the boxes do not overlap, where IoU is 0.

Hungarian matching (Kuhn 1955; Munkres 1957): given a cost matrix (n rows, m columns, n <= m), pick
one distinct column for every row with the smallest total cost. DETR's rows are the true objects, its
columns the queries: each object is owned by exactly one query, and every other query must say "no
object". That is what makes a detector's output a set: no anchors, no duplicate boxes to suppress.

The algorithm below is the shortest-augmenting-path form with dual potentials u (rows) and v
(columns), O(n^2 m): rows enter one at a time; for each, a Dijkstra-like search over reduced costs
c(i, j) - u(i) - v(j) >= 0 finds the cheapest way to give it a column, shifting earlier rows along an
alternating path, and the potentials are raised so that every matched pair keeps reduced cost 0.
Those potentials are a certificate: sum(u) + sum(v) equals the optimal cost (LP duality).
"""
from __future__ import annotations

import numpy as np

from .. import ops as F
from ..tensor import Tensor

__all__ = ["box_area", "box_cxcywh_to_xyxy", "box_iou", "generalized_box_iou", "generalized_box_iou_pairs",
           "linear_sum_assignment"]


def _boxes(where: str, name: str, boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{where}: {name} must be boxes (N, 4), got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"{where}: {name} holds a NaN or infinite coordinate")
    return b


def box_cxcywh_to_xyxy(boxes):
    """(..., 4) centre, width, height -> corners (x0, y0, x1, y1). Works on arrays and on Tensors."""
    if isinstance(boxes, Tensor):
        cx, cy, w, h = (boxes[..., i] for i in range(4))
        return F.stack([cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5], axis=-1)
    b = np.asarray(boxes, dtype=np.float64)
    cx, cy, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def box_area(xyxy: np.ndarray) -> np.ndarray:
    return (xyxy[..., 2] - xyxy[..., 0]) * (xyxy[..., 3] - xyxy[..., 1])


def _check_corners(where, name, b):
    if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
        raise ValueError(f"{where}: {name} has a box with x1 < x0 or y1 < y0 (corners expected, (x0, y0, x1, y1))")


def box_iou(a, b) -> np.ndarray:
    """IoU of every box of a (N, 4) with every box of b (M, 4), corners: (N, M) float64."""
    a, b = _boxes("box_iou", "a", a), _boxes("box_iou", "b", b)
    _check_corners("box_iou", "a", a)
    _check_corners("box_iou", "b", b)
    return _iou_union(a[:, None], b[None])[0]


def _iou_union(a, b):
    wh = np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return iou, union


def generalized_box_iou(a, b) -> np.ndarray:
    """GIoU of every box of a (N, 4) with every box of b (M, 4), corners: (N, M) float64 (the matcher's cost)."""
    a, b = _boxes("generalized_box_iou", "a", a), _boxes("generalized_box_iou", "b", b)
    _check_corners("generalized_box_iou", "a", a)
    _check_corners("generalized_box_iou", "b", b)
    a, b = a[:, None], b[None]
    iou, union = _iou_union(a, b)
    wh = np.maximum(a[..., 2:], b[..., 2:]) - np.minimum(a[..., :2], b[..., :2])
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - np.where(enclosing > 0, (enclosing - union) / np.where(enclosing > 0, enclosing, 1), 0.0)


def _tmin(a: Tensor, b: Tensor) -> Tensor:
    return F.where(a.data <= b.data, a, b)          # d/da = [a <= b], d/db = the rest


def _tmax(a: Tensor, b: Tensor) -> Tensor:
    return F.where(a.data >= b.data, a, b)


def generalized_box_iou_pairs(a: Tensor, b) -> Tensor:
    """GIoU of matched pairs a[i], b[i] (N, 4 corners each): (N,), differentiable in a (the loss 1 - GIoU).

    The same formula as generalized_box_iou, on the diagonal only, written with Tensor ops. Degenerate
    boxes (zero area) are kept finite by a small epsilon in both divisions."""
    b = b if isinstance(b, Tensor) else Tensor(np.asarray(b, dtype=a.dtype), dtype=a.dtype)
    if a.ndim != 2 or a.shape[-1] != 4 or b.shape != a.shape:
        raise ValueError(f"generalized_box_iou_pairs: a and b must both be boxes (N, 4), got {a.shape} and {b.shape}")
    eps = 1e-9
    ax0, ay0, ax1, ay1 = (a[:, i] for i in range(4))
    bx0, by0, bx1, by1 = (b[:, i] for i in range(4))
    iw = F.clip(_tmin(ax1, bx1) - _tmax(ax0, bx0), 0.0, None)
    ih = F.clip(_tmin(ay1, by1) - _tmax(ay0, by0), 0.0, None)
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    enclosing = (_tmax(ax1, bx1) - _tmin(ax0, bx0)) * (_tmax(ay1, by1) - _tmin(ay0, by0))
    return inter / (union + eps) - (enclosing - union) / (enclosing + eps)


def linear_sum_assignment(cost) -> tuple[np.ndarray, np.ndarray]:
    """The Hungarian algorithm: (rows, cols), a minimum-cost matching of min(n, m) pairs for a cost (n, m).

    Every row is matched when n <= m (every column when n > m); rows come out sorted, as SciPy's
    scipy.optimize.linear_sum_assignment returns them, so the two can be compared pair for pair."""
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"linear_sum_assignment: cost must be a matrix (n, m), got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("linear_sum_assignment: cost holds a NaN or infinite entry; every pair needs a finite cost")
    transposed = c.shape[0] > c.shape[1]
    if transposed:                                   # match the shorter side; every one of its items gets a partner
        c = c.T
    n, m = c.shape
    u = np.zeros(n + 1)                              # potentials; index 0 of each is a sentinel
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)          # owner[j]: the row (1-based) holding column j, 0 = free
    way = np.zeros(m + 1, dtype=np.int64)            # way[j]: the column before j on the cheapest path
    for i in range(1, n + 1):
        owner[0] = i                                 # the new row starts at the sentinel column 0
        j0 = 0
        dist = np.full(m + 1, np.inf)                # cheapest reduced cost found to reach each column
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            free = ~used[1:]
            reduced = c[i0 - 1] - u[i0] - v[1:]      # reduced costs from row i0 to every column
            better = free & (reduced < dist[1:])
            dist[1:][better] = reduced[better]
            way[1:][better] = j0
            j1 = 1 + int(np.argmin(np.where(free, dist[1:], np.inf)))
            delta = dist[j1]
            # raise the potentials of the rows on the tree and lower those of its columns by delta:
            # tree edges keep reduced cost 0, every other column's distance falls by delta
            u[owner[used]] += delta
            v[used] -= delta
            dist[1:][free] -= delta
            j0 = j1
            if owner[j0] == 0:                       # a free column: augment along the path
                break
        while j0:                                    # shift each column on the path to the row before it
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    cols = np.nonzero(owner[1:])[0]
    rows = owner[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows, kind="stable")
    return rows[order].astype(np.int64), cols[order].astype(np.int64)
