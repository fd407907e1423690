"""Fast implementations of the hot ops, and the one switch that picks between them.

The plain array code in tinyvision/ops is the reference and the oracle: NumPy on the CPU, the same
lines on CuPy for a cuda tensor. Every kernel here computes the same thing faster and is tested equal
to it. One table, every implementation, which ops it provides and in which file (files are named
<what>_<implementation>.py):

    implementation  device  softmax  layer_norm  gelu  adamw  attention   files
    "reference"     both    yes      yes         yes   yes    yes         tinyvision/ops, tinyvision/optim
    "numba"         cpu     yes      yes         yes   yes    yes         rows_numba.py, adamw_numba.py,
                                                                          attention_numba.py (+ math_numba.py)
    "numba_cuda"    cuda    yes      yes         -     -      yes         rows_numba_cuda.py,
                                                                          attention_numba_cuda.py (+ device_numba_cuda.py)
    "cuda_c"        cuda    -        -           -     -      yes         attention_cuda_c.py loading
                                                                          csrc/flash_attention*.cu (v1, v2, v3)
("numpy" is accepted as the old name of "reference".)

Reading order, the way llm.c's kernel files go version by version (attention is the long road):
    1. ops/attention.py          the dense op: S = tau Q K^T, P = softmax(S), O = P V, and its backward
    2. attention_tiled.py        the same math in tiles (FlashAttention), plain NumPy, no N x N array
    3. attention_numba.py        those tiles as compiled CPU loops, parallel over work items
    4. attention_numba_cuda.py   the tiles on a GPU in numba.cuda: one thread per row, shared memory
    5. csrc/flash_attention.cu   hand-written CUDA C, v1 (attention_cuda_c.py loads and launches it)
    6. csrc/flash_attention_v2.cu   v2: float4 shared memory, __syncwarp, prefetch
    7. mma_layout.py, then csrc/flash_attention_v3.cu   tensor cores: who holds what in mma.m16n8k8, and
                                 v3, the forward on TF32 tensor cores (plain and 3xTF32)
The cuda_c versions and the rule that picks one (the fastest measured that is as accurate as asked,
TINYVISION_ATTENTION_PRECISION = float32 | 3xtf32 | tf32; TINYVISION_CUDA_C_VERSION forces one) are in
attention_cuda_c_layout.py.
For the row ops: ops/reduce.py softmax, ops/layers.py layer_norm, ops/elementwise.py gelu, then
rows_numba.py (and math_numba.py, how exp and erf are written so that loops vectorise), then
rows_numba_cuda.py. _threads.py: how the Numba kernels share the cores with the BLAS.

Which one runs is decided in one visible place: the environment variable TINYVISION_KERNELS
(reference | numba | numba_cuda | cuda_c | auto; default auto = the fastest measured for the op and the
array's device, see _AUTO_OVERRIDES), or the context manager

    with tinyvision.kernels.use("reference"):
        ...

An op asks `implementation(op_name, device)`, which returns the chosen implementation's name if it
provides that op for that device, or "reference" otherwise (a missing kernel is never an error). An
implementation only serves arrays of its own device (a CPU kernel never sees a CuPy array), and a
kernel that handles only some inputs (cuda_c: float32, head dims 16/32/64/128) says so with
`accepts(*arrays)`; the op passes its arrays and falls back when the answer is no.
"""
from __future__ import annotations

import contextlib
import importlib
import os

__all__ = ["CHOICES", "KernelDeclined", "active", "implementation", "kernel", "register", "use", "why_unavailable"]

CHOICES = ("auto", "reference", "numba", "numba_cuda", "cuda_c")
_ALIASES = {"numpy": "reference"}    # the old name: "reference" also means CuPy code on a GPU
_PREFERENCE = {"cpu": ("numba", "reference"), "cuda": ("cuda_c", "reference")}
_DEVICE = {"numba": "cpu", "numba_cuda": "cuda", "cuda_c": "cuda"}    # whose arrays each one takes
# "auto" means the fastest measured (python -m tinyvision.bench), per op. On the CPU the tiled Numba
# attention needs ~10x less memory but 2.2-2.9x the time of the dense NumPy composite (bench, N 256-1024), whose matmuls run
# in BLAS; so auto keeps NumPy there, and the tiled kernel is one kernels.use("numba") away.
# On the GPU nothing has been timed yet (no GPU was available): auto takes the CUDA C attention where
# it applies and otherwise the CuPy code (cuBLAS matmuls, CuPy's elementwise kernels), which is known
# to work; the numba.cuda kernels, checked only in the simulator so far, run when chosen explicitly.
_AUTO_OVERRIDES = {("attention", "cpu"): ("reference",)}

