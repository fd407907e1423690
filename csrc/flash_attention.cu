/*
flash_attention.cu -- exact attention, tile by tile, in CUDA C++ (FlashAttention-2 order), float32.

What it computes (Dao 2023, "FlashAttention-2", Alg. 1 forward and Alg. 2 backward), per batch x head:
    S = tau Q K^T            Q (Nq, d), K (Nk, d), tau = 1/sqrt(d) unless given
    P = softmax(S)           row-wise, with -inf where a query may not attend
    O = P V                  V (Nk, d), O (Nq, d);   L = rowlogsumexp(S), the only thing kept for backward
and the backward, recomputing P tile by tile from L:
    D = rowsum(dO o O),  dV = P^T dO,  dP = dO V^T,  dS = P o (dP - D),  dQ = tau dS K,  dK = tau dS^T Q.
The plain NumPy version of the same tiles is tinyvision/kernels/attention_tiled.py (its docstring has the
derivation); this file is tested equal to it and to the dense float64 formula (tests/test_flash_cuda_c.py).

Masks. causal = 1 lets query i see key j iff j <= i + (Nk - Nq) (bottom-right, as in flash-attn); key tiles
wholly past that diagonal are skipped, not computed. An optional boolean mask (uint8, 1 = may attend),
(Nq, Nk) per batch x head or shared by all (mask_bh_stride = 0), is ANDed in. A query row with nothing to
attend to gets O = 0, L = -inf and zero gradients, never NaN: the running max starts at -inf, and while it
is still -inf the exponentials use 0 as their reference, so e^(-inf - (-inf)) never happens.

Shapes and layout: q (BH, Nq, d), k and v (BH, Nk, d), o (BH, Nq, d), lse (BH, Nq), all float32 and
C-contiguous; d in {16, 32, 64, 128} (one kernel per d, so every loop has a compile-time trip count;
16 for the tiny models of the lessons). Nq and
Nk are any positive ints: tiles past the end are zero-filled and masked.

Work decomposition (one thread block = 256 threads = a 16 x 16 grid (ty, tx), tiles of 64 rows):
    forward        grid (ceil(Nq/64), BH). The block holds its 64 query rows in shared memory and walks the
                   key tiles: load K_j, V_j; each thread computes a 4 x 4 piece of S (rows ty + 16i,
                   columns tx + 16j: strided, so a warp reads 16 different K rows, bank-conflict free with
                   the +1 row padding); row max and row sum over the 16 threads of a row by warp
                   shuffles; P goes to shared memory; each thread adds P V to its 4 x d/16 piece of O~.
    backward       deterministic, no atomics: FA2 accumulates dQ with atomicAdd, whose order (and so the
                   float32 rounding) changes run to run. Here three kernels instead:
                   D = rowsum(dO o O); dK, dV with grid (key tiles, BH), walking query tiles; dQ with grid
                   (query tiles, BH), walking key tiles. S and dP are computed twice (7 tile matmuls
                   instead of 5): the price of bit-reproducible gradients.

Memory. HBM: the inputs, O and L (O(N d)), never an N x N matrix. Shared memory per block, in floats,
with LD = d + 1 and LDP = T + 1 (paddings against bank conflicts) and T = 64:
    forward  3 T LD + T LDP          d = 16: 29,696 B   d = 32: 41,984 B   d = 64: 66,560 B   d = 128: 115,712 B
    dK, dV   4 T LD + T LDP + 2 T    d = 16: 34,560 B   d = 32: 50,944 B   d = 64: 83,712 B   d = 128: 149,248 B
    dQ       4 T LD + T LDP          d = 16: 34,048 B   d = 32: 50,432 B   d = 64: 83,200 B   d = 128: 148,736 B
Above 48 KB a kernel must opt in (cudaFuncAttributeMaxDynamicSharedMemorySize); the loader
(tinyvision/kernels/attention_cuda_c.py) checks each size against the device's opt-in limit (227 KB on H100,
163 KB on A100, 99 KB on most consumer GPUs) before launching, and says which head dim does not fit.

Build (what setup.py and the CI do; see csrc/build.py):
    nvcc -O3 -std=c++17 --fatbin -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
         -gencode arch=compute_90,code=compute_90 -Xptxas -v -o flash_attention.fatbin csrc/flash_attention.cu
CI fails on any warning and on any register spill reported by ptxas -v. Without a prebuilt binary the
loader compiles this file at run time with NVRTC (the file includes no header for that reason).
The host emulation in tests/cuda_emulation/ compiles this same file with g++ (one OS thread per CUDA
thread, real barriers and warp shuffles) so that its indexing is checked on machines without a GPU.

Versions and measured speed (README.md "The GPU" has the table; python -m tinyvision.bench --gpu-only times them):
    v1 (this file)            float32, CUDA cores, 4 x 4 register tiles, scalar shared-memory loads. Kept as the
                              readable one. Correct on the host emulation against the float64 reference.
                              Speed on a GPU: not measured (no GPU was available).
    v2 flash_attention_v2.cu  float4 shared-memory loads, __syncwarp for rows one half-warp owns, exp2f, the next
                              K / V tile prefetched. Speed: not measured.
    v3 flash_attention_v3.cu  the forward on TF32 tensor cores (mma.sync m16n8k8), plain or 3xTF32; backward v2's.
                              Speed: not measured.
*/

