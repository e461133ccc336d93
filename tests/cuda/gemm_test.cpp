// GPU block-scaled GEMMs against the CPU reference (src/cpu/gemm.cpp):
//  - exact problems (small integers, power-of-two scales) must match bit for bit, every element,
//    for every format, awkward M, with and without split-K, bias and residual;
//  - random problems quantized like the model must agree within bf16 rounding plus f32
//    accumulation slack, and with the unquantized product by cos-similarity (DeepGEMM thresholds);
//  - outputs are NaN-poisoned first, so an element the kernel forgets to write fails.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/backends.h"
#include "backend/gemm.h"
#include "common/gemm_test_util.h"
#include "cuda/gemm/config.h"
#include "dsv4/ops/gemm.h"

namespace dsv4 {
namespace {

using test::HostGemm;

#define SKIP_WITHOUT_GPU() \
  if (!cuda::available()) GTEST_SKIP() << "no sm_90 GPU: the CUDA GEMM tests need an H100/H200"

struct DevBuf {
  void* p = nullptr;
  DevBuf() = default;
  explicit DevBuf(size_t bytes) { EXPECT_EQ(cudaMalloc(&p, bytes ? bytes : 16), cudaSuccess); }
  DevBuf(const void* src, size_t bytes) : DevBuf(bytes) {
    if (bytes) EXPECT_EQ(cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

struct GpuRun {
  std::vector<uint16_t> d;
  Status status;
};

// Uploads the problem, poisons d with NaN, runs gemm (optionally with the split-K workspace, in a
// CUDA graph, or in place on the residual) and downloads d.
GpuRun run_gpu(const HostGemm& h, bool workspace = true, bool graph = false, bool in_place = false) {
  DevBuf a(h.a.data(), h.a.size()), as(h.a_scales.data(), h.a_scales.size()), b(h.b.data(), h.b.size()),
      bs(h.b_scales.data(), h.b_scales.size()), g(&h.global, 4), bias(h.bias.data(), h.bias.size()),
      res(h.residual.data(), h.residual.size());
  const size_t d_bytes = h.M * h.N * 2;
  std::vector<uint16_t> poison(h.M * h.N, test::kBf16NaN);
  DevBuf d(poison.data(), d_bytes);
  const Device dev = Device::cuda(0);
  GemmParams p = h.params(a.p, as.p, b.p, bs.p, g.p, bias.p, res.p, d.p, dev);
  if (in_place) {
    EXPECT_EQ(cudaMemcpy(d.p, h.residual.data(), d_bytes, cudaMemcpyHostToDevice), cudaSuccess);
    p.residual = p.d;
  }
  const int64_t ws = workspace ? gemm_workspace_size(h.format, h.M, h.N, h.K, dev) : 0;
  DevBuf wsb(ws);
  if (ws > 0) p.workspace = make_tensor(wsb.p, DType::U8, {ws}, dev);
  GpuRun r;
  if (graph) {
    cudaStream_t s;
    EXPECT_EQ(cudaStreamCreate(&s), cudaSuccess);
    cudaGraph_t gr;
    cudaGraphExec_t ge;
    EXPECT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    r.status = gemm(p, s);
    EXPECT_EQ(cudaStreamEndCapture(s, &gr), cudaSuccess);
    EXPECT_EQ(cudaGraphInstantiate(&ge, gr, 0), cudaSuccess);
    EXPECT_EQ(cudaGraphLaunch(ge, s), cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(gr);
    cudaStreamDestroy(s);
  } else {
    r.status = gemm(p);
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  r.d.resize(h.M * h.N);
  EXPECT_EQ(cudaMemcpy(r.d.data(), d.p, d_bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  return r;
}

std::vector<uint16_t> run_cpu(const HostGemm& hin) {
  HostGemm h = hin;
  std::vector<uint16_t> d;
  const Status s = gemm(h.host_params(d));
  EXPECT_TRUE(s.ok()) << s.message();
  return d;
}

std::string where(const HostGemm& h) {
  return std::string(gemm_format_name(h.format)) + " M=" + std::to_string(h.M) + " N=" + std::to_string(h.N) +
         " K=" + std::to_string(h.K) + (h.a_scale_cols == h.K / 32 && !h.a_bf16() ? " (MXFP8 A)" : "") +
         (h.a_scale_dtype == DType::F32 ? " (f32 scales)" : "");
}

// Bitwise equality, NaN == NaN; reports the first few mismatches.
void expect_bitwise(const HostGemm& h, const std::vector<uint16_t>& got, const std::vector<uint16_t>& want) {
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool both_nan = num::is_nan(num::bf16_to_float(got[i])) && num::is_nan(num::bf16_to_float(want[i]));
    if (got[i] != want[i] && !both_nan) {
      if (++bad <= 5)
        ADD_FAILURE() << where(h) << ": d[" << i / h.N << "][" << i % h.N << "] = " << num::bf16_to_float(got[i])
                      << " (0x" << std::hex << got[i] << std::dec << "), reference " << num::bf16_to_float(want[i]);
    }
  }
  EXPECT_EQ(bad, 0) << where(h) << ": " << bad << " of " << got.size() << " elements differ";
}

// Within one bf16 ulp of the reference (both sides round; an f32 sum a hair off the exact one can
// land on the neighbouring bf16) plus the accumulation slack: f32 and the fp8 tensor cores' ~14-bit
// internal accumulation can be off by about 2^-13 of sum_k |a_k b_k| (the abs-problem's product);
// the bound allows 2^-11 of it.
void expect_close(const HostGemm& h, const std::vector<uint16_t>& got, const std::vector<uint16_t>& want) {
  const std::vector<uint16_t> absref = run_cpu(test::abs_problem(h));
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = num::bf16_to_float(got[i]), w = num::bf16_to_float(want[i]);
    const double tol = std::ldexp(std::fabs(w), -7) + std::ldexp(double(num::bf16_to_float(absref[i])), -11);
    if (!(std::fabs(g - w) <= tol)) {
      if (++bad <= 5)
        ADD_FAILURE() << where(h) << ": d[" << i / h.N << "][" << i % h.N << "] = " << g << ", reference " << w
                      << " (tol " << tol << ")";
    }
  }
  EXPECT_EQ(bad, 0) << where(h) << ": " << bad << " of " << got.size() << " elements out of tolerance";
}

// Runs h on the GPU (run_gpu's options) and expects the reference's bits, or its values within
// expect_close's tolerance.
void expect_gpu_bitwise(const HostGemm& h, const std::vector<uint16_t>& want, bool workspace = true, bool graph = false,
                        bool in_place = false) {
  const GpuRun r = run_gpu(h, workspace, graph, in_place);
  ASSERT_TRUE(r.status.ok()) << where(h) << ": " << r.status.message();
  expect_bitwise(h, r.d, want);
}
void expect_gpu_close(const HostGemm& h, const std::vector<uint16_t>& want, bool workspace = true, bool graph = false) {
  const GpuRun r = run_gpu(h, workspace, graph);
  ASSERT_TRUE(r.status.ok()) << where(h) << ": " << r.status.message();
  expect_close(h, r.d, want);
}

struct FormatCase {
  GemmFormat f;
  DType scale;
  bool mx_a;
};
const FormatCase kCases[] = {
    {GemmFormat::kFP8Block, DType::UE8M0, false}, {GemmFormat::kFP8Block, DType::F32, false},
    {GemmFormat::kW4A8MXFP4, DType::UE8M0, false}, {GemmFormat::kW4A8MXFP4, DType::F32, false},
    {GemmFormat::kW4A8MXFP4, DType::UE8M0, true},  {GemmFormat::kW4A16MXFP4, DType::UE8M0, false},
    {GemmFormat::kW4A16NVFP4, DType::UE8M0, false},
};

TEST(GemmCuda, ExactMatchesReferenceBitForBit) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  // BM = 64 up to 64 (FP8: 128), then 128; FP8 at 16 and 64 runs the 32-row decode tiles, 1 and 7
  // split K.
  const int64_t Ms[] = {1, 7, 16, 64, 100, 129};
  const int64_t NK[][2] = {{128, 128}, {256, 512}, {384, 1024}};
  for (const FormatCase& c : kCases)
    for (int64_t M : Ms)
      for (const auto& nk : NK) {
        HostGemm h = test::make_exact_gemm(c.f, M, nk[0], nk[1], g, c.scale, c.mx_a);
        const bool epi = (M + nk[0]) % 3 == 0;
        if (epi) {
          h.has_bias = h.has_residual = true;
          test::add_epilogue_inputs(h, g, true);
        }
        const std::vector<uint16_t> want = run_cpu(h);
        expect_gpu_bitwise(h, want);
        // Without workspace the same problem runs unsplit: same bits.
        if (M <= 7) {
          expect_gpu_bitwise(h, want, false);
        }
      }
}

TEST(GemmCuda, ExactLargeM) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  for (const FormatCase& c : kCases) {
    HostGemm h = test::make_exact_gemm(c.f, 4096, 256, 512, g, c.scale, c.mx_a);
    const std::vector<uint16_t> want = run_cpu(h);
    expect_gpu_bitwise(h, want);  // FP4 weights: B expanded into the workspace first
    if (c.f != GemmFormat::kFP8Block) {  // and expanded inside the kernel when there is no workspace
      expect_gpu_bitwise(h, want, false);
    }
  }
  // FP8 decode on 64-row weight tiles (bn_for: N = 7168 makes 224 tiles of 32 rows, 112 of 64; at
  // M = 100 two row tiles of N = 4096 make 256 and 128), with the 16-row A box at M <= 16.
  for (int64_t M : {int64_t(9), int64_t(16), int64_t(64), int64_t(100)}) {
    const int64_t N = M == 100 ? 4096 : 7168;
    HostGemm h = test::make_exact_gemm(GemmFormat::kFP8Block, M, N, 256, g, M == 9 ? DType::F32 : DType::UE8M0);
    expect_gpu_bitwise(h, run_cpu(h));
    HostGemm hr = test::make_random_gemm(GemmFormat::kFP8Block, M, N, 1024, g);
    expect_gpu_close(hr, run_cpu(hr));
  }
  // FP8 at 129..256 rows on 64 x 128 tiles without split-K (bm_for: N = 4096 makes 64 tiles of
  // 128 rows, which would split, and 96 / 128 of 64 rows on a 132-SM H100/H200), with the
  // TMA-store epilogue of a partial last M tile (M = 200) and the direct one (bias + residual).
  for (int64_t M : {int64_t(129), int64_t(200)}) {
    HostGemm h = test::make_exact_gemm(GemmFormat::kFP8Block, M, 4096, 256, g);
    if (M == 200) {
      h.has_bias = h.has_residual = true;
      test::add_epilogue_inputs(h, g, true);
    }
    expect_gpu_bitwise(h, run_cpu(h));
    HostGemm hr = test::make_random_gemm(GemmFormat::kFP8Block, M, 4096, 1024, g);
    expect_gpu_close(hr, run_cpu(hr));
  }
  // Pre-expanded W4A16 on 128 x 256 tiles (bn_for picks them where they make fewer waves: 68 wide
  // tiles against 136 narrow ones on a 132-SM H100/H200), with the 256-wide TMA-store epilogue and,
  // for MXFP4, the direct one (bias + residual).
  for (GemmFormat f : {GemmFormat::kW4A16MXFP4, GemmFormat::kW4A16NVFP4}) {
    HostGemm h = test::make_exact_gemm(f, 2176, 1024, 256, g);
    if (f == GemmFormat::kW4A16MXFP4) {
      h.has_bias = h.has_residual = true;
      test::add_epilogue_inputs(h, g, true);
    }
    const std::vector<uint16_t> want = run_cpu(h);
    expect_gpu_bitwise(h, want);
    expect_gpu_bitwise(h, want, false);
  }
  // The largest M, one format, narrow N/K so the reference stays cheap.
  HostGemm h = test::make_exact_gemm(GemmFormat::kFP8Block, 65536, 128, 128, g);
  expect_gpu_bitwise(h, run_cpu(h));
}

// The largest minus the smallest B exponent over the 128 x 128 blocks of an MXFP4 weight (a NaN
// code counts as an unbounded span): W4A8's expanded path folds each block's largest exponent into
// the e4m3 values when every block spans at most 14, else each row's (config.h, PreExpandLayout).
int max_block_span(const HostGemm& h) {
  const int64_t cols = h.K / 32;
  int worst = 0;
  for (int64_t nb = 0; nb < h.N / 128; ++nb)
    for (int64_t kb = 0; kb < h.K / 128; ++kb) {
      int hi = 0, lo = 255;
      for (int64_t n = nb * 128; n < nb * 128 + 128; ++n)
        for (int64_t j = kb * 4; j < kb * 4 + 4; ++j) hi = std::max<int>(hi, h.b_scales[n * cols + j]), lo = std::min<int>(lo, h.b_scales[n * cols + j]);
      worst = std::max(worst, hi == 255 ? 1000 : hi - lo);
    }
  return worst;
}

// Large M with FP4 weights expands B once into the workspace (config.h, pre_expand_bytes) with the
// codecs the kernel's own expansion uses, so with and without a workspace the bits must agree;
// both within tolerance of the reference. Covers M not a multiple of the tile, bias and residual, a
// CUDA graph, W4A8's two promotion modes (one scale a 128 x 128 block when every block's exponents
// span <= 14, else one a row: a single block past the bound, at the far corner, switches the whole
// GEMM), the wide-span rounding, and MXFP8 activations (which keep the in-kernel path).
TEST(GemmCuda, PreExpandedMatchesInKernelExpansion) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  // W4A8 and W4A16-NVFP4 are expanded once from M = 257 (config.h), W4A16-MXFP4 from 512: each at
  // both ends.
  for (const int64_t M : {int64_t(600), int64_t(257)}) {
    for (const FormatCase& c : kCases) {
      if (c.f == GemmFormat::kFP8Block) continue;
      if (M < cuda::gemm_detail::pre_expand_min_m(c.f)) continue;
      // W4A16 also at N = 512 (a multiple of 256: bn_for weighs the wide tiles, here too few of them).
      for (int variant = 0; variant < 7; ++variant) {
        SCOPED_TRACE(testing::Message() << "M " << M << " variant " << variant);
        const bool w4a8 = c.f == GemmFormat::kW4A8MXFP4;
        if ((variant >= 2 && variant < 5 && !w4a8) || (variant >= 5 && w4a8)) continue;
        const int64_t N = variant >= 5 ? 512 : 384;
        HostGemm h = test::make_random_gemm(c.f, M, N, 1536, g, c.scale, c.mx_a);
        if (w4a8 && variant < 2) ASSERT_LE(max_block_span(h), 14) << "random weights should take the block mode";
        if (variant == 1 || variant == 6) {
          h.has_bias = h.has_residual = true;
          test::add_epilogue_inputs(h, g, false);
        }
        if (variant == 2) {  // B exponents spanning 20 in a block: row mode, small sub-blocks round
          for (int64_t n = 0; n < h.N; ++n)
            for (int64_t j = 0; j < h.K / 32; ++j)
              h.b_scales[n * (h.K / 32) + j] = static_cast<uint8_t>(j % 4 == n % 4 ? 131 : 111 + (n + j) % 11);
          ASSERT_GT(max_block_span(h), 14);
        }
        if (variant == 3 || variant == 4) {  // the last block's last sub-block at span 15 (row mode) or exactly 14 (block mode)
          const int64_t cols = h.K / 32;
          int hi = 0;
          for (int64_t n = h.N - 128; n < h.N; ++n)
            for (int64_t j = cols - 4; j < cols; ++j) hi = std::max<int>(hi, h.b_scales[n * cols + j]);
          h.b_scales[(h.N - 1) * cols + cols - 1] = static_cast<uint8_t>(hi - (variant == 3 ? 15 : 14));
          ASSERT_EQ(max_block_span(h) > 14, variant == 3);
        }
        ASSERT_GT(gemm_workspace_size(h.format, h.M, h.N, h.K, Device::cuda(0)), 0) << where(h);
        const std::vector<uint16_t> want = run_cpu(h);
        GpuRun pre = run_gpu(h, true, variant == 1 || variant == 6);
        ASSERT_TRUE(pre.status.ok()) << where(h) << ": " << pre.status.message();
        GpuRun in_kernel = run_gpu(h, false);
        ASSERT_TRUE(in_kernel.status.ok()) << where(h) << ": " << in_kernel.status.message();
        expect_bitwise(h, pre.d, in_kernel.d);
        expect_close(h, pre.d, want);
      }
    }
  }
  // A NaN scale reaches exactly the outputs it feeds on the expanded path too.
  for (GemmFormat f : {GemmFormat::kW4A8MXFP4, GemmFormat::kW4A16MXFP4}) {
    HostGemm h = test::make_exact_gemm(f, 520, 256, 256, g);
    h.b_scales[200 * 8 + 5] = 0xFF;  // row 200, K sub-block 5
    expect_gpu_bitwise(h, run_cpu(h));
  }
}

// The W4A8 exponent statistics run on at most kStatsCtas CTAs, striding over the 128 x 128 blocks,
// and leave one byte a CTA that the expansion pass ORs (no zeroing between calls). Weights of 33 x 64
// blocks need a second stride; a span of 15 in the very last block (row mode) or none (block mode)
// must give the in-kernel expansion's bits, and one workspace reused across the two calls, in
// both orders, must not carry the first call's mode into the second.
TEST(GemmCuda, PreExpandedStatsCoverEveryBlock) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  const int64_t M = 257, N = 33 * 128, K = 64 * 128;
  ASSERT_GT(N / 128 * (K / 128), int64_t(8) * cuda::gemm_detail::kStatsCtas);
  HostGemm block = test::make_random_gemm(GemmFormat::kW4A8MXFP4, M, N, K, g);
  ASSERT_LE(max_block_span(block), 14);
  HostGemm row = block;
  const int64_t cols = K / 32;
  int hi = 0;
  for (int64_t n = N - 128; n < N; ++n)
    for (int64_t j = cols - 4; j < cols; ++j) hi = std::max<int>(hi, row.b_scales[n * cols + j]);
  row.b_scales[(N - 1) * cols + cols - 1] = static_cast<uint8_t>(hi - 15);
  ASSERT_GT(max_block_span(row), 14);
  const Device dev = Device::cuda(0);
  const int64_t ws = gemm_workspace_size(GemmFormat::kW4A8MXFP4, M, N, K, dev);
  ASSERT_GT(ws, 0);
  DevBuf wsb(ws);
  for (int order = 0; order < 2; ++order) {
    for (int i = 0; i < 2; ++i) {
      const HostGemm& h = (i == order) ? row : block;
      SCOPED_TRACE(testing::Message() << "order " << order << (i == order ? " row mode" : " block mode"));
      DevBuf a(h.a.data(), h.a.size()), as(h.a_scales.data(), h.a_scales.size()), b(h.b.data(), h.b.size()),
          bs(h.b_scales.data(), h.b_scales.size()), gl(&h.global, 4);
      std::vector<uint16_t> poison(M * N, test::kBf16NaN);
      DevBuf d(poison.data(), poison.size() * 2);
      GemmParams p = h.params(a.p, as.p, b.p, bs.p, gl.p, nullptr, nullptr, d.p, dev);
      p.workspace = make_tensor(wsb.p, DType::U8, {ws}, dev);
      const Status st = gemm(p);
      ASSERT_TRUE(st.ok()) << st.message();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<uint16_t> got(M * N);
      ASSERT_EQ(cudaMemcpy(got.data(), d.p, got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      const GpuRun in_kernel = run_gpu(h, false);
      ASSERT_TRUE(in_kernel.status.ok()) << in_kernel.status.message();
      expect_bitwise(h, got, in_kernel.d);
    }
  }
}

// The expansion pass reads a block's four exponents with one 4-byte load when the scale tensor has
// unit column stride and 4-byte aligned rows; column-major scales take the byte-load path.
TEST(GemmCuda, PreExpandedColumnMajorScales) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  for (GemmFormat f : {GemmFormat::kW4A8MXFP4, GemmFormat::kW4A16MXFP4}) {
    HostGemm h = test::make_exact_gemm(f, 520, 256, 512, g);
    const std::vector<uint16_t> want = run_cpu(h);
    const int64_t rows = h.b_scale_rows(), cols = h.b_scale_cols();
    std::vector<uint8_t> cm(h.b_scales.size());  // [cols][rows] storage of the [rows][cols] scales
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) cm[c * rows + r] = h.b_scales[r * cols + c];
    DevBuf a(h.a.data(), h.a.size()), as(h.a_scales.data(), h.a_scales.size()), b(h.b.data(), h.b.size()),
        bs(cm.data(), cm.size()), gl(&h.global, 4);
    std::vector<uint16_t> poison(h.M * h.N, test::kBf16NaN);
    DevBuf d(poison.data(), poison.size() * 2);
    const Device dev = Device::cuda(0);
    GemmParams p = h.params(a.p, as.p, b.p, bs.p, gl.p, nullptr, nullptr, d.p, dev);
    p.b_scales = make_strided_tensor(bs.p, DType::UE8M0, {rows, cols}, {1, rows}, dev);
    const int64_t ws = gemm_workspace_size(h.format, h.M, h.N, h.K, dev);
    ASSERT_GT(ws, 0);
    DevBuf wsb(ws);
    p.workspace = make_tensor(wsb.p, DType::U8, {ws}, dev);
    const Status st = gemm(p);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint16_t> got(h.M * h.N);
    ASSERT_EQ(cudaMemcpy(got.data(), d.p, got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    expect_bitwise(h, got, want);
  }
}

TEST(GemmCuda, RandomMatchesReference) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  const int64_t shapes[][3] = {{1, 512, 2048}, {7, 256, 1024}, {64, 384, 2048}, {129, 256, 1024}, {300, 512, 512}};
  for (const FormatCase& c : kCases)
    for (const auto& s : shapes) {
      HostGemm h = test::make_random_gemm(c.f, s[0], s[1], s[2], g, c.scale, c.mx_a);
      if (s[0] == 7) {
        h.has_bias = h.has_residual = true;
        test::add_epilogue_inputs(h, g, false);
      }
      const std::vector<uint16_t> want = run_cpu(h);
      expect_gpu_close(h, want);
    }
}

TEST(GemmCuda, EndToEndCosineAgainstUnquantized) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  for (const FormatCase& c : kCases)
    for (int64_t M : {int64_t(16), int64_t(129)}) {
      HostGemm h = test::make_random_gemm(c.f, M, 512, 2048, g, c.scale, c.mx_a);
      GpuRun r = run_gpu(h);
      ASSERT_TRUE(r.status.ok()) << r.status.message();
      const double diff = test::cos_diff(r.d, test::unquantized_product(h));
      const double bar = c.f == GemmFormat::kFP8Block ? 1e-3 : 2e-2;
      EXPECT_LE(diff, bar) << where(h);
    }
}

TEST(GemmCuda, W4A8WideScaleSpanRoundsSmallBlocks) {
  // B scale exponents spanning 20 inside a 128-block: the folded e4m3 re-encoding cannot hold the
  // small sub-blocks exactly (they round or flush); their weight is ~2^-20 of the block, so the
  // result must still match the exact reference within bf16 rounding.
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  // Spans 3, 7 and 11 stay on the kernel's exact exponent-shift path (every sub-block's shift
  // >= -5); span 20 takes the rounding path.
  for (int span : {20, 11, 7, 3})
    for (int64_t M : {int64_t(7), int64_t(64), int64_t(129)}) {  // BM = 64 (expanders) and 128 (consumers)
      SCOPED_TRACE(testing::Message() << "scale span " << span);
      HostGemm h = test::make_random_gemm(GemmFormat::kW4A8MXFP4, M, 256, 1024, g);
      for (int64_t n = 0; n < h.N; ++n)
        for (int64_t j = 0; j < h.K / 32; ++j)
          h.b_scales[n * (h.K / 32) + j] =
              static_cast<uint8_t>(j % 4 == n % 4 ? 127 + 4 : 127 + 4 - span + static_cast<int>((n + j) % (span / 2 + 1)));
      const std::vector<uint16_t> want = run_cpu(h);
      expect_gpu_close(h, want);
    }
}

TEST(GemmCuda, NaNScalePropagates) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  HostGemm h = test::make_exact_gemm(GemmFormat::kFP8Block, 9, 256, 256, g);
  h.b_scales[1 * 2 + 0] = 0xFF;  // N block 1, K block 0
  HostGemm w = test::make_exact_gemm(GemmFormat::kW4A8MXFP4, 9, 256, 256, g);
  w.b_scales[200 * 8 + 5] = 0xFF;  // row 200, K sub-block 5
  for (HostGemm* p : {&h, &w}) {
    const std::vector<uint16_t> want = run_cpu(*p);
    expect_gpu_bitwise(*p, want);
  }
}

TEST(GemmCuda, InPlaceResidualAndGraphCapture) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  for (int64_t M : {int64_t(5), int64_t(200)}) {
    HostGemm h = test::make_exact_gemm(GemmFormat::kFP8Block, M, 256, 1024, g);
    h.has_bias = h.has_residual = true;
    test::add_epilogue_inputs(h, g, true);
    const std::vector<uint16_t> want = run_cpu(h);
    expect_gpu_bitwise(h, want, true, false, true);
    expect_gpu_bitwise(h, want, true, true);
  }
}

// Split-K keeps its f32 partials in the caller's workspace and sums them in a second (programmatic
// dependent) kernel. A workspace full of garbage, repeated launches and graph replays must all give
// the reference bits.
TEST(GemmCuda, SplitKRepeatsAndGraphReplays) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  for (const FormatCase& c : {kCases[0], kCases[2], kCases[6]}) {
    HostGemm h = test::make_exact_gemm(c.f, 16, 512, 2048, g, c.scale, c.mx_a);
    const std::vector<uint16_t> want = run_cpu(h);
    DevBuf a(h.a.data(), h.a.size()), as(h.a_scales.data(), h.a_scales.size()), b(h.b.data(), h.b.size()),
        bs(h.b_scales.data(), h.b_scales.size()), gl(&h.global, 4);
    const size_t d_bytes = h.M * h.N * 2;
    DevBuf d(d_bytes);
    const Device dev = Device::cuda(0);
    GemmParams p = h.params(a.p, as.p, b.p, bs.p, gl.p, nullptr, nullptr, d.p, dev);
    const int64_t ws = gemm_workspace_size(h.format, h.M, h.N, h.K, dev);
    ASSERT_GT(ws, 0) << where(h) << ": this shape should split K";
    DevBuf wsb(ws);
    ASSERT_EQ(cudaMemset(wsb.p, 0x5A, ws), cudaSuccess);
    p.workspace = make_tensor(wsb.p, DType::U8, {ws}, dev);
    cudaStream_t s;
    ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
    auto check = [&](const char* what) {
      ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
      std::vector<uint16_t> got(h.M * h.N);
      ASSERT_EQ(cudaMemcpy(got.data(), d.p, d_bytes, cudaMemcpyDeviceToHost), cudaSuccess);
      SCOPED_TRACE(what);
      expect_bitwise(h, got, want);
      ASSERT_EQ(cudaMemset(d.p, 0xFF, d_bytes), cudaSuccess);  // NaN poison for the next run
    };
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(gemm(p, s).ok());
      check("stream launch");
    }
    cudaGraph_t gr;
    cudaGraphExec_t ge;
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    const Status st = gemm(p, s);
    ASSERT_EQ(cudaStreamEndCapture(s, &gr), cudaSuccess);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(cudaGraphInstantiate(&ge, gr, 0), cudaSuccess);
    for (int i = 0; i < 2; ++i) {
      ASSERT_EQ(cudaGraphLaunch(ge, s), cudaSuccess);
      check("graph replay");
    }
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(gr);
    cudaStreamDestroy(s);
  }
}

