// Software codecs for the number formats dsv4 handles (spec DSV4.md section 3), usable on the host
// and in CUDA device code. Host-only header: compiles without CUDA; under nvcc the functions are
// __host__ __device__. Rounding is to nearest, ties to even, on the exact value.
//
// Conventions the quantizers rely on:
//  - e4m3 / e5m2 encode "satfinite": |x| beyond the largest finite (and +-inf) -> +-max finite;
//    NaN -> 0x7F (e4m3) / 0x7E (e5m2) with the sign of x. This matches PTX cvt.rn.satfinite.
//  - e2m1 has no inf or NaN: |x| >= 6 (and inf) -> +-6, NaN -> 0. Block quantizers never feed it
//    NaN: a block holding a non-finite value gets a NaN scale instead (see ops/quant.h).
//  - ue8m0 byte e means 2^(e-127); 0xFF is NaN.
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>

#if defined(__CUDACC__)
#define DSV4_HD __host__ __device__ __forceinline__
#else
#define DSV4_HD inline
#endif

namespace dsv4::num {

DSV4_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
DSV4_HD float f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
DSV4_HD bool is_finite(float f) { return (f32_bits(f) & 0x7F800000u) != 0x7F800000u; }
DSV4_HD bool is_nan(float f) { return (f32_bits(f) & 0x7FFFFFFFu) > 0x7F800000u; }

// 2^e for e in [-149, 127], built from bits so no library call or rounding is involved.
DSV4_HD float exp2i(int e) {
  if (e >= -126) return f32_from_bits(static_cast<uint32_t>(e + 127) << 23);
  return f32_from_bits(1u << (e + 149));  // subnormal powers of two
}

DSV4_HD float round_half_even(float v) {
#if defined(__CUDA_ARCH__)
  return rintf(v);
#else
  return std::nearbyint(v);  // the default rounding mode is to-nearest-even; dsv4 never changes it
#endif
}

// Shared core of the minifloat encoders: M mantissa bits, normals from 2^MinExp, largest finite
// MaxFinite (whose code is MaxCode). Returns the unsigned code; the caller adds the sign.
// With E = max(floor(log2 a), MinExp), q = rne(a * 2^(M - E)) lies in [0, 2^(M+1)] and the code is
// ((E - MinExp) << M) + q: this one formula covers subnormals, normals and the carry into the next
// binade when q rounds up to 2^(M+1).
template <int M, int MinExp>
DSV4_HD uint32_t encode_minifloat_magnitude(float a) {
  int e = static_cast<int>((f32_bits(a) >> 23) & 0xFF) - 127;
  if (e < MinExp) e = MinExp;
  const float q = round_half_even(a * exp2i(M - e));
  return (static_cast<uint32_t>(e - MinExp) << M) + static_cast<uint32_t>(q);
}

// ---- e4m3 (float8_e4m3fn) ----
DSV4_HD uint8_t e4m3_from_float(float x) {
  const uint32_t sign = (f32_bits(x) >> 24) & 0x80u;
  if (is_nan(x)) return static_cast<uint8_t>(sign | 0x7F);
  const float a = fabsf(x);
  if (a >= 448.0f) return static_cast<uint8_t>(sign | 0x7E);
  return static_cast<uint8_t>(sign | encode_minifloat_magnitude<3, -6>(a));
}
DSV4_HD float e4m3_to_float(uint8_t c) {
  const int e = (c >> 3) & 0xF, m = c & 7;
  float v;
  if (e == 15 && m == 7) v = f32_from_bits(0x7FC00000u);
  else if (e == 0) v = static_cast<float>(m) * exp2i(-9);
  else v = static_cast<float>(8 + m) * exp2i(e - 10);
  return (c & 0x80) ? -v : v;
}

// ---- e5m2 (float8_e5m2) ----
DSV4_HD uint8_t e5m2_from_float(float x) {
  const uint32_t sign = (f32_bits(x) >> 24) & 0x80u;
  if (is_nan(x)) return static_cast<uint8_t>(sign | 0x7E);
  const float a = fabsf(x);
  if (a >= 57344.0f) return static_cast<uint8_t>(sign | 0x7B);
  return static_cast<uint8_t>(sign | encode_minifloat_magnitude<2, -14>(a));
}
DSV4_HD float e5m2_to_float(uint8_t c) {
  const int e = (c >> 2) & 0x1F, m = c & 3;
  float v;
  if (e == 31) v = m ? f32_from_bits(0x7FC00000u) : f32_from_bits(0x7F800000u);
  else if (e == 0) v = static_cast<float>(m) * exp2i(-16);
  else v = static_cast<float>(4 + m) * exp2i(e - 17);
  return (c & 0x80) ? -v : v;
}

// ---- e2m1 (fp4): a 4-bit code in the low nibble ----
DSV4_HD uint8_t e2m1_from_float(float x) {
  if (is_nan(x)) return 0;
  const uint32_t sign = (f32_bits(x) >> 28) & 0x8u;
  const float a = fabsf(x);
  if (a >= 6.0f) return static_cast<uint8_t>(sign | 0x7);
  return static_cast<uint8_t>(sign | encode_minifloat_magnitude<1, 0>(a));
}
DSV4_HD float e2m1_to_float(uint8_t c) {
  const int e = (c >> 1) & 3, m = c & 1;
  const float v = e == 0 ? 0.5f * static_cast<float>(m) : static_cast<float>(2 + m) * exp2i(e - 2);
  return (c & 0x8) ? -v : v;
}

// ---- ue8m0 ----
DSV4_HD float ue8m0_to_float(uint8_t e) {
  return e == 0xFF ? f32_from_bits(0x7FC00000u) : exp2i(static_cast<int>(e) - 127);
}

// Smallest e with qmax * 2^e >= a, for finite a >= 0 and a normal power-of-two-times-mantissa
// qmax; exact (no rounded division). Returns min_e when that is larger (also for a == 0).
DSV4_HD int ceil_log2_ratio(float a, float qmax, int min_e) {
  const uint32_t ab = f32_bits(a), qb = f32_bits(qmax);
  const int ea = static_cast<int>((ab >> 23) & 0xFF);
  if (ea == 0) return min_e;  // zero or f32-subnormal: below every floor dsv4 uses
  const int eq = static_cast<int>((qb >> 23) & 0xFF);
  int e = ea - eq + ((ab & 0x7FFFFF) > (qb & 0x7FFFFF) ? 1 : 0);
  return e < min_e ? min_e : e;
}
// The ue8m0 byte of 2^e, e clamped to [-127, 127].
DSV4_HD uint8_t ue8m0_from_exp(int e) {
  e = e < -127 ? -127 : (e > 127 ? 127 : e);
  return static_cast<uint8_t>(e + 127);
}

// ---- bf16 ----
DSV4_HD uint16_t bf16_from_float(float x) {
  const uint32_t u = f32_bits(x);
  if (is_nan(x)) return static_cast<uint16_t>((u >> 16) | 0x40);  // keep sign, force quiet
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
DSV4_HD float bf16_to_float(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }

}  // namespace dsv4::num
