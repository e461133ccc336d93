// Validation and dispatch for the quantization ops (include/dsv4/ops/quant.h).
#include <algorithm>

#include "backend/backends.h"
#include "core/validate.h"

namespace dsv4 {
namespace {

constexpr const char* kQuant = "quantize";
constexpr const char* kDequant = "dequantize";

bool format_valid(QuantFormat f) {
  const int v = static_cast<int>(f);
  return v >= 0 && v <= static_cast<int>(QuantFormat::kFP8_128x128);
}

DType value_dtype(QuantFormat f) {
  return (f == QuantFormat::kMXFP4 || f == QuantFormat::kNVFP4) ? DType::E2M1 : DType::E4M3;
}

Status check_scale_dtype(const char* op, QuantFormat f, const TensorView& s) {
  switch (f) {
    case QuantFormat::kMXFP4: case QuantFormat::kMXFP8: return core::expect_dtype(op, "scales", s, {DType::UE8M0});
    case QuantFormat::kNVFP4: return core::expect_dtype(op, "scales", s, {DType::E4M3});
    default: return core::expect_dtype(op, "scales", s, {DType::UE8M0, DType::F32});
  }
}

// The shared shape contract of quantize and dequantize: a wide [M, K] tensor, the packed values,
// the scales, the NVFP4 global scale. `wide` is x for quantize and out for dequantize.
Status check_layout(const char* op, QuantFormat f, const char* wide_name, const TensorView& wide,
                    const TensorView& q, const TensorView& scales, const TensorView& global) {
  if (!format_valid(f)) return core::invalid(op, "unknown QuantFormat " + std::to_string(static_cast<int>(f)));
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(op, wide_name, wide));
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(op, "q", q));
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(op, "scales", scales));
  DSV4_RETURN_IF_ERROR(core::expect_ndim(op, wide_name, wide, 2));
  DSV4_RETURN_IF_ERROR(core::expect_dtype(op, wide_name, wide, {DType::BF16, DType::F32}));
  DSV4_RETURN_IF_ERROR(core::expect_inner_contiguous(op, wide_name, wide));
  const int64_t M = wide.shape[0], K = wide.shape[1];
  const int bk = quant_block_k(f), bm = quant_block_m(f);
  if (K % bk != 0)
    return core::invalid(op, std::string("argument '") + wide_name + "' has K = " + std::to_string(K) +
                                 ", which " + quant_format_name(f) + " needs to be a multiple of " +
                                 std::to_string(bk) + " (its scale block along K); got " + describe(wide));
  DSV4_RETURN_IF_ERROR(core::expect_dtype(op, "q", q, {value_dtype(f)}));
  DSV4_RETURN_IF_ERROR(core::expect_shape(op, "q", q, {M, K}));
  DSV4_RETURN_IF_ERROR(core::expect_inner_contiguous(op, "q", q));
  DSV4_RETURN_IF_ERROR(check_scale_dtype(op, f, scales));
  DSV4_RETURN_IF_ERROR(core::expect_shape(op, "scales", scales, {(M + bm - 1) / bm, K / bk}));
  // Kernels move whole scale blocks with vector accesses: rows must start on 16 bytes (wide,
  // q for 8-bit formats) or on one block's bytes (packed fp4).
  const int wide_bytes = dtype_bits(wide.dtype) / 8;
  DSV4_RETURN_IF_ERROR(core::expect_aligned(op, wide_name, wide, 16));
  if (M > 1 && (wide.strides[0] * wide_bytes) % 16 != 0)
    return core::arg_error(op, wide_name, "have a row stride that is a multiple of 16 bytes", wide);
  const int q_row_align = std::min(16, bk * dtype_bits(q.dtype) / 8);
  DSV4_RETURN_IF_ERROR(core::expect_aligned(op, "q", q, 16));
  if (M > 1 && (q.strides[0] * dtype_bits(q.dtype) / 8) % q_row_align != 0)
    return core::arg_error(op, "q", "have a row stride that is a multiple of " + std::to_string(q_row_align) + " bytes", q);
  DSV4_RETURN_IF_ERROR(core::expect_aligned(op, "scales", scales, dtype_bits(scales.dtype) / 8));
  if (f == QuantFormat::kNVFP4) {
    DSV4_RETURN_IF_ERROR(core::expect_well_formed(op, "global_scale", global));
    DSV4_RETURN_IF_ERROR(core::expect_dtype(op, "global_scale", global, {DType::F32}));
    DSV4_RETURN_IF_ERROR(core::expect_shape(op, "global_scale", global, {1}));
    DSV4_RETURN_IF_ERROR(core::expect_aligned(op, "global_scale", global, 4));
  } else if (global.defined()) {
    return core::arg_error(op, "global_scale", std::string("be empty for ") + quant_format_name(f), global);
  }
  return Status::Ok();
}

}  // namespace