// D as a column window of a wider row-major buffer: the epilogue (a TMA store when there is no
// bias, residual or split) must write exactly the window, rows past M included, and leave every
// other element of the buffer as it was (NaN poison).
TEST(GemmCuda, StridedOutputWindowOnly) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  for (const FormatCase& c : {kCases[0], kCases[2], kCases[5]})
    for (int64_t M : {int64_t(129), int64_t(300), int64_t(4096)}) {
      HostGemm h = test::make_exact_gemm(c.f, M, 256, 256, g, c.scale, c.mx_a);
      const int64_t ld = h.N + 192, col0 = 64;  // 384-byte row pitch, window from byte 128
      DevBuf a(h.a.data(), h.a.size()), as(h.a_scales.data(), h.a_scales.size()), b(h.b.data(), h.b.size()),
          bs(h.b_scales.data(), h.b_scales.size()), gl(&h.global, 4);
      std::vector<uint16_t> buf(M * ld, test::kBf16NaN);
      DevBuf d(buf.data(), buf.size() * 2);
      GemmParams p = h.params(a.p, as.p, b.p, bs.p, gl.p, nullptr, nullptr, d.p, Device::cuda(0));
      p.d = make_strided_tensor(static_cast<uint16_t*>(d.p) + col0, DType::BF16, {M, h.N}, {ld, 1}, Device::cuda(0));
      const Status s = gemm(p);
      ASSERT_TRUE(s.ok()) << where(h) << ": " << s.message();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(buf.data(), d.p, buf.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      std::vector<uint16_t> got(M * h.N);
      int64_t touched = 0;
      for (int64_t r = 0; r < M; ++r)
        for (int64_t j = 0; j < ld; ++j) {
          const uint16_t v = buf[r * ld + j];
          if (j >= col0 && j < col0 + h.N) got[r * h.N + j - col0] = v;
          else touched += v != test::kBf16NaN;
        }
      EXPECT_EQ(touched, 0) << where(h) << ": elements outside the D window were written";
      expect_bitwise(h, got, run_cpu(h));
    }
}

