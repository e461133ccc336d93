// Validation and dispatch for the block-scaled GEMMs (include/dsv4/ops/gemm.h).
#include <string>

#include "backend/gemm.h"
#include "core/validate.h"

namespace dsv4 {
namespace {

constexpr const char* kOp = "gemm";

bool format_valid(GemmFormat f) {
  const int v = static_cast<int>(f);
  return v >= 0 && v <= static_cast<int>(GemmFormat::kW4A8MXFP4);
}

// TMA reads rows of a, b and the kernels write rows of d: rows contiguous, 16-byte aligned starts.
Status check_rows(const char* arg, const TensorView& t) {
  DSV4_RETURN_IF_ERROR(core::expect_inner_contiguous(kOp, arg, t));
  DSV4_RETURN_IF_ERROR(core::expect_aligned(kOp, arg, t, 16));
  const int64_t row_bytes = t.strides[0] * dtype_bits(t.dtype) / 8;
  if (t.shape[0] > 1 && row_bytes % 16 != 0)
    return core::arg_error(kOp, arg, "have a row stride that is a multiple of 16 bytes", t);
  return Status::Ok();
}

Status check_scales(const char* arg, const TensorView& s, std::initializer_list<DType> dtypes,
                    std::initializer_list<int64_t> shape) {
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, arg, s));
  DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, arg, s, dtypes));
  DSV4_RETURN_IF_ERROR(core::expect_shape(kOp, arg, s, shape));
  return core::expect_aligned(kOp, arg, s, dtype_bits(s.dtype) / 8);
}

Status check_empty(const char* arg, const TensorView& t, GemmFormat f) {
  if (t.defined()) return core::arg_error(kOp, arg, std::string("be empty for ") + gemm_format_name(f), t);
  return Status::Ok();
}

