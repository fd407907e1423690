/*
flash_attention_v2.cu -- version 2 of the kernel chapter: the same algorithm as flash_attention.cu (v1), the same
tiles (64 query rows x 64 keys, 256 threads as a 16 x 16 grid), fed faster. Read v1 first: its header derives
what is computed (forward: O = softmax(tau Q K^T) V and L = rowlogsumexp; backward: dQ, dK, dV from L, three
deterministic kernels). Only what changed is explained here.

What changed, and why (each an estimate from counting instructions; "GPU figures" in README.md has what was
measured, or says "not measured"):
 1. Vectorised shared memory. v1's matmul loops load one float at a time: 8 scalar loads per 16 FMAs.
    An SM serves one shared-memory wavefront per clock while it can issue four warp-FMAs, so v1 is capped
    near half the float32 peak by its loads. Here rows are padded to D + 4 floats (16-byte aligned, still
    conflict-free: row r starts 4r banks further, so 8 lanes reading 8 rows with float4 hit 8 distinct
    4-bank groups) and every operand is read as a float4 along the reduction axis:
        S = Q K^T    4 float4 of Q + 4 float4 of K per 4 x 4 x 4 = 64 FMAs   (v1: 32 loads)
        O += P V     4 float4 of P + D/64 float4 of V per row of 4 keys; each thread owns G = min(4, D/16)
                     contiguous output columns, so its V values are one float4 (float2 at d = 32).
    Global -> shared copies are float4 too (each row of q, k, v is D floats, D a multiple of 16: every row
    starts on a 16-byte boundary; the loader checks the base pointers).
 2. Fewer block barriers. A P / dS row is written by the 16 threads of one grid row (ty) and read back, in
    the P V product, only by those same threads -- one half of one warp. So between writing and reading
    P, __syncwarp() (the warp's lanes agree, and their shared-memory writes are visible to each other)
    replaces __syncthreads() (all 8 warps wait for the slowest). Per tile: forward 3 -> 2 block barriers
    + 1 warp barrier; dK/dV 5 -> 2 + 3; dQ 3 -> 2 + 1.
 3. exp2f with log2(e) folded into the scale: e^x = 2^(x log2 e), and exp2f is one MUFU.EX2 instruction
    where expf is a multiply and then that instruction. L is still stored in natural-log units
    (L = (m + log2 l) ln 2), so the backward and the other versions read the same L.
 4. Prefetch (forward): the next K and V tiles are loaded from global memory into registers right after
    the current tile reaches shared memory, so their latency hides behind this tile's arithmetic.

Not done here, for later versions: splitting the key range of one query tile across blocks when BH x
query tiles fills less than two waves of the GPU (flash-decoding); cp.async double buffering; tensor cores
(flash_attention_v3.cu).

Shared memory per block, floats, LD = D + 4, LDP = 68, T = 64 (attention_cuda_c_layout.py has the same):
    forward 3 T LD + T LDP (d 64: 69,632 B)   dK dV 4 T LD + T LDP + 2 T (d 128: 153,088 B)   dQ 4 T LD + T LDP.
Entry points: v2_forward_d{16,32,64,128}, v2_backward_dk_dv_d*, v2_backward_dq_d*, v2_backward_rowsum; the
same arguments as v1's. Measured speed: see README.md "GPU figures" (not measured: no GPU was available).
*/

#ifndef TV_FLASH_ATTENTION_V2            // included once (flash_attention_v3.cu includes this file too)
#define TV_FLASH_ATTENTION_V2

#ifndef TV_SHARED_MEMORY
#define TV_SHARED_MEMORY(name) extern __shared__ __align__(16) float name[]
#endif

namespace tv2 {

constexpr int TILE = 64;          // query rows and key rows per tile
constexpr int THREADS = 256;      // threads per block, seen as a 16 x 16 grid (ty, tx)
constexpr int TG = 16;            // threads along each side of that grid
constexpr int R = TILE / TG;      // 4: S rows and columns one thread owns (strided by 16)
constexpr int LDP = TILE + 4;     // row stride of P / dS in shared memory: 16-byte rows for float4 reads
constexpr float LOG2E = 1.4426950408889634;   // no f suffix: exact in the float64 emulation
constexpr float LN2 = 0.6931471805599453;

template <int D> struct Layout {
    static constexpr int LD = D + 4;                  // row stride of Q, K, V, dO tiles (floats)
    static constexpr int C = D / TG;                  // output columns per thread
    static constexpr int G = C < 4 ? C : 4;           // of which contiguous: one float4 (float2, float)
    static constexpr int GROUPS = C / G;              // column groups: column = g 16 G + tx G + e
};

__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7f800000); }

