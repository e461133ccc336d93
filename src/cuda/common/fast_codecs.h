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
DSV4_HD uint32_t e2m1_code(float x) {
  const float a = fabsf(x);
  const uint32_t n1 = num::f32_bits(a + 0x1p22f) - 0x4A800000u;
  const uint32_t n2 = num::f32_bits(a + 0x1p23f) - (0x4B000000u - 2u);
  const uint32_t n3 = num::f32_bits(a + 0x1p24f) - (0x4B800000u - 4u);
  uint32_t c = n1 < n2 ? n1 : n2;
  c = c < n3 ? c : n3;
  c = c < 7u ? c : 7u;
  return c | ((num::f32_bits(x) >> 28) & 0x8u);
}

}  // namespace dsv4::cuda::fast
