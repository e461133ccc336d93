// The CPU reference quantizers (src/cpu/quant.cpp) against:
//  - hand-computed cases with known scale bytes and codes for every format;
//  - a second, independent formulation of the rules (the one the CUDA kernels use: the exact
//    num::ceil_log2_ratio and an f32 multiply by 2^-e) that must agree bit for bit on random inputs
//    of many shapes, strides and scale layouts;
//  - round-trip error bounds (half a grid step of the block's scale);
//  - non-finite and all-zero blocks, awkward sizes, and writes outside the outputs (none allowed).
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "cpu/ref_test_util.h"
#include "dsv4/numerics.h"
#include "dsv4/ops/quant.h"

namespace dsv4::test {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

bool is_fp4(QuantFormat f) { return f == QuantFormat::kMXFP4 || f == QuantFormat::kNVFP4; }
DType default_scale_dtype(QuantFormat f) { return f == QuantFormat::kNVFP4 ? DType::E4M3 : DType::UE8M0; }
float round_to(DType dt, float v) { return dt == DType::BF16 ? num::bf16_to_float(num::bf16_from_float(v)) : v; }

// One quantize call's configuration and its read-back results (dense, row-major).
struct QuantRun {
  QuantFormat f = QuantFormat::kMXFP4;
  int64_t M = 1, K = 32;
  DType xdt = DType::F32;
  DType sdt = DType::UE8M0;
  int64_t x_pad = 0, q_pad = 0;  // extra elements at the end of each row
  bool scales_col_major = false;
  bool compute_g = true;
  float g_in = 1.0f;

  Status status;
  std::vector<uint8_t> codes;   // [M*K]
  std::vector<uint32_t> scales; // [SM*SK] the scale's bits (one-byte codes or f32 bits)
  float g_out = 0.0f;

