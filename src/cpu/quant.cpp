// CPU reference for quantize / dequantize / scale swizzle (include/dsv4/ops/quant.h).
//
// This file is the oracle the CUDA kernels are held to bit for bit, so the arithmetic below is the
// contract. Each element is decoded with the software codecs of dsv4/numerics.h (bf16 -> f32
// exactly); a "scale block" is quant_block_m(f) rows x quant_block_k(f) columns (the last row block
// of FP8_128x128 may be short); amax is max |x| over the block in f32.
//
// Non-finite blocks (every format): a block holding a NaN or +-inf gets the NaN scale (ue8m0 0xFF,
// e4m3 0x7F, f32 0x7FC00000) and all its element codes are 0. This takes precedence over every rule
// below (also over NVFP4's g == 0 rule).
//
// Power-of-two (ue8m0) scales, e = the exponent, byte = e + 127, computed naively in double:
//   MXFP4:                      e = max(ceil(log2((double)amax / 6)),   -126)
//   MXFP8, FP8_1x128/128x128:   e = max(ceil(log2((double)amax / 448)), -22)   (-22 = ceil(log2(1e-4/448)))
//   (KV MODEL1, kv_cache.cpp:   e = max(ceil(log2((double)amax / 448)), -13))
// and element code = enc((float)((double)x / 2^e)). The division by a power of two is exact in
// double; the cast to f32 is one round-to-nearest-even, the same value as x * 2^-e in f32.
// num::ceil_log2_ratio is the exact bit-level form of the same rule (the GPU's); the tests hold the
// two against each other.
//
// FP8 with f32 scales (DeepGEMM's per-token cast): the stored scale s = std::max(amax, 1e-4f) / 448.0f
// and code = e4m3(x * r) with r = 448.0f / std::max(amax, 1e-4f) (f32: the reciprocal rounded once,
// then one rounded product per element; a product rounding above 448 saturates).
//
// NVFP4: g = the f32 global scale: with compute_global_scale, g = amax_finite / 2688.0f (f32) where
// amax_finite is max |x| over the finite elements of the whole tensor (0 if none) and g is written
// to global_scale; otherwise g is read from global_scale and must be finite and >= 0 (checked here,
// before anything is written). Per 16-element block:
//   g == 0                              -> scale code 0, element codes 0
//   s_code = e4m3(amax_b / (g * 6.0f))  (f32: the product first, then the division)
//   s = e4m3_to_float(s_code); if s * g == 0 (f32) -> scale code 0, element codes 0
//   else code = e2m1(x * r), r = min(1.0f / (s * g), FLT_MAX)  (f32: s * g rounded, its reciprocal
//   rounded, then one rounded product per element; TRT-LLM's NVFP4 quantizer multiplies by the same
//   reciprocal. The FLT_MAX cap only matters when s * g < 2^-128: a zero element stays 0)
//
// Dequantize: v = dec(code) * dec(scale) in f32 (NVFP4: (e2m1 * s) * g, in that order), then
// bf16_from_float when out is bf16. A NaN scale gives NaN outputs.
//
// Swizzle 128x4 (spec 3.7): dst[(m/128)*ceil(S/4)*512 + (k/4)*512 + (m%32)*16 + ((m%128)/32)*4 + (k%4)]
// = src[m, k]; the padding (rows to 128, columns to 4) is written as 0. Unswizzle reads the same
// positions back and ignores the padding.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "backend/backends.h"
#include "cpu/ref_numerics.h"
#include "dsv4/numerics.h"

