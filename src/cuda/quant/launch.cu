// CUDA backend of the quantization ops: pick the kernel for (format, dtypes), size the grid to the
// device, cut tensors too large for 32-bit chunk indices into row slices, launch, check.
// Arguments arrive validated by src/core/quant.cpp (shapes, dtypes, 16-byte aligned rows).
#include <algorithm>
#include <type_traits>

#include "backend/backends.h"
#include "core/validate.h"
#include "cuda/common/check.h"
#include "cuda/common/device_props.h"
#include "cuda/quant/kernel.cuh"

namespace dsv4::cuda {
namespace {

using quant::Bf16;
using quant::Kind;

Kind kind_of(QuantFormat f, DType scale_dtype) {
  switch (f) {
    case QuantFormat::kMXFP4: return Kind::kMXFP4;
    case QuantFormat::kNVFP4: return Kind::kNVFP4;
    case QuantFormat::kMXFP8: return Kind::kMXFP8;
    default: return scale_dtype == DType::F32 ? Kind::kFP8F32 : Kind::kFP8Pow2;
  }
}

int64_t elem_bytes(DType t) { return dtype_bits(t) / 8; }
// Byte stride of dimension d (E2M1 strides are even in rows, so this is exact).
int64_t byte_stride(const TensorView& t, int d) { return t.strides[d] * dtype_bits(t.dtype) / 8; }
cudaStream_t as_cuda(Stream s) { return static_cast<cudaStream_t>(s); }

// Runs `launch(first_row, rows)` over row slices small enough for 32-bit unit indices; slices
// start on multiples of `row_align` so row-blocked scales stay aligned with their rows.
template <class F>
Status for_each_slice(const char* op, int64_t rows, int64_t units_per_row, int64_t row_align, F&& launch) {
  int64_t per = quant::rows_per_launch(units_per_row) / row_align * row_align;
  if (per <= 0)
    return {StatusCode::kUnsupported, std::string(op) + ": a row of " + std::to_string(units_per_row) +
                                          " 16-byte chunks exceeds what one launch indexes"};
  for (int64_t r0 = 0; r0 < rows; r0 += per) DSV4_RETURN_IF_ERROR(launch(r0, std::min(per, rows - r0)));
  return Status::Ok();
}

using RowKernel = void (*)(quant::RowArgs);
using TileKernel = void (*)(quant::TileArgs);
using DequantKernel = void (*)(quant::DequantArgs);
using AmaxKernel = void (*)(quant::RowArgs, uint32_t*);

template <class T>
RowKernel rows_kernel(Kind k, int own) {
  switch (k) {
    case Kind::kMXFP4: return quant::quantize_rows_kernel<Kind::kMXFP4, T, 4>;
    case Kind::kNVFP4:
      // The one two-chunk unit: NVFP4 blocks of bf16 are 2 chunks, and rows of 2 mod 4 chunks.
      if constexpr (std::is_same_v<T, Bf16>) {
        if (own == 2) return quant::quantize_rows_kernel<Kind::kNVFP4, T, 2>;
      }
      return quant::quantize_rows_kernel<Kind::kNVFP4, T, 4>;
    case Kind::kMXFP8: return quant::quantize_rows_kernel<Kind::kMXFP8, T, 4>;
    case Kind::kFP8Pow2: return quant::quantize_rows_kernel<Kind::kFP8Pow2, T, 4>;
    case Kind::kFP8F32: return quant::quantize_rows_kernel<Kind::kFP8F32, T, 4>;
  }
  return nullptr;
}

template <class O>
DequantKernel dequant_kernel(Kind k) {
  switch (k) {
    case Kind::kMXFP4: return quant::dequantize_rows_kernel<Kind::kMXFP4, O>;
    case Kind::kNVFP4: return quant::dequantize_rows_kernel<Kind::kNVFP4, O>;
    case Kind::kMXFP8: return quant::dequantize_rows_kernel<Kind::kMXFP8, O>;
    case Kind::kFP8Pow2: return quant::dequantize_rows_kernel<Kind::kFP8Pow2, O>;
    case Kind::kFP8F32: return quant::dequantize_rows_kernel<Kind::kFP8F32, O>;
  }
  return nullptr;
}

// The NVFP4 global scale: zero the slot, fold the finite amax of x into it, finalize in place.
// Three stream-ordered steps, no host round trip.
Status compute_nvfp4_global(const QuantizeParams& p, cudaStream_t stream, int sms) {
  constexpr const char* op = "quantize";
  float* g = p.global_scale.ptr<float>();
  DSV4_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(g, 0, sizeof(float), stream), op);
  const int64_t M = p.x.shape[0], K = p.x.shape[1];
  if (M > 0 && K > 0) {
    const bool bf16 = p.x.dtype == DType::BF16;
    const AmaxKernel kernel = bf16 ? quant::finite_amax_kernel<Bf16> : quant::finite_amax_kernel<float>;
    const int64_t cpr = K * elem_bytes(p.x.dtype) / 16;
    const int64_t x_row = byte_stride(p.x, 0);
    DSV4_RETURN_IF_ERROR(for_each_slice(op, M, cpr, 1, [&](int64_t r0, int64_t rows) -> Status {
      quant::RowArgs a{};
      a.x = static_cast<const uint8_t*>(p.x.data) + r0 * x_row;
      a.x_row_bytes = x_row;
      a.chunks = static_cast<uint32_t>(rows * cpr);
      a.chunks_per_row = FastDiv(static_cast<uint32_t>(cpr));
      kernel<<<quant::grid_for(rows * cpr, quant::kAmaxUnroll, sms), quant::kThreads, 0, stream>>>(
          a, reinterpret_cast<uint32_t*>(g));
      return launch_status(op, "finite_amax_kernel");
    }));
  }
  quant::nvfp4_finalize_global_kernel<<<1, 1, 0, stream>>>(g);
  return launch_status(op, "nvfp4_finalize_global_kernel");
}

}  // namespace