__device__ __forceinline__ bool visible(int i, int j, int nq, int nk, int causal, const unsigned char* mask) {
    if (i >= nq || j >= nk) return false;
    if (causal && j > i + (nk - nq)) return false;
    return mask == nullptr || mask[(long long)i * nk + j] != 0;
}

__device__ __forceinline__ int key_end(int q_end, int nq, int nk, int causal) {
    int end = causal ? q_end + (nk - nq) : nk;
    return end < 0 ? 0 : (end > nk ? nk : end);
}

__device__ __forceinline__ int query_start(int k_start, int nq, int nk, int causal) {
    int start = causal ? k_start - (nk - nq) : 0;
    return start < 0 ? 0 : (start > nq ? nq : start);
}

// ---- vector loads: one instruction moves 16 (8) bytes; the address must be 16 (8)-byte aligned ----------
__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ void store4(float* p, float4 x) { *reinterpret_cast<float4*>(p) = x; }

template <int G>
__device__ __forceinline__ void load_group(float (&out)[G], const float* p) {
    if constexpr (G == 4) {
        const float4 x = load4(p);
        out[0] = x.x; out[1] = x.y; out[2] = x.z; out[3] = x.w;
    } else if constexpr (G == 2) {
        const float2 x = *reinterpret_cast<const float2*>(p);
        out[0] = x.x; out[1] = x.y;
    } else {
        out[0] = p[0];
    }
}

// ---- tile copies, global <-> registers <-> shared ----------------------------------------------------------
// A tile of TILE rows x D floats is TILE D / 4 float4s; thread t copies float4s t, t + 256, ... (N4 of them).
template <int D> struct TileCopy {
    static constexpr int N4 = TILE * D / 4 / THREADS;                 // 1, 2, 4, 8 for d = 16 ... 128
    float4 part[N4];
    __device__ __forceinline__ void load(const float* src, int row0, int n) {     // global -> registers
#pragma unroll
        for (int u = 0; u < N4; ++u) {
            const int idx = threadIdx.x + u * THREADS, r = idx / (D / 4), c = 4 * (idx % (D / 4));
            part[u] = (row0 + r < n) ? load4(src + (long long)(row0 + r) * D + c) : float4{0.0f, 0.0f, 0.0f, 0.0f};
        }
    }
    __device__ __forceinline__ void store(float* dst) const {                      // registers -> shared
#pragma unroll
        for (int u = 0; u < N4; ++u) {
            const int idx = threadIdx.x + u * THREADS, r = idx / (D / 4), c = 4 * (idx % (D / 4));
            store4(dst + r * Layout<D>::LD + c, part[u]);
        }
    }
};

template <int D>
__device__ __forceinline__ void load_tile(float* dst, const float* src, int row0, int n) {
    TileCopy<D> copy;
    copy.load(src, row0, n);
    copy.store(dst);
}

// acc[i][j] += sum_t A[ty + 16i][t] B[tx + 16j][t], t < K, read 4 t at a time
template <int K>
__device__ __forceinline__ void tile_abt(float (&acc)[R][R], const float* A, const float* B, int ld) {
    const int ty = threadIdx.x / TG, tx = threadIdx.x % TG;
#pragma unroll 1
    for (int t = 0; t < K; t += 4) {
        float4 a[R], b[R];
#pragma unroll
        for (int i = 0; i < R; ++i) {
            a[i] = load4(A + (ty + TG * i) * ld + t);         // 2 rows per warp: broadcast
            b[i] = load4(B + (tx + TG * i) * ld + t);         // 8 rows per quarter-warp, 4 banks apart
        }
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < R; ++j)
                acc[i][j] += a[i].x * b[j].x + a[i].y * b[j].y + a[i].z * b[j].z + a[i].w * b[j].w;
    }
}

