"""Lesson 10: why flash attention exists, and what a compiled kernel buys over NumPy.

Run:  python lessons/10_kernels.py            (full: a couple of minutes on 2 CPU cores)
      python lessons/10_kernels.py --quick    (CI: well under a minute)      options: --seed N  --out DIR

Motivation
    Dense attention builds the N x N score matrix for every head: at N = 16,384 that is a gigabyte in
    float32, per head, per layer, just to be read back once. FlashAttention (Dao et al. 2022; Dao 2023)
    computes exactly the same output tile by tile and never stores it. The trick that makes this
    possible is the ONLINE SOFTMAX: a softmax over a row can be computed while the row streams past
    in pieces, keeping only a running max and a running sum.

The idea
    1. Softmax needs max and sum over the whole row. Streaming a row in blocks, keep m (the max so
       far) and l (the sum of e^(s - m) so far). A new block with a larger max m' rescales what was
       summed: l <- e^(m - m') l + sum(e^(s_block - m')). The same factor rescales the running
       weighted sum of values, so the output is exact when the last block has been seen.
    2. Keep L = m + log l per row (the logsumexp). The backward recomputes P = e^(S - L) tile by tile
       instead of storing it, and uses D = rowsum(dO o O) (= rowsum(P o dP)).
    3. The memory of the tiled version is a (block x block) tile, whatever N is: O(N) per head in all
       (the output and L) instead of O(N^2).
    4. A compiled kernel (Numba) fuses the loops of softmax, layer norm and GELU into one pass over
       memory with no temporaries; NumPy runs each elementwise step as a separate pass. The bench
       measures what that is worth here.

What to look at
    The printed trace of the online softmax; the equality checks (each prints its largest
    difference); lessons/out/10_memory.png
    (bytes of working memory against N, dense vs tiled, log-log); the timing table (medians, measured
    side by side, with n/a where an implementation cannot run here, e.g. GPU kernels without a GPU).

Exercises
    1. In tinyvision/kernels/attention_tiled.py remove the guard for fully masked rows
       (_finite_or_zero) and run the masked-row check. Where does the NaN come from?
    2. Make the online softmax divide by l at every block (FlashAttention-1) instead of once at the
       end. Same result? How many more divisions for N = 1024, block 64?
    3. From the memory plot: at which N does one head's dense score matrix pass 1 GiB in float32?
    4. Run `python -m tinyvision.bench` and explain the layer norm and GELU ratios from the number
       of passes over memory each implementation makes.
"""
# %% Imports and the command line
from __future__ import annotations

import json
import math

import numpy as np

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import kernels
from tinyvision.kernels.attention_tiled import attention_memory_bytes, flash_backward, flash_forward

from _common import compare, one_blas_thread, parse_args, pyplot, save_figure

args = parse_args(__doc__, cpu_only="this lesson compares the CPU kernels; the GPU ones are timed by "
                                     "python -m tinyvision.bench --gpu")
one_blas_thread()
QUICK = args.quick
rng = np.random.default_rng(args.seed)

# %% 1. The online softmax on one row, block by block
row = rng.standard_normal(12) * 3
block = 4
print(f"== 1. the online softmax of one row of {row.size} scores, in blocks of {block}")
m, l, weighted = -math.inf, 0.0, 0.0
values = rng.standard_normal(row.size)           # one value per key (d = 1), to follow the output too
for start in range(0, row.size, block):
    s = row[start:start + block]
    m_new = max(m, s.max())
    rescale = math.exp(m - m_new) if m > -math.inf else 0.0
    p = np.exp(s - m_new)
    l = rescale * l + p.sum()
    weighted = rescale * weighted + p @ values[start:start + block]
    m = m_new
    print(f"  keys {start:2d}-{start + len(s) - 1:2d}: running max {m:+.4f}, running sum {l:.4f}, "
          f"rescale of the earlier sum {rescale:.4f}")
exact = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
print(f"  output sum_k p_k v_k: online {weighted / l:+.10f}, two-pass softmax {exact @ values:+.10f}")
print(f"  logsumexp: online m + log l = {m + math.log(l):.10f}, direct {np.log(np.exp(row).sum()):.10f}")
assert np.isclose(weighted / l, exact @ values, rtol=1e-12)

# %% 2. Tiled attention equals dense attention, for any block size
bh, n, d = 2, (37 if QUICK else 100), 16
q, k, v = (rng.standard_normal((bh, n, d)) for _ in range(3))
keep = np.tril(np.ones((n, n), bool))
keep[5] = False                                   # one query that may attend to nothing
dense = [tv.Tensor(a, requires_grad=True) for a in (q, k, v)]
with kernels.use("reference"):
    out, p = F.scaled_dot_product_attention(*dense, mask=keep, return_weights=True)
