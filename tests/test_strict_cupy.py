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



def test_cuda_c_loader_picks_its_binaries_and_launches_every_version_as_the_layout_says(tmp_path):
    """The CUDA C loader on a machine without a GPU: the stand-in's RawModule records what the loader loads
    (a current fatbin, else NVRTC with the include folder and the sources' digest as an option) and every
    launch (kernel name, source file, grid, threads, shared memory, the arguments in order). The kernels
    themselves do not run here; tests/test_flash_cuda_c.py runs their source on the host emulation."""
    code = f"""
import json, pathlib
import numpy as np, cupy
from tinyvision.kernels import attention_cuda_c as K
from tinyvision.kernels import attention_cuda_c_layout as L
K._BIN = pathlib.Path({str(tmp_path)!r})                 # no BUILD.json there yet
folder = K._folder()
cupy.RawModule.recording = True

# 1. nothing built: NVRTC, with the include folder (v3 includes v2) and the digest that keys CuPy's cache
origin = K.kernel_origin("v3-tf32")
assert origin["kind"] == "compiled at run time by NVRTC" and "no BUILD.json" in origin["why_not_binary"], origin
assert origin["backward_kind"] == "compiled at run time by NVRTC"            # v3's backward: v2's module
nvrtc = [m for m in cupy.RawModule.made if m.code is not None]
assert all(m.backend == "nvrtc" and "-std=c++17" in m.options and f"--include-path={{folder}}" in m.options
           and any(o.startswith("-DTV_SOURCE_SHA=") for o in m.options) for m in nvrtc), [m.options for m in nvrtc]

# 2. a current fatbin is loaded as is; a stale one (source changed since) is not, and says why
K._module.cache_clear()
sources = {{}}
for name in set(L.SOURCES.values()):
    (K._BIN / (name[:-3] + ".fatbin")).write_bytes(b"fatbin")
    sources[name] = dict(sha256=K._digest(folder, name), binary=name[:-3] + ".fatbin")
sources["flash_attention_v3.cu"]["sha256"] = "0" * 64
(K._BIN / "BUILD.json").write_text(json.dumps(dict(sources=sources, binary="flash_attention.fatbin", reason=None)))
assert K.kernel_origin("v2")["kind"] == "fatbin built by nvcc at install"
stale = K.kernel_origin("v3-3xtf32")
assert stale["kind"] == "compiled at run time by NVRTC" and "changed since" in stale["why_not_binary"], stale
assert stale["backward_kind"] == "fatbin built by nvcc at install"
assert K.kernel_origin("v1", build="nvrtc")["why_not_binary"] == "build='nvrtc' asked for"
try:
    K.kernel_origin("v3-tf32", build="fatbin")
except RuntimeError as err:
    assert "no usable fatbin" in str(err)
else:
    raise SystemExit("build='fatbin' with a stale fatbin did not raise")

# 3. every version's launches: names, grids, threads, shared memory and argument counts
rng = np.random.default_rng(0)
bh, nq, nk, d = 3, 70, 130, 32
q, do = (cupy.asarray(rng.standard_normal((bh, nq, d)).astype(np.float32)) for _ in range(2))
k, v = (cupy.asarray(rng.standard_normal((bh, nk, d)).astype(np.float32)) for _ in range(2))
for version in L.VERSIONS:
    cupy.RawModule.log.clear()
    o, lse = K.forward(q, k, v, causal=True, version=version)
    K.backward(q, k, v, o, lse, do, causal=True, version=version)
    launches = list(cupy.RawModule.log)
    names = L.entry_points(version, d)
    got = [(x["name"], x["grid"], x["block"], x["shared_mem"], len(x["args"])) for x in launches]
    back = "v1" if version == "v1" else "v2"
    want = [(names["forward"], (2, bh), (L.forward_threads(version),), L.shared_memory_bytes("forward", d, version), 11),
            (names["rowsum"], ((bh * nq + 127) // 128,), (128,), 0, 5),
            (names["dk_dv"], (3, bh), (256,), L.shared_memory_bytes("dk_dv", d, back), 14),
            (names["dq"], (2, bh), (256,), L.shared_memory_bytes("dq", d, back), 13)]
    assert got == want, (version, got, want)
    # each kernel from its own file: v3's forward from v3's, its backward from v2's
    assert [x["source"] for x in launches] == [L.SOURCES[version]] + [L.SOURCES[back]] * 3, launches
    # the arguments in the kernels' order: the same buffers (by address), the scalars as their C types
    fwd, rowsum, dkdv, dq = (x["args"] for x in launches)
    ptr = lambda a: a.data.ptr if hasattr(a, "data") and hasattr(a.data, "ptr") else None
    assert [ptr(a) for a in fwd[:3]] == [ptr(q), ptr(k), ptr(v)] and fwd[3] == 0 and fwd[4] == 0   # no mask
    assert [ptr(a) for a in fwd[5:7]] == [ptr(o), ptr(lse)]
    assert [type(a).__name__ for a in fwd[-4:]] == ["int32", "int32", "int32", "float32"], fwd[-4:]
    assert fwd[7:10] == (nq, nk, 1) and abs(float(fwd[10]) - d ** -0.5) < 1e-7
    assert [ptr(a) for a in rowsum[:2]] == [ptr(o), ptr(do)] and rowsum[3:] == (bh * nq, d)
    assert [ptr(a) for a in dkdv[:3]] == [ptr(q), ptr(k), ptr(v)] and ptr(dkdv[5]) == ptr(do) and ptr(dkdv[6]) == ptr(lse)
    assert ptr(dkdv[7]) == ptr(rowsum[2]) and ptr(dq[7]) == ptr(rowsum[2])      # D, from the rowsum kernel
    assert all(x["opted_in"] >= x["shared_mem"] or x["shared_mem"] <= 48 * 1024 for x in launches)

# 4. masks: one per batch x head (uint8, stride Nq Nk) or one shared by all (stride 0)
keep = cupy.asarray(rng.random((bh, nq, nk)) < 0.5)
for mask, stride in ((keep, nq * nk), (keep[:1], 0)):
    cupy.RawModule.log.clear()
    K.forward(q, k, v, mask, version="v2")
    m, st = cupy.RawModule.log[0]["args"][3:5]
    assert m.dtype == np.uint8 and m.shape == mask.shape and int(st) == stride and type(st).__name__ == "int64"

# 5. a view that does not start on a 16-byte boundary is copied before the kernels read it with float4
flat = cupy.asarray(np.zeros(bh * nk * d + 1, np.float32))
shifted = flat[1:].reshape(bh, nk, d)
assert shifted.data.ptr % 16 != 0 and K._device(shifted)[0].data.ptr % 16 == 0
print("ok")
"""
    proc = run(code, "cuda", tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