// ---- the one line the host emulation (tests/cuda_emulation) replaces -----------------------------
#ifndef TV_SHARED_MEMORY
#define TV_SHARED_MEMORY(name) extern __shared__ __align__(16) float name[]
#endif

namespace tv {

constexpr int TILE = 64;          // query rows and key rows per tile (Br = Bc = 64)
constexpr int THREADS = 256;      // threads per block, seen as a 16 x 16 grid (ty, tx)
constexpr int TG = 16;            // threads along each side of that grid
constexpr int R = TILE / TG;      // 4: rows and columns of a tile that one thread owns
constexpr int LDP = TILE + 1;     // row stride of the P / dS tile in shared memory. Its reads are conflict-free;
                                  // its stores (16 per thread per tile) are 2-way conflicted, the two half-warps
                                  // writing rows 1 bank apart. TILE + 16 removes that, but nvcc 13 then spills
                                  // in flash_forward_d32 (sm_90) and dK/dV d=128 grows from 157 to 212 registers:
                                  // left for a version that can be measured on a GPU.

__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7f800000); }

// ---- the causal rule: the same three functions as attention_tiled.py --------------------------------
__device__ __forceinline__ bool visible(int i, int j, int nq, int nk, int causal, const unsigned char* mask) {
    if (i >= nq || j >= nk) return false;                 // padding rows / columns of a partial tile
    if (causal && j > i + (nk - nq)) return false;        // bottom-right aligned causal rule
    return mask == nullptr || mask[(long long)i * nk + j] != 0;
}

// keys [0, key_end) hold every key that query rows < q_end can see; later key tiles are skipped
__device__ __forceinline__ int key_end(int q_end, int nq, int nk, int causal) {
    int end = causal ? q_end + (nk - nq) : nk;
    return end < 0 ? 0 : (end > nk ? nk : end);
}

// the first query row that can see key k_start or a later one; earlier query tiles are skipped
__device__ __forceinline__ int query_start(int k_start, int nq, int nk, int causal) {
    int start = causal ? k_start - (nk - nq) : 0;
    return start < 0 ? 0 : (start > nq ? nq : start);
}

// ---- tile helpers -------------------------------------------------------------------------------
// rows [row0, row0 + TILE) of a row-major (n, D) matrix -> shared memory with row stride D + 1; rows past
// n are zero (so they add nothing and, being finite, never make a NaN). Consecutive threads read
// consecutive addresses: coalesced.
template <int D>
__device__ __forceinline__ void load_tile(float* dst, const float* src, int row0, int n) {
    for (int idx = threadIdx.x; idx < TILE * D; idx += THREADS) {
        const int r = idx / D, c = idx % D;
        dst[r * (D + 1) + c] = (row0 + r < n) ? src[(long long)(row0 + r) * D + c] : 0.0f;
    }
}