namespace dsv4::cpu {

int ref_pow2_exponent(float amax, float qmax, int min_e) {
  // log2(0) = -inf, so the clamp happens in double before the conversion to int.
  double e = std::ceil(std::log2(static_cast<double>(amax) / static_cast<double>(qmax)));
  if (!(e >= static_cast<double>(min_e))) e = min_e;
  return static_cast<int>(e);
}

namespace {

constexpr uint8_t kUe8m0NaN = 0xFF;
constexpr uint8_t kE4m3NaN = 0x7F;
constexpr uint32_t kF32QuietNaN = 0x7FC00000u;

// ---- element access through a 2-D view (strides in elements; e2m1 packed two a byte) ----

float load_wide(const TensorView& t, int64_t m, int64_t k) {
  const int64_t off = m * t.strides[0] + k * t.strides[1];
  if (t.dtype == DType::BF16) return num::bf16_to_float(t.ptr<const uint16_t>()[off]);
  return t.ptr<const float>()[off];
}

void store_wide(const TensorView& t, int64_t m, int64_t k, float v) {
  const int64_t off = m * t.strides[0] + k * t.strides[1];
  if (t.dtype == DType::BF16) t.ptr<uint16_t>()[off] = num::bf16_from_float(v);
  else t.ptr<float>()[off] = v;
}

// The code of element (m, k) of an e4m3 or e2m1 tensor.
uint8_t load_code(const TensorView& t, int64_t m, int64_t k) {
  const int64_t off = m * t.strides[0] + k * t.strides[1];
  const uint8_t* p = t.ptr<const uint8_t>();
  if (t.dtype == DType::E2M1) return (off & 1) ? (p[off >> 1] >> 4) : (p[off >> 1] & 0xF);
  return p[off];
}

void store_code(const TensorView& t, int64_t m, int64_t k, uint8_t c) {
  const int64_t off = m * t.strides[0] + k * t.strides[1];
  uint8_t* p = t.ptr<uint8_t>();
  if (t.dtype == DType::E2M1) {
    uint8_t& b = p[off >> 1];
    b = (off & 1) ? static_cast<uint8_t>((b & 0x0F) | (c << 4)) : static_cast<uint8_t>((b & 0xF0) | (c & 0xF));
  } else {
    p[off] = c;
  }
}

// One scale, either a one-byte code (ue8m0 / e4m3) or an f32.
struct Scale {
  uint8_t code = 0;
  float f32 = 0.0f;
};

void store_scale(const TensorView& t, int64_t i, int64_t j, const Scale& s) {
  const int64_t off = i * t.strides[0] + j * t.strides[1];
  if (t.dtype == DType::F32) t.ptr<float>()[off] = s.f32;
  else t.ptr<uint8_t>()[off] = s.code;
}

// The decoded value of scale (i, j).
float load_scale(const TensorView& t, int64_t i, int64_t j) {
  const int64_t off = i * t.strides[0] + j * t.strides[1];
  switch (t.dtype) {
    case DType::F32: return t.ptr<const float>()[off];
    case DType::E4M3: return num::e4m3_to_float(t.ptr<const uint8_t>()[off]);
    default: return num::ue8m0_to_float(t.ptr<const uint8_t>()[off]);
  }
}

float decode_value(QuantFormat f, uint8_t code) {
  return (f == QuantFormat::kMXFP4 || f == QuantFormat::kNVFP4) ? num::e2m1_to_float(code)
                                                                : num::e4m3_to_float(code);
}

// x * 2^-e rounded once to f32 (exact in double: a power-of-two division).
float scale_down_pow2(float x, int e) {
  return static_cast<float>(static_cast<double>(x) / std::ldexp(1.0, e));
}

// The rows and columns of scale block (bi, bj).
struct Block {
  int64_t m0, m1, k0, k1;
};

}  // namespace

Status quantize(const QuantizeParams& p) {
  const QuantFormat f = p.format;
  const TensorView& x = p.x;
  const int64_t M = x.shape[0], K = x.shape[1];
  const int bk = quant_block_k(f), bm = quant_block_m(f);
  const int64_t SM = (M + bm - 1) / bm, SK = K / bk;

  // NVFP4's global scale: the only data-dependent check, done before anything is written.
  float g = 0.0f;
  if (f == QuantFormat::kNVFP4) {
    if (p.compute_global_scale) {
      float amax = 0.0f;
      for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) {
          const float v = load_wide(x, m, k);
          if (num::is_finite(v)) amax = std::max(amax, std::fabs(v));
        }
      g = amax / 2688.0f;
    } else {
      g = *p.global_scale.ptr<const float>();
      if (!num::is_finite(g) || g < 0.0f) {
        char buf[48];
        std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(g));
        return {StatusCode::kInvalidArgument, std::string("quantize: argument 'global_scale' holds ") + buf +
                                                  "; NVFP4 needs a finite global scale >= 0 "
                                                  "(or set compute_global_scale)"};
      }
    }
  }

  for (int64_t bi = 0; bi < SM; ++bi) {
    for (int64_t bj = 0; bj < SK; ++bj) {
      const Block b{bi * bm, std::min<int64_t>(M, (bi + 1) * bm), bj * bk, (bj + 1) * bk};
      bool finite = true;
      float amax = 0.0f;
      for (int64_t m = b.m0; m < b.m1; ++m)
        for (int64_t k = b.k0; k < b.k1; ++k) {
          const float v = load_wide(x, m, k);
          if (!num::is_finite(v)) finite = false;
          else amax = std::max(amax, std::fabs(v));
        }

      Scale s;
      // How this block's elements are encoded; kZero: every code is 0 (NaN or zero scale).
      enum class Enc { kZero, kPow2E2M1, kPow2E4M3, kMulE4M3, kNvfp4 } enc = Enc::kZero;
      int e = 0;
      float multiplier = 0.0f;
      if (!finite) {
        s.code = (p.scales.dtype == DType::E4M3) ? kE4m3NaN : kUe8m0NaN;
        s.f32 = num::f32_from_bits(kF32QuietNaN);
      } else {
        switch (f) {
          case QuantFormat::kMXFP4:
            e = ref_pow2_exponent(amax, 6.0f, kMXFP4MinExp);
            s.code = num::ue8m0_from_exp(e);
            enc = Enc::kPow2E2M1;
            break;
          case QuantFormat::kNVFP4: {
            if (g == 0.0f) break;
            const uint8_t sc = num::e4m3_from_float(amax / (g * 6.0f));
            const float sg = num::e4m3_to_float(sc) * g;
            if (sg == 0.0f) break;
            s.code = sc;
            multiplier = std::min(1.0f / sg, std::numeric_limits<float>::max());
            enc = Enc::kNvfp4;
            break;
          }
          case QuantFormat::kMXFP8:
          case QuantFormat::kFP8_1x128:
          case QuantFormat::kFP8_128x128:
            if (p.scales.dtype == DType::F32) {
              s.f32 = std::max(amax, 1e-4f) / 448.0f;
              multiplier = 448.0f / std::max(amax, 1e-4f);
              enc = Enc::kMulE4M3;
            } else {
              e = ref_pow2_exponent(amax, 448.0f, kFP8MinExp);
              s.code = num::ue8m0_from_exp(e);
              enc = Enc::kPow2E4M3;
            }
            break;
        }
      }

      store_scale(p.scales, bi, bj, s);
      for (int64_t m = b.m0; m < b.m1; ++m)
        for (int64_t k = b.k0; k < b.k1; ++k) {
          const float v = load_wide(x, m, k);
          uint8_t c = 0;
          switch (enc) {
            case Enc::kZero: break;
            case Enc::kPow2E2M1: c = num::e2m1_from_float(scale_down_pow2(v, e)); break;
            case Enc::kPow2E4M3: c = num::e4m3_from_float(scale_down_pow2(v, e)); break;
            case Enc::kMulE4M3: c = num::e4m3_from_float(v * multiplier); break;
            case Enc::kNvfp4: c = num::e2m1_from_float(v * multiplier); break;
          }
          store_code(p.q, m, k, c);
        }
    }
  }
  if (f == QuantFormat::kNVFP4 && p.compute_global_scale) *p.global_scale.ptr<float>() = g;
  return Status::Ok();
}

