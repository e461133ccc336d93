// The CPU reference GEMM (src/cpu/gemm.cpp) against hand-worked cases, and the validation rules of
// src/core/gemm.cpp. The reference is the oracle of the CUDA tests, so these cases pin down its
// scale indexing, nibble order, global scale, epilogue and single rounding independently.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "common/gemm_test_util.h"
#include "dsv4/ops/gemm.h"

namespace dsv4 {
namespace {

using test::HostGemm;

float bf(uint16_t h) { return num::bf16_to_float(h); }

TEST(GemmRef, FP8ScaleIndexing) {
  // A = 1, B = 1 everywhere; the result exposes which scale each (row, K block) and (N block, K block)
  // picked: d[m][n] = 128 * sum_kb sa[m][kb] * sb[n/128][kb].
  HostGemm h;
  h.format = GemmFormat::kFP8Block;
  h.M = 3, h.N = 256, h.K = 256;
  test::alloc_operands(h);
  std::fill(h.a.begin(), h.a.end(), num::e4m3_from_float(1.f));
  std::fill(h.b.begin(), h.b.end(), num::e4m3_from_float(1.f));
  for (int m = 0; m < 3; ++m)
    for (int kb = 0; kb < 2; ++kb) test::put_scale(h.a_scales, DType::UE8M0, m * 2 + kb, m + 4 * kb);
  for (int nb = 0; nb < 2; ++nb)
    for (int kb = 0; kb < 2; ++kb) test::put_scale(h.b_scales, DType::UE8M0, nb * 2 + kb, -(nb + 2 * kb));
  std::vector<uint16_t> d;
  ASSERT_TRUE(gemm(h.host_params(d)).ok());
  for (int m = 0; m < 3; ++m)
    for (int n = 0; n < 256; ++n) {
      const int nb = n / 128;
      const double want = 128.0 * (std::ldexp(1.0, m - nb) + std::ldexp(1.0, m + 4 - nb - 2));
      ASSERT_EQ(bf(d[m * 256 + n]), want) << m << "," << n;
    }
}

TEST(GemmRef, F32ScalesMatchUe8m0) {
  std::mt19937_64 g = test::rng_for_test();
  HostGemm u = test::make_exact_gemm(GemmFormat::kFP8Block, 5, 128, 384, g, DType::UE8M0);
  HostGemm f = u;
  f.a_scale_dtype = f.b_scale_dtype = DType::F32;
  f.a_scales.assign(u.a_scales.size() * 4, 0);
  f.b_scales.assign(u.b_scales.size() * 4, 0);
  for (size_t i = 0; i < u.a_scales.size(); ++i) test::put_scale(f.a_scales, DType::F32, i, u.a_scales[i] - 127);
  for (size_t i = 0; i < u.b_scales.size(); ++i) test::put_scale(f.b_scales, DType::F32, i, u.b_scales[i] - 127);
  std::vector<uint16_t> du, df;
  ASSERT_TRUE(gemm(u.host_params(du)).ok());
  ASSERT_TRUE(gemm(f.host_params(df)).ok());
  EXPECT_EQ(du, df);
}

TEST(GemmRef, FP4NibbleOrderAndScales) {
  // Row 0 of B: byte 0x21 holds element 0 = code 1 (0.5) in the low nibble, element 1 = code 2 (1.0).
  // Row 1: element 32 (second MXFP4 block, scale 2^3) = code 0xF (-6).
  for (GemmFormat f : {GemmFormat::kW4A16MXFP4, GemmFormat::kW4A8MXFP4}) {
    HostGemm h;
    h.format = f;
    h.M = 1, h.N = 128, h.K = 128;
    test::alloc_operands(h);
    std::fill(h.b_scales.begin(), h.b_scales.end(), uint8_t(127));
    h.b[0] = 0x21;
    h.b[64 + 16] = 0x0F;
    h.b_scales[1 * 4 + 1] = 127 + 3;
    const float a0 = 1.f, a1 = 10.f, a32 = 0.5f;
    if (h.a_bf16()) {
      const uint16_t v0 = num::bf16_from_float(a0), v1 = num::bf16_from_float(a1), v32 = num::bf16_from_float(a32);
      std::memcpy(&h.a[0], &v0, 2), std::memcpy(&h.a[2], &v1, 2), std::memcpy(&h.a[64], &v32, 2);
    } else {
      h.a[0] = num::e4m3_from_float(a0), h.a[1] = num::e4m3_from_float(a1), h.a[32] = num::e4m3_from_float(a32);
      std::fill(h.a_scales.begin(), h.a_scales.end(), uint8_t(127 + 1));  // x2
    }
    const double sa = h.a_bf16() ? 1.0 : 2.0;
    std::vector<uint16_t> d;
    ASSERT_TRUE(gemm(h.host_params(d)).ok());
    EXPECT_EQ(bf(d[0]), sa * (0.5 * 1 + 1.0 * 10)) << gemm_format_name(f);
    EXPECT_EQ(bf(d[1]), sa * (-6.0 * 8 * 0.5)) << gemm_format_name(f);
    EXPECT_EQ(bf(d[2]), 0.0);
  }
}

TEST(GemmRef, NVFP4GlobalAndBlockScale) {
  HostGemm h;
  h.format = GemmFormat::kW4A16NVFP4;
  h.M = 1, h.N = 128, h.K = 128;
  test::alloc_operands(h);
  h.global = 0.75f;
  std::fill(h.b_scales.begin(), h.b_scales.end(), num::e4m3_from_float(1.f));
  h.b[8] = 0x07;                                  // row 0, element 16 = 6.0 (second 16-block)
  h.b_scales[1] = num::e4m3_from_float(1.25f);    // its e4m3 scale
  const uint16_t v = num::bf16_from_float(2.f);
  std::memcpy(&h.a[32], &v, 2);                   // a[0][16] = 2
  std::vector<uint16_t> d;
  ASSERT_TRUE(gemm(h.host_params(d)).ok());
  EXPECT_EQ(bf(d[0]), 2.0 * 6.0 * 1.25 * 0.75);
}

TEST(GemmRef, RoundsOnceFromExactSum) {
  // 1 + 2^-8 + 2^-30: through f32 it would become the tie 1 + 2^-8 and round to even (1.0); rounded
  // once it is above the tie and gives 1 + 2^-7.
  HostGemm h;
  h.format = GemmFormat::kW4A16MXFP4;
  h.M = 1, h.N = 128, h.K = 128;
  test::alloc_operands(h);
  std::fill(h.b_scales.begin(), h.b_scales.end(), uint8_t(127));
  h.b[0] = 0x22, h.b[1] = 0x02;  // B[0][0..2] = 1
  const float vals[3] = {1.f, std::ldexp(1.f, -8), std::ldexp(1.f, -30)};
  for (int i = 0; i < 3; ++i) {
    const uint16_t b = num::bf16_from_float(vals[i]);
    std::memcpy(&h.a[2 * i], &b, 2);
  }
  std::vector<uint16_t> d;
  ASSERT_TRUE(gemm(h.host_params(d)).ok());
  EXPECT_EQ(d[0], 0x3F81);
}

TEST(GemmRef, BiasResidualAndInPlace) {
  // bias + residual must equal a residual that already holds both (small integers: exact in bf16),
  // and must be added before the one rounding (the products alone exceed bf16's integer range).
  std::mt19937_64 g = test::rng_for_test();
  HostGemm h = test::make_exact_gemm(GemmFormat::kFP8Block, 4, 128, 128, g);
  h.has_bias = h.has_residual = true;
  test::add_epilogue_inputs(h, g, true);
  std::vector<uint16_t> d;
  ASSERT_TRUE(gemm(h.host_params(d)).ok());
  HostGemm merged = h;
  merged.has_bias = false;
  for (int64_t i = 0; i < 4 * 128; ++i) {
    uint16_t bias, res;
    std::memcpy(&bias, &h.bias[2 * (i % 128)], 2);
    std::memcpy(&res, &h.residual[2 * i], 2);
    const uint16_t sum = num::bf16_from_float(bf(bias) + bf(res));
    std::memcpy(&merged.residual[2 * i], &sum, 2);
  }
  std::vector<uint16_t> dm;
  ASSERT_TRUE(gemm(merged.host_params(dm)).ok());
  EXPECT_EQ(d, dm);
  // residual == d: the op adds into d.
  std::vector<uint16_t> inout(h.residual.size() / 2);
  std::memcpy(inout.data(), h.residual.data(), h.residual.size());
  std::vector<uint16_t> scratch;
  GemmParams p = h.host_params(scratch);
  p.d = make_tensor(inout.data(), DType::BF16, {4, 128});
  p.residual = p.d;
  ASSERT_TRUE(gemm(p).ok());
  EXPECT_EQ(inout, d);
}

// Validation: every rule fires, names the argument, and leaves d untouched.
class GemmValidation : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 g = test::rng_for_test();
    h = test::make_exact_gemm(GemmFormat::kFP8Block, 2, 128, 256, g);
    p = h.host_params(d);
  }
  void expect_error(const GemmParams& bad, const char* needle) {
    const std::vector<uint16_t> before = d;
    const Status s = gemm(bad);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.message();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
    EXPECT_EQ(s.message().rfind("gemm: ", 0), 0u) << s.message();
    EXPECT_EQ(d, before);
  }
  HostGemm h;
  std::vector<uint16_t> d;
  GemmParams p;
};

