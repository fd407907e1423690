"""The CuPy backend end to end. On a machine without a GPU every test here skips, with the reason.

- a ViT trained a few steps on cupy follows the loss curve of the same ViT trained on the CPU;
- the numba.cuda kernels on a real GPU at realistic sizes (the simulator tests use tiny ones);
- every CUDA C attention version (attention_cuda_c.VERSIONS) where the host emulation cannot go: N =
  16,384 against dense float64 rows, a backward over many tiles, the same bits on every run and from
  both builds (nvcc's fatbin and NVRTC), and more heads than the grid holds refused;
- every lesson's --quick mode runs with --device cuda and ends with its result line.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import kernels
from tinyvision.backend import cuda_unavailable_reason
from tinyvision.bench.attention_check import dense_rows_float64
from tinyvision.kernels.attention_cuda_c_layout import VERSIONS, precision_of
from tinyvision.models import ViT
from tinyvision.optim import AdamW
from attention_cases import as_dtype, assert_close, dense_attention

ROOT = Path(__file__).resolve().parents[1]
gpu = pytest.mark.skipif(not tv.cuda_available(), reason=f"no GPU here: {cuda_unavailable_reason()}")


def train_losses(device, steps=6, seed=0):
    """Loss per step of a tiny ViT trained with AdamW on fixed random batches, every tensor on `device`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, 16, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, (steps, 16))
    with tv.use_device(device):
        model = ViT(img_size=16, patch_size=4, in_chans=3, num_classes=10, embed_dim=64, depth=2, num_heads=2,
                    seed=seed)
        opt = AdamW(model.parameters(), lr=1e-3)
        losses = []
        for xb, yb in zip(x, y):
            loss = F.cross_entropy(model(tv.Tensor(xb)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return np.array(losses)


@gpu
def test_vit_trained_on_cupy_follows_the_cpu_loss_curve():
    cpu, cuda = train_losses("cpu"), train_losses("cuda")
    assert cuda[-1] < cuda[0]                                   # it learns
    # float32 sums in another order (cuBLAS, the CUDA C attention) drift slowly over the steps. Not yet
    # run on a GPU: this tolerance is an estimate made before any GPU run (float32 rounding ~1e-7 per op,
    # grown over 6 AdamW steps), not a measured one; change it only with a measured reason.
    np.testing.assert_allclose(cuda, cpu, rtol=2e-3, atol=2e-4)


@gpu
@pytest.mark.parametrize("n", [197, 1000])
def test_numba_cuda_attention_on_a_real_gpu_equals_dense_float64(n):
    why = kernels.why_unavailable("numba_cuda")
    if why is not None:
        pytest.skip(f"numba.cuda unavailable: {why}")
    from tinyvision.kernels import attention_numba_cuda as numba_cuda
    from tinyvision.kernels.device_numba_cuda import SIMULATED
    if SIMULATED:
        pytest.skip("NUMBA_ENABLE_CUDASIM=1: this test is for the real GPU")
    rng = np.random.default_rng(n)
    case = dict(q=rng.standard_normal((3, n, 64)), k=rng.standard_normal((3, n, 64)), v=rng.standard_normal((3, n, 64)),
                do=rng.standard_normal((3, n, 64)), keep=None, causal=True, scale=None)
    case = as_dtype(case, np.float32)
    o, lse = numba_cuda.attention_forward(case["q"], case["k"], case["v"], None, True)
    grads = numba_cuda.attention_backward(case["q"], case["k"], case["v"], o, lse, case["do"], None, True)
    want_o, want_grads = dense_attention(case)
    assert_close("O", o, want_o, np.float32)
    for name, got, want in zip(("dQ", "dK", "dV"), grads, want_grads):
        assert_close(name, got, want, np.float32)


# --- the CUDA C attention kernels, every version -------------------------------------------------------
_NO_CUDA_C = kernels.why_unavailable("cuda_c")
cuda_c_kernel = pytest.mark.skipif(_NO_CUDA_C is not None, reason=f"CUDA C kernel unavailable here: {_NO_CUDA_C}")
# max abs error / max(1, max |reference|) of O at large N, by the version's precision (precision_of).
# float32: O_i sums Nk terms P_ij v_j; a sequential float32 sum of 16,384 terms errs by ~sqrt(N) x 6e-8
# = 8e-6 typically and by N x 6e-8 = 1e-3 at worst, so 2e-4 sits well above what rounding does and far
# below an indexing bug (order 1). tf32 keeps 10 mantissa bits: each product is off by up to 2^-11 =
# 5e-4 relative, a logit by a few of those, O by ~1e-3.
O_TOL = {"float32": 2e-4, "3xtf32": 2e-4, "tf32": 5e-3}


def _cuda_c():
    from tinyvision.kernels import attention_cuda_c as cuda_c
    return cuda_c


def _random(shapes, seed):
    """float32 standard normal arrays on the GPU, one per shape."""
    import cupy as cp
    rng = cp.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=cp.float32) for shape in shapes]


