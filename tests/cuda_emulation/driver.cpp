// Runs the kernels of csrc/ on the host emulation: forward, then the three backward kernels.
//   driver DIR VERSION D BH NQ NK CAUSAL MASK_MODE SCALE SMEM_FORWARD SMEM_DK_DV SMEM_DQ
// VERSION: v1 (flash_attention.cu), v2 (flash_attention_v2.cu), v3-tf32 or v3-3xtf32 (flash_attention_v3.cu's
// forward, v2's backward, as the loader runs them).
// Built twice. As is, the kernels compute in float32, as on a GPU. With -DTV_EMULATE_DOUBLE every
// `float` of the kernel file becomes a double (a macro around its #include, with expf / logf / fmaxf
// mapped to the double functions): the same indexing, tiles, masks and barriers, but rounding errors
// of 1e-16 instead of 1e-7, so the result must equal the float64 reference almost exactly. That
// separates "the algorithm is right" (float64 build, tight tolerance) from "float32 is accurate
// enough" (float32 build, compared with float32 references).
// reads DIR/{q,k,v,do}.bin (the build's float type, C order) and, when MASK_MODE is 1 (one (Nq, Nk) mask for every
// batch x head) or 2 (one per batch x head), DIR/mask.bin (uint8); writes DIR/{o,lse,dq,dk,dv}.bin.
// Buffers are exactly their size (AddressSanitizer catches any access past them); an alarm fails a
// run that hangs at a barrier.
#include <array>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>
#include "emulate.h"

#ifdef TV_EMULATE_DOUBLE
using real = double;
#define float double
#define expf(x) std::exp(x)
#define logf(x) std::log(x)
#define fmaxf(a, b) std::fmax(a, b)
#define exp2f(x) std::exp2(x)
#define log2f(x) std::log2(x)
#include "../../csrc/flash_attention.cu"
#include "../../csrc/flash_attention_v2.cu"
#include "../../csrc/flash_attention_v3.cu"
#undef float
#undef expf
#undef logf
#undef fmaxf
#undef exp2f
#undef log2f
#else
using real = float;
#include "../../csrc/flash_attention.cu"
#include "../../csrc/flash_attention_v2.cu"          // first, with its kernels: v3's include is then a no-op
#include "../../csrc/flash_attention_v3.cu"
#endif

template <class T>
static std::vector<T> read(const std::string& path, size_t n) {
    std::vector<T> out(n);
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f || std::fread(out.data(), sizeof(T), n, f) != n) { std::fprintf(stderr, "cannot read %s\n", path.c_str()); std::exit(2); }
    std::fclose(f);
    return out;
}

template <class T>
static void write(const std::string& path, const std::vector<T>& data) {
    FILE* f = std::fopen(path.c_str(), "wb");
    std::fwrite(data.data(), sizeof(T), data.size(), f);
    std::fclose(f);
}