Status dequantize(const DequantizeParams& p) {
  const QuantFormat f = p.format;
  const int64_t M = p.out.shape[0], K = p.out.shape[1];
  const int bk = quant_block_k(f), bm = quant_block_m(f);
  const float g = f == QuantFormat::kNVFP4 ? *p.global_scale.ptr<const float>() : 1.0f;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      const float s = load_scale(p.scales, m / bm, k / bk);
      float v = decode_value(f, load_code(p.q, m, k)) * s;
      if (f == QuantFormat::kNVFP4) v = v * g;
      store_wide(p.out, m, k, v);
    }
  return Status::Ok();
}

namespace {

int64_t swizzle_offset(int64_t m, int64_t k, int64_t cols) {
  const int64_t k_tiles = (cols + 3) / 4;
  return (m / 128) * k_tiles * 512 + (k / 4) * 512 + (m % 32) * 16 + ((m % 128) / 32) * 4 + (k % 4);
}

}  // namespace

Status swizzle_scales_128x4(const TensorView& src, const TensorView& dst) {
  const int64_t M = src.shape[0], S = src.shape[1];
  uint8_t* out = dst.ptr<uint8_t>();
  const int64_t n = swizzled_scales_size(M, S);
  if (n > 0) std::memset(out, 0, static_cast<size_t>(n));
  const uint8_t* in = src.ptr<const uint8_t>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < S; ++k) out[swizzle_offset(m, k, S)] = in[m * src.strides[0] + k * src.strides[1]];
  return Status::Ok();
}

Status unswizzle_scales_128x4(const TensorView& src, const TensorView& dst) {
  const int64_t M = dst.shape[0], S = dst.shape[1];
  const uint8_t* in = src.ptr<const uint8_t>();
  uint8_t* out = dst.ptr<uint8_t>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < S; ++k) out[m * dst.strides[0] + k * dst.strides[1]] = in[swizzle_offset(m, k, S)];
  return Status::Ok();
}

}  // namespace dsv4::cpu