Status quantize(const QuantizeParams& p, Stream s) {
  constexpr const char* op = "quantize";
  const cudaStream_t stream = as_cuda(s);
  const int64_t M = p.x.shape[0], K = p.x.shape[1];
  const bool nvfp4_global = p.format == QuantFormat::kNVFP4 && p.compute_global_scale;
  if ((M == 0 || K == 0) && !nvfp4_global) return Status::Ok();

  ScopedDevice guard;
  DSV4_RETURN_IF_ERROR(guard.enter(p.x.device.index, op));
  int sms = 0;
  DSV4_RETURN_IF_ERROR(multiprocessor_count(p.x.device.index, op, &sms));
  if (nvfp4_global) DSV4_RETURN_IF_ERROR(compute_nvfp4_global(p, stream, sms));
  if (M == 0 || K == 0) return Status::Ok();

  const Kind kind = kind_of(p.format, p.scales.dtype);
  const bool bf16 = p.x.dtype == DType::BF16;
  const int64_t x_row = byte_stride(p.x, 0), q_row = byte_stride(p.q, 0);
  const int64_t s_row = byte_stride(p.scales, 0), s_col = byte_stride(p.scales, 1);
  auto* x = static_cast<const uint8_t*>(p.x.data);
  auto* q = static_cast<uint8_t*>(p.q.data);
  auto* scales = static_cast<uint8_t*>(p.scales.data);

  if (p.format == QuantFormat::kFP8_128x128) {
    const int64_t m_blocks = (M + quant::kTileRows - 1) / quant::kTileRows, k_blocks = K / quant::kTileCols;
    if (m_blocks * k_blocks > INT32_MAX)
      return {StatusCode::kUnsupported, std::string(op) + ": FP8_128x128 with more than 2^31 blocks"};
    quant::TileArgs a{x, x_row, q, q_row, scales, s_row, s_col, M, static_cast<uint32_t>(k_blocks)};
    const auto grid = static_cast<unsigned>(m_blocks * k_blocks);
    if (kind == Kind::kFP8F32) {
      if (bf16) quant::quantize_tile_kernel<Kind::kFP8F32, Bf16><<<grid, quant::tile_threads(2), 0, stream>>>(a);
      else quant::quantize_tile_kernel<Kind::kFP8F32, float><<<grid, quant::tile_threads(4), 0, stream>>>(a);
    } else {
      if (bf16) quant::quantize_tile_kernel<Kind::kFP8Pow2, Bf16><<<grid, quant::tile_threads(2), 0, stream>>>(a);
      else quant::quantize_tile_kernel<Kind::kFP8Pow2, float><<<grid, quant::tile_threads(4), 0, stream>>>(a);
    }
    return launch_status(op, "quantize_tile_kernel");
  }

  // The kernel's unit is own_chunks 16-byte chunks, a whole number of them a row.
  const int64_t chunks_per_row = K * elem_bytes(p.x.dtype) / 16;
  const int own = quant::own_chunks(kind, static_cast<int>(elem_bytes(p.x.dtype)), chunks_per_row, q_row);
  const RowKernel kernel = bf16 ? rows_kernel<Bf16>(kind, own) : rows_kernel<float>(kind, own);
  const int64_t cpr = chunks_per_row / own;
  return for_each_slice(op, M, cpr, 1, [&](int64_t r0, int64_t rows) -> Status {
    quant::RowArgs a{};
    a.x = x + r0 * x_row;
    a.x_row_bytes = x_row;
    a.q = q + r0 * q_row;
    a.q_row_bytes = q_row;
    a.scales = scales + r0 * s_row;
    a.s_row_bytes = s_row;
    a.s_col_bytes = s_col;
    a.global_scale = p.format == QuantFormat::kNVFP4 ? p.global_scale.ptr<const float>() : nullptr;
    a.chunks = static_cast<uint32_t>(rows * cpr);
    a.chunks_per_row = FastDiv(static_cast<uint32_t>(cpr));
    kernel<<<quant::grid_for(rows * cpr, quant::kQuantUnroll / own, sms), quant::kThreads, 0, stream>>>(a);
    return launch_status(op, "quantize_rows_kernel");
  });
}

