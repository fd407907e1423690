"""Learning-rate schedule: linear warm-up, then cosine decay (Loshchilov & Hutter 2017; Goyal et al. 2017).

With step s = 0, 1, 2, ..., W warm-up steps, S total steps:

    s < W:        lr(s) = base_lr (s + 1) / W
    W <= s < S:   lr(s) = min_lr + (base_lr - min_lr) (1 + cos(pi (s - W) / (S - W))) / 2
    s >= S:       lr(s) = min_lr

Why warm up: at the start Adam's second moment v is estimated from a handful of gradients and
the weights are random, so full-size steps can throw a transformer into a region it never
leaves. Ramping the lr from near 0 avoids that. The ramp uses (s + 1) so that step 0 already
moves (an lr of exactly 0 would waste a step) and step W - 1 reaches base_lr.

Why cosine (SGDR, Loshchilov & Hutter 2017, eq. 5, one cycle without restarts): it stays near
base_lr for long, then lands smoothly at min_lr; it has no step-decay milestones to tune.
"""
from __future__ import annotations

import math

from ..checks import check_int, check_number

__all__ = ["WarmupCosine", "warmup_cosine"]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """The learning rate at `step` (0-based): linear warm-up, then cosine decay; formula above."""
    where = "warmup_cosine"
    step = check_int(where, "step", step, low=0)
    total_steps = check_int(where, "total_steps", total_steps, low=1)
    warmup_steps = check_int(where, "warmup_steps", warmup_steps, low=0)
    if warmup_steps > total_steps:
        raise ValueError(f"{where}: warmup_steps ({warmup_steps}) must be <= total_steps ({total_steps})")
    base_lr = check_number(where, "base_lr", base_lr, low=0.0)
    min_lr = check_number(where, "min_lr", min_lr, low=0.0)
    if min_lr > base_lr:
        raise ValueError(f"{where}: min_lr ({min_lr}) must be <= base_lr ({base_lr})")

    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1 over the decay
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets every parameter group's lr from `warmup_cosine`, one call per training step.

        scheduler = WarmupCosine(optimizer, total_steps=1000, warmup_steps=100)
        for step in range(1000):
            lr = scheduler.step()       # sets the lr of this step, then
            ...; optimizer.step()       # the update uses it

    Each group's base_lr is its lr when the scheduler is built, so build the scheduler before
    loading a checkpoint (whose saved lr is already a scheduled one). To resume, set
    `scheduler.step_count` to the number of steps already taken.
    """

    def __init__(self, optimizer, total_steps: int, warmup_steps: int, min_lr: float = 0.0):
        where = "WarmupCosine"
        if not isinstance(getattr(optimizer, "param_groups", None), list):
            raise TypeError(f"{where}: optimizer must be an optimizer with param_groups (SGD, Adam, AdamW), "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.total_steps = check_int(where, "total_steps", total_steps, low=1)
        self.warmup_steps = check_int(where, "warmup_steps", warmup_steps, low=0)
        if self.warmup_steps > self.total_steps:
            raise ValueError(f"{where}: warmup_steps ({warmup_steps}) must be <= total_steps ({total_steps})")
        self.min_lr = check_number(where, "min_lr", min_lr, low=0.0)
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        for i, base_lr in enumerate(self.base_lrs):
            if self.min_lr > base_lr:
                raise ValueError(f"{where}: min_lr ({self.min_lr}) is above the lr of param_groups[{i}] ({base_lr})")
        self.step_count = 0  # steps scheduled so far = the index of the next step

    def step(self) -> float:
        """Set the lr of step `step_count` in every group, advance, and return group 0's lr."""
        lrs = [warmup_cosine(self.step_count, self.total_steps, self.warmup_steps, base_lr, self.min_lr)
               for base_lr in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self.step_count += 1
        return lrs[0]
