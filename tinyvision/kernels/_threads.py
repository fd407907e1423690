"""Two thread pools on one CPU, and the rule tinyvision follows by default: one pool at a time.

NumPy's matmul runs on OpenBLAS's worker threads; a Numba `parallel=True` loop runs on Numba's
own pool (`numba.get_num_threads()`, one per core unless NUMBA_NUM_THREADS says otherwise).
When a GEMM finishes, OpenBLAS does not put its workers to sleep at once: they busy-wait
("spin", yielding the core now and then) for 2^OPENBLAS_THREAD_TIMEOUT cycles (default 2^28,
about 0.1 s) in case another GEMM follows. In a training step a GEMM is nearly always followed
by an elementwise kernel, so a parallel kernel's threads wait for cores that spinning BLAS
threads hold. On a 2-core machine that costs a scheduler time slice per kernel, whatever its size.

Measured on this project's 2-core VM, a loop of the four ops below on random float32 arrays:
GEMM (R, D) @ (D, 4D), GELU, GEMM back, layer norm, median ms of 41 (Numba kernels parallel):
                                   R x D = 320 x 64    2176 x 64    2176 x 192    8320 x 192
    BLAS 2 threads                 16.0                16.0         26.4          59.5
    BLAS 1 thread                   0.39                4.5         16.8          68.4
    BLAS 2 threads, kernels on 1    0.37                4.6         15.6          43.5
The last row is the rule below: the matmuls keep every core (a large product runs 1.6x faster
on two threads than on one), and the kernels, which are 10-20% of a step, run on the calling
thread, which no spinning BLAS thread competes with. A learner's small ViT script went from
212 ms to ~20 ms per step (python -m tinyvision.bench.step_script --model small; README, "Speed").

The rule, `kernel_threads()`: around every Numba row kernel (softmax, layer norm, GELU, AdamW) the
Numba pool is cut to one thread while the BLAS may run more than one; when the BLAS runs on a
single thread (`with limit_blas_threads(1):`, or OPENBLAS_NUM_THREADS=1), the kernels get all of
Numba's threads. TINYVISION_KERNEL_THREADS=n overrides both (n threads for the kernels, always).
The tiled attention kernel is not cut: it does its own tile products instead of BLAS calls and
runs tens of milliseconds, so its threads gain far more than a time slice costs.

Other ways out, for a user's own code:
1. OPENBLAS_THREAD_TIMEOUT=4 in the environment *before NumPy is first imported*: OpenBLAS reads
   it once, when it loads, clamps it to 4..30 and spins 2^value cycles.
2. `with limit_blas_threads(1):` around a region whose GEMMs are small.
threadpoolctl (a core dependency, imported lazily) is what reads and sets the BLAS's thread count;
were it missing, limit_blas_threads() would change nothing and warn, and kernel_threads() would
assume the BLAS runs one thread per core. The rules read and set process-wide settings without a
lock: threads of one program that set BLAS limits of their own may undo each other's.
"""
from __future__ import annotations

import contextlib
import os
import warnings

__all__ = ["blas_thread_timeout", "blas_threads_for", "kernel_threads", "limit_blas_threads", "thread_report"]

_controller = None  # threadpoolctl.ThreadpoolController, built once: finding the libraries takes ms


def _threadpool_controller():
    global _controller
    if _controller is None:
        import threadpoolctl  # noqa: PLC0415 - optional dependency

        _controller = threadpoolctl.ThreadpoolController()
    return _controller


@contextlib.contextmanager
def limit_blas_threads(limit: int = 1):
    """Cap the BLAS library's threads at `limit` inside the block (threadpoolctl); restore after."""
    try:
        controller = _threadpool_controller()
    except ImportError:
        warnings.warn("limit_blas_threads: threadpoolctl is not installed, so BLAS threads are not limited; "
                      "set OPENBLAS_THREAD_TIMEOUT=4 before importing NumPy instead", stacklevel=3)
        yield
        return
    with controller.limit(limits=limit, user_api="blas"):
        yield


_blas = None             # threadpoolctl's controllers of the loaded BLAS libraries, once looked for


