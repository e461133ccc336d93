// Bench and verify cases for the block-scaled GEMMs (include/dsv4/ops/gemm.h).
//
// `dsv4 bench gemm` times every format on the shapes (or --m/--n/--k) next to cuBLASLt bf16
// and cuBLASLt fp8 (per-tensor scales: the closest vendor GEMM, which does less work than block
// scaling) on the same shape in the same process. Inputs rotate through copies beyond 3x L2, so
// weights stream from HBM as they do in serving. `dsv4 verify gemm` compares GPU and CPU reference
// on exact (bit-for-bit) and random problems.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <sstream>

#if defined(DSV4_HAVE_CUDA)
#include <cublasLt.h>
#include <cuda_runtime.h>

#include "cublaslt_check.h"
#endif

#include "bench_util.h"
#include "dsv4/ops/gemm.h"
#include "dsv4/ops/quant.h"

namespace dsv4::bench {
namespace {

constexpr GemmFormat kFormats[] = {GemmFormat::kFP8Block, GemmFormat::kW4A8MXFP4, GemmFormat::kW4A16MXFP4,
                                   GemmFormat::kW4A16NVFP4};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), ::tolower);
  return s;
}

// --formats fp8block,w4a8-mxfp4,... (case-insensitive gemm_format_name), default all.
std::vector<GemmFormat> formats_from(const Options& o) {
  const std::string want = o.get("formats", "all");
  if (want == "all") return {std::begin(kFormats), std::end(kFormats)};
  std::vector<GemmFormat> out;
  std::stringstream ss(want);
  std::string item;
  while (std::getline(ss, item, ',')) {
    bool found = false;
    for (GemmFormat f : kFormats)
      if (lower(item) == lower(gemm_format_name(f))) out.push_back(f), found = true;
    if (!found) throw BenchError("--formats: unknown format '" + item + "' (FP8Block, W4A8-MXFP4, W4A16-MXFP4, W4A16-NVFP4)");
  }
  return out;
}

bool a_bf16(GemmFormat f) { return f == GemmFormat::kW4A16MXFP4 || f == GemmFormat::kW4A16NVFP4; }

// Byte sizes of one problem's operands (row-major, packed), in the layouts of ops/gemm.h.
struct Sizes {
  int64_t a, as, b, bs, d;
  int64_t as_cols, bs_rows, bs_cols;
};
Sizes sizes(GemmFormat f, int64_t M, int64_t N, int64_t K) {
  Sizes s{};
  s.a = M * K * (a_bf16(f) ? 2 : 1);
  s.as_cols = a_bf16(f) ? 0 : K / 128;
  s.as = M * s.as_cols;
  s.b = f == GemmFormat::kFP8Block ? N * K : N * K / 2;
  s.bs_rows = f == GemmFormat::kFP8Block ? N / 128 : N;
  s.bs_cols = f == GemmFormat::kFP8Block ? K / 128 : f == GemmFormat::kW4A16NVFP4 ? K / 16 : K / 32;
  s.bs = s.bs_rows * s.bs_cols;
  s.d = M * N * 2;
  return s;
}

void check_shape(int64_t M, int64_t N, int64_t K) {
  if (M < 1 || N < 128 || K < 128 || N % 128 || K % 128)
    throw BenchError("gemm: --m must be >= 1 and --n, --k positive multiples of 128, got " + std::to_string(M) + "x" +
                     std::to_string(N) + "x" + std::to_string(K));
}

// record(), but a failure to measure the machine's ceilings (they run cuBLASLt 8192^3 GEMMs) must
// not lose this case's timing: fall back to no ceilings and say so.
void record_safe(Result& r, const Timing& tm, const TimerOptions& t) {
  try {
    record(r, tm, t, false);
  } catch (const BenchError& e) {
    r.median_us = tm.median_us, r.min_us = tm.min_us, r.max_us = tm.max_us;
    r.p10_us = tm.p10_us, r.p90_us = tm.p90_us, r.runs = tm.runs, r.chain = t.chain;
    finalize(r, Ceilings{});
    r.note += std::string(r.note.empty() ? "" : "; ") + "no ceilings (" + e.what() + ")";
  }
}

