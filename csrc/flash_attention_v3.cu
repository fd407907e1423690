/*
flash_attention_v3.cu -- version 3 of the kernel chapter: the forward pass on tensor cores (TF32 mma.sync).

Why. On an H100 the float32 CUDA cores peak at ~67 TFLOP/s and the TF32 tensor cores at ~495 (dense). v1 and
v2 (flash_attention.cu, flash_attention_v2.cu) can at best reach the first figure; PyTorch's float32
attention (CUTLASS's memory-efficient kernel) already runs on tensor cores. So the last step is the same
online softmax with both matmuls, S = Q K^T and O += P V, done by `mma.sync.aligned.m16n8k8` instructions.

The instruction. One warp multiplies a 16 x 8 tile A by an 8 x 8 tile B and adds a 16 x 8 float32 tile C.
No thread holds a whole row: the 32 lanes each hold pieces ("fragments"), lane = 4 groupID + t:
    A (16 x 8)  4 registers  a0 = A[g][t]   a1 = A[g+8][t]   a2 = A[g][t+4]   a3 = A[g+8][t+4]
    B (8 x 8)   2 registers  b0 = B[t][g]   b1 = B[t+4][g]
    C (16 x 8)  4 registers  c0 = C[g][2t]  c1 = C[g][2t+1]  c2 = C[g+8][2t]  c3 = C[g+8][2t+1]
(PTX ISA, "Matrix fragments for mma.m16n8k8", .tf32; tinyvision/kernels/mma_layout.py draws them and
lessons/10_kernels.py prints the map.) The inputs are TF32: float32 with the mantissa cut to 10 bits
(cvt.rna.tf32.f32 rounds to nearest, ties away). Products of two TF32 numbers are exact in float32 and the
sums are float32, so the error is the input rounding: ~2^-11 relative per operand, about 1e-3 on O.

3xTF32 (SPLIT = true). Write x = big + small with big = tf32(x) and small = tf32(x - big): together they carry
~22 significant bits. a b ~ big_a big_b + big_a small_b + small_a big_b (small_a small_b, ~2^-22 of a b, is
dropped): three mma instead of one, and a logit errs by ~2^-21 of scale sum |q||k|, some 4-8x what float32
CUDA-core arithmetic would: close to float32, not equal (tests/test_flash_cuda_c.py, assert_3xtf32_accurate,
measures what that does to the gradients). This is CUTLASS's OpMultiplyAddFastF32, the mode PyTorch's
float32 attention uses on tensor cores.

The work. A block is 4 warps (128 threads) and 64 query rows; warp w owns rows 16w .. 16w + 15 of the tile
for the whole kernel, so the softmax statistics of a row live in the registers of the 4 lanes that share
a groupID (each lane holds two rows, g and g + 8), and the row max / row sum is a 4-lane shuffle (xor 1, 2).
    Q fragments   loaded once (through shared memory, coalesced) into registers: D/8 k-steps x 4
                  (x 2 with SPLIT); at d = 128 with SPLIT they would not fit, so they are re-read from
                  shared memory every tile instead (Q_IN_REGISTERS below).
    S = Q K^T     per key tile of 64: 8 n-tiles x D/8 k-steps of mma; B = K^T, so b0 = K[key 8n + g][8k + t].
    softmax       on the C fragments, in registers, log2 units (exp2f, as in v2).
    O += P V      P never goes to shared memory. The C fragment of S holds keys 2t and 2t + 1 of each n-tile,
                  while an A fragment wants columns t and t + 4. The sum over keys does not care about their
                  order, so take A column t = key 2t and A column t + 4 = key 2t + 1: a = {c0, c2, c1, c3}, and
                  read V's rows in the same order (b0 = V[key 2t][n], b1 = V[key 2t + 1][n]).
Shared memory: Q, K, V tiles of 64 rows, stride D + 4 (conflict-free for every fragment read here: lanes
g, t hit banks 4g + t or 8t + g for d a multiple of 32, 20g + t or 8t + g at d = 16). d = 64: 52,224 B.

Backward: v3 has no tensor-core backward yet; its gradients come from v2's kernels (the loader launches
them from v2's module; this file includes flash_attention_v2.cu only for its device functions). The L it
stores is what v2's backward expects.

Entry points: v3_forward_tf32_d{16,32,64,128} and v3_forward_3xtf32_d{16,32,64,128}, v1's forward arguments,
grid (ceil(Nq / 64), BH), 128 threads. Measured speed: README.md "GPU figures" (not measured: no GPU was
available when this was written; the host emulation in tests/cuda_emulation/ checks its fragments).
*/
#define TV2_HELPERS_ONLY                    // v2's device functions; its kernels stay in v2's own binary
#include "flash_attention_v2.cu"

// ---- the two tensor-core instructions; the host emulation (tests/cuda_emulation) supplies its own -----------
#ifndef TV_HOST_EMULATION
__device__ __forceinline__ float tv_tf32_round(float x) {                  // cvt.rna: nearest, ties away
    unsigned bits;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(x));
    return __uint_as_float(bits);
}

