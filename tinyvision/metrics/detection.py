"""Mean average precision: how detectors are scored (PASCAL VOC, Everingham et al. 2010; COCO).

For one class, rank every predicted box of that class over all pictures by its score. Walking down the
ranking, a prediction is a true positive when it overlaps a true object of its class in its picture,
not yet claimed by a higher-scored prediction, with IoU >= the threshold (the best-overlapping such
object: COCO's rule; VOC's code takes the best object overall and calls the prediction a duplicate if
that one is claimed); otherwise it is a false positive (a miss, or a duplicate). After k predictions

    precision_k = TP_k / k,        recall_k = TP_k / (number of true objects of the class)

AP is the area under the precision-recall curve with precision made monotone (each point takes the
best precision at any higher recall), summed over the recall steps ("all points", VOC 2010 on):

    AP = sum_k (recall_k - recall_{k-1}) * max_{j >= k} precision_j

mAP is the mean of AP over the classes that have at least one true object. COCO's headline AP averages
this over IoU thresholds 0.50 .. 0.95 and samples recall at 101 points; mAP@0.5 is VOC's threshold.
"""
from __future__ import annotations

import numpy as np

from ..models.boxes import box_cxcywh_to_xyxy, box_iou

__all__ = ["average_precision", "mean_average_precision"]


def average_precision(true_positive, n_true: int) -> float:
    """AP of a ranked list: true_positive (k,) booleans in decreasing score order; n_true objects to find."""
    tp = np.asarray(true_positive, dtype=bool).reshape(-1)
    if n_true < 1:
        raise ValueError(f"average_precision: n_true must be >= 1 (a class with no true object has no AP), got {n_true}")
    if tp.sum() > n_true:
        raise ValueError(f"average_precision: {int(tp.sum())} true positives for {n_true} true objects; each object "
                         f"can be found once")
    if not len(tp):
        return 0.0
    hits = np.cumsum(tp)
    precision = hits / np.arange(1, len(tp) + 1)
    recall = hits / n_true
    best_after = np.maximum.accumulate(precision[::-1])[::-1]       # monotone: best precision at recall >= this
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * best_after))


def mean_average_precision(predictions, targets, num_classes: int, iou_threshold: float = 0.5) -> tuple[float, dict]:
    """(mAP, AP per class) of predictions against targets, boxes as (cx, cy, w, h).

    predictions: per picture (labels (p,), scores (p,), boxes (p, 4)); targets: per picture (labels (n,),
    boxes (n, 4)). Classes with no true object in any picture are left out of the mean."""
    if len(predictions) != len(targets):
        raise ValueError(f"mean_average_precision: {len(predictions)} pictures of predictions for {len(targets)} of "
                         f"targets; expected one of each per picture")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"mean_average_precision: iou_threshold must be in (0, 1], got {iou_threshold}")
    ap = {}
    for c in range(num_classes):
        ranked, n_true, claimed, overlaps = [], 0, [], []
        for i, ((pl, ps, pb), (tl, tb)) in enumerate(zip(predictions, targets)):
            pl, ps = np.asarray(pl).reshape(-1), np.asarray(ps, dtype=np.float64).reshape(-1)
            pb, tb = np.asarray(pb, dtype=np.float64).reshape(-1, 4), np.asarray(tb, dtype=np.float64).reshape(-1, 4)
            if not len(pl) == len(ps) == len(pb) or len(np.asarray(tl).reshape(-1)) != len(tb):
                raise ValueError(f"mean_average_precision: picture {i} has {len(pl)} predicted labels, {len(ps)} scores, "
                                 f"{len(pb)} boxes and {len(np.asarray(tl).reshape(-1))} true labels for {len(tb)} boxes; "
                                 f"expected one of each per prediction and per object")
            truth = np.asarray(tl).reshape(-1) == c
            n_true += int(truth.sum())
            mine = np.nonzero(pl == c)[0]
            iou = (box_iou(box_cxcywh_to_xyxy(pb[mine]), box_cxcywh_to_xyxy(tb[truth]))
                   if len(mine) and truth.any() else np.zeros((len(mine), int(truth.sum()))))
            overlaps.append(iou)
            claimed.append(np.zeros(int(truth.sum()), dtype=bool))
            ranked += [(-ps[k], i, row) for row, k in enumerate(mine)]
        if n_true == 0:
            continue
        tp = []
        for _, i, row in sorted(ranked, key=lambda r: r[0]):          # highest score first; stable on ties
            iou = np.where(claimed[i], -1.0, overlaps[i][row])
            j = int(np.argmax(iou)) if len(iou) else -1
            hit = j >= 0 and iou[j] >= iou_threshold
            if hit:
                claimed[i][j] = True
            tp.append(hit)
        ap[c] = average_precision(tp, n_true)
    return (float(np.mean(list(ap.values()))) if ap else float("nan")), ap
