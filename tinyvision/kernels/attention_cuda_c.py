"""The CUDA C flash-attention kernel (csrc/flash_attention.cu), loaded and launched with CuPy.

The kernel file's header says what it computes, its tiles and its shared memory; this module is the
glue a learner reads to see how a hand-written kernel is called from Python:

    1. find the compiled code: the fatbin that setup.py built with nvcc (kernels/_bin/), if it was built
       from the current source; otherwise compile the source now with NVRTC (CuPy caches the result);
    2. check the launch: float32, head dim 16, 32, 64 or 128, and the block's shared memory against the
       device's opt-in limit (raising the kernel's own limit past the 48 KB default);
    3. launch: grid (tiles, BH), 256 threads, scalars as numpy.int32 / int64 / float32 (CuPy passes a
       Python int as 8 bytes and a float as a double, which would garble an int / float parameter).

Errors. A launch that the driver refuses (too much shared memory, a bad grid) raises at once (CuPy
checks cuLaunchKernel's result). A fault inside a running kernel surfaces at the next synchronisation;
with TINYVISION_CUDA_SYNC=1 every launch here synchronises, so such an error names its kernel.

Importing this module raises ImportError with the reason when CuPy or a GPU is missing; the kernel
switch records it, and tinyvision.kernels.why_unavailable("cuda_c") returns it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import types
from pathlib import Path

import numpy as np

from . import register
from .attention_cuda_c_layout import HEAD_DIMS, MAX_GRID_Y, THREADS, TILE, shared_memory_bytes
from .attention_tiled import check_attention_shapes, softmax_scale

__all__ = ["accepts", "backward", "forward", "kernel_origin", "why_not"]

_BIN = Path(__file__).resolve().parent / "_bin"
_REPO_SOURCE = Path(__file__).resolve().parents[2] / "csrc" / "flash_attention.cu"


def _source() -> Path:
    """The kernel source: the repository's csrc/ (an editable install) or the copy setup.py shipped."""
    return _REPO_SOURCE if _REPO_SOURCE.exists() else _BIN / "flash_attention.cu"


# --- CuPy and a GPU, or the reason why not --------------------------------------------------------
from ..backend import cuda_unavailable_reason  # noqa: E402

if cuda_unavailable_reason() is not None:
    raise ImportError(f"the CUDA C attention kernel needs CuPy and an NVIDIA GPU: {cuda_unavailable_reason()}")
import cupy as cp  # noqa: E402

_origin = {}


@functools.lru_cache(maxsize=None)
def _module():
    """The loaded module: the shipped fatbin when it matches the source, else an NVRTC compilation."""
    source = _source()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    info_path = _BIN / "BUILD.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {"reason": "no BUILD.json: setup.py did not run"}
    why_not_binary = info.get("reason")
    if info.get("binary") and info.get("source_sha256") != digest:
        why_not_binary = f"{source} changed since the fatbin was built (reinstall to rebuild it)"
    elif info.get("binary"):
        try:
            module = cp.RawModule(path=str(_BIN / info["binary"]))
            module.get_function("flash_backward_rowsum")          # forces the load: fails on a too-old driver
            _origin.update(kind="fatbin built by nvcc at install", path=str(_BIN / info["binary"]))
            return module
        except Exception as err:  # CUDADriverError: no image for this GPU, or a driver older than the nvcc
            why_not_binary = f"the shipped fatbin does not load here ({type(err).__name__}: {err})"
    try:
        module = cp.RawModule(code=source.read_text(), options=("-std=c++17",), backend="nvrtc")
        module.get_function("flash_backward_rowsum")
    except Exception as err:
        raise RuntimeError(f"CUDA C attention kernel: {why_not_binary}; and NVRTC failed to compile {source}: "
                           f"{type(err).__name__}: {err}") from err
    _origin.update(kind="compiled at run time by NVRTC", path=str(source), why_not_binary=why_not_binary)
    return module


def kernel_origin() -> dict:
    """Where the running kernel came from (the fatbin or NVRTC, and why), for the bench and bug reports."""
    _module()
    return dict(_origin)


def _function(name: str, smem: int):
    return _function_on(cp.cuda.Device().id, name, smem)


@functools.lru_cache(maxsize=None)
def _function_on(device_id: int, name: str, smem: int):
    """A kernel with its dynamic shared-memory limit raised to `smem` bytes (needed above 48 KB), per GPU."""
    fn = _module().get_function(name)
    if smem > 48 * 1024:
        fn.max_dynamic_shared_size_bytes = smem
    return fn


def _shared_memory_limit() -> int:
    return _shared_memory_limit_on(cp.cuda.Device().id)


@functools.lru_cache(maxsize=None)
def _shared_memory_limit_on(device_id: int) -> int:
    return int(cp.cuda.Device(device_id).attributes["MaxSharedMemoryPerBlockOptin"])


def why_not(q, k, v) -> str | None:
    """None if the kernel can run attention on these inputs, else why not (the op then uses another path)."""
    if q.dtype != np.float32 or k.dtype != np.float32 or v.dtype != np.float32:
        return f"the kernel is float32 only, got {q.dtype}, {k.dtype}, {v.dtype}"
    d, dv = q.shape[-1], v.shape[-1]
    if d != dv or d not in HEAD_DIMS:
        return f"the kernel is compiled for head dims {HEAD_DIMS} with d == dv, got d = {d}, dv = {dv}"
    try:
        bh = int(np.prod(np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])))
    except ValueError:
        return f"the batch axes of q {q.shape}, k {k.shape} and v {v.shape} do not broadcast"
    if bh > MAX_GRID_Y:
        return f"batch x heads = {bh} exceeds the grid's y limit {MAX_GRID_Y} (one block row per head)"
    need = max(shared_memory_bytes(kind, d) for kind in ("forward", "dk_dv", "dq"))
    if need > _shared_memory_limit():
        return (f"head dim {d} needs {need} bytes of shared memory per block; this GPU allows "
                f"{_shared_memory_limit()} (cudaDevAttrMaxSharedMemoryPerBlockOptin)")
    return None


