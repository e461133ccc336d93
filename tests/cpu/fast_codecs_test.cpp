// The CUDA kernels' exact shortcuts (src/cuda/common/fast_codecs.h) against what they replace:
// the branch-free e2m1 encoder against num::e2m1_from_float over every float of the binades where
// e2m1 codes change (|x| in [2^-7, 2^9), both signs), every 61st bit pattern elsewhere, and the
// specials (all 2^32 patterns were also checked once: 0 mismatches; too slow for every run); the
// reciprocal-and-fma division against IEEE division on random and adversarial operand pairs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>

#include "cuda/common/fast_codecs.h"
#include "dsv4/numerics.h"

namespace dsv4 {
namespace {

::testing::AssertionResult same_code(uint32_t bits) {
  const float x = num::f32_from_bits(bits);
  const uint32_t fast = cuda::fast::e2m1_code(x), ref = num::e2m1_from_float(x);
  if (fast == ref) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "x bits 0x" << std::hex << bits << " (" << x << "): fast " << fast
                                       << " vs reference " << ref;
}

TEST(FastCodecs, E2m1EveryFloatOfTheActiveBinades) {
  for (uint32_t sign : {0u, 0x80000000u}) {
    for (uint32_t exp = 127 - 7; exp < 127 + 9; ++exp) {
      for (uint32_t mant = 0; mant < (1u << 23); ++mant) {
        const uint32_t bits = sign | (exp << 23) | mant;
        if (cuda::fast::e2m1_code(num::f32_from_bits(bits)) != num::e2m1_from_float(num::f32_from_bits(bits)))
          ASSERT_TRUE(same_code(bits));
      }
    }
  }
}

TEST(FastCodecs, E2m1SampledEverywhereAndSpecials) {
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 61) {
    const uint32_t bits = static_cast<uint32_t>(u);
    if (num::is_nan(num::f32_from_bits(bits))) continue;
    if (cuda::fast::e2m1_code(num::f32_from_bits(bits)) != num::e2m1_from_float(num::f32_from_bits(bits)))
      ASSERT_TRUE(same_code(bits));
  }
  for (uint32_t bits : {0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x007FFFFFu, 0x7F7FFFFFu, 0xFF7FFFFFu,
                        0x7F800000u, 0xFF800000u})
    EXPECT_TRUE(same_code(bits));
}

// Divisors over the whole exact range (significands random, all ones, or just below), quotients
// from 2^-14 to 2^12 (every quotient the codecs can tell apart), and dividends nudged by a few
// ulps so the quotient lands next to rounding boundaries. Fresh seed per run.
TEST(FastCodecs, DivisionMatchesIeee) {
  const uint64_t seed = std::random_device{}();
  std::mt19937_64 g(seed);
  int64_t checked = 0;
  for (int it = 0; it < 20000000; ++it) {
    const int mode = static_cast<int>(g() % 4);
    const int e = static_cast<int>(g() % 161) - 60;
    const uint32_t mant = mode == 0 ? 0x7FFFFFu : mode == 1 ? 0x7FFFFFu - static_cast<uint32_t>(g() % 16)
                                                            : static_cast<uint32_t>(g() & 0x7FFFFF);
    const float d = num::f32_from_bits(static_cast<uint32_t>(e + 127) << 23 | mant);
    const float y = 1.0f / d;
    const float t = std::ldexp(1.0f + static_cast<float>(g() % (1u << 23)) / 8388608.0f, static_cast<int>(g() % 27) - 14);
    const float a = num::f32_from_bits(num::f32_bits(t * d) + static_cast<uint32_t>(g() % 9) - 4u);
    if (!num::is_finite(a) || a <= 0.0f || !cuda::fast::div_exact_range(d, y, a)) continue;
    ++checked;
    const float ref = a / d, got = cuda::fast::div_nonneg(a, d, y);
    if (num::f32_bits(ref) != num::f32_bits(got))
      FAIL() << "seed " << seed << ": " << a << " / " << d << " = " << ref << ", fast gives " << got;
  }
  EXPECT_GT(checked, 19000000);
}

}  // namespace
}  // namespace dsv4
