// GPU quantize / dequantize / 128x4 swizzle against the CPU reference, bit for bit.
//
// Every case runs the same op on host views (the CPU reference) and on device views (the CUDA
// backend) over buffers prefilled with the same poison byte, then compares whole buffers: every
// element must match and every byte the op must not write (row padding, gaps between strided
// scales) must still hold the poison. Each case runs under two poison bytes, so an element the
// kernel forgot to write cannot pass by matching one of them.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/quant_kv_test_util.h"
#include "dsv4/ops/quant.h"

namespace dsv4::test {
namespace {

constexpr uint8_t kPoisons[2] = {0xFF, 0x5A};

bool is_fp4(QuantFormat f) { return f == QuantFormat::kMXFP4 || f == QuantFormat::kNVFP4; }
DType value_dtype(QuantFormat f) { return is_fp4(f) ? DType::E2M1 : DType::E4M3; }
float format_qmax(QuantFormat f) { return is_fp4(f) ? 6.0f : 448.0f; }
int64_t bytes_of(DType t, int64_t elems) { return (elems * dtype_bits(t) + 7) / 8; }

// Shapes and strides of one quantize/dequantize case.
struct Layout {
  int64_t M = 0, K = 0;
  int64_t x_stride = 0;  // row stride of the wide tensor, elements
  int64_t q_stride = 0;  // row stride of q, elements
  int64_t s_rows = 0, s_cols = 0, s_s0 = 0, s_s1 = 0;
  size_t x_bytes = 0, q_bytes = 0, s_bytes = 0;
};

// padded: rows of x and q (and of row-major scales) carry gaps the op must not write.
Layout make_layout(QuantFormat f, DType wide, DType sdt, int64_t M, int64_t K, bool padded, bool col_major) {
  Layout l;
  l.M = M;
  l.K = K;
  const int64_t wide_bytes = dtype_bits(wide) / 8;
  l.x_stride = K + (padded ? 16 / wide_bytes : 0);
  // q rows must start on min(16, block bytes): 16 bytes for MXFP4 and the fp8 formats, 8 for NVFP4.
  const int64_t q_pad_bytes = f == QuantFormat::kNVFP4 ? 8 : 16;
  l.q_stride = K + (padded ? q_pad_bytes * 8 / dtype_bits(value_dtype(f)) : 0);
  l.s_rows = (M + quant_block_m(f) - 1) / quant_block_m(f);
  l.s_cols = K / quant_block_k(f);
  if (col_major) {
    l.s_s0 = 1;
    l.s_s1 = l.s_rows + (padded ? 5 : 0);
  } else {
    l.s_s0 = l.s_cols + (padded ? 3 : 0);
    l.s_s1 = 1;
  }
  l.x_bytes = static_cast<size_t>(M * l.x_stride * wide_bytes);
  l.q_bytes = static_cast<size_t>(bytes_of(value_dtype(f), M * l.q_stride));
  const int64_t s_span = col_major ? l.s_cols * l.s_s1 : l.s_rows * l.s_s0;
  l.s_bytes = static_cast<size_t>(s_span * dtype_bits(sdt) / 8);
  return l;
}

// ---- input generator -------------------------------------------------------------------------
// Scale block by scale block, a mix of: ordinary data over a wide range of magnitudes, all-zero
// blocks (signed zeros), a NaN / +inf / -inf somewhere, tiny (subnormal) values, an amax exactly
// at (or one bf16 ulp around) qmax * 2^e, exact rounding ties of the element codec, and blocks
// spanning 30 binades. f32 inputs keep full f32 mantissas in the ordinary blocks.
std::vector<float> make_values(QuantFormat f, bool f32_input, int64_t M, int64_t K, std::mt19937_64& g) {
  std::vector<float> v(static_cast<size_t>(M * K), 0.0f);
  const int bm = quant_block_m(f), bk = quant_block_k(f);
  const float qmax = format_qmax(f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  auto randint = [&](int lo, int hi) { return lo + static_cast<int>(g() % static_cast<uint64_t>(hi - lo + 1)); };
  auto sign = [&]() { return (g() & 1) ? -1.0f : 1.0f; };
  auto round_in = [&](float x) { return f32_input ? x : num::bf16_to_float(num::bf16_from_float(x)); };
  static const float kE2m1Ties[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};

  for (int64_t m0 = 0; m0 < M; m0 += bm) {
    const int64_t m1 = std::min<int64_t>(M, m0 + bm);
    for (int64_t k0 = 0; k0 < K; k0 += bk) {
      std::vector<size_t> pos;
      for (int64_t m = m0; m < m1; ++m)
        for (int64_t k = k0; k < k0 + bk; ++k) pos.push_back(static_cast<size_t>(m * K + k));
      const int kind = randint(0, 99);
      const int e = randint(-20, 20);
      const float p2 = std::ldexp(1.0f, e);
      if (kind < 50 || (kind >= 55 && kind < 65)) {  // ordinary, maybe with a non-finite value
        const int spread = randint(-30, 30);
        for (size_t i : pos) v[i] = round_in(normal(g) * std::ldexp(1.0f, spread));
        if (kind >= 55) {
          const size_t at = pos[g() % pos.size()];
          if (kind < 59) v[at] = num::f32_from_bits((sign() < 0 ? 0x80000000u : 0u) | 0x7FC00000u |
                                                    (static_cast<uint32_t>(g() % 0x3F) << 16));
          else v[at] = (kind < 62 ? 1.0f : -1.0f) * INFINITY;
        }
      } else if (kind < 55) {  // all zero
        for (size_t i : pos) v[i] = sign() * 0.0f;
      } else if (kind < 72) {  // tiny: bf16 / f32 subnormals and the smallest normals
        for (size_t i : pos) v[i] = round_in(normal(g) * std::ldexp(1.0f, randint(-149, -120)));
      } else if (kind < 84) {  // amax on a scale boundary
        float bound = qmax * p2;
        const int variant = randint(0, 3);
        if (variant == 1) bound = num::bf16_to_float(static_cast<uint16_t>(num::bf16_from_float(bound) + 1));
        if (variant == 2) bound = num::bf16_to_float(static_cast<uint16_t>(num::bf16_from_float(bound) - 1));
        if (variant == 3) bound = num::bf16_to_float(num::bf16_from_float(1e-4f));  // the FP8 floor
        for (size_t i : pos) v[i] = round_in(unit(g) * bound);
        v[pos[g() % pos.size()]] = sign() * bound;
      } else if (kind < 92) {  // exact rounding ties of the element codec after a 2^e scale
        for (size_t i : pos) {
          float t;
          if (is_fp4(f)) {
            t = kE2m1Ties[g() % 7];
          } else if (g() % 4 == 0) {
            t = (static_cast<float>(g() % 8) + 0.5f) * std::ldexp(1.0f, -9);  // subnormal ties
          } else {
            const int E = randint(-6, 8);
            const int mmax = E == 8 ? 5 : 7;
            t = (8.0f + static_cast<float>(randint(0, mmax)) + 0.5f) * std::ldexp(1.0f, E - 3);
          }
          v[i] = sign() * t * p2;
        }
        v[pos[g() % pos.size()]] = sign() * qmax * p2;
      } else {  // 30 binades inside one block
        for (size_t i : pos) v[i] = round_in(sign() * p2 * std::ldexp(1.0f, -randint(0, 30)) * (1.0f + 0.5f * unit(g)));
      }
    }
  }
  return v;
}

// The wide tensor's bytes: values in their rows, random garbage in the row padding.
std::vector<uint8_t> encode_wide(const std::vector<float>& v, DType dt, const Layout& l, std::mt19937_64& g) {
  std::vector<uint8_t> b = random_bytes(g, l.x_bytes);
  for (int64_t m = 0; m < l.M; ++m)
    for (int64_t k = 0; k < l.K; ++k) {
      const float x = v[static_cast<size_t>(m * l.K + k)];
      const size_t at = static_cast<size_t>(m * l.x_stride + k);
      if (dt == DType::BF16) store_u16(b, at, num::bf16_from_float(x));
      else store_f32(b, at, x);
    }
  return b;
}

float host_global_scale(const std::vector<float>& v) {
  float amax = 0.0f;
  for (float x : v)
    if (num::is_finite(x)) amax = std::max(amax, std::fabs(x));
  return amax / 2688.0f;
}

// ---- one quantize case ---------------------------------------------------------------------------
struct QuantCase {
  QuantFormat format;
  DType scale_dtype;
  DType in_dtype;
  int64_t M, K;
  bool padded = false, col_major = false;
  bool compute_global = true;  // NVFP4
  bool fixed_global = false;   // NVFP4 without compute: use `global` instead of the tensor's g
  float global = 0.0f;
};

std::string describe_case(const QuantCase& c) {
  return std::string(quant_format_name(c.format)) + " x=" + std::string(dtype_name(c.in_dtype)) +
         " scales=" + std::string(dtype_name(c.scale_dtype)) + " M=" + std::to_string(c.M) +
         " K=" + std::to_string(c.K) + (c.padded ? " padded" : "") + (c.col_major ? " col-major-scales" : "") +
         (c.format == QuantFormat::kNVFP4 ? (c.compute_global ? " g=computed" : " g=given") : "");
}

void run_quant_case(const QuantCase& c, std::mt19937_64& g) {
  SCOPED_TRACE(describe_case(c));
  const Layout l = make_layout(c.format, c.in_dtype, c.scale_dtype, c.M, c.K, c.padded, c.col_major);
  const std::vector<float> values = make_values(c.format, c.in_dtype == DType::F32, c.M, c.K, g);
  const std::vector<uint8_t> x_host = encode_wide(values, c.in_dtype, l, g);
  float given_g = 0.0f;
  if (c.format == QuantFormat::kNVFP4 && !c.compute_global) given_g = c.fixed_global ? c.global : host_global_scale(values);

  DevBuf x_dev(l.x_bytes), q_dev(l.q_bytes), s_dev(l.s_bytes), g_dev(4);
  x_dev.upload(x_host);
  const bool nvfp4 = c.format == QuantFormat::kNVFP4;
  for (uint8_t poison : kPoisons) {
    std::vector<uint8_t> x_cpu = x_host, q_cpu(l.q_bytes, poison), s_cpu(l.s_bytes, poison), g_cpu(4, poison);
    if (nvfp4 && !c.compute_global) store_f32(g_cpu, 0, given_g);
    q_dev.fill(poison);
    s_dev.fill(poison);
    std::vector<uint8_t> g_init = g_cpu;
    g_dev.upload(g_init);

    auto params = [&](Device d, void* x, void* q, void* s, void* gs) {
      QuantizeParams p;
      p.format = c.format;
      p.x = view2d(x, c.in_dtype, c.M, c.K, l.x_stride, 1, d);
      p.q = view2d(q, value_dtype(c.format), c.M, c.K, l.q_stride, 1, d);
      p.scales = view2d(s, c.scale_dtype, l.s_rows, l.s_cols, l.s_s0, l.s_s1, d);
      if (nvfp4) p.global_scale = view1d(gs, DType::F32, 1, d);
      p.compute_global_scale = c.compute_global;
      return p;
    };
    DSV4_ASSERT_OK(quantize(params(Device::cpu(), x_cpu.data(), q_cpu.data(), s_cpu.data(), g_cpu.data())));
    DSV4_ASSERT_OK(quantize(params(Device::cuda(0), x_dev.get(), q_dev.get(), s_dev.get(), g_dev.get())));
    DSV4_CUDA_OK(cudaDeviceSynchronize());

    const std::string tag = " (poison " + hex(poison, 2) + ")";
    EXPECT_TRUE(same_buffer(q_dev.download(), q_cpu, Cmp::kBytes, "q bytes" + tag,
                            bytes_of(value_dtype(c.format), l.q_stride)));
    EXPECT_TRUE(same_buffer(s_dev.download(), s_cpu,
                            c.scale_dtype == DType::F32 ? Cmp::kF32 : Cmp::kBytes, "scales" + tag));
    if (nvfp4) {
      std::vector<uint8_t> g_gpu = g_dev.download();
      g_gpu.resize(4);
      EXPECT_TRUE(same_buffer(g_gpu, g_cpu, Cmp::kBytes, "global_scale" + tag));
    }
    EXPECT_TRUE(same_buffer(x_dev.download(), x_host, Cmp::kBytes, "x (must not change)" + tag));
  }
}

// ---- parameterised over format x scale dtype x input dtype ----------------------------------------
using FormatParam = std::tuple<QuantFormat, DType, DType>;  // format, scale dtype, wide dtype

std::string param_name(const ::testing::TestParamInfo<FormatParam>& info) {
  return std::string(quant_format_name(std::get<0>(info.param))) + "_s" +
         std::string(dtype_name(std::get<1>(info.param))) + "_" + std::string(dtype_name(std::get<2>(info.param)));
}

std::vector<FormatParam> all_formats() {
  std::vector<FormatParam> v;
  for (DType wide : {DType::BF16, DType::F32}) {
    v.emplace_back(QuantFormat::kMXFP4, DType::UE8M0, wide);
    v.emplace_back(QuantFormat::kNVFP4, DType::E4M3, wide);
    v.emplace_back(QuantFormat::kMXFP8, DType::UE8M0, wide);
    v.emplace_back(QuantFormat::kFP8_1x128, DType::UE8M0, wide);
    v.emplace_back(QuantFormat::kFP8_1x128, DType::F32, wide);
    v.emplace_back(QuantFormat::kFP8_128x128, DType::UE8M0, wide);
    v.emplace_back(QuantFormat::kFP8_128x128, DType::F32, wide);
  }
  return v;
}

class QuantizeGpu : public ::testing::TestWithParam<FormatParam> {};

TEST_P(QuantizeGpu, MatchesCpuBitForBit) {
  DSV4_SKIP_WITHOUT_GPU();
  const auto [format, sdt, wide] = GetParam();
  auto g = rng_for_test();
  int variant = 0;
  for (int64_t M : {1, 7, 129, 1000}) {
    for (int64_t K : {static_cast<int64_t>(quant_block_k(format)), int64_t{512}, int64_t{7168}}) {
      QuantCase c{format, sdt, wide, M, K};
      c.padded = M == 1 || M == 7;
      c.col_major = M == 7 || M == 129;
      c.compute_global = (variant++ % 2) == 0;
      run_quant_case(c, g);
      if (HasFatalFailure()) return;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, QuantizeGpu, ::testing::ValuesIn(all_formats()), param_name);

// NVFP4 with a caller-given global scale, including g == 0 (every code and scale 0), a g so
// small that s * g underflows, and one so large that block scales underflow to e4m3 subnormals.
TEST(QuantizeGpuNvfp4, GivenGlobalScale) {
  DSV4_SKIP_WITHOUT_GPU();
  auto g = rng_for_test();
  for (DType wide : {DType::BF16, DType::F32})
    for (float gs : {0.0f, 1e-6f, 1.0f, 1e-40f, 3e-3f, 1e30f}) {
      QuantCase c{QuantFormat::kNVFP4, DType::E4M3, wide, 129, 512};
      c.compute_global = false;
      c.fixed_global = true;
      c.global = gs;
      SCOPED_TRACE("g = " + std::to_string(gs));
      run_quant_case(c, g);
    }
}

// A tensor whose finite values are all zero (plus NaN/inf, which the global amax skips): g = 0.
TEST(QuantizeGpuNvfp4, GlobalScaleOfZerosAndNonFinite) {
  DSV4_SKIP_WITHOUT_GPU();
  const int64_t M = 3, K = 64;
  std::vector<uint8_t> x(M * K * 2, 0);
  store_u16(x, 5, 0x7FC0);   // NaN
  store_u16(x, 40, 0x7F80);  // +inf
  store_u16(x, 77, 0x8000);  // -0
  DevBuf x_dev(x.size()), q_dev(M * K / 2), s_dev(M * K / 16), g_dev(4);
  x_dev.upload(x);
  std::vector<uint8_t> q_cpu(M * K / 2, 0xFF), s_cpu(M * K / 16, 0xFF), g_cpu(4, 0xFF);
  q_dev.fill(0xFF);
  s_dev.fill(0xFF);
  g_dev.fill(0xFF);
  auto params = [&](Device d, void* xp, void* qp, void* sp, void* gp) {
    QuantizeParams p;
    p.format = QuantFormat::kNVFP4;
    p.x = view2d(xp, DType::BF16, M, K, K, 1, d);
    p.q = view2d(qp, DType::E2M1, M, K, K, 1, d);
    p.scales = view2d(sp, DType::E4M3, M, K / 16, K / 16, 1, d);
    p.global_scale = view1d(gp, DType::F32, 1, d);
    p.compute_global_scale = true;
    return p;
  };
  DSV4_ASSERT_OK(quantize(params(Device::cpu(), x.data(), q_cpu.data(), s_cpu.data(), g_cpu.data())));
  DSV4_ASSERT_OK(quantize(params(Device::cuda(0), x_dev.get(), q_dev.get(), s_dev.get(), g_dev.get())));
  DSV4_CUDA_OK(cudaDeviceSynchronize());
  std::vector<uint8_t> g_gpu = g_dev.download();
  g_gpu.resize(4);
  EXPECT_TRUE(same_buffer(g_gpu, g_cpu, Cmp::kBytes, "global_scale"));
  EXPECT_TRUE(same_buffer(q_dev.download(), q_cpu, Cmp::kBytes, "q"));
  EXPECT_TRUE(same_buffer(s_dev.download(), s_cpu, Cmp::kBytes, "scales"));
}

// ---- dequantize ----------------------------------------------------------------------------------
// Random codes (NaN codes included) and random scales (NaN scales included); out bf16 or f32.
using DequantParam = std::tuple<QuantFormat, DType, DType>;  // format, scale dtype, out dtype

class DequantizeGpu : public ::testing::TestWithParam<DequantParam> {};

std::vector<uint8_t> random_scales(DType sdt, const Layout& l, std::mt19937_64& g) {
  std::vector<uint8_t> s = random_bytes(g, l.s_bytes);
  if (sdt != DType::F32) return s;
  for (size_t i = 0; i < l.s_bytes / 4; ++i) {
    const int kind = static_cast<int>(g() % 32);
    float v = std::ldexp(1.0f + static_cast<float>(g() % 1024) / 1024.0f, static_cast<int>(g() % 80) - 60);
    if (kind == 0) v = NAN;
    if (kind == 1) v = 0.0f;
    if (kind == 2) v = 1e-4f / 448.0f;
    store_f32(s, i, v);
  }
  return s;
}

TEST_P(DequantizeGpu, MatchesCpuBitForBit) {
  DSV4_SKIP_WITHOUT_GPU();
  const auto [format, sdt, out_dt] = GetParam();
  auto g = rng_for_test();
  const bool nvfp4 = format == QuantFormat::kNVFP4;
  for (int64_t M : {1, 7, 129, 1000}) {
    for (int64_t K : {static_cast<int64_t>(quant_block_k(format)), int64_t{512}, int64_t{7168}}) {
      const bool padded = M == 1 || M == 7, col_major = M == 7 || M == 129;
      SCOPED_TRACE("M=" + std::to_string(M) + " K=" + std::to_string(K) + (padded ? " padded" : "") +
                   (col_major ? " col-major-scales" : ""));
      const Layout l = make_layout(format, out_dt, sdt, M, K, padded, col_major);
      const std::vector<uint8_t> q = random_bytes(g, l.q_bytes);
      const std::vector<uint8_t> s = random_scales(sdt, l, g);
      std::vector<uint8_t> gs(4);
      store_f32(gs, 0, std::ldexp(1.0f + static_cast<float>(g() % 256) / 256.0f, static_cast<int>(g() % 30) - 20));
      DevBuf q_dev(l.q_bytes), s_dev(l.s_bytes), g_dev(4), out_dev(l.x_bytes);
      q_dev.upload(q);
      s_dev.upload(s);
      g_dev.upload(gs);
      for (uint8_t poison : kPoisons) {
        std::vector<uint8_t> q_cpu = q, s_cpu = s, g_cpu = gs, out_cpu(l.x_bytes, poison);
        out_dev.fill(poison);
        auto params = [&](Device d, void* qp, void* sp, void* gp, void* op) {
          DequantizeParams p;
          p.format = format;
          p.q = view2d(qp, value_dtype(format), M, K, l.q_stride, 1, d);
          p.scales = view2d(sp, sdt, l.s_rows, l.s_cols, l.s_s0, l.s_s1, d);
          if (nvfp4) p.global_scale = view1d(gp, DType::F32, 1, d);
          p.out = view2d(op, out_dt, M, K, l.x_stride, 1, d);
          return p;
        };
        DSV4_ASSERT_OK(dequantize(params(Device::cpu(), q_cpu.data(), s_cpu.data(), g_cpu.data(), out_cpu.data())));
        DSV4_ASSERT_OK(dequantize(params(Device::cuda(0), q_dev.get(), s_dev.get(), g_dev.get(), out_dev.get())));
        DSV4_CUDA_OK(cudaDeviceSynchronize());
        EXPECT_TRUE(same_buffer(out_dev.download(), out_cpu, out_dt == DType::F32 ? Cmp::kF32 : Cmp::kBf16,
                                "out (poison " + hex(poison, 2) + ")", l.x_stride));
        if (HasFailure()) return;
      }
    }
  }
}

std::vector<DequantParam> all_dequant() {
  std::vector<DequantParam> v;
  for (const auto& [f, sdt, wide] : all_formats()) v.emplace_back(f, sdt, wide);
  return v;
}
INSTANTIATE_TEST_SUITE_P(AllFormats, DequantizeGpu, ::testing::ValuesIn(all_dequant()), param_name);

// Round trip on the GPU alone: dequantize(quantize(x)) of finite blocks reproduces the CPU round trip.
// (Covered element-wise above; this adds the composition on real quantizer output.)
TEST(QuantizeGpuRoundTrip, Mxfp8Bf16) {
  DSV4_SKIP_WITHOUT_GPU();
  auto g = rng_for_test();
  const int64_t M = 33, K = 256;
  const Layout l = make_layout(QuantFormat::kMXFP8, DType::BF16, DType::UE8M0, M, K, false, false);
  const std::vector<float> values = make_values(QuantFormat::kMXFP8, false, M, K, g);
  const std::vector<uint8_t> x = encode_wide(values, DType::BF16, l, g);
  DevBuf x_dev(l.x_bytes), q_dev(l.q_bytes), s_dev(l.s_bytes), out_dev(l.x_bytes);
  x_dev.upload(x);
  std::vector<uint8_t> x_cpu = x, q_cpu(l.q_bytes), s_cpu(l.s_bytes), out_cpu(l.x_bytes);
  const Device gpu = Device::cuda(0), cpu = Device::cpu();
  QuantizeParams qp;
  qp.format = QuantFormat::kMXFP8;
  qp.x = view2d(x_dev.get(), DType::BF16, M, K, K, 1, gpu);
  qp.q = view2d(q_dev.get(), DType::E4M3, M, K, K, 1, gpu);
  qp.scales = view2d(s_dev.get(), DType::UE8M0, M, K / 32, K / 32, 1, gpu);
  DSV4_ASSERT_OK(quantize(qp));
  DequantizeParams dp;
  dp.format = QuantFormat::kMXFP8;
  dp.q = qp.q;
  dp.scales = qp.scales;
  dp.out = view2d(out_dev.get(), DType::BF16, M, K, K, 1, gpu);
  DSV4_ASSERT_OK(dequantize(dp));
  QuantizeParams qc = qp;
  qc.x = moved(qp.x, x_cpu.data(), cpu);
  qc.q = moved(qp.q, q_cpu.data(), cpu);
  qc.scales = moved(qp.scales, s_cpu.data(), cpu);
  DSV4_ASSERT_OK(quantize(qc));
  DequantizeParams dc = dp;
  dc.q = qc.q;
  dc.scales = qc.scales;
  dc.out = moved(dp.out, out_cpu.data(), cpu);
  DSV4_ASSERT_OK(dequantize(dc));
  DSV4_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_TRUE(same_buffer(out_dev.download(), out_cpu, Cmp::kBf16, "round trip", K));
}

// ---- empty tensors -------------------------------------------------------------------------------
TEST(QuantizeGpuEmpty, NothingWrittenExceptNvfp4GlobalScale) {
  DSV4_SKIP_WITHOUT_GPU();
  DevBuf x(256), q(256), s(256), gs(256), out(256);
  const Device d = Device::cuda(0);
  for (const auto& [f, sdt, wide] : all_formats()) {
    for (auto [M, K] : {std::pair<int64_t, int64_t>{0, 512}, {4, 0}}) {
      SCOPED_TRACE(std::string(quant_format_name(f)) + " M=" + std::to_string(M) + " K=" + std::to_string(K));
      q.fill(0xEE);
      s.fill(0xEE);
      gs.fill(0xEE);
      out.fill(0xEE);
      QuantizeParams p;
      p.format = f;
      p.x = view2d(x.get(), wide, M, K, std::max<int64_t>(K, 8), 1, d);
      p.q = view2d(q.get(), value_dtype(f), M, K, std::max<int64_t>(K, 32), 1, d);
      p.scales = view2d(s.get(), sdt, (M + quant_block_m(f) - 1) / quant_block_m(f), K / quant_block_k(f),
                        std::max<int64_t>(K / quant_block_k(f), 1), 1, d);
      if (f == QuantFormat::kNVFP4) p.global_scale = view1d(gs.get(), DType::F32, 1, d);
      p.compute_global_scale = true;
      DSV4_ASSERT_OK(quantize(p));
      DequantizeParams dp;
      dp.format = f;
      dp.q = p.q;
      dp.scales = p.scales;
      dp.global_scale = p.global_scale;
      dp.out = view2d(out.get(), wide, M, K, std::max<int64_t>(K, 8), 1, d);
      DSV4_ASSERT_OK(dequantize(dp));
      DSV4_CUDA_OK(cudaDeviceSynchronize());
      const std::vector<uint8_t> untouched(256, 0xEE);
      EXPECT_TRUE(same_buffer(q.download(), untouched, Cmp::kBytes, "q"));
      EXPECT_TRUE(same_buffer(s.download(), untouched, Cmp::kBytes, "scales"));
      EXPECT_TRUE(same_buffer(out.download(), untouched, Cmp::kBytes, "out"));
      std::vector<uint8_t> expect_g = untouched;
      if (f == QuantFormat::kNVFP4) std::fill(expect_g.begin(), expect_g.begin() + 4, 0);  // g = 0.0f
      EXPECT_TRUE(same_buffer(gs.download(), expect_g, Cmp::kBytes, "global_scale"));
    }
  }
}

// ---- 128x4 swizzle -------------------------------------------------------------------------------
TEST(SwizzleGpu, BothWaysMatchCpu) {
  DSV4_SKIP_WITHOUT_GPU();
  auto g = rng_for_test();
  for (int64_t M : {1, 7, 127, 128, 129, 300}) {
    for (int64_t S : {1, 3, 4, 7, 56}) {
      for (bool col_major : {false, true}) {
        SCOPED_TRACE("M=" + std::to_string(M) + " S=" + std::to_string(S) + (col_major ? " col-major" : ""));
        const int64_t s0 = col_major ? 1 : S + 2, s1 = col_major ? M + 3 : 1;
        const size_t mat_bytes = static_cast<size_t>(col_major ? S * s1 : M * s0);
        const size_t flat_bytes = static_cast<size_t>(swizzled_scales_size(M, S));
        const std::vector<uint8_t> mat = random_bytes(g, mat_bytes);
        const std::vector<uint8_t> flat_src = random_bytes(g, flat_bytes);  // padding holds junk too
        DevBuf mat_dev(mat_bytes), flat_dev(flat_bytes);
        // swizzle: mat -> flat (padding must come out 0)
        mat_dev.upload(mat);
        flat_dev.fill(0xC3);
        std::vector<uint8_t> mat_cpu = mat, flat_cpu(flat_bytes, 0xC3);
        DSV4_ASSERT_OK(swizzle_scales_128x4(view2d(mat_cpu.data(), DType::UE8M0, M, S, s0, s1, Device::cpu()),
                                            view1d(flat_cpu.data(), DType::UE8M0, static_cast<int64_t>(flat_bytes), Device::cpu())));
        DSV4_ASSERT_OK(swizzle_scales_128x4(view2d(mat_dev.get(), DType::UE8M0, M, S, s0, s1, Device::cuda(0)),
                                            view1d(flat_dev.get(), DType::UE8M0, static_cast<int64_t>(flat_bytes), Device::cuda(0))));
        DSV4_CUDA_OK(cudaDeviceSynchronize());
        EXPECT_TRUE(same_buffer(flat_dev.download(), flat_cpu, Cmp::kBytes, "swizzled"));
        // unswizzle: flat -> mat (gaps between strided elements must keep the poison)
        flat_dev.upload(flat_src);
        mat_dev.fill(0xC3);
        std::vector<uint8_t> flat_cpu2 = flat_src, mat_cpu2(mat_bytes, 0xC3);
        DSV4_ASSERT_OK(unswizzle_scales_128x4(view1d(flat_cpu2.data(), DType::E4M3, static_cast<int64_t>(flat_bytes), Device::cpu()),
                                              view2d(mat_cpu2.data(), DType::E4M3, M, S, s0, s1, Device::cpu())));
        DSV4_ASSERT_OK(unswizzle_scales_128x4(view1d(flat_dev.get(), DType::E4M3, static_cast<int64_t>(flat_bytes), Device::cuda(0)),
                                              view2d(mat_dev.get(), DType::E4M3, M, S, s0, s1, Device::cuda(0))));
        DSV4_CUDA_OK(cudaDeviceSynchronize());
        EXPECT_TRUE(same_buffer(mat_dev.download(), mat_cpu2, Cmp::kBytes, "unswizzled", col_major ? 0 : s0));
      }
    }
  }
}

// ---- CUDA graph capture ----------------------------------------------------------------------------
// The ops allocate nothing and never synchronise, so they can be captured; replaying the graph must
// give the same bytes as a direct call (NVFP4 with the on-device global scale: memset + 3 kernels).
TEST(QuantizeGpuGraph, CapturedQuantizeMatchesDirect) {
  DSV4_SKIP_WITHOUT_GPU();
  auto g = rng_for_test();
  for (QuantFormat f : {QuantFormat::kNVFP4, QuantFormat::kMXFP4, QuantFormat::kFP8_128x128}) {
    SCOPED_TRACE(quant_format_name(f));
    const DType sdt = f == QuantFormat::kNVFP4 ? DType::E4M3 : DType::UE8M0;
    const int64_t M = 200, K = 1024;
    const Layout l = make_layout(f, DType::BF16, sdt, M, K, false, false);
    const std::vector<uint8_t> x = encode_wide(make_values(f, false, M, K, g), DType::BF16, l, g);
    DevBuf x_dev(l.x_bytes), q1(l.q_bytes), s1(l.s_bytes), g1(4), q2(l.q_bytes), s2(l.s_bytes), g2(4);
    x_dev.upload(x);
    for (const DevBuf* b : {&q1, &s1, &g1, &q2, &s2, &g2}) b->fill(0xFF);
    const Device d = Device::cuda(0);
    auto params = [&](const DevBuf& q, const DevBuf& s, const DevBuf& gs) {
      QuantizeParams p;
      p.format = f;
      p.x = view2d(x_dev.get(), DType::BF16, M, K, K, 1, d);
      p.q = view2d(q.get(), value_dtype(f), M, K, K, 1, d);
      p.scales = view2d(s.get(), sdt, l.s_rows, l.s_cols, l.s_s0, 1, d);
      if (f == QuantFormat::kNVFP4) p.global_scale = view1d(gs.get(), DType::F32, 1, d);
      p.compute_global_scale = true;
      return p;
    };
    cudaStream_t stream;
    DSV4_CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    DSV4_ASSERT_OK(quantize(params(q1, s1, g1), stream));
    cudaGraph_t graph;
    DSV4_CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    const Status st = quantize(params(q2, s2, g2), stream);
    DSV4_CUDA_OK(cudaStreamEndCapture(stream, &graph));
    DSV4_ASSERT_OK(st);
    cudaGraphExec_t exec;
    DSV4_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    DSV4_CUDA_OK(cudaGraphLaunch(exec, stream));
    DSV4_CUDA_OK(cudaGraphLaunch(exec, stream));  // replays are idempotent
    DSV4_CUDA_OK(cudaStreamSynchronize(stream));
    EXPECT_TRUE(same_buffer(q2.download(), q1.download(), Cmp::kBytes, "q"));
    EXPECT_TRUE(same_buffer(s2.download(), s1.download(), Cmp::kBytes, "scales"));
    EXPECT_TRUE(same_buffer(g2.download(), g1.download(), Cmp::kBytes, "global_scale"));
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

}  // namespace
}  // namespace dsv4::test