do = rng.standard_normal(out.shape)
out.backward(do)
blocks = [(1, 1), (5, 7), (16, 16), (64, 64)]
ragged = sorted({b for pair in blocks for b in pair if n % b})   # block sizes that leave a partial last block
print(f"\n== 2. dense vs tiled attention: BH {bh}, N {n} (not a multiple of {', '.join(map(str, ragged))}), d {d}, "
      "causal mask with one fully masked row, float64")
diffs = {}
for bq, bk in blocks:
    o, lse = flash_forward(q, k, v, keep=keep, block_q=bq, block_k=bk)
    dq, dk, dv = flash_backward(q, k, v, o, lse, do, keep=keep, block_q=bq, block_k=bk)
    diff = max(np.abs(o - out.numpy()).max(), *(np.abs(a - t.grad).max() for a, t in zip((dq, dk, dv), dense)))
    diffs[f"{bq}x{bk}"] = float(diff)
    print(f"  blocks {bq:2d} x {bk:2d}: largest difference to dense (O, dQ, dK, dV) {diff:.2e}")
s = np.where(keep, (q @ k.transpose(0, 2, 1)) / math.sqrt(d), -np.inf)   # the masked scores
row_lse = F.logsumexp(tv.Tensor(s), axis=-1).numpy()                       # -inf for the masked row
finite = np.isfinite(row_lse)
EQUAL = 1e-12   # float64: anything closer is rounding


def equals(diff: float) -> str:
    return "equals" if diff < EQUAL else "does NOT equal"


lse_diff = float(np.abs(lse[finite] - row_lse[finite]).max())
print(f"  L = m + log l {equals(lse_diff)} the row logsumexp: max difference {lse_diff:.2e}; "
      f"the masked row: output {np.abs(o[:, 5]).max():.1f}, L {lse[0, 5]}")
D_out = (do * out.numpy()).sum(-1)
dP = do @ v.transpose(0, 2, 1)
D_diff = float(np.abs(D_out - (p * dP).sum(-1)).max())
print(f"  D = rowsum(dO * O) {equals(D_diff)} rowsum(P * dP): max difference {D_diff:.2e}")

# %% 3. Memory against sequence length
ns = [2 ** i for i in range(7, 15)]
HEAD_DIM, TILE = 64, 64
dense_mb = [attention_memory_bytes(n_, HEAD_DIM, TILE, naive=True) / 2 ** 20 for n_ in ns]
tiled_mb = [attention_memory_bytes(n_, HEAD_DIM, TILE, naive=False) / 2 ** 20 for n_ in ns]
print(f"\n== 3. working memory per head beyond Q, K, V, O (float32, d {HEAD_DIM}, tiles of {TILE})")
for n_, a, b in zip(ns, dense_mb, tiled_mb):
    print(f"  N {n_:6d}: dense {a:10.2f} MiB   tiled {b:6.3f} MiB")
plt = pyplot()
fig, ax = plt.subplots(figsize=(5.5, 3.6))
ax.loglog(ns, dense_mb, "o-", label="dense: the N x N scores, O(N^2)")
ax.loglog(ns, tiled_mb, "s-", label=f"tiled: one {TILE} x {TILE} tile, O(1) per head")
ax.set(xlabel="sequence length N", ylabel="MiB per head", title="attention working memory")
ax.legend()
save_figure(fig, args.out, "10_memory.png")

# %% 4. The CPU timing table (and the GPU one where a GPU exists)
from tinyvision.bench import bench_ops, header  # noqa: E402

print("\n== 4. timings on this machine")
print(header())
results = bench_ops(quick=QUICK, repeats=3 if QUICK else 7)
ratios = {f"{op} {shape}": round(v["reference"] / v["numba"], 2) for (op, shape), v in results.items() if "numba" in v}
for (op, shape), v in results.items():
    if "numba" in v:
        numba_ms, numpy_ms = 1000 * v["numba"], 1000 * v["reference"]   # medians; within 10% counts as a tie
        print(f"  {op} {shape}: " + compare("numba", numba_ms, "numpy", numpy_ms, margin=0.1 * numpy_ms,
                                            higher_is_better=False, verb="is faster than", fmt=".2f", unit=" ms"))

print("result: " + json.dumps({"lesson": "10_kernels", "quick": QUICK, "seed": args.seed,
              "tiled_equals_dense_max_diff": max(diffs.values()),
              "dense_MiB_at_16384": round(dense_mb[-1], 1), "tiled_MiB_at_16384": round(tiled_mb[-1], 3),
              "numba_speedup_over_numpy": ratios}))