  int64_t SM() const { return (M + quant_block_m(f) - 1) / quant_block_m(f); }
  int64_t SK() const { return K / quant_block_k(f); }
};

QuantRun make_run(QuantFormat f, int64_t M, int64_t K, DType xdt = DType::F32) {
  QuantRun r;
  r.f = f;
  r.M = M;
  r.K = K;
  r.xdt = xdt;
  r.sdt = default_scale_dtype(f);
  return r;
}

// Runs quantize on x (M*K values, rounded to r.xdt) in a poisoned arena, reads the results back
// and fails the test if any byte outside q's elements, the scales and (when computed) the global
// scale changed.
void run_quantize(QuantRun& r, const std::vector<float>& x, uint8_t fill) {
  ASSERT_EQ(static_cast<int64_t>(x.size()), r.M * r.K);
  const int xb = dtype_bits(r.xdt) / 8;
  const int64_t xs = r.K + r.x_pad, qs = r.K + r.q_pad;
  const int qbits = is_fp4(r.f) ? 4 : 8;
  const int64_t SM = r.SM(), SK = r.SK();
  const int sb = dtype_bits(r.sdt) / 8;
  const size_t cap = static_cast<size_t>(r.M * xs * xb + r.M * qs + SM * SK * sb + 4 + 4 * 192);
  Arena a(cap, fill);
  uint8_t* xp = a.alloc(r.M * xs * xb);
  uint8_t* qp = a.alloc(r.M * qs * qbits / 8);
  uint8_t* sp = a.alloc(SM * SK * sb);
  uint8_t* gp = a.alloc(4);
  for (int64_t m = 0; m < r.M; ++m)
    for (int64_t k = 0; k < r.K; ++k) {
      const float v = x[m * r.K + k];
      if (r.xdt == DType::BF16) {
        const uint16_t h = num::bf16_from_float(v);
        std::memcpy(xp + (m * xs + k) * 2, &h, 2);
      } else {
        std::memcpy(xp + (m * xs + k) * 4, &v, 4);
      }
    }
  if (!r.compute_g) std::memcpy(gp, &r.g_in, 4);
  const auto snap = a.snapshot();

  QuantizeParams p;
  p.format = r.f;
  p.x = view2d(xp, r.xdt, r.M, r.K, xs, 1);
  p.q = view2d(qp, is_fp4(r.f) ? DType::E2M1 : DType::E4M3, r.M, r.K, qs, 1);
  p.scales = r.scales_col_major ? view2d(sp, r.sdt, SM, SK, 1, SM) : view2d(sp, r.sdt, SM, SK, SK, 1);
  if (r.f == QuantFormat::kNVFP4) p.global_scale = make_tensor(gp, DType::F32, {1});
  p.compute_global_scale = r.compute_g;
  r.status = quantize(p);

  // Which bytes the op may write.
  // An op that fails must write nothing at all.
  if (!r.status.ok()) {
    const int64_t at = a.first_change(snap);
    EXPECT_EQ(at, -1) << "quantize failed but wrote arena byte " << at;
  }
  std::vector<char> may(cap, 0);
  const int64_t qbase = qp - a.base(), sbase = sp - a.base(), gbase = gp - a.base();
  r.codes.assign(r.M * r.K, 0);
  for (int64_t m = 0; m < r.M; ++m)
    for (int64_t k = 0; k < r.K; ++k) {
      const int64_t e = m * qs + k;
      if (qbits == 4) {
        may[qbase + e / 2] = 1;
        r.codes[m * r.K + k] = (e & 1) ? qp[e / 2] >> 4 : qp[e / 2] & 0xF;
      } else {
        may[qbase + e] = 1;
        r.codes[m * r.K + k] = qp[e];
      }
    }
  r.scales.assign(SM * SK, 0);
  for (int64_t i = 0; i < SM; ++i)
    for (int64_t j = 0; j < SK; ++j) {
      const int64_t off = r.scales_col_major ? i + j * SM : i * SK + j;
      for (int b = 0; b < sb; ++b) may[sbase + off * sb + b] = 1;
      uint32_t v = 0;
      std::memcpy(&v, sp + off * sb, sb);
      r.scales[i * SK + j] = v;
    }
  if (r.f == QuantFormat::kNVFP4 && r.compute_g)
    for (int b = 0; b < 4; ++b) may[gbase + b] = 1;
  std::memcpy(&r.g_out, gp, 4);
  int bad = 0;
  const uint8_t* base = a.base();
  for (size_t i = 0; i < snap.size(); ++i)
    if (!may[i] && base[i] != snap[i] && ++bad <= 3) ADD_FAILURE() << "quantize wrote outside its outputs at arena byte " << i;
}

// The independent formulation (as the CUDA kernels compute it): exact ceil_log2_ratio and f32
// multiplication by exp2i(-e) for power-of-two scales; the documented f32 formulas otherwise.
struct Model {
  std::vector<uint8_t> codes;
  std::vector<uint32_t> scales;
  float g = 0.0f;
};

Model model_quantize(const QuantRun& r, const std::vector<float>& x_in) {
  const int bk = quant_block_k(r.f), bm = quant_block_m(r.f);
  const int64_t SM = r.SM(), SK = r.SK();
  std::vector<float> x(x_in.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = round_to(r.xdt, x_in[i]);
  Model md;
  md.codes.assign(r.M * r.K, 0);
  md.scales.assign(SM * SK, 0);
  float g = r.g_in;
  if (r.f == QuantFormat::kNVFP4 && r.compute_g) {
    float amax = 0;
    for (float v : x)
      if (std::isfinite(v)) amax = std::max(amax, std::fabs(v));
    g = amax / 2688.0f;
  }
  md.g = g;
  for (int64_t bi = 0; bi < SM; ++bi)
    for (int64_t bj = 0; bj < SK; ++bj) {
      const int64_t m0 = bi * bm, m1 = std::min(r.M, m0 + bm);
      bool finite = true;
      float amax = 0;
      for (int64_t m = m0; m < m1; ++m)
        for (int64_t k = bj * bk; k < (bj + 1) * bk; ++k) {
          const float v = x[m * r.K + k];
          if (!std::isfinite(v)) finite = false;
          else amax = std::max(amax, std::fabs(v));
        }
      uint32_t& sc = md.scales[bi * SK + bj];
      auto each = [&](auto enc) {
        for (int64_t m = m0; m < m1; ++m)
          for (int64_t k = bj * bk; k < (bj + 1) * bk; ++k) md.codes[m * r.K + k] = enc(x[m * r.K + k]);
      };
      if (!finite) {
        sc = r.sdt == DType::F32 ? test::kF32NaNBits : (r.sdt == DType::E4M3 ? 0x7F : 0xFF);
        continue;
      }
      if (r.f == QuantFormat::kMXFP4) {
        const int e = num::ceil_log2_ratio(amax, 6.0f, -126);
        sc = static_cast<uint32_t>(e + 127);
        each([&](float v) { return num::e2m1_from_float(v * num::exp2i(-e)); });
      } else if (r.f == QuantFormat::kNVFP4) {
        if (g == 0.0f) continue;
        const uint8_t s = num::e4m3_from_float(amax / (g * 6.0f));
        const float sg = num::e4m3_to_float(s) * g;
        if (sg == 0.0f) continue;
        sc = s;
        const float rcp = std::min(1.0f / sg, std::numeric_limits<float>::max());
        each([&](float v) { return num::e2m1_from_float(v * rcp); });
      } else if (r.sdt == DType::F32) {
        const float s = std::max(amax, 1e-4f) / 448.0f, rcp = 448.0f / std::max(amax, 1e-4f);
        sc = num::f32_bits(s);
        each([&](float v) { return num::e4m3_from_float(v * rcp); });
      } else {
        const int e = num::ceil_log2_ratio(amax, 448.0f, -22);
        sc = static_cast<uint32_t>(e + 127);
        each([&](float v) { return num::e4m3_from_float(v * num::exp2i(-e)); });
      }
    }
  return md;
}

// Runs twice (two poison patterns, so an element left unwritten cannot match by luck) and checks
// codes, scales and g against the model.
void check_against_model(QuantRun r, const std::vector<float>& x, const std::string& what) {
  const Model md = model_quantize(r, x);
  for (uint8_t fill : {uint8_t{0xA5}, uint8_t{0x5A}}) {
    run_quantize(r, x, fill);
    ASSERT_TRUE(r.status.ok()) << what << ": " << r.status.message();
    int bad = 0;
    for (size_t i = 0; i < md.codes.size(); ++i)
      if (r.codes[i] != md.codes[i] && ++bad <= 5)
        ADD_FAILURE() << what << ": code of element (" << i / r.K << ", " << i % r.K << ") = " << int(r.codes[i])
                      << ", model " << int(md.codes[i]) << " (x = " << round_to(r.xdt, x[i]) << ")";
    for (size_t i = 0; i < md.scales.size(); ++i)
      if (r.scales[i] != md.scales[i] && ++bad <= 10)
        ADD_FAILURE() << what << ": scale " << i << " = 0x" << std::hex << r.scales[i] << ", model 0x" << md.scales[i];
    if (r.f == QuantFormat::kNVFP4) {
      EXPECT_TRUE(same_bits(r.g_out, md.g)) << what << ": g " << r.g_out << " vs " << md.g;
    }
    if (bad) return;
  }
}

// ---------------------------------------------------------------------------------------------
// Hand-computed cases.

TEST(QuantRef, HandMXFP4) {
  QuantRun r = make_run(QuantFormat::kMXFP4, 2, 64);
  std::vector<float> x(2 * 64, 0.0f);
  // Row 0, block 0: amax 12 -> 2^ceil(log2(12/6)) = 2^1 (byte 128); x/2 hits ties 0.25, 0.75, 2.5/2,
  // 3.5, 1.25 that go to the even code. Block 1: all zero -> the floor 2^-126 (byte 1).
  const float b0[8] = {0.5f, -1.0f, 1.5f, 3.0f, 12.0f, 5.0f, 7.0f, 2.5f};
  std::copy(b0, b0 + 8, x.begin());
  // Row 1, block 0: amax exactly 6 -> 2^0 (byte 127). Block 1 holds a NaN -> NaN scale, codes 0.
  x[64 + 0] = 6.0f;
  x[64 + 1] = -6.0f;
  x[64 + 2] = 0.3f;
  for (int k = 32; k < 64; ++k) x[64 + k] = 1.0f;
  x[64 + 37] = kNaN;
  run_quantize(r, x, 0xA5);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  const uint8_t want0[8] = {0x0, 0x9, 0x2, 0x3, 0x7, 0x4, 0x6, 0x2};
  for (int k = 0; k < 8; ++k) EXPECT_EQ(r.codes[k], want0[k]) << k;
  for (int k = 8; k < 64; ++k) EXPECT_EQ(r.codes[k], 0) << k;
  EXPECT_EQ(r.codes[64 + 0], 0x7);
  EXPECT_EQ(r.codes[64 + 1], 0xF);
  EXPECT_EQ(r.codes[64 + 2], 0x1);
  for (int k = 32; k < 64; ++k) EXPECT_EQ(r.codes[64 + k], 0) << k;
  EXPECT_EQ(r.scales, (std::vector<uint32_t>{128, 1, 127, 0xFF}));
}

TEST(QuantRef, HandMXFP4PackedBytes) {
  // The same first block as above through the raw bytes: element 0 in the low nibble.
  Arena a;
  auto* xp = reinterpret_cast<float*>(a.alloc(32 * 4));
  uint8_t* qp = a.alloc(16);
  uint8_t* sp = a.alloc(1);
  const float b0[8] = {0.5f, -1.0f, 1.5f, 3.0f, 12.0f, 5.0f, 7.0f, 2.5f};
  for (int k = 0; k < 32; ++k) xp[k] = k < 8 ? b0[k] : 0.0f;
  QuantizeParams p;
  p.format = QuantFormat::kMXFP4;
  p.x = make_tensor(xp, DType::F32, {1, 32});
  p.q = make_tensor(qp, DType::E2M1, {1, 32});
  p.scales = make_tensor(sp, DType::UE8M0, {1, 1});
  DSV4_EXPECT_OK(quantize(p));
  const uint8_t want[16] = {0x90, 0x32, 0x47, 0x26, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < 16; ++i) EXPECT_EQ(qp[i], want[i]) << i;
  EXPECT_EQ(sp[0], 128);
}

TEST(QuantRef, HandNVFP4GivenGlobalScale) {
  QuantRun r = make_run(QuantFormat::kNVFP4, 1, 32);
  r.compute_g = false;
  r.g_in = 1.0f;
  std::vector<float> x(32, 0.0f);
  // Block 0: amax 6 -> s = e4m3(6 / 6) = 1.0 (0x38); 0.25 ties to 0, 1.75 ties to 2.
  x[0] = 6.0f, x[1] = -3.0f, x[2] = 0.5f, x[3] = 0.25f, x[4] = 1.75f;
  // Block 1: amax 100 -> e4m3(16.67) = 16 (0x58); 100/16 = 6.25 saturates to 6; 40/16 = 2.5 ties to 2.
  x[16] = 100.0f, x[17] = 40.0f, x[18] = -24.0f;
  run_quantize(r, x, 0xA5);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.scales, (std::vector<uint32_t>{0x38, 0x58}));
  const uint8_t want[5] = {0x7, 0xD, 0x1, 0x0, 0x4};
  for (int k = 0; k < 5; ++k) EXPECT_EQ(r.codes[k], want[k]) << k;
  EXPECT_EQ(r.codes[16], 0x7);
  EXPECT_EQ(r.codes[17], 0x4);
  EXPECT_EQ(r.codes[18], 0xB);
  EXPECT_EQ(r.g_out, 1.0f);  // read, not written
}

TEST(QuantRef, HandNVFP4ComputedGlobalScale) {
  QuantRun r = make_run(QuantFormat::kNVFP4, 1, 48);
  std::vector<float> x(48, 0.0f);
  // Finite amax 2688 -> g = 1 exactly; the +inf in block 2 is ignored by g and NaNs block 2.
  x[0] = 2688.0f, x[1] = 1344.0f, x[2] = 100.0f, x[3] = 112.0f, x[4] = 113.0f;  // s = 448 (0x7E)
  x[16] = 12.0f, x[17] = 3.0f;                                                    // s = 2 (0x40)
  x[32] = 1.0f, x[33] = kInf;
  run_quantize(r, x, 0xA5);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.g_out, 1.0f);
  EXPECT_EQ(r.scales, (std::vector<uint32_t>{0x7E, 0x40, 0x7F}));
  // 2688/448 = 6, 1344/448 = 3, 100/448 -> 0, 112/448 = 0.25 ties to 0, 113/448 -> 0.5.
  const uint8_t want[5] = {0x7, 0x5, 0x0, 0x0, 0x1};
  for (int k = 0; k < 5; ++k) EXPECT_EQ(r.codes[k], want[k]) << k;
  EXPECT_EQ(r.codes[16], 0x7);
  EXPECT_EQ(r.codes[17], 0x3);
  for (int k = 32; k < 48; ++k) EXPECT_EQ(r.codes[k], 0) << k;
}

