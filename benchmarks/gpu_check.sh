#!/usr/bin/env bash
# The GPU check of tinyvision in one prepared run: the CUDA C attention kernels (v1, v2, v3-3xtf32,
# v3-tf32) built, tested, run under compute-sanitizer and timed. For a machine with an NVIDIA GPU,
# CUDA, CuPy and PyTorch already installed, and possibly no package registry. From the repository root:
#
#     bash benchmarks/gpu_check.sh LOG_DIR        (BUDGET=seconds, default 510, the install included;
#                                                  PY=python3; BENCH_ARGS, default --gpu-only)
#
# Steps, the most valuable first; each runs under its own time limit, cut to what is left of the
# budget, and a step that no longer fits is written down as skipped:
#     install        pip install --no-deps --no-build-isolation -e .   (setup.py builds the fatbins with
#                    nvcc; --no-deps: the machine's own CuPy stays the only one)
#     build_check    python csrc/build.py --check: nvcc with ptxas -v, failing on warnings and register spills
#     kernel_tests   tests/test_flash_cuda_c.py -k gpu, every launch synchronised (TINYVISION_CUDA_SYNC=1)
#     gpu_tests      tests/test_gpu.py -k "not lesson": every version at N 16,384, a backward over many
#                    tiles, the same bits twice and from both builds, the grid limit
#     san_memcheck   compute-sanitizer memcheck: out-of-bounds and misaligned accesses, small cases
#                    through every version (attention_cuda_c.VERSIONS)
#     bench          python -m tinyvision.bench $BENCH_ARGS (checks each kernel at every size, then times
#                    it; exit status 1 if a check failed)
#     san_racecheck  compute-sanitizer racecheck on the first two cases (racecheck is slow): shared-memory
#                    races, e.g. a __syncwarp where a block barrier was needed
#     lessons        tests/test_gpu.py -k lesson: every lesson's --quick on cuda, with the time left
# It writes three files, few so that all of them come back from a remote machine:
#     LOG_DIR/summary.txt   one line per step: its exit status (124: its time limit) and seconds
#     LOG_DIR/steps.log     the full output of every step
#     LOG_DIR/env.log       nvidia-smi, nvcc --version, the cupy / torch / numba / numpy versions, BUILD.json
set -u -o pipefail

