"""The GPU rows of the bench (python -m tinyvision.bench --gpu): attention kernels and a ViT step on CuPy.

What is measured. Attention, float32, d = 64, not causal, forward and forward + backward, every
implementation on the same arrays (BH = batch x heads, N tokens):
    v1           csrc/flash_attention.cu: the CUDA C kernel on CUDA cores, one thread block per 64 query rows
    v2           csrc/flash_attention_v2.cu: v1 with float4 shared-memory loads, __syncwarp in place of
                 block barriers where a warp owns its rows, the next K / V tile prefetched
    v3-3xtf32    csrc/flash_attention_v3.cu: the forward on TF32 tensor cores (mma.sync), each float32
                 split into a TF32 high part and a TF32 remainder, three products (close to float32:
                 logits err by ~2^-21 of their size); the backward is v2's
    v3-tf32      the same with plain TF32 (10-bit mantissa, errors ~1e-3); backward v2's
    cupy naive   the dense op through tinyvision (kernels "reference"): matmul (cuBLAS), softmax,
                 matmul, with the N x N matrices in memory
    numba_cuda   the numba.cuda kernels (tinyvision/kernels/attention_numba_cuda.py), where they load
    torch SDPA   torch.nn.functional.scaled_dot_product_attention, memory-efficient backend, float32, on
                 zero-copy views of the same CuPy memory. PyTorch has no float32 flash kernel; per its
                 CUTLASS source this one runs on tensor cores in 3xTF32 mode.
The CUDA C versions are called directly (attention_cuda_c.forward / backward with version=...) on
cupy arrays, so no autograd bookkeeping is timed with them.

Checked before timed, at every size. Each implementation's O, dQ, dK and dV are compared with dense
attention computed in float64 on the GPU from the same float32 inputs, within a bound by precision
(attention_check.py has the oracle, the bounds and why). A larger error drops that implementation from
the timings and the run exits 1: a wrong kernel is never timed. Where the float64 reference does not
fit in memory, the check is skipped with the reason printed.

How it is timed.
- warm-up: about a second of back-to-back matmuls before anything else, so the GPU's clocks are up;
- the kernels are loaded first and the load (shipped fatbin) or compile (NVRTC) time is printed on
  its own, with which of the two ran; compilation never falls inside a timing;
- one sample is a pair of CUDA events around `inner` back-to-back calls, with `inner` chosen from one
  measured call so that a sample lasts >= 5 ms: at N = 197 one call takes microseconds, and event and
  synchronisation overheads would otherwise be what is measured. The launches queue ahead of the GPU;
  where Python's dispatch is slower than the kernel, the time shown is the dispatch, as a user sees it;
- the median of `repeats` samples, the implementations interleaved so that a slow moment hits all.
TFLOP/s counts 4 BH N^2 d for the forward (two N x N x d matmuls, 2 FLOPs per multiply-add) and 3.5x
that for forward + backward (two forward matmuls plus five backward ones, as flash-attn's benchmark
script counts it; v1's deterministic backward does seven, so its real work is higher). "% peak"
is of the float32 CUDA-core peak, SMs x FP32 lanes per SM x 2 x boost clock, read from the device, lanes
per SM from NVIDIA's architecture whitepapers (V100 and A100: 64; GA10x, AD10x and H100: 128): H100 SXM
132 x 128 x 2 x 1.98 GHz = 66.9 TFLOP/s. Tensor-core columns (v3, torch SDPA) may pass 100%.
"/ torch" is the TIME ratio to torch SDPA at that size: below 1 is faster.

Long sequences: N = 65,536 (BH 8, d 64) runs through each CUDA C version's forward, and 64 random
query rows of two heads are checked against dense float64 attention of those rows only (memory rows x
N, not N x N); cupy naive is tried and shown as out of memory where its N x N matrix does not fit.
ViT step: the bench's ViT-tiny on cupy against the same step on the host CPU with tinyvision's
defaults there (NumPy + the Numba kernels, kernels "auto"), same batch.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import kernels
from tinyvision.kernels.attention_cuda_c_layout import precision_of

from .attention_check import check_error, dense_float64, dense_rows_float64, tolerance
from .step_script import MODELS

__all__ = ["bench_attention", "bench_long_sequence", "bench_vit_step_gpu", "main"]

FP32_LANES_PER_SM = {(7, 0): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128}  # by compute capability
SIZES = {"quick": [(64, 197), (16, 1024)],
         "full": [(384, 197), (64, 1024), (16, 4096), (4, 8192), (8, 16384)]}     # (BH, N), d = 64
CHECK_FAILURES: list = []        # "label at size: what" for every implementation a check refused to time
BATCH_MS = 5.0                   # one timed sample lasts at least this long


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


# --- the implementations ---------------------------------------------------------------------------
def load_cuda_c_versions() -> tuple[list, dict]:
    """(the CUDA C versions that load here, version -> reason for those that do not), printing for each
    which binary it runs (the fatbin nvcc built at install, or an NVRTC compilation now) and how long the
    load took: outside every timing below."""
    from tinyvision.kernels import attention_cuda_c as cuda_c
    print("  kernels (loaded before anything is timed):")
    ok, missing = [], {}
    for version in cuda_c.VERSIONS:
        try:
            origin = cuda_c.kernel_origin(version)
        except RuntimeError as err:
            missing[version] = str(err)
            print(f"    {version:10s} n/a ({err})")
            continue
        ok.append(version)
        why = f"; not the fatbin because {origin['why_not_binary']}" if origin.get("why_not_binary") else ""
        print(f"    {version:10s} {origin['kind']}, {origin['load_s']:.2f} s ({origin['path']}{why})")
    return ok, missing


def _cuda_c_calls(version, q, k, v, do):
    """(forward, forward + backward) of one CUDA C version, called directly on the cupy arrays."""
    from tinyvision.kernels import attention_cuda_c as cuda_c

    def forward():
        return cuda_c.forward(q, k, v, version=version)[0]

    def forward_backward():
        o, lse = cuda_c.forward(q, k, v, version=version)
        return (o, *cuda_c.backward(q, k, v, o, lse, do, version=version))
    return forward, forward_backward


def _op_calls(impl, q, k, v, do):
    """(forward, forward + backward) of tinyvision's attention op under kernels.use(impl)."""
    def run(backward):
        with kernels.use(impl):
            ts = [tv.Tensor(a, requires_grad=backward) for a in (q, k, v)]
            out = F.scaled_dot_product_attention(*ts)
            if not backward:
                return out.data
            out.backward(do)
        return (out.data, *(t.grad for t in ts))
    return (lambda: run(False)), (lambda: run(True))