@gpu
@cuda_c_kernel
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("version", VERSIONS)
def test_cuda_c_at_n_16384_equals_dense_float64_on_sampled_rows(version, causal):
    _skip_unless_this_gpu_runs(version)
    import cupy as cp
    bh, n, d = 2, 16_384, 64
    q, k, v = _random([(bh, n, d)] * 3, seed=7)
    o, _ = _cuda_c().forward(q, k, v, causal=causal, version=version)
    # 62 random query rows and both ends (causal: row 0 sees one key, the last row all 16,384)
    picked = np.concatenate([[0, n - 1], np.random.default_rng(7).choice(np.arange(1, n - 1), 62, replace=False)])
    heads, rows = cp.arange(bh), cp.asarray(np.sort(picked))
    want = dense_rows_float64(q, k, v, heads, rows, causal=causal)                  # (BH, 64, d) float64
    got = o[heads[:, None], rows[None, :]].astype(cp.float64)
    assert bool(cp.isfinite(got).all()), f"{version}: NaN or inf in O at N {n}"
    err = float(cp.abs(got - want).max())
    bound = O_TOL[precision_of(version)] * max(1.0, float(cp.abs(want).max()))
    assert err <= bound, (f"{version}, causal={causal}: O at N {n} errs by {err:.3g} on {bh * rows.size} sampled "
                          f"rows > {bound:.3g}")


@gpu
@cuda_c_kernel
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("version", VERSIONS)
def test_cuda_c_backward_over_many_tiles_is_as_accurate_as_float32_attention(version, causal):
    """N = 1030: 17 tiles of 64 rows (the last one 6), so dK and dV sum over 17 query tiles and dQ over
    17 key tiles. Each version is held to its rule in tests/test_flash_cuda_c.py, the same as on the host
    emulation: v1 and v2 assert_float32_accurate (the oracle is dense float64 attention of the same float32
    inputs, the yardstick attention_tiled.py in float32 with tiles of 64, and the kernel may err by 16x the
    yardstick's error plus 1e-6 of the largest value), v3-3xtf32 assert_3xtf32_accurate (its gradients
    may also err by the 3xTF32 logit error), v3-tf32 assert_tf32_accurate (O within 2x a float64 model of
    TF32 rounding, gradients equal to the float64 backward from its own O and L)."""
    _skip_unless_this_gpu_runs(version)
    import cupy as cp
    cuda_c = _cuda_c()
    bh, n, d = 2, 1030, 64
    rng = np.random.default_rng(11)
    q, k, v, do = (rng.standard_normal((bh, n, d)).astype(np.float32) for _ in range(4))
    qd, kd, vd, dod = (cp.asarray(a) for a in (q, k, v, do))
    o, lse = cuda_c.forward(qd, kd, vd, causal=causal, version=version)
    grads = cuda_c.backward(qd, kd, vd, o, lse, dod, causal=causal, version=version)
    # the same rules as on the host emulation (tests/test_flash_cuda_c.py, where their reasons are written)
    from test_flash_cuda_c import assert_3xtf32_accurate, assert_float32_accurate, assert_tf32_accurate
    case = dict(q=q, k=k, v=v, do=do, keep=None, causal=causal, scale=None)
    o, lse, grads = o.get(), lse.get(), tuple(g.get() for g in grads)
    {"v3-tf32": lambda: assert_tf32_accurate(case, o, lse, grads),
     "v3-3xtf32": lambda: assert_3xtf32_accurate(case, o, grads)}.get(
        version, lambda: assert_float32_accurate(case, o, grads))()


