"""Every lesson runs with --device cuda, checked without a GPU through a strict CuPy stand-in.

tests/strict_cupy/ is a package named `cupy` that computes with NumPy but refuses, as CuPy does, a
NumPy array meeting a device array in an operation or function (see its README). With it first on
PYTHONPATH, tinyvision takes its cuda code paths; a lesson that mixes host and device arrays anywhere
fails here as it would on a GPU. Because the stand-in computes with NumPy, the lesson's result line
must equal the CPU run's exactly (timings aside): the device path computes the same thing.
Kernels are pinned to the NumPy / CuPy code (TINYVISION_KERNELS=reference) in both runs: the stand-in
cannot run the CUDA C or numba.cuda kernels, which tests/test_flash_cuda_c.py and the GPU tests check.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAND_IN = Path(__file__).resolve().parent / "strict_cupy"
LESSONS = sorted(p.name for p in (ROOT / "lessons").glob("[0-9][0-9]*_*.py"))


def run(code_or_lesson, device, tmp_path, stand_in=True):
    env = dict(os.environ, TINYVISION_KERNELS="reference", PYTHONPATH=str(STAND_IN) if stand_in else "")
    env.pop("TINYVISION_DEVICE", None)
    if code_or_lesson.endswith(".py"):
        cmd = [sys.executable, str(ROOT / "lessons" / code_or_lesson), "--quick", "--device", device, "--out", str(tmp_path)]
    else:
        cmd = [sys.executable, "-c", code_or_lesson]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_the_stand_in_refuses_host_arrays_in_device_operations(tmp_path):
    code = """
import numpy as np, cupy
a = cupy.asarray(np.ones(3))
assert type(a + 1) is cupy.ndarray and type(np.exp(a)) is cupy.ndarray and type(a.sum()) is cupy.ndarray
for bad in (lambda: a + np.ones(3), lambda: np.concatenate([a, np.ones(3)]), lambda: cupy.where(a > 0, a, np.ones(3))):
    try:
        bad()
    except TypeError as err:
        assert "NumPy array met a CuPy array" in str(err)
    else:
        raise SystemExit("mixing was not refused")
print("ok")
"""
    proc = run(code, "cuda", tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_factories_follow_the_default_device(tmp_path):
    """tv.zeros / ones / randn put their tensor on use_device's device unless given one (README's promise)."""
    code = """
import numpy as np, tinyvision as tv
with tv.use_device("cuda"):
    made = [tv.zeros((2, 3)), tv.ones(2), tv.randn(3, seed=0)]
    assert [t.device for t in made] == ["cuda"] * 3, [t.device for t in made]
    assert tv.zeros(2, device="cpu").device == "cpu"
    np.testing.assert_array_equal(made[2].data.get(), tv.randn(3, seed=0, device="cpu").data)
assert tv.zeros(2).device == "cpu"
print("ok")
"""
    proc = run(code, "cuda", tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_cuda_c_attention_declines_more_heads_than_its_grid_holds(tmp_path):
    """batch x heads above the grid's y limit (65,535) is a reason to take another path, not an error."""
    code = """
import numpy as np
from tinyvision.kernels import attention_cuda_c as K
q = np.broadcast_to(np.zeros((1, 1, 4, 16), np.float32), (65536, 1, 4, 16))
print(K.why_not(q, q, q))
"""
    proc = run(code, "cuda", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "batch x heads = 65536 exceeds the grid's y limit 65535 (one block row per head)"


def test_gradients_cross_devices_and_each_leaf_keeps_its_own_library(tmp_path):
    """A CPU leaf used on the GPU gets a NumPy gradient, a GPU leaf used on the CPU a CuPy one."""
    code = """
import numpy as np, cupy, tinyvision as tv
host = tv.Tensor(np.arange(3.0), requires_grad=True)
dev = tv.Tensor(np.arange(3.0), requires_grad=True, device="cuda")
# (.to on a leaf makes a new leaf, for moving parameters; inside a graph it is an op, so: host * 1)
loss = ((host * 1).to("cuda") * dev).sum().to("cpu") + ((dev * 1).to("cpu") ** 2).sum()
loss.backward()
assert type(host.grad) is np.ndarray and np.array_equal(host.grad, np.arange(3.0)), type(host.grad)
assert type(dev.grad) is cupy.ndarray and np.array_equal(dev.grad.get(), 3 * np.arange(3.0)), type(dev.grad)
print("ok")
"""
    proc = run(code, "cuda", tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def comparable(value, key=""):
    """The result without measurements of the machine (keys naming seconds, milliseconds, speed-ups, peak memory)."""
    if isinstance(value, dict):
        return {k: comparable(v, k) for k, v in value.items() if not any(t in k for t in ("second", "ms_per", "speedup", "peak_mb"))}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def result_line(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("result: "), last
    return json.loads(last[len("result: "):])


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_on_the_device_path_and_matches_the_cpu(lesson, tmp_path):
    on_device = run(lesson, "cuda", tmp_path / "cuda")
    assert "device: cuda" in on_device.stdout or "ignored" in on_device.stdout, on_device.stdout[:500]
    on_cpu = run(lesson, "cpu", tmp_path / "cpu", stand_in=False)
    got, want = comparable(result_line(on_device)), comparable(result_line(on_cpu))
    assert got == want, f"{lesson}: device path {got}\n!= cpu {want}"


def test_the_stand_in_is_not_seen_by_the_rest_of_the_suite():
    """Only the subprocesses above import it: here `cupy` is the real one, or absent."""
    mod = sys.modules.get("cupy")
    assert mod is None or STAND_IN not in Path(mod.__file__).parents