Status validate(const GemmParams& p) {
  const GemmFormat f = p.format;
  if (!format_valid(f)) return core::invalid(kOp, "unknown GemmFormat " + std::to_string(static_cast<int>(f)));
  const bool a_bf16 = f == GemmFormat::kW4A16MXFP4 || f == GemmFormat::kW4A16NVFP4;
  const bool b_fp4 = f != GemmFormat::kFP8Block;

  DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, "a", p.a));
  DSV4_RETURN_IF_ERROR(core::expect_ndim(kOp, "a", p.a, 2));
  DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, "a", p.a, {a_bf16 ? DType::BF16 : DType::E4M3}));
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, "b", p.b));
  DSV4_RETURN_IF_ERROR(core::expect_ndim(kOp, "b", p.b, 2));
  DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, "b", p.b, {b_fp4 ? DType::E2M1 : DType::E4M3}));
  const int64_t M = p.a.shape[0], K = p.a.shape[1], N = p.b.shape[0];
  if (K <= 0 || K % 128 != 0)
    return core::invalid(kOp, "K (columns of 'a') must be a positive multiple of 128, got " + std::to_string(K) +
                                  " from a = " + describe(p.a));
  if (N <= 0 || N % 128 != 0)
    return core::invalid(kOp, "N (rows of 'b') must be a positive multiple of 128, got " + std::to_string(N) +
                                  " from b = " + describe(p.b));
  DSV4_RETURN_IF_ERROR(core::expect_shape(kOp, "b", p.b, {N, K}));
  DSV4_RETURN_IF_ERROR(check_rows("a", p.a));
  DSV4_RETURN_IF_ERROR(check_rows("b", p.b));

  switch (f) {
    case GemmFormat::kFP8Block:
      DSV4_RETURN_IF_ERROR(check_scales("a_scales", p.a_scales, {DType::UE8M0, DType::F32}, {M, K / 128}));
      DSV4_RETURN_IF_ERROR(check_scales("b_scales", p.b_scales, {DType::UE8M0, DType::F32}, {N / 128, K / 128}));
      DSV4_RETURN_IF_ERROR(check_empty("b_global_scale", p.b_global_scale, f));
      break;
    case GemmFormat::kW4A8MXFP4: {
      // The A scale granularity is read off its shape: K/128 columns (1x128) or K/32 (MXFP8).
      const bool mx = p.a_scales.ndim == 2 && p.a_scales.shape[1] == K / 32 && K / 32 != K / 128;
      if (mx) DSV4_RETURN_IF_ERROR(check_scales("a_scales", p.a_scales, {DType::UE8M0}, {M, K / 32}));
      else DSV4_RETURN_IF_ERROR(check_scales("a_scales", p.a_scales, {DType::UE8M0, DType::F32}, {M, K / 128}));
      DSV4_RETURN_IF_ERROR(check_scales("b_scales", p.b_scales, {DType::UE8M0}, {N, K / 32}));
      DSV4_RETURN_IF_ERROR(check_empty("b_global_scale", p.b_global_scale, f));
      break;
    }
    case GemmFormat::kW4A16MXFP4:
      DSV4_RETURN_IF_ERROR(check_empty("a_scales", p.a_scales, f));
      DSV4_RETURN_IF_ERROR(check_scales("b_scales", p.b_scales, {DType::UE8M0}, {N, K / 32}));
      DSV4_RETURN_IF_ERROR(check_empty("b_global_scale", p.b_global_scale, f));
      break;
    case GemmFormat::kW4A16NVFP4:
      DSV4_RETURN_IF_ERROR(check_empty("a_scales", p.a_scales, f));
      DSV4_RETURN_IF_ERROR(check_scales("b_scales", p.b_scales, {DType::E4M3}, {N, K / 16}));
      DSV4_RETURN_IF_ERROR(check_scales("b_global_scale", p.b_global_scale, {DType::F32}, {1}));
      break;
  }

  DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, "d", p.d));
  DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, "d", p.d, {DType::BF16}));
  DSV4_RETURN_IF_ERROR(core::expect_shape(kOp, "d", p.d, {M, N}));
  DSV4_RETURN_IF_ERROR(check_rows("d", p.d));
  if (p.bias.defined()) {
    DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, "bias", p.bias));
    DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, "bias", p.bias, {DType::BF16}));
    DSV4_RETURN_IF_ERROR(core::expect_shape(kOp, "bias", p.bias, {N}));
    DSV4_RETURN_IF_ERROR(core::expect_contiguous(kOp, "bias", p.bias));
    DSV4_RETURN_IF_ERROR(core::expect_aligned(kOp, "bias", p.bias, 4));
  }
  const bool in_place = p.residual.defined() && p.residual.data == p.d.data && p.residual.dtype == p.d.dtype &&
                        p.residual.ndim == 2 && p.residual.strides[0] == p.d.strides[0] &&
                        p.residual.strides[1] == p.d.strides[1];
  if (p.residual.defined()) {
    DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, "residual", p.residual));
    DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, "residual", p.residual, {DType::BF16}));
    DSV4_RETURN_IF_ERROR(core::expect_shape(kOp, "residual", p.residual, {M, N}));
    DSV4_RETURN_IF_ERROR(check_rows("residual", p.residual));
  }
  if (p.workspace.defined()) {
    DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, "workspace", p.workspace));
    DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, "workspace", p.workspace, {DType::U8}));
    DSV4_RETURN_IF_ERROR(core::expect_ndim(kOp, "workspace", p.workspace, 1));
    DSV4_RETURN_IF_ERROR(core::expect_contiguous(kOp, "workspace", p.workspace));
    DSV4_RETURN_IF_ERROR(core::expect_aligned(kOp, "workspace", p.workspace, 16));
  }

  const core::Arg inputs[] = {{"a", &p.a},        {"a_scales", &p.a_scales}, {"b", &p.b},
                              {"b_scales", &p.b_scales}, {"b_global_scale", &p.b_global_scale},
                              {"bias", &p.bias}};
  for (const core::Arg& in : inputs) {
    DSV4_RETURN_IF_ERROR(core::expect_disjoint(kOp, "d", p.d, in.name, *in.t));
    DSV4_RETURN_IF_ERROR(core::expect_disjoint(kOp, "workspace", p.workspace, in.name, *in.t));
  }
  if (!in_place) DSV4_RETURN_IF_ERROR(core::expect_disjoint(kOp, "d", p.d, "residual", p.residual));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(kOp, "workspace", p.workspace, "residual", p.residual));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(kOp, "workspace", p.workspace, "d", p.d));
  return Status::Ok();
}

}  // namespace

const char* gemm_format_name(GemmFormat f) {
  switch (f) {
    case GemmFormat::kFP8Block: return "FP8Block";
    case GemmFormat::kW4A16MXFP4: return "W4A16-MXFP4";
    case GemmFormat::kW4A16NVFP4: return "W4A16-NVFP4";
    case GemmFormat::kW4A8MXFP4: return "W4A8-MXFP4";
  }
  return "unknown";
}

Status gemm(const GemmParams& p, Stream stream) {
  DSV4_RETURN_IF_ERROR(validate(p));
  Device dev;
  DSV4_RETURN_IF_ERROR(core::common_device(kOp,
                                           {{"a", &p.a},
                                            {"a_scales", &p.a_scales},
                                            {"b", &p.b},
                                            {"b_scales", &p.b_scales},
                                            {"b_global_scale", &p.b_global_scale},
                                            {"bias", &p.bias},
                                            {"residual", &p.residual},
                                            {"d", &p.d},
                                            {"workspace", &p.workspace}},
                                           &dev));
  if (p.a.shape[0] == 0) return Status::Ok();
  if (dev.type == DeviceType::kCPU) return cpu::gemm(p);
  return cuda::gemm(p, stream);
}

int64_t gemm_workspace_size(GemmFormat format, int64_t M, int64_t N, int64_t K, Device device) {
  if (device.type != DeviceType::kCUDA || !format_valid(format) || M <= 0 || N <= 0 || K <= 0 || N % 128 ||
      K % 128)
    return 0;
  return cuda::gemm_workspace_size(format, M, N, K, device.index);
}

}  // namespace dsv4