// acc[i][j] += sum_t A[ty + 16i][t] * B[tx + 16j][t]   (t < K): a 4 x 4 piece of A B^T
template <int K>
__device__ __forceinline__ void tile_abt(float (&acc)[R][R], const float* A, const float* B, int ld) {
    const int ty = threadIdx.x / TG, tx = threadIdx.x % TG;
#pragma unroll 4
    for (int t = 0; t < K; ++t) {
        float a[R], b[R];
#pragma unroll
        for (int i = 0; i < R; ++i) {
            a[i] = A[(ty + TG * i) * ld + t];             // 2 rows per warp: broadcast
            b[i] = B[(tx + TG * i) * ld + t];             // 16 rows per warp, stride ld = D + 1: 16 banks
        }
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < R; ++j) acc[i][j] += a[i] * b[j];
    }
}

// acc[i][c] += sum_t P[ty + 16i][t] * V[t][tx + 16c]   (t < TILE, c < D/16): a 4 x D/16 piece of P V
template <int D>
__device__ __forceinline__ void tile_ab(float (&acc)[R][D / TG], const float* P, const float* V) {
    const int ty = threadIdx.x / TG, tx = threadIdx.x % TG;
#pragma unroll 4
    for (int t = 0; t < TILE; ++t) {
        float p[R], v[D / TG];
#pragma unroll
        for (int i = 0; i < R; ++i) p[i] = P[(ty + TG * i) * LDP + t];
#pragma unroll
        for (int c = 0; c < D / TG; ++c) v[c] = V[t * (D + 1) + tx + TG * c];   // consecutive: no conflict
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int c = 0; c < D / TG; ++c) acc[i][c] += p[i] * v[c];
    }
}

