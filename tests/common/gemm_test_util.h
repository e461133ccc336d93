// Host-side GEMM problems for the CPU and CUDA tests: operands in every GemmFormat, generated either
// "exact" (small integers and halves with power-of-two scales, so every f32 partial sum is exact and
// any kernel must match the f64 reference bit for bit) or "random" (real data quantized the way the
// model does it, with the unquantized product kept for end-to-end cos-similarity checks).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "common/test_util.h"
#include "dsv4/ops/gemm.h"
#include "dsv4/ops/quant.h"

namespace dsv4::test {

struct HostGemm {
  GemmFormat format = GemmFormat::kFP8Block;
  int64_t M = 0, N = 0, K = 0;
  DType a_scale_dtype = DType::UE8M0, b_scale_dtype = DType::UE8M0;
  int64_t a_scale_cols = 0;  // K/128, or K/32 for MXFP8 activations (W4A8)
  std::vector<uint8_t> a, a_scales, b, b_scales, bias, residual;
  float global = 1.0f;
  bool has_bias = false, has_residual = false;
  // The unquantized operands (random problems only), row-major [M, K] and [N, K].
  std::vector<float> a_real, b_real;

  bool a_bf16() const { return format == GemmFormat::kW4A16MXFP4 || format == GemmFormat::kW4A16NVFP4; }
  bool b_fp4() const { return format != GemmFormat::kFP8Block; }
  int64_t b_scale_rows() const { return format == GemmFormat::kFP8Block ? N / 128 : N; }
  int64_t b_scale_cols() const {
    switch (format) {
      case GemmFormat::kFP8Block: return K / 128;
      case GemmFormat::kW4A16NVFP4: return K / 16;
      default: return K / 32;
    }
  }
  DType a_dtype() const { return a_bf16() ? DType::BF16 : DType::E4M3; }
  DType b_dtype() const { return b_fp4() ? DType::E2M1 : DType::E4M3; }
  DType b_sdtype() const { return format == GemmFormat::kW4A16NVFP4 ? DType::E4M3 : b_scale_dtype; }

