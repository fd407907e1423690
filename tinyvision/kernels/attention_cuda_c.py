"""The CUDA C flash-attention kernels (csrc/flash_attention*.cu), loaded and launched with CuPy.

Each kernel file's header says what it computes, its tiles and its shared memory; this module is the
glue a learner reads to see how a hand-written kernel is called from Python:

    1. find the compiled code: the fatbin that setup.py built with nvcc (kernels/_bin/), if it was built
       from the current source; otherwise compile the source now with NVRTC (CuPy caches the result);
    2. check the launch: float32, head dim 16, 32, 64 or 128, 16-byte aligned arrays (v2 and v3 read
       float4s; a misaligned view is copied), and the block's shared memory against the device's opt-in
       limit (raising the kernel's own limit past the 48 KB default);
    3. launch: grid (tiles, BH), 256 threads (v3's forward: 128), scalars as numpy.int32 / int64 / float32
       (CuPy passes a Python int as 8 bytes and a float as a double, which would garble the parameter).

Versions (attention_cuda_c_layout.py has the table): "v1", "v2", "v3-3xtf32", "v3-tf32". forward() and
backward() take version=...; without it the switch decides: TINYVISION_CUDA_C_VERSION when set, else
choose(TINYVISION_ATTENTION_PRECISION or "float32"), i.e. the fastest version measured to be at least as
accurate as asked (with nothing measured yet, the newest of those: v2 for float32, v3-3xtf32 for 3xtf32). build="fatbin" or "nvrtc" forces where the code comes
from (the bench and the GPU tests compare the two).

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
import time
import types
from pathlib import Path

import numpy as np

from . import register
from .attention_cuda_c_layout import (HEAD_DIMS, INCLUDES, MAX_GRID_Y, MIN_COMPUTE_CAPABILITY, NVRTC_OPTIONS, SOURCES,
                                      TILE, VERSIONS, choose, entry_points, forward_threads, shared_memory_bytes)
from .attention_tiled import check_attention_shapes, softmax_scale

__all__ = ["VERSIONS", "accepts", "backward", "current_version", "forward", "kernel_origin", "why_not"]

_BIN = Path(__file__).resolve().parent / "_bin"
_REPO_CSRC = Path(__file__).resolve().parents[2] / "csrc"
BUILDS = (None, "fatbin", "nvrtc")


def _folder() -> Path:
    """Where the kernel sources are: the repository's csrc/ (an editable install) or the copies setup.py shipped."""
    return _REPO_CSRC if (_REPO_CSRC / SOURCES["v1"]).exists() else _BIN


def _digest(folder: Path, name: str) -> str:
    """sha256 of a source and the csrc/ files it includes (csrc/build.py source_digest, same rule)."""
    digest = hashlib.sha256((folder / name).read_bytes())
    for included in INCLUDES.get(name, ()):
        digest.update((folder / included).read_bytes())
    return digest.hexdigest()


# --- CuPy and a GPU, or the reason why not --------------------------------------------------------
from ..backend import cuda_unavailable_reason  # noqa: E402

if cuda_unavailable_reason() is not None:
    raise ImportError(f"the CUDA C attention kernel needs CuPy and an NVIDIA GPU: {cuda_unavailable_reason()}")
import cupy as cp  # noqa: E402

_origin: dict = {}


@functools.lru_cache(maxsize=None)
def _module(name: str, build: str | None = None):
    """The loaded module of one source file: the shipped fatbin when it matches the source (build None or
    "fatbin"), else an NVRTC compilation (build None or "nvrtc"). Records where it came from in _origin."""
    if build not in BUILDS:
        raise ValueError(f"attention_cuda_c: build must be one of {BUILDS}, got {build!r}")
    folder = _folder()
    info_path = _BIN / "BUILD.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {"reason": "no BUILD.json: setup.py did not run"}
    entry = info.get("sources", {}).get(name, {})
    why_not_binary = entry.get("reason") or info.get("reason") or f"no fatbin of {name} was built"
    t0 = time.perf_counter()
    if build == "nvrtc":
        why_not_binary = "build='nvrtc' asked for"
    elif entry.get("binary") and entry.get("sha256") != _digest(folder, name):
        why_not_binary = f"{folder / name} changed since its fatbin was built (reinstall to rebuild it)"
    elif entry.get("binary"):
        try:
            module = cp.RawModule(path=str(_BIN / entry["binary"]))
            module.get_function(_any_kernel(name))                 # forces the load: fails on a too-old driver
            _origin[(name, build)] = dict(kind="fatbin built by nvcc at install", path=str(_BIN / entry["binary"]),
                                          load_s=time.perf_counter() - t0)
            return module
        except Exception as err:  # CUDADriverError: no image for this GPU, or a driver older than the nvcc
            why_not_binary = f"the shipped fatbin does not load here ({type(err).__name__}: {err})"
    if build == "fatbin":
        raise RuntimeError(f"attention_cuda_c: no usable fatbin of {name}: {why_not_binary}")
    try:
        # CuPy caches NVRTC results by source text and options, not by the files a source includes: the
        # digest (which covers them) goes into the options, so an edited v2 file recompiles v3 too
        module = cp.RawModule(code=(folder / name).read_text(), backend="nvrtc",
                              options=NVRTC_OPTIONS + (f"--include-path={folder}", f"-DTV_SOURCE_SHA={_digest(folder, name)[:16]}"))
        module.get_function(_any_kernel(name))
    except Exception as err:
        raise RuntimeError(f"CUDA C attention kernel: {why_not_binary}; and NVRTC failed to compile {folder / name}: "
                           f"{type(err).__name__}: {err}") from err
    _origin[(name, build)] = dict(kind="compiled at run time by NVRTC", path=str(folder / name),
                                  why_not_binary=why_not_binary, load_s=time.perf_counter() - t0)
    return module