TEST(QuantRef, HandNVFP4ZeroGlobalScale) {
  QuantRun r = make_run(QuantFormat::kNVFP4, 1, 32);
  r.compute_g = false;
  r.g_in = 0.0f;
  std::vector<float> x(32, 5.0f);
  x[20] = kNaN;  // a non-finite block still gets the NaN scale
  run_quantize(r, x, 0xA5);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.scales, (std::vector<uint32_t>{0x00, 0x7F}));
  for (int k = 0; k < 32; ++k) EXPECT_EQ(r.codes[k], 0) << k;
  // Computed from an all-zero tensor: g = 0 is written, scales and codes 0.
  QuantRun z = make_run(QuantFormat::kNVFP4, 3, 16);
  run_quantize(z, std::vector<float>(48, 0.0f), 0xA5);
  ASSERT_TRUE(z.status.ok());
  EXPECT_TRUE(same_bits(z.g_out, 0.0f));
  EXPECT_EQ(z.scales, (std::vector<uint32_t>{0, 0, 0}));
}

TEST(QuantRef, HandNVFP4ScaleUnderflow) {
  // amax_b / (6 g) = 2^-11, below half the smallest e4m3 subnormal (2^-10): s rounds to 0, so the
  // block's scale and codes are 0 although it is not all zero.
  QuantRun r = make_run(QuantFormat::kNVFP4, 1, 32);
  r.compute_g = false;
  r.g_in = 1.0f;
  std::vector<float> x(32, 0.0f);
  x[0] = 6.0f * std::ldexp(1.0f, -11);
  x[16] = 6.0f * std::ldexp(1.0f, -9);  // the smallest subnormal: s = 2^-9 (0x01), code 6
  run_quantize(r, x, 0xA5);
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.scales, (std::vector<uint32_t>{0x00, 0x01}));
  EXPECT_EQ(r.codes[0], 0);
  EXPECT_EQ(r.codes[16], 0x7);
}