// max and sum over the 16 threads that share a row (lanes tx = 0..15 of one half-warp)
__device__ __forceinline__ float row_max(float x) {
#pragma unroll
    for (int offset = TG / 2; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

__device__ __forceinline__ float row_sum(float x) {
#pragma unroll
    for (int offset = TG / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

// ---- forward ------------------------------------------------------------------------------------
template <int D>
__device__ __forceinline__ void forward(float* smem, const float* q, const float* k, const float* v,
                                        const unsigned char* mask, long long mask_bh_stride, float* o, float* lse,
                                        int nq, int nk, int causal, float scale) {
    constexpr int LD = D + 1, C = D / TG;
    float* Qs = smem;                        // (TILE, LD)  this block's query rows, for the whole kernel
    float* Ks = Qs + TILE * LD;              // (TILE, LD)  the current key tile
    float* Vs = Ks + TILE * LD;              // (TILE, LD)  the current value tile
    float* Ps = Vs + TILE * LD;              // (TILE, LDP) P~ of the current tile
    const int ty = threadIdx.x / TG, tx = threadIdx.x % TG;
    const int q0 = blockIdx.x * TILE;
    const long long bh = blockIdx.y;
    q += bh * nq * D; k += bh * nk * D; v += bh * nk * D; o += bh * nq * D; lse += bh * nq;
    if (mask) mask += bh * mask_bh_stride;

    load_tile<D>(Qs, q, q0, nq);
    float acc[R][C], m[R], l[R];             // O~ (unnormalised), running row max, running row sum
#pragma unroll
    for (int i = 0; i < R; ++i) {
        m[i] = neg_inf();
        l[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < C; ++c) acc[i][c] = 0.0f;
    }
    const int k_stop = key_end(q0 + TILE < nq ? q0 + TILE : nq, nq, nk, causal);
    for (int k0 = 0; k0 < k_stop; k0 += TILE) {      // the same trip count for every thread: barriers are safe
        __syncthreads();                             // the previous tile's readers are done
        load_tile<D>(Ks, k, k0, nk);
        load_tile<D>(Vs, v, k0, nk);
        __syncthreads();
        float s[R][R] = {};
        tile_abt<D>(s, Qs, Ks, LD);                  // S = Q K^T on this tile
#pragma unroll
        for (int i = 0; i < R; ++i) {
            const int row = q0 + ty + TG * i;
            float tile_max = neg_inf();
#pragma unroll
            for (int j = 0; j < R; ++j) {
                s[i][j] = visible(row, k0 + tx + TG * j, nq, nk, causal, mask) ? s[i][j] * scale : neg_inf();
                tile_max = fmaxf(tile_max, s[i][j]);
            }
            const float m_new = fmaxf(m[i], row_max(tile_max));
            const float ref = (m_new == neg_inf()) ? 0.0f : m_new;   // the guard: never -inf - (-inf)
            const float alpha = expf(m[i] - ref);                    // e^(m - m'), 0 while m = -inf
            float tile_sum = 0.0f;
#pragma unroll
            for (int j = 0; j < R; ++j) {
                const float p = expf(s[i][j] - ref);                 // 0 where masked
                Ps[(ty + TG * i) * LDP + tx + TG * j] = p;
                tile_sum += p;
            }
            l[i] = alpha * l[i] + row_sum(tile_sum);
            m[i] = m_new;
#pragma unroll
            for (int c = 0; c < C; ++c) acc[i][c] *= alpha;
        }
        __syncthreads();                             // all of P~ is written
        tile_ab<D>(acc, Ps, Vs);                     // O~ += P~ V
    }
#pragma unroll
    for (int i = 0; i < R; ++i) {                    // divide once, at the end (FA2)
        const int row = q0 + ty + TG * i;
        if (row >= nq) continue;
        const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;          // l = 0 only for a fully masked row
#pragma unroll
        for (int c = 0; c < C; ++c) o[(long long)row * D + tx + TG * c] = acc[i][c] * inv;
        if (tx == 0) lse[row] = l[i] > 0.0f ? m[i] + logf(l[i]) : neg_inf();
    }
}

// ---- backward -----------------------------------------------------------------------------------
// D_i = rowsum(dO_i o O_i): one thread per row of the (rows, d) matrices
__device__ __forceinline__ void rowsum_product(const float* o, const float* dout, float* delta, long long rows, int d) {
    const long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    float total = 0.0f;
    for (int t = 0; t < d; ++t) total += o[row * d + t] * dout[row * d + t];
    delta[row] = total;
}

// dV_j = sum_i P_ij dO_i and dK_j = tau sum_i dS_ij Q_i for one key tile j; the block walks the query tiles
template <int D>
__device__ __forceinline__ void backward_dk_dv(float* smem, const float* q, const float* k, const float* v,
                                               const unsigned char* mask, long long mask_bh_stride,
                                               const float* dout, const float* lse, const float* delta,
                                               float* dk, float* dv, int nq, int nk, int causal, float scale) {
    constexpr int LD = D + 1, C = D / TG;
    float* Ks = smem;                        // (TILE, LD)  this block's keys, for the whole kernel
    float* Vs = Ks + TILE * LD;              // (TILE, LD)  and values
    float* Qs = Vs + TILE * LD;              // (TILE, LD)  the current query tile
    float* dOs = Qs + TILE * LD;             // (TILE, LD)  and its output gradient
    float* Ps = dOs + TILE * LD;             // (TILE, LDP) P^T, then dS^T, indexed [key][query]
    float* Ls = Ps + TILE * LDP;             // (TILE)      L of the query tile (0 for fully masked rows)
    float* Ds = Ls + TILE;                   // (TILE)      D of the query tile
    const int ty = threadIdx.x / TG, tx = threadIdx.x % TG;
    const int k0 = blockIdx.x * TILE;
    const long long bh = blockIdx.y;
    q += bh * nq * D; k += bh * nk * D; v += bh * nk * D; dout += bh * nq * D;
    lse += bh * nq; delta += bh * nq; dk += bh * nk * D; dv += bh * nk * D;
    if (mask) mask += bh * mask_bh_stride;

    load_tile<D>(Ks, k, k0, nk);
    load_tile<D>(Vs, v, k0, nk);
    float dk_acc[R][C], dv_acc[R][C];
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
        for (int c = 0; c < C; ++c) dk_acc[i][c] = dv_acc[i][c] = 0.0f;

    for (int q0 = query_start(k0, nq, nk, causal) / TILE * TILE; q0 < nq; q0 += TILE) {
        __syncthreads();                             // the previous tile's readers are done
        load_tile<D>(Qs, q, q0, nq);
        load_tile<D>(dOs, dout, q0, nq);
        for (int r = threadIdx.x; r < TILE; r += THREADS) {
            const bool in = q0 + r < nq;
            const float L = in ? lse[q0 + r] : 0.0f;
            Ls[r] = (L == neg_inf()) ? 0.0f : L;     // fully masked row: P = e^(-inf - 0) = 0
            Ds[r] = in ? delta[q0 + r] : 0.0f;
        }
        __syncthreads();
        float s[R][R] = {}, dp[R][R] = {};           // transposed tiles: [key ty + 16i][query tx + 16j]
        tile_abt<D>(s, Ks, Qs, LD);                  // S^T = K Q^T
        tile_abt<D>(dp, Vs, dOs, LD);                // dP^T = V dO^T
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < R; ++j) {
                const int key = k0 + ty + TG * i, col = tx + TG * j;
                const float p = visible(q0 + col, key, nq, nk, causal, mask) ? expf(s[i][j] * scale - Ls[col]) : 0.0f;
                Ps[(ty + TG * i) * LDP + col] = p;   // P^T, recomputed from L
                s[i][j] = p * (dp[i][j] - Ds[col]);  // dS^T = P^T o (dP^T - D), kept for after dV
            }
        __syncthreads();
        tile_ab<D>(dv_acc, Ps, dOs);                 // dV += P^T dO
        __syncthreads();                             // everyone has read P^T before it is overwritten
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < R; ++j) Ps[(ty + TG * i) * LDP + tx + TG * j] = s[i][j];
        __syncthreads();
        tile_ab<D>(dk_acc, Ps, Qs);                  // dK += dS^T Q   (tau applied once, at the store)
    }
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int key = k0 + ty + TG * i;
        if (key >= nk) continue;
#pragma unroll
        for (int c = 0; c < C; ++c) {
            dk[(long long)key * D + tx + TG * c] = dk_acc[i][c] * scale;
            dv[(long long)key * D + tx + TG * c] = dv_acc[i][c];
        }
    }
}

// dQ_i = tau sum_j dS_ij K_j for one query tile i; the block walks the key tiles
template <int D>
__device__ __forceinline__ void backward_dq(float* smem, const float* q, const float* k, const float* v,
                                            const unsigned char* mask, long long mask_bh_stride,
                                            const float* dout, const float* lse, const float* delta,
                                            float* dq, int nq, int nk, int causal, float scale) {
    constexpr int LD = D + 1, C = D / TG;
    float* Qs = smem;                        // (TILE, LD)  this block's queries, for the whole kernel
    float* dOs = Qs + TILE * LD;             // (TILE, LD)  and their output gradient
    float* Ks = dOs + TILE * LD;             // (TILE, LD)  the current key tile
    float* Vs = Ks + TILE * LD;              // (TILE, LD)  and value tile
    float* Ps = Vs + TILE * LD;              // (TILE, LDP) dS, indexed [query][key]
    const int ty = threadIdx.x / TG, tx = threadIdx.x % TG;
    const int q0 = blockIdx.x * TILE;
    const long long bh = blockIdx.y;
    q += bh * nq * D; k += bh * nk * D; v += bh * nk * D; dout += bh * nq * D;
    lse += bh * nq; delta += bh * nq; dq += bh * nq * D;
    if (mask) mask += bh * mask_bh_stride;

    load_tile<D>(Qs, q, q0, nq);
    load_tile<D>(dOs, dout, q0, nq);
    float L[R], Dr[R], dq_acc[R][C];
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int row = q0 + ty + TG * i;
        const float lrow = row < nq ? lse[row] : 0.0f;
        L[i] = (lrow == neg_inf()) ? 0.0f : lrow;
        Dr[i] = row < nq ? delta[row] : 0.0f;
#pragma unroll
        for (int c = 0; c < C; ++c) dq_acc[i][c] = 0.0f;
    }
    const int k_stop = key_end(q0 + TILE < nq ? q0 + TILE : nq, nq, nk, causal);
    for (int k0 = 0; k0 < k_stop; k0 += TILE) {
        __syncthreads();
        load_tile<D>(Ks, k, k0, nk);
        load_tile<D>(Vs, v, k0, nk);
        __syncthreads();
        float s[R][R] = {}, dp[R][R] = {};
        tile_abt<D>(s, Qs, Ks, LD);                  // S = Q K^T
        tile_abt<D>(dp, dOs, Vs, LD);                // dP = dO V^T
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < R; ++j) {
                const int row = q0 + ty + TG * i, key = k0 + tx + TG * j;
                const float p = visible(row, key, nq, nk, causal, mask) ? expf(s[i][j] * scale - L[i]) : 0.0f;
                Ps[(ty + TG * i) * LDP + tx + TG * j] = p * (dp[i][j] - Dr[i]);   // dS
            }
        __syncthreads();
        tile_ab<D>(dq_acc, Ps, Ks);                  // dQ += dS K
    }
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int row = q0 + ty + TG * i;
        if (row >= nq) continue;
