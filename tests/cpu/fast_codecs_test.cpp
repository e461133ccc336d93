// The CUDA kernels' branch-free e2m1 encoder (src/cuda/common/fast_codecs.h) against the reference
// codec num::e2m1_from_float: every float of the binades where e2m1 codes change (|x| in
// [2^-7, 2^9), both signs), every 61st bit pattern elsewhere, and the specials. (All 2^32 patterns
// were also checked once: 0 mismatches; too slow for every run.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

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

}  // namespace
}  // namespace dsv4