// acc[i][g G + e] += sum_t P[ty + 16i][t] V[t][g 16 G + tx G + e], t < TILE: P V for this thread's columns
template <int D>
__device__ __forceinline__ void tile_ab(float (&acc)[R][Layout<D>::C], const float* P, const float* V) {
    using L = Layout<D>;
    const int ty = threadIdx.x / TG, tx = threadIdx.x % TG;
#pragma unroll 2
    for (int t = 0; t < TILE; t += 4) {
        float p[R][4];
#pragma unroll
        for (int i = 0; i < R; ++i) {
            const float4 x = load4(P + (ty + TG * i) * LDP + t);
            p[i][0] = x.x; p[i][1] = x.y; p[i][2] = x.z; p[i][3] = x.w;
        }
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
            for (int g = 0; g < L::GROUPS; ++g) {
                float v[L::G];
                load_group<L::G>(v, V + (t + u) * L::LD + g * TG * L::G + tx * L::G);
#pragma unroll
                for (int i = 0; i < R; ++i)
#pragma unroll
                    for (int e = 0; e < L::G; ++e) acc[i][g * L::G + e] += p[i][u] * v[e];
            }
    }
}

// the column of entry c of a thread's accumulator row (the layout tile_ab writes)
template <int D>
__device__ __forceinline__ int out_column(int c) {
    using L = Layout<D>;
    return (c / L::G) * TG * L::G + (threadIdx.x % TG) * L::G + c % L::G;
}

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

// ---- forward ------------------------------------------------------------------------------------------------
template <int D>
__device__ __forceinline__ void forward(float* smem, const float* q, const float* k, const float* v,
                                        const unsigned char* mask, long long mask_bh_stride, float* o, float* lse,
                                        int nq, int nk, int causal, float scale) {
    using L = Layout<D>;
    constexpr int C = L::C;
    float* Qs = smem;
    float* Ks = Qs + TILE * L::LD;
    float* Vs = Ks + TILE * L::LD;
    float* Ps = Vs + TILE * L::LD;           // (TILE, LDP): row r written and read by grid row r % 16 only
    const int ty = threadIdx.x / TG, tx = threadIdx.x % TG;
    const int q0 = blockIdx.x * TILE;
    const long long bh = blockIdx.y;
    q += bh * nq * D; k += bh * nk * D; v += bh * nk * D; o += bh * nq * D; lse += bh * nq;
    if (mask) mask += bh * mask_bh_stride;
    const float scale2 = scale * LOG2E;      // S in log2 units: p = 2^(s - m)

    load_tile<D>(Qs, q, q0, nq);
    float acc[R][C], m[R], l[R];
#pragma unroll
    for (int i = 0; i < R; ++i) {
        m[i] = neg_inf();
        l[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < C; ++c) acc[i][c] = 0.0f;
    }
    const int k_stop = key_end(q0 + TILE < nq ? q0 + TILE : nq, nq, nk, causal);
    TileCopy<D> next_k, next_v;              // the prefetched tile, in registers
    if (k_stop > 0) { next_k.load(k, 0, nk); next_v.load(v, 0, nk); }
    for (int k0 = 0; k0 < k_stop; k0 += TILE) {
        __syncthreads();                     // the previous tile's K / V readers are done
        next_k.store(Ks);
        next_v.store(Vs);
        __syncthreads();
        if (k0 + TILE < k_stop) { next_k.load(k, k0 + TILE, nk); next_v.load(v, k0 + TILE, nk); }   // in flight
        float s[R][R] = {};
        tile_abt<D>(s, Qs, Ks, L::LD);
#pragma unroll
        for (int i = 0; i < R; ++i) {
            const int row = q0 + ty + TG * i;
            float tile_max = neg_inf();
#pragma unroll
            for (int j = 0; j < R; ++j) {
                s[i][j] = visible(row, k0 + tx + TG * j, nq, nk, causal, mask) ? s[i][j] * scale2 : neg_inf();
                tile_max = fmaxf(tile_max, s[i][j]);
            }
            const float m_new = fmaxf(m[i], row_max(tile_max));
            const float ref = (m_new == neg_inf()) ? 0.0f : m_new;
            const float alpha = exp2f(m[i] - ref);
            float tile_sum = 0.0f;
#pragma unroll
            for (int j = 0; j < R; ++j) {
                const float p = exp2f(s[i][j] - ref);
                Ps[(ty + TG * i) * LDP + tx + TG * j] = p;
                tile_sum += p;
            }
            l[i] = alpha * l[i] + row_sum(tile_sum);
            m[i] = m_new;
#pragma unroll
            for (int c = 0; c < C; ++c) acc[i][c] *= alpha;
        }
        __syncwarp();                        // this half-warp's P rows are written (only it reads them)
        tile_ab<D>(acc, Ps, Vs);             // (the next tile's first __syncthreads orders these reads
    }                                        //  before the P rows are written again)
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int row = q0 + ty + TG * i;
        if (row >= nq) continue;
        const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
#pragma unroll
        for (int c = 0; c < C; ++c) o[(long long)row * D + out_column<D>(c)] = acc[i][c] * inv;
        if (tx == 0) lse[row] = l[i] > 0.0f ? (m[i] + log2f(l[i])) * LN2 : neg_inf();
    }
}