if (($# != 1)); then
  echo "usage: bash benchmarks/gpu_check.sh LOG_DIR" >&2
  exit 2
fi
LOG=$1
PY=${PY:-python3}
BUDGET=${BUDGET:-510}
END=$((SECONDS + BUDGET))
mkdir -p "$LOG"
: >"$LOG/summary.txt"
: >"$LOG/steps.log"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# the sanitizer script runs from $TMP, so the repository goes on the path for it
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

note() { echo "$*" | tee -a "$LOG/summary.txt"; }

# step NAME LIMIT COMMAND...: run COMMAND for at most LIMIT seconds (less if the budget ends sooner),
# its output appended to steps.log, one line to summary.txt, its last lines on the screen
step() {
  local name=$1 limit=$2 left=$((END - SECONDS)) start=$SECONDS rc
  shift 2
  if ((left < 20)); then
    note "$(printf '%-14s skipped: %d s of the budget left' "$name" "$left")"
    return
  fi
  ((limit < left)) || limit=$left
  echo "===== $name (limit $limit s): $*" >>"$LOG/steps.log"
  timeout --kill-after=5 "$limit" "$@" >>"$LOG/steps.log" 2>&1
  rc=$?
  note "$(printf '%-14s rc=%-3d %4d s' "$name" "$rc" $((SECONDS - start)))"
  tail -n 3 "$LOG/steps.log"
}

# --- the machine, before anything changes it -------------------------------------------------------
{
  echo "===== nvidia-smi"; nvidia-smi
  echo "===== nvcc --version"; nvcc --version
  echo "===== python"; $PY --version
  echo "===== pip list (cupy, torch, numba, numpy, setuptools)"
  $PY -m pip list 2>/dev/null | grep -iE "^(cupy|torch|numba|numpy|setuptools) "   # setuptools < 64: no fatbins in -e
} >"$LOG/env.log" 2>&1
# nothing here installs CuPy or PyTorch: without them the GPU steps skip or fail, so say so first
if $PY -c "import cupy, torch" >>"$LOG/env.log" 2>&1; then
  note "imports        cupy and torch import"
else
  note "imports        MISSING: python -c 'import cupy, torch' failed (env.log says which); GPU steps will skip or fail"
fi

# --- the steps --------------------------------------------------------------------------------------
step install 150 $PY -m pip install --no-deps --no-build-isolation -e .
{ echo "===== tinyvision/kernels/_bin/BUILD.json"; cat tinyvision/kernels/_bin/BUILD.json; } >>"$LOG/env.log" 2>&1

step build_check 120 $PY csrc/build.py --check
step kernel_tests 150 env TINYVISION_CUDA_SYNC=1 $PY -m pytest -q -rs tests/test_flash_cuda_c.py -k gpu
step gpu_tests 150 env TINYVISION_CUDA_SYNC=1 $PY -m pytest -q -rs tests/test_gpu.py -k "not lesson"

cat >"$TMP/sanitizer_cases.py" <<'EOF'
"""Small attention cases through every CUDA C version, forward and backward, for compute-sanitizer.

Partial tiles, Nq != Nk both ways, a single row, every head dim, with and without causal and a mask;
exit status 1 if any output holds NaN or inf (the sanitizer's own findings set its exit code)."""
import sys

import numpy as np
import cupy as cp

cp.cuda.set_allocator(None)      # one cudaMalloc per array: memcheck sees where each ends (a pool would not)
from tinyvision.kernels import attention_cuda_c as cuda_c  # noqa: E402

CASES = [(2, 130, 70, 64, True, False), (2, 65, 200, 128, False, True),    # BH, Nq, Nk, d, causal, masked
         (1, 1, 1, 16, False, False), (3, 3, 200, 32, True, True)]
rng = np.random.default_rng(0)
bad = 0
for version in cuda_c.VERSIONS:
    for bh, nq, nk, d, causal, masked in CASES[:2] if sys.argv[1:] == ["few"] else CASES:
        q, do, k, v = (cp.asarray(rng.standard_normal((bh, n, d), dtype=np.float32)) for n in (nq, nq, nk, nk))
        keep = cp.asarray(rng.random((bh, nq, nk)) < 0.5) if masked else None
        where = f"{version:10s} BH {bh} Nq {nq:3d} Nk {nk:3d} d {d:3d} causal {causal:d} mask {masked:d}"
        try:
            o, lse = cuda_c.forward(q, k, v, keep, causal, version=version)
            grads = cuda_c.backward(q, k, v, o, lse, do, keep, causal, version=version)
        except ValueError as err:                  # refused before any launch: nothing for the sanitizer
            print(f"{where}: refused ({err})")
            continue
        cp.cuda.Device().synchronize()
        nonfinite = [n for n, a in zip(("O", "dQ", "dK", "dV"), (o, *grads)) if not bool(cp.isfinite(a).all())]
        bad += bool(nonfinite)
        print(f"{where}: " + (f"NaN or inf in {', '.join(nonfinite)}" if nonfinite else "ran, finite"))
sys.exit(1 if bad else 0)
EOF
SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
sanitize() {   # sanitize TOOL LIMIT [few]
  if [[ -x $SANITIZER ]]; then
    step "san_$1" "$2" env TINYVISION_CUDA_SYNC=1 "$SANITIZER" --tool "$1" --error-exitcode 9 \
      --print-limit 20 $PY "$TMP/sanitizer_cases.py" "${@:3}"
  else
    note "$(printf '%-14s skipped: compute-sanitizer not found' "san_$1")"
  fi
}
sanitize memcheck 100
# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
step bench 240 $PY -m tinyvision.bench ${BENCH_ARGS:---gpu-only}
sanitize racecheck 60 few
step lessons 600 $PY -m pytest -q -rs tests/test_gpu.py -k lesson

note "done at $SECONDS s of a $BUDGET s budget"