// The mainloop's group list (the MoE building block): contiguous row groups, B stacked per group.
// Each group's rows must equal the plain GEMM of that group (exact: bit for bit); an empty group
// and a group spanning several M tiles are included.
TEST(GemmCuda, GroupedContiguousMatchesPerGroupReference) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  const int64_t N = 256, K = 384;
  const std::vector<int32_t> rows = {0, 5, 5, 135, 200};  // groups of 5, 0, 130, 65 rows
  const int G = static_cast<int>(rows.size()) - 1;
  const int64_t M = rows.back();
  for (const FormatCase& c : {kCases[0], kCases[2], kCases[5], kCases[6]}) {
    // One problem of width G*N holds every group's weights; group g uses its rows [g*N, (g+1)*N).
    HostGemm all = test::make_exact_gemm(c.f, M, G * N, K, g, c.scale, c.mx_a);
    DevBuf a(all.a.data(), all.a.size()), as(all.a_scales.data(), all.a_scales.size()),
        b(all.b.data(), all.b.size()), bs(all.b_scales.data(), all.b_scales.size()), gl(&all.global, 4),
        gr(rows.data(), rows.size() * 4);
    std::vector<uint16_t> poison(M * N, test::kBf16NaN);
    DevBuf d(poison.data(), poison.size() * 2);
    GemmParams p = all.params(a.p, as.p, b.p, bs.p, gl.p, nullptr, nullptr, d.p, Device::cuda(0));
    p.d = make_tensor(d.p, DType::BF16, {M, N}, Device::cuda(0));
    const Status s = cuda::gemm_grouped_contiguous(p, N, static_cast<const int32_t*>(gr.p), G, nullptr);
    ASSERT_TRUE(s.ok()) << s.message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint16_t> got(M * N);
    ASSERT_EQ(cudaMemcpy(got.data(), d.p, got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int gi = 0; gi < G; ++gi) {
      const int64_t r0 = rows[gi], mg = rows[gi + 1] - r0;
      if (mg == 0) continue;
      HostGemm h = all;
      h.M = mg, h.N = N;
      const int64_t a_row = all.a.size() / M, as_row = all.a_scales.size() / M;
      h.a.assign(all.a.begin() + r0 * a_row, all.a.begin() + (r0 + mg) * a_row);
      h.a_scales.assign(all.a_scales.begin() + r0 * as_row, all.a_scales.begin() + (r0 + mg) * as_row);
      const int64_t b_row = all.b.size() / (G * N);
      h.b.assign(all.b.begin() + gi * N * b_row, all.b.begin() + (gi + 1) * N * b_row);
      const int64_t bs_rows_per_group = all.b_scale_rows() / G, bs_row = all.b_scales.size() / all.b_scale_rows();
      h.b_scales.assign(all.b_scales.begin() + gi * bs_rows_per_group * bs_row,
                        all.b_scales.begin() + (gi + 1) * bs_rows_per_group * bs_row);
      const std::vector<uint16_t> want = run_cpu(h);
      const std::vector<uint16_t> slice(got.begin() + r0 * N, got.begin() + (r0 + mg) * N);
      expect_bitwise(h, slice, want);
    }
  }
}

