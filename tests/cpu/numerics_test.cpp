// The software codecs of dsv4/numerics.h against brute-force oracles: every code point, the
// midpoints between adjacent codes (ties go to the even code), saturation, NaN, +-inf, +-0,
// subnormals and many random floats. Also the two forms of the ue8m0 exponent rule (the GPU's exact
// num::ceil_log2_ratio and the reference's naive double log2) against a brute-force search.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "common/test_util.h"
#include "cpu/ref_numerics.h"
#include "cpu/ref_test_util.h"
#include "dsv4/numerics.h"

namespace dsv4::test {
namespace {

// Nearest of the codes 0..max_code (magnitudes mag(c), increasing) to a >= 0; ties to the even
// code; above the largest finite -> the largest finite (saturation).
template <class Mag>
int nearest_code(double a, Mag mag, int max_code) {
  // Far above the grid the double differences below would round to equal values.
  if (a >= mag(max_code)) return max_code;
  int best = 0;
  double best_d = std::fabs(mag(0) - a);
  for (int c = 1; c <= max_code; ++c) {
    const double d = std::fabs(mag(c) - a);
    if (d < best_d || (d == best_d && (c & 1) == 0 && (best & 1) == 1)) {
      best = c;
      best_d = d;
    }
  }
  return best;
}

double e5m2_mag(int c) {
  const int e = (c >> 2) & 0x1F, m = c & 3;
  return e == 0 ? std::ldexp(m, -16) : std::ldexp(4 + m, e - 17);
}

uint8_t ref_e4m3(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  if (std::isnan(x)) return sign | 0x7F;
  if (std::isinf(x)) return sign | 0x7E;
  return sign | static_cast<uint8_t>(nearest_code(std::fabs(static_cast<double>(x)), e4m3_mag, 0x7E));
}
uint8_t ref_e5m2(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  if (std::isnan(x)) return sign | 0x7E;
  if (std::isinf(x)) return sign | 0x7B;
  return sign | static_cast<uint8_t>(nearest_code(std::fabs(static_cast<double>(x)), e5m2_mag, 0x7B));
}
uint8_t ref_e2m1(float x) {
  if (std::isnan(x)) return 0;
  const uint8_t sign = std::signbit(x) ? 0x8 : 0;
  if (std::isinf(x)) return sign | 0x7;
  return sign | static_cast<uint8_t>(nearest_code(std::fabs(static_cast<double>(x)), e2m1_mag, 7));
}

// bf16 magnitude code h (0..0x7F80) as a double; 0x7F80 stands for 2^128, the value IEEE rounding
// compares against to decide overflow to infinity.
double bf16_mag(uint32_t h) {
  if (h >= 0x7F80) return std::ldexp(1.0, 128);
  return static_cast<double>(num::f32_from_bits(h << 16));
}
// Round-to-nearest-even of the exact value of finite x to bf16, from the two candidates around it.
uint16_t ref_bf16(float x) {
  const uint32_t u = num::f32_bits(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  if (std::isinf(x)) return sign | 0x7F80;
  const double a = std::fabs(static_cast<double>(x));
  const uint32_t lo = (u & 0x7FFFFFFF) >> 16, hi = lo + 1;
  const double dlo = a - bf16_mag(lo), dhi = bf16_mag(hi) - a;
  uint32_t pick = dlo < dhi ? lo : (dhi < dlo ? hi : ((lo & 1) ? hi : lo));
  return sign | static_cast<uint16_t>(pick);
}

// Test floats: specials, f32 subnormals, random bit patterns, log-uniform magnitudes over
// [2^lo_exp, 2^hi_exp], and every midpoint between adjacent grid values (with its neighbours one
// f32 ulp away) for the given magnitude table.
template <class Mag>
std::vector<float> probe_values(std::mt19937_64& g, Mag mag, int max_code, int lo_exp, int hi_exp) {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(),
                          -std::numeric_limits<float>::quiet_NaN(),
                          num::f32_from_bits(0x7F800001u),  // signalling-pattern NaN
                          num::f32_from_bits(0xFFC12345u),
                          FLT_MAX,
                          -FLT_MAX,
                          FLT_MIN,
                          FLT_TRUE_MIN,
                          -FLT_TRUE_MIN,
                          num::f32_from_bits(0x007FFFFFu),
                          1e30f,
                          -1e30f};
  for (int c = 0; c <= max_code; ++c) {
    const float val = static_cast<float>(mag(c));
    for (float s : {1.0f, -1.0f}) {
      v.push_back(s * val);
      v.push_back(s * std::nextafter(val, 0.0f));
      v.push_back(s * std::nextafter(val, INFINITY));
    }
  }
  // The midpoint past the largest finite (it still saturates), and the midpoints between codes.
  for (int c = 0; c <= max_code; ++c) {
    const double next = c < max_code ? mag(c + 1) : 2 * mag(c) - mag(c - 1);
    const float mid = static_cast<float>((mag(c) + next) / 2);  // exact: a few mantissa bits
    EXPECT_EQ(static_cast<double>(mid), (mag(c) + next) / 2);
    for (float s : {1.0f, -1.0f}) {
      v.push_back(s * mid);
      v.push_back(s * std::nextafter(mid, 0.0f));
      v.push_back(s * std::nextafter(mid, INFINITY));
    }
  }
  std::uniform_int_distribution<uint32_t> bits;
  std::uniform_real_distribution<double> ex(lo_exp, hi_exp);
  for (int i = 0; i < 100000; ++i) v.push_back(num::f32_from_bits(bits(g)));
  for (int i = 0; i < 200000; ++i) {
    const float m = static_cast<float>(std::exp2(ex(g)));
    v.push_back((g() & 1) ? -m : m);
  }
  return v;
}

TEST(Numerics, E4M3EveryCodeRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    const float f = num::e4m3_to_float(static_cast<uint8_t>(c));
    if ((c & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(f)) << c;
    } else {
      EXPECT_EQ(static_cast<double>(std::fabs(f)), e4m3_mag(c & 0x7F)) << c;
      EXPECT_EQ(std::signbit(f), (c & 0x80) != 0) << c;
    }
    EXPECT_EQ(num::e4m3_from_float(f), c) << c;
  }
  EXPECT_EQ(num::e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(num::e4m3_to_float(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(num::e4m3_to_float(0x08), std::ldexp(1.0f, -6));
}

TEST(Numerics, E4M3EncodeMatchesBruteForce) {
  auto g = rng_for_test();
  const auto vals = probe_values(g, e4m3_mag, 0x7E, -14, 11);
  int bad = 0;
  for (float x : vals) {
    const uint8_t got = num::e4m3_from_float(x), want = ref_e4m3(x);
    if (got != want && ++bad <= 10) ADD_FAILURE() << "e4m3(" << x << " bits " << std::hex << num::f32_bits(x)
                                                  << ") = " << int(got) << ", want " << int(want);
  }
  EXPECT_EQ(bad, 0);
  // Spot checks the brute force itself must honour.
  EXPECT_EQ(num::e4m3_from_float(464.0f), 0x7E);       // the tie past 448 saturates
  EXPECT_EQ(num::e4m3_from_float(1e9f), 0x7E);
  EXPECT_EQ(num::e4m3_from_float(-INFINITY), 0xFE);
  EXPECT_EQ(num::e4m3_from_float(1.0625f), 0x38);      // tie 1 / 1.125 -> even (1.0)
  EXPECT_EQ(num::e4m3_from_float(1.1875f), 0x3A);      // tie 1.125 / 1.25 -> even (1.25)
  EXPECT_EQ(num::e4m3_from_float(std::ldexp(1.0f, -10)), 0x00);  // half the smallest subnormal -> 0
  EXPECT_EQ(num::e4m3_from_float(std::ldexp(3.0f, -10)), 0x02);  // 1.5 subnormal steps -> even (2)
  EXPECT_EQ(num::e4m3_from_float(-0.0f), 0x80);
}

TEST(Numerics, E5M2EveryCodeAndBruteForce) {
  for (int c = 0; c < 256; ++c) {
    const float f = num::e5m2_to_float(static_cast<uint8_t>(c));
    const int mag = c & 0x7F;
    if (mag == 0x7C) {
      EXPECT_TRUE(std::isinf(f)) << c;
      EXPECT_EQ(num::e5m2_from_float(f), (c & 0x80) | 0x7B) << c;  // satfinite
    } else if (mag > 0x7C) {
      EXPECT_TRUE(std::isnan(f)) << c;
      EXPECT_EQ(num::e5m2_from_float(f) & 0x7F, 0x7E) << c;
    } else {
      EXPECT_EQ(static_cast<double>(std::fabs(f)), e5m2_mag(mag)) << c;
      EXPECT_EQ(num::e5m2_from_float(f), c) << c;
    }
  }
  auto g = rng_for_test();
  const auto vals = probe_values(g, e5m2_mag, 0x7B, -18, 17);
  int bad = 0;
  for (float x : vals) {
    const uint8_t got = num::e5m2_from_float(x), want = ref_e5m2(x);
    if (got != want && ++bad <= 10) ADD_FAILURE() << "e5m2(" << x << ") = " << int(got) << ", want " << int(want);
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(num::e5m2_to_float(0x7B), 57344.0f);
}

TEST(Numerics, E2M1EveryCodeAndBruteForce) {
  for (int c = 0; c < 16; ++c) {
    const float f = num::e2m1_to_float(static_cast<uint8_t>(c));
    EXPECT_EQ(static_cast<double>(std::fabs(f)), e2m1_mag(c)) << c;
    EXPECT_EQ(std::signbit(f), (c & 8) != 0) << c;
    EXPECT_EQ(num::e2m1_from_float(f), c) << c;
  }
  auto g = rng_for_test();
  const auto vals = probe_values(g, e2m1_mag, 7, -4, 4);
  int bad = 0;
  for (float x : vals) {
    const uint8_t got = num::e2m1_from_float(x), want = ref_e2m1(x);
    if (got != want && ++bad <= 10) ADD_FAILURE() << "e2m1(" << x << ") = " << int(got) << ", want " << int(want);
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(num::e2m1_from_float(0.25f), 0);   // tie 0 / 0.5 -> 0
  EXPECT_EQ(num::e2m1_from_float(0.75f), 2);   // tie 0.5 / 1 -> 1
  EXPECT_EQ(num::e2m1_from_float(2.5f), 4);    // tie 2 / 3 -> 2
  EXPECT_EQ(num::e2m1_from_float(3.5f), 6);    // tie 3 / 4 -> 4
  EXPECT_EQ(num::e2m1_from_float(5.0f), 6);    // tie 4 / 6 -> 4
  EXPECT_EQ(num::e2m1_from_float(7.0f), 7);    // saturates
  EXPECT_EQ(num::e2m1_from_float(-INFINITY), 0xF);
  EXPECT_EQ(num::e2m1_from_float(NAN), 0);
}

TEST(Numerics, Bf16EveryCodeAndBruteForce) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = num::bf16_to_float(static_cast<uint16_t>(h));
    EXPECT_EQ(num::f32_bits(f), h << 16);
    const uint16_t back = num::bf16_from_float(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(num::bf16_to_float(back))) << h;
      EXPECT_EQ(back & 0x8000, h & 0x8000) << h;
      EXPECT_NE(back & 0x40, 0) << h;  // quiet
    } else {
      ASSERT_EQ(back, h) << h;
    }
  }
  auto g = rng_for_test();
  // Midpoints of one binade, [1, 2); the random ties below cover every exponent.
  std::vector<float> vals = probe_values(g, [](int c) { return bf16_mag(0x3F80u + static_cast<uint32_t>(c)); },
                                         0x7E, -140, 127);
  // Exact ties: the f32 halfway between two adjacent bf16 values, over every exponent.
  for (int i = 0; i < 200000; ++i) {
    const uint32_t t = static_cast<uint32_t>(g()) & 0xFFFF;
    if (((t >> 7) & 0xFF) == 0xFF) continue;
    vals.push_back(num::f32_from_bits((t << 16) | 0x8000u));
    vals.push_back(num::f32_from_bits((t << 16) | 0x7FFFu));
    vals.push_back(num::f32_from_bits((t << 16) | 0x8001u));
  }
  vals.push_back(num::f32_from_bits(0x7F7F8000u));  // tie between the largest finite and 2^128 -> inf
  vals.push_back(num::f32_from_bits(0x7F7F7FFFu));  // just below: the largest finite
  int bad = 0;
  for (float x : vals) {
    if (std::isnan(x)) {
      const uint16_t b = num::bf16_from_float(x);
      EXPECT_TRUE(std::isnan(num::bf16_to_float(b)));
      EXPECT_EQ(b & 0x8000, (num::f32_bits(x) >> 16) & 0x8000);
      continue;
    }
    const uint16_t got = num::bf16_from_float(x), want = ref_bf16(x);
    if (got != want && ++bad <= 10)
      ADD_FAILURE() << "bf16(" << x << " bits " << std::hex << num::f32_bits(x) << ") = " << got << ", want " << want;
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(num::bf16_from_float(num::f32_from_bits(0x7F7F8000u)), 0x7F80);
  EXPECT_EQ(num::bf16_from_float(num::f32_from_bits(0x3F808000u)), 0x3F80);  // tie -> even
  EXPECT_EQ(num::bf16_from_float(num::f32_from_bits(0x3F818000u)), 0x3F82);  // tie -> even (up)
}

TEST(Numerics, Ue8m0AndExp2i) {
  for (int e = 0; e < 255; ++e) {
    EXPECT_EQ(static_cast<double>(num::ue8m0_to_float(static_cast<uint8_t>(e))), std::ldexp(1.0, e - 127)) << e;
    EXPECT_EQ(num::ue8m0_from_exp(e - 127), e);
  }
  EXPECT_TRUE(std::isnan(num::ue8m0_to_float(0xFF)));
  EXPECT_EQ(num::ue8m0_from_exp(-500), 0);
  EXPECT_EQ(num::ue8m0_from_exp(500), 254);
  for (int e = -149; e <= 127; ++e) EXPECT_EQ(static_cast<double>(num::exp2i(e)), std::ldexp(1.0, e)) << e;
}

// Smallest e >= min_e with qmax * 2^e >= a, by search (the definition of both rules).
int brute_pow2_exponent(float a, float qmax, int min_e) {
  int e = min_e;
  while (std::ldexp(static_cast<double>(qmax), e) < static_cast<double>(a)) ++e;
  return e;
}

TEST(Numerics, CeilLog2RatioAgreesWithNaiveReferenceRule) {
  auto g = rng_for_test();
  struct Rule {
    float qmax;
    int min_e;
  };
  const Rule rules[] = {{6.0f, cpu::kMXFP4MinExp}, {448.0f, cpu::kFP8MinExp}, {448.0f, cpu::kModel1MinExp}};
  std::vector<float> as = {0.0f, FLT_TRUE_MIN, FLT_MIN, num::f32_from_bits(0x007FFFFFu), FLT_MAX, 1e-4f, 448.0f,
                           6.0f, 6.0f * std::ldexp(1.0f, -126), 1e-4f / 448.0f};
  // Every exact qmax * 2^k and its f32 neighbours: where the ceiling changes.
  for (float q : {6.0f, 448.0f}) {
    for (int k = -149; k <= 127; ++k) {
      const double t = std::ldexp(static_cast<double>(q), k);
      if (t > FLT_MAX || t < FLT_TRUE_MIN) continue;
      const float f = static_cast<float>(t);
      as.insert(as.end(), {f, std::nextafter(f, 0.0f), std::nextafter(f, INFINITY)});
    }
  }
  std::uniform_int_distribution<uint32_t> bits(0, 0x7F7FFFFFu);  // all finite non-negative floats
  for (int i = 0; i < 300000; ++i) as.push_back(num::f32_from_bits(bits(g)));
  std::uniform_real_distribution<double> ex(-30, 20);
  for (int i = 0; i < 300000; ++i) as.push_back(static_cast<float>(std::exp2(ex(g))));

  int bad = 0;
  for (const Rule& r : rules) {
    for (float a : as) {
      if (!std::isfinite(a)) continue;
      const int brute = brute_pow2_exponent(a, r.qmax, r.min_e);
      const int naive = cpu::ref_pow2_exponent(a, r.qmax, r.min_e);
      const int exact = num::ceil_log2_ratio(a, r.qmax, r.min_e);
      if ((naive != brute || exact != brute) && ++bad <= 10)
        ADD_FAILURE() << "a=" << a << " (bits " << std::hex << num::f32_bits(a) << std::dec << ") qmax=" << r.qmax
                      << " min_e=" << r.min_e << ": brute " << brute << ", ref " << naive << ", ceil_log2_ratio "
                      << exact;
    }
  }
  EXPECT_EQ(bad, 0);
  // The floors documented in ops/quant.h and ops/kv_cache.h.
  EXPECT_EQ(cpu::ref_pow2_exponent(0.0f, 448.0f, cpu::kFP8MinExp), -22);
  EXPECT_EQ(static_cast<int>(std::ceil(std::log2(1e-4 / 448))), cpu::kFP8MinExp);
  EXPECT_EQ(static_cast<int>(std::ceil(std::log2(1e-4))), cpu::kModel1MinExp);
  EXPECT_EQ(cpu::ref_pow2_exponent(448.0f, 448.0f, -22), 0);
  EXPECT_EQ(cpu::ref_pow2_exponent(std::nextafter(448.0f, 1e9f), 448.0f, -22), 1);
  EXPECT_EQ(cpu::ref_pow2_exponent(FLT_MAX, 6.0f, -126), 126);
}

}  // namespace
}  // namespace dsv4::test