// An operand's fill under `--data`: the default codes, or their model-like (N(0, 1)) counterpart.
Fill data_fill(Fill uniform, bool normal) {
  if (!normal) return uniform;
  switch (uniform) {
    case Fill::kE4M3: return Fill::kE4M3Normal;
    case Fill::kBF16: return Fill::kBF16Normal;
    case Fill::kBytes: return Fill::kE2M1Normal;  // packed e2m1 operands
    default: return uniform;
  }
}

#if defined(DSV4_HAVE_CUDA)

Result lt_case(bool fp8, int64_t M, int64_t N, int64_t K, const TimerOptions& t, bool normal) {
  const int64_t eb = fp8 ? 1 : 2;
  const int64_t a_bytes = M * K * eb, b_bytes = N * K * eb, set = (a_bytes + b_bytes + 255) / 256 * 256;
  const int copies = rotation_copies(set, t);
  DeviceBuffer in(set * copies), d(M * N * 2);
  fill_random(in.data(), in.size(), data_fill(fp8 ? Fill::kE4M3 : Fill::kBF16, normal), 77);
  LtGemm lt(fp8, M, N, K);
  lt.select(in.data(), in.as<uint8_t>() + a_bytes, d.data());
  Result r;
  r.op = "gemm";
  r.case_name = std::string(fp8 ? "cuBLASLt fp8 (per-tensor)" : "cuBLASLt bf16") + (normal ? " normal-data" : "");
  r.shape = shape_str({M, N, K});
  r.flops = 2.0 * M * N * K;
  r.bytes = static_cast<double>(a_bytes + b_bytes + M * N * 2);
  r.peak = fp8 ? Peak::kFP8 : Peak::kBF16;
  const Timing tm = time_gpu(
      [&](int i) {
        const uint8_t* base = in.as<uint8_t>() + (i % copies) * set;
        lt.run(base, base + a_bytes, d.data());
      },
      t);
  record_safe(r, tm, t);
  return r;
}

// cuBLASLt's own block-scaled FP8 GEMM (LtScales::kBlock): the same math as FP8Block, A per token
// and 128 K, B per 128 x 128 block, f32 scales drawn as the FP8Block case's ue8m0 (2^[-8, 8]); it
// stores D transposed (see LtGemm).
Result lt_block_case(int64_t M, int64_t N, int64_t K, const TimerOptions& t, bool normal) {
  const int64_t a_bytes = M * K, b_bytes = N * K, as_n = M * (K / 128), bs_n = N / 128 * lt_b_scale_cols(K);
  const int64_t off_b = (a_bytes + 255) / 256 * 256, off_as = off_b + (b_bytes + 255) / 256 * 256,
                off_bs = off_as + (as_n * 4 + 255) / 256 * 256, set = off_bs + (bs_n * 4 + 255) / 256 * 256;
  const int copies = rotation_copies(set, t);
  DeviceBuffer in(set * copies), d(M * N * 2);
  std::mt19937_64 rng(91);
  std::uniform_int_distribution<int> e(127 - 8, 127 + 8);
  std::vector<uint8_t> ae(as_n), be(N / 128 * (K / 128));
  std::vector<float> af(as_n), bf(bs_n);
  for (int c = 0; c < copies; ++c) {
    uint8_t* base = in.as<uint8_t>() + c * set;
    fill_random(base, a_bytes, data_fill(Fill::kE4M3, normal), 100 + c);
    fill_random(base + off_b, b_bytes, data_fill(Fill::kE4M3, normal), 300 + c);
    for (auto& v : ae) v = static_cast<uint8_t>(e(rng));
    for (auto& v : be) v = static_cast<uint8_t>(e(rng));
    lt_block_scales(ae.data(), be.data(), M, N, K, af.data(), bf.data());
    to_device(base + off_as, af.data(), as_n * 4);
    to_device(base + off_bs, bf.data(), bs_n * 4);
  }
  LtGemm lt(true, M, N, K, LtScales::kBlock);
  auto use = [&](int i) {
    const uint8_t* base = in.as<uint8_t>() + (i % copies) * set;
    lt.set_scales(reinterpret_cast<const float*>(base + off_as), reinterpret_cast<const float*>(base + off_bs));
    return base;
  };
  const uint8_t* b0 = use(0);
  lt.select(b0, b0 + off_b, d.data());
  Result r;
  r.op = "gemm";
  r.case_name = std::string("cuBLASLt fp8 (1x128/128x128 blocks)") + (normal ? " normal-data" : "");
  r.shape = shape_str({M, N, K});
  r.flops = 2.0 * M * N * K;
  r.bytes = static_cast<double>(a_bytes + b_bytes + as_n + N / 128 * (K / 128) + M * N * 2);  // ue8m0-sized scales, as FP8Block's
  r.peak = Peak::kFP8;
  const Timing tm = time_gpu(
      [&](int i) {
        const uint8_t* base = use(i);
        lt.run(base, base + off_b, d.data());
      },
      t);
  record_safe(r, tm, t);
  return r;
}
#endif

