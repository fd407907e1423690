"""Optimizers (SGD, Adam, AdamW), gradient clipping, weight-decay groups and the lr schedule.

    opt = AdamW(param_groups_no_decay(model, weight_decay=0.05), lr=1e-3)
    scheduler = WarmupCosine(opt, total_steps=1000, warmup_steps=100)
    ...
    loss.backward(); clip_grad_norm(model.parameters(), 1.0); scheduler.step(); opt.step(); opt.zero_grad()
"""
from .optimizers import SGD, Adam, AdamW, Optimizer, clip_grad_norm, param_groups_no_decay
from .schedule import WarmupCosine, warmup_cosine

__all__ = ["Adam", "AdamW", "Optimizer", "SGD", "WarmupCosine", "clip_grad_norm", "param_groups_no_decay",
           "warmup_cosine"]
