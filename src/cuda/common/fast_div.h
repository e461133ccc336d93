// Division by a run-time constant with one multiply-high and a shift (Granlund & Montgomery 1994,
// "Division by invariant integers using multiplication", round-up variant): the streaming kernels
// turn a flat chunk index into (row, column) once per 16-byte chunk, where a hardware 32-bit
// division would cost more than the arithmetic on the data. Host and device.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define DSV4_FD_HD __host__ __device__ __forceinline__
#else
#define DSV4_FD_HD inline
#endif

namespace dsv4::cuda {

struct FastDiv {
  uint32_t divisor = 1;
  uint32_t multiplier = 0;
  uint32_t shift = 0;

  FastDiv() = default;
  // d in [1, 2^31]; exact for every 32-bit numerator.
  explicit FastDiv(uint32_t d) : divisor(d) {
    while ((uint64_t{1} << shift) < d) ++shift;  // shift = ceil(log2 d)
    multiplier = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }

  DSV4_FD_HD uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t hi = __umulhi(n, multiplier);
#else
    const uint32_t hi = static_cast<uint32_t>((static_cast<uint64_t>(n) * multiplier) >> 32);
#endif
    return static_cast<uint32_t>((static_cast<uint64_t>(hi) + n) >> shift);
  }
};

}  // namespace dsv4::cuda