// d += a b for one 16 x 8 x 8 tile; a and b hold TF32 values (low 13 mantissa bits zero)
__device__ __forceinline__ void tv_mma_m16n8k8_tf32(float (&d)[4], const float (&a)[4], const float (&b)[2]) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(__float_as_uint(a[0])), "r"(__float_as_uint(a[1])), "r"(__float_as_uint(a[2])),
                   "r"(__float_as_uint(a[3])), "r"(__float_as_uint(b[0])), "r"(__float_as_uint(b[1])));
}
#endif

namespace tv3 {

constexpr int TILE = 64;          // query rows per block and keys per tile
constexpr int WARPS = 4;          // each owns 16 query rows
constexpr int THREADS = 32 * WARPS;
using tv2::neg_inf;
using tv2::visible;
using tv2::key_end;
using tv2::LOG2E;
using tv2::LN2;

// An operand value in the form the mma takes: one TF32 number, or (SPLIT) the pair big + small.
template <bool SPLIT> struct Operand;
template <> struct Operand<false> {
    float big;
    Operand() = default;
    __device__ __forceinline__ explicit Operand(float x) : big(tv_tf32_round(x)) {}
};
template <> struct Operand<true> {
    float big, small;
    Operand() = default;
    __device__ __forceinline__ explicit Operand(float x) : big(tv_tf32_round(x)), small(tv_tf32_round(x - big)) {}
};

// d += a b, in TF32 (one mma) or 3xTF32 (three: the two small cross terms are added before the big product)
template <bool SPLIT>
__device__ __forceinline__ void mma(float (&d)[4], const Operand<SPLIT> (&a)[4], const Operand<SPLIT> (&b)[2]) {
    const float a_big[4] = {a[0].big, a[1].big, a[2].big, a[3].big}, b_big[2] = {b[0].big, b[1].big};
    if constexpr (SPLIT) {
        const float a_small[4] = {a[0].small, a[1].small, a[2].small, a[3].small};
        const float b_small[2] = {b[0].small, b[1].small};
        tv_mma_m16n8k8_tf32(d, a_small, b_big);
        tv_mma_m16n8k8_tf32(d, a_big, b_small);
    }
    tv_mma_m16n8k8_tf32(d, a_big, b_big);
}

// rows [row0, row0 + TILE) of a row-major (n, D) matrix -> shared memory, stride D + 4, zero past n; float4
template <int D>
__device__ __forceinline__ void load_tile(float* dst, const float* src, int row0, int n) {
    for (int idx = threadIdx.x; idx < TILE * D / 4; idx += THREADS) {
        const int r = idx / (D / 4), c = 4 * (idx % (D / 4));
        tv2::store4(dst + r * (D + 4) + c,
                    (row0 + r < n) ? tv2::load4(src + (long long)(row0 + r) * D + c) : float4{0.0f, 0.0f, 0.0f, 0.0f});
    }
}

// the 4-lane reductions of a row (the lanes of one groupID: xor 1 and 2 stay inside it)
__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

template <int D, bool SPLIT>
__device__ __forceinline__ void forward(float* smem, const float* q, const float* k, const float* v,
                                        const unsigned char* mask, long long mask_bh_stride, float* o, float* lse,
                                        int nq, int nk, int causal, float scale) {
    constexpr int LD = D + 4, KSTEPS = D / 8, NT = TILE / 8;       // k-steps over d; 8-key n-tiles per tile
    constexpr bool Q_IN_REGISTERS = KSTEPS * (SPLIT ? 2 : 1) <= 16;   // all but d = 128 with SPLIT
    float* Qs = smem;
    float* Ks = Qs + TILE * LD;
    float* Vs = Ks + TILE * LD;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int q0 = blockIdx.x * TILE, wrow = 16 * warp;            // this warp's rows of the tile
    const int rows[2] = {q0 + wrow + g, q0 + wrow + g + 8};        // the two rows this lane holds
    const long long bh = blockIdx.y;
    q += bh * nq * D; k += bh * nk * D; v += bh * nk * D; o += bh * nq * D; lse += bh * nq;
    if (mask) mask += bh * mask_bh_stride;
    const float scale2 = scale * LOG2E;

    load_tile<D>(Qs, q, q0, nq);
    __syncthreads();
    // the A fragments of Q for every k-step (a0..a3 = rows g, g+8, g, g+8; columns t, t, t+4, t+4)
    auto q_fragment = [&](int kk, Operand<SPLIT> (&a)[4]) {
        const float* base = Qs + (wrow + g) * LD + 8 * kk + t;
        a[0] = Operand<SPLIT>(base[0]);
        a[1] = Operand<SPLIT>(base[8 * LD]);
        a[2] = Operand<SPLIT>(base[4]);
        a[3] = Operand<SPLIT>(base[8 * LD + 4]);
    };
    Operand<SPLIT> qa[Q_IN_REGISTERS ? KSTEPS : 1][4] = {};
    if constexpr (Q_IN_REGISTERS) {
#pragma unroll
        for (int kk = 0; kk < KSTEPS; ++kk) q_fragment(kk, qa[kk]);
    }

    float acc[KSTEPS][4] = {}, m[2] = {neg_inf(), neg_inf()}, l[2] = {0.0f, 0.0f};
    const int k_stop = key_end(q0 + TILE < nq ? q0 + TILE : nq, nq, nk, causal);
    for (int k0 = 0; k0 < k_stop; k0 += TILE) {
        __syncthreads();                                           // the previous tile's readers are done
        load_tile<D>(Ks, k, k0, nk);
        load_tile<D>(Vs, v, k0, nk);
        __syncthreads();
        float s[NT][4] = {};                                       // S fragments: keys 8n + 2t, 8n + 2t + 1
        auto s_step = [&](int kk, const Operand<SPLIT> (&a)[4]) {  // S += Q[:, 8kk:8kk+8] K[:, 8kk:8kk+8]^T
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const float* kb = Ks + (8 * nt + g) * LD + 8 * kk + t;
                const Operand<SPLIT> b[2] = {Operand<SPLIT>(kb[0]), Operand<SPLIT>(kb[4])};
                mma<SPLIT>(s[nt], a, b);
            }
        };
        if constexpr (Q_IN_REGISTERS) {
#pragma unroll
            for (int kk = 0; kk < KSTEPS; ++kk) s_step(kk, qa[kk]);
        } else {
#pragma unroll 1
            for (int kk = 0; kk < KSTEPS; ++kk) {
                Operand<SPLIT> a[4];
                q_fragment(kk, a);
                s_step(kk, a);
            }
        }
        // online softmax on the fragments: registers 0, 1 belong to row g, 2, 3 to row g + 8
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float tile_max = neg_inf();
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float& x = s[nt][2 * h + e];
                    x = visible(rows[h], k0 + 8 * nt + 2 * t + e, nq, nk, causal, mask) ? x * scale2 : neg_inf();
                    tile_max = fmaxf(tile_max, x);
                }
            const float m_new = fmaxf(m[h], quad_max(tile_max));
            const float ref = (m_new == neg_inf()) ? 0.0f : m_new;
            const float alpha = exp2f(m[h] - ref);
            float tile_sum = 0.0f;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float& x = s[nt][2 * h + e];
                    x = exp2f(x - ref);
                    tile_sum += x;
                }
            l[h] = alpha * l[h] + quad_sum(tile_sum);
            m[h] = m_new;