// FP4 weights at M <= 16 take the register-A decode kernel (kernel_decode_fp4.cuh). The issue's
// decode shapes (split K at N = 4096, one round at 7168 x 2048, several units a CTA at 24576) and an
// odd one (6 slices, K = 640: five K blocks over three K lanes and two splits), every FP4 format and
// activation-scale layout, with and without bias/residual and workspace. Exact problems must match
// the reference bit for bit (each k32 tile of W4A8 starts from zero and is promoted in f32, bf16
// products accumulate in f32: every partial sum stays exact at these K).
TEST(GemmCuda, DecodeFp4Kernel) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  const FormatCase fp4[] = {kCases[2], kCases[3], kCases[4], kCases[5], kCases[6]};
  const int64_t big[][2] = {{4096, 7168}, {7168, 2048}, {24576, 1536}};
  for (const FormatCase& c : fp4) {
    for (const auto& nk : big) {
      SCOPED_TRACE(testing::Message() << "N=" << nk[0] << " K=" << nk[1]);
      HostGemm h = test::make_exact_gemm(c.f, 16, nk[0], nk[1], g, c.scale, c.mx_a);
      if (nk[0] == 7168) {
        h.has_bias = h.has_residual = true;
        test::add_epilogue_inputs(h, g, true);
      }
      expect_gpu_bitwise(h, run_cpu(h));
    }
    for (int64_t M : {int64_t(1), int64_t(7), int64_t(16)})
      for (int variant = 0; variant < 2; ++variant) {
        SCOPED_TRACE(testing::Message() << "odd shape, variant " << variant);
        HostGemm h = test::make_exact_gemm(c.f, M, 384, 640, g, c.scale, c.mx_a);
        if (variant == 1) {
          h.has_bias = h.has_residual = true;
          test::add_epilogue_inputs(h, g, true);
        }
        const std::vector<uint16_t> want = run_cpu(h);
        expect_gpu_bitwise(h, want);
        expect_gpu_bitwise(h, want, false);  // no workspace: no split
        HostGemm hr = test::make_random_gemm(c.f, M, 384, 640, g, c.scale, c.mx_a);
        if (variant == 1) {
          hr.has_bias = hr.has_residual = true;
          test::add_epilogue_inputs(hr, g, false);
        }
        expect_gpu_close(hr, run_cpu(hr), true, variant == 1);
      }
  }
  // M = 1 (W4A16) and 7 (W4A8) on the big shapes, and random data at 16 x 7168 x 2048.
  for (const FormatCase& c : {kCases[5], kCases[2]}) {
    const int64_t M = c.f == GemmFormat::kW4A8MXFP4 ? 7 : 1;
    for (const auto& nk : big) {
      SCOPED_TRACE(testing::Message() << "N=" << nk[0] << " K=" << nk[1]);
      HostGemm h = test::make_exact_gemm(c.f, M, nk[0], nk[1], g, c.scale, c.mx_a);
      expect_gpu_bitwise(h, run_cpu(h));
    }
    HostGemm hr = test::make_random_gemm(c.f, 16, 7168, 2048, g, c.scale, c.mx_a);
    expect_gpu_close(hr, run_cpu(hr));
  }
  // 128-row units (N / 64 = 256 slices make one round of 128 units on a 132-SM GPU).
  for (const FormatCase& c : {kCases[6], kCases[4]}) {
    HostGemm h = test::make_exact_gemm(c.f, 9, 16384, 256, g, c.scale, c.mx_a);
    h.has_bias = h.has_residual = true;
    test::add_epilogue_inputs(h, g, true);
    expect_gpu_bitwise(h, run_cpu(h));
  }
  // A NaN weight scale reaches exactly the outputs it feeds; in-place residual.
  for (GemmFormat f : {GemmFormat::kW4A16MXFP4, GemmFormat::kW4A8MXFP4}) {
    HostGemm h = test::make_exact_gemm(f, 5, 384, 640, g);
    h.b_scales[200 * 20 + 7] = 0xFF;  // row 200, K sub-block 7
    h.has_bias = h.has_residual = true;
    test::add_epilogue_inputs(h, g, true);
    const std::vector<uint16_t> want = run_cpu(h);
    expect_gpu_bitwise(h, want, true, false, true);
  }
}