TEST(QuantRef, HandMXFP8) {
  QuantRun r = make_run(QuantFormat::kMXFP8, 1, 128, DType::BF16);
  std::vector<float> x(128, 0.0f);
  x[0] = 448.0f, x[1] = 1.0f, x[2] = -0.5f, x[3] = 3.0f;  // amax 448 -> 2^0 (127)
  x[32] = 450.0f, x[33] = 3.0f;                          // amax 450 -> 2^1; 225 -> 224 (0x76)
  // block 2 all zero -> floor 2^-22 (105)
  x[96] = 1e-3f;  // bf16 0.00099945; /448 -> 2^-18.77 -> 2^-18 (109); * 2^18 = 262.0 -> 256 (0x78)
  run_quantize(r, x, 0xA5);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  EXPECT_EQ(r.scales, (std::vector<uint32_t>{127, 128, 105, 109}));
  EXPECT_EQ(r.codes[0], 0x7E);
  EXPECT_EQ(r.codes[1], 0x38);
  EXPECT_EQ(r.codes[2], 0xB0);
  EXPECT_EQ(r.codes[3], 0x44);
  EXPECT_EQ(r.codes[32], 0x76);
  EXPECT_EQ(r.codes[33], 0x3C);
  EXPECT_EQ(r.codes[96], 0x78);
  EXPECT_EQ(r.codes[64], 0);
}

TEST(QuantRef, HandFP8_1x128) {
  std::vector<float> x(256, 0.0f);
  x[0] = 896.0f, x[1] = 3.0f, x[2] = -896.0f;  // block 0: amax 896
  x[128] = 1.0f;                               // row 1: amax 1
  {
    QuantRun r = make_run(QuantFormat::kFP8_1x128, 2, 128);
    run_quantize(r, x, 0xA5);
    ASSERT_TRUE(r.status.ok()) << r.status.message();
    // 2^1 (128); 2^ceil(log2(1/448)) = 2^-8 (119).
    EXPECT_EQ(r.scales, (std::vector<uint32_t>{128, 119}));
    EXPECT_EQ(r.codes[0], 0x7E);
    EXPECT_EQ(r.codes[1], 0x3C);
    EXPECT_EQ(r.codes[2], 0xFE);
    EXPECT_EQ(r.codes[128], 0x78);  // 1 * 2^8 = 256
  }
  {
    QuantRun r = make_run(QuantFormat::kFP8_1x128, 2, 128);
    r.sdt = DType::F32;
    run_quantize(r, x, 0xA5);
    ASSERT_TRUE(r.status.ok()) << r.status.message();
    EXPECT_EQ(r.scales[0], num::f32_bits(2.0f));  // 896 / 448 exactly
    EXPECT_EQ(r.scales[1], num::f32_bits(1.0f / 448.0f));
    EXPECT_EQ(r.codes[0], 0x7E);
    EXPECT_EQ(r.codes[1], 0x3C);
    EXPECT_EQ(r.codes[2], 0xFE);
    EXPECT_EQ(r.codes[128], 0x7E);  // 1 / (1/448) rounds to 448 either way
  }
  {
    QuantRun r = make_run(QuantFormat::kFP8_1x128, 1, 128);
    r.sdt = DType::F32;
    std::vector<float> z(128, 0.0f);
    z[5] = 1e-6f;  // below the 1e-4 clamp: s = 1e-4 / 448, code e4m3(1e-6 * (448 / 1e-4)) = e4m3(4.48)
    run_quantize(r, z, 0xA5);
    ASSERT_TRUE(r.status.ok());
    EXPECT_EQ(r.scales[0], num::f32_bits(1e-4f / 448.0f));
    EXPECT_EQ(r.codes[5], num::e4m3_from_float(1e-6f * (448.0f / 1e-4f)));
    EXPECT_EQ(r.codes[5], 0x49);  // 4.48 -> 4.5 = 1.125 * 2^2
  }
}

TEST(QuantRef, HandFP8_128x128PartialRowBlock) {
  // M = 129: row block 1 is the single row 128.
  QuantRun r = make_run(QuantFormat::kFP8_128x128, 129, 256);
  std::vector<float> x(129 * 256, 0.0f);
  for (int m = 0; m < 128; ++m)
    for (int k = 0; k < 256; ++k) x[m * 256 + k] = k < 128 ? 1.0f : -2.0f;
  x[128 * 256 + 200] = 896.0f;
  run_quantize(r, x, 0xA5);
  ASSERT_TRUE(r.status.ok()) << r.status.message();
  // (0,0) amax 1 -> 2^-8 (119); (0,1) amax 2 -> 2^-7 (120); (1,0) zero -> 105; (1,1) 896 -> 128.
  EXPECT_EQ(r.scales, (std::vector<uint32_t>{119, 120, 105, 128}));
  EXPECT_EQ(r.codes[0], 0x78);
  EXPECT_EQ(r.codes[127 * 256 + 255], 0xF8);  // -2 * 2^7 = -256
  EXPECT_EQ(r.codes[128 * 256 + 200], 0x7E);
  EXPECT_EQ(r.codes[128 * 256 + 0], 0x00);
}

