"""The one switch that picks an implementation: environment variable, context manager, auto rules."""
import os

import pytest

from tinyvision import kernels

numba_missing = kernels.why_unavailable("numba")
needs_numba = pytest.mark.skipif(numba_missing is not None, reason=f"Numba kernels unavailable: {numba_missing}")


def test_use_sets_and_restores_the_choice(monkeypatch):
    monkeypatch.delenv("TINYVISION_KERNELS", raising=False)
    assert kernels.active() == "auto"
    with kernels.use("reference"):
        assert kernels.active() == "reference"
        with kernels.use("auto"):
            assert kernels.active() == "auto"
        assert kernels.active() == "reference"
    assert kernels.active() == "auto"


def test_environment_variable_is_read_and_checked(monkeypatch):
    monkeypatch.setenv("TINYVISION_KERNELS", "reference")
    assert kernels.implementation("softmax", "cpu") == "reference"
    monkeypatch.setenv("TINYVISION_KERNELS", "fastest")
    with pytest.raises(ValueError, match=r"choose one of .*got 'fastest'"):
        kernels.active()
    with pytest.raises(ValueError, match="got 'gpu'"):
        with kernels.use("gpu"):
            pass


@needs_numba
def test_auto_picks_numba_where_it_measured_faster_and_the_reference_for_cpu_attention(monkeypatch):
    monkeypatch.delenv("TINYVISION_KERNELS", raising=False)
    for op in ("softmax", "layer_norm", "gelu", "adamw"):
        assert kernels.implementation(op, "cpu") == "numba", op
    assert kernels.implementation("attention", "cpu") == "reference"      # the dense BLAS composite is faster here
    with kernels.use("numba"):
        assert kernels.implementation("attention", "cpu") == "numba"  # asked for explicitly


def test_an_op_without_a_kernel_falls_back_to_the_reference():
    with kernels.use("numba"):
        assert kernels.implementation("no_such_op", "cpu") == "reference"


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="the CUDA simulator makes numba_cuda load")
def test_unavailable_implementation_reports_why():
    from tinyvision.backend import cuda_available
    if cuda_available():
        pytest.skip("this machine has a GPU: numba_cuda is available")
    reason = kernels.why_unavailable("numba_cuda")
    assert reason is not None and ("GPU" in reason or "CUDA" in reason), reason
    assert kernels.implementation("softmax", "cuda") == "reference"       # and nothing breaks: NumPy/CuPy code runs


def test_an_implementation_only_serves_arrays_of_its_own_device():
    with kernels.use("numba"):
        assert kernels.implementation("softmax", "cpu") == "numba"
        assert kernels.implementation("softmax", "cuda") == "reference"      # a CPU kernel never sees a CuPy array
    with kernels.use("cuda_c"):
        assert kernels.implementation("attention", "cpu") == "reference"


def test_a_kernel_that_declines_the_inputs_falls_back(monkeypatch):
    import types
    calls = []
    fake = types.SimpleNamespace(accepts=lambda *arrays: calls.append(len(arrays)) or False)
    monkeypatch.setitem(kernels._REGISTRY, ("attention", "numba"), fake)
    with kernels.use("numba"):
        assert kernels.implementation("attention", "cpu", (1, 2, 3)) == "reference"
        assert calls == [3]
        assert kernels.implementation("attention", "cpu") == "numba"     # no arrays given: not asked


def test_asking_for_a_missing_kernel_names_the_reason():
    with pytest.raises(RuntimeError, match=r"no 'fast' kernel for 'softmax' here: unknown implementation"):
        kernels.kernel("softmax", "fast")
    with pytest.raises(RuntimeError, match=r"no 'reference' kernel for 'softmax' here: it is the plain code"):
        kernels.kernel("softmax", "reference")