#pragma unroll
            for (int nd = 0; nd < KSTEPS; ++nd) {
                acc[nd][2 * h] *= alpha;
                acc[nd][2 * h + 1] *= alpha;
            }
        }
        // O += P V, P straight from the S fragments (keys permuted within each group of 8, V rows alike)
#pragma unroll
        for (int kt = 0; kt < NT; ++kt) {
            const Operand<SPLIT> a[4] = {Operand<SPLIT>(s[kt][0]), Operand<SPLIT>(s[kt][2]),
                                         Operand<SPLIT>(s[kt][1]), Operand<SPLIT>(s[kt][3])};
            const float* vb = Vs + (8 * kt + 2 * t) * LD + g;
#pragma unroll
            for (int nd = 0; nd < KSTEPS; ++nd) {
                const Operand<SPLIT> b[2] = {Operand<SPLIT>(vb[8 * nd]), Operand<SPLIT>(vb[LD + 8 * nd])};
                mma<SPLIT>(acc[nd], a, b);
            }
        }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        if (rows[h] >= nq) continue;
        const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
#pragma unroll
        for (int nd = 0; nd < KSTEPS; ++nd) {
            float* out = o + (long long)rows[h] * D + 8 * nd + 2 * t;
            out[0] = acc[nd][2 * h] * inv;
            out[1] = acc[nd][2 * h + 1] * inv;
        }
        if (t == 0) lse[rows[h]] = l[h] > 0.0f ? (m[h] + log2f(l[h])) * LN2 : neg_inf();
    }
}

}  // namespace tv3

#define TV3_ATTENTION_KERNELS(D)                                                                              \
    extern "C" __global__ void __launch_bounds__(tv3::THREADS)                                                \
    v3_forward_tf32_d##D(const float* q, const float* k, const float* v, const unsigned char* mask,          \
                         long long mask_bh_stride, float* o, float* lse, int nq, int nk, int causal,         \
                         float scale) {                                                                       \
        TV_SHARED_MEMORY(smem);                                                                               \
        tv3::forward<D, false>(smem, q, k, v, mask, mask_bh_stride, o, lse, nq, nk, causal, scale);           \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(tv3::THREADS)                                                \
    v3_forward_3xtf32_d##D(const float* q, const float* k, const float* v, const unsigned char* mask,        \
                           long long mask_bh_stride, float* o, float* lse, int nq, int nk, int causal,       \
                           float scale) {                                                                     \
        TV_SHARED_MEMORY(smem);                                                                               \
        tv3::forward<D, true>(smem, q, k, v, mask, mask_bh_stride, o, lse, nq, nk, causal, scale);            \
    }

TV3_ATTENTION_KERNELS(16)
TV3_ATTENTION_KERNELS(32)
TV3_ATTENTION_KERNELS(64)
TV3_ATTENTION_KERNELS(128)