// ---------------------------------------------------------------------------------------------
// Non-finite and all-zero blocks, every format.

struct FormatCase {
  QuantFormat f;
  DType sdt;
  const char* name;
};
const FormatCase kFormats[] = {
    {QuantFormat::kMXFP4, DType::UE8M0, "MXFP4"},         {QuantFormat::kNVFP4, DType::E4M3, "NVFP4"},
    {QuantFormat::kMXFP8, DType::UE8M0, "MXFP8"},         {QuantFormat::kFP8_1x128, DType::UE8M0, "FP8_1x128/ue8m0"},
    {QuantFormat::kFP8_1x128, DType::F32, "FP8_1x128/f32"}, {QuantFormat::kFP8_128x128, DType::UE8M0, "FP8_128x128/ue8m0"},
    {QuantFormat::kFP8_128x128, DType::F32, "FP8_128x128/f32"},
};

TEST(QuantRef, NonFiniteBlocksGetNaNScaleAndZeroCodes) {
  auto g = rng_for_test();
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (const auto& fc : kFormats) {
    for (float bad : {kNaN, kInf, -kInf}) {
      for (DType xdt : {DType::F32, DType::BF16}) {
        const int bk = quant_block_k(fc.f), bm = quant_block_m(fc.f);
        QuantRun r = make_run(fc.f, bm == 1 ? 3 : 130, 3 * bk, xdt);
        r.sdt = fc.sdt;
        std::vector<float> x(r.M * r.K);
        for (auto& v : x) v = nd(g);
        // Poison block (row-block 0, column-block 1) at its last element.
        const int64_t pm = std::min<int64_t>(bm, r.M) - 1, pk = 2 * bk - 1;
        x[pm * r.K + pk] = bad;
        check_against_model(r, x, std::string(fc.name) + " nonfinite");
        run_quantize(r, x, 0xA5);
        const uint32_t nan_scale = fc.sdt == DType::F32 ? test::kF32NaNBits : (fc.sdt == DType::E4M3 ? 0x7Fu : 0xFFu);
        EXPECT_EQ(r.scales[1], nan_scale) << fc.name;
        for (int64_t m = 0; m < std::min<int64_t>(bm, r.M); ++m)
          for (int64_t k = bk; k < 2 * bk; ++k) ASSERT_EQ(r.codes[m * r.K + k], 0) << fc.name;
        EXPECT_NE(r.scales[0], nan_scale) << fc.name;
        EXPECT_NE(r.scales[2], nan_scale) << fc.name;
      }
    }
  }
}

TEST(QuantRef, AllZeroBlocksGetTheFloorScale) {
  for (const auto& fc : kFormats) {
    QuantRun r = make_run(fc.f, 7, 2 * quant_block_k(fc.f));
    r.sdt = fc.sdt;
    run_quantize(r, std::vector<float>(r.M * r.K, 0.0f), 0xA5);
    ASSERT_TRUE(r.status.ok());
    uint32_t want = 0;
    switch (fc.f) {
      case QuantFormat::kMXFP4: want = 1; break;  // 2^-126
      case QuantFormat::kNVFP4: want = 0; break;  // g = 0
      default: want = fc.sdt == DType::F32 ? num::f32_bits(1e-4f / 448.0f) : 105u;  // 2^-22
    }
    for (uint32_t s : r.scales) EXPECT_EQ(s, want) << fc.name;
    for (uint8_t c : r.codes) EXPECT_EQ(c, 0) << fc.name;
  }
}

// ---------------------------------------------------------------------------------------------
// Random inputs against the model, over sizes, strides and scale layouts.

enum class Data { kNormal, kWideRange, kTies, kExtreme };

std::vector<float> make_data(std::mt19937_64& g, Data d, int64_t M, int64_t K, int bm, int bk) {
  std::vector<float> x(M * K);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ex(-30.0f, 30.0f);
  std::uniform_int_distribution<int> ti(-24, 24), ei(-20, 20);
  const int64_t SK = K / bk;
  std::vector<float> block_scale((M / bm + 1) * SK + 1);
  std::vector<int> block_exp(block_scale.size());
  for (size_t i = 0; i < block_scale.size(); ++i) {
    block_scale[i] = std::exp2(ex(g));
    block_exp[i] = ei(g);
  }
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      const size_t b = (m / bm) * SK + k / bk;
      float& v = x[m * K + k];
      switch (d) {
        case Data::kNormal: v = nd(g); break;
        case Data::kWideRange: v = nd(g) * block_scale[b] * ((g() % 16 == 0) ? 1e-3f : 1.0f); break;
        case Data::kTies: v = std::ldexp(static_cast<float>(ti(g)) * 0.25f, block_exp[b]); break;
        case Data::kExtreme: {
          const int r = static_cast<int>(g() % 8);
          v = r == 0 ? FLT_MAX * 0.9f : r == 1 ? -FLT_MIN * 3.0f : r == 2 ? FLT_TRUE_MIN : nd(g) * 1e30f;
          break;
        }
      }
    }
  return x;
}