TEST_F(GemmValidation, Rules) {
  GemmParams q = p;
  q.format = static_cast<GemmFormat>(9);
  expect_error(q, "GemmFormat");
  q = p, q.a.dtype = DType::BF16;
  expect_error(q, "'a'");
  q = p, q.b.dtype = DType::E2M1;
  expect_error(q, "'b'");
  q = p, q.a.shape[1] = 200, q.b.shape[1] = 200;
  expect_error(q, "multiple of 128");
  q = p, q.b.shape[0] = 100;
  expect_error(q, "N (rows of 'b')");
  q = p, q.b.shape[1] = 128;
  expect_error(q, "'b'");
  q = p, q.a_scales.shape[1] = 3;
  expect_error(q, "'a_scales'");
  q = p, q.a_scales = TensorView{};
  expect_error(q, "'a_scales'");
  q = p, q.b_scales.dtype = DType::E4M3;
  expect_error(q, "'b_scales'");
  q = p, q.b_global_scale = make_tensor(&h.global, DType::F32, {1});
  expect_error(q, "'b_global_scale'");
  q = p, q.d.dtype = DType::F32;
  expect_error(q, "'d'");
  q = p, q.d.shape[1] = 256;
  expect_error(q, "'d'");
  q = p, q.a.strides[0] = 264;
  expect_error(q, "row stride");
  q = p, q.a.data = h.a.data() + 1;
  expect_error(q, "aligned");
  std::vector<uint16_t> bias(128);
  q = p, q.bias = make_tensor(bias.data(), DType::BF16, {256});
  expect_error(q, "'bias'");
  q = p, q.bias = make_tensor(bias.data(), DType::F32, {128});
  expect_error(q, "'bias'");
  q = p, q.residual = make_tensor(h.residual.data(), DType::BF16, {3, 128});
  expect_error(q, "'residual'");
  q = p, q.workspace = make_tensor(h.residual.data(), DType::F32, {16});
  expect_error(q, "'workspace'");
  q = p, q.d = make_tensor(h.a.data(), DType::BF16, {2, 128});
  expect_error(q, "overlap");
  q = p, q.d.device = Device::cuda(0);
  expect_error(q, "different device");
}