def _torch_calls(q, k, v, do):
    """(forward, forward + backward) of torch SDPA (memory-efficient backend) on zero-copy views."""
    import cupy as cp
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    # zero-copy views of the same CuPy memory (__cuda_array_interface__), as (1, BH, N, d); the forward
    # column gets leaves without gradients, so torch does not keep what a backward would need
    plain = [torch.as_tensor(a, device="cuda").unsqueeze(0) for a in (q, k, v)]
    leaves = [t.detach().requires_grad_(True) for t in plain]
    tdo = torch.as_tensor(do, device="cuda").unsqueeze(0)

    def forward():
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(*plain)[0]

    def forward_backward():
        for t in leaves:
            t.grad = None                      # as the other columns: fresh gradients each call
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            out = torch.nn.functional.scaled_dot_product_attention(*leaves)
        out.backward(tdo)
        return (cp.asarray(out.detach()[0]), *(cp.asarray(t.grad[0]) for t in leaves))
    return forward, forward_backward


def attention_implementations(versions, q, k, v, do) -> tuple[dict, dict]:
    """(label -> (forward, forward + backward), label -> why it cannot run here) for the arrays q, k, v, dO."""
    calls = {version: _cuda_c_calls(version, q, k, v, do) for version in versions}
    calls["cupy naive"] = _op_calls("reference", q, k, v, do)
    missing = {}
    with kernels.use("numba_cuda"):
        if kernels.implementation("attention", "cuda", (q, k, v)) == "numba_cuda":
            calls["numba_cuda"] = _op_calls("numba_cuda", q, k, v, do)
        else:
            missing["numba_cuda"] = kernels.why_unavailable("numba_cuda") or "does not take these arrays"
    try:
        calls["torch SDPA"] = _torch_calls(q, k, v, do)
    except ImportError as err:
        missing["torch SDPA"] = f"torch not importable ({err})"
    except (RuntimeError, AssertionError) as err:       # torch built without CUDA asserts
        missing["torch SDPA"] = f"torch cannot use this GPU ({type(err).__name__}: {err})"
    return calls, missing