TEST(QuantRef, MatchesIndependentModelOnRandomInputs) {
  auto g = rng_for_test();
  for (const auto& fc : kFormats) {
    const int bk = quant_block_k(fc.f), bm = quant_block_m(fc.f);
    const int64_t Ms[] = {0, 1, 7, 129};
    for (int64_t M : Ms) {
      for (int64_t nk : {1, 3}) {
        for (DType xdt : {DType::BF16, DType::F32}) {
          for (Data d : {Data::kNormal, Data::kWideRange, Data::kTies, Data::kExtreme}) {
            if (xdt == DType::BF16 && d == Data::kExtreme) continue;  // bf16 cannot hold FLT_MAX * 0.9
            const int variant = static_cast<int>(g() % 4);
            QuantRun r = make_run(fc.f, M, nk * bk, xdt);
            r.sdt = fc.sdt;
            r.scales_col_major = variant & 1;
            if (variant & 2) {
              r.x_pad = 32;  // 64 or 128 extra bytes a row: keeps 16-byte row alignment
              r.q_pad = 32;
            }
            if (fc.f == QuantFormat::kNVFP4 && g() % 2) {
              r.compute_g = false;
              r.g_in = std::exp2(std::uniform_real_distribution<float>(-12.0f, 4.0f)(g));
            }
            const auto x = make_data(g, d, M, r.K, bm, bk);
            check_against_model(r, x,
                                std::string(fc.name) + " M=" + std::to_string(M) + " K=" + std::to_string(r.K) +
                                    " x=" + std::string(dtype_name(xdt)) + " data=" + std::to_string(int(d)) +
                                    " variant=" + std::to_string(variant));
          }
        }
      }
    }
  }
}

TEST(QuantRef, EmptyKIsANoOp) {
  QuantRun r = make_run(QuantFormat::kMXFP8, 5, 0);
  run_quantize(r, {}, 0xA5);
  EXPECT_TRUE(r.status.ok()) << r.status.message();
  QuantRun n = make_run(QuantFormat::kNVFP4, 0, 32);
  run_quantize(n, {}, 0xA5);
  EXPECT_TRUE(n.status.ok()) << n.status.message();
  EXPECT_TRUE(same_bits(n.g_out, 0.0f));  // the computed global scale of an empty tensor
}

// ---------------------------------------------------------------------------------------------
// Round trip: dequantize(quantize(x)) is within half a grid step of the block's scale.

struct RoundTrip {
  std::vector<float> deq_f32;
  std::vector<uint16_t> deq_bf16;
  std::vector<float> scale;  // decoded, per element (NVFP4: s * g)
};

RoundTrip quant_dequant(QuantFormat f, DType sdt, int64_t M, int64_t K, DType xdt, const std::vector<float>& x) {
  const int bk = quant_block_k(f), bm = quant_block_m(f);
  const int64_t SM = (M + bm - 1) / bm, SK = K / bk;
  Arena a(16 << 20);
  uint8_t* xp = a.alloc(M * K * 4);
  uint8_t* qp = a.alloc(M * K);
  uint8_t* sp = a.alloc(SM * SK * 4);
  uint8_t* gp = a.alloc(4);
  uint8_t* of = a.alloc(M * K * 4);
  uint8_t* ob = a.alloc(M * K * 2);
  for (int64_t i = 0; i < M * K; ++i) {
    if (xdt == DType::BF16) reinterpret_cast<uint16_t*>(xp)[i] = num::bf16_from_float(x[i]);
    else reinterpret_cast<float*>(xp)[i] = x[i];
  }
  QuantizeParams p;
  p.format = f;
  p.x = make_tensor(xp, xdt, {M, K});
  p.q = make_tensor(qp, is_fp4(f) ? DType::E2M1 : DType::E4M3, {M, K});
  p.scales = make_tensor(sp, sdt, {SM, SK});
  if (f == QuantFormat::kNVFP4) p.global_scale = make_tensor(gp, DType::F32, {1});
  p.compute_global_scale = true;
  DSV4_EXPECT_OK(quantize(p));
  DequantizeParams d;
  d.format = f;
  d.q = p.q;
  d.scales = p.scales;
  d.global_scale = p.global_scale;
  d.out = make_tensor(of, DType::F32, {M, K});
  DSV4_EXPECT_OK(dequantize(d));
  d.out = make_tensor(ob, DType::BF16, {M, K});
  DSV4_EXPECT_OK(dequantize(d));
  RoundTrip rt;
  rt.deq_f32.assign(reinterpret_cast<float*>(of), reinterpret_cast<float*>(of) + M * K);
  rt.deq_bf16.assign(reinterpret_cast<uint16_t*>(ob), reinterpret_cast<uint16_t*>(ob) + M * K);
  const float gs = f == QuantFormat::kNVFP4 ? *reinterpret_cast<float*>(gp) : 1.0f;
  rt.scale.resize(M * K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t si = (m / bm) * SK + k / bk;
      float s;
      if (sdt == DType::F32) s = reinterpret_cast<float*>(sp)[si];
      else if (sdt == DType::E4M3) s = num::e4m3_to_float(sp[si]) * gs;
      else s = num::ue8m0_to_float(sp[si]);
      rt.scale[m * K + k] = s;
    }
  return rt;
}

