// Host emulation of the few CUDA features csrc/flash_attention.cu uses, so that g++ can compile and run
// the kernel source on a machine without a GPU (tests/test_flash_cuda_c.py).
//
// Every CUDA thread is an OS thread; a block's threads really run concurrently. __syncthreads() is a
// std::barrier over the block, __shfl_xor_sync an exchange through a per-warp buffer between two
// per-warp barriers. So a barrier or shuffle that not every thread reaches deadlocks here as on a GPU
// (the driver's alarm turns that into a failure), and data races between barriers can show as wrong
// numbers. Shared memory is a fresh heap buffer of exactly the bytes the loader asks for (twice that
// in the float64 build, where every float of the kernel is a double), filled with
// NaN: reading a value nobody wrote poisons the result, and AddressSanitizer stops any access past it.
// Version 2 and 3 of the kernel add three things, emulated here as well:
//   float4 / float2 loads: plain structs with the GPU's alignment (16 / 8 bytes); the kernels read them
//     through reinterpret_cast, so UndefinedBehaviorSanitizer's alignment check stops a misaligned one.
//   __syncwarp(): a barrier over the 32 threads of one warp (std::barrier, as __syncthreads over the block).
//   mma.sync.m16n8k8 TF32 (tv_mma_m16n8k8_tf32): every lane posts its fragment registers, the warp meets,
//     each lane rebuilds A (16 x 8) and B (8 x 8) from the PTX fragment layout and computes its own four
//     entries of D. The float32 build keeps only the TF32 bits of the inputs (the low 13 mantissa bits are
//     dropped, as the tensor core ignores them) and adds in float32; the float64 build multiplies exactly,
//     so a fragment-layout bug shows as an O(1) error there, not as rounding noise.
// What it cannot check: speed, register pressure, bank conflicts, anything about real warps' timing.
#pragma once
#include <array>
#include <barrier>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x = 1, y = 1, z = 1; };

// The kernel file's float type: float, or double in the float64 build (driver.cpp, TV_EMULATE_DOUBLE)
#ifdef TV_EMULATE_DOUBLE
using emulated_float = double;
#else
using emulated_float = float;
#endif

struct EmulatedBlock {
    explicit EmulatedBlock(int threads, size_t shared_bytes)
        : barrier(threads), shared(new emulated_float[shared_bytes / sizeof(emulated_float)]), slots((threads + 31) / 32) {
        std::fill(shared.get(), shared.get() + shared_bytes / sizeof(emulated_float),
                  std::numeric_limits<emulated_float>::quiet_NaN());
        for (int w = 0; w < (threads + 31) / 32; ++w) warp_barriers.emplace_back(std::make_unique<std::barrier<>>(32));
    }
    std::barrier<> barrier;
    std::unique_ptr<emulated_float[]> shared;
    std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
    std::vector<std::array<emulated_float, 32>> slots;
    std::vector<std::array<emulated_float, 32 * 6>> mma_slots = std::vector<std::array<emulated_float, 32 * 6>>(slots.size());
};

inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;
inline thread_local EmulatedBlock* emulated_block = nullptr;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(threads)
#define TV_SHARED_MEMORY(name) float* name = emulated_block->shared.get()

inline float __int_as_float(int bits) { float f; std::memcpy(&f, &bits, sizeof f); return f; }
inline void __syncthreads() { emulated_block->barrier.arrive_and_wait(); }
inline void __syncwarp(unsigned /*mask: every lane takes part here*/ = 0xffffffffu) {
    emulated_block->warp_barriers[threadIdx.x / 32]->arrive_and_wait();
}

struct alignas(16) float4 { emulated_float x, y, z, w; };
struct alignas(8) float2 { emulated_float x, y; };

// ---- tensor cores: TF32 rounding and mma.sync.m16n8k8 (see the top of this file) ----------------------
#define TV_HOST_EMULATION 1

inline emulated_float tv_tf32_round(emulated_float x) {      // cvt.rna.tf32.f32: nearest, ties away from zero
#ifdef TV_EMULATE_DOUBLE
    return x;                                                // the float64 build checks the algorithm, not TF32
#else
    unsigned bits;
    std::memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & 0xffffe000u;   // inf / NaN kept
    std::memcpy(&x, &bits, sizeof x);
    return x;
#endif
}

inline emulated_float tf32_bits_only(emulated_float x) {     // what the tensor core reads of an operand
#ifdef TV_EMULATE_DOUBLE
    return x;
#else
    unsigned bits;
    std::memcpy(&bits, &x, sizeof bits);
    bits &= 0xffffe000u;
    std::memcpy(&x, &bits, sizeof x);
    return x;
#endif
}

inline void tv_mma_m16n8k8_tf32(emulated_float (&d)[4], const emulated_float (&a)[4], const emulated_float (&b)[2]) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    auto& posted = emulated_block->mma_slots[warp];
    for (int r = 0; r < 4; ++r) posted[6 * lane + r] = a[r];
    for (int r = 0; r < 2; ++r) posted[6 * lane + 4 + r] = b[r];
    emulated_block->warp_barriers[warp]->arrive_and_wait();          // every lane has posted its fragments
    emulated_float A[16][8], B[8][8];
    for (int l = 0; l < 32; ++l) {                                   // PTX ISA: fragments of m16n8k8 .tf32
        const int g = l / 4, t = l % 4;
        A[g][t] = posted[6 * l + 0];
        A[g + 8][t] = posted[6 * l + 1];
        A[g][t + 4] = posted[6 * l + 2];
        A[g + 8][t + 4] = posted[6 * l + 3];
        B[t][g] = posted[6 * l + 4];
        B[t + 4][g] = posted[6 * l + 5];
    }
    emulated_block->warp_barriers[warp]->arrive_and_wait();          // every lane has read them
    const int g = lane / 4, t = lane % 4;
    for (int r = 0; r < 4; ++r) {                                    // c0, c1: row g; c2, c3: row g + 8
        const int row = g + 8 * (r / 2), col = 2 * t + r % 2;
        emulated_float total = d[r];
        for (int kk = 0; kk < 8; ++kk) total += tf32_bits_only(A[row][kk]) * tf32_bits_only(B[kk][col]);
        d[r] = total;
    }
}

inline emulated_float __shfl_xor_sync(unsigned /*mask: every lane takes part here*/, emulated_float value, int lane_mask) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    emulated_block->slots[warp][lane] = value;
    emulated_block->warp_barriers[warp]->arrive_and_wait();     // every lane has written
    const emulated_float other = emulated_block->slots[warp][lane ^ lane_mask];
    emulated_block->warp_barriers[warp]->arrive_and_wait();     // every lane has read
    return other;
}

// kernel<<<grid, threads, shared_bytes>>>(...): blocks one after another, each block's threads at once
template <class Kernel>
void launch(dim3 grid, int threads, size_t shared_bytes, Kernel kernel) {
    for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
            EmulatedBlock block(threads, shared_bytes);
            std::vector<std::thread> pool;
            for (int t = 0; t < threads; ++t)
                pool.emplace_back([&, t] {
                    threadIdx = {unsigned(t), 0, 0};
                    blockIdx = {bx, by, 0};
                    blockDim = {unsigned(threads), 1, 1};
                    gridDim = grid;
                    emulated_block = &block;
                    kernel();
                });
            for (auto& th : pool) th.join();
        }
}
