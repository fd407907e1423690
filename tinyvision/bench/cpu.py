"""The op rows of the bench: softmax, layer norm, GELU and attention, forward + backward, through the
op under each implementation (and PyTorch's op on the same arrays, where torch is installed); and the
peak memory of naive vs tiled attention. The protocol is in the package docstring (bench/__init__.py).
"""
from __future__ import annotations

import os
import platform
import time
import tracemalloc

import numpy as np

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import kernels

IMPLS = ("reference", "numba")          # the CPU table; the GPU rows are in gpu.py (--gpu)


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
    if impl == "reference":
        return None
    reason = kernels.why_unavailable(impl)
    if reason:
        return reason
    with kernels.use(impl):
        return None if kernels.implementation(op, "cpu") == impl else f"no {impl} kernel for {op}"


def op_cases(quick: bool):
    """(name, shape description, function of the implementation name -> forward+backward, torch's or None)."""
    rng = np.random.default_rng(0)
    rows = 8320 if not quick else 1024           # 128 images x 65 tokens of a ViT-tiny step
    x192 = rng.standard_normal((rows, 192)).astype(np.float32)
    x768 = rng.standard_normal((rows, 768)).astype(np.float32)
    w, b = np.ones(192, np.float32), np.zeros(192, np.float32)

    def fwd_bwd(make):
        def run(impl):
            with kernels.use(impl):
                out = make()
                out.backward(np.ones(out.shape, out.dtype))
        return run

    def leaf(a):
        return tv.Tensor(a, requires_grad=True)
    cases = [
        ("softmax", f"({rows}, 192)", fwd_bwd(lambda: F.softmax(leaf(x192), -1)),
         torch_op(lambda t, f: f.softmax(t(x192), -1))),
        ("layer_norm", f"({rows}, 192)", fwd_bwd(lambda: F.layer_norm(leaf(x192), leaf(w), leaf(b), 1e-6)),
         torch_op(lambda t, f: f.layer_norm(t(x192), (192,), t(w), t(b), 1e-6))),
        ("gelu", f"({rows}, 768)", fwd_bwd(lambda: F.gelu(leaf(x768))), torch_op(lambda t, f: f.gelu(t(x768)))),
    ]
    for n in ((128, 256) if quick else (256, 512, 1024)):
        q, k, v = (rng.standard_normal((12, n, 64)).astype(np.float32) for _ in range(3))
        cases.append(("attention", f"(12, {n}, 64)",
                      fwd_bwd(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(leaf(q), leaf(k), leaf(v))),
                      torch_op(lambda t, f, q=q, k=k, v=v: f.scaled_dot_product_attention(t(q), t(k), t(v)))))
    return cases


def torch_op(make):
    """PyTorch's forward + backward of the same op on the same arrays, or None without torch.
    `make(t, f)` builds the output from t (array -> leaf tensor) and f (torch.nn.functional)."""
    try:
        import torch
    except ImportError:
        return None

    def t(a):
        return torch.from_numpy(a).requires_grad_(True)

    def run():
        out = make(t, torch.nn.functional)
        out.backward(torch.ones_like(out))
    return run


def bench_ops(quick: bool, repeats: int):
    cols = IMPLS + ("torch",)
    print("\n== ops, forward + backward through autograd (float32, median ms; ratio = reference time / this time)")
    print(f"  {'op':11s} {'shape':16s} " + " ".join(f"{i:>22s}" for i in cols))
    results = {}
    for op, shape, run, torch_run in op_cases(quick):
        ready = {i: (lambda i=i: run(i)) for i in IMPLS if unavailable(i, op) is None}
        if torch_run is not None:
            ready["torch"] = torch_run
        med = interleaved(ready, repeats)
        cells = [f"{1000 * med[i]:9.2f} ({med['reference'] / med[i]:4.1f}x)".rjust(22) if i in med else "n/a".rjust(22)
                 for i in cols]
        print(f"  {op:11s} {shape:16s} " + " ".join(cells))
        results[(op, shape)] = med
    for impl in IMPLS:
        if unavailable(impl, "softmax"):
            print(f"  n/a {impl}: {unavailable(impl, 'softmax')}")
    if torch_op(None) is None:
        print("  n/a torch: PyTorch is not installed")
    return results


def bench_memory(quick: bool):
    """Peak traced NumPy memory of one attention forward+backward: naive (N x N) vs tiled (blocks)."""
    from tinyvision.kernels.attention_tiled import flash_backward, flash_forward
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
                with kernels.use("reference"):
                    ts = [tv.Tensor(a, requires_grad=True) for a in (q, k, v)]
                    o = F.scaled_dot_product_attention(*ts)
                    o.backward(np.ones(o.shape, np.float32))
            peaks.append(tracemalloc.get_traced_memory()[1] / 2 ** 20)
            tracemalloc.stop()
        out[n] = peaks
        print(f"  {n:6d} {peaks[0]:10.1f} {peaks[1]:10.1f}")
    return out