// ---- backward -------------------------------------------------------------------------------------------
__device__ __forceinline__ void rowsum_product(const float* o, const float* dout, float* delta, long long rows, int d) {
    const long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    float total = 0.0f;
    for (int t = 0; t < d; ++t) total += o[row * d + t] * dout[row * d + t];
    delta[row] = total;
}

template <int D>
__device__ __forceinline__ void backward_dk_dv(float* smem, const float* q, const float* k, const float* v,
                                               const unsigned char* mask, long long mask_bh_stride,
                                               const float* dout, const float* lse, const float* delta,
                                               float* dk, float* dv, int nq, int nk, int causal, float scale) {
    using L = Layout<D>;
    constexpr int C = L::C;
    float* Ks = smem;
    float* Vs = Ks + TILE * L::LD;
    float* Qs = Vs + TILE * L::LD;
    float* dOs = Qs + TILE * L::LD;
    float* Ps = dOs + TILE * L::LD;          // P^T then dS^T, [key][query]; row r belongs to grid row r % 16
    float* Ls = Ps + TILE * LDP;             // L log2(e) of the query tile (0 for fully masked rows)
    float* Ds = Ls + TILE;
    const int ty = threadIdx.x / TG, tx = threadIdx.x % TG;
    const int k0 = blockIdx.x * TILE;
    const long long bh = blockIdx.y;
    q += bh * nq * D; k += bh * nk * D; v += bh * nk * D; dout += bh * nq * D;
    lse += bh * nq; delta += bh * nq; dk += bh * nk * D; dv += bh * nk * D;
    if (mask) mask += bh * mask_bh_stride;
    const float scale2 = scale * LOG2E;

    load_tile<D>(Ks, k, k0, nk);
    load_tile<D>(Vs, v, k0, nk);
    float dk_acc[R][C], dv_acc[R][C];
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
        for (int c = 0; c < C; ++c) dk_acc[i][c] = dv_acc[i][c] = 0.0f;

    for (int q0 = query_start(k0, nq, nk, causal) / TILE * TILE; q0 < nq; q0 += TILE) {
        __syncthreads();                     // the previous tile's Q / dO / L / D readers are done
        load_tile<D>(Qs, q, q0, nq);
        load_tile<D>(dOs, dout, q0, nq);
        for (int r = threadIdx.x; r < TILE; r += THREADS) {
            const bool in = q0 + r < nq;
            const float Lr = in ? lse[q0 + r] : 0.0f;
            Ls[r] = (Lr == neg_inf()) ? 0.0f : Lr * LOG2E;
            Ds[r] = in ? delta[q0 + r] : 0.0f;
        }
        __syncthreads();
        float s[R][R] = {}, dp[R][R] = {};
        tile_abt<D>(s, Ks, Qs, L::LD);       // S^T
        tile_abt<D>(dp, Vs, dOs, L::LD);     // dP^T
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < R; ++j) {
                const int key = k0 + ty + TG * i, col = tx + TG * j;
                const float p = visible(q0 + col, key, nq, nk, causal, mask) ? exp2f(s[i][j] * scale2 - Ls[col]) : 0.0f;
                Ps[(ty + TG * i) * LDP + col] = p;
                s[i][j] = p * (dp[i][j] - Ds[col]);
            }
        __syncwarp();                        // own rows of P^T written
        tile_ab<D>(dv_acc, Ps, dOs);         // dV += P^T dO
        __syncwarp();                        // own rows of P^T read before they become dS^T
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < R; ++j) Ps[(ty + TG * i) * LDP + tx + TG * j] = s[i][j];
        __syncwarp();
        tile_ab<D>(dk_acc, Ps, Qs);          // dK += dS^T Q
    }
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int key = k0 + ty + TG * i;
        if (key >= nk) continue;
#pragma unroll
        for (int c = 0; c < C; ++c) {
            dk[(long long)key * D + out_column<D>(c)] = dk_acc[i][c] * scale;
            dv[(long long)key * D + out_column<D>(c)] = dv_acc[i][c];
        }
    }
}

