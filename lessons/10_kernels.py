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
    5. On a GPU the tile products run on tensor cores: mma.sync.aligned.m16n8k8 computes D = A B + C
       (A 16 x 8, B 8 x 8) as one instruction of a 32-thread warp, each thread ("lane") holding a few
       entries of each matrix in registers, at places the PTX ISA fixes (tinyvision/kernels/mma_layout.py).
       A flash-attention kernel keeps P in those registers between S = Q K^T and O = P V by reading the
       keys in a permuted order. TF32 operands keep 10 mantissa bits (error ~2^-11); splitting each
       input in two TF32 numbers and doing three products (3xTF32) recovers nearly float32 accuracy.
       No GPU runs in this section: it prints the documented layout and a NumPy model of the instruction.

What to look at
    The printed trace of the online softmax; the equality checks (each prints its largest
    difference); lessons/out/10_memory.png
    (bytes of working memory against N, dense vs tiled, log-log); the timing table (medians, measured
    side by side, with n/a where an implementation cannot run here, e.g. GPU kernels without a GPU);
    the lane.register grids of A, B and C and lessons/out/10_mma_fragments.png (the same, coloured by
    groupID); the TF32 and 3xTF32 errors against float64.

Exercises
    1. In tinyvision/kernels/attention_tiled.py remove the guard for fully masked rows
       (_finite_or_zero) and run the masked-row check. Where does the NaN come from?
    2. Make the online softmax divide by l at every block (FlashAttention-1) instead of once at the
       end. Same result? How many more divisions for N = 1024, block 64?
    3. From the memory plot: at which N does one head's dense score matrix pass 1 GiB in float32?
    4. Run `python -m tinyvision.bench` and explain the layer norm and GELU ratios from the number
       of passes over memory each implementation makes.
    5. In the lane.register grids: which lanes must exchange values (e.g. with __shfl_sync) to turn the
       C fragment of S into the A fragment of P WITHOUT permuting the keys? Why is the permutation free?
    6. 3xTF32 already drops small x small. Drop small x big as well (2xTF32: big x big + big x small)
       with mma_layout.split_tf32: which error between TF32's and 3xTF32's does it reach, and why?
