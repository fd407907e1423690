"""benchmarks/gpu_check.sh, the one prepared GPU run, is valid bash and still runs every check it promises.

It runs only on a GPU machine, where a broken line would cost the whole run; here, without a GPU, the
script is parsed (bash -n) and read: each step's command is in it, in order of value, and the flags
it passes exist. What this cannot see: whether the steps fit their time limits on a real GPU, or fail
there for reasons of that machine; only a GPU run tells.
"""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = {  # step name -> the command it must run, in the order the script runs them (most valuable first)
    "install": "pip install --no-deps --no-build-isolation -e .",
    "build_check": "$PY csrc/build.py --check",
    "kernel_tests": "env TINYVISION_CUDA_SYNC=1 $PY -m pytest -q -rs tests/test_flash_cuda_c.py -k gpu",
    "gpu_tests": 'env TINYVISION_CUDA_SYNC=1 $PY -m pytest -q -rs tests/test_gpu.py -k "not lesson"',
    "san_$1": '--tool "$1"',                       # sanitize memcheck / sanitize racecheck
    "bench": "$PY -m tinyvision.bench ${BENCH_ARGS:---gpu-only}",
    "lessons": "$PY -m pytest -q -rs tests/test_gpu.py -k lesson",
}


def test_gpu_check_script_parses():
    if shutil.which("bash") is None:
        pytest.skip("no bash here")
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_gpu_check_script_runs_every_step_in_order_of_value():
    body = SCRIPT.read_text().split("set -u -o pipefail", 1)[1]          # the code, not the header comment
    steps = [line.split()[1].strip('"') for line in body.splitlines() if line.strip().startswith("step ")]
    assert steps == list(STEPS), f"gpu_check.sh runs the steps {steps}, expected {list(STEPS)} in this order"
    for name, command in STEPS.items():
        line = next(line for line in body.splitlines() if line.strip().startswith(f"step {name}")
                    or line.strip().startswith(f'step "{name}"'))
        assert command in line, f"gpu_check.sh: step {name} should run `{command}`, its line is `{line.strip()}`"
    # memcheck before the bench, racecheck (slow) after it on the first two cases only
    calls = [line.split()[:3] for line in body.splitlines() if line.startswith("sanitize ")]
    assert calls == [["sanitize", "memcheck", "100"], ["sanitize", "racecheck", "60"]], calls
    assert body.index("sanitize memcheck") < body.index("step bench") < body.index("sanitize racecheck")
    # the sanitizer cases go through every kernel version, by the loader's own list
    assert "from tinyvision.kernels import attention_cuda_c as cuda_c" in body
    assert "for version in cuda_c.VERSIONS" in body and "version=version" in body
    # CuPy and torch are checked, never installed; the machine and the three log files are recorded
    assert '$PY -c "import cupy, torch"' in body
    assert "pip install cupy" not in body and "pip install torch" not in body
    for log in ("summary.txt", "steps.log", "env.log", "BUILD.json", "nvidia-smi", "nvcc --version"):
        assert log in body, f"gpu_check.sh should record {log}"
    assert "BUDGET:-510" in body


def test_gpu_check_script_passes_flags_that_exist():
    bench = (ROOT / "tinyvision" / "bench" / "__init__.py").read_text()
    build = (ROOT / "csrc" / "build.py").read_text()
    assert '"--gpu-only"' in bench, "tinyvision.bench has no --gpu-only flag any more; update gpu_check.sh"
    assert '"--check"' in build, "csrc/build.py has no --check flag any more; update gpu_check.sh"