def _out_of_memory_errors():
    import cupy as cp
    errors = [cp.cuda.memory.OutOfMemoryError]
    try:
        import torch
        errors.append(torch.cuda.OutOfMemoryError)
    except (ImportError, AttributeError):
        pass
    return tuple(errors)


def _free_memory():
    import cupy as cp
    cp.get_default_memory_pool().free_all_blocks()
    try:
        import torch
        torch.cuda.empty_cache()
    except ImportError:
        pass


def check_all(calls, q, k, v, do, where) -> dict:
    """label -> "O e, dQ e, dK e, dV e" (max abs errors against dense float64), each implementation run once;
    one that runs out of memory here is dropped from `calls`. Raises AssertionError past a bound (check_error)."""
    oom = _out_of_memory_errors()
    want = None
    try:
        want_o, want_grads = dense_float64(q, k, v, do)
        want = (want_o, *want_grads)
    except oom as err:
        print(f"    check skipped at {where}: the float64 reference does not fit ({str(err).split('.')[0]})")
    finally:
        _free_memory()            # the reference's N x N blocks, before the implementations need room
    errors = {}
    for label in list(calls):
        try:
            got = calls[label][1]()
        except oom as err:
            del calls[label]
            errors[label] = f"out of memory ({str(err).split('.')[0]})"
            continue
        finally:
            _free_memory()
        if want is None:
            errors[label] = "not checked"
            continue
        try:
            cells = [f"{name} {check_error(label, name, g, w, where)[0]:.1e}"
                     for name, g, w in zip(("O", "dQ", "dK", "dV"), got, want)]
        except AssertionError as err:        # this one is not timed; the others go on
            del calls[label]
            errors[label] = f"CHECK FAILED: {err}"
            CHECK_FAILURES.append(str(err))
            continue
        finally:
            del got
        errors[label] = ", ".join(cells) + f" (tol {tolerance(label):.0e}, gradients {tolerance(label, 'dQ'):.0e})"
    return errors


# --- timing ------------------------------------------------------------------------------------------
def warm_up(seconds: float = 1.0):
    """About `seconds` of back-to-back 4096 x 4096 float32 matmuls: the clocks ramp up before any timing."""
    import cupy as cp
    a = cp.ones((4096, 4096), cp.float32)
    c = cp.empty_like(a)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            cp.matmul(a, a, out=c)
        cp.cuda.Device().synchronize()
        calls += 10
    elapsed = time.perf_counter() - t0
    print(f"  warm-up: {elapsed:.1f} s of {calls} back-to-back 4096 x 4096 float32 matmuls "
          f"({calls * 2 * 4096 ** 3 / elapsed / 1e12:.1f} TFLOP/s)")


def gpu_timer(fns: dict, repeats: int, batch_ms: float = BATCH_MS) -> dict:
    """Median milliseconds per call of each callable: CUDA events around `inner` back-to-back calls
    (inner from one measured call, so that a sample lasts >= batch_ms), `repeats` samples, interleaved."""
    import cupy as cp
    start, end = cp.cuda.Event(), cp.cuda.Event()
    inner = {}
    for name, fn in fns.items():
        fn()                                          # warm: allocator pools, cuBLAS handles, autotuning
        start.record()
        fn()
        end.record()
        end.synchronize()
        inner[name] = max(1, math.ceil(batch_ms / max(cp.cuda.get_elapsed_time(start, end), 1e-3)))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start.record()
            for _ in range(inner[name]):
                fn()
            end.record()
            end.synchronize()
            times[name].append(cp.cuda.get_elapsed_time(start, end) / inner[name])
    return {name: float(np.median(t)) for name, t in times.items()}


