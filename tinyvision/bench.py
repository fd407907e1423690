"""python -m tinyvision.bench: the same ops as plain NumPy and as Numba kernels, timed side by side in one
run; with --gpu also the GPU rows (bench_gpu.py: the CUDA C attention kernel vs CuPy naive vs numba.cuda
vs PyTorch SDPA, N = 65,536, and the ViT step on cupy vs numpy).

Protocol (machines here are shared and noisy, so only ratios measured together mean anything):
- every implementation is checked against the NumPy reference before it is timed;
- JIT compilation happens in a warm-up call outside the timing (Numba caches it on disk);
- repeats are interleaved (numpy, numba, numpy, numba, ...) so a slow moment hits all alike;
- the table shows medians and the ratio to NumPy; an implementation that cannot run here shows
  `n/a (reason)`, never a number from a simulator.
The last line is `result: {...}` (JSON) for tools. Its three numbers are TIME ratios, Numba's time over
the other's, so below 1 means Numba is faster: vit_step_numba_over_torch (target <= 1.5),
vit_step_numba_over_numpy (target <= 1/1.3 = 0.77), attention_numba_over_numpy (median over the sizes;
target <= 0.5). With --gpu, "gpu" holds the GPU device name and time ratios (bench_gpu.main), else null.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tracemalloc

import numpy as np

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import kernels
from tinyvision.backend import cuda_available, cuda_unavailable_reason

IMPLS = ("numpy", "numba")          # the CPU table; the GPU rows are in bench_gpu.py (--gpu)


def header() -> str:
    lines = [f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, {platform.platform()}"]
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("numba", "torch", "cupy"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = "not installed"
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    threads = []
    try:
        import numba
        threads.append(f"numba {numba.get_num_threads()}")
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info
        threads += [f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info()]
    except ImportError:
        pass
    lines.append("threads: " + (", ".join(threads) or "unknown"))
    return "\n".join(lines)


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable, run in turn `repeats` times after one warm-up call each."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def unavailable(impl: str, op: str) -> str | None:
    """Why `impl` cannot run `op` on the CPU arrays of this bench (None when it can)."""
    if impl == "numpy":
        return None
    reason = kernels.why_unavailable(impl)
    if reason:
        return reason
    with kernels.use(impl):
        return None if kernels.implementation(op, "cpu") == impl else f"no {impl} kernel for {op}"


def op_cases(quick: bool):
    """(name, shape description, function of the implementation name -> forward+backward)."""
    rng = np.random.default_rng(0)
    rows = 8320 if not quick else 1024           # 128 images x 65 tokens of a ViT-tiny step
    x192 = rng.standard_normal((rows, 192)).astype(np.float32)
    x768 = rng.standard_normal((rows, 768)).astype(np.float32)
    w, b = np.ones(192, np.float32), np.zeros(192, np.float32)

    def fwd_bwd(make):
        def run(impl):
            with kernels.use(impl):
                inputs, out = make()
                out.backward(np.ones(out.shape, out.dtype))
        return run

    def leaf(a):
        return tv.Tensor(a, requires_grad=True)
    cases = [
        ("softmax", f"({rows}, 192)", fwd_bwd(lambda: (None, F.softmax(leaf(x192), -1)))),
        ("layer_norm", f"({rows}, 192)", fwd_bwd(lambda: (None, F.layer_norm(leaf(x192), leaf(w), leaf(b), 1e-6)))),
        ("gelu", f"({rows}, 768)", fwd_bwd(lambda: (None, F.gelu(leaf(x768))))),
    ]
    for n in ((128, 256) if quick else (256, 512, 1024)):
        q, k, v = (rng.standard_normal((12, n, 64)).astype(np.float32) for _ in range(3))
        cases.append(("attention", f"(12, {n}, 64)",
                      fwd_bwd(lambda q=q, k=k, v=v: (None, F.scaled_dot_product_attention(leaf(q), leaf(k), leaf(v))))))
    return cases


def bench_ops(quick: bool, repeats: int):
    print("\n== ops, forward + backward (float32, median ms; ratio = numpy time / this time)")
    print(f"  {'op':11s} {'shape':16s} " + " ".join(f"{i:>22s}" for i in IMPLS))
    results = {}
    for op, shape, run in op_cases(quick):
        ready = {i: (lambda i=i: run(i)) for i in IMPLS if unavailable(i, "attention" if op == "attention" else op) is None}
        med = interleaved(ready, repeats)
        cells = []
        for impl in IMPLS:
            if impl in med:
                cells.append(f"{1000 * med[impl]:9.2f} ({med['numpy'] / med[impl]:4.1f}x)".rjust(22))
            else:
                cells.append("n/a".rjust(22))
        print(f"  {op:11s} {shape:16s} " + " ".join(cells))
        results[(op, shape)] = med
    notes = {i: unavailable(i, "softmax") for i in IMPLS if unavailable(i, "softmax")}
    for impl, why in notes.items():
        print(f"  n/a {impl}: {why}")
    return results


def bench_memory(quick: bool):
    """Peak traced NumPy memory of one attention forward+backward: naive (N x N) vs tiled (blocks)."""
    from tinyvision.kernels.flash_reference import flash_backward, flash_forward
    print("\n== attention peak memory (one head, d 64, float32; tracemalloc peak of NumPy allocations)")
    print(f"  {'N':>6s} {'naive MiB':>10s} {'tiled MiB':>10s}")
    rng = np.random.default_rng(1)
    out = {}
    for n in ((256, 512) if quick else (256, 512, 1024, 2048)):
        q, k, v = (rng.standard_normal((1, n, 64)).astype(np.float32) for _ in range(3))
        peaks = []
        for tiled in (False, True):
            tracemalloc.start()
            if tiled:
                o, lse = flash_forward(q, k, v, block_q=64, block_k=64)
                flash_backward(q, k, v, o, lse, np.ones_like(o), block_q=64, block_k=64)
            else:
                with kernels.use("numpy"):
                    ts = [tv.Tensor(a, requires_grad=True) for a in (q, k, v)]
                    o = F.scaled_dot_product_attention(*ts)
                    o.backward(np.ones(o.shape, np.float32))
            peaks.append(tracemalloc.get_traced_memory()[1] / 2 ** 20)
            tracemalloc.stop()
        out[n] = peaks
        print(f"  {n:6d} {peaks[0]:10.1f} {peaks[1]:10.1f}")
    return out


def torch_vit(cfg):
    """The same ViT in PyTorch (timm's block structure), for the CPU comparison; None without torch."""
    try:
        import torch
        from torch import nn as tnn
    except ImportError:
        return None

    class Block(tnn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.norm1, self.norm2 = tnn.LayerNorm(d, eps=1e-6), tnn.LayerNorm(d, eps=1e-6)
            self.qkv, self.proj, self.h = tnn.Linear(d, 3 * d), tnn.Linear(d, d), h
            self.fc1, self.fc2 = tnn.Linear(d, 4 * d), tnn.Linear(4 * d, d)

        def forward(self, x):
            b, n, d = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
            return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))

    class ViT(tnn.Module):
        def __init__(self):
            super().__init__()
            d, p = cfg["embed_dim"], cfg["patch_size"]
            n = (cfg["img_size"] // p) ** 2
            self.patch = tnn.Conv2d(cfg["in_chans"], d, p, stride=p)
            self.cls = tnn.Parameter(torch.zeros(1, 1, d))
            self.pos = tnn.Parameter(torch.zeros(1, n + 1, d))
            self.blocks = tnn.Sequential(*[Block(d, cfg["num_heads"]) for _ in range(cfg["depth"])])
            self.norm, self.head = tnn.LayerNorm(d, eps=1e-6), tnn.Linear(d, cfg["num_classes"])

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(len(x), -1, -1), t], 1) + self.pos
            return self.head(self.norm(self.blocks(t))[:, 0])
    return ViT()


