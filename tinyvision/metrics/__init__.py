"""Evaluation that several lessons share.

    detection.py   average precision of ranked detections, mAP at an IoU threshold (PASCAL VOC / COCO style)
    depth.py       AbsRel, delta < 1.25^k, RMSE of depth maps, optionally median-aligned
"""
from .depth import depth_metrics
from .detection import average_precision, mean_average_precision

__all__ = ["average_precision", "depth_metrics", "mean_average_precision"]