"""
# %% Imports and the command line
from __future__ import annotations

import json
import math

import numpy as np

import tinyvision as tv
import tinyvision.ops as F
from tinyvision import kernels
from tinyvision.kernels import attention_cuda_c_layout as cuda_c_layout
from tinyvision.kernels import mma_layout
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

# %% 5. Tensor cores: which lane of a warp holds which entry (the PTX layout; no GPU runs here)
print("\n== 5. tensor cores: the fragments of mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32")
print("  One instruction of a 32-lane warp computes D = A B + C, A 16 x 8, B 8 x 8, C and D 16 x 8. Each lane holds")
print("  4 entries of A, 2 of B, 4 of C/D in registers, where the PTX ISA says (this is that documented layout,")
print("  modelled in NumPy by tinyvision/kernels/mma_layout.py; no tensor core ran). groupID g = lane >> 2,")
print("  threadID_in_group t = lane % 4. Each cell: lane.register (12.3 = register 3 of lane 12).")


def lane_grid(operand: str) -> list[str]:
    """One text line per row of the operand, each entry written lane.register."""
    return [" ".join(f"{lane:2d}.{reg}" for lane, reg in row) for row in mma_layout.owners(operand)]


a_grid, b_grid, c_grid = lane_grid("a"), lane_grid("b"), lane_grid("c")
width = len(a_grid[0])
print("  A (m x k):    a0 = A[g][t],  a1 = A[g+8][t],  a2 = A[g][t+4],  a3 = A[g+8][t+4]")
print("  C, D (m x n): c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1]")
print(f"       {'A':<{width}}    C and D")
for i, (a_row, c_row) in enumerate(zip(a_grid, c_grid)):
    print(f"  m{i:2d}  {a_row}    {c_row}")
print("  B (k x n):    b0 = B[t][g],  b1 = B[t+4][g]")
for i, b_row in enumerate(b_grid):
    print(f"  k{i:2d}  {b_row}")
entries = {name: ", ".join(str(entry(5, r)) for r in range(mma_layout.REGISTERS[name.lower()]))
           for name, entry in (("A", mma_layout.a_entry), ("B", mma_layout.b_entry), ("C", mma_layout.c_entry))}
print("  Lane 5 (g 1, t 1) holds, as (row, col): " + "; ".join(f"{name} {e}" for name, e in entries.items()))

GROUP_COLOURS = plt.get_cmap("tab20").colors[1::2][:8]                  # 8 light colours, one per groupID
fig, axes = plt.subplots(1, 3, figsize=(11, 7.6))                         # tall: A and C have 16 rows
for ax, operand, title in zip(axes, "abc", ("A (16 x 8): a0..a3", "B (8 x 8): b0, b1", "C and D (16 x 8): c0..c3")):
    owner = mma_layout.owners(operand)
    groups = owner[..., 0] >> 2
    ax.imshow(groups, cmap=plt.matplotlib.colors.ListedColormap(GROUP_COLOURS), vmin=-0.5, vmax=7.5)
    for (i, j), lane in np.ndenumerate(owner[..., 0]):
        ax.text(j, i, f"{lane}.{owner[i, j, 1]}", ha="center", va="center", fontsize=7.5)
    ax.set_xticks(range(owner.shape[1]))
    ax.set_yticks(range(owner.shape[0]))
    ax.tick_params(labelsize=7)
    ax.set(title=title, xlabel="k" if operand == "a" else "n", ylabel="k" if operand == "b" else "m")
    ax.set_anchor("N")                                                    # B (8 rows) at the top
axes[1].text(0.5, -0.2, "P V with P kept in registers (section 5):\nA = {c0, c2, c1, c3} of S's accumulator,\n"
             "so column k of A is key [0, 2, 4, 6, 1, 3, 5, 7][k];\nB row k is read from V's row of that key",
             transform=axes[1].transAxes, ha="center", va="top", fontsize=9)
fig.suptitle("mma.m16n8k8 TF32 fragments as the PTX ISA lays them out\ncell = lane.register, colour = groupID "
             "(lane >> 2); no GPU measurement", fontsize=10)
save_figure(fig, args.out, "10_mma_fragments.png")

# The flash-attention trick: the accumulator of S (columns 2t, 2t+1) becomes the A operand of P V (columns
# t, t+4) in the same lane, registers reordered {c0, c2, c1, c3}, if V's rows are read as keys 2t, 2t+1.
p_regs = np.exp(rng.standard_normal((mma_layout.WARP, 4)))          # a P tile: 16 queries x 8 keys
v_tile = rng.standard_normal((8, 8))                                 # 8 keys x 8 value columns
key_of_row = [mma_layout.permuted_key(k) for k in range(8)]
pv_regs = mma_layout.mma(mma_layout.p_as_a_operand(p_regs), mma_layout.fragment("b", v_tile[key_of_row]),
                         np.zeros((mma_layout.WARP, 4)))
p_reuse_diff = float(np.abs(mma_layout.assemble("c", pv_regs) - mma_layout.assemble("c", p_regs) @ v_tile).max())
print(f"  P reused in registers as A = {{c0, c2, c1, c3}}, B row k = V row {key_of_row}: P V "
      f"{equals(p_reuse_diff)} the plain product (float64, max difference {p_reuse_diff:.1e})")

# TF32 against 3xTF32 on one small matmul, float32 inputs, errors against float64 of the same inputs
mat_a, mat_b = (rng.standard_normal((64, 64)).astype(np.float32) for _ in range(2))
exact_ab = mat_a.astype(np.float64) @ mat_b.astype(np.float64)
errors = {name: float(np.linalg.norm(product.astype(np.float64) - exact_ab) / np.linalg.norm(exact_ab))
          for name, product in (("TF32", mma_layout.tf32_matmul(mat_a, mat_b)),
                                ("3xTF32", mma_layout.tf32_matmul(mat_a, mat_b, passes=3)),
                                ("float32", mat_a @ mat_b))}
print("  64 x 64 @ 64 x 64, standard normal, relative error against float64 (NumPy model of the rounding):")
for name, err in errors.items():
    print(f"    {name:8s} {err:.1e}")
print("  " + compare("3xTF32", errors["3xTF32"], "TF32", errors["TF32"], higher_is_better=False,
                     verb="is closer to float64 than", fmt=".1e")
      + f" (x{errors['TF32'] / errors['3xTF32']:.0f}), for three tensor-core products instead of one")

# %% 6. The CUDA C kernels in csrc/, version by version (what each file changes; speed: README "The GPU")
print("\n== 6. the CUDA C flash-attention kernels in csrc/, version by version (d = 64)")
CHANGES = {"v1": "CUDA cores; one float per shared-memory load (8 loads per 16 FMAs)",
           "v2": "rows padded to d + 4, float4 loads (8 per 64 FMAs), __syncwarp, exp2f, K/V prefetch",
           "v3-3xtf32": "tensor cores: S and P V as mma.m16n8k8, inputs split big + small (3 mma)",
           "v3-tf32": "the same with plain TF32 inputs (1 mma), ~1e-3 on O"}
for version in cuda_c_layout.VERSIONS:
    smem = cuda_c_layout.shared_memory_bytes("forward", 64, version)
    print(f"  {version:10s} {cuda_c_layout.SOURCES[version]:23s} {cuda_c_layout.precision_of(version):8s} "
          f"forward: {cuda_c_layout.forward_threads(version)} threads, {smem:6,d} B shared | {CHANGES[version]}")
print("  Not measured here (no GPU): `bash benchmarks/gpu_check.sh LOG_DIR` on a GPU times each against PyTorch;")
print("  tests/test_flash_cuda_c.py runs every version on a CPU emulation of the GPU against float64 attention.")

print("result: " + json.dumps({"lesson": "10_kernels", "quick": QUICK, "seed": args.seed,
              "tiled_equals_dense_max_diff": max(diffs.values()),
              "dense_MiB_at_16384": round(dense_mb[-1], 1), "tiled_MiB_at_16384": round(tiled_mb[-1], 3),
              "numba_speedup_over_numpy": ratios, "mma_p_reuse_max_diff": p_reuse_diff,
              "tf32_matmul_rel_error": float(f"{errors['TF32']:.2e}"),
              "3xtf32_matmul_rel_error": float(f"{errors['3xTF32']:.2e}"),
              "float32_matmul_rel_error": float(f"{errors['float32']:.2e}")}))