def _any_kernel(name: str) -> str:
    return {"flash_attention.cu": "flash_backward_rowsum", "flash_attention_v2.cu": "v2_backward_rowsum",
            "flash_attention_v3.cu": "v3_forward_tf32_d64"}[name]


def kernel_origin(version: str = "v1", build: str | None = None) -> dict:
    """Where a version's forward kernel comes from (the fatbin or NVRTC, and why), and the seconds it took to
    load or compile (load_s), for the bench and bug reports; for v3, whose backward is v2's, also where
    that comes from (backward_kind). Raises RuntimeError when it cannot load."""
    name = SOURCES[_checked(version)]
    _module(name, build)
    origin = dict(_origin[(name, build)], version=version)
    backward = _backward_source(version)
    if backward != name:
        _module(backward, build)
        origin.update(backward_kind=_origin[(backward, build)]["kind"], backward_path=_origin[(backward, build)]["path"])
    return origin


def _backward_source(version: str) -> str:
    return SOURCES["v1" if version == "v1" else "v2"]            # v3 has no backward of its own


def _compute_capability() -> tuple:
    return _compute_capability_on(cp.cuda.Device().id)


@functools.lru_cache(maxsize=None)
def _compute_capability_on(device_id: int) -> tuple:
    cc = cp.cuda.Device(device_id).compute_capability          # CuPy's spelling: "90" for 9.0, "86" for 8.6
    return (int(cc[:-1]), int(cc[-1]))


def current_version() -> str:
    """The version forward / backward run when not told: TINYVISION_CUDA_C_VERSION, else the switch's choice
    for TINYVISION_ATTENTION_PRECISION (default "float32")."""
    forced = os.environ.get("TINYVISION_CUDA_C_VERSION")
    if forced:
        return _checked(forced)
    return choose(os.environ.get("TINYVISION_ATTENTION_PRECISION", "float32"), _compute_capability())


def _checked(version: str) -> str:
    if version not in VERSIONS:
        raise ValueError(f"attention_cuda_c: version must be one of {VERSIONS}, got {version!r}")
    return version


def _function(source: str, build, name: str, smem: int):
    return _function_on(cp.cuda.Device().id, source, build, name, smem)


@functools.lru_cache(maxsize=None)
def _function_on(device_id: int, source: str, build, name: str, smem: int):
    """A kernel with its dynamic shared-memory limit raised to `smem` bytes (needed above 48 KB), per GPU."""
    fn = _module(source, build).get_function(name)
    if smem > 48 * 1024:
        fn.max_dynamic_shared_size_bytes = smem
    return fn


def _shared_memory_limit() -> int:
    return _shared_memory_limit_on(cp.cuda.Device().id)


@functools.lru_cache(maxsize=None)
def _shared_memory_limit_on(device_id: int) -> int:
    return int(cp.cuda.Device(device_id).attributes["MaxSharedMemoryPerBlockOptin"])


def why_not(q, k, v, version: str | None = None) -> str | None:
    """None if the kernel can run attention on these inputs, else why not (the op then uses another path)."""
    version = _checked(version or current_version())
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
    if _compute_capability() < MIN_COMPUTE_CAPABILITY[version]:
        return (f"{version} needs compute capability {MIN_COMPUTE_CAPABILITY[version]} or newer (TF32 tensor cores), "
                f"this GPU has {_compute_capability()}")
    need = max(shared_memory_bytes(kind, d, version) for kind in ("forward", "dk_dv", "dq"))
    if need > _shared_memory_limit():
        return (f"head dim {d} needs {need} bytes of shared memory per block; this GPU allows "
                f"{_shared_memory_limit()} (cudaDevAttrMaxSharedMemoryPerBlockOptin)")
    return None


def accepts(q, k, v) -> bool:
    """For the kernel switch: True when forward / backward below can take these arrays."""
    return why_not(q, k, v) is None


def _launch(source: str, build, name: str, smem: int, grid, threads: int, args):
    if smem > _shared_memory_limit():
        raise ValueError(f"{name}: needs {smem} bytes of shared memory per block, the device allows "
                         f"{_shared_memory_limit()}")
    _function(source, build, name, smem)(grid, (threads,), args, shared_mem=smem)
    if os.environ.get("TINYVISION_CUDA_SYNC") == "1":
        cp.cuda.Device().synchronize()           # surfaces a fault inside this kernel, here


