// CPU reference for the block-scaled GEMMs: decode both operands with the software codecs and their
// scales to double, accumulate in double, add bias and residual, round once to bf16. Deliberately
// naive: it is the oracle the CUDA kernels are tested against.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/gemm.h"
#include "dsv4/numerics.h"

namespace dsv4::cpu {
namespace {

const uint8_t* byte_at(const TensorView& t, int64_t i0, int64_t i1) {
  return static_cast<const uint8_t*>(t.data) + (i0 * t.strides[0] + i1 * t.strides[1]) * dtype_bits(t.dtype) / 8;
}

double scale_at(const TensorView& s, int64_t i0, int64_t i1) {
  const uint8_t* p = byte_at(s, i0, i1);
  switch (s.dtype) {
    case DType::UE8M0: return num::ue8m0_to_float(*p);
    case DType::E4M3: return num::e4m3_to_float(*p);
    case DType::F32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    default: return 0.0 / 0.0;
  }
}

double element_at(const TensorView& t, int64_t i0, int64_t i1) {
  if (t.dtype == DType::E2M1) {
    const int64_t e = i0 * t.strides[0] + i1;  // innermost stride 1, even row stride (validated)
    const uint8_t byte = static_cast<const uint8_t*>(t.data)[e / 2];
    return num::e2m1_to_float(static_cast<uint8_t>((e & 1) ? byte >> 4 : byte & 0xF));
  }
  const uint8_t* p = byte_at(t, i0, i1);
  if (t.dtype == DType::E4M3) return num::e4m3_to_float(*p);
  uint16_t h;
  std::memcpy(&h, p, 2);
  return num::bf16_to_float(h);
}

// Row r of an operand, dequantized: value * scale of its block. `scales` undefined means none;
// block_rows/block_k give the scale granularity.
void decode_row(const TensorView& x, const TensorView& scales, int block_rows, int64_t r, std::vector<double>& out) {
  const int64_t K = x.shape[1];
  const int64_t block_k = scales.defined() ? K / scales.shape[1] : K;
  for (int64_t k = 0; k < K; ++k) {
    double v = element_at(x, r, k);
    if (scales.defined()) v *= scale_at(scales, r / block_rows, k / block_k);
    out[k] = v;
  }
}

// Round once, to nearest even, from f64 to bf16 (f64 -> f32 -> bf16 could round twice).
uint16_t bf16_from_double(double v) {
  if (std::isnan(v) || std::isinf(v)) return num::bf16_from_float(static_cast<float>(v));
  const double a = std::fabs(v);
  int e = 0;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1): the leading bit is 2^(e-1)
  // bf16 keeps 8 significant bits; below 2^-126 the quantum stays 2^-133 (subnormals).
  const int quantum_exp = std::max(e - 1 - 7, -133);
  const double r = std::nearbyint(std::ldexp(v, -quantum_exp));  // exact scaling, ties to even
  // r * 2^q is a bf16 value (or 2^128, which the f32 conversion turns into inf): no second rounding.
  return num::bf16_from_float(static_cast<float>(std::ldexp(r, quantum_exp)));
}

}  // namespace

Status gemm(const GemmParams& p) {
  const int64_t M = p.a.shape[0], K = p.a.shape[1], N = p.b.shape[0];
  const int b_block_rows = p.format == GemmFormat::kFP8Block ? 128 : 1;
  double global = 1.0;
  if (p.format == GemmFormat::kW4A16NVFP4) global = *static_cast<const float*>(p.b_global_scale.data);

  std::vector<std::vector<double>> b(N, std::vector<double>(K));
  for (int64_t n = 0; n < N; ++n) decode_row(p.b, p.b_scales, b_block_rows, n, b[n]);
  std::vector<double> a(K);
  std::vector<uint16_t> row(N);
  for (int64_t m = 0; m < M; ++m) {
    decode_row(p.a, p.a_scales, 1, m, a);
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0.0;
      for (int64_t k = 0; k < K; ++k) acc += a[k] * b[n][k];
      acc *= global;
      double extra = 0.0;
      if (p.bias.defined()) {
        uint16_t h;
        std::memcpy(&h, static_cast<const uint8_t*>(p.bias.data) + n * p.bias.strides[0] * 2, 2);
        extra += num::bf16_to_float(h);
      }
      if (p.residual.defined()) extra += element_at(p.residual, m, n);
      row[n] = bf16_from_double(acc + extra);
    }
    // Written after the row is complete so an in-place residual (residual == d) reads old values.
    for (int64_t n = 0; n < N; ++n)
      std::memcpy(static_cast<uint8_t*>(p.d.data) + (m * p.d.strides[0] + n * p.d.strides[1]) * 2, &row[n], 2);
  }
  return Status::Ok();
}

}  // namespace dsv4::cpu