Status dequantize(const DequantizeParams& p, Stream s) {
  constexpr const char* op = "dequantize";
  const cudaStream_t stream = as_cuda(s);
  const int64_t M = p.out.shape[0], K = p.out.shape[1];
  if (M == 0 || K == 0) return Status::Ok();

  ScopedDevice guard;
  DSV4_RETURN_IF_ERROR(guard.enter(p.out.device.index, op));
  int sms = 0;
  DSV4_RETURN_IF_ERROR(multiprocessor_count(p.out.device.index, op, &sms));

  const Kind kind = kind_of(p.format, p.scales.dtype);
  const DequantKernel kernel = p.out.dtype == DType::BF16 ? dequant_kernel<Bf16>(kind) : dequant_kernel<float>(kind);
  const int64_t upr = K * elem_bytes(p.out.dtype) / 16;  // 16-byte output units a row
  const int64_t bm = quant_block_m(p.format);
  const uint32_t row_shift = bm == 128 ? 7 : 0;
  const int64_t out_row = byte_stride(p.out, 0), q_row = byte_stride(p.q, 0);
  const int64_t s_row = byte_stride(p.scales, 0), s_col = byte_stride(p.scales, 1);
  return for_each_slice(op, M, upr, bm, [&](int64_t r0, int64_t rows) -> Status {
    quant::DequantArgs a{};
    a.q = static_cast<const uint8_t*>(p.q.data) + r0 * q_row;
    a.q_row_bytes = q_row;
    a.scales = static_cast<const uint8_t*>(p.scales.data) + (r0 / bm) * s_row;
    a.s_row_bytes = s_row;
    a.s_col_bytes = s_col;
    a.global_scale = p.format == QuantFormat::kNVFP4 ? p.global_scale.ptr<const float>() : nullptr;
    a.out = static_cast<uint8_t*>(p.out.data) + r0 * out_row;
    a.out_row_bytes = out_row;
    a.units = static_cast<uint32_t>(rows * upr);
    a.units_per_row = FastDiv(static_cast<uint32_t>(upr));
    a.row_shift = row_shift;
    kernel<<<quant::grid_for(rows * upr, quant::kDequantUnroll, sms), quant::kThreads, 0, stream>>>(a);
    return launch_status(op, "dequantize_rows_kernel");
  });
}

namespace {
Status launch_swizzle(const char* op, const TensorView& mat, const TensorView& flat, bool to_flat, cudaStream_t stream) {
  const int64_t rows = mat.shape[0], cols = mat.shape[1];
  if (rows == 0 || cols == 0) return Status::Ok();
  ScopedDevice guard;
  DSV4_RETURN_IF_ERROR(guard.enter(mat.device.index, op));
  int sms = 0;
  DSV4_RETURN_IF_ERROR(multiprocessor_count(mat.device.index, op, &sms));
  quant::SwizzleArgs a{};
  a.mat = static_cast<uint8_t*>(mat.data);
  a.m_row = mat.strides[0];
  a.m_col = mat.strides[1];
  a.flat = static_cast<uint8_t*>(flat.data);
  a.rows = rows;
  a.cols = cols;
  a.k_tiles = (cols + 3) / 4;
  a.words = swizzled_scales_size(rows, cols) / 4;
  a.flat_aligned = reinterpret_cast<uintptr_t>(flat.data) % 4 == 0;
  const int64_t need = (a.words + quant::kSmallThreads - 1) / quant::kSmallThreads;
  const int grid = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(need, int64_t{sms} * quant::kCtasPerSm)));
  if (to_flat) quant::swizzle_kernel<<<grid, quant::kSmallThreads, 0, stream>>>(a);
  else quant::unswizzle_kernel<<<grid, quant::kSmallThreads, 0, stream>>>(a);
  return launch_status(op, to_flat ? "swizzle_kernel" : "unswizzle_kernel");
}
}  // namespace

Status swizzle_scales_128x4(const TensorView& src, const TensorView& dst, Stream stream) {
  return launch_swizzle("swizzle_scales_128x4", src, dst, true, as_cuda(stream));
}

Status unswizzle_scales_128x4(const TensorView& src, const TensorView& dst, Stream stream) {
  return launch_swizzle("unswizzle_scales_128x4", dst, src, false, as_cuda(stream));
}

}  // namespace dsv4::cuda
