"""One training loop, timed in a process of its own: the way a learner's script runs.

    python -m tinyvision.bench.step_script --model small|tiny [--framework tinyvision|torch]
                                           [--kernels auto|reference] [--setting NAME] [--steps N]

Models (float32, random pixels and labels: the time of a step does not depend on them):
    small   a learner's own script: ViT on 8x8 one-channel images (the digits' size; patch 4, so
            4 patches and a class token), D 64, depth 4, 4 heads, batch 64, AdamW
    tiny    ViT-tiny's step: image 32, patch 4 (65 tokens), D 192, depth 6, 3 heads, batch 128, SGD
`--kernels` is tinyvision's kernel choice (auto = the default fast paths, reference = the plain array code).
`--setting` is one of the hand-tunings of threads a user could try:
    default       nothing set (what a script gets)
    blas1         threadpoolctl caps the BLAS at one thread around the loop
    numba1        numba.set_num_threads(1)
    blas1-numba1  both
Prints one JSON line with "ms_per_step", the median over the timed steps. steps.py runs it once per
configuration in interleaved rounds, so that no framework's thread pool spins while another is timed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time

import numpy as np

SETTINGS = ("default", "blas1", "numba1", "blas1-numba1")
MODELS = {
    "small": (dict(img_size=8, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4), 64, "adamw"),
    "tiny": (dict(img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=192, depth=6, num_heads=3), 128, "sgd"),
}


def data(cfg: dict, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    side, chans = cfg["img_size"], cfg["in_chans"]
    return rng.standard_normal((batch, chans, side, side)).astype(np.float32), rng.integers(0, 10, batch)


def tinyvision_step(model_name: str, impl: str):
    import tinyvision as tv
    import tinyvision.ops as F
    from tinyvision import kernels
    from tinyvision.models import ViT
    from tinyvision.optim import SGD, AdamW
    cfg, batch, optimizer = MODELS[model_name]
    model = ViT(**cfg, seed=0)
    opt = AdamW(model.parameters(), lr=1e-3) if optimizer == "adamw" else SGD(model.parameters(), lr=1e-3)
    x, y = data(cfg, batch)

    def step():
        with kernels.use(impl):
            loss = F.cross_entropy(model(tv.Tensor(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return step


def torch_step(model_name: str):
    import torch

    from .torch_vit import torch_vit
    torch.manual_seed(0)
    cfg, batch, optimizer = MODELS[model_name]
    model = torch_vit(cfg)
    opt = (torch.optim.AdamW if optimizer == "adamw" else torch.optim.SGD)(model.parameters(), lr=1e-3)
    x, y = (torch.from_numpy(a) for a in data(cfg, batch))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def tuned(setting: str):
    """The context a hand-tuning runs the loop in."""
    stack = contextlib.ExitStack()
    if setting in ("blas1", "blas1-numba1"):
        import threadpoolctl
        stack.enter_context(threadpoolctl.threadpool_limits(1, user_api="blas"))
    if setting in ("numba1", "blas1-numba1"):
        import numba
        numba.set_num_threads(1)
    return stack


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(MODELS), default="small")
    parser.add_argument("--framework", choices=("tinyvision", "torch"), default="tinyvision")
    parser.add_argument("--kernels", choices=("auto", "reference"), default="auto")
    parser.add_argument("--setting", choices=SETTINGS, default="default")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    step = tinyvision_step(args.model, args.kernels) if args.framework == "tinyvision" else torch_step(args.model)
    with tuned(args.setting):
        for _ in range(args.warmup):     # Numba's cache loads, buffers settle
            step()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    print(json.dumps({"model": args.model, "framework": args.framework, "kernels": args.kernels,
                      "setting": args.setting, "ms_per_step": round(1000 * float(np.median(times)), 3)}))


if __name__ == "__main__":
    main()
