"""How far the float32 CUDA C kernel is from the float32 references, over random cases (host emulation).

    python tests/cuda_emulation/accuracy.py [--cases 120] [--seed 123] [--version v1] [--check]

--check also holds every case to the version's own rule in tests/test_flash_cuda_c.py
(assert_float32_accurate for v1 / v2, assert_3xtf32_accurate, assert_tf32_accurate), with a random mask in
one case of three, and prints how many cases pass it: the figures quoted beside those rules.

For each case (BH 1-2, Nq and Nk 1-140, d 16/32/64/128, scale 1/sqrt(d), 0.3 or 2, causal or not) it
runs the kernel source on the float32 host emulation and compares O, dQ, dK, dV with the dense float64
attention; the yardsticks are attention_tiled.py in float32 (tiles of 64) and the dense op in float32.
It prints the distribution of kernel error / yardstick error: the figures behind the factor 16 of
tests/test_flash_cuda_c.py::assert_float32_accurate. About one second per case on 2 cores.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))        # tests/, for the helpers

import tinyvision as tv  # noqa: E402
import tinyvision.ops as F  # noqa: E402
from attention_cases import as_dtype, dense_attention  # noqa: E402
from test_flash_cuda_c import (assert_3xtf32_accurate, assert_float32_accurate, assert_tf32_accurate,  # noqa: E402
                               build_emulator, make_case, run_emulated)
from tinyvision import kernels  # noqa: E402
from tinyvision.kernels.attention_tiled import flash_backward, flash_forward  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=120)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--version", default="v1", choices=("v1", "v2", "v3-3xtf32", "v3-tf32"))
    parser.add_argument("--check", action="store_true", help="hold each case to the version's rule (masks too)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tinyvision-accuracy-"))
    exe = build_emulator(work, "float32")
    rng = np.random.default_rng(args.seed)
    ratios, needed, worst = [], [], []
    rule = {"v3-3xtf32": lambda c, o, lse, g: assert_3xtf32_accurate(c, o, g),
            "v3-tf32": assert_tf32_accurate}.get(args.version, lambda c, o, lse, g: assert_float32_accurate(c, o, g))
    failures = []
    for i in range(args.cases):
        d, scale = int(rng.choice([16, 32, 64, 128])), [None, 0.3, 2.0][i % 3]
        nq, nk, causal = int(rng.integers(1, 141)), int(rng.integers(1, 141)), bool(rng.integers(2))
        case = as_dtype(make_case(int(rng.integers(1, 3)), nq, nk, d, causal=causal, seed=i, scale=scale), np.float32)
        if args.check and i % 3 == 1:            # masks (with whole rows masked), checked by the rule only
            masked = as_dtype(make_case(int(rng.integers(1, 3)), nq, nk, d, causal=causal, seed=i, scale=scale,
                                        mask=["shared", "per head"][i % 2]), np.float32)
            o, lse, grads = run_emulated(exe, masked, work / "case", version=args.version)
            try:
                rule(masked, o, lse, grads)
            except AssertionError as err:
                failures.append(f"case {i} (d {d}, scale {scale}, Nq {nq}, Nk {nk}, masked): {err}")
        o, lse, grads = run_emulated(exe, case, work / "case", version=args.version)
        if args.check:
            try:
                rule(case, o, lse, grads)
            except AssertionError as err:
                failures.append(f"case {i} (d {d}, scale {scale}, Nq {nq}, Nk {nk}): {err}")
        want_o, want_grads = dense_attention(case)
        ref_o, ref_lse = flash_forward(case["q"], case["k"], case["v"], None, causal, scale, 64, 64)
        ref_grads = flash_backward(case["q"], case["k"], case["v"], ref_o, ref_lse, case["do"], None, causal, scale, 64, 64)
        with kernels.use("reference"):
            ts = [tv.Tensor(case[n], requires_grad=True) for n in "qkv"]
            out = F.scaled_dot_product_attention(*ts, causal=causal, scale=scale)
            out.backward(case["do"])
        dense32 = (out.numpy(), ts[0].grad, ts[1].grad, ts[2].grad)
        for name, got, want, ref, den in zip(("O", "dQ", "dK", "dV"), (o,) + grads, (want_o,) + want_grads,
                                             (ref_o,) + ref_grads, dense32):
            err, ref_err, dense_err = (float(np.abs(np.asarray(a, np.float64) - want).max()) for a in (got, ref, den))
            floor = 1e-6 * max(1.0, float(np.abs(want).max(initial=0)))
            ratios.append(err / max(ref_err, 1e-30))
            needed.append(max(err - floor, 0.0) / max(ref_err, 1e-30))   # the factor the test would need
            worst.append((needed[-1], ratios[-1], name, d, str(scale), nq, nk, causal, err, ref_err, dense_err))
    r, f = np.array(ratios), np.array(needed)
    print(f"{args.cases} cases x 4 outputs (O, dQ, dK, dV):")
    print(f"  kernel error / attention_tiled float32 error: median {np.median(r):.2f}, "
          f"95th percentile {np.percentile(r, 95):.2f}, max {r.max():.2f}")
    print(f"  factor the test's bound (factor x reference error + 1e-6 x max|value|) needs: median "
          f"{np.median(f):.2f}, 95th percentile {np.percentile(f, 95):.2f}, max {f.max():.2f} (the test uses 16)")
    print("  worst five (needed factor, ratio, output, d, scale, Nq, Nk, causal, kernel err, reference err, "
          "dense float32 err):")
    for w in sorted(worst, key=lambda w: -w[0])[:5]:
        print("    " + ", ".join(f"{x:.3g}" if isinstance(x, float) else str(x) for x in w))


    if args.check:
        total = args.cases + len(range(1, args.cases, 3))
        print(f"  {args.version}'s rule: {total - len(failures)} of {total} cases within it"
              + "".join(f"\n    FAIL {f}" for f in failures))


if __name__ == "__main__":
    main()
