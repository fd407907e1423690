"""Two thread pools on one CPU: why a Numba kernel right after a matmul can run slow.

NumPy's matmul runs on OpenBLAS's worker threads; a Numba `parallel=True` loop runs on Numba's
own pool (`numba.get_num_threads()`, one per core unless NUMBA_NUM_THREADS says otherwise).
When a GEMM finishes, OpenBLAS does not put its workers to sleep at once: they busy-wait
("spin") for 2^OPENBLAS_THREAD_TIMEOUT cycles (default 2^28, about 0.1 s) in case another GEMM
follows. In a training step a GEMM is nearly always followed by an elementwise kernel, so on a
small machine the Numba threads share the cores with spinning OpenBLAS threads. Measured on this
project's 2-core VM, (8320, 192) @ (192, 768) then GELU on the result (8320, 768), float32:

                                        GEMM       GELU, right after GEMMs   GEMM, then GELU
    default                             12.6 ms    7.5-8.0 ms                32-33 ms
    OPENBLAS_THREAD_TIMEOUT=4           12.6 ms    3.5 ms                    27-28 ms
    inside limit_blas_threads(1)        24.3 ms    3.5 ms                    33-35 ms
(GEMM then GELU stays above the ~16 ms the two take apart even with the timeout; the rest of
that gap was not tracked down. Medians of 15, two runs each; the VM is noisy.)

Three ways out:
1. OPENBLAS_THREAD_TIMEOUT=4 in the environment *before NumPy is first imported*: OpenBLAS reads
   it once, when it loads, clamps it to 4..30 and spins 2^value cycles. GEMMs keep all their
   threads. `blas_thread_timeout()` says what this process started with.
2. `with limit_blas_threads(1):` around a region (a training loop, not a single kernel call):
   threadpoolctl caps OpenBLAS at one thread inside it, so no worker is woken and none spins;
   but the GEMMs inside run on one core, twice as slow: worth it only where GEMMs are small.
3. Fewer Numba threads (numba.set_num_threads), so the two pools do not overlap.

threadpoolctl is optional: without it limit_blas_threads() changes nothing and warns.
"""
from __future__ import annotations

import contextlib
import os
import warnings

__all__ = ["blas_thread_timeout", "limit_blas_threads", "thread_report"]

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


def blas_thread_timeout() -> str | None:
    """OPENBLAS_THREAD_TIMEOUT as this process sees it (None: OpenBLAS's default, 2^28 cycles)."""
    return os.environ.get("OPENBLAS_THREAD_TIMEOUT")


def thread_report() -> dict:
    """The thread settings a timing depends on, to print beside it."""
    import numba  # noqa: PLC0415

    report = {"numba_threads": numba.get_num_threads(), "openblas_thread_timeout": blas_thread_timeout()}
    try:
        report["blas_threads"] = {info["internal_api"]: info["num_threads"]
                                  for info in _threadpool_controller().info() if info["user_api"] == "blas"}
    except ImportError:
        report["blas_threads"] = "unknown (threadpoolctl not installed)"
    return report
