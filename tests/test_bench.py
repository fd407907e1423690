"""The bench's step script runs and reports (python -m tinyvision.bench, tinyvision/bench/step_script.py).

No timing is asserted (machines here are shared and noisy): only that each configuration the bench
times runs a real training step and prints the one JSON line the bench reads.
"""
import json

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