// The shapes: prefill-sized, and the decode shapes bound by weight bytes.
std::vector<std::array<int64_t, 3>> shapes_from(const Options& o) {
  if (o.has("m") || o.has("n") || o.has("k")) {
    // --m may list several row counts (one process for an M sweep: --m 64,128,129,256,257).
    std::vector<std::array<int64_t, 3>> out;
    const int64_t n = o.get_int("n", 4096), k = o.get_int("k", 7168);
    for (int64_t m : o.get_int_list("m", {4096})) out.push_back({m, n, k});
    return out;
  }
  // 384 and 129: either side of the M = 256 and M = 128 plan changes (config.h), where a cliff would show.
  return {{4096, 4096, 7168}, {4096, 7168, 2048}, {4096, 24576, 1536}, {512, 4096, 7168}, {384, 4096, 7168},
          {256, 4096, 7168},  {129, 4096, 7168},  {128, 4096, 7168},   {64, 4096, 7168},  {16, 4096, 7168},
          {16, 7168, 2048},   {16, 24576, 1536},  {1, 4096, 7168}};
}

void bench_gemm(const Options& o, std::vector<Result>& out) {
  const auto formats = formats_from(o);
  const auto shapes = shapes_from(o);
  const TimerOptions t = timer_options(o);
  const bool baselines = !o.has("no-baseline");
  // --no-workspace: run without scratch (no split-K; FP4 weights expanded inside the kernel at
  // every M), to compare with the plan the workspace allows.
  const bool use_ws = !o.has("no-workspace");
  // --b-scales narrow|wide: MXFP4 weight exponents in 2^[-3, 3] (default: a trained weight's
  // spread; W4A8's expanded path then promotes once a 128 x 128 block) or 2^[-8, 8] (spans over
  // 14 inside a block: the per-row promotion).
  const std::string b_spread = o.get("b-scales", "narrow");
  if (b_spread != "narrow" && b_spread != "wide") throw BenchError("--b-scales: narrow or wide, got '" + b_spread + "'");
  const Fill mx_b_fill = b_spread == "narrow" ? Fill::kUE8M0Narrow : Fill::kUE8M0;
  // --a-scales row|col: activation scales [M, K/128] row-major (default) or column-major (K-block
  // rows of M rounded up to 16), as the quantizer writes them given column-major strides and as
  // DeepGEMM takes them (the loader warps then read a K block's scales as contiguous runs).
  const std::string a_layout = o.get("a-scales", "row");
  if (a_layout != "row" && a_layout != "col") throw BenchError("--a-scales: row or col, got '" + a_layout + "'");
  const bool a_col = a_layout == "col";
  // --data uniform|normal: operand codes with exponents spread evenly over their fill range and
  // random mantissas (default), or values like a model's: N(0, 1) samples quantized per block as
  // DeepGEMM's tests draw them (torch.randn, amax at the format's top). Tensor-core power, hence the
  // clock of a power-capped GEMM, depends on the operand bits (docs/notes/gemm.md, round 9), so the
  // compute-bound shapes read differently under the two; cuBLASLt's baselines take the same data.
  const std::string data = o.get("data", "uniform");
  if (data != "uniform" && data != "normal") throw BenchError("--data: uniform or normal, got '" + data + "'");
  const bool normal = data == "normal";
  require_gpu();
  for (const auto& s : shapes) check_shape(s[0], s[1], s[2]);
  void* st = stream();
  for (const auto& s : shapes) {
    const int64_t M = s[0], N = s[1], K = s[2];
    double lt_fp8_us = 0, lt_bf16_us = 0, lt_block_us = 0;
#if defined(DSV4_HAVE_CUDA)
    if (baselines && std::find(formats.begin(), formats.end(), GemmFormat::kFP8Block) != formats.end()) {
      try {
        Result b = lt_block_case(M, N, K, t, normal);
        lt_block_us = b.median_us;
        out.push_back(b);
      } catch (const BenchError& e) {
        std::fprintf(stderr, "gemm bench: cuBLASLt block-scaled fp8 baseline for %lldx%lldx%lld unavailable: %s\n",
                     (long long)M, (long long)N, (long long)K, e.what());
      }
    }
    if (baselines) {
      for (bool fp8 : {false, true}) {
        try {
          Result b = lt_case(fp8, M, N, K, t, normal);
          (fp8 ? lt_fp8_us : lt_bf16_us) = b.median_us;
          out.push_back(b);
        } catch (const BenchError& e) {
          std::fprintf(stderr, "gemm bench: cuBLASLt %s baseline for %lldx%lldx%lld unavailable: %s\n",
                       fp8 ? "fp8" : "bf16", (long long)M, (long long)N, (long long)K, e.what());
        }
      }
    }
#endif
    for (GemmFormat f : formats) {
      Sizes z = sizes(f, M, N, K);
      const int64_t as_ld = (M + 15) / 16 * 16;
      if (a_col && z.as) z.as = as_ld * z.as_cols;
      const int64_t set = (z.a + 255) / 256 * 256 + (z.as + 255) / 256 * 256 + (z.b + 255) / 256 * 256 +
                          (z.bs + 255) / 256 * 256;
      const int copies = rotation_copies(set, t);
      DeviceBuffer in(set * copies), d(z.d), g(16);
      const float one = 1.f;
      to_device(g.data(), &one, 4);
      // Each copy: A | A scales | B | B scales, every piece 256-byte aligned.
      const int64_t off_as = (z.a + 255) / 256 * 256, off_b = off_as + (z.as + 255) / 256 * 256,
                    off_bs = off_b + (z.b + 255) / 256 * 256;
      for (int c = 0; c < copies; ++c) {
        uint8_t* base = in.as<uint8_t>() + c * set;
        fill_random(base, z.a, data_fill(a_bf16(f) ? Fill::kBF16 : Fill::kE4M3, normal), 100 + c);
        if (z.as) fill_random(base + off_as, z.as, Fill::kUE8M0, 200 + c);
        fill_random(base + off_b, z.b, data_fill(f == GemmFormat::kFP8Block ? Fill::kE4M3 : Fill::kBytes, normal), 300 + c);
        fill_random(base + off_bs, z.bs,
                    f == GemmFormat::kW4A16NVFP4 ? Fill::kE4M3 : f == GemmFormat::kFP8Block ? Fill::kUE8M0 : mx_b_fill, 400 + c);
      }
      const int64_t ws_bytes = use_ws ? gemm_workspace_size(f, M, N, K, Device::cuda(0)) : 0;
      DeviceBuffer ws(std::max<int64_t>(ws_bytes, 16));
      auto params = [&](int i) {
        uint8_t* base = in.as<uint8_t>() + (i % copies) * set;
        GemmParams p;
        p.format = f;
        p.a = view(base, a_bf16(f) ? DType::BF16 : DType::E4M3, {M, K}, true);
        if (z.as)
          p.a_scales = a_col ? make_strided_tensor(base + off_as, DType::UE8M0, {M, z.as_cols}, {1, as_ld}, Device::cuda(0))
                             : view(base + off_as, DType::UE8M0, {M, z.as_cols}, true);
        p.b = view(base + off_b, f == GemmFormat::kFP8Block ? DType::E4M3 : DType::E2M1, {N, K}, true);
        p.b_scales = view(base + off_bs, f == GemmFormat::kW4A16NVFP4 ? DType::E4M3 : DType::UE8M0,
                          {z.bs_rows, z.bs_cols}, true);
        if (f == GemmFormat::kW4A16NVFP4) p.b_global_scale = view(g.data(), DType::F32, {1}, true);
        p.d = view(d.data(), DType::BF16, {M, N}, true);
        if (ws_bytes > 0) p.workspace = view(ws.data(), DType::U8, {ws_bytes}, true);
        return p;
      };
      Result r;
      r.op = "gemm";
      // The workspace holds split-K partials (only at M <= 256) or the expanded FP4 B (only at
      // M >= 257): src/cuda/gemm/config.h.
      r.case_name = std::string(gemm_format_name(f)) + (ws_bytes == 0 ? "" : M <= 256 ? " splitK" : " pre-expanded") +
                    (f == GemmFormat::kW4A8MXFP4 && b_spread == "wide" ? " wide-B-scales" : "") + (normal ? " normal-data" : "") +
                    (a_col && z.as ? " col-A-scales" : "");
      r.shape = shape_str({M, N, K});
      r.flops = 2.0 * M * N * K;
      r.bytes = static_cast<double>(z.a + z.as + z.b + z.bs + z.d);
      r.peak = a_bf16(f) ? Peak::kBF16 : Peak::kFP8;
      if (baselines && (a_bf16(f) ? lt_bf16_us : lt_fp8_us) > 0) {
        r.baseline = a_bf16(f) ? "cuBLASLt bf16" : "cuBLASLt fp8";
        r.baseline_us = a_bf16(f) ? lt_bf16_us : lt_fp8_us;
      }
      const Timing tm = time_gpu([&](int i) { check_ok(gemm(params(i), st), r.case_name); }, t);
      record_safe(r, tm, t);
      if (f == GemmFormat::kFP8Block && lt_block_us > 0) {
        char buf[96];
        std::snprintf(buf, sizeof buf, "t / cuBLASLt block-scaled fp8 = %.3f", r.median_us / lt_block_us);
        r.note += std::string(r.note.empty() ? "" : "; ") + buf;
      }
      out.push_back(r);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// verify: the GPU against the CPU reference on an exact problem (integers, power-of-two scales:
// bit for bit) and on a random one quantized like the model (within one bf16 ulp + slack).

struct HostProblem {
  GemmFormat f;
  int64_t M, N, K;
  std::vector<uint8_t> a, as, b, bs;
  float g = 1.f;
};

HostProblem make_problem(GemmFormat f, int64_t M, int64_t N, int64_t K, bool exact, std::mt19937_64& rng) {
  HostProblem h{f, M, N, K, {}, {}, {}, {}, 1.f};
  const Sizes z = sizes(f, M, N, K);
  h.a.resize(z.a), h.as.resize(z.as), h.b.resize(z.b), h.bs.resize(z.bs);
  if (exact) {
    std::uniform_int_distribution<int> iv(-4, 4), se(-2, 2), bse(0, 1), code(0, 255);
    for (int64_t i = 0; i < M * K; ++i) {
      if (a_bf16(f)) {
        const uint16_t v = num::bf16_from_float(float(iv(rng)));
        std::memcpy(&h.a[2 * i], &v, 2);
      } else {
        h.a[i] = num::e4m3_from_float(float(iv(rng)));
      }
    }
    for (auto& s : h.as) s = static_cast<uint8_t>(127 + se(rng));
    if (f == GemmFormat::kFP8Block) {
      for (auto& v : h.b) v = num::e4m3_from_float(float(iv(rng)));
    } else {
      for (auto& v : h.b) v = static_cast<uint8_t>(code(rng));
    }
    for (auto& s : h.bs) {
      if (f == GemmFormat::kW4A16NVFP4) s = num::e4m3_from_float(std::ldexp(1.f + 0.125f * (code(rng) & 7), se(rng)));
      else s = static_cast<uint8_t>(127 + (f == GemmFormat::kW4A8MXFP4 ? bse(rng) : se(rng)));
    }
    h.g = 0.5f;
    return h;
  }
  std::vector<uint16_t> x = host_random_bf16(rng, M * K), w = host_random_bf16(rng, N * K);
  if (a_bf16(f)) {
    std::memcpy(h.a.data(), x.data(), z.a);
  } else {
    QuantizeParams q;
    q.format = QuantFormat::kFP8_1x128;
    q.x = view(x.data(), DType::BF16, {M, K}, false);
    q.q = view(h.a.data(), DType::E4M3, {M, K}, false);
    q.scales = view(h.as.data(), DType::UE8M0, {M, z.as_cols}, false);
    check_ok(quantize(q), "CPU quantize A");
  }
  QuantizeParams q;
  q.format = f == GemmFormat::kFP8Block ? QuantFormat::kFP8_128x128
             : f == GemmFormat::kW4A16NVFP4 ? QuantFormat::kNVFP4
                                            : QuantFormat::kMXFP4;
  q.x = view(w.data(), DType::BF16, {N, K}, false);
  q.q = view(h.b.data(), f == GemmFormat::kFP8Block ? DType::E4M3 : DType::E2M1, {N, K}, false);
  q.scales = view(h.bs.data(), f == GemmFormat::kW4A16NVFP4 ? DType::E4M3 : DType::UE8M0, {z.bs_rows, z.bs_cols}, false);
  if (f == GemmFormat::kW4A16NVFP4) {
    q.global_scale = view(&h.g, DType::F32, {1}, false);
    q.compute_global_scale = true;
  }
  check_ok(quantize(q), "CPU quantize B");
  return h;
}

GemmParams problem_params(const HostProblem& h, void* a, void* as, void* b, void* bs, void* g, void* d, bool gpu) {
  const Sizes z = sizes(h.f, h.M, h.N, h.K);
  GemmParams p;
  p.format = h.f;
  p.a = view(a, a_bf16(h.f) ? DType::BF16 : DType::E4M3, {h.M, h.K}, gpu);
  if (z.as) p.a_scales = view(as, DType::UE8M0, {h.M, z.as_cols}, gpu);
  p.b = view(b, h.f == GemmFormat::kFP8Block ? DType::E4M3 : DType::E2M1, {h.N, h.K}, gpu);
  p.b_scales = view(bs, h.f == GemmFormat::kW4A16NVFP4 ? DType::E4M3 : DType::UE8M0, {z.bs_rows, z.bs_cols}, gpu);
  if (h.f == GemmFormat::kW4A16NVFP4) p.b_global_scale = view(g, DType::F32, {1}, gpu);
  p.d = view(d, DType::BF16, {h.M, h.N}, gpu);
  return p;
}

// The CPU reference of h into want and, for random problems, sum_k |a_k b_k| per output into absref:
// the scale of any summation-order error (see compare's tolerance).
void cpu_reference(HostProblem& h, bool exact, std::vector<uint16_t>& want, std::vector<uint16_t>& absref) {
  const GemmFormat f = h.f;
  want.assign(h.M * h.N, 0x7FC0);
  absref.assign(h.M * h.N, 0x7FC0);
  check_ok(gemm(problem_params(h, h.a.data(), h.as.data(), h.b.data(), h.bs.data(), &h.g, want.data(), false)), "CPU gemm");
  if (exact) return;
  HostProblem m = h;
  for (size_t i = 0; i < m.a.size(); ++i)
    if (!a_bf16(f) || (i & 1)) m.a[i] &= 0x7F;
  for (auto& v : m.b) v &= f == GemmFormat::kFP8Block ? 0x7F : 0x77;
  if (f == GemmFormat::kW4A16NVFP4)
    for (auto& v : m.bs) v &= 0x7F;
  check_ok(gemm(problem_params(m, m.a.data(), m.as.data(), m.b.data(), m.bs.data(), &m.g, absref.data(), false)),
           "CPU gemm (magnitudes)");
}

// got against the CPU reference: bit for bit on exact problems, else within one bf16 ulp (both
// sides round) + 2^-11 of sum |a b| (f32 and the fp8 tensor cores' ~14-bit internal accumulation
// err by about 2^-13 of it).
void compare(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want, const std::vector<uint16_t>& absref,
             bool exact, VerifyReport& rep) {
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double gv = num::bf16_to_float(got[i]), wv = num::bf16_to_float(want[i]);
    const double e = std::fabs(gv - wv);
    const double tol = exact ? 0.0 : std::ldexp(std::fabs(wv), -7) + std::ldexp(double(num::bf16_to_float(absref[i])), -11);
    if (!(e <= tol)) ++bad;
    if (std::isfinite(e)) rep.max_abs_err = std::max(rep.max_abs_err, e);
    else rep.max_abs_err = INFINITY;
  }
  rep.mismatches = bad;
  rep.pass = bad == 0;
  rep.detail = std::to_string(bad) + "/" + std::to_string(got.size()) + " elements " +
               (exact ? "differ from the reference bits" : "beyond 1 bf16 ulp + 2^-11 sum|ab|");
}

#if defined(DSV4_HAVE_CUDA)
// The bench's cuBLASLt block-scaled peer (lt_block_case) on the same FP8Block problem, held to the
// same reference and tolerance: checks the scale layouts the bench hands cuBLASLt, so its timing is
// of the same math. cuBLASLt refusing the shape is reported, not failed.
VerifyReport verify_lt_block(const HostProblem& h, const std::vector<uint16_t>& want, const std::vector<uint16_t>& absref,
                             bool exact, const std::string& name) {
  VerifyReport rep;
  rep.op = "gemm";
  rep.case_name = name + " (cuBLASLt block-scaled peer)";
  rep.shape = shape_str({h.M, h.N, h.K});
  const int64_t as_n = h.M * (h.K / 128), bs_n = h.N / 128 * lt_b_scale_cols(h.K);
  std::vector<float> af(as_n), bf(bs_n);
  lt_block_scales(h.as.data(), h.bs.data(), h.M, h.N, h.K, af.data(), bf.data());
  DeviceBuffer a(h.a.size()), b(h.b.size()), as(as_n * 4), bs(bs_n * 4), d(h.M * h.N * 2);
  to_device(a.data(), h.a.data(), h.a.size());
  to_device(b.data(), h.b.data(), h.b.size());
  to_device(as.data(), af.data(), as_n * 4);
  to_device(bs.data(), bf.data(), bs_n * 4);
  fill_bytes(d.data(), 0xFF, h.M * h.N * 2);  // NaN poison
  try {
    LtGemm lt(true, h.M, h.N, h.K, LtScales::kBlock);
    lt.set_scales(as.as<float>(), bs.as<float>());
    lt.select(a.data(), b.data(), d.data());
    sync();
  } catch (const BenchError& e) {
    rep.pass = true;
    rep.detail = std::string("skipped: cuBLASLt refuses this problem (") + e.what() + ")";
    return rep;
  }
  rep.gpu_ran = true;
  std::vector<uint16_t> dt(h.M * h.N), got(h.M * h.N);
  to_host(dt.data(), d.data(), dt.size() * 2);
  for (int64_t m = 0; m < h.M; ++m)
    for (int64_t n = 0; n < h.N; ++n) got[m * h.N + n] = dt[n * h.M + m];  // cuBLASLt wrote D^T (LtGemm)
  compare(got, want, absref, exact, rep);
  return rep;
}
#endif

void verify_gemm(const Options& o, std::vector<VerifyReport>& out) {
  std::string why;
  const bool gpu_ok = gpu_usable(&why);
  const int64_t M = o.get_int("m", 129), N = o.get_int("n", 512), K = o.get_int("k", 1024);
  const auto formats = formats_from(o);
  const uint64_t seed = seed_from(o);
  check_shape(M, N, K);
  std::printf("verify gemm: %lldx%lldx%lld, seed %llu (replay with --seed %llu)%s%s\n", (long long)M, (long long)N,
              (long long)K, (unsigned long long)seed, (unsigned long long)seed, gpu_ok ? "" : "; GPU part skipped: ",
              why.c_str());
  std::mt19937_64 rng(seed);
  for (GemmFormat f : formats)
    for (bool exact : {true, false}) {
      VerifyReport rep;
      rep.op = "gemm";
      rep.case_name = std::string(gemm_format_name(f)) + (exact ? " exact" : " random");
      rep.shape = shape_str({M, N, K});
      HostProblem h = make_problem(f, M, N, K, exact, rng);
      std::vector<uint16_t> want, absref;
      cpu_reference(h, exact, want, absref);
      rep.pass = true;
      if (!gpu_ok) {
        rep.detail = "CPU reference only; GPU part skipped";
        out.push_back(rep);
        continue;
      }
      rep.gpu_ran = true;
      const Sizes z = sizes(f, M, N, K);
      DeviceBuffer a(z.a), as(std::max<int64_t>(z.as, 16)), b(z.b), bs(z.bs), g(16), d(z.d);
      to_device(a.data(), h.a.data(), z.a);
      if (z.as) to_device(as.data(), h.as.data(), z.as);
      to_device(b.data(), h.b.data(), z.b);
      to_device(bs.data(), h.bs.data(), z.bs);
      to_device(g.data(), &h.g, 4);
      fill_bytes(d.data(), 0xFF, z.d);  // NaN poison
      const int64_t ws_bytes = gemm_workspace_size(f, M, N, K, Device::cuda(0));
      DeviceBuffer ws(std::max<int64_t>(ws_bytes, 16));
      GemmParams p = problem_params(h, a.data(), as.data(), b.data(), bs.data(), g.data(), d.data(), true);
      if (ws_bytes > 0) p.workspace = view(ws.data(), DType::U8, {ws_bytes}, true);
      check_ok(gemm(p, stream()), "GPU gemm");
      std::vector<uint16_t> got(M * N);
      to_host(got.data(), d.data(), z.d);
      compare(got, want, absref, exact, rep);
      rep.detail += ws_bytes == 0 ? "" : M <= 256 ? " (split-K)" : " (B pre-expanded)";
      out.push_back(rep);
#if defined(DSV4_HAVE_CUDA)
      if (f == GemmFormat::kFP8Block) {
        // cuBLASLt refuses M = 129 (144 runs): the peer then gets a problem of its own, M rounded up to 16.
        if (M % 16 == 0) {
          out.push_back(verify_lt_block(h, want, absref, exact, rep.case_name));
        } else {
          HostProblem h16 = make_problem(f, (M + 15) / 16 * 16, N, K, exact, rng);
          std::vector<uint16_t> want16, absref16;
          cpu_reference(h16, exact, want16, absref16);
          out.push_back(verify_lt_block(h16, want16, absref16, exact, rep.case_name));
        }
      }
#endif
    }
}

DSV4_BENCH_CASE("gemm", bench_gemm);
DSV4_VERIFY_CASE("gemm", verify_gemm);

}  // namespace
}  // namespace dsv4::bench