template <int D>
__device__ __forceinline__ void backward_dq(float* smem, const float* q, const float* k, const float* v,
                                            const unsigned char* mask, long long mask_bh_stride,
                                            const float* dout, const float* lse, const float* delta,
                                            float* dq, int nq, int nk, int causal, float scale) {
    using L = Layout<D>;
    constexpr int C = L::C;
    float* Qs = smem;
    float* dOs = Qs + TILE * L::LD;
    float* Ks = dOs + TILE * L::LD;
    float* Vs = Ks + TILE * L::LD;
    float* Ps = Vs + TILE * L::LD;           // dS, [query][key]; row r belongs to grid row r % 16
    const int ty = threadIdx.x / TG, tx = threadIdx.x % TG;
    const int q0 = blockIdx.x * TILE;
    const long long bh = blockIdx.y;
    q += bh * nq * D; k += bh * nk * D; v += bh * nk * D; dout += bh * nq * D;
    lse += bh * nq; delta += bh * nq; dq += bh * nq * D;
    if (mask) mask += bh * mask_bh_stride;
    const float scale2 = scale * LOG2E;

    load_tile<D>(Qs, q, q0, nq);
    load_tile<D>(dOs, dout, q0, nq);
    float Lr[R], Dr[R], dq_acc[R][C];
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int row = q0 + ty + TG * i;
        const float lrow = row < nq ? lse[row] : 0.0f;
        Lr[i] = (lrow == neg_inf()) ? 0.0f : lrow * LOG2E;
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
        tile_abt<D>(s, Qs, Ks, L::LD);
        tile_abt<D>(dp, dOs, Vs, L::LD);
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < R; ++j) {
                const int row = q0 + ty + TG * i, key = k0 + tx + TG * j;
                const float p = visible(row, key, nq, nk, causal, mask) ? exp2f(s[i][j] * scale2 - Lr[i]) : 0.0f;
                Ps[(ty + TG * i) * LDP + tx + TG * j] = p * (dp[i][j] - Dr[i]);
            }
        __syncwarp();                        // own rows of dS written
        tile_ab<D>(dq_acc, Ps, Ks);          // dQ += dS K
    }
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int row = q0 + ty + TG * i;
        if (row >= nq) continue;
#pragma unroll
        for (int c = 0; c < C; ++c) dq[(long long)row * D + out_column<D>(c)] = dq_acc[i][c] * scale;
    }
}

}  // namespace tv2

// the entry points; a file that includes this one for its helpers (v3) defines TV2_HELPERS_ONLY first
#ifndef TV2_HELPERS_ONLY
#define TV2_ATTENTION_KERNELS(D)                                                                              \
    extern "C" __global__ void __launch_bounds__(tv2::THREADS)                                                \
    v2_forward_d##D(const float* q, const float* k, const float* v, const unsigned char* mask,                \
                    long long mask_bh_stride, float* o, float* lse, int nq, int nk, int causal, float scale) { \
        TV_SHARED_MEMORY(smem);                                                                               \
        tv2::forward<D>(smem, q, k, v, mask, mask_bh_stride, o, lse, nq, nk, causal, scale);                  \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(tv2::THREADS)                                                \
    v2_backward_dk_dv_d##D(const float* q, const float* k, const float* v, const unsigned char* mask,        \
                           long long mask_bh_stride, const float* dout, const float* lse, const float* delta, \
                           float* dk, float* dv, int nq, int nk, int causal, float scale) {                  \
        TV_SHARED_MEMORY(smem);                                                                               \
        tv2::backward_dk_dv<D>(smem, q, k, v, mask, mask_bh_stride, dout, lse, delta, dk, dv, nq, nk, causal, \
                               scale);                                                                        \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(tv2::THREADS)                                                \
    v2_backward_dq_d##D(const float* q, const float* k, const float* v, const unsigned char* mask,           \
                        long long mask_bh_stride, const float* dout, const float* lse, const float* delta,    \
                        float* dq, int nq, int nk, int causal, float scale) {                                \
        TV_SHARED_MEMORY(smem);                                                                               \
        tv2::backward_dq<D>(smem, q, k, v, mask, mask_bh_stride, dout, lse, delta, dq, nq, nk, causal, scale); \
    }

TV2_ATTENTION_KERNELS(16)
TV2_ATTENTION_KERNELS(32)
TV2_ATTENTION_KERNELS(64)
TV2_ATTENTION_KERNELS(128)

extern "C" __global__ void v2_backward_rowsum(const float* o, const float* dout, float* delta, long long rows, int d) {
    tv2::rowsum_product(o, dout, delta, rows, d);
}
#endif  // TV2_HELPERS_ONLY
#endif  // TV_FLASH_ATTENTION_V2
