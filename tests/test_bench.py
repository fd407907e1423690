"""The bench's step script runs and reports (python -m tinyvision.bench, tinyvision/bench/step_script.py).

No timing is asserted (machines here are shared and noisy): only that each configuration the bench
times runs a real training step and prints the one JSON line the bench reads, and that the float64
oracle the GPU bench checks kernels against (bench/attention_check.py) equals the dense op.
"""
import json

import numpy as np
import pytest

from tinyvision.bench import step_script


@pytest.mark.parametrize("setting", step_script.SETTINGS)
def test_step_script_runs_each_thread_setting_and_prints_its_json_line(setting, capsys):
    import numba
    if "blas" in setting:
        pytest.importorskip("threadpoolctl")
    saved = numba.get_num_threads()
    try:
        step_script.main(["--model", "small", "--setting", setting, "--steps", "2", "--warmup", "1"])
    finally:
        numba.set_num_threads(saved)      # "numba1" sets it for the whole process, as a script would
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["setting"] == setting and line["framework"] == "tinyvision" and line["ms_per_step"] > 0



@pytest.mark.parametrize("causal", [False, True])
def test_bench_float64_oracle_equals_the_dense_op_and_its_sampled_rows(causal):
    # the GPU bench (and tests/test_gpu.py) check every kernel against attention_check.dense_float64 and
    # dense_rows_float64; written for NumPy or CuPy alike, so they are checked here, on NumPy,
    # against the test suite's own oracle (the dense op and autograd). Nq != Nk moves the causal diagonal.
    from attention_cases import assert_close, dense_attention
    from tinyvision.bench import attention_check
    rng = np.random.default_rng(0)
    q, do = (rng.standard_normal((3, 9, 8)).astype(np.float32) for _ in range(2))
    k, v = (rng.standard_normal((3, 13, 8)).astype(np.float32) for _ in range(2))
    want_o, want_grads = dense_attention(dict(q=q, k=k, v=v, do=do, keep=None, causal=causal, scale=0.7))
    o, grads = attention_check.dense_float64(q, k, v, do, causal=causal, scale=0.7, max_bytes=9 * 13 * 8)   # one head a group
    for name, got, want in zip(("O", "dQ", "dK", "dV"), (o, *grads), (want_o, *want_grads)):
        assert_close(name, got, want)
    rows = attention_check.dense_rows_float64(q, k, v, [0, 2], [0, 4, 8], causal=causal, scale=0.7)
    assert_close("O rows", rows, want_o[[0, 2]][:, [0, 4, 8]])
