// Bench and verify cases for quantize / dequantize (include/dsv4/ops/quant.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "bench_util.h"
#include "dsv4/ops/quant.h"

namespace dsv4::bench {
namespace {

constexpr QuantFormat kFormats[] = {QuantFormat::kMXFP4, QuantFormat::kNVFP4, QuantFormat::kMXFP8,
                                    QuantFormat::kFP8_1x128, QuantFormat::kFP8_128x128};

bool is_fp4(QuantFormat f) { return f == QuantFormat::kMXFP4 || f == QuantFormat::kNVFP4; }
DType q_dtype(QuantFormat f) { return is_fp4(f) ? DType::E2M1 : DType::E4M3; }
DType s_dtype(QuantFormat f, bool f32_scales) {
  if (f == QuantFormat::kNVFP4) return DType::E4M3;
  return f32_scales ? DType::F32 : DType::UE8M0;
}

struct Sizes {
  int64_t M, K, srows, scols;
  int64_t x_bytes, q_bytes, s_bytes;
};
Sizes sizes(QuantFormat f, int64_t M, int64_t K, DType sdt, DType wide = DType::BF16) {
  Sizes s{M, K, (M + quant_block_m(f) - 1) / quant_block_m(f), K / quant_block_k(f), 0, 0, 0};
  s.x_bytes = M * K * dtype_bits(wide) / 8;
  s.q_bytes = M * K * dtype_bits(q_dtype(f)) / 8;
  s.s_bytes = s.srows * s.scols * dtype_bits(sdt) / 8;
  return s;
}

// --formats mxfp4,nvfp4,... (case-insensitive names of quant_format_name), default all five.
std::vector<QuantFormat> formats_from(const Options& o) {
  const std::string want = o.get("formats", "all");
  if (want == "all") return {std::begin(kFormats), std::end(kFormats)};
  std::vector<QuantFormat> out;
  std::stringstream ss(want);
  std::string item;
  while (std::getline(ss, item, ',')) {
    bool found = false;
    for (QuantFormat f : kFormats) {
      std::string name = quant_format_name(f);
      std::string a = item, b = name;
      std::transform(a.begin(), a.end(), a.begin(), ::tolower);
      std::transform(b.begin(), b.end(), b.begin(), ::tolower);
      if (a == b) out.push_back(f), found = true;
    }
    if (!found) throw BenchError("--formats: unknown format '" + item + "' (MXFP4, NVFP4, MXFP8, FP8_1x128, FP8_128x128)");
  }
  return out;
}

void check_shape(QuantFormat f, int64_t M, int64_t K) {
  if (M < 1 || K < 1 || K % 128 != 0)
    throw BenchError("--m must be >= 1 and --k a positive multiple of 128 (every format's block), got " +
                     std::to_string(M) + " x " + std::to_string(K) + " for " + quant_format_name(f));
}

// ---------------------------------------------------------------------------------------------
// bench

void bench_quant(const Options& o, std::vector<Result>& out) {
  // 16384 x 8192 bf16 = 256 MiB of input to quantize: far beyond L2, like a large weight.
  const int64_t M = o.get_int("m", 16384), K = o.get_int("k", 8192);
  const auto formats = formats_from(o);
  const TimerOptions t = timer_options(o);
  require_gpu();
  for (QuantFormat f : formats) check_shape(f, M, K);
  void* st = stream();

  // Every kernel variant: the wide tensor (x, or dequantize's out) in bf16 and f32, and the FP8
  // formats with ue8m0 and f32 scales (--wide / --scales narrow the sweep).
  const std::string wide_opt = o.get("wide", "bf16,f32"), scales_opt = o.get("scales", "ue8m0,f32");
  std::vector<DType> wides;
  if (wide_opt.find("bf16") != std::string::npos) wides.push_back(DType::BF16);
  if (wide_opt.find("f32") != std::string::npos) wides.push_back(DType::F32);
  if (wides.empty()) throw BenchError("--wide: expected bf16 and/or f32, got '" + wide_opt + "'");
  std::vector<bool> scale_kinds;
  if (scales_opt.find("ue8m0") != std::string::npos) scale_kinds.push_back(false);
  if (scales_opt.find("f32") != std::string::npos) scale_kinds.push_back(true);
  if (scale_kinds.empty()) throw BenchError("--scales: expected ue8m0 and/or f32, got '" + scales_opt + "'");

  for (QuantFormat f : formats)
  for (DType wide : wides)
  for (bool f32_scales : scale_kinds) {
    const bool fp8_blocks = f == QuantFormat::kFP8_1x128 || f == QuantFormat::kFP8_128x128;
    if (f32_scales && !fp8_blocks) {
      if (scale_kinds.size() > 1) continue;  // the format has one scale type: benched once
      f32_scales = false;
    }
    const DType sdt = s_dtype(f, f32_scales);
    const Sizes sz = sizes(f, M, K, sdt, wide);
    const bool nv = f == QuantFormat::kNVFP4;
    const std::string wname(dtype_name(wide));
    const std::string variant = std::string(quant_format_name(f)) + (fp8_blocks ? (f32_scales ? " f32-scale" : " ue8m0") : "");
    const std::string shape = shape_str({M, K});
    const int xcopies = rotation_copies(sz.x_bytes, t);
    DeviceBuffer x(sz.x_bytes * xcopies), g(16);
    fill_random(x.data(), x.size(), wide == DType::BF16 ? Fill::kBF16 : Fill::kF32, 1000 + static_cast<int>(f));

    auto qparams = [&](int i, void* q, void* s, bool compute_g) {
      QuantizeParams p;
      p.format = f;
      p.x = view(static_cast<uint8_t*>(x.data()) + (i % xcopies) * sz.x_bytes, wide, {M, K}, true);
      p.q = view(q, q_dtype(f), {M, K}, true);
      p.scales = view(s, sdt, {sz.srows, sz.scols}, true);
      if (nv) p.global_scale = view(g.data(), DType::F32, {1}, true);
      p.compute_global_scale = compute_g;
      return p;
    };

    // The dequantize inputs: `qcopies` copies of a real quantization of x (q and scales back to back).
    const int64_t qs_bytes = (sz.q_bytes + sz.s_bytes + 255) / 256 * 256;
    const int qcopies = rotation_copies(qs_bytes, t);
    DeviceBuffer qs(qs_bytes * qcopies);
    auto qptr = [&](int i) { return static_cast<uint8_t*>(qs.data()) + (i % qcopies) * qs_bytes; };
    check_ok(quantize(qparams(0, qptr(0), qptr(0) + sz.q_bytes, nv), st), "quantize");
    for (int c = 1; c < qcopies; ++c) copy_device(qptr(c), qptr(0), qs_bytes);
    sync();

    {  // quantize (NVFP4 with the caller's global scale, as a serving engine with calibrated weights)
      DeviceBuffer q(sz.q_bytes), s(sz.s_bytes);
      Result r;
      r.op = "quant";
      r.case_name = "quantize " + variant;
      r.shape = shape + " " + wname;
      r.bytes = static_cast<double>(sz.x_bytes + sz.q_bytes + sz.s_bytes + (nv ? 4 : 0));
      const Timing tm = time_gpu([&](int i) { check_ok(quantize(qparams(i, q.data(), s.data(), false), st), r.case_name); }, t);
      record(r, tm, t);
      out.push_back(r);
      if (nv) {
        Result r2 = r;
        r2.case_name = "quantize NVFP4 +amax";
        r2.bytes = static_cast<double>(2 * sz.x_bytes + sz.q_bytes + sz.s_bytes + 4);
        r2.baseline.clear();
        r2.note = "computes the global scale too: bytes count x read twice (amax pass, then quantize)";
        const Timing tm2 = time_gpu([&](int i) { check_ok(quantize(qparams(i, q.data(), s.data(), true), st), r2.case_name); }, t);
        record(r2, tm2, t);
        out.push_back(r2);
      }
    }
    {  // dequantize to bf16
      DeviceBuffer y(sz.x_bytes);
      Result r;
      r.op = "quant";
      r.case_name = "dequantize " + variant;
      r.shape = shape + " ->" + wname;
      r.bytes = static_cast<double>(sz.q_bytes + sz.s_bytes + sz.x_bytes + (nv ? 4 : 0));
      const Timing tm = time_gpu(
          [&](int i) {
            DequantizeParams p;
            p.format = f;
            p.q = view(qptr(i), q_dtype(f), {M, K}, true);
            p.scales = view(qptr(i) + sz.q_bytes, sdt, {sz.srows, sz.scols}, true);
            if (nv) p.global_scale = view(g.data(), DType::F32, {1}, true);
            p.out = view(y.data(), wide, {M, K}, true);
            check_ok(dequantize(p, st), r.case_name);
          },
          t);
      record(r, tm, t);
      out.push_back(r);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// verify

// The CPU reference against the format's error bound (only a sanity check: the reference is the
// oracle, but a broken codec or scale rule shows up here even with no GPU to compare against).
// Returns the number of elements outside the bound; a block holding NaN/inf must decode to NaN.
int64_t check_round_trip(QuantFormat f, const std::vector<uint16_t>& x, const std::vector<uint16_t>& y, int64_t M,
                         int64_t K, double* max_err) {
  const int bm = quant_block_m(f), bk = quant_block_k(f);
  const double rel = is_fp4(f) ? 1.0 / 3 : 0.0;  // fp4: one scale step, scale < amax/3
  int64_t bad = 0;
  for (int64_t r0 = 0; r0 < M; r0 += bm)
    for (int64_t c0 = 0; c0 < K; c0 += bk) {
      const int64_t r1 = std::min(M, r0 + bm), c1 = c0 + bk;
      double amax = 0;
      bool finite = true;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          const float v = num::bf16_to_float(x[r * K + c]);
          if (!std::isfinite(v)) finite = false;
          else amax = std::max(amax, static_cast<double>(std::fabs(v)));
        }
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          const double a = num::bf16_to_float(x[r * K + c]), b = num::bf16_to_float(y[r * K + c]);
          if (!finite) {
            bad += !std::isnan(b);
            continue;
          }
          // fp8: half an e4m3 step (2^-4 relative) plus the bf16 rounding of the output, plus
          // the subnormal step near zero.
          const double bound = is_fp4(f) ? rel * amax * 1.001 + 1e-30 : std::fabs(a) * (0.0625 + 0.0039) + amax * 1.6e-5;
          const double e = std::fabs(a - b);
          if (!(e <= bound)) ++bad;
          if (std::isfinite(e)) *max_err = std::max(*max_err, e);
        }
    }
  return bad;
}

void verify_quant(const Options& o, std::vector<VerifyReport>& out) {
  std::string why;
  const bool gpu_ok = gpu_usable(&why);
  const int64_t M = o.get_int("m", gpu_ok ? 4096 : 256), K = o.get_int("k", gpu_ok ? 7168 : 1024);
  const auto formats = formats_from(o);
  const uint64_t seed = seed_from(o);
  for (QuantFormat f : formats) check_shape(f, M, K);
  std::printf("verify quant: %lld x %lld, seed %llu (replay with --seed %llu)%s%s\n", (long long)M, (long long)K,
              (unsigned long long)seed, (unsigned long long)seed, gpu_ok ? "" : "; GPU part skipped: ", why.c_str());
  std::mt19937_64 rng(seed);
  std::vector<uint16_t> x = host_random_bf16(rng, M * K);
  // One NaN block, one inf block, one all-zero block (the minimum-scale clamp).
  x[std::min<int64_t>(M - 1, 3) * K + 5] = 0x7FC0;
  x[std::min<int64_t>(M - 1, 1) * K + K - 1] = 0xFF80;
  for (int64_t c = 128; c < 256 && c < K; ++c) x[(M - 1) * K + c] = 0;

  struct Variant {
    QuantFormat f;
    bool f32_scales;
  };
  std::vector<Variant> variants;
  for (QuantFormat f : formats) {
    variants.push_back({f, false});
    if (f == QuantFormat::kFP8_1x128) variants.push_back({f, true});
  }
  for (const Variant& v : variants) {
    const QuantFormat f = v.f;
    const bool nv = f == QuantFormat::kNVFP4;
    const DType sdt = s_dtype(f, v.f32_scales);
    const Sizes sz = sizes(f, M, K, sdt);
    VerifyReport rep;
    rep.op = "quant";
    rep.case_name = std::string(quant_format_name(f)) + (v.f32_scales ? " (f32 scales)" : "");
    rep.shape = shape_str({M, K});

    std::vector<uint8_t> q(sz.q_bytes), s(sz.s_bytes);
    std::vector<uint16_t> y(M * K, 0x7FC0);
    float g = 0;
    QuantizeParams qp;
    qp.format = f;
    qp.x = view(x.data(), DType::BF16, {M, K}, false);
    qp.q = view(q.data(), q_dtype(f), {M, K}, false);
    qp.scales = view(s.data(), sdt, {sz.srows, sz.scols}, false);
    if (nv) qp.global_scale = view(&g, DType::F32, {1}, false);
    qp.compute_global_scale = nv;
    check_ok(quantize(qp), "CPU quantize");
    DequantizeParams dp;
    dp.format = f;
    dp.q = qp.q;
    dp.scales = qp.scales;
    dp.global_scale = qp.global_scale;
    dp.out = view(y.data(), DType::BF16, {M, K}, false);
    check_ok(dequantize(dp), "CPU dequantize");
    double cpu_err = 0;
    const int64_t cpu_bad = check_round_trip(f, x, y, M, K, &cpu_err);
    std::ostringstream detail;
    detail << "CPU round trip: " << cpu_bad << " elements outside the format bound (max err " << cpu_err << ")";
    rep.pass = cpu_bad == 0;
    rep.mismatches = cpu_bad;

    if (gpu_ok) {
      rep.gpu_ran = true;
      void* st = stream();
      DeviceBuffer dx(sz.x_bytes), dq(sz.q_bytes), ds(sz.s_bytes), dg(16), dy(sz.x_bytes);
      to_device(dx.data(), x.data(), sz.x_bytes);
      // Poison: bytes a kernel fails to write cannot match the reference by accident (0xA5 decodes
      // to neither the NaN scale nor zero).
      fill_bytes(dq.data(), 0xA5, sz.q_bytes);
      fill_bytes(ds.data(), 0xA5, sz.s_bytes);
      fill_bytes(dg.data(), 0xFF, 16);
      QuantizeParams gp = qp;
      gp.x = view(dx.data(), DType::BF16, {M, K}, true);
      gp.q = view(dq.data(), q_dtype(f), {M, K}, true);
      gp.scales = view(ds.data(), sdt, {sz.srows, sz.scols}, true);
      if (nv) gp.global_scale = view(dg.data(), DType::F32, {1}, true);
      check_ok(quantize(gp, st), "GPU quantize");
      std::vector<uint8_t> gq(sz.q_bytes), gs(sz.s_bytes);
      float gg = 0;
      to_host(gq.data(), dq.data(), sz.q_bytes);
      to_host(gs.data(), ds.data(), sz.s_bytes);
      if (nv) to_host(&gg, dg.data(), 4);
      int64_t qbad = 0, sbad = 0;
      for (int64_t i = 0; i < sz.q_bytes; ++i) qbad += gq[i] != q[i];
      for (int64_t i = 0; i < sz.s_bytes; ++i) sbad += gs[i] != s[i];
      const bool gbad = nv && !same_bits(gg, g);
      // Dequantize the reference's q/scales on the GPU into a NaN-poisoned output.
      to_device(dq.data(), q.data(), sz.q_bytes);
      to_device(ds.data(), s.data(), sz.s_bytes);
      if (nv) to_device(dg.data(), &g, 4);
      fill_bytes(dy.data(), 0xFF, sz.x_bytes);
      DequantizeParams gdp = dp;
      gdp.q = gp.q;
      gdp.scales = gp.scales;
      gdp.global_scale = gp.global_scale;
      gdp.out = view(dy.data(), DType::BF16, {M, K}, true);
      check_ok(dequantize(gdp, st), "GPU dequantize");
      std::vector<uint16_t> gy(M * K);
      to_host(gy.data(), dy.data(), sz.x_bytes);
      int64_t ybad = 0;
      for (int64_t i = 0; i < M * K; ++i) {
        // Bit equality, except that any NaN equals any NaN: the payload of a NaN output is not part
        // of the contract (the GPU's hardware bf16 rounding returns the canonical NaN).
        const bool both_nan = std::isnan(num::bf16_to_float(gy[i])) && std::isnan(num::bf16_to_float(y[i]));
        if (gy[i] != y[i] && !both_nan) ++ybad;
        const double e = std::fabs(num::bf16_to_float(gy[i]) - num::bf16_to_float(y[i]));
        if (std::isfinite(e)) rep.max_abs_err = std::max(rep.max_abs_err, e);
        else if (std::isnan(num::bf16_to_float(gy[i])) != std::isnan(num::bf16_to_float(y[i]))) rep.max_abs_err = INFINITY;
      }
      rep.mismatches += qbad + sbad + ybad + (gbad ? 1 : 0);
      rep.pass = rep.pass && qbad == 0 && sbad == 0 && ybad == 0 && !gbad;
      detail << "; GPU vs CPU: q " << qbad << "/" << sz.q_bytes << " bytes differ, scales " << sbad << "/" << sz.s_bytes
             << " differ" << (nv ? (gbad ? ", global scale differs" : ", global scale equal") : "") << ", dequant "
             << ybad << "/" << M * K << " elements differ";
    } else {
      detail << "; GPU part skipped";
    }
    rep.detail = detail.str();
    out.push_back(rep);
  }
}

DSV4_BENCH_CASE("quant", bench_quant);
DSV4_VERIFY_CASE("quant", verify_quant);

}  // namespace
}  // namespace dsv4::bench
