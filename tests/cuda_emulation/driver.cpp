// Runs csrc/flash_attention.cu on the host emulation: forward, then the three backward kernels.
//   driver DIR D BH NQ NK CAUSAL MASK_MODE SCALE SMEM_FORWARD SMEM_DK_DV SMEM_DQ
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
#include "../../csrc/flash_attention.cu"
#undef float
#undef expf
#undef logf
#undef fmaxf
#else
using real = float;
#include "../../csrc/flash_attention.cu"
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

int main(int argc, char** argv) {
    if (argc != 12) { std::fprintf(stderr, "usage: driver DIR D BH NQ NK CAUSAL MASK_MODE SCALE SMEM_FWD SMEM_DKDV SMEM_DQ\n"); return 2; }
    alarm(120);
    const std::string dir = argv[1];
    const int d = std::atoi(argv[2]), bh = std::atoi(argv[3]), nq = std::atoi(argv[4]), nk = std::atoi(argv[5]);
    const int causal = std::atoi(argv[6]), mask_mode = std::atoi(argv[7]);
    const real scale = real(std::strtod(argv[8], nullptr));
    const size_t smem_fwd = std::strtoul(argv[9], nullptr, 10), smem_dkdv = std::strtoul(argv[10], nullptr, 10),
                 smem_dq = std::strtoul(argv[11], nullptr, 10);

    auto q = read<real>(dir + "/q.bin", size_t(bh) * nq * d), dout = read<real>(dir + "/do.bin", size_t(bh) * nq * d);
    auto k = read<real>(dir + "/k.bin", size_t(bh) * nk * d), v = read<real>(dir + "/v.bin", size_t(bh) * nk * d);
    std::vector<unsigned char> mask;
    if (mask_mode) mask = read<unsigned char>(dir + "/mask.bin", size_t(mask_mode == 2 ? bh : 1) * nq * nk);
    const unsigned char* m = mask_mode ? mask.data() : nullptr;
    const long long stride = mask_mode == 2 ? (long long)nq * nk : 0;

    std::vector<real> o(size_t(bh) * nq * d), lse(size_t(bh) * nq), delta(size_t(bh) * nq);
    std::vector<real> dq(q.size()), dk(k.size()), dv(v.size());
    const unsigned q_tiles = (nq + tv::TILE - 1) / tv::TILE, k_tiles = (nk + tv::TILE - 1) / tv::TILE;
    const long long rows = (long long)bh * nq;

#define RUN(D)                                                                                               \
    launch({q_tiles, unsigned(bh)}, tv::THREADS, smem_fwd, [&] {                                             \
        flash_forward_d##D(q.data(), k.data(), v.data(), m, stride, o.data(), lse.data(), nq, nk, causal, scale); }); \
    launch({unsigned((rows + 127) / 128), 1}, 128, 0, [&] {                                                  \
        flash_backward_rowsum(o.data(), dout.data(), delta.data(), rows, D); });                             \
    launch({k_tiles, unsigned(bh)}, tv::THREADS, smem_dkdv, [&] {                                            \
        flash_backward_dk_dv_d##D(q.data(), k.data(), v.data(), m, stride, dout.data(), lse.data(), delta.data(), \
                                  dk.data(), dv.data(), nq, nk, causal, scale); });                          \
    launch({q_tiles, unsigned(bh)}, tv::THREADS, smem_dq, [&] {                                              \
        flash_backward_dq_d##D(q.data(), k.data(), v.data(), m, stride, dout.data(), lse.data(), delta.data(), \
                               dq.data(), nq, nk, causal, scale); });

    if (d == 16) { RUN(16) } else if (d == 32) { RUN(32) } else if (d == 64) { RUN(64) } else if (d == 128) { RUN(128) }
    else { std::fprintf(stderr, "head dim %d: the kernels exist for 16, 32, 64 and 128\n", d); return 2; }

    write(dir + "/o.bin", o); write(dir + "/lse.bin", lse);
    write(dir + "/dq.bin", dq); write(dir + "/dk.bin", dk); write(dir + "/dv.bin", dv);
    return 0;
}
