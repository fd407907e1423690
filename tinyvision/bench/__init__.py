"""python -m tinyvision.bench: every implementation of the hot ops side by side, whole training steps,
and a learner's own script, on this machine, in one run; --gpu adds the GPU rows.

    cpu.py             ops (softmax, layer norm, GELU, attention) under each implementation, vs PyTorch
    steps.py           the ViT-tiny training step and a learner's small script, each configuration in a
                       fresh process (step_script.py, python -m tinyvision.bench.step_script)
    torch_vit.py       the same ViT in PyTorch
    gpu.py             --gpu: the CUDA C attention kernels (v1, v2, v3-3xtf32, v3-tf32) vs CuPy vs numba.cuda vs
                       PyTorch SDPA, each checked against float64 at every size; N = 65,536; the ViT step on
                       CuPy vs NumPy
Nothing in tinyvision imports this package: it is a tool, kept out of the engine's import path.

Protocol (machines here are shared and noisy, so only ratios measured together mean anything):
- every implementation is checked against the reference before it is timed (tests/test_kernels_cpu.py);
- JIT compilation happens in a warm-up call outside the timing (Numba caches it on disk);
- repeats are interleaved (numpy, numba, torch, numpy, ...) so a slow moment hits all alike; whole
  steps run each configuration in its own process, so no other thread pool spins beside it;
- the tables show medians and ratios; an implementation that cannot run here shows `n/a (reason)`,
  never a number from a simulator.
The last line is `result: {...}` (JSON) for tools. Every ratio in it is a TIME ratio, this / reference,
so below 1 means faster:
    vit_step_fast_over_torch           ViT-tiny step, tinyvision's defaults (kernels "auto") / PyTorch (target <= 1.3)
    vit_step_fast_over_reference       the same step, defaults / the NumPy reference (target <= 1/1.3 = 0.77)
    gelu_numba_over_torch              GELU forward + backward on (8320, 768), through the op / torch (target <= 2)
    attention_numba_over_numpy         tiled Numba attention / dense NumPy, median over the sizes
    script_default_over_torch          the learner's script with tinyvision's defaults / PyTorch's (target <= 1.2)
    script_default_over_best_setting   ... / the best hand-tuned thread setting (target <= 1.1)
With --gpu, "gpu" holds the GPU device name and its time ratios (gpu.main), else null.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from tinyvision import kernels
from tinyvision.backend import cuda_available, cuda_unavailable_reason

from .cpu import bench_memory, bench_ops, header

__all__ = ["main", "bench_ops", "header"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per op (default 7, --quick 3)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds of the whole-step rows "
                        "(default 3, --quick 1); more rounds, steadier medians on a noisy machine")
    parser.add_argument("--gpu", action="store_true", help="also the GPU rows (gpu.py): attention kernels, "
                        "N = 65,536, the ViT step on cupy")
    parser.add_argument("--gpu-only", action="store_true", help="only the GPU rows")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    print(header())
    gpu = None
    if args.gpu or args.gpu_only:
        if cuda_available() and kernels.why_unavailable("cuda_c") is None:
            from . import gpu as bench_gpu  # noqa: PLC0415 - CuPy only here
            gpu = bench_gpu.main(args.quick, repeats)
        else:
            why = cuda_unavailable_reason() or kernels.why_unavailable("cuda_c")
            print(f"\n== GPU rows: n/a ({why})")
        if args.gpu_only:
            print("result: " + json.dumps({"quick": args.quick, "gpu": gpu}))
            _exit_on_check_failures(gpu)
            return
    from .steps import bench_learner_script, bench_vit_step  # noqa: PLC0415 - not at import: runpy runs step_script
    ops = bench_ops(args.quick, repeats)
    bench_memory(args.quick)
    step = bench_vit_step(args.quick, args.rounds)
    script = bench_learner_script(args.quick, args.rounds)
    att = [v for (op, _), v in ops.items() if op == "attention"]
    gelu = next(v for (op, _), v in ops.items() if op == "gelu")
    result = {
        "quick": args.quick,
        "gelu_numba_over_torch": round(gelu["numba"] / gelu["torch"], 3) if {"numba", "torch"} <= gelu.keys() else None,
        **script,
        **step,
        "attention_numba_over_numpy": round(float(np.median([a["numba"] / a["reference"] for a in att])), 3)
        if att and all("numba" in a for a in att) else None,
        "gpu": gpu,
    }
    print("result: " + json.dumps(result))
    _exit_on_check_failures(gpu)


def _exit_on_check_failures(gpu):
    """A kernel that failed its accuracy check was left out of the timings; the run still says so by its exit
    status (1), so that a script running the bench (benchmarks/gpu_check.sh) records the failure."""
    if gpu and gpu.get("check_failures"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