def accepts(q, k, v) -> bool:
    """For the kernel switch: True when forward / backward below can take these arrays."""
    return why_not(q, k, v) is None


def _launch(name: str, kind: str, d: int, grid, args):
    smem = shared_memory_bytes(kind, d) if kind else 0
    if smem > _shared_memory_limit():
        raise ValueError(f"{name}: needs {smem} bytes of shared memory per block, the device allows "
                         f"{_shared_memory_limit()}")
    _function(name, smem)(grid, (THREADS if kind else 128,), args, shared_mem=smem)
    if os.environ.get("TINYVISION_CUDA_SYNC") == "1":
        cp.cuda.Device().synchronize()           # surfaces a fault inside this kernel, here


def _prepare(name, q, k, v, keep, scale):
    bh, nq, nk, d, _ = check_attention_shapes(name, q, k, v, keep)
    reason = why_not(q, k, v)
    if reason is not None:
        raise ValueError(f"{name}: {reason}")
    if bh > MAX_GRID_Y:
        raise ValueError(f"{name}: batch x heads = {bh} exceeds the grid's y limit {MAX_GRID_Y}")
    # no mask: an 8-byte zero, i.e. a null pointer (safer than None, which some CuPy versions
    # pack as a null *argument address* rather than a null value: cupy/cupy#9046)
    mask, stride = np.uint64(0), np.int64(0)
    if keep is not None:
        mask = cp.ascontiguousarray(cp.asarray(keep), dtype=cp.uint8)
        stride = np.int64(nq * nk if mask.ndim == 3 and mask.shape[0] == bh and bh > 1 else 0)
    tau = np.float32(softmax_scale(d, scale))
    return (bh, nq, nk, d), mask, stride, tau


def _device(*arrays):
    return [cp.ascontiguousarray(cp.asarray(a), dtype=cp.float32) for a in arrays]


def _tiles(n: int) -> int:
    return (n + TILE - 1) // TILE


def forward(q, k, v, keep=None, causal=False, scale=None, block=None):
    """(O, L): q (BH, Nq, d), k and v (BH, Nk, d), float32; keep bool (Nq, Nk) or (1 | BH, Nq, Nk) or None.

    The tile is fixed at 64 (compiled in); `block` is accepted for the common kernel API and must be None
    or 64. NumPy inputs are copied to the GPU and the results come back as NumPy arrays.
    """
    if block not in (None, TILE):
        raise ValueError(f"cuda_c.forward: the tile is compiled in as {TILE}, got block={block}")
    on_host = isinstance(q, np.ndarray)
    (bh, nq, nk, d), mask, stride, tau = _prepare("cuda_c.forward", q, k, v, keep, scale)
    q, k, v = _device(q, k, v)
    o = cp.empty((bh, nq, d), cp.float32)
    lse = cp.empty((bh, nq), cp.float32)
    _launch(f"flash_forward_d{d}", "forward", d, (_tiles(nq), bh),
            (q, k, v, mask, stride, o, lse, np.int32(nq), np.int32(nk), np.int32(bool(causal)), tau))
    return (o.get(), lse.get()) if on_host else (o, lse)


def backward(q, k, v, o, lse, do, keep=None, causal=False, scale=None, block=None):
    """(dQ, dK, dV) from forward's (O, L) and dO = dL/dO; same arguments as forward."""
    if block not in (None, TILE):
        raise ValueError(f"cuda_c.backward: the tile is compiled in as {TILE}, got block={block}")
    on_host = isinstance(q, np.ndarray)
    (bh, nq, nk, d), mask, stride, tau = _prepare("cuda_c.backward", q, k, v, keep, scale)
    for arg, t, want in (("o", o, (bh, nq, d)), ("lse", lse, (bh, nq)), ("do", do, (bh, nq, d))):
        if tuple(t.shape) != want:
            raise ValueError(f"cuda_c.backward: {arg} has shape {tuple(t.shape)}, expected {want}")
    q, k, v, o, lse, do = _device(q, k, v, o, lse, do)
    delta = cp.empty((bh, nq), cp.float32)
    dq, dk, dv = cp.empty_like(q), cp.empty_like(k), cp.empty_like(v)
    rows = bh * nq
    _launch("flash_backward_rowsum", None, d, ((rows + 127) // 128,), (o, do, delta, np.int64(rows), np.int32(d)))
    common = (q, k, v, mask, stride, do, lse, delta)
    flags = (np.int32(nq), np.int32(nk), np.int32(bool(causal)), tau)
    _launch(f"flash_backward_dk_dv_d{d}", "dk_dv", d, (_tiles(nk), bh), common + (dk, dv) + flags)
    _launch(f"flash_backward_dq_d{d}", "dq", d, (_tiles(nq), bh), common + (dq,) + flags)
    return tuple(a.get() for a in (dq, dk, dv)) if on_host else (dq, dk, dv)


register("attention", "cuda_c", types.SimpleNamespace(forward=forward, backward=backward, accepts=accepts))
