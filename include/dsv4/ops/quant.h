// Block-scaled quantization and dequantization (spec DSV4.md section 3).
//
// Every op runs on the backend where its tensors live: all on the CPU -> the reference backend,
// all on one CUDA device -> the CUDA backend (sm_90a). Mixed devices are an error. Ops validate
// everything first and write nothing when they return an error. CUDA ops are asynchronous on
// `stream`, allocate nothing and never synchronize (CUDA-graph capturable).
#pragma once
#include "dsv4/status.h"
#include "dsv4/tensor.h"

namespace dsv4 {

enum class QuantFormat : int32_t {
  kMXFP4 = 0,      // e2m1 values, ue8m0 scale per 32 along K: 2^ceil(log2(max(amax, 6*2^-126)/6))
  kNVFP4 = 1,      // e2m1 values, e4m3 scale per 16 along K, one f32 global scale
  kMXFP8 = 2,      // e4m3 values, ue8m0 scale per 32 along K: 2^ceil(log2(max(amax, 1e-4)/448))
  kFP8_1x128 = 3,  // e4m3 values, one scale per row and 128 columns (activations, per token)
  kFP8_128x128 = 4 // e4m3 values, one scale per 128x128 block (weights)
};

// Elements along K that share one scale.
constexpr int quant_block_k(QuantFormat f) {
  switch (f) {
    case QuantFormat::kMXFP4: case QuantFormat::kMXFP8: return 32;
    case QuantFormat::kNVFP4: return 16;
    case QuantFormat::kFP8_1x128: case QuantFormat::kFP8_128x128: return 128;
  }
  return 0;
}
// Rows that share one scale.
constexpr int quant_block_m(QuantFormat f) { return f == QuantFormat::kFP8_128x128 ? 128 : 1; }
const char* quant_format_name(QuantFormat f);

// x [M, K] bf16 or f32, innermost stride 1 (any row stride). K a multiple of quant_block_k.
// q [M, K] e2m1 (MXFP4, NVFP4) or e4m3 (others), innermost stride 1.
// scales [ceil(M / quant_block_m), K / quant_block_k], any strides (row- or column-major):
//   MXFP4, MXFP8: ue8m0. NVFP4: e4m3. FP8_1x128, FP8_128x128: ue8m0 or f32 (f32: s = max(amax, 1e-4)
//   / 448, no power-of-two rounding; elements are encoded as e4m3(x * (448 / max(amax, 1e-4))),
//   DeepGEMM's per-token cast).
// global_scale: NVFP4 only, f32 [1]: g = amax(x) / (6 * 448). With compute_global_scale the op
//   computes amax over finite values of x and writes g; otherwise it reads the caller's g.
//   Block scale s = e4m3(amax_block / (g * 6)); elements e2m1(x * (1 / (s * g))), multiplying by the
//   once-rounded reciprocal as TRT-LLM's quantizer does. All arithmetic is f32; src/cpu/quant.cpp
//   spells out every rounding, and the CUDA kernels match it bit for bit.
// A block holding a NaN or +-inf gets the NaN scale (ue8m0 0xFF, e4m3 0x7F, f32 NaN) and all its
// element codes are 0, so it dequantizes to NaN.
struct QuantizeParams {
  QuantFormat format = QuantFormat::kMXFP4;
  TensorView x;
  TensorView q;
  TensorView scales;
  TensorView global_scale;
  bool compute_global_scale = false;
};
Status quantize(const QuantizeParams& p, Stream stream = nullptr);

// The inverse: out [M, K] bf16 or f32 = q * scale (* global_scale for NVFP4), computed in f32
// and rounded once. Shapes as in QuantizeParams.
struct DequantizeParams {
  QuantFormat format = QuantFormat::kMXFP4;
  TensorView q;
  TensorView scales;
  TensorView global_scale;
  TensorView out;
};
Status dequantize(const DequantizeParams& p, Stream stream = nullptr);

// Scale factors in the "128x4" layout CUTLASS/TRT-LLM block-scaled kernels read (spec 3.7):
// row m, scale column k of [M, S] goes to
//   (m/128)*ceil(S/4)*512 + (k/4)*512 + (m%32)*16 + ((m%128)/32)*4 + (k%4),
// rows padded to 128 and columns to 4 (padding is written as 0).
// src [M, S] one-byte dtype (ue8m0, e4m3, u8), any strides; dst 1-D [swizzled_scales_size(M, S)]
// of the same dtype, contiguous.
int64_t swizzled_scales_size(int64_t rows, int64_t cols);
Status swizzle_scales_128x4(const TensorView& src, const TensorView& dst, Stream stream = nullptr);
// The inverse: src 1-D swizzled, dst [M, S] (any strides).
Status unswizzle_scales_128x4(const TensorView& src, const TensorView& dst, Stream stream = nullptr);

}  // namespace dsv4