def bench_attention(quick: bool, repeats: int, versions) -> dict:
    """{(backward, BH, N): {label: median ms}} over SIZES, every implementation checked at each size first."""
    import cupy as cp
    name, peak, sms = device_summary()
    print(f"\n== GPU attention, float32, d 64, not causal ({name}, {sms} SMs, float32 CUDA-core peak "
          f"{'%.1f' % peak if peak else '?'} TFLOP/s)")
    print(f"  each size: median ms per call over {repeats} samples of >= {BATCH_MS:g} ms, TFLOP/s, % of that peak, "
          f"/torch = time / torch SDPA's; then the max abs errors vs dense float64 (O, dQ, dK, dV), checked first")
    print(f"  TF32 in cupy's matmuls (cupy naive): {'on' if os.environ.get('CUPY_TF32') == '1' else 'off'} (CUPY_TF32)")
    rng = cp.random.default_rng(0)
    results = {}
    for bh, n in SIZES["quick" if quick else "full"]:
        where = f"BH {bh}, N {n}"
        q, k, v, do = (rng.standard_normal((bh, n, 64), dtype=cp.float32) for _ in range(4))
        calls, missing = attention_implementations(versions, q, k, v, do)
        t0 = time.perf_counter()
        errors = check_all(calls, q, k, v, do, where)
        check_s = time.perf_counter() - t0
        med = {backward: gpu_timer({label: c[backward] for label, c in calls.items()}, repeats)
               for backward in (False, True)}
        print(f"  {where} (checked in {check_s:.1f} s, first calls included)")
        for label in calls:
            cells = []
            for backward in (False, True):
                ms = med[backward][label]
                tflops = 4 * bh * n * n * 64 * (3.5 if backward else 1) / (ms * 1e-3) / 1e12
                torch_ms = med[backward].get("torch SDPA")
                cells.append(f"{ms:9.3f} ms {tflops:6.1f} TF/s" + (f" {100 * tflops / peak:4.0f}%" if peak else "") +
                             (f" /torch {ms / torch_ms:5.2f}" if torch_ms else ""))
            print(f"    {label:10s} fwd {cells[0]} | fwd+bwd {cells[1]} | {errors[label]}")
        for label in errors.keys() - calls.keys():
            print(f"    {label:10s} not timed: {errors[label]}")
        for label, why in missing.items():
            print(f"    {label:10s} n/a ({why})")
        for backward in (False, True):
            results[(backward, bh, n)] = med[backward]
        del q, k, v, do, calls
        _free_memory()
    return results


def bench_long_sequence(versions, n: int = 65_536, bh: int = 8, rows: int = 64) -> dict:
    """The memory target: each CUDA C version's forward at N = n (d 64, not causal), where the naive N x N
    does not fit; `rows` random query rows of two heads checked against dense float64 rows."""
    import cupy as cp
    print(f"\n== N = {n}, BH {bh}, d 64, float32 forward: one N x N float32 matrix is "
          f"{4 * bh * n * n / 2 ** 30:.0f} GiB; {rows} random query rows of heads 0 and {bh - 1} checked against dense float64 rows")
    rng = cp.random.default_rng(1)
    q, k, v = (rng.standard_normal((bh, n, 64), dtype=cp.float32) for _ in range(3))
    heads = cp.asarray([0, bh - 1])
    picked = cp.asarray(np.sort(np.random.default_rng(1).choice(n, rows, replace=False)))
    want = dense_rows_float64(q, k, v, heads, picked)
    calls = {version: _cuda_c_calls(version, q, k, v, None)[0] for version in versions}
    calls["cupy naive"] = _op_calls("reference", q, k, v, None)[0]
    start, end = cp.cuda.Event(), cp.cuda.Event()
    out = {}
    for label, forward in calls.items():
        try:
            start.record()
            o = forward()
            end.record()
            end.synchronize()
        except cp.cuda.memory.OutOfMemoryError as err:
            out[label] = f"out of memory ({str(err).split('.')[0]})"
            print(f"  {label:10s} {out[label]}")
            continue
        finally:
            _free_memory()
        s = cp.cuda.get_elapsed_time(start, end) / 1e3
        try:
            err, bound = check_error(label, "O", o[heads[:, None], picked[None, :]], want, f"N {n}, BH {bh}")
        except AssertionError as failure:
            out[label] = f"CHECK FAILED: {failure}"
            CHECK_FAILURES.append(str(failure))
            print(f"  {label:10s} {out[label]}")
            continue
        out[label] = f"{s:.3f} s"
        print(f"  {label:10s} {s:8.3f} s {4 * bh * n * n * 64 / s / 1e12:6.1f} TF/s | "
              f"max abs error on {len(heads) * rows} rows {err:.1e} (bound {bound:.0e})")
        del o
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


