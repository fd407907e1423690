"""The GPU rows of the bench (python -m tinyvision.bench --gpu): attention kernels and a ViT step on CuPy.

Attention, float32, d = 64, forward and forward + backward, side by side in one run:
    cuda_c       the hand-written kernel, csrc/flash_attention.cu
    cupy naive   the dense op on cupy arrays: matmul (cuBLAS), softmax, matmul; N x N in memory
    numba_cuda   the numba.cuda kernels (tinyvision/kernels/attention_numba_cuda.py)
    torch SDPA   torch.nn.functional.scaled_dot_product_attention, memory-efficient backend, float32
                 (PyTorch has no float32 flash kernel; per its CUTLASS source this one runs on tensor
                 cores in 3xTF32 mode, so a CUDA-core kernel competes with tensor cores here)
TFLOP/s counts 4 B H N^2 d for the forward (two N x N x d matmuls, 2 FLOPs per multiply-add) and
3.5x that for forward + backward (two forward matmuls plus five backward ones, as flash-attn's
benchmark script counts it; the deterministic backward here does seven, so its real work is higher).
The float32 CUDA-core peak is SMs x FP32 lanes per SM x 2 x boost clock, read from the device; lanes
per SM from NVIDIA's architecture whitepapers (V100 and A100: 64; GA10x, AD10x and H100: 128).
H100 SXM: 132 x 128 x 2 x 1.98 GHz = 66.9 TFLOP/s.

Timing: CUDA events around each call, the implementations interleaved, median of the repeats, after
a warm-up call that also compiles (NVRTC, Numba) and is reported separately. Every implementation is
checked against cupy naive on the first size before it is timed.
ViT step: the bench's ViT-tiny on cupy against the same step on the host CPU with tinyvision's
defaults there (NumPy + the Numba kernels, kernels "auto"), same batch.
"""
from __future__ import annotations

import time

import numpy as np

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import kernels

from .step_script import MODELS

FP32_LANES_PER_SM = {(7, 0): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128}  # by compute capability


def device_summary():
    """(name, fp32 peak TFLOP/s or None, SM count) of the current GPU."""
    import cupy as cp
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    attrs = dev.attributes          # (CUDA 13 dropped clockRate from cudaDeviceProp; the attribute stays)
    sms, clock_khz = attrs["MultiProcessorCount"], attrs["ClockRate"]
    lanes = FP32_LANES_PER_SM.get((attrs["ComputeCapabilityMajor"], attrs["ComputeCapabilityMinor"]))
    peak = sms * lanes * 2 * clock_khz * 1e3 / 1e12 if lanes else None
    return name, peak, sms


def gpu_timer(fns: dict, repeats: int) -> dict:
    """Median milliseconds of each callable (CUDA events, interleaved), after one warm-up call each."""
    import cupy as cp
    compile_s = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        cp.cuda.Device().synchronize()
        compile_s[name] = time.perf_counter() - t0
    times = {k: [] for k in fns}
    start, end = cp.cuda.Event(), cp.cuda.Event()
    for _ in range(repeats):
        for name, fn in fns.items():
            start.record()
            fn()
            end.record()
            end.synchronize()
            times[name].append(cp.cuda.get_elapsed_time(start, end))
    return {k: float(np.median(v)) for k, v in times.items()}, compile_s


def _attention_fns(q, k, v, do, backward: bool):
    """name -> callable running one attention (and its backward) on the device arrays q, k, v of (BH, N, d)."""
    fns = {}

    def op_with(impl):
        def run():
            with kernels.use(impl):
                ts = [tv.Tensor(a, requires_grad=backward) for a in (q, k, v)]
                out = F.scaled_dot_product_attention(*ts)
                if backward:
                    out.backward(do)
            return out
        return run
    for impl, label in (("cuda_c", "cuda_c"), ("reference", "cupy naive"), ("numba_cuda", "numba_cuda")):
        if impl == "reference" or _runs(impl, q, k, v):
            fns[label] = op_with(impl)
    try:
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return fns
    # zero-copy views of the same CuPy memory (__cuda_array_interface__), as (1, BH, N, d) leaves
    tq, tk, tv_ = (torch.as_tensor(a, device="cuda").unsqueeze(0).detach().requires_grad_(backward) for a in (q, k, v))
    tdo = torch.as_tensor(do, device="cuda").unsqueeze(0)

    def sdpa():
        tq.grad = tk.grad = tv_.grad = None       # as the other columns: fresh gradients each call
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv_)
            if backward:
                out.backward(tdo)
    fns["torch SDPA"] = sdpa
    return fns


def _runs(impl, q, k, v):
    """Does `impl` take this attention when asked for (loaded here, and accepting these arrays)?"""
    with kernels.use(impl):
        return kernels.implementation("attention", "cuda", (q, k, v)) == impl


