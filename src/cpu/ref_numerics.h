// Scale rules of the CPU reference backend, exposed so the tests can hold them against the codecs
// the CUDA kernels use (num::ceil_log2_ratio). Internal header: not part of the public API.
#pragma once

namespace dsv4::cpu {

// The power-of-two exponent every ue8m0 scale rule uses, computed naively in double:
//   max(ceil(log2((double)amax / qmax)), min_e)
// for finite amax >= 0 (amax == 0 gives min_e). Deliberately independent of num::ceil_log2_ratio.
int ref_pow2_exponent(float amax, float qmax, int min_e);

// The floors of the ue8m0 rules (ops/quant.h, ops/kv_cache.h).
inline constexpr int kMXFP4MinExp = -126;  // max(amax, 6*2^-126) / 6 >= 2^-126
inline constexpr int kFP8MinExp = -22;     // ceil(log2(1e-4 / 448))
inline constexpr int kModel1MinExp = -13;  // ceil(log2(1e-4))

}  // namespace dsv4::cpu