def _ratio(times: dict, a: str, b: str):
    return round(times[a] / times[b], 3) if a in times and b in times else None


def main(quick: bool, repeats: int) -> dict:
    """Run every GPU section; returns the headline TIME ratios (this / that) for the bench's result line."""
    from tinyvision.kernels import attention_cuda_c as cuda_c
    print("\n== GPU")
    versions, _ = load_cuda_c_versions()
    warm_up()
    att = bench_attention(quick, repeats, versions)
    long = bench_long_sequence(versions, 8192 if quick else 65_536, 8)
    print("\n== a whole ViT training step (image 32, patch 4, D 192, depth 6, 3 heads, SGD, float32): cupy vs the CPU "
          "(NumPy + Numba kernels)")
    vit = bench_vit_step_gpu(quick, repeats)
    big = max(n for (_, _, n) in att)
    fwd, fwd_bwd = (next(t for (b, _, n), t in att.items() if b == backward and n == big) for backward in (False, True))
    # "cuda_c": the fastest version at the largest N that is float32 or 3xTF32 accurate (v3-tf32 trades accuracy)
    accurate = [v for v in versions if v in fwd and precision_of(v) != "tf32"]
    best = min(accurate, key=fwd.get) if accurate else None
    result = {
        "gpu": device_summary()[0],
        "attention_kernel_origin": {v: "fatbin" if cuda_c.kernel_origin(v)["kind"].startswith("fatbin") else "nvrtc"
                                    for v in versions},
        "attention_cuda_c_version": best,
        f"attention_fwd_N{big}_cuda_c_over_cupy_naive": _ratio(fwd, best, "cupy naive") if best else None,
        f"attention_fwd_N{big}_cuda_c_over_torch_sdpa": _ratio(fwd, best, "torch SDPA") if best else None,
    }
    for v in versions:
        result[f"attention_fwd_N{big}_{v}_over_torch_sdpa"] = _ratio(fwd, v, "torch SDPA")
        result[f"attention_fwd_bwd_N{big}_{v}_over_torch_sdpa"] = _ratio(fwd_bwd, v, "torch SDPA")
    # the figure attention_cuda_c_layout.MEASURED_SPEEDUP records (it steers the switch): torch SDPA's forward
    # time / the version's, median over the sizes with N >= 1024
    speedup = {v: [t["torch SDPA"] / t[v] for (b, _, n), t in att.items() if not b and n >= 1024 and
                   {v, "torch SDPA"} <= t.keys()] for v in versions}
    result["attention_fwd_speedup_over_torch_sdpa_n1024_up"] = {
        v: round(float(np.median(r)), 3) if r else None for v, r in speedup.items()}
    result["long_sequence"] = long
    result["check_failures"] = list(CHECK_FAILURES)
    if CHECK_FAILURES:
        print("\n== CHECK FAILURES (these were not timed):\n  " + "\n  ".join(CHECK_FAILURES))
    result["vit_step_cupy_over_cpu_b128"] = round(1 / vit[128]["ratio"], 4) if vit.get(128, {}).get("ratio") else None
    return result