TEST_F(GemmValidation, FormatSpecificRules) {
  std::mt19937_64 g = test::rng_for_test();
  HostGemm nv = test::make_exact_gemm(GemmFormat::kW4A16NVFP4, 2, 128, 256, g);
  std::vector<uint16_t> dn;
  GemmParams q = nv.host_params(dn);
  ASSERT_TRUE(gemm(q).ok());
  GemmParams r = q;
  r.b_global_scale = TensorView{};
  Status s = gemm(r);
  EXPECT_NE(s.message().find("'b_global_scale'"), std::string::npos) << s.message();
  r = q, r.a_scales = make_tensor(h.a_scales.data(), DType::UE8M0, {2, 2});
  s = gemm(r);
  EXPECT_NE(s.message().find("'a_scales'"), std::string::npos) << s.message();
  r = q, r.b_scales.dtype = DType::UE8M0;
  s = gemm(r);
  EXPECT_NE(s.message().find("'b_scales'"), std::string::npos) << s.message();

  // W4A8 takes 1x128 or MXFP8 (per-32) activation scales, nothing else.
  HostGemm w = test::make_exact_gemm(GemmFormat::kW4A8MXFP4, 2, 128, 256, g, DType::UE8M0, true);
  GemmParams wp = w.host_params(dn);
  ASSERT_TRUE(gemm(wp).ok());
  wp.a_scales.shape[1] = 4;
  s = gemm(wp);
  EXPECT_NE(s.message().find("'a_scales'"), std::string::npos) << s.message();
}

TEST_F(GemmValidation, EmptyMIsANoOp) {
  GemmParams q = p;
  q.a.shape[0] = 0, q.a_scales.shape[0] = 0, q.d.shape[0] = 0;
  EXPECT_TRUE(gemm(q).ok());
  EXPECT_EQ(gemm_workspace_size(GemmFormat::kFP8Block, 16, 4096, 7168, Device::cpu()), 0);
}

}  // namespace
}  // namespace dsv4