  // Views over buffers laid out like the host vectors (row-major), at the given pointers.
  GemmParams params(void* pa, void* pas, void* pb, void* pbs, void* pg, void* pbias, void* pres, void* pd,
                    Device dev) const {
    GemmParams p;
    p.format = format;
    p.a = make_tensor(pa, a_dtype(), {M, K}, dev);
    if (!a_bf16()) p.a_scales = make_tensor(pas, a_scale_dtype, {M, a_scale_cols}, dev);
    p.b = make_tensor(pb, b_dtype(), {N, K}, dev);
    p.b_scales = make_tensor(pbs, b_sdtype(), {b_scale_rows(), b_scale_cols()}, dev);
    if (format == GemmFormat::kW4A16NVFP4) p.b_global_scale = make_tensor(pg, DType::F32, {1}, dev);
    if (has_bias) p.bias = make_tensor(pbias, DType::BF16, {N}, dev);
    if (has_residual) p.residual = make_tensor(pres, DType::BF16, {M, N}, dev);
    p.d = make_tensor(pd, DType::BF16, {M, N}, dev);
    return p;
  }
  GemmParams host_params(std::vector<uint16_t>& d) {
    d.assign(static_cast<size_t>(M * N), kBf16NaN);
    return params(a.data(), a_scales.data(), b.data(), b_scales.data(), &global, bias.data(), residual.data(),
                  d.data(), Device::cpu());
  }
};

inline void put_scale(std::vector<uint8_t>& v, DType dt, size_t i, int exp2) {
  if (dt == DType::F32) {
    const float f = std::ldexp(1.0f, exp2);
    std::memcpy(v.data() + 4 * i, &f, 4);
  } else {
    v[i] = static_cast<uint8_t>(exp2 + 127);
  }
}

inline void alloc_operands(HostGemm& h) {
  const int64_t a_bytes = h.M * h.K * (h.a_bf16() ? 2 : 1);
  const int64_t b_bytes = h.b_fp4() ? h.N * h.K / 2 : h.N * h.K;
  h.a.assign(static_cast<size_t>(a_bytes), 0);
  h.b.assign(static_cast<size_t>(b_bytes), 0);
  if (!h.a_bf16()) {
    if (h.a_scale_cols == 0) h.a_scale_cols = h.K / 128;
    h.a_scales.assign(static_cast<size_t>(h.M * h.a_scale_cols * (h.a_scale_dtype == DType::F32 ? 4 : 1)), 0);
  }
  const int sb = h.b_sdtype() == DType::F32 ? 4 : 1;
  h.b_scales.assign(static_cast<size_t>(h.b_scale_rows() * h.b_scale_cols() * sb), 0);
  h.bias.assign(static_cast<size_t>(h.N * 2), 0);
  h.residual.assign(static_cast<size_t>(h.M * h.N * 2), 0);
}

inline void add_epilogue_inputs(HostGemm& h, std::mt19937_64& g, bool exact) {
  std::uniform_int_distribution<int> small(-8, 8);
  std::normal_distribution<float> nd(0.f, 4.f);
  for (int64_t n = 0; n < h.N; ++n) {
    const uint16_t v = num::bf16_from_float(exact ? float(small(g)) : nd(g));
    std::memcpy(h.bias.data() + 2 * n, &v, 2);
  }
  for (int64_t i = 0; i < h.M * h.N; ++i) {
    const uint16_t v = num::bf16_from_float(exact ? float(small(g)) : nd(g));
    std::memcpy(h.residual.data() + 2 * i, &v, 2);
  }
}

// The shape, scale layout and zeroed buffers of a problem: activation scales per 128 (or per 32
// with mx_a, W4A8's MXFP8 activations); B scales in scale_dtype only for FP8 weights.
inline HostGemm new_gemm(GemmFormat f, int64_t M, int64_t N, int64_t K, DType scale_dtype, bool mx_a) {
  HostGemm h;
  h.format = f;
  h.M = M, h.N = N, h.K = K;
  h.a_scale_dtype = mx_a ? DType::UE8M0 : scale_dtype;
  h.b_scale_dtype = f == GemmFormat::kFP8Block ? scale_dtype : DType::UE8M0;
  h.a_scale_cols = mx_a ? K / 32 : K / 128;
  alloc_operands(h);
  return h;
}

// Small integers (e4m3, bf16) or e2m1 codes with power-of-two scales: every product and every f32
// partial sum is exactly representable, so kernel and reference agree before the bf16 rounding.
// K <= 1024 keeps the exactness argument valid.
inline HostGemm make_exact_gemm(GemmFormat f, int64_t M, int64_t N, int64_t K, std::mt19937_64& g,
                                DType scale_dtype = DType::UE8M0, bool mx_a = false) {
  HostGemm h = new_gemm(f, M, N, K, scale_dtype, mx_a);
  // Bounds keep every partial sum below 2^14 of its quantum for K <= 1024 (the fp8 tensor cores keep
  // about 14 bits while accumulating). W4A8 B scales span 1 so the e4m3 re-encoding stays small.
  std::uniform_int_distribution<int> ival(-4, 4), sexp(-2, 2), code(0, 15);
  std::uniform_int_distribution<int> bexp(f == GemmFormat::kW4A8MXFP4 ? 0 : -2, f == GemmFormat::kW4A8MXFP4 ? 1 : 2);
  for (int64_t i = 0; i < M * K; ++i) {
    const float v = float(ival(g));
    if (h.a_bf16()) {
      const uint16_t b = num::bf16_from_float(v);
      std::memcpy(h.a.data() + 2 * i, &b, 2);
    } else {
      h.a[i] = num::e4m3_from_float(v);
    }
  }
  if (!h.a_bf16())
    for (int64_t i = 0; i < M * h.a_scale_cols; ++i) put_scale(h.a_scales, h.a_scale_dtype, i, sexp(g));
  if (h.b_fp4()) {
    for (auto& byte : h.b) byte = static_cast<uint8_t>(code(g) | (code(g) << 4));
  } else {
    for (int64_t i = 0; i < N * K; ++i) h.b[i] = num::e4m3_from_float(float(ival(g)));
  }
  const int64_t nbs = h.b_scale_rows() * h.b_scale_cols();
  if (f == GemmFormat::kW4A16NVFP4) {
    std::uniform_int_distribution<int> e4(-2, 2);
    for (int64_t i = 0; i < nbs; ++i) h.b_scales[i] = num::e4m3_from_float(std::ldexp(1.0f + 0.125f * (code(g) & 7), e4(g)));
    h.global = 0.25f;
  } else {
    for (int64_t i = 0; i < nbs; ++i) put_scale(h.b_scales, h.b_sdtype(), i, bexp(g));
  }
  return h;
}

// Real-valued data quantized like the model: per-token activations, block weights. Keeps the
// unquantized operands for the end-to-end check.
inline HostGemm make_random_gemm(GemmFormat f, int64_t M, int64_t N, int64_t K, std::mt19937_64& g,
                                 DType scale_dtype = DType::UE8M0, bool mx_a = false) {
  HostGemm h = new_gemm(f, M, N, K, scale_dtype, mx_a);
  // Activations with per-token magnitude spread and a few outliers; weights ~ N(0, 1/sqrt(K)) with
  // per-row spread, as trained linears look.
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(-2.f, 2.f);
  h.a_real.resize(M * K);
  h.b_real.resize(N * K);
  for (int64_t m = 0; m < M; ++m) {
    const float rs = std::exp2(ud(g));
    for (int64_t k = 0; k < K; ++k) {
      float v = nd(g) * rs;
      if ((g() & 1023) == 0) v *= 16.f;
      h.a_real[m * K + k] = num::bf16_to_float(num::bf16_from_float(v));
    }
  }
  for (int64_t n = 0; n < N; ++n) {
    const float rs = std::exp2(0.5f * ud(g)) / std::sqrt(float(K));
    for (int64_t k = 0; k < K; ++k) h.b_real[n * K + k] = num::bf16_to_float(num::bf16_from_float(nd(g) * rs));
  }
  auto to_bf16 = [](const std::vector<float>& v) {
    std::vector<uint16_t> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = num::bf16_from_float(v[i]);
    return o;
  };
  std::vector<uint16_t> a16 = to_bf16(h.a_real), b16 = to_bf16(h.b_real);
  if (h.a_bf16()) {
    std::memcpy(h.a.data(), a16.data(), a16.size() * 2);
  } else {
    QuantizeParams q;
    q.format = mx_a ? QuantFormat::kMXFP8 : QuantFormat::kFP8_1x128;
    q.x = make_tensor(a16.data(), DType::BF16, {M, K});
    q.q = make_tensor(h.a.data(), DType::E4M3, {M, K});
    q.scales = make_tensor(h.a_scales.data(), h.a_scale_dtype, {M, h.a_scale_cols});
    EXPECT_TRUE(quantize(q).ok());
  }
  QuantizeParams q;
  q.x = make_tensor(b16.data(), DType::BF16, {N, K});
  q.q = make_tensor(h.b.data(), h.b_dtype(), {N, K});
  q.scales = make_tensor(h.b_scales.data(), h.b_sdtype(), {h.b_scale_rows(), h.b_scale_cols()});
  switch (f) {
    case GemmFormat::kFP8Block: q.format = QuantFormat::kFP8_128x128; break;
    case GemmFormat::kW4A16NVFP4:
      q.format = QuantFormat::kNVFP4;
      q.global_scale = make_tensor(&h.global, DType::F32, {1});
      q.compute_global_scale = true;
      break;
    default: q.format = QuantFormat::kMXFP4; break;
  }
  const Status s = quantize(q);
  EXPECT_TRUE(s.ok()) << s.message();
  return h;
}

// f64 product of the unquantized operands, row-major [M, N] (no bias/residual).
inline std::vector<double> unquantized_product(const HostGemm& h) {
  std::vector<double> out(h.M * h.N);
  for (int64_t m = 0; m < h.M; ++m)
    for (int64_t n = 0; n < h.N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < h.K; ++k) acc += double(h.a_real[m * h.K + k]) * h.b_real[n * h.K + k];
      out[m * h.N + n] = acc;
    }
  return out;
}