const char* quant_format_name(QuantFormat f) {
  switch (f) {
    case QuantFormat::kMXFP4: return "MXFP4";
    case QuantFormat::kNVFP4: return "NVFP4";
    case QuantFormat::kMXFP8: return "MXFP8";
    case QuantFormat::kFP8_1x128: return "FP8_1x128";
    case QuantFormat::kFP8_128x128: return "FP8_128x128";
  }
  return "unknown";
}

Status quantize(const QuantizeParams& p, Stream stream) {
  DSV4_RETURN_IF_ERROR(check_layout(kQuant, p.format, "x", p.x, p.q, p.scales, p.global_scale));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(kQuant, "q", p.q, "x", p.x));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(kQuant, "scales", p.scales, "x", p.x));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(kQuant, "scales", p.scales, "q", p.q));
  if (p.format == QuantFormat::kNVFP4 && p.compute_global_scale) {
    DSV4_RETURN_IF_ERROR(core::expect_disjoint(kQuant, "global_scale", p.global_scale, "x", p.x));
    DSV4_RETURN_IF_ERROR(core::expect_disjoint(kQuant, "global_scale", p.global_scale, "q", p.q));
    DSV4_RETURN_IF_ERROR(core::expect_disjoint(kQuant, "global_scale", p.global_scale, "scales", p.scales));
  }
  Device dev;
  DSV4_RETURN_IF_ERROR(core::common_device(
      kQuant, {{"x", &p.x}, {"q", &p.q}, {"scales", &p.scales}, {"global_scale", &p.global_scale}}, &dev));
  if (dev.type == DeviceType::kCPU) return cpu::quantize(p);
  return cuda::quantize(p, stream);
}

Status dequantize(const DequantizeParams& p, Stream stream) {
  DSV4_RETURN_IF_ERROR(check_layout(kDequant, p.format, "out", p.out, p.q, p.scales, p.global_scale));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(kDequant, "out", p.out, "q", p.q));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(kDequant, "out", p.out, "scales", p.scales));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(kDequant, "out", p.out, "global_scale", p.global_scale));
  Device dev;
  DSV4_RETURN_IF_ERROR(core::common_device(
      kDequant, {{"q", &p.q}, {"scales", &p.scales}, {"global_scale", &p.global_scale}, {"out", &p.out}}, &dev));
  if (dev.type == DeviceType::kCPU) return cpu::dequantize(p);
  return cuda::dequantize(p, stream);
}

int64_t swizzled_scales_size(int64_t rows, int64_t cols) {
  return ((rows + 127) / 128 * 128) * ((cols + 3) / 4 * 4);
}

static Status check_swizzle(const char* op, const TensorView& mat, const char* mat_name, const TensorView& flat,
                            const char* flat_name) {
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(op, mat_name, mat));
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(op, flat_name, flat));
  DSV4_RETURN_IF_ERROR(core::expect_ndim(op, mat_name, mat, 2));
  DSV4_RETURN_IF_ERROR(core::expect_dtype(op, mat_name, mat, {DType::UE8M0, DType::E4M3, DType::U8}));
  DSV4_RETURN_IF_ERROR(core::expect_dtype(op, flat_name, flat, {mat.dtype}));
  DSV4_RETURN_IF_ERROR(core::expect_shape(op, flat_name, flat, {swizzled_scales_size(mat.shape[0], mat.shape[1])}));
  DSV4_RETURN_IF_ERROR(core::expect_contiguous(op, flat_name, flat));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(op, mat_name, mat, flat_name, flat));
  return Status::Ok();
}

Status swizzle_scales_128x4(const TensorView& src, const TensorView& dst, Stream stream) {
  constexpr const char* op = "swizzle_scales_128x4";
  DSV4_RETURN_IF_ERROR(check_swizzle(op, src, "src", dst, "dst"));
  Device dev;
  DSV4_RETURN_IF_ERROR(core::common_device(op, {{"src", &src}, {"dst", &dst}}, &dev));
  if (dev.type == DeviceType::kCPU) return cpu::swizzle_scales_128x4(src, dst);
  return cuda::swizzle_scales_128x4(src, dst, stream);
}

Status unswizzle_scales_128x4(const TensorView& src, const TensorView& dst, Stream stream) {
  constexpr const char* op = "unswizzle_scales_128x4";
  DSV4_RETURN_IF_ERROR(check_swizzle(op, dst, "dst", src, "src"));
  Device dev;
  DSV4_RETURN_IF_ERROR(core::common_device(op, {{"src", &src}, {"dst", &dst}}, &dev));
  if (dev.type == DeviceType::kCPU) return cpu::unswizzle_scales_128x4(src, dst);
  return cuda::unswizzle_scales_128x4(src, dst, stream);
}

}  // namespace dsv4
