"""How depth maps are scored (Eigen et al. 2014; the protocol of NYU / KITTI papers since).

With p the predicted and t the true depth at each pixel (both > 0), over every pixel of every picture:

    AbsRel          mean |p - t| / t
    delta < 1.25^k  the share of pixels with max(p / t, t / p) < 1.25^k  (k = 1, 2, 3: d1, d2, d3)
    RMSE            sqrt(mean (p - t)^2)
    RMSE log        sqrt(mean (log p - log t)^2)

align="median" first scales each predicted map by median(t) / median(p): the protocol for models that
know depth only up to scale (a single camera of unknown size; MiDaS-style training).
"""
from __future__ import annotations

import numpy as np

__all__ = ["depth_metrics"]


def depth_metrics(pred, target, align: str | None = None) -> dict:
    """{"abs_rel", "d1", "d2", "d3", "rmse", "rmse_log"} of pred against target, maps (B, H, W) in metres."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape or p.ndim < 2:
        raise ValueError(f"depth_metrics: pred and target must be maps (B, ...) of one shape, got {p.shape} and {t.shape}")
    if not (np.all(p > 0) and np.all(t > 0)):
        raise ValueError("depth_metrics: depths must be > 0 everywhere (ratios and logs are taken)")
    if align == "median":
        axes = tuple(range(1, p.ndim))
        p = p * (np.median(t.reshape(len(t), -1), 1) / np.median(p.reshape(len(p), -1), 1)).reshape((-1,) + (1,) * len(axes))
    elif align is not None:
        raise ValueError(f"depth_metrics: align must be None or 'median', got {align!r}")
    ratio = np.maximum(p / t, t / p)
    return {"abs_rel": float(np.mean(np.abs(p - t) / t)),
            **{f"d{k}": float(np.mean(ratio < 1.25 ** k)) for k in (1, 2, 3)},
            "rmse": float(np.sqrt(np.mean((p - t) ** 2))),
            "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(t)) ** 2)))}