def test_auto_on_the_gpu_takes_only_the_cuda_c_attention_and_cupy_code_elsewhere(monkeypatch):
    """Until GPU timings exist, auto does not pick the simulator-checked numba.cuda kernels."""
    from tinyvision.backend import cuda_unavailable_reason
    monkeypatch.delenv("TINYVISION_KERNELS", raising=False)
    for op in ("softmax", "layer_norm", "gelu", "adamw"):
        assert kernels.implementation(op, "cuda") == "reference", op
    # the CUDA C kernel loads exactly where CuPy and a GPU do (attention_cuda_c.py raises ImportError otherwise)
    expected = "cuda_c" if cuda_unavailable_reason() is None else "reference"
    assert kernels.implementation("attention", "cuda") == expected, cuda_unavailable_reason()


def test_auto_on_the_gpu_with_every_gpu_kernel_loaded(monkeypatch):
    """The same rule where both GPU implementations load, whatever this machine has: stand-ins are
    registered as loaded, so auto's choice is checked here too, not only on a GPU."""
    import types
    monkeypatch.delenv("TINYVISION_KERNELS", raising=False)
    fake = types.SimpleNamespace(forward=None, backward=None)
    for impl in ("numba_cuda", "cuda_c"):
        monkeypatch.setitem(kernels._load_errors, impl, None)          # "loaded"
        monkeypatch.setitem(kernels._REGISTRY, ("attention", impl), fake)
    for op in ("softmax", "layer_norm", "gelu", "adamw"):
        monkeypatch.setitem(kernels._REGISTRY, (op, "numba_cuda"), fake)
    for op in ("softmax", "layer_norm", "gelu", "adamw"):
        assert kernels.implementation(op, "cuda") == "reference", op
        with kernels.use("numba_cuda"):
            assert kernels.implementation(op, "cuda") == "numba_cuda", op   # chosen explicitly: it runs
    assert kernels.implementation("attention", "cuda") == "cuda_c"
    assert kernels.implementation("attention", "cpu") == "reference"


# --- threads: the Numba row kernels and the BLAS take turns (kernels/_threads.py) --------------------
@needs_numba
def test_row_kernels_run_on_one_thread_while_the_blas_runs_several(monkeypatch):
    import numba

    from tinyvision.kernels import _threads
    monkeypatch.delenv("TINYVISION_KERNEL_THREADS", raising=False)
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here: nothing to cut")
    monkeypatch.setattr(_threads, "blas_threads", lambda: 2)
    saved = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        assert _threads.kernel_thread_count() == 1
        with _threads.kernel_threads():
            assert numba.get_num_threads() == 1
        assert numba.get_num_threads() == 2                   # restored for the user's own Numba code
        with pytest.raises(KeyError), _threads.kernel_threads():
            raise KeyError("a kernel failed")
        assert numba.get_num_threads() == 2                   # ... also when the block raised
        monkeypatch.setattr(_threads, "blas_threads", lambda: 1)   # a BLAS on one thread leaves the cores free
        assert _threads.kernel_thread_count() == 2
    finally:
        numba.set_num_threads(saved)


@needs_numba
def test_kernel_threads_environment_variable_overrides_and_is_checked(monkeypatch):
    import numba

    from tinyvision.kernels import _threads
    monkeypatch.setattr(_threads, "blas_threads", lambda: 2)
    monkeypatch.setenv("TINYVISION_KERNEL_THREADS", "2")
    assert _threads.kernel_thread_count() == min(2, numba.config.NUMBA_NUM_THREADS)
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("TINYVISION_KERNEL_THREADS", bad)
        with pytest.raises(ValueError, match=f"TINYVISION_KERNEL_THREADS must be a positive integer, got '{bad}'"):
            _threads.kernel_thread_count()


def test_blas_threads_is_what_threadpoolctl_reports():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy as np  # noqa: F401 - loads the BLAS

    from tinyvision.kernels import _threads
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert _threads.blas_threads() == 1
    reported = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert _threads.blas_threads() == max(reported)
