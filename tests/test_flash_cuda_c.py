"""The CUDA C flash-attention kernel (csrc/flash_attention.cu): its build, its indexing, and on a GPU its results.

Three layers, from what runs on every machine to what needs a GPU:
  1. the build check: CI fails on register spills by parsing `ptxas -v`; the parser is tested here on
     ptxas's exact output, with and without a spill.
  2. host emulation: g++ compiles the kernel file itself with tests/cuda_emulation/emulate.h (one OS
     thread per CUDA thread, real barriers and warp shuffles, NaN-filled shared memory of exactly the
     size the loader requests, AddressSanitizer on every buffer) and the results are compared with the
     dense float64 attention and its autograd gradients. Shapes are drawn past and between tile sizes
     (64), with every mask kind, for the three compiled head dims.
  3. on a GPU (skipped here, with the reason): the kernel loaded through CuPy against the same float64
     oracle, and the attention op choosing it by default for cuda tensors.
"""
import hashlib
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import kernels
from tinyvision.kernels.attention_cuda_c_layout import shared_memory_bytes
from attention_cases import as_dtype, assert_close, attention_cases, dense_attention, masked_scores
from tinyvision.kernels.attention_tiled import flash_backward, flash_forward

ROOT = Path(__file__).resolve().parents[1]
EMULATION = Path(__file__).resolve().parent / "cuda_emulation"
SOURCE = ROOT / "csrc" / "flash_attention.cu"
SOURCES = [ROOT / "csrc" / name for name in ("flash_attention.cu", "flash_attention_v2.cu", "flash_attention_v3.cu")]


