// Branch-free forms of the num:: element encoders for the streaming kernels, each equal to its
// num:: counterpart for every non-NaN input (the quantizers never pass NaN: a non-finite block is
// zeroed before encoding). Host and device, so CPU tests can hold them against num:: over whole
// binades. Host-only header (no CUDA includes).
#pragma once
#include <cstdint>

#include "dsv4/numerics.h"

namespace dsv4::cuda::fast {

// e2m1 code (sign in bit 3) of x, == num::e2m1_from_float(x) for every non-NaN x.
//
// The e2m1 grid is 0.5-spaced on [0, 2], 1-spaced on [2, 4], 2-spaced on [4, 6]. Adding 2^22,
// 2^23 or 2^24 to a = |x| rounds a (once, to nearest even) onto the 0.5, 1 or 2 grid, and the
// sum's bit pattern minus the constant's counts grid steps: n1 = rne(2a), n2 = rne(a) + 2,
// n3 = rne(a/2) + 4 are the codes a would get in each binade range. On [0, 2] n1 is the smallest
// (2a <= a + 2 <= a/2 + 4), on [2, 4] n2, on [4, inf) n3, so the code is min(n1, n2, n3, 7),
// ties to even included (an even grid count is an even mantissa). Infinity gives 7, like num::.
DSV4_HD uint32_t e2m1_magnitude_code(float a) {  // a >= 0 (or -0)
  const uint32_t n1 = num::f32_bits(a + 0x1p22f) - 0x4A800000u;
  const uint32_t n2 = num::f32_bits(a + 0x1p23f) - (0x4B000000u - 2u);
  const uint32_t n3 = num::f32_bits(a + 0x1p24f) - (0x4B800000u - 4u);
  // Clamp first: each step is then one fused add-and-min on sm_90.
  uint32_t c = n1 < 7u ? n1 : 7u;
  c = n2 < c ? n2 : c;
  return n3 < c ? n3 : c;
}
DSV4_HD uint32_t e2m1_code(float x) { return e2m1_magnitude_code(fabsf(x)) | ((num::f32_bits(x) >> 28) & 0x8u); }

// IEEE division a / d for a >= 0 without a divide instruction per element: with y = RN(1/d)
// (once per scale block), q0 = RN(a*y) is within 1.5 ulp of a/d, one fma correction makes it
// faithful, and a second gives RN(a/d) exactly (Markstein's theorem: y within half an ulp of 1/d,
// q faithful, r = a - d*q exact by fma). The preconditions (no overflow, r never rounded) hold
// when div_exact_range(d, y, amax) is true for the block; elsewhere callers divide. Quotients below
// 2^-13 may be off in the last bit, but every one of them encodes as 0 in e4m3 and e2m1.
DSV4_HD float div_nonneg(float a, float d, float y) {
  const float q0 = a * y;
  const float q1 = fmaf(fmaf(-q0, d, a), y, q0);
  return fmaf(fmaf(-q1, d, a), y, q1);
}
// d in [2^-60, 2^100] keeps a - d*q for quotients >= 2^-13 on a grid of 2^-149 (exact in f32) and
// the block's quotients (<= amax * y) far from overflow.
DSV4_HD bool div_exact_range(float d, float y, float amax) {
  return d >= 0x1p-60f && d <= 0x1p100f && amax * y <= 0x1p100f;
}

}  // namespace dsv4::cuda::fast