def bench_vit_step(quick: bool, repeats: int):
    from tinyvision.models import ViT
    from tinyvision.optim import SGD
    cfg = dict(img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=192, depth=6, num_heads=3)
    batch = 16 if quick else 128
    print(f"\n== a whole ViT training step: image 32, patch 4 (65 tokens), D 192, depth 6, 3 heads, batch {batch}, "
          "SGD, float32 (median s)")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    model = ViT(**cfg, seed=0)
    opt = SGD(model.parameters(), lr=1e-3)

    def step(impl):
        with kernels.use(impl):
            loss = F.cross_entropy(model(tv.Tensor(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    fns = {impl: (lambda impl=impl: step(impl)) for impl in ("numpy", "numba") if unavailable(impl, "layer_norm") is None}
    tmodel = torch_vit(cfg)
    if tmodel is not None:
        import torch
        topt = torch.optim.SGD(tmodel.parameters(), lr=1e-3)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def torch_step():
            loss = torch.nn.functional.cross_entropy(tmodel(tx), ty)
            topt.zero_grad()
            loss.backward()
            topt.step()
        fns["torch"] = torch_step
    med = interleaved(fns, repeats)
    for name, t in med.items():
        print(f"  {name:6s} {t:7.3f} s   numpy / this = {med['numpy'] / t:4.2f}x" +
              (f"   this / torch = {t / med['torch']:4.2f}x" if "torch" in med else ""))
    if "torch" not in med:
        print("  torch: n/a (PyTorch is not installed)")
    return med


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (seconds)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--gpu", action="store_true", help="also the GPU rows (bench_gpu.py): attention kernels, "
                        "N = 65,536, the ViT step on cupy")
    parser.add_argument("--gpu-only", action="store_true", help="only the GPU rows")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    print(header())
    gpu = None
    if args.gpu or args.gpu_only:
        if cuda_available() and kernels.why_unavailable("cuda_c") is None:
            from tinyvision import bench_gpu  # noqa: PLC0415
            gpu = bench_gpu.main(args.quick, repeats)
        else:
            why = cuda_unavailable_reason() or kernels.why_unavailable("cuda_c")
            print(f"\n== GPU rows: n/a ({why})")
        if args.gpu_only:
            print("result: " + json.dumps({"quick": args.quick, "gpu": gpu}))
            return
    ops = bench_ops(args.quick, repeats)
    bench_memory(args.quick)
    step = bench_vit_step(args.quick, 2 if args.quick else 5)
    att = [v for (op, _), v in ops.items() if op == "attention"]
    result = {
        "quick": args.quick,
        "vit_step_numba_over_torch": round(step["numba"] / step["torch"], 3) if {"numba", "torch"} <= step.keys() else None,
        "vit_step_numba_over_numpy": round(step["numba"] / step["numpy"], 3) if "numba" in step else None,
        "attention_numba_over_numpy": round(float(np.median([a["numba"] / a["numpy"] for a in att])), 3)
        if att and all("numba" in a for a in att) else None,
        "gpu": gpu,
    }
    print("result: " + json.dumps(result))


if __name__ == "__main__":
    main()