TEST(GemmCuda, Fp4ExtremeBlockScalesStayExact) {
  // MXFP4 block scales over ue8m0's range (2^-107 .. 2^93 here, one a row so W4A8's folding stays
  // exact): every FP4 path must match the reference bit for bit. A decode that folded the 2^-126
  // of its subnormal e2m1 codes into a bf16 scale lost scales above 2^33 (inf) and below 2^-100.
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  const uint8_t exps[] = {20, 27, 60, 127, 150, 161, 200, 220};
  for (GemmFormat f : {GemmFormat::kW4A16MXFP4, GemmFormat::kW4A8MXFP4})
    for (int64_t M : {int64_t(1), int64_t(16), int64_t(129)}) {  // decode kernel (M <= 16), kernel.cuh
      HostGemm h = test::make_exact_gemm(f, M, 384, 640, g);
      for (int64_t n = 0; n < h.N; ++n)
        for (int64_t j = 0; j < h.K / 32; ++j) h.b_scales[n * (h.K / 32) + j] = exps[(n * 5 + n / 8) % 8];
      const std::vector<uint16_t> want = run_cpu(h);
      expect_gpu_bitwise(h, want);
    }
  // Scales that differ between the K blocks of a unit and between the rows of a stage: 2^7 in one
  // K block of a few rows (spans within a row small enough for exact sums), rows near the bottom of
  // the range (2^-124 .. 2^-122) and at 2^6. A decode that chose its scale handling per stage or per
  // row (docs/notes/gemm.md, round 11) must stay exact on every mix.
  for (GemmFormat f : {GemmFormat::kW4A16MXFP4, GemmFormat::kW4A8MXFP4})
    for (int64_t M : {int64_t(1), int64_t(16)}) {
      HostGemm h = test::make_exact_gemm(f, M, 384, 640, g);
      const int64_t cols = h.K / 32;
      for (int64_t n = 0; n < h.N; ++n)
        for (int64_t j = 0; j < cols; ++j) {
          uint8_t& e = h.b_scales[n * cols + j];
          if (n % 64 == 5) {
            if (j / 4 == 3) e = j % 4 == 1 ? 134 : 131;  // K block 3 of rows 5, 69, ...
          } else if (n % 7 == 0) e = static_cast<uint8_t>(3 + (n + j) % 3);  // 2^-124 .. 2^-122
          else if (n % 11 == 0) e = 133;  // the largest folded scale
        }
      const std::vector<uint16_t> want = run_cpu(h);
      expect_gpu_bitwise(h, want);
    }
}

TEST(GemmCuda, BadInputLeavesOutputUntouched) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 g = test::rng_for_test();
  HostGemm h = test::make_exact_gemm(GemmFormat::kFP8Block, 4, 128, 256, g);
  DevBuf a(h.a.data(), h.a.size()), as(h.a_scales.data(), h.a_scales.size()), b(h.b.data(), h.b.size()),
      bs(h.b_scales.data(), h.b_scales.size());
  std::vector<uint16_t> poison(4 * 128, test::kBf16NaN);
  DevBuf d(poison.data(), poison.size() * 2);
  GemmParams p = h.params(a.p, as.p, b.p, bs.p, nullptr, nullptr, nullptr, d.p, Device::cuda(0));
  p.b_scales.shape[1] = 3;
  const Status s = gemm(p);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  std::vector<uint16_t> after(poison.size());
  ASSERT_EQ(cudaMemcpy(after.data(), d.p, after.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(after, poison);
}

}  // namespace
}  // namespace dsv4