TEST(QuantRef, RoundTripWithinHalfAGridStep) {
  auto g = rng_for_test();
  for (const auto& fc : kFormats) {
    for (DType xdt : {DType::BF16, DType::F32}) {
      const int bk = quant_block_k(fc.f), bm = quant_block_m(fc.f);
      const int64_t M = bm == 1 ? 33 : 130, K = 4 * bk;
      // NVFP4's bound needs e4m3-normal block scales: keep block magnitudes within 2^5 of each other.
      const auto x = make_data(g, fc.f == QuantFormat::kNVFP4 ? Data::kNormal : Data::kWideRange, M, K, bm, bk);
      const RoundTrip rt = quant_dequant(fc.f, fc.sdt, M, K, xdt, x);
      int bad = 0;
      double worst = 0;
      for (int64_t i = 0; i < M * K; ++i) {
        const double xi = round_to(xdt, x[i]), s = rt.scale[i];
        const double y = xi / s;
        const double half = is_fp4(fc.f) ? e2m1_half_gap(y) : e4m3_half_gap(y);
        // The f32 products of dequantize (and NVFP4's s * g) add a few f32 ulps.
        const double bound = half * s + std::fabs(xi) * 0x1p-20;
        const double err = std::fabs(static_cast<double>(rt.deq_f32[i]) - xi);
        worst = std::max(worst, err / bound);
        if (!(err <= bound) && ++bad <= 5)
          ADD_FAILURE() << fc.name << " x=" << xi << " deq=" << rt.deq_f32[i] << " scale=" << s << " err=" << err
                        << " bound=" << bound;
        if (rt.deq_bf16[i] != num::bf16_from_float(rt.deq_f32[i]) && ++bad <= 5)
          ADD_FAILURE() << fc.name << ": bf16 output is not bf16(f32 output) at " << i;
      }
      EXPECT_EQ(bad, 0) << fc.name;
      EXPECT_GT(worst, 0.1) << fc.name << ": the data never came near the bound, the test is too weak";
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Dequantize on its own.

TEST(QuantRef, DequantizeMatchesDefinition) {
  auto g = rng_for_test();
  for (const auto& fc : kFormats) {
    const int bk = quant_block_k(fc.f), bm = quant_block_m(fc.f);
    const int64_t M = bm == 1 ? 9 : 131, K = 2 * bk, SM = (M + bm - 1) / bm, SK = K / bk;
    Arena a(8 << 20);
    uint8_t* qp = a.alloc(M * K);
    uint8_t* sp = a.alloc(SM * SK * 4);
    auto* gp = reinterpret_cast<float*>(a.alloc(4));
    auto* op = reinterpret_cast<float*>(a.alloc(M * (K + 8) * 4));
    for (int64_t i = 0; i < M * K; ++i) qp[i] = static_cast<uint8_t>(g());
    for (int64_t i = 0; i < SM * SK; ++i) {
      if (fc.sdt == DType::F32) reinterpret_cast<float*>(sp)[i] = std::ldexp(static_cast<float>(g() % 1000 + 1), -9);
      else if (fc.sdt == DType::E4M3) sp[i] = static_cast<uint8_t>(g() % 0x80);  // includes 0x7F (NaN)
      else sp[i] = static_cast<uint8_t>(90 + g() % 80);
    }
    // Scale (0, 0) is NaN.
    if (fc.sdt == DType::F32) reinterpret_cast<float*>(sp)[0] = kNaN;
    else sp[0] = fc.sdt == DType::E4M3 ? 0x7F : 0xFF;
    *gp = 0.37f;
    DequantizeParams d;
    d.format = fc.f;
    d.q = make_tensor(qp, is_fp4(fc.f) ? DType::E2M1 : DType::E4M3, {M, K});
    // Column-major scales and a row stride larger than K on the output.
    d.scales = view2d(sp, fc.sdt, SM, SK, 1, SM);
    if (fc.f == QuantFormat::kNVFP4) d.global_scale = make_tensor(gp, DType::F32, {1});
    d.out = view2d(op, DType::F32, M, K, K + 8, 1);
    const auto snap = a.snapshot();
    DSV4_EXPECT_OK(dequantize(d));
    int bad = 0;
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t k = 0; k < K; ++k) {
        const int64_t si = (m / bm) + (k / bk) * SM;
        uint8_t c;
        double v;
        if (is_fp4(fc.f)) {
          const int64_t e = m * K + k;
          c = (e & 1) ? qp[e / 2] >> 4 : qp[e / 2] & 0xF;
          v = num::e2m1_to_float(c);
        } else {
          c = qp[m * K + k];
          v = num::e4m3_to_float(c);
        }
        float want;
        if (fc.sdt == DType::F32) {
          want = static_cast<float>(v * reinterpret_cast<float*>(sp)[si]);  // exact in double, one rounding
        } else if (fc.sdt == DType::E4M3) {
          want = static_cast<float>(v * num::e4m3_to_float(sp[si]));  // exact: few mantissa bits
          want = want * *gp;
        } else {
          want = sp[si] == 0xFF ? kNaN : static_cast<float>(std::ldexp(v, sp[si] - 127));
        }
        const float got = op[m * (K + 8) + k];
        const bool ok = std::isnan(want) ? std::isnan(got) : same_bits(got, want);
        if (!ok && ++bad <= 5) ADD_FAILURE() << fc.name << " (" << m << ", " << k << "): " << got << " want " << want;
      }
      for (int64_t k = K; k < K + 8; ++k)
        EXPECT_EQ(std::memcmp(&op[m * (K + 8) + k], &snap[reinterpret_cast<uint8_t*>(&op[m * (K + 8) + k]) - a.base()], 4), 0)
            << "row padding written";
    }
    EXPECT_EQ(bad, 0) << fc.name;
    // Row 0 of scale block 0 is NaN.
    EXPECT_TRUE(std::isnan(op[0])) << fc.name;
  }
}

TEST(QuantRef, DequantizeNVFP4MultipliesScaleFirst) {
  // Find a global scale for which (v * s) * g and v * (s * g) differ in f32, then check the first.
  auto g = rng_for_test();
  const uint8_t s_code = 0x3B;  // 1.375
  const uint8_t v_code = 0x5;   // 3.0
  const float v = num::e2m1_to_float(v_code), s = num::e4m3_to_float(s_code);
  float gs = 0;
  for (int i = 0; i < 100000; ++i) {
    const float c = std::ldexp(1.0f + static_cast<float>(g() % (1u << 23)) * 0x1p-23f, static_cast<int>(g() % 20) - 10);
    if ((v * s) * c != v * (s * c)) {
      gs = c;
      break;
    }
  }
  ASSERT_NE(gs, 0.0f);
  alignas(16) uint8_t q[8] = {v_code, 0, 0, 0, 0, 0, 0, 0};
  alignas(16) uint8_t sc[1] = {s_code};
  alignas(16) float gbuf[1] = {gs};
  alignas(16) float out[16];
  DequantizeParams d;
  d.format = QuantFormat::kNVFP4;
  d.q = make_tensor(q, DType::E2M1, {1, 16});
  d.scales = make_tensor(sc, DType::E4M3, {1, 1});
  d.global_scale = make_tensor(gbuf, DType::F32, {1});
  d.out = make_tensor(out, DType::F32, {1, 16});
  DSV4_EXPECT_OK(dequantize(d));
  EXPECT_TRUE(same_bits(out[0], (v * s) * gs));
  EXPECT_TRUE(same_bits(out[1], 0.0f));
}

TEST(QuantRef, NVFP4GlobalScaleMustBeFiniteAndNonNegative) {
  for (float bad : {kNaN, kInf, -kInf, -1.0f, -FLT_TRUE_MIN}) {
    QuantRun r = make_run(QuantFormat::kNVFP4, 2, 32);
    r.compute_g = false;
    r.g_in = bad;
    run_quantize(r, std::vector<float>(64, 1.0f), 0xA5);  // checks nothing was written
    EXPECT_TRUE(has_all(r.status, StatusCode::kInvalidArgument, {"quantize", "'global_scale'", "finite"})) << bad;
  }
}

// ---------------------------------------------------------------------------------------------
// Scale swizzle.

TEST(QuantRef, SwizzleHandOffsets) {
  // M = 130, S = 5: two row tiles, two column tiles of 4 (ceil(5/4) = 2); 256 * 8 bytes in all.
  const int64_t M = 130, S = 5;
  ASSERT_EQ(swizzled_scales_size(M, S), 256 * 8);
  Arena a;
  uint8_t* src = a.alloc(M * S);
  uint8_t* dst = a.alloc(256 * 8);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < S; ++k) src[m * S + k] = static_cast<uint8_t>(1 + (m * 7 + k * 3) % 250);
  DSV4_EXPECT_OK(swizzle_scales_128x4(make_tensor(src, DType::UE8M0, {M, S}), make_tensor(dst, DType::UE8M0, {256 * 8})));
  EXPECT_EQ(dst[0], src[0]);                   // (0, 0)
  EXPECT_EQ(dst[16], src[1 * S + 0]);          // (1, 0): (m%32)*16
  EXPECT_EQ(dst[4], src[32 * S + 0]);          // (32, 0): ((m%128)/32)*4
  EXPECT_EQ(dst[16 + 4 + 1], src[33 * S + 1]); // (33, 1)
  EXPECT_EQ(dst[512], src[0 * S + 4]);         // (0, 4): second column tile
  EXPECT_EQ(dst[1024], src[128 * S + 0]);      // (128, 0): second row tile, (m/128)*2*512
  EXPECT_EQ(dst[1024 + 512 + 16], src[129 * S + 4]);  // (129, 4)
  EXPECT_EQ(dst[1024 + 32], 0);                // (130, 0) is row padding
  EXPECT_EQ(dst[512 + 0 + 1], 0);              // (0, 5) is column padding
}