_REGISTRY: dict = {}      # (op name, implementation) -> object with the kernel's functions
_choice = None            # set by use(); None means "read TINYVISION_KERNELS"


class KernelDeclined(Exception):
    """Raised by a kernel that finds, while running, inputs outside the range it computes exactly
    (e.g. layer norm rows whose deviations overflow the dtype). The op catches it and runs the
    reference instead: a fast path may decline, never return a different answer."""


def register(op: str, impl: str, kernel) -> None:
    """Called by the kernel modules at import: `kernel` provides `op` for implementation `impl`."""
    _REGISTRY[(op, impl)] = kernel


def _check(choice: str) -> str:
    choice = _ALIASES.get(choice, choice)
    if choice not in CHOICES:
        raise ValueError(f"kernels: choose one of {CHOICES}, got {choice!r} (TINYVISION_KERNELS or kernels.use)")
    return choice


def active() -> str:
    """The current choice: what use() set, else TINYVISION_KERNELS, else "auto"."""
    return _choice if _choice is not None else _check(os.environ.get("TINYVISION_KERNELS", "auto"))


@contextlib.contextmanager
def use(choice: str):
    """Run the block with one implementation (or "auto"); restores the previous choice after."""
    global _choice
    previous, _choice = _choice, _check(choice)
    try:
        yield
    finally:
        _choice = previous


_MODULES = {"numba": ("tinyvision.kernels.rows_numba", "tinyvision.kernels.gelu_numba", "tinyvision.kernels.adamw_numba",
                      "tinyvision.kernels.attention_numba"),
            "numba_cuda": ("tinyvision.kernels.attention_numba_cuda", "tinyvision.kernels.rows_numba_cuda"),
            "cuda_c": ("tinyvision.kernels.attention_cuda_c",)}
_load_errors: dict = {}


def _load(impl: str) -> bool:
    """Import an implementation's module once (it registers its kernels); False if it cannot load."""
    if impl == "reference":
        return True
    if impl in _load_errors:
        return _load_errors[impl] is None
    try:
        for module in _MODULES[impl]:
            importlib.import_module(module)
        _load_errors[impl] = None
    except Exception as err:  # ImportError, or numba.cuda finding no GPU
        _load_errors[impl] = f"{type(err).__name__}: {err}"
    return _load_errors[impl] is None


def why_unavailable(impl: str) -> str | None:
    """None when `impl` loads here, else the reason (for skip messages and the bench's n/a cells)."""
    return None if _load(impl) else _load_errors[impl]


def implementation(op: str, device: str, arrays=()) -> str:
    """The implementation that runs `op` on `device` ("cpu" or "cuda") under the current choice.

    `arrays`, when given, are the op's inputs: a kernel with an `accepts` method is skipped when it
    cannot take them (the next candidate, in the end the NumPy / CuPy code, runs instead).
    """
    choice = active()
    if choice == "auto":
        candidates = _AUTO_OVERRIDES.get((op, device), _PREFERENCE[device])
    else:
        candidates = (choice, "reference")
    for impl in candidates:
        if impl == "reference":
            return impl
        if _DEVICE[impl] != device or not _load(impl) or (op, impl) not in _REGISTRY:
            continue
        accepts = getattr(_REGISTRY[(op, impl)], "accepts", None)
        if arrays and accepts is not None and not accepts(*arrays):
            continue
        return impl
    return "reference"


def kernel(op: str, impl: str):
    """The registered kernel object for (op, impl); a clear error, with the reason, if there is none."""
    if (op, impl) not in _REGISTRY:
        why = (why_unavailable(impl) if impl in _MODULES else "it is the plain code in tinyvision/ops, not a kernel"
               if impl == "reference" else f"unknown implementation (choose from {CHOICES})")
        raise RuntimeError(f"kernels: no {impl!r} kernel for {op!r} here" + (f": {why}" if why else ""))
    return _REGISTRY[(op, impl)]