// The same problem with every element and scale replaced by its magnitude: its product is
// sum_k |a_k b_k| per output, the scale of the accumulation error any summation order can make.
inline HostGemm abs_problem(const HostGemm& h) {
  HostGemm m = h;
  const bool a16 = h.a_bf16();
  for (size_t i = 0; i < m.a.size(); ++i)
    if (!a16 || (i & 1)) m.a[i] &= 0x7F;  // e4m3 sign, or the high byte of a bf16
  for (auto& v : m.b) v &= h.b_fp4() ? 0x77 : 0x7F;
  if (h.format == GemmFormat::kW4A16NVFP4)
    for (auto& v : m.b_scales) v &= 0x7F;
  for (int i = 1; i < static_cast<int>(m.bias.size()); i += 2) m.bias[i] &= 0x7F;
  for (size_t i = 1; i < m.residual.size(); i += 2) m.residual[i] &= 0x7F;
  m.global = std::fabs(m.global);
  // f32 scales from the quantizers and generators are positive already.
  return m;
}

// 1 - cos(x, y) over all elements (DeepGEMM's "diff").
inline double cos_diff(const std::vector<uint16_t>& x, const std::vector<double>& y) {
  double xy = 0, xx = 0, yy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double a = num::bf16_to_float(x[i]);
    xy += a * y[i], xx += a * a, yy += y[i] * y[i];
  }
  return 1.0 - 2.0 * xy / (xx + yy);
}

}  // namespace dsv4::test