def _load_build_script():
    spec = importlib.util.spec_from_file_location("csrc_build", ROOT / "csrc" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_script()

# --- 1. the build check ------------------------------------------------------------------------------
PTXAS_CLEAN = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'flash_forward_d64' for 'sm_80'
ptxas info    : Function properties for flash_forward_d64
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 80 registers, used 1 barriers, 424 bytes cmem[0]
ptxas info    : Compiling entry function 'flash_forward_d64' for 'sm_90'
ptxas info    : Function properties for flash_forward_d64
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers
"""
PTXAS_SPILL = PTXAS_CLEAN.replace(
    "ptxas info    : Compiling entry function 'flash_forward_d64' for 'sm_90'\nptxas info    : Function properties for flash_forward_d64\n    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads",
    "ptxas info    : Compiling entry function 'flash_forward_d64' for 'sm_90'\nptxas info    : Function properties for flash_forward_d64\n    1488 bytes stack frame, 2120 bytes spill stores, 2592 bytes spill loads")


def test_ptxas_parser_reads_registers_and_spills_per_kernel_and_arch():
    records = build.parse_ptxas(PTXAS_SPILL)
    assert [(r["name"], r["arch"], r["registers"]) for r in records] == [
        ("flash_forward_d64", "sm_80", 80), ("flash_forward_d64", "sm_90", 64)]
    assert (records[1]["spill_stores"], records[1]["spill_loads"], records[1]["stack"]) == (2120, 2592, 1488)


def test_build_check_passes_clean_output_and_fails_on_spills_warnings_and_missing_arch():
    assert build.problems(build.parse_ptxas(PTXAS_CLEAN), PTXAS_CLEAN) == []
    spill = build.problems(build.parse_ptxas(PTXAS_SPILL), PTXAS_SPILL)
    assert len(spill) == 1 and "flash_forward_d64 (sm_90) spills: 2120 bytes stored" in spill[0]
    warned = PTXAS_CLEAN + "ptxas warning : Registers are spilled to local memory in function 'x'\n"
    assert any("warning" in p for p in build.problems(build.parse_ptxas(warned), warned))
    sm80_only = "\n".join(PTXAS_CLEAN.splitlines()[:5])
    assert build.problems(build.parse_ptxas(sm80_only), sm80_only) == ["flash_forward_d64 was not compiled for sm_90"]
    assert build.problems([], "") == ["ptxas -v reported no kernels (was -Xptxas -v dropped?)"]


def test_build_without_nvcc_still_ships_the_source_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))           # no nvcc anywhere
    info = build.build(tmp_path / "_bin")
    assert info["binary"] is None and "nvcc is not on PATH" in info["reason"]
    assert (tmp_path / "_bin" / "flash_attention.cu").read_bytes() == SOURCE.read_bytes()
    assert '"binary": null' in (tmp_path / "_bin" / "BUILD.json").read_text()


def test_nvcc_command_has_sm80_sm90_sass_and_ptx_and_verbose_ptxas():
    cmd = " ".join(build.nvcc_command("nvcc", SOURCE, Path("out.fatbin"), check=True))
    for part in ("arch=compute_80,code=sm_80", "arch=compute_90,code=sm_90", "arch=compute_90,code=compute_90",
                 "-Xptxas -v", "-Werror all-warnings", "--fatbin"):
        assert part in cmd, part


def test_ci_checks_the_installs_nvcc_report_when_it_is_current(tmp_path):
    """CI reads the ptxas report `pip install` left (BUILD_LOG.txt) instead of compiling a second time: the same
    rule (a spill or a warning fails), and only while BUILD.json says every fatbin was built from these sources."""
    import json
    clean = {name: PTXAS_CLEAN.replace("flash_forward_d64", f"k{i}") for i, name in enumerate(build.SOURCES)}
    sources = {name: dict(sha256=build.source_digest(ROOT / "csrc" / name), binary=build.fatbin_name(name))
               for name in build.SOURCES}
    (tmp_path / "BUILD.json").write_text(json.dumps(dict(sources=sources)))
    (tmp_path / "BUILD_LOG.txt").write_text("".join(f"== {name}\n{text}" for name, text in clean.items()))
    report = build.installed_report(tmp_path)
    assert report["problems"] == [] and len(report["records"]) == 2 * len(build.SOURCES)
    spilled = dict(clean, **{build.SOURCES[1]: PTXAS_SPILL})
    (tmp_path / "BUILD_LOG.txt").write_text("".join(f"== {name}\n{text}" for name, text in spilled.items()))
    assert any("spills: 2120 bytes stored" in p for p in build.installed_report(tmp_path)["problems"])
    sources[build.SOURCES[2]]["sha256"] = "0" * 64                 # a source changed since the install
    (tmp_path / "BUILD.json").write_text(json.dumps(dict(sources=sources)))
    assert build.installed_report(tmp_path) is None
    assert build.installed_report(tmp_path / "nothing here") is None


def test_every_version_is_built_and_the_nvrtc_options_are_the_nvcc_ones():
    """CI's check compiles every source; the run-time NVRTC path uses the same language options and include
    folder as nvcc (only the architecture differs: NVRTC compiles for the GPU it runs on)."""
    from tinyvision.kernels import attention_cuda_c_layout as layout
    assert set(build.SOURCES) == set(layout.SOURCES.values())
    assert build.NVRTC_OPTIONS == layout.NVRTC_OPTIONS and build.INCLUDES == layout.INCLUDES
    for name in build.SOURCES:
        cmd = build.nvcc_command("nvcc", ROOT / "csrc" / name, Path("x.fatbin"), check=True)
        assert all(option in cmd for option in layout.NVRTC_OPTIONS)
        assert cmd[cmd.index("-I") + 1] == str(ROOT / "csrc")         # v3 #includes v2 from there
    # a fatbin is current only if the file AND what it includes are unchanged
    assert build.source_digest(ROOT / "csrc" / "flash_attention_v3.cu") != hashlib.sha256(
        (ROOT / "csrc" / "flash_attention_v3.cu").read_bytes()).hexdigest()


# --- 2. the kernel source, run on the host emulation -------------------------------------------------
def build_emulators(out_dir: Path, precisions=("float32", "float64")) -> dict:
    """Compile tests/cuda_emulation/driver.cpp (with every kernel file) into out_dir, once per precision
    (float32 as on a GPU, float64 for the algorithm alone); the g++ runs go side by side."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("the host emulation of the CUDA kernel needs g++ (apt-get install g++)")
    sources = [EMULATION / "emulate.h", EMULATION / "driver.cpp", *SOURCES]
    tag = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    jobs = {}
    for precision in precisions:
        exe = Path(out_dir) / f"driver-{precision}-{tag}"
        cmd = [compiler, "-std=c++20", "-O1", "-g", "-pthread", "-Wall", "-Wno-unknown-pragmas", "-fno-strict-aliasing",
               "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-o", str(exe),
               str(EMULATION / "driver.cpp")]
        if precision == "float64":
            cmd.insert(1, "-DTV_EMULATE_DOUBLE")
        jobs[precision] = (exe, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for precision, (exe, proc) in jobs.items():
        _, err = proc.communicate()
        assert proc.returncode == 0, f"g++ could not build the {precision} emulation:\n{err[-3000:]}"
    return {precision: exe for precision, (exe, _) in jobs.items()}


def build_emulator(out_dir: Path, precision: str) -> Path:
    return build_emulators(out_dir, (precision,))[precision]


@pytest.fixture(scope="session")
def emulators(tmp_path_factory):
    return build_emulators(tmp_path_factory.mktemp("cuda_emulation"))


@pytest.fixture(scope="session")
def emulator(emulators):
    """The g++-built driver running the kernel sources on emulated CUDA threads, in float32 as on a GPU."""
    return emulators["float32"]


@pytest.fixture(scope="session")
def emulator64(emulators):
    """The same kernel sources with every float made a double: the algorithm without float32 rounding."""
    return emulators["float64"]


def run_emulated(exe, case, workdir, smem_override=None, version="v1"):
    """o, lse, (dq, dk, dv) of one version of the CUDA C kernels for one case, on the host emulation (float32,
    or float64 for the driver built with TV_EMULATE_DOUBLE)."""
    dtype = np.float64 if "-float64-" in Path(exe).name else np.float32
    # the kernel reads packed buffers through raw pointers: views are packed here, as cuda_c._device does
    q, k, v, do = (np.ascontiguousarray(case[n], dtype=dtype) for n in ("q", "k", "v", "do"))
    bh, nq, d = q.shape
    nk = k.shape[1]
    workdir.mkdir(parents=True, exist_ok=True)
    for name, a in (("q", q), ("k", k), ("v", v), ("do", do)):
        a.tofile(workdir / f"{name}.bin")
    mask_mode = 0
    if case["keep"] is not None:
        keep = np.asarray(case["keep"])
        mask_mode = 2 if keep.ndim == 3 and keep.shape[0] == bh and bh > 1 else 1
        np.ascontiguousarray(keep.reshape((bh if mask_mode == 2 else 1, nq, nk)), dtype=np.uint8).tofile(workdir / "mask.bin")
    scale = dtype(1 / np.sqrt(d) if case["scale"] is None else case["scale"])
    widen = np.dtype(dtype).itemsize // 4          # the float64 build's shared memory holds doubles
    smem = smem_override or {kind: widen * shared_memory_bytes(kind, d, version) for kind in ("forward", "dk_dv", "dq")}
    args = [str(exe), str(workdir), version, str(d), str(bh), str(nq), str(nk), str(int(case["causal"])), str(mask_mode),
            repr(float(scale)), str(smem["forward"]), str(smem["dk_dv"]), str(smem["dq"])]
    proc = subprocess.run(args, capture_output=True, text=True,
                          env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="halt_on_error=1"))
    if proc.returncode != 0:
        raise AssertionError(f"emulated kernel failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    read = lambda name, shape: np.fromfile(workdir / f"{name}.bin", dtype).reshape(shape)  # noqa: E731
    return (read("o", (bh, nq, d)), read("lse", (bh, nq)),
            (read("dq", q.shape), read("dk", k.shape), read("dv", v.shape)))


def assert_float32_accurate(case, o, grads, logit_error=0.0):
    """float32 results as accurate as float32 attention gets. The kernel saw float32 inputs, so the oracle
    is the dense op on those same values in float64; the yardstick is attention_tiled.py (the same tiled
    algorithm in NumPy, tiles of 64) run in float32. The kernel's largest error may be 16x the
    yardstick's plus 1e-6 of the largest value.

    Why these numbers. A fixed rtol cannot work: with scale 2 and d = 128 the logits reach ~60, the
    backward recomputes P = e^(S - L) from L stored in float32 (spacing 4e-6 at 60), and every float32
    tiled attention errs by ~1e-4 on dQ, where a gradient is a small difference of large terms. The
    factor: the kernel sums its dot products one term after another (64 or 128 terms), while NumPy's
    BLAS keeps several partial sums; float32 error bounds grow with the length of a sequential sum.
    Over 120 random cases (python tests/cuda_emulation/accuracy.py) the kernel's error was 1.16x the
    yardstick's at the median, 2.6x at the 95th percentile and 10.2x at worst; the bound below needed a
    factor of at most 8.1 there (the 1e-6 floor absorbs the rest), so 16 leaves a margin of 2.
    The algorithm itself is checked to 1e-9 by the float64 build; planted
    bugs there (a barrier removed, the causal bound shifted by one, the fully-masked guard dropped)
    give errors of order 1 or NaN."""
    case32 = as_dtype(case, np.float32)
    want_o, want_grads = dense_attention(case32)
    args = (case32["keep"], case32["causal"], case32["scale"])
    ref_o, ref_lse = flash_forward(case32["q"], case32["k"], case32["v"], *args, block_q=64, block_k=64)
    ref_grads = flash_backward(case32["q"], case32["k"], case32["v"], ref_o, ref_lse, case32["do"], *args,
                               block_q=64, block_k=64)
    for name, got, want, ref in zip(("O", "dQ", "dK", "dV"), (o,) + tuple(grads), (want_o,) + tuple(want_grads),
                                    (ref_o,) + tuple(ref_grads)):
        got, want, ref = (np.asarray(a, np.float64) for a in (got, want, ref))
        assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
        assert np.isfinite(got).all(), f"{name}: NaN or inf at {np.argwhere(~np.isfinite(got))[:5].tolist()}"
        err, ref_err = np.abs(got - want).max(initial=0), np.abs(ref - want).max(initial=0)
        bound = 16 * ref_err + 1e-6 * max(1.0, np.abs(want).max(initial=0))
        if logit_error:                                            # see assert_3xtf32_accurate
            size = np.abs(case32["v"]).max(initial=0) * 2 if name == "O" else np.abs(want).max(initial=0)
            bound += logit_error * size
        worst = np.unravel_index(np.argmax(np.abs(got - want)), got.shape) if got.size else ()
        assert err <= bound, (f"{name}: max abs error {err:.3g} at {tuple(int(i) for i in worst)} > bound {bound:.3g} "
                              f"(attention_tiled in float32 errs by {ref_err:.3g})")


def make_case(bh, nq, nk, d, causal=False, mask=None, seed=0, scale=None):
    rng = np.random.default_rng(seed)
    keep = None
    if mask is not None:
        keep = rng.random((bh if mask == "per head" else 1, nq, nk)) < 0.5
        keep[:, ::5] = False                                 # whole rows with nothing to attend to
    return dict(q=rng.standard_normal((bh, nq, d)), k=rng.standard_normal((bh, nk, d)),
                v=rng.standard_normal((bh, nk, d)), do=rng.standard_normal((bh, nq, d)),
                keep=keep, causal=causal, scale=scale)


EDGE_CASES = {
    "one query, one key, d=128": make_case(1, 1, 1, 128),
    "N=200, d=16 (the lessons' heads), causal": make_case(2, 200, 200, 16, causal=True),
    "N=65 (one past a tile), d=64": make_case(2, 65, 65, 64),
    "Nq=130 > Nk=70, causal (top rows see nothing)": make_case(1, 130, 70, 32, causal=True),
    "Nq=3 < Nk=200, causal, bottom-right aligned": make_case(1, 3, 200, 64, causal=True),
    "N=128 exactly two tiles, causal, d=128": make_case(1, 128, 128, 128, causal=True),
    "per-head mask with masked rows, BH=3": make_case(3, 70, 90, 32, mask="per head"),
    "shared mask + causal with masked rows": make_case(2, 100, 100, 64, causal=True, mask="shared", scale=0.3),
}


def assert_equals_dense_float64(case, o, lse, grads):
    want_o, want_grads = dense_attention(case)
    assert_close("O", o, want_o)                               # float64 tolerance: rtol 1e-9, atol 1e-11
    for name, got, want in zip(("dQ", "dK", "dV"), grads, want_grads):
        assert_close(name, got, want)
    s = masked_scores(case)
    m = np.max(s, axis=2, keepdims=True, initial=-np.inf)
    m_safe = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):
        assert_close("L", lse, (m_safe + np.log(np.exp(s - m_safe).sum(axis=2, keepdims=True)))[..., 0])


VERSIONS = ("v1", "v2", "v3-3xtf32", "v3-tf32")
NEW_VERSIONS = VERSIONS[1:]
# The later versions run a part of the edge cases (one emulated run is ~1 s of CI): the smallest shape, a
# partial tile of 16-dim heads under causal, the top rows that see nothing, and a per-head mask.
NEW_VERSION_EDGE_CASES = ("one query, one key, d=128", "N=200, d=16 (the lessons' heads), causal",
                          "Nq=130 > Nk=70, causal (top rows see nothing)", "per-head mask with masked rows, BH=3")


@pytest.mark.parametrize("version,name", [("v1", n) for n in EDGE_CASES] +
                         [(v, n) for v in NEW_VERSIONS for n in NEW_VERSION_EDGE_CASES])
def test_emulated_kernel_in_float64_equals_dense_attention_on_edge_cases(emulator64, tmp_path, version, name):
    """Every version in the float64 build equals the dense float64 oracle to 1e-9: the indexing, the tiles,
    the barriers and (v3) the tensor-core fragments. TF32 rounding is the identity in this build, so a
    fragment in the wrong lane is an O(1) error here, never mistaken for rounding."""
    case = EDGE_CASES[name]
    o, lse, grads = run_emulated(emulator64, case, tmp_path, version=version)
    assert_equals_dense_float64(case, o, lse, grads)
    if case["keep"] is not None:                               # rows with nothing to attend to: L = -inf
        assert np.isneginf(lse).any()


@pytest.mark.parametrize("version,examples", [("v1", 8), ("v2", 5), ("v3-3xtf32", 5), ("v3-tf32", 5)])
def test_emulated_kernel_in_float64_equals_dense_attention(emulator64, tmp_path_factory, version, examples):
    @settings(max_examples=examples)
    @given(attention_cases(max_bh=2, max_n=140, head_dims=(16, 32, 64, 128), same_head_dims=True))
    def check(case):
        o, lse, grads = run_emulated(emulator64, case, tmp_path_factory.mktemp("case"), version=version)
        assert_equals_dense_float64(case, o, lse, grads)
    check()


def assert_3xtf32_accurate(case, o, grads):
    """v3-3xtf32: O as assert_float32_accurate asks; the gradients with one more term, the logit error.

    Why. The split x = big + small keeps ~22 of float32's 24 mantissa bits, and the dropped small x small
    product is 2^-22 of x y: a 3xTF32 logit errs by up to ~2^-21 of scale * sum_k |q_k| |k_k|, some 4-8x a
    float32 dot product's error. The forward's L carries that error; the backward (v2's, float32) recomputes
    P = exp(S - L) with S in float32, so the two computations of S disagree by it, and every P of a row is
    off by the same factor e^(dL): the gradients err by ~dL of their size. At scale 2 and d = 128 the logits
    reach ~60. The term added to a gradient's bound: the logit error 4 * 2^-21 * scale * max_ij sum_k
    |q_ik| |k_jk| times its largest value; to O's, that logit error times 2 max |v| (logits off by at most e
    move a softmax average of v by at most 2 e max |v|).
    Measured (python tests/cuda_emulation/accuracy.py --cases 90 --seed 2026 --version v3-3xtf32 --check,
    120 cases, 30 of them masked): the float32 rule alone would need up to 31x the yardstick's error (dQ,
    scale 2, d 128; O 17.5x, 95th percentile 8.3x), and every case is within this rule. PyTorch's float32
    attention on tensor cores is 3xTF32 too."""
    logit_scale = tf32_attention(case)[2]
    assert_float32_accurate(case, o, grads, logit_error=4 * 2.0 ** -21 * logit_scale)


def tf32_attention(case):
    """The TF32 yardstick: dense attention in float64 from q, k rounded to TF32, with P and v rounded to TF32
    before O = P V -- the roundings a TF32 tensor-core kernel makes, and nothing else. Returns O, the
    log-sum-exp L of those logits (-inf where a row sees nothing) and scale * max_ij sum_k |q_ik| |k_jk|."""
    from tinyvision.kernels.mma_layout import to_tf32
    c32 = as_dtype(case, np.float32)
    r = lambda a: to_tf32(np.asarray(a, np.float32)).astype(np.float64)  # noqa: E731
    s = masked_scores(dict(c32, q=r(c32["q"]), k=r(c32["k"])))
    m = np.max(s, axis=2, keepdims=True, initial=-np.inf)
    p = np.exp(s - np.where(np.isfinite(m), m, 0))
    total = p.sum(axis=2, keepdims=True)
    o = r(np.where(total > 0, p / np.where(total > 0, total, 1), 0)) @ r(c32["v"])
    with np.errstate(divide="ignore"):
        lse = np.where(total > 0, np.where(np.isfinite(m), m, 0) + np.log(total), -np.inf)[..., 0]
    tau = 1 / np.sqrt(c32["q"].shape[-1]) if c32["scale"] is None else c32["scale"]
    abs_q, abs_k = np.abs(c32["q"]).astype(np.float64), np.abs(c32["k"]).astype(np.float64)
    return o, lse, abs(tau) * float((abs_q @ abs_k.swapaxes(-1, -2)).max(initial=0))


def assert_tf32_accurate(case, o, lse, grads):
    """v3-tf32: O within 2x the TF32 yardstick's error (+ 1e-6 of the largest value); L within float32 rounding
    of the yardstick's log-sum-exp; the gradients (v2's float32 backward, fed this forward's O and L) held to
    the float32 rule against the float64 backward from that same O and L.

    The O rule: the yardstick makes the same roundings, so the kernel's error is about the yardstick's (up to
    1.6e-2 absolute at scale 2 and d = 128, where the logits are large); the factor 2 covers the float32
    sums and the rescaling by the running max. L: the kernel's logits are exact products of the TF32
    inputs summed in float32, so they differ from the yardstick's by at most d 2^-24 scale sum |q||k| (the
    textbook bound of a d-term float32 sum), plus a few ulps of exp and log. The gradients: against the
    exact dense gradients they differ by up to ~1e-2 of their size, which is the TF32 forward's O and L,
    not the backward. Measured: python tests/cuda_emulation/accuracy.py --cases 90 --seed 2026 --version
    v3-tf32 --check, 120 of 120 cases (30 masked) within this rule."""
    c32 = as_dtype(case, np.float32)
    want_o, _ = dense_attention(c32)
    yard_o, yard_lse, logit_scale = tf32_attention(case)
    yard_err = np.abs(yard_o - want_o).max(initial=0)
    err = np.abs(np.asarray(o, np.float64) - want_o).max(initial=0)
    bound = 2 * yard_err + 1e-6 * max(1.0, np.abs(want_o).max(initial=0))
    assert err <= bound, f"O: max abs error {err:.3g} > bound {bound:.3g} (the TF32 yardstick errs by {yard_err:.3g})"
    lse = np.asarray(lse, np.float64)
    assert np.array_equal(np.isneginf(lse), np.isneginf(yard_lse)), "L: -inf (rows that see nothing) in other places"
    finite = np.isfinite(yard_lse)
    d = c32["q"].shape[-1]
    l_err = np.abs(lse[finite] - yard_lse[finite]).max(initial=0)
    l_bound = d * 2.0 ** -24 * logit_scale + 1e-6 * max(1.0, np.abs(yard_lse[finite]).max(initial=0))
    assert l_err <= l_bound, f"L: max abs error {l_err:.3g} against the TF32 yardstick > bound {l_bound:.3g}"
    args = (c32["keep"], c32["causal"], c32["scale"], 64, 64)
    o32, lse32 = np.asarray(o, np.float32), lse.astype(np.float32)
    c64 = as_dtype(c32, np.float64)
    want = flash_backward(c64["q"], c64["k"], c64["v"], o32.astype(np.float64), lse32.astype(np.float64), c64["do"], *args)
    ref = flash_backward(c32["q"], c32["k"], c32["v"], o32, lse32, c32["do"], *args)        # the float32 yardstick
    for name, got, w, r in zip(("dQ", "dK", "dV"), grads, want, ref):
        assert np.isfinite(got).all(), f"{name}: NaN or inf"
        err = np.abs(np.asarray(got, np.float64) - w).max(initial=0)
        ref_err = np.abs(np.asarray(r, np.float64) - w).max(initial=0)
        bound = 16 * ref_err + 1e-6 * max(1.0, np.abs(w).max(initial=0))
        assert err <= bound, f"{name}: max abs error {err:.3g} > bound {bound:.3g} (float32 yardstick {ref_err:.3g})"


@pytest.mark.parametrize("version,examples", [("v1", 5), ("v2", 4), ("v3-3xtf32", 4), ("v3-tf32", 4)])
def test_emulated_kernel_in_float32_is_as_accurate_as_its_precision(emulator, tmp_path_factory, version, examples):
    """float32 builds: v1 and v2 as accurate as float32 attention, v3-3xtf32 as 3xTF32 (its O as float32, its
    gradients up to the logit error), v3-tf32 as TF32."""
    @settings(max_examples=examples)
    @given(attention_cases(max_bh=2, max_n=140, head_dims=(16, 32, 64, 128), same_head_dims=True))
    def check(case):
        o, lse, grads = run_emulated(emulator, case, tmp_path_factory.mktemp("case"), version=version)
        if version == "v3-tf32":
            assert_tf32_accurate(case, o, lse, grads)
        elif version == "v3-3xtf32":
            assert_3xtf32_accurate(case, o, grads)
        else:
            assert_float32_accurate(case, o, grads)
    check()


def test_plain_tf32_is_measurably_less_accurate_than_3xtf32(emulator, tmp_path):
    """The two v3 kernels differ where they should: plain TF32 errs ~1e-3 on O, 3xTF32 like float32."""
    case = make_case(2, 100, 120, 64, seed=4)
    want_o, _ = dense_attention(as_dtype(case, np.float32))
    errors = {v: np.abs(run_emulated(emulator, case, tmp_path / v, version=v)[0] - want_o).max()
              for v in ("v3-tf32", "v3-3xtf32", "v2")}
    assert 1e-4 < errors["v3-tf32"] < 1e-2, errors
    assert errors["v3-3xtf32"] < errors["v3-tf32"] / 100 and errors["v3-3xtf32"] < 4 * errors["v2"] + 1e-7, errors


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_emulated_backward_is_bit_reproducible(emulator, tmp_path, version):
    """No atomics: two runs give the same bits (FA2's atomicAdd on dQ would not). v3 runs v2's backward."""
    case = make_case(2, 150, 150, 64, causal=True)
    first = run_emulated(emulator, case, tmp_path / "a", version=version)
    second = run_emulated(emulator, case, tmp_path / "b", version=version)
    for a, b in zip((first[0], first[1]) + first[2], (second[0], second[1]) + second[2]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("version,kind", [("v1", "forward"), ("v1", "dk_dv"), ("v1", "dq"), ("v2", "forward"),
                                          ("v2", "dk_dv"), ("v3-3xtf32", "forward")])
def test_emulation_catches_shared_memory_smaller_than_the_kernel_uses(emulator, tmp_path, version, kind):
    """A shared-memory buffer 65 floats short of the loader's size stops (AddressSanitizer),
    so the emulated runs above really are confined to shared_memory_bytes."""
    case = make_case(1, 70, 70, 32)
    smem = {k: shared_memory_bytes(k, 32, version) for k in ("forward", "dk_dv", "dq")}
    smem[kind] -= 4 * 65
    with pytest.raises(AssertionError, match="emulated kernel failed"):
        run_emulated(emulator, case, tmp_path, smem_override=smem, version=version)


@pytest.mark.parametrize("version", ["v1", "v2", "v3-tf32"])
def test_emulation_stops_a_float4_load_from_a_misaligned_address(emulator, tmp_path, monkeypatch, version):
    """v2 and v3 read K with float4 loads, which need 16-byte aligned addresses (the loader copies a
    misaligned array first). The emulation checks it: K shifted by one float stops them with
    UndefinedBehaviorSanitizer's alignment error, while v1's scalar loads do not care."""
    monkeypatch.setenv("TV_MISALIGN_K", "1")
    case = make_case(1, 20, 30, 16)
    if version == "v1":
        o, _, _ = run_emulated(emulator, case, tmp_path, version=version)
        np.testing.assert_allclose(o, dense_attention(as_dtype(case, np.float32))[0], atol=1e-5)
    else:
        with pytest.raises(AssertionError, match="misaligned address"):
            run_emulated(emulator, case, tmp_path, version=version)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_emulated_mma_uses_the_ptx_fragment_layout_of_mma_layout_py(emulators, tmp_path, precision):
    """The emulation's tv_mma_m16n8k8_tf32 and tinyvision/kernels/mma_layout.py (the PTX ISA's table, tested
    on its own in tests/test_mma_layout.py) agree: registers laid out by the Python model, multiplied by the
    emulated warp, assembled by the Python model, give A B + C (float32: from TF32 inputs)."""
    from tinyvision.kernels import mma_layout
    rng = np.random.default_rng(7)
    dtype = np.float64 if precision == "float64" else np.float32
    A, B, C = (rng.standard_normal(shape).astype(dtype) for shape in ((16, 8), (8, 8), (16, 8)))
    if precision == "float32":                        # the kernel hands the mma TF32 values (cvt.rna.tf32.f32)
        A32, B32 = mma_layout.to_tf32(A), mma_layout.to_tf32(B)
    for name, matrix in (("a", A32 if precision == "float32" else A), ("b", B32 if precision == "float32" else B),
                         ("c", C)):
        np.ascontiguousarray(mma_layout.fragment(name, matrix), dtype=dtype).tofile(tmp_path / f"{name}.bin")
    proc = subprocess.run([str(emulators[precision]), "mma", str(tmp_path)], capture_output=True, text=True,
                          env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    D = mma_layout.assemble("c", np.fromfile(tmp_path / "d.bin", dtype).reshape(32, 4))
    if precision == "float64":
        np.testing.assert_allclose(D, A @ B + C, rtol=1e-13, atol=1e-13)
    else:
        want = A32.astype(np.float64) @ B32.astype(np.float64) + C            # exact products, float32 sums
        np.testing.assert_allclose(D, want, rtol=1e-6, atol=1e-6)
        assert np.abs(D - (A.astype(np.float64) @ B + C)).max() > 1e-5       # and the TF32 rounding is real


# --- the loader, everywhere ---------------------------------------------------------------------------
def test_shared_memory_fits_h100_and_a100_and_needs_the_opt_in_above_48_kb():
    h100, a100 = 227 * 1024, 163 * 1024                        # cudaDevAttrMaxSharedMemoryPerBlockOptin
    sizes = {(kind, d): shared_memory_bytes(kind, d) for kind in ("forward", "dk_dv", "dq") for d in (16, 32, 64, 128)}
    assert max(sizes.values()) == sizes[("dk_dv", 128)] == 149_248 <= a100 < h100
    assert sizes[("forward", 32)] == 41_984 < 48 * 1024 < sizes[("forward", 64)] == 66_560


def test_every_version_fits_a100_shared_memory_and_names_its_kernels():
    from tinyvision.kernels import attention_cuda_c_layout as layout
    a100 = 163 * 1024
    for version in layout.VERSIONS:
        for d in (16, 32, 64, 128):
            assert max(shared_memory_bytes(k, d, version) for k in ("forward", "dk_dv", "dq")) <= a100, (version, d)
    assert shared_memory_bytes("forward", 64, "v2") == 4 * (3 * 64 * 68 + 64 * 68) == 69_632
    assert shared_memory_bytes("forward", 64, "v3-tf32") == 4 * 3 * 64 * 68 == 52_224        # no P tile
    assert layout.entry_points("v3-3xtf32", 32) == dict(forward="v3_forward_3xtf32_d32", dk_dv="v2_backward_dk_dv_d32",
                                                        dq="v2_backward_dq_d32", rowsum="v2_backward_rowsum")
    assert layout.forward_threads("v3-tf32") == 128 and layout.forward_threads("v2") == 256
    sources = {name: (ROOT / "csrc" / name).read_text() for name in set(layout.SOURCES.values())}
    def defined(name, text):                          # the kernels are stamped out by macros: name_d##D
        return f" {name}(" in text or f" {name.replace('_d64', '_d##D')}(" in text
    for version in layout.VERSIONS:                  # every name the loader launches exists in the source it loads
        names = layout.entry_points(version, 64)
        assert defined(names["forward"], sources[layout.SOURCES[version]]), names["forward"]
        backward_source = sources[layout.SOURCES["v1" if version == "v1" else "v2"]]
        assert all(defined(names[k], backward_source) for k in ("dk_dv", "dq", "rowsum")), names
    with pytest.raises(ValueError, match="version must be one of"):
        shared_memory_bytes("forward", 64, "v4")


def test_the_switch_takes_the_fastest_measured_version_that_is_accurate_enough(monkeypatch):
    from tinyvision.kernels import attention_cuda_c_layout as layout
    monkeypatch.setattr(layout, "MEASURED_SPEEDUP", {})
    assert [layout.choose(p) for p in ("float32", "3xtf32", "tf32")] == ["v2", "v3-3xtf32", "v3-tf32"]  # none measured
    monkeypatch.setattr(layout, "MEASURED_SPEEDUP", {"v1": 0.3, "v2": 0.9, "v3-3xtf32": 1.1, "v3-tf32": 2.1})
    assert [layout.choose(p) for p in ("float32", "3xtf32", "tf32")] == ["v2", "v3-3xtf32", "v3-tf32"]
    monkeypatch.setattr(layout, "MEASURED_SPEEDUP", {"v1": 0.3, "v2": 0.9, "v3-3xtf32": 0.7, "v3-tf32": 2.1})
    assert layout.choose("3xtf32") == "v2"           # a more accurate version that is faster wins
    monkeypatch.setattr(layout, "MEASURED_SPEEDUP", {"v1": 0.3, "v3-3xtf32": 1.5, "v3-tf32": 2.1})
    assert layout.choose("float32") == "v1"          # TF32 in any form is never chosen for float32
    monkeypatch.setattr(layout, "MEASURED_SPEEDUP", {})
    assert layout.choose("tf32", (7, 5)) == "v2"     # a T4: no TF32 tensor cores, so no v3
    with pytest.raises(ValueError, match="precision must be one of"):
        layout.choose("float16")


def test_asking_for_the_cuda_c_kernel_without_a_gpu_says_why():
    reason = kernels.why_unavailable("cuda_c")
    if reason is None:
        pytest.skip("this machine has CuPy and a GPU: the kernel is available")
    assert "CuPy" in reason or "GPU" in reason or "CUDA" in reason, reason
    with pytest.raises(RuntimeError, match="no 'cuda_c' kernel for 'attention' here: .+"):
        kernels.kernel("attention", "cuda_c")
    assert kernels.implementation("attention", "cuda") != "cuda_c"


# --- 3. on a GPU ---------------------------------------------------------------------------------------
_WHY = kernels.why_unavailable("cuda_c")
gpu = pytest.mark.skipif(_WHY is not None, reason=f"CUDA C kernel unavailable here: {_WHY}")


@gpu
@settings(max_examples=60)
@given(attention_cases(max_bh=4, max_n=300, head_dims=(16, 32, 64, 128), same_head_dims=True))
def test_gpu_cuda_c_kernel_equals_dense_float64(case):
    from tinyvision.kernels import attention_cuda_c as cuda_c
    args = (case["keep"], case["causal"], case["scale"])
    # float32, each array keeping its layout (transposed and strided views about half the time):
    # cuda_c.forward must pack them itself before it hands raw pointers to the kernel
    case32 = as_dtype(case, np.float32)
    q, k, v, do = (case32[n] for n in ("q", "k", "v", "do"))
    o, lse = cuda_c.forward(q, k, v, *args)
    grads = cuda_c.backward(q, k, v, o, lse, do, *args)
    assert_float32_accurate(case, o, grads)


@gpu
def test_gpu_attention_op_on_cuda_uses_the_cuda_c_kernel_and_matches_cpu():
    case = make_case(2, 197, 197, 64, causal=False, seed=3)
    q, k, v = (tv.Tensor(case[n].astype(np.float32), requires_grad=True) for n in "qkv")
    qc, kc, vc = (t.detach().to("cuda") for t in (q, k, v))
    for t in (qc, kc, vc):
        t.requires_grad = True
    assert kernels.implementation("attention", "cuda", (qc.data, kc.data, vc.data)) == "cuda_c"
    out_cpu, out_gpu = F.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(qc, kc, vc)
    out_cpu.backward(case["do"].astype(np.float32))
    out_gpu.backward(tv.Tensor(case["do"].astype(np.float32)).to("cuda").data)
    assert_close("O", out_gpu.to("cpu").numpy(), out_cpu.numpy(), np.float32)
    for name, a, b in (("dQ", qc, q), ("dK", kc, k), ("dV", vc, v)):
        assert_close(name, tv.backend.to_device(a.grad, "cpu"), b.grad, np.float32)


@gpu
def test_gpu_cuda_c_runs_n_65536_with_memory_linear_in_n():
    import cupy as cp
    from tinyvision.kernels import attention_cuda_c as cuda_c
    n, d = 65_536, 64
    rng = cp.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, n, d), dtype=cp.float32) for _ in range(3))
    pool = cp.get_default_memory_pool()
    before = pool.used_bytes()
    o, lse = cuda_c.forward(q, k, v, None, True)
    cp.cuda.Device().synchronize()
    assert pool.used_bytes() - before <= o.nbytes + lse.nbytes + 1024     # no N x N buffer (that is 16 GiB)
    assert bool(cp.isfinite(o).all())