#pragma unroll
        for (int c = 0; c < C; ++c) dq[(long long)row * D + tx + TG * c] = dq_acc[i][c] * scale;
    }
}

}  // namespace tv

// ---- the entry points: plain C names, one per head dim, for cupy.RawModule.get_function -----------
#define TV_ATTENTION_KERNELS(D)                                                                               \
    extern "C" __global__ void __launch_bounds__(tv::THREADS)                                                 \
    flash_forward_d##D(const float* q, const float* k, const float* v, const unsigned char* mask,            \
                       long long mask_bh_stride, float* o, float* lse, int nq, int nk, int causal, float scale) { \
        TV_SHARED_MEMORY(smem);                                                                               \
        tv::forward<D>(smem, q, k, v, mask, mask_bh_stride, o, lse, nq, nk, causal, scale);                   \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(tv::THREADS)                                                 \
    flash_backward_dk_dv_d##D(const float* q, const float* k, const float* v, const unsigned char* mask,     \
                              long long mask_bh_stride, const float* dout, const float* lse,                 \
                              const float* delta, float* dk, float* dv, int nq, int nk, int causal,          \
                              float scale) {                                                                  \
        TV_SHARED_MEMORY(smem);                                                                               \
        tv::backward_dk_dv<D>(smem, q, k, v, mask, mask_bh_stride, dout, lse, delta, dk, dv, nq, nk, causal,  \
                              scale);                                                                         \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(tv::THREADS)                                                 \
    flash_backward_dq_d##D(const float* q, const float* k, const float* v, const unsigned char* mask,        \
                           long long mask_bh_stride, const float* dout, const float* lse, const float* delta, \
                           float* dq, int nq, int nk, int causal, float scale) {                             \
        TV_SHARED_MEMORY(smem);                                                                               \
        tv::backward_dq<D>(smem, q, k, v, mask, mask_bh_stride, dout, lse, delta, dq, nq, nk, causal, scale); \
    }

TV_ATTENTION_KERNELS(16)
TV_ATTENTION_KERNELS(32)
TV_ATTENTION_KERNELS(64)
TV_ATTENTION_KERNELS(128)

extern "C" __global__ void flash_backward_rowsum(const float* o, const float* dout, float* delta, long long rows,
                                                 int d) {
    tv::rowsum_product(o, dout, delta, rows, d);
}