def _skip_unless_this_gpu_runs(version):
    """v3 needs TF32 tensor cores (compute capability 8.0, an A100 or newer): skip it elsewhere, with the reason."""
    import cupy as cp
    from tinyvision.kernels.attention_cuda_c_layout import MIN_COMPUTE_CAPABILITY
    cc = cp.cuda.Device().compute_capability                    # "90" for 9.0
    have = (int(cc[:-1]), int(cc[-1]))
    if have < MIN_COMPUTE_CAPABILITY[version]:
        pytest.skip(f"{version} needs compute capability {MIN_COMPUTE_CAPABILITY[version]}, this GPU has {have}")


def _causal_run(version, build=None):
    """O, L, dQ, dK, dV (NumPy) of one causal case (BH 3, N 700, d 64), fresh arrays each call."""
    cuda_c = _cuda_c()
    q, k, v, do = _random([(3, 700, 64)] * 4, seed=5)
    o, lse = cuda_c.forward(q, k, v, causal=True, version=version, build=build)
    grads = cuda_c.backward(q, k, v, o, lse, do, causal=True, version=version, build=build)
    return [a.get() for a in (o, lse, *grads)]


@gpu
@cuda_c_kernel
@pytest.mark.parametrize("version", VERSIONS)
def test_cuda_c_forward_and_backward_are_bit_reproducible(version):
    _skip_unless_this_gpu_runs(version)
    # the backward is meant to be deterministic (dK, dV and dQ each summed by one block in a fixed
    # order, no atomics), so two runs give the same bits and a training run can be repeated exactly
    first, second = _causal_run(version), _causal_run(version)
    for name, a, b in zip(("O", "L", "dQ", "dK", "dV"), first, second):
        assert np.array_equal(a, b), f"{version}: {name} differs between two runs by up to {np.abs(a - b).max():.3g}"


@gpu
@cuda_c_kernel
@pytest.mark.parametrize("version", VERSIONS)
def test_cuda_c_fatbin_and_nvrtc_builds_agree_bit_for_bit(version):
    _skip_unless_this_gpu_runs(version)
    origin = _cuda_c().kernel_origin(version=version)
    if not origin["kind"].startswith("fatbin"):
        pytest.skip(f"no current fatbin for {version} here ({origin.get('why_not_binary')}): nothing to compare")
    import json
    import cupy as cp
    fatbin, nvrtc = _causal_run(version, build="fatbin"), _causal_run(version, build="nvrtc")
    built_with = json.loads((ROOT / "tinyvision" / "kernels" / "_bin" / "BUILD.json").read_text()).get("nvcc_version")
    nvrtc_version = "%d.%d" % cp.cuda.nvrtc.getVersion()
    # one source, two compilers. Of the same CUDA release they should agree bit for bit (a difference means
    # they contracted a * b + c into an FMA, or ordered a sum, differently, so a result would depend on how
    # the kernel was installed); of different releases they may schedule differently, and then agree to
    # float32 rounding only
    for name, a, b in zip(("O", "L", "dQ", "dK", "dV"), fatbin, nvrtc):
        if built_with == nvrtc_version:
            assert np.array_equal(a, b), (f"{version}: {name} from the nvcc {built_with} fatbin and from NVRTC "
                                          f"{nvrtc_version} differ by up to {np.abs(a - b).max():.3g}")
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{version} {name}: nvcc {built_with} "
                                       f"vs NVRTC {nvrtc_version}")


@gpu
@cuda_c_kernel
@pytest.mark.parametrize("version", VERSIONS)
def test_cuda_c_refuses_more_heads_than_the_grids_y_axis_holds(version):
    _skip_unless_this_gpu_runs(version)
    import cupy as cp
    cuda_c = _cuda_c()
    q = cp.zeros((65_536, 1, 16), cp.float32)              # BH = 65,536 > 65,535 block rows; 4 MB in all
    with pytest.raises(ValueError, match="forward.*grid's y limit"):
        cuda_c.forward(q, q, q, version=version)
    with pytest.raises(ValueError, match="backward.*grid's y limit"):
        cuda_c.backward(q, q, q, q, cp.zeros((65_536, 1), cp.float32), q, version=version)


@gpu
@pytest.mark.parametrize("lesson", sorted(p.name for p in (ROOT / "lessons").glob("[0-9][0-9]*_*.py")))
def test_every_lesson_runs_on_cuda(lesson, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "lessons" / lesson), "--quick", "--device", "cuda",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("result: ") and isinstance(json.loads(last[len("result: "):]), dict)
