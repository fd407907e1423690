"""Whole training steps, timed: the ViT-tiny step (NumPy reference vs the default fast paths vs PyTorch)
and a learner's small script under each thread setting. Every configuration runs step_script.py in a
fresh process, in interleaved rounds, so each starts as a script does and no other framework's thread
pool is spinning beside it. Ratios are TIME ratios, this / reference: below 1 means faster.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from . import step_script


def torch_installed() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run_configs(model: str, configs: list, rounds: int, steps: int, warmup: int) -> dict:
    """{config: median ms per step}, each config a (framework, kernels, setting) run in its own process."""
    times = {c: [] for c in configs}
    for _ in range(rounds):
        for framework, impl, setting in configs:
            cmd = [sys.executable, "-m", "tinyvision.bench.step_script", "--model", model, "--framework", framework,
                   "--kernels", impl, "--setting", setting, "--steps", str(steps), "--warmup", str(warmup)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{proc.stderr[-2000:]}")
            times[(framework, impl, setting)].append(json.loads(proc.stdout.strip().splitlines()[-1])["ms_per_step"])
    return {c: float(np.median(t)) for c, t in times.items()}


def bench_vit_step(quick: bool, rounds: int | None = None) -> dict:
    rounds, steps = (rounds or 1, 2) if quick else (rounds or 3, 3)
    print(f"\n== ViT-tiny training step (step_script.py --model tiny): image 32, patch 4 (65 tokens), D 192, depth 6, "
          f"3 heads, batch 128, SGD, float32; {rounds} round(s) of {steps} steps (median s)")
    configs = [("tinyvision", "reference", "default"), ("tinyvision", "auto", "default")]
    configs += [("torch", "auto", "default")] if torch_installed() else []
    med = run_configs("tiny", configs, rounds, steps, warmup=1)
    ref, fast, torch_ms = med[configs[0]], med[configs[1]], med.get(("torch", "auto", "default"))
    names = {configs[0]: "tinyvision, reference", configs[1]: "tinyvision, default (auto)",
             ("torch", "auto", "default"): "torch"}
    for c, ms in med.items():
        print(f"  {names[c]:30s} {ms / 1000:7.3f} s   this / reference = {ms / ref:4.2f}" +
              (f"   this / torch = {ms / torch_ms:4.2f}" if torch_ms else ""))
    if not torch_ms:
        print("  torch: n/a (PyTorch is not installed)")
    return {"vit_step_fast_over_reference": round(fast / ref, 3),
            "vit_step_fast_over_torch": round(fast / torch_ms, 3) if torch_ms else None}


def bench_learner_script(quick: bool, rounds: int | None = None) -> dict:
    rounds, steps = (rounds or 1, 15) if quick else (rounds or 3, 40)
    print(f"\n== a learner's own script (step_script.py --model small): ViT on 8x8 images, D 64, depth 4, batch 64, "
          f"AdamW; {rounds} round(s) of {steps} steps (median ms per step)")
    configs = [("tinyvision", "auto", s) for s in step_script.SETTINGS]
    configs += [("torch", "auto", "default")] if torch_installed() else []
    med = run_configs("small", configs, rounds, steps, warmup=5)
    default = med[("tinyvision", "auto", "default")]
    best = min(step_script.SETTINGS, key=lambda s: med[("tinyvision", "auto", s)])
    best_ms = med[("tinyvision", "auto", best)]
    torch_ms = med.get(("torch", "auto", "default"))
    for (framework, _, setting), ms in med.items():
        print(f"  {framework:10s} {setting:13s} {ms:8.2f} ms" + (f"   this / torch = {ms / torch_ms:5.2f}" if torch_ms else ""))
    if not torch_ms:
        print("  torch: n/a (PyTorch is not installed)")
    print(f"  best hand-tuned setting: {best}; tinyvision's defaults / best = {default / best_ms:.2f}")
    return {"script_default_over_best_setting": round(default / best_ms, 3),
            "script_default_over_torch": round(default / torch_ms, 3) if torch_ms else None}
