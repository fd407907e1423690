"""What Python must know of the CUDA C kernels in csrc/ to launch them: versions, tiles, threads, shared memory.

Kept apart from attention_cuda_c.py (which needs CuPy and a GPU to import) so that all of this can be read
and tested anywhere: tests/test_flash_cuda_c.py runs every version's source on a host emulation with
exactly these shared-memory sizes, and AddressSanitizer stops any access past them.

The versions, side by side as in llm.c's dev/cuda (each file's header says what changed and why):

    version     file                    forward                       backward   precision
    v1          flash_attention.cu      CUDA cores, scalar loads      v1         float32
    v2          flash_attention_v2.cu   CUDA cores, float4, prefetch  v2         float32
    v3-3xtf32   flash_attention_v3.cu   tensor cores, 3xTF32          v2         3xtf32 (as PyTorch's float32 attention
                                                                                 on tensor cores: O as float32, the
                                                                                 gradients carry a ~2^-21 logit error)
    v3-tf32     flash_attention_v3.cu   tensor cores, TF32            v2         tf32 (~1e-3 on O)

`choose(precision)` is the switch: among the versions at least as accurate as `precision` asks (float32 >
3xtf32 > tf32) it takes the fastest measured on a GPU (MEASURED_SPEEDUP); with nothing measured it takes the
newest, the one designed to be fastest. So the default, float32, runs v2 until a GPU says otherwise;
TINYVISION_ATTENTION_PRECISION=3xtf32 allows v3-3xtf32, PyTorch's own choice for float32 on tensor cores.
"""
from __future__ import annotations

__all__ = ["HEAD_DIMS", "INCLUDES", "MAX_GRID_Y", "MEASURED_SPEEDUP", "MIN_COMPUTE_CAPABILITY", "NVRTC_OPTIONS", "PRECISIONS", "SOURCES", "THREADS", "TILE", "VERSIONS",
           "choose", "entry_points", "forward_threads", "precision_of", "shared_memory_bytes"]

HEAD_DIMS = (16, 32, 64, 128)  # one compiled kernel per head dim (the *_KERNELS macros in the .cu files)
TILE = 64                      # query / key rows per tile, every version
THREADS = 256                  # threads per block of the v1 / v2 kernels (v3's forward: 128, forward_threads)
MAX_GRID_Y = 65535             # the grid's y axis holds BH
NVRTC_OPTIONS = ("-std=c++17",)  # + --include-path=<the sources' folder>; csrc/build.py has the same (tested)

VERSIONS = ("v1", "v2", "v3-3xtf32", "v3-tf32")
INCLUDES = {"flash_attention_v3.cu": ("flash_attention_v2.cu",)}   # csrc/ files a source #includes
# v1 / v2 use nothing newer than warp shuffles (any GPU CuPy runs on); v3's TF32 mma.sync needs sm_80
MIN_COMPUTE_CAPABILITY = {"v1": (0, 0), "v2": (0, 0), "v3-3xtf32": (8, 0), "v3-tf32": (8, 0)}
SOURCES = {"v1": "flash_attention.cu", "v2": "flash_attention_v2.cu", "v3-3xtf32": "flash_attention_v3.cu",
           "v3-tf32": "flash_attention_v3.cu"}
# the accuracy class of each version, most accurate first: "float32" (float32 arithmetic throughout), "3xtf32"
# (split TF32: O as accurate as float32, gradients with 3xTF32's logit error; PyTorch's float32 attention on an
# A100 / H100 is this), "tf32" (plain TF32 inputs, ~1e-3 relative on O)
_PRECISION = {"v1": "float32", "v2": "float32", "v3-3xtf32": "3xtf32", "v3-tf32": "tf32"}
PRECISIONS = ("float32", "3xtf32", "tf32")
# torch SDPA's forward time / the version's, d = 64, N >= 1024: the bench's result key
# "attention_fwd_speedup_over_torch_sdpa_n1024_up" (python -m tinyvision.bench --gpu-only). Figures from one
# GPU model steer the switch on every GPU. Empty: no GPU has run them yet (README.md "GPU figures").
MEASURED_SPEEDUP: dict = {}


def choose(precision: str = "float32", compute_capability: tuple = (9, 0)) -> str:
    """The version the switch runs for `precision` (one of PRECISIONS: "float32", float32 arithmetic throughout;
    "3xtf32", split-TF32 tensor cores allowed; "tf32", plain TF32 allowed) on a GPU of that compute capability
    (v3's tensor-core instructions need 8.0, an A100 or newer)."""
    if precision not in PRECISIONS:
        raise ValueError(f"attention_cuda_c.choose: precision must be one of {PRECISIONS}, got {precision!r}")
    allowed = [v for v in VERSIONS if PRECISIONS.index(_PRECISION[v]) <= PRECISIONS.index(precision)
               and tuple(compute_capability) >= MIN_COMPUTE_CAPABILITY[v]]
    measured = [v for v in allowed if v in MEASURED_SPEEDUP]
    if measured:
        return max(measured, key=MEASURED_SPEEDUP.get)
    # nothing measured: the last of the allowed in the table's order (v2, v3-3xtf32, v3-tf32)
    return allowed[-1]


def precision_of(version: str) -> str:
    _check(version)
    return _PRECISION[version]


def _check(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"attention_cuda_c: version must be one of {VERSIONS}, got {version!r}")


def forward_threads(version: str) -> int:
    """Threads per block of the forward kernel: 256 (a 16 x 16 grid) for v1 / v2, 128 (4 warps) for v3."""
    _check(version)
    return 128 if version.startswith("v3") else THREADS


def entry_points(version: str, d: int) -> dict:
    """The kernel names of one version and head dim: forward, dk_dv, dq, rowsum (v3's backward is v2's)."""
    _check(version)
    if version == "v1":
        return dict(forward=f"flash_forward_d{d}", dk_dv=f"flash_backward_dk_dv_d{d}", dq=f"flash_backward_dq_d{d}",
                    rowsum="flash_backward_rowsum")
    forward = f"v2_forward_d{d}" if version == "v2" else f"v3_forward_{version[3:]}_d{d}"
    return dict(forward=forward, dk_dv=f"v2_backward_dk_dv_d{d}", dq=f"v2_backward_dq_d{d}", rowsum="v2_backward_rowsum")


def shared_memory_bytes(kernel: str, d: int, version: str = "v1") -> int:
    """Dynamic shared memory of one block of `kernel` ("forward", "dk_dv" or "dq") for head dim d.

    v1 pads rows of Q, K, V, dO to d + 1 floats and P / dS rows to TILE + 1 (against bank conflicts);
    v2 and v3 pad to d + 4 and TILE + 4, so that every row starts on a 16-byte boundary for float4.
    v3's forward keeps P in registers: Q, K and V tiles only.
    """
    _check(version)
    if kernel not in ("forward", "dk_dv", "dq"):
        raise ValueError(f"shared_memory_bytes: kernel must be forward, dk_dv or dq, got {kernel!r}")
    pad = 1 if version == "v1" else 4
    ld, ldp, t = d + pad, TILE + pad, TILE
    if kernel == "forward" and version.startswith("v3"):
        return 4 * 3 * t * ld
    floats = {"forward": 3 * t * ld + t * ldp,                  # Q, K, V tiles and P
              "dk_dv": 4 * t * ld + t * ldp + 2 * t,           # K, V, Q, dO tiles, P / dS, L and D
              "dq": 4 * t * ld + t * ldp}[kernel]              # Q, dO, K, V tiles and dS
    return 4 * floats
