// Device helpers shared by the streaming kernels: 16-byte global accesses, the hardware fp8
// conversions, and bf16/NaN packing. Device code only (include from .cu / .cuh files).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "dsv4/numerics.h"

namespace dsv4::cuda::dev {

// A 16-byte load of data read exactly once: the non-coherent path, no L1 allocation, so the
// stream does not evict what other warps still need. Inputs never alias outputs (validated).
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}
// The same through L1: for threads that each read several adjacent 16-byte pieces, whose
// 32-byte sectors are shared by two loads of one thread.
__device__ __forceinline__ uint4 ld_cached16(const void* p) {
  uint4 v;
  asm("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 ld_stream8(const void* p) {
  uint2 v;
  asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}
__device__ __forceinline__ uint32_t ld_stream4(const void* p) {
  uint32_t v;
  asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}
__device__ __forceinline__ uint32_t ld_stream2(const void* p) {
  unsigned short v;
  asm("ld.global.nc.L1::no_allocate.u16 %0, [%1];" : "=h"(v) : "l"(p));
  return v;
}

__device__ __forceinline__ void st16(void* p, uint4 v) { *static_cast<uint4*>(p) = v; }

// e4m3 codes of (a, b) packed low byte first. cvt.rn.satfinite is round-to-nearest-even on the
// exact value with |x| beyond 448 (and +-inf) saturating to +-448: for every non-NaN input that
// is exactly num::e4m3_from_float. The quantizers never pass NaN (a non-finite block is zeroed).
__device__ __forceinline__ uint32_t e4m3x2(float a, float b) {
  unsigned short r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %2, %1;" : "=h"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ uint32_t e4m3x4(float a, float b, float c, float d) {
  return e4m3x2(a, b) | (e4m3x2(c, d) << 16);
}

// Two e4m3 codes (low byte first) to f32, exactly: every e4m3 value, subnormals included, is an
// f16, and f16 widens to f32 exactly. A NaN code gives a NaN (payload unspecified).
__device__ __forceinline__ float2 e4m3x2_to_float2(uint32_t two_codes) {
  uint32_t h2;
  const unsigned short in = static_cast<unsigned short>(two_codes);
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(in));
  float lo, hi;
  asm("cvt.f32.f16 %0, %1;" : "=f"(lo) : "h"(static_cast<unsigned short>(h2 & 0xFFFF)));
  asm("cvt.f32.f16 %0, %1;" : "=f"(hi) : "h"(static_cast<unsigned short>(h2 >> 16)));
  return make_float2(lo, hi);
}

// e2m1 magnitude+sign code (low nibble) to f32, exactly: the 3 magnitude bits placed at the top
// of an f32's exponent/mantissa fields read as 2^-126 times the e2m1 value (code 1 lands on the
// f32 subnormal 2^-127), so one exact multiply by 2^126 rebiases. Needs denormals kept (dsv4 never
// builds with flush-to-zero).
__device__ __forceinline__ float e2m1_to_float(uint32_t nibble) {
  const uint32_t bits = ((nibble & 0x8u) << 28) | ((nibble & 0x7u) << 22);
  return __uint_as_float(bits) * 0x1p126f;
}

// Two f32 to a bf16 pair (low half first), round to nearest even: the hardware conversion, equal
// to num::bf16_from_float for every non-NaN value (subnormals kept). A NaN comes out as some bf16
// NaN: dsv4 outputs promise NaN there, not a payload.
__device__ __forceinline__ uint32_t bf16x2_rn(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %2, %1;" : "=r"(r) : "f"(lo), "f"(hi));
  return r;
}

// Magnitude bits of the two bf16 in a packed word, widened to f32 bit patterns: comparing these
// as unsigned integers orders |x|, with every NaN above +inf (0x7F800000).
__device__ __forceinline__ uint32_t bf16x2_absmax_bits(uint32_t w) {
  const uint32_t lo = (w << 16) & 0x7FFF0000u, hi = w & 0x7FFF0000u;
  return max(lo, hi);
}

// Running max of bf16 magnitudes, two 16-bit lanes at a time (one sm_90 instruction per word):
// acc = max(acc, |w|) lane-wise, as unsigned 16-bit integers (NaN above inf, as above).
__device__ __forceinline__ uint32_t max_u16x2(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("max.u16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ uint32_t bf16x2_absmax_acc(uint32_t acc, uint32_t w) {
  return max_u16x2(acc, w & 0x7FFF7FFFu);
}
// The same over finite values only: a lane holding inf/NaN (magnitude >= 0x7F80) counts as 0.
// Adding 0x80 carries into the lane's bit 15 exactly for those magnitudes.
__device__ __forceinline__ uint32_t bf16x2_finite_absmax_acc(uint32_t acc, uint32_t w) {
  const uint32_t mag = w & 0x7FFF7FFFu;
  const uint32_t non_finite = ((mag + 0x00800080u) & 0x80008000u) >> 15;  // 1 in each such lane
  return max_u16x2(acc, mag & ~(non_finite * 0xFFFFu));
}
// The two lanes of an accumulator as one f32 magnitude bit pattern.
__device__ __forceinline__ uint32_t bf16x2_acc_to_f32_bits(uint32_t acc) {
  return max(acc << 16, acc & 0xFFFF0000u);
}

}  // namespace dsv4::cuda::dev