// driver mma DIR: one emulated warp runs tv_mma_m16n8k8_tf32 on the registers in DIR/{a,b,c}.bin (32 x 4,
// 32 x 2, 32 x 4, lane by register, as tinyvision/kernels/mma_layout.fragment lays them out) and writes
// DIR/d.bin: the test that the emulation's fragment layout is the one the Python model documents.
static int run_mma(const std::string& dir) {
    auto a = read<real>(dir + "/a.bin", 32 * 4), b = read<real>(dir + "/b.bin", 32 * 2), c = read<real>(dir + "/c.bin", 32 * 4);
    std::vector<real> out(32 * 4);
    launch({1, 1}, 32, 0, [&] {
        const int lane = threadIdx.x;
        real ra[4], rb[2], rd[4];
        for (int r = 0; r < 4; ++r) { ra[r] = a[4 * lane + r]; rd[r] = c[4 * lane + r]; }
        for (int r = 0; r < 2; ++r) rb[r] = b[2 * lane + r];
        tv_mma_m16n8k8_tf32(rd, ra, rb);
        for (int r = 0; r < 4; ++r) out[4 * lane + r] = rd[r];
    });
    write(dir + "/d.bin", out);
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "mma") return run_mma(argv[2]);
    if (argc != 13) { std::fprintf(stderr, "usage: driver DIR VERSION D BH NQ NK CAUSAL MASK_MODE SCALE SMEM_FWD SMEM_DKDV SMEM_DQ\n"); return 2; }
    alarm(120);
    const std::string dir = argv[1], version = argv[2];
    const int d = std::atoi(argv[3]), bh = std::atoi(argv[4]), nq = std::atoi(argv[5]), nk = std::atoi(argv[6]);
    const int causal = std::atoi(argv[7]), mask_mode = std::atoi(argv[8]);
    const real scale = real(std::strtod(argv[9], nullptr));
    const size_t smem_fwd = std::strtoul(argv[10], nullptr, 10), smem_dkdv = std::strtoul(argv[11], nullptr, 10),
                 smem_dq = std::strtoul(argv[12], nullptr, 10);
    if (version != "v1" && version != "v2" && version != "v3-tf32" && version != "v3-3xtf32") {
        std::fprintf(stderr, "version %s: one of v1, v2, v3-tf32, v3-3xtf32\n", version.c_str()); return 2;
    }

    auto q = read<real>(dir + "/q.bin", size_t(bh) * nq * d), dout = read<real>(dir + "/do.bin", size_t(bh) * nq * d);
    auto k = read<real>(dir + "/k.bin", size_t(bh) * nk * d), v = read<real>(dir + "/v.bin", size_t(bh) * nk * d);
    std::vector<real> k_shifted;                // TV_MISALIGN_K (a test): K starts one element past a 16-byte
    real* k_data = k.data();                    // boundary, so the kernels' float4 loads of K must stop
    if (std::getenv("TV_MISALIGN_K")) {
        k_shifted.assign(k.size() + 1, real(0));
        std::copy(k.begin(), k.end(), k_shifted.begin() + 1);
        k_data = k_shifted.data() + 1;
    }
    std::vector<unsigned char> mask;
    if (mask_mode) mask = read<unsigned char>(dir + "/mask.bin", size_t(mask_mode == 2 ? bh : 1) * nq * nk);
    const unsigned char* m = mask_mode ? mask.data() : nullptr;
    const long long stride = mask_mode == 2 ? (long long)nq * nk : 0;

    std::vector<real> o(size_t(bh) * nq * d), lse(size_t(bh) * nq), delta(size_t(bh) * nq);
    std::vector<real> dq(q.size()), dk(k.size()), dv(v.size());
    const unsigned q_tiles = (nq + tv::TILE - 1) / tv::TILE, k_tiles = (nk + tv::TILE - 1) / tv::TILE;
    const long long rows = (long long)bh * nq;
    const bool v1 = version == "v1";

#define FORWARD(NAME, THREADS)                                                                               \
    launch({q_tiles, unsigned(bh)}, THREADS, smem_fwd, [&] {                                                 \
        NAME(q.data(), k_data, v.data(), m, stride, o.data(), lse.data(), nq, nk, causal, scale); });
#define BACKWARD(PREFIX, D)                                                                                  \
    launch({unsigned((rows + 127) / 128), 1}, 128, 0, [&] {                                                  \
        PREFIX##backward_rowsum(o.data(), dout.data(), delta.data(), rows, D); });                           \
    launch({k_tiles, unsigned(bh)}, tv::THREADS, smem_dkdv, [&] {                                            \
        PREFIX##backward_dk_dv_d##D(q.data(), k_data, v.data(), m, stride, dout.data(), lse.data(), delta.data(), \
                                    dk.data(), dv.data(), nq, nk, causal, scale); });                        \
    launch({q_tiles, unsigned(bh)}, tv::THREADS, smem_dq, [&] {                                              \
        PREFIX##backward_dq_d##D(q.data(), k_data, v.data(), m, stride, dout.data(), lse.data(), delta.data(), \
                                 dq.data(), nq, nk, causal, scale); });
#define RUN(D)                                                                                               \
    if (v1) { FORWARD(flash_forward_d##D, tv::THREADS) BACKWARD(flash_, D) }                                 \
    else {                                                                                                   \
        if (version == "v2") { FORWARD(v2_forward_d##D, tv2::THREADS) }                                      \
        else if (version == "v3-tf32") { FORWARD(v3_forward_tf32_d##D, tv3::THREADS) }                       \
        else { FORWARD(v3_forward_3xtf32_d##D, tv3::THREADS) }                                               \
        BACKWARD(v2_, D)                                                                                     \
    }

    if (d == 16) { RUN(16) } else if (d == 32) { RUN(32) } else if (d == 64) { RUN(64) } else if (d == 128) { RUN(128) }
    else { std::fprintf(stderr, "head dim %d: the kernels exist for 16, 32, 64 and 128\n", d); return 2; }

    write(dir + "/o.bin", o); write(dir + "/lse.bin", lse);
    write(dir + "/dq.bin", dq); write(dir + "/dk.bin", dk); write(dir + "/dv.bin", dv);
    return 0;
}