def bench_attention(quick: bool, repeats: int) -> dict:
    import cupy as cp
    name, peak, sms = device_summary()
    print(f"\n== GPU attention, float32, d 64 ({name}, {sms} SMs, float32 CUDA-core peak "
          f"{'%.1f' % peak if peak else '?'} TFLOP/s); median ms, TFLOP/s, % of that peak")
    sizes = [(64, 197), (16, 1024)] if quick else [(384, 197), (64, 1024), (16, 4096), (4, 8192)]
    rng = cp.random.default_rng(0)
    results = {}
    for backward in (False, True):
        print(f"  {'forward + backward' if backward else 'forward'}:")
        for bh, n in sizes:
            q, k, v, do = (rng.standard_normal((bh, n, 64), dtype=cp.float32) for _ in range(4))
            fns = _attention_fns(q, k, v, do, backward)
            if (bh, n) == sizes[0]:
                _check_equal(fns, q, k, v)
            med, compile_s = gpu_timer(fns, repeats)
            flops = 4 * bh * n * n * 64 * (3.5 if backward else 1)
            cells = []
            for label, ms in med.items():
                tflops = flops / (ms * 1e-3) / 1e12
                cells.append(f"{label} {ms:8.3f} ms {tflops:6.1f} TF/s" + (f" {100 * tflops / peak:4.0f}%" if peak else ""))
            print(f"    BH {bh:4d} N {n:5d}: " + " | ".join(cells))
            results[(backward, bh, n)] = med
        print("    first call (compile + run), s: " + ", ".join(f"{k} {v:.2f}" for k, v in compile_s.items()))
    return results


def _check_equal(fns, q, k, v):
    """Each implementation's forward equals cupy naive (float32 tolerance) before anything is timed."""
    import cupy as cp
    with kernels.use("reference"):
        want = F.scaled_dot_product_attention(tv.Tensor(q), tv.Tensor(k), tv.Tensor(v)).data
    for label in fns:
        if label in ("cupy naive", "torch SDPA"):
            continue
        with kernels.use(label):
            got = F.scaled_dot_product_attention(tv.Tensor(q), tv.Tensor(k), tv.Tensor(v)).data
        err = float(cp.abs(got - want).max())
        if err > 1e-4:
            raise AssertionError(f"{label} differs from cupy naive attention by {err:.3g}: not timing a wrong kernel")


def bench_long_sequence(n: int = 65_536, bh: int = 16) -> dict:
    """The memory target: cuda_c runs N = 65,536 (BH 16, d 64, causal=False) where the naive N x N does not fit."""
    import cupy as cp
    print(f"\n== N = {n}, BH {bh}, d 64, float32 forward: naive needs {4 * bh * n * n / 2 ** 30:.0f} GiB per N x N buffer")
    rng = cp.random.default_rng(1)
    q, k, v = (rng.standard_normal((bh, n, 64), dtype=cp.float32) for _ in range(3))
    out = {}
    for label, impl in (("cuda_c", "cuda_c"), ("cupy naive", "reference")):
        try:
            with kernels.use(impl):
                t0 = time.perf_counter()
                F.scaled_dot_product_attention(tv.Tensor(q), tv.Tensor(k), tv.Tensor(v))
                cp.cuda.Device().synchronize()
            out[label] = f"{time.perf_counter() - t0:.2f} s"
        except cp.cuda.memory.OutOfMemoryError as err:
            out[label] = f"out of memory ({str(err).split('.')[0]})"
        cp.get_default_memory_pool().free_all_blocks()
        print(f"  {label:11s} {out[label]}")
    return out


def bench_vit_step_gpu(quick: bool, repeats: int) -> dict:
    """The bench's ViT-tiny training step on cupy vs the same step on the host (kernels "auto")."""
    import cupy as cp
    from tinyvision.models import ViT
    from tinyvision.optim import SGD
    cfg = MODELS["tiny"][0]
    out = {}
    for batch in ((16, 128) if quick else (8, 32, 128, 512)):
        rng = np.random.default_rng(2)
        x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        med = {}
        for device in ("cuda", "cpu"):
            if device == "cpu" and batch > 128:
                continue
            with tv.use_device(device):
                model = ViT(**cfg, seed=0)
                opt = SGD(model.parameters(), lr=1e-3)
                xd = tv.Tensor(x)

                def step():
                    loss = F.cross_entropy(model(xd), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if device == "cuda":
                        cp.cuda.Device().synchronize()
                step()
                times = []
                for _ in range(repeats if device == "cuda" else max(2, repeats // 3)):
                    t0 = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - t0)
            med[device] = float(np.median(times))
        ratio = med["cpu"] / med["cuda"] if "cpu" in med else None
        print(f"  batch {batch:4d}: cupy {1000 * med['cuda']:8.2f} ms" +
              (f"   cpu {1000 * med['cpu']:8.1f} ms   cpu / cupy = {ratio:6.1f}x" if ratio else ""))
        out[batch] = dict(med, ratio=ratio)
    return out


def main(quick: bool, repeats: int) -> dict:
    """Run every GPU section; returns the headline time ratios for the bench's result line."""
    att = bench_attention(quick, repeats)
    long = bench_long_sequence(8192 if quick else 65_536, 16)
    print("\n== a whole ViT training step (image 32, patch 4, D 192, depth 6, 3 heads, SGD, float32): cupy vs the CPU "
          "(NumPy + Numba kernels)")
    vit = bench_vit_step_gpu(quick, repeats)
    big = max(n for (_, _, n) in att)
    fwd = next(v for (b, _, n), v in att.items() if not b and n == big)
    return {
        "gpu": device_summary()[0],
        f"attention_fwd_N{big}_cuda_c_over_cupy_naive": round(fwd["cuda_c"] / fwd["cupy naive"], 3) if "cuda_c" in fwd else None,
        f"attention_fwd_N{big}_cuda_c_over_torch_sdpa": round(fwd["cuda_c"] / fwd["torch SDPA"], 3)
        if {"cuda_c", "torch SDPA"} <= fwd.keys() else None,
        "long_sequence": long,
        "vit_step_cupy_over_cpu_b128": round(1 / vit[128]["ratio"], 4) if vit.get(128, {}).get("ratio") else None,
    }
