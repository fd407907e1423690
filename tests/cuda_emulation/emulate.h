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