def _blas_libraries():
    """The BLAS libraries threadpoolctl controls, looked for once (NumPy, imported by tinyvision
    before any of this runs, has loaded its BLAS by then); () without threadpoolctl, or where it
    sees no BLAS, and then every rule here is a no-op."""
    global _blas
    if _blas is None:
        try:
            _blas = tuple(lib for lib in _threadpool_controller().lib_controllers if lib.user_api == "blas")
        except ImportError:
            _blas = ()
    return _blas


def blas_threads() -> int:
    """How many threads the BLAS may use now (threadpoolctl asks the library: ~1 us); without
    threadpoolctl, OPENBLAS_NUM_THREADS or OMP_NUM_THREADS if set, else one per core."""
    libs = _blas_libraries()
    if libs:
        return max(lib.num_threads for lib in libs)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return os.cpu_count() or 1


def kernel_thread_count() -> int:
    """Threads for a Numba row kernel under the rule above: TINYVISION_KERNEL_THREADS if set, else
    all of Numba's when the BLAS runs on one thread, else one."""
    import numba  # noqa: PLC0415

    forced = os.environ.get("TINYVISION_KERNEL_THREADS", "")
    if forced:
        if not forced.isdigit() or int(forced) < 1:
            raise ValueError(f"TINYVISION_KERNEL_THREADS must be a positive integer, got {forced!r}")
        return min(int(forced), numba.config.NUMBA_NUM_THREADS)
    return numba.get_num_threads() if blas_threads() == 1 else 1


@contextlib.contextmanager
def kernel_threads():
    """Run the block's Numba kernels on kernel_thread_count() threads; Numba's setting is restored after.
    Nested blocks find the count already set and change nothing. Without Numba, a no-op."""
    try:
        import numba  # noqa: PLC0415
    except ImportError:
        yield
        return

    saved, wanted = numba.get_num_threads(), kernel_thread_count()
    if wanted == saved:
        yield
        return
    numba.set_num_threads(wanted)
    try:
        yield
    finally:
        numba.set_num_threads(saved)


# Products with fewer multiply-adds than this run on one BLAS thread. Measured here (2 cores,
# OpenBLAS 0.3.31, float32, kernels on one thread): (R, D) @ (D, 4D) at 5M, 18M, 36M, 321M and 1.2G
# multiply-adds took 0.43 / 2.35 / 4.17 / 16.6 / 71.0 ms on one thread and 0.37 / 2.19 / 4.59 / 15.6
# / 43.5 ms on two: below ~3e8 the second thread gains little, and a woken thread then spins.
SMALL_PRODUCT = 2 ** 28


@contextlib.contextmanager
def blas_threads_for(multiply_adds: int):
    """Run the block's matrix products on one BLAS thread when each has fewer than SMALL_PRODUCT
    multiply-adds: no worker thread is woken, so none is left spinning beside the next kernel (or
    beside another program: on a busy machine a spinning pool can cost 10-30x). Larger products keep
    every thread. The BLAS's own setting is restored after; a no-op without threadpoolctl."""
    libs = _blas_libraries() if multiply_adds < SMALL_PRODUCT else ()
    saved = [lib.num_threads for lib in libs]
    if all(n == 1 for n in saved):
        yield
        return
    for lib in libs:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(libs, saved):
            lib.set_num_threads(n)


def blas_thread_timeout() -> str | None:
    """OPENBLAS_THREAD_TIMEOUT as this process sees it (None: OpenBLAS's default, 2^28 cycles)."""
    return os.environ.get("OPENBLAS_THREAD_TIMEOUT")


def thread_report() -> dict:
    """The thread settings a timing depends on, to print beside it."""
    import numba  # noqa: PLC0415

    report = {"numba_threads": numba.get_num_threads(), "kernel_threads": kernel_thread_count(),
              "openblas_thread_timeout": blas_thread_timeout()}
    try:
        report["blas_threads"] = {info["internal_api"]: info["num_threads"]
                                  for info in _threadpool_controller().info() if info["user_api"] == "blas"}
    except ImportError:
        report["blas_threads"] = "unknown (threadpoolctl not installed)"
    return report