def _prepare(name, q, k, v, keep, scale, version):
    bh, nq, nk, d, _ = check_attention_shapes(name, q, k, v, keep)
    if bh > MAX_GRID_Y:
        raise ValueError(f"{name}: batch x heads = {bh} exceeds the grid's y limit {MAX_GRID_Y} (one block row per head)")
    reason = why_not(q, k, v, version)
    if reason is not None:
        raise ValueError(f"{name}: {reason}")
    # no mask: an 8-byte zero, i.e. a null pointer (safer than None, which some CuPy versions
    # pack as a null *argument address* rather than a null value: cupy/cupy#9046)
    mask, stride = np.uint64(0), np.int64(0)
    if keep is not None:
        mask = cp.ascontiguousarray(cp.asarray(keep), dtype=cp.uint8)
        stride = np.int64(nq * nk if mask.ndim == 3 and mask.shape[0] == bh and bh > 1 else 0)
    tau = np.float32(softmax_scale(d, scale))
    return (bh, nq, nk, d), mask, stride, tau


def _device(*arrays):
    """float32, C-contiguous, on the GPU, and starting on a 16-byte boundary (v2 / v3 read float4s): a view
    that starts elsewhere (an offset slice of a bigger buffer) is copied."""
    out = []
    for a in arrays:
        a = cp.ascontiguousarray(cp.asarray(a), dtype=cp.float32)
        out.append(a if a.data.ptr % 16 == 0 else a.copy())
    return out


def _tiles(n: int) -> int:
    return (n + TILE - 1) // TILE


def forward(q, k, v, keep=None, causal=False, scale=None, block=None, version=None, build=None):
    """(O, L): q (BH, Nq, d), k and v (BH, Nk, d), float32; keep bool (Nq, Nk) or (1 | BH, Nq, Nk) or None.

    The tile is fixed at 64 (compiled in); `block` is accepted for the common kernel API and must be None
    or 64. `version`: one of VERSIONS, or None for current_version(); `build`: None, "fatbin" or "nvrtc".
    NumPy inputs are copied to the GPU and the results come back as NumPy arrays.
    """
    if block not in (None, TILE):
        raise ValueError(f"cuda_c.forward: the tile is compiled in as {TILE}, got block={block}")
    version = _checked(version or current_version())
    on_host = not isinstance(q, cp.ndarray)          # NumPy in, NumPy out
    (bh, nq, nk, d), mask, stride, tau = _prepare("cuda_c.forward", q, k, v, keep, scale, version)
    q, k, v = _device(q, k, v)
    o = cp.empty((bh, nq, d), cp.float32)
    lse = cp.empty((bh, nq), cp.float32)
    _launch(SOURCES[version], build, entry_points(version, d)["forward"], shared_memory_bytes("forward", d, version),
            (_tiles(nq), bh), forward_threads(version),
            (q, k, v, mask, stride, o, lse, np.int32(nq), np.int32(nk), np.int32(bool(causal)), tau))
    return (o.get(), lse.get()) if on_host else (o, lse)


def backward(q, k, v, o, lse, do, keep=None, causal=False, scale=None, block=None, version=None, build=None):
    """(dQ, dK, dV) from forward's (O, L) and dO = dL/dO; same arguments as forward. v3's backward is v2's."""
    if block not in (None, TILE):
        raise ValueError(f"cuda_c.backward: the tile is compiled in as {TILE}, got block={block}")
    version = _checked(version or current_version())
    on_host = not isinstance(q, cp.ndarray)          # NumPy in, NumPy out
    (bh, nq, nk, d), mask, stride, tau = _prepare("cuda_c.backward", q, k, v, keep, scale, version)
    for arg, t, want in (("o", o, (bh, nq, d)), ("lse", lse, (bh, nq)), ("do", do, (bh, nq, d))):
        if tuple(t.shape) != want:
            raise ValueError(f"cuda_c.backward: {arg} has shape {tuple(t.shape)}, expected {want}")
    q, k, v, o, lse, do = _device(q, k, v, o, lse, do)
    delta = cp.empty((bh, nq), cp.float32)
    dq, dk, dv = cp.empty_like(q), cp.empty_like(k), cp.empty_like(v)
    rows = bh * nq
    names = entry_points(version, d)
    source = _backward_source(version)
    _launch(source, build, names["rowsum"], 0, ((rows + 127) // 128,), 128, (o, do, delta, np.int64(rows), np.int32(d)))
    common = (q, k, v, mask, stride, do, lse, delta)
    flags = (np.int32(nq), np.int32(nk), np.int32(bool(causal)), tau)
    kind_version = "v1" if version == "v1" else "v2"
    _launch(source, build, names["dk_dv"], shared_memory_bytes("dk_dv", d, kind_version), (_tiles(nk), bh), 256,
            common + (dk, dv) + flags)
    _launch(source, build, names["dq"], shared_memory_bytes("dq", d, kind_version), (_tiles(nq), bh), 256,
            common + (dq,) + flags)
    return tuple(a.get() for a in (dq, dk, dv)) if on_host else (dq, dk, dv)


register("attention", "cuda_c", types.SimpleNamespace(forward=forward, backward=backward, accepts=accepts))