TEST(QuantRef, SwizzleRandomRoundTripAndPadding) {
  auto g = rng_for_test();
  for (int64_t M : {1, 7, 128, 129, 300}) {
    for (int64_t S : {1, 3, 4, 5, 8}) {
      for (bool col_major : {false, true}) {
        const int64_t n = swizzled_scales_size(M, S);
        ASSERT_EQ(n, (M + 127) / 128 * 128 * ((S + 3) / 4 * 4));
        Arena a(1 << 20, 0xEE);
        uint8_t* src = a.alloc(M * S);
        uint8_t* dst = a.alloc(n);
        uint8_t* back = a.alloc(M * S);
        for (int64_t i = 0; i < M * S; ++i) src[i] = static_cast<uint8_t>(1 + g() % 255);  // never 0
        const TensorView sv = col_major ? view2d(src, DType::E4M3, M, S, 1, M) : view2d(src, DType::E4M3, M, S, S, 1);
        const TensorView dv = make_tensor(dst, DType::E4M3, {n});
        DSV4_EXPECT_OK(swizzle_scales_128x4(sv, dv));
        // Expected image: every padded position 0, every real one from the formula.
        std::vector<uint8_t> want(n, 0);
        std::vector<char> hit(n, 0);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t k = 0; k < S; ++k) {
            const int64_t off = (m / 128) * ((S + 3) / 4) * 512 + (k / 4) * 512 + (m % 32) * 16 + ((m % 128) / 32) * 4 + (k % 4);
            ASSERT_LT(off, n);
            ASSERT_FALSE(hit[off]) << "two elements map to " << off;
            hit[off] = 1;
            want[off] = col_major ? src[m + k * M] : src[m * S + k];
          }
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(dst[i], want[i]) << "M=" << M << " S=" << S << " at " << i;
        // Unswizzle ignores the padding: put garbage there first.
        for (int64_t i = 0; i < n; ++i)
          if (!hit[i]) dst[i] = 0x77;
        const TensorView bv = col_major ? view2d(back, DType::E4M3, M, S, 1, M) : view2d(back, DType::E4M3, M, S, S, 1);
        const auto snap = a.snapshot();
        DSV4_EXPECT_OK(unswizzle_scales_128x4(dv, bv));
        EXPECT_EQ(std::memcmp(back, src, M * S), 0) << "M=" << M << " S=" << S;
        // Nothing but `back` changed.
        for (int64_t i = 0; i < static_cast<int64_t>(snap.size()); ++i) {
          const int64_t rel = i - (back - a.base());
          if (rel >= 0 && rel < M * S) continue;
          if (a.base()[i] != snap[i]) {
            ADD_FAILURE() << "unswizzle wrote outside dst at arena byte " << i;
            break;
          }
        }
      }
    }
  }
}

TEST(QuantRef, SwizzleEmpty) {
  alignas(16) uint8_t src[4] = {1, 2, 3, 4};
  alignas(16) uint8_t dst[4] = {9, 9, 9, 9};
  DSV4_EXPECT_OK(swizzle_scales_128x4(make_tensor(src, DType::U8, {0, 4}), make_tensor(dst, DType::U8, {0})));
  DSV4_EXPECT_OK(unswizzle_scales_128x4(make_tensor(dst, DType::U8, {0}), make_tensor(src, DType::U8, {0, 4})));
  EXPECT_EQ(dst[0], 9);
  EXPECT_EQ(src[0], 1);
}

}  // namespace
}  // namespace dsv4::test
