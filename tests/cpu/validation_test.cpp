// Every validation rule of src/core/quant.cpp and src/core/kv_cache.cpp fires, with a message that
// names the op and the argument, and nothing is written: each case starts from a valid call (the
// baseline, checked to succeed), breaks one thing, and compares the whole poisoned arena holding
// every buffer before and after.
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "cpu/ref_test_util.h"
#include "dsv4/ops/kv_cache.h"
#include "dsv4/ops/quant.h"

namespace dsv4::test {
namespace {

constexpr int64_t kM = 4, kK = 128;  // K a multiple of every format's block

DType default_scale_dtype(QuantFormat f) { return f == QuantFormat::kNVFP4 ? DType::E4M3 : DType::UE8M0; }
bool is_fp4(QuantFormat f) { return f == QuantFormat::kMXFP4 || f == QuantFormat::kNVFP4; }

TensorView shifted(TensorView t, int64_t bytes) {
  t.data = static_cast<uint8_t*>(t.data) + bytes;
  return t;
}
TensorView on_cuda(TensorView t) {
  t.device = Device::cuda(0);
  return t;
}
TensorView with_dtype(TensorView t, DType d) {
  t.dtype = d;
  return t;
}

// A valid quantize and dequantize call for one format, all buffers in one arena.
struct QuantSetup {
  Arena arena{1 << 16, 0x3C};  // 0x3C..: finite bf16/f32 values and a positive global scale
  QuantizeParams qp;
  DequantizeParams dp;

  explicit QuantSetup(QuantFormat f, DType sdt = DType::U8) {
    if (sdt == DType::U8) sdt = default_scale_dtype(f);
    const int64_t SM = (kM + quant_block_m(f) - 1) / quant_block_m(f), SK = kK / quant_block_k(f);
    void* x = arena.alloc(kM * kK * 2);
    void* q = arena.alloc(kM * kK);
    void* s = arena.alloc(SM * SK * 4);
    void* g = arena.alloc(4);
    void* out = arena.alloc(kM * kK * 4);
    qp.format = dp.format = f;
    qp.x = make_tensor(x, DType::BF16, {kM, kK});
    qp.q = dp.q = make_tensor(q, is_fp4(f) ? DType::E2M1 : DType::E4M3, {kM, kK});
    qp.scales = dp.scales = make_tensor(s, sdt, {SM, SK});
    if (f == QuantFormat::kNVFP4) qp.global_scale = dp.global_scale = make_tensor(g, DType::F32, {1});
    dp.out = make_tensor(out, DType::F32, {kM, kK});
  }
};

struct QuantCase {
  const char* what;
  QuantFormat f;
  DType sdt;  // U8 = the format's default
  bool dequant;
  std::function<void(QuantSetup&)> breakit;
  std::vector<std::string> want;  // substrings of the message (the op name is checked too)
};

void run_quant_case(const QuantCase& c) {
  SCOPED_TRACE(c.what);
  {
    QuantSetup ok(c.f, c.sdt);
    const Status st = c.dequant ? dequantize(ok.dp) : quantize(ok.qp);
    ASSERT_TRUE(st.ok()) << "baseline fails: " << st.message();
  }
  QuantSetup s(c.f, c.sdt);
  c.breakit(s);
  const auto snap = s.arena.snapshot();
  const Status st = c.dequant ? dequantize(s.dp) : quantize(s.qp);
  std::vector<std::string> want = c.want;
  want.push_back(c.dequant ? "dequantize: " : "quantize: ");
  EXPECT_TRUE(has_all(st, StatusCode::kInvalidArgument, want));
  EXPECT_EQ(s.arena.first_change(snap), -1) << "a rejected call wrote to its buffers";
}

using QF = QuantFormat;
constexpr DType kDef = DType::U8;

TEST(Validation, QuantizeRules) {
  const std::vector<QuantCase> cases = {
      {"unknown format", QF::kMXFP4, kDef, false, [](QuantSetup& s) { s.qp.format = static_cast<QF>(9); },
       {"unknown QuantFormat 9"}},
      {"x undefined", QF::kMXFP4, kDef, false, [](QuantSetup& s) { s.qp.x = TensorView{}; },
       {"'x'", "1 to 6 dimensions", "empty (undefined)"}},
      {"q undefined", QF::kMXFP4, kDef, false, [](QuantSetup& s) { s.qp.q = TensorView{}; }, {"'q'", "1 to 6 dimensions"}},
      {"scales undefined", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.scales = TensorView{}; },
       {"'scales'", "1 to 6 dimensions"}},
      {"x 7 dims", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.x.ndim = 7; }, {"'x'", "1 to 6 dimensions"}},
      {"x negative extent", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.x.shape[0] = -1; },
       {"'x'", "non-negative extents"}},
      {"x negative stride", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.x.strides[0] = -128; },
       {"'x'", "non-negative strides"}},
      {"x unknown dtype", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.x.dtype = static_cast<DType>(42); },
       {"'x'", "known dtype"}},
      {"x null data", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.x.data = nullptr; },
       {"'x'", "non-null data pointer"}},
      {"q e2m1 inner stride", QF::kMXFP4, kDef, false, [](QuantSetup& s) { s.qp.q.strides[1] = 2; },
       {"'q'", "(packed e2m1) have innermost stride 1"}},
      {"q e2m1 odd row stride", QF::kMXFP4, kDef, false, [](QuantSetup& s) { s.qp.q.strides[0] = 129; },
       {"'q'", "even outer strides"}},
      {"x 3 dims", QF::kMXFP8, kDef, false,
       [](QuantSetup& s) { s.qp.x = make_tensor(s.qp.x.data, DType::BF16, {1, kM, kK}); }, {"'x'", "have 2 dimensions"}},
      {"x f16", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.x.dtype = DType::F16; },
       {"'x'", "must be bf16 or f32", "got f16 [4, 128]"}},
      {"x inner stride", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.x.strides[1] = 2; },
       {"'x'", "innermost stride 1"}},
      {"K not a multiple of the block", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.x.shape[1] = 100; },
       {"'x'", "K = 100", "MXFP8", "multiple of 32"}},
      {"K not a multiple of 128", QF::kFP8_1x128, kDef, false, [](QuantSetup& s) { s.qp.x.shape[1] = 64; },
       {"'x'", "K = 64", "multiple of 128"}},
      {"q e4m3 for MXFP4", QF::kMXFP4, kDef, false, [](QuantSetup& s) { s.qp.q.dtype = DType::E4M3; },
       {"'q'", "must be e2m1"}},
      {"q e2m1 for FP8", QF::kFP8_128x128, kDef, false, [](QuantSetup& s) { s.qp.q.dtype = DType::E2M1; },
       {"'q'", "must be e4m3"}},
      {"q shape", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.q.shape[1] = 64; }, {"'q'", "have shape [4, 128]"}},
      {"q inner stride", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.q.strides[1] = 2; },
       {"'q'", "innermost stride 1"}},
      {"MXFP4 f32 scales", QF::kMXFP4, kDef, false, [](QuantSetup& s) { s.qp.scales.dtype = DType::F32; },
       {"'scales'", "must be ue8m0,"}},
      {"NVFP4 ue8m0 scales", QF::kNVFP4, kDef, false, [](QuantSetup& s) { s.qp.scales.dtype = DType::UE8M0; },
       {"'scales'", "must be e4m3"}},
      {"FP8 e4m3 scales", QF::kFP8_1x128, kDef, false, [](QuantSetup& s) { s.qp.scales.dtype = DType::E4M3; },
       {"'scales'", "must be ue8m0 or f32"}},
      {"scales shape", QF::kMXFP4, kDef, false, [](QuantSetup& s) { s.qp.scales.shape[1] = 3; },
       {"'scales'", "have shape [4, 4]"}},
      {"128x128 scales shape", QF::kFP8_128x128, kDef, false,
       [](QuantSetup& s) { s.qp.scales = make_tensor(s.qp.scales.data, DType::UE8M0, {4, 1}); },
       {"'scales'", "have shape [1, 1]"}},
      {"x misaligned", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.x = shifted(s.qp.x, 2); },
       {"'x'", "aligned to 16 bytes"}},
      {"x row stride", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.x.strides[0] = 132; },
       {"'x'", "row stride that is a multiple of 16 bytes"}},
      {"q misaligned", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.q = shifted(s.qp.q, 1); },
       {"'q'", "aligned to 16 bytes"}},
      {"q row stride (e4m3)", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.q.strides[0] = 136; },
       {"'q'", "row stride that is a multiple of 16 bytes"}},
      {"q row stride (NVFP4)", QF::kNVFP4, kDef, false, [](QuantSetup& s) { s.qp.q.strides[0] = 136; },
       {"'q'", "row stride that is a multiple of 8 bytes"}},
      {"f32 scales misaligned", QF::kFP8_1x128, DType::F32, false,
       [](QuantSetup& s) { s.qp.scales = shifted(s.qp.scales, 2); }, {"'scales'", "aligned to 4 bytes"}},
      {"NVFP4 without global_scale", QF::kNVFP4, kDef, false, [](QuantSetup& s) { s.qp.global_scale = TensorView{}; },
       {"'global_scale'", "1 to 6 dimensions"}},
      {"global_scale bf16", QF::kNVFP4, kDef, false,
       [](QuantSetup& s) { s.qp.global_scale = with_dtype(s.qp.global_scale, DType::BF16); },
       {"'global_scale'", "must be f32"}},
      {"global_scale shape", QF::kNVFP4, kDef, false, [](QuantSetup& s) { s.qp.global_scale.shape[0] = 2; },
       {"'global_scale'", "have shape [1]"}},
      {"global_scale misaligned", QF::kNVFP4, kDef, false,
       [](QuantSetup& s) { s.qp.global_scale = shifted(s.qp.global_scale, 1); },
       {"'global_scale'", "aligned to 4 bytes"}},
      {"global_scale for MXFP4", QF::kMXFP4, kDef, false,
       [](QuantSetup& s) { s.qp.global_scale = make_tensor(s.qp.scales.data, DType::F32, {1}); },
       {"'global_scale'", "be empty for MXFP4"}},
      {"global_scale for FP8", QF::kFP8_128x128, kDef, false,
       [](QuantSetup& s) { s.qp.global_scale = make_tensor(s.qp.scales.data, DType::F32, {1}); },
       {"'global_scale'", "be empty for FP8_128x128"}},
      {"q overlaps x", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.q.data = s.qp.x.data; },
       {"'q' and 'x'", "must not overlap"}},
      {"scales overlap x", QF::kMXFP8, kDef, false,
       [](QuantSetup& s) { s.qp.scales.data = static_cast<uint8_t*>(s.qp.x.data) + 1000; },
       {"'scales' and 'x'", "must not overlap"}},
      {"scales overlap q", QF::kMXFP4, kDef, false, [](QuantSetup& s) { s.qp.scales.data = s.qp.q.data; },
       {"'scales' and 'q'", "must not overlap"}},
      {"computed global_scale overlaps x", QF::kNVFP4, kDef, false,
       [](QuantSetup& s) {
         s.qp.compute_global_scale = true;
         s.qp.global_scale.data = s.qp.x.data;
       },
       {"'global_scale' and 'x'"}},
      {"computed global_scale overlaps q", QF::kNVFP4, kDef, false,
       [](QuantSetup& s) {
         s.qp.compute_global_scale = true;
         s.qp.global_scale.data = s.qp.q.data;
       },
       {"'global_scale' and 'q'"}},
      {"computed global_scale overlaps scales", QF::kNVFP4, kDef, false,
       [](QuantSetup& s) {
         s.qp.compute_global_scale = true;
         s.qp.global_scale.data = s.qp.scales.data;
       },
       {"'global_scale' and 'scales'"}},
      {"q on cuda", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.q = on_cuda(s.qp.q); },
       {"'q'", "different device", "'x'", "cuda:0", "cpu:0"}},
      {"scales on cuda", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.scales = on_cuda(s.qp.scales); },
       {"'scales'", "different device"}},
      {"global_scale on cuda", QF::kNVFP4, kDef, false,
       [](QuantSetup& s) { s.qp.global_scale = on_cuda(s.qp.global_scale); }, {"'global_scale'", "different device"}},
      {"x on cuda", QF::kMXFP8, kDef, false, [](QuantSetup& s) { s.qp.x = on_cuda(s.qp.x); },
       {"'q'", "different device", "'x'"}},
      // The CPU backend's data-dependent check.
      {"global_scale NaN", QF::kNVFP4, kDef, false,
       [](QuantSetup& s) { *s.qp.global_scale.ptr<float>() = std::numeric_limits<float>::quiet_NaN(); },
       {"'global_scale'", "nan", "finite"}},
      {"global_scale negative", QF::kNVFP4, kDef, false, [](QuantSetup& s) { *s.qp.global_scale.ptr<float>() = -2.5f; },
       {"'global_scale'", "-2.5", ">= 0"}},
  };
  for (const auto& c : cases) run_quant_case(c);
}

TEST(Validation, DequantizeRules) {
  const std::vector<QuantCase> cases = {
      {"out undefined", QF::kMXFP4, kDef, true, [](QuantSetup& s) { s.dp.out = TensorView{}; }, {"'out'", "1 to 6"}},
      {"out f16", QF::kMXFP4, kDef, true, [](QuantSetup& s) { s.dp.out.dtype = DType::F16; },
       {"'out'", "must be bf16 or f32"}},
      {"out K", QF::kNVFP4, kDef, true, [](QuantSetup& s) { s.dp.out.shape[1] = 24; }, {"'out'", "K = 24", "multiple of 16"}},
      {"out misaligned", QF::kMXFP8, kDef, true, [](QuantSetup& s) { s.dp.out = shifted(s.dp.out, 4); },
       {"'out'", "aligned to 16 bytes"}},
      {"q shape", QF::kMXFP8, kDef, true, [](QuantSetup& s) { s.dp.q.shape[0] = 3; }, {"'q'", "have shape [4, 128]"}},
      {"scales dtype", QF::kMXFP8, kDef, true, [](QuantSetup& s) { s.dp.scales.dtype = DType::E4M3; },
       {"'scales'", "must be ue8m0"}},
      {"NVFP4 without global_scale", QF::kNVFP4, kDef, true, [](QuantSetup& s) { s.dp.global_scale = TensorView{}; },
       {"'global_scale'"}},
      {"global_scale for MXFP8", QF::kMXFP8, kDef, true,
       [](QuantSetup& s) { s.dp.global_scale = make_tensor(s.dp.scales.data, DType::F32, {1}); },
       {"'global_scale'", "be empty for MXFP8"}},
      {"out overlaps q", QF::kMXFP8, kDef, true, [](QuantSetup& s) { s.dp.out.data = s.dp.q.data; }, {"'out' and 'q'"}},
      {"out overlaps scales", QF::kFP8_1x128, DType::F32, true,
       [](QuantSetup& s) { s.dp.scales.data = static_cast<uint8_t*>(s.dp.out.data) + 64; }, {"'out' and 'scales'"}},
      {"out overlaps global_scale", QF::kNVFP4, kDef, true,
       [](QuantSetup& s) { s.dp.global_scale.data = static_cast<uint8_t*>(s.dp.out.data) + 128; },
       {"'out' and 'global_scale'"}},
      {"out on cuda", QF::kMXFP8, kDef, true, [](QuantSetup& s) { s.dp.out = on_cuda(s.dp.out); },
       {"'out'", "different device"}},
  };
  for (const auto& c : cases) run_quant_case(c);
}

#if !defined(DSV4_HAVE_CUDA)
TEST(Validation, AllOnCudaWithoutCudaBuildIsUnsupported) {
  QuantSetup s(QF::kMXFP8);
  s.qp.x = on_cuda(s.qp.x);
  s.qp.q = on_cuda(s.qp.q);
  s.qp.scales = on_cuda(s.qp.scales);
  const auto snap = s.arena.snapshot();
  EXPECT_TRUE(has_all(quantize(s.qp), StatusCode::kUnsupported, {"quantize", "no CUDA"}));
  EXPECT_EQ(s.arena.first_change(snap), -1);
}
#endif

// ---- swizzle ----

struct SwizzleSetup {
  Arena arena{1 << 14, 0x11};
  TensorView mat, flat;  // [5, 3] and [512]
  SwizzleSetup() {
    mat = make_tensor(arena.alloc(15), DType::UE8M0, {5, 3});
    flat = make_tensor(arena.alloc(512), DType::UE8M0, {512});
  }
};

TEST(Validation, SwizzleRules) {
  struct Case {
    const char* what;
    bool unswizzle;
    std::function<void(SwizzleSetup&)> breakit;
    std::vector<std::string> want;
  };
  const std::vector<Case> cases = {
      {"src undefined", false, [](SwizzleSetup& s) { s.mat = TensorView{}; }, {"'src'", "1 to 6"}},
      {"dst undefined", false, [](SwizzleSetup& s) { s.flat = TensorView{}; }, {"'dst'", "1 to 6"}},
      {"src 1-D", false, [](SwizzleSetup& s) { s.mat = make_tensor(s.mat.data, DType::UE8M0, {15}); },
       {"'src'", "have 2 dimensions"}},
      {"src f32", false,
       [](SwizzleSetup& s) {
         s.mat.dtype = DType::F32;
         s.flat.dtype = DType::F32;
       },
       {"'src'", "be ue8m0, e4m3 or u8"}},
      {"dst dtype differs", false, [](SwizzleSetup& s) { s.flat.dtype = DType::E4M3; }, {"'dst'", "must be ue8m0"}},
      {"dst size", false, [](SwizzleSetup& s) { s.flat.shape[0] = 511; }, {"'dst'", "have shape [512]"}},
      {"dst strided", false, [](SwizzleSetup& s) { s.flat.strides[0] = 2; }, {"'dst'", "contiguous"}},
      {"overlap", false, [](SwizzleSetup& s) { s.mat.data = static_cast<uint8_t*>(s.flat.data) + 100; },
       {"'src' and 'dst'", "overlap"}},
      {"devices", false, [](SwizzleSetup& s) { s.flat = on_cuda(s.flat); }, {"'dst'", "different device"}},
      {"unswizzle dst 3-D", true, [](SwizzleSetup& s) { s.mat = make_tensor(s.mat.data, DType::UE8M0, {1, 5, 3}); },
       {"'dst'", "have 2 dimensions"}},
      {"unswizzle src size", true, [](SwizzleSetup& s) { s.flat.shape[0] = 1024; }, {"'src'", "have shape [512]"}},
      {"unswizzle src strided", true, [](SwizzleSetup& s) { s.flat.strides[0] = 3; }, {"'src'", "contiguous"}},
      {"unswizzle src dtype", true, [](SwizzleSetup& s) { s.flat.dtype = DType::U8; }, {"'src'", "must be ue8m0"}},
      {"unswizzle overlap", true, [](SwizzleSetup& s) { s.mat.data = s.flat.data; }, {"'dst' and 'src'", "overlap"}},
      {"unswizzle devices", true, [](SwizzleSetup& s) { s.mat = on_cuda(s.mat); }, {"different device"}},
  };
  {
    SwizzleSetup ok;
    DSV4_EXPECT_OK(swizzle_scales_128x4(ok.mat, ok.flat));
    DSV4_EXPECT_OK(unswizzle_scales_128x4(ok.flat, ok.mat));
  }
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    SwizzleSetup s;
    c.breakit(s);
    const auto snap = s.arena.snapshot();
    const Status st = c.unswizzle ? unswizzle_scales_128x4(s.flat, s.mat) : swizzle_scales_128x4(s.mat, s.flat);
    std::vector<std::string> want = c.want;
    want.push_back(c.unswizzle ? "unswizzle_scales_128x4: " : "swizzle_scales_128x4: ");
    EXPECT_TRUE(has_all(st, StatusCode::kInvalidArgument, want));
    EXPECT_EQ(s.arena.first_change(snap), -1);
  }
}

// ---- KV cache ----

struct KVSetup {
  Arena arena{1 << 16, 0x3C};
  KVInsertParams ip;
  KVGatherParams gp;
  static constexpr int64_t kP = 2, kPages = 2, kT = 3;

  explicit KVSetup(KVLayout layout) {
    KVCacheView c;
    c.layout = layout;
    c.page_size = kP;
    if (layout == KVLayout::kModel1) {
      c.data = make_tensor(arena.alloc(kPages * model1_page_bytes(kP)), DType::U8, {kPages, model1_page_bytes(kP)});
    } else {
      c.data = make_tensor(arena.alloc(kPages * kP * 512), DType::E4M3, {kPages, kP, 512});
      c.scales = make_tensor(arena.alloc(kPages * kP * 2), DType::BF16, {kPages, kP});
    }
    ip.cache = gp.cache = c;
    ip.kv = make_tensor(arena.alloc(kT * 512 * 2), DType::BF16, {kT, 512});
    auto* slots = reinterpret_cast<int32_t*>(arena.alloc(kT * 4));
    slots[0] = 0, slots[1] = 3, slots[2] = -1;
    ip.slot_mapping = make_tensor(slots, DType::I32, {kT});
    auto* idx = reinterpret_cast<int32_t*>(arena.alloc(kT * 4));
    idx[0] = 1, idx[1] = -1, idx[2] = 2;
    gp.indices = make_tensor(idx, DType::I32, {kT});
    gp.out = make_tensor(arena.alloc(kT * 512 * 4), DType::F32, {kT, 512});
  }
};

struct KVCase {
  const char* what;
  KVLayout layout;
  bool gather;
  std::function<void(KVSetup&)> breakit;
  std::vector<std::string> want;
};

void run_kv_case(const KVCase& c) {
  SCOPED_TRACE(c.what);
  {
    KVSetup ok(c.layout);
    const Status st = c.gather ? kv_cache_gather(ok.gp) : kv_cache_insert(ok.ip);
    ASSERT_TRUE(st.ok()) << "baseline fails: " << st.message();
  }
  KVSetup s(c.layout);
  c.breakit(s);
  const auto snap = s.arena.snapshot();
  const Status st = c.gather ? kv_cache_gather(s.gp) : kv_cache_insert(s.ip);
  std::vector<std::string> want = c.want;
  want.push_back(c.gather ? "kv_cache_gather: " : "kv_cache_insert: ");
  EXPECT_TRUE(has_all(st, StatusCode::kInvalidArgument, want));
  EXPECT_EQ(s.arena.first_change(snap), -1) << "a rejected call wrote to its buffers";
}

constexpr KVLayout kM1 = KVLayout::kModel1, kPT = KVLayout::kPerTokenScale;

// The cache rules, exercised through insert (cache of ip) and gather (cache of gp).
std::vector<KVCase> cache_cases(bool gather) {
  auto C = [gather](KVSetup& s) -> KVCacheView& { return gather ? s.gp.cache : s.ip.cache; };
  return {
      {"page_size 0", kM1, gather, [C](KVSetup& s) { C(s).page_size = 0; }, {"cache.page_size must be >= 1", "got 0"}},
      {"page_size -3", kPT, gather, [C](KVSetup& s) { C(s).page_size = -3; }, {"cache.page_size", "got -3"}},
      {"data undefined", kM1, gather, [C](KVSetup& s) { C(s).data = TensorView{}; }, {"'cache.data'", "1 to 6"}},
      {"data strided", kM1, gather, [C](KVSetup& s) { C(s).data.strides[0] = 1729; }, {"'cache.data'", "contiguous"}},
      {"data misaligned", kM1, gather, [C](KVSetup& s) { C(s).data = shifted(C(s).data, 8); },
       {"'cache.data'", "aligned to 16 bytes"}},
      {"MODEL1 data e4m3", kM1, gather, [C](KVSetup& s) { C(s).data.dtype = DType::E4M3; }, {"'cache.data'", "be u8"}},
      {"MODEL1 wrong bytes per page", kM1, gather,
       [C](KVSetup& s) { C(s).data = make_tensor(C(s).data.data, DType::U8, {3, 1168}); },
       {"'cache.data'", "have shape [*, 1728]", "[3, 1168]"}},
      {"MODEL1 page size vs bytes", kM1, gather, [C](KVSetup& s) { C(s).page_size = 64; },
       {"'cache.data'", "have shape [*, 37440]"}},
      {"MODEL1 with scales", kM1, gather,
       [C](KVSetup& s) { C(s).scales = make_tensor(C(s).data.data, DType::BF16, {2, 2}); },
       {"'cache.scales'", "be empty for the MODEL1 layout"}},
      {"per-token data u8", kPT, gather, [C](KVSetup& s) { C(s).data.dtype = DType::U8; }, {"'cache.data'", "be e4m3"}},
      {"per-token data shape", kPT, gather,
       [C](KVSetup& s) { C(s).data = make_tensor(C(s).data.data, DType::E4M3, {1, 4, 512}); },
       {"'cache.data'", "have shape [*, 2, 512]"}},
      {"per-token data 576 wide", kPT, gather,
       [C](KVSetup& s) { C(s).data = make_tensor(C(s).data.data, DType::E4M3, {1, 2, 576}); },
       {"'cache.data'", "have shape [*, 2, 512]"}},
      {"per-token scales undefined", kPT, gather, [C](KVSetup& s) { C(s).scales = TensorView{}; },
       {"'cache.scales'", "1 to 6"}},
      {"per-token scales f32", kPT, gather, [C](KVSetup& s) { C(s).scales.dtype = DType::F32; },
       {"'cache.scales'", "be bf16"}},
      {"per-token scales shape", kPT, gather, [C](KVSetup& s) { C(s).scales.shape[0] = 3; },
       {"'cache.scales'", "have shape [2, 2]"}},
      {"per-token scales strided", kPT, gather,
       [C](KVSetup& s) {
         C(s).scales.strides[0] = 4;
         C(s).scales.strides[1] = 2;
       },
       {"'cache.scales'", "contiguous"}},
      {"per-token scales misaligned", kPT, gather, [C](KVSetup& s) { C(s).scales = shifted(C(s).scales, 1); },
       {"'cache.scales'", "aligned to 2 bytes"}},
      {"unknown layout", kM1, gather, [C](KVSetup& s) { C(s).layout = static_cast<KVLayout>(5); },
       {"unknown KVLayout 5"}},
  };
}

TEST(Validation, KVCacheLayoutRules) {
  for (bool gather : {false, true})
    for (const auto& c : cache_cases(gather)) run_kv_case(c);
}

TEST(Validation, KVInsertRules) {
  const std::vector<KVCase> cases = {
      {"slot_mapping undefined", kM1, false, [](KVSetup& s) { s.ip.slot_mapping = TensorView{}; },
       {"'slot_mapping'", "1 to 6"}},
      {"slot_mapping f32", kM1, false, [](KVSetup& s) { s.ip.slot_mapping.dtype = DType::F32; },
       {"'slot_mapping'", "be i32 or i64"}},
      {"slot_mapping 2-D", kM1, false,
       [](KVSetup& s) { s.ip.slot_mapping = make_tensor(s.ip.slot_mapping.data, DType::I32, {3, 1}); },
       {"'slot_mapping'", "have 1 dimensions"}},
      {"slot_mapping strided", kM1, false, [](KVSetup& s) { s.ip.slot_mapping.strides[0] = 2; },
       {"'slot_mapping'", "contiguous"}},
      {"kv f32", kM1, false, [](KVSetup& s) { s.ip.kv.dtype = DType::F32; }, {"'kv'", "be bf16"}},
      {"kv rows vs slots", kM1, false, [](KVSetup& s) { s.ip.kv.shape[0] = 2; }, {"'kv'", "have shape [3, 512]"}},
      {"kv width", kPT, false, [](KVSetup& s) { s.ip.kv.shape[1] = 576; }, {"'kv'", "have shape [3, 512]"}},
      {"kv inner stride", kM1, false, [](KVSetup& s) { s.ip.kv.strides[1] = 2; }, {"'kv'", "innermost stride 1"}},
      {"kv misaligned", kM1, false, [](KVSetup& s) { s.ip.kv = shifted(s.ip.kv, 2); }, {"'kv'", "aligned to 16 bytes"}},
      {"kv row stride", kM1, false, [](KVSetup& s) { s.ip.kv.strides[0] = 516; },
       {"'kv'", "row stride that is a multiple of 16 bytes"}},
      {"cache.data overlaps kv", kM1, false, [](KVSetup& s) { s.ip.kv.data = s.ip.cache.data.data; },
       {"'cache.data' and 'kv'", "overlap"}},
      {"cache.scales overlaps kv", kPT, false,
       [](KVSetup& s) { s.ip.cache.scales.data = static_cast<uint8_t*>(s.ip.kv.data) + 512; },
       {"'cache.scales' and 'kv'", "overlap"}},
      {"cache.data overlaps slot_mapping", kM1, false,
       [](KVSetup& s) { s.ip.slot_mapping.data = static_cast<uint8_t*>(s.ip.cache.data.data) + 3000; },
       {"'cache.data' and 'slot_mapping'", "overlap"}},
      {"kv on cuda", kM1, false, [](KVSetup& s) { s.ip.kv = on_cuda(s.ip.kv); }, {"different device"}},
      {"cache on cuda", kPT, false, [](KVSetup& s) { s.ip.cache.scales = on_cuda(s.ip.cache.scales); },
       {"'cache.scales'", "different device"}},
      // The CPU backend's data-dependent check.
      {"slot out of range", kM1, false, [](KVSetup& s) { s.ip.slot_mapping.ptr<int32_t>()[2] = 4; },
       {"'slot_mapping'", "holds 4 at position 2", "[0, 4)"}},
  };
  for (const auto& c : cases) run_kv_case(c);
}

TEST(Validation, KVGatherRules) {
  const std::vector<KVCase> cases = {
      {"indices undefined", kM1, true, [](KVSetup& s) { s.gp.indices = TensorView{}; }, {"'indices'", "1 to 6"}},
      {"indices i64", kM1, true, [](KVSetup& s) { s.gp.indices.dtype = DType::I64; }, {"'indices'", "be i32", "got i64"}},
      {"indices 2-D", kM1, true,
       [](KVSetup& s) { s.gp.indices = make_tensor(s.gp.indices.data, DType::I32, {1, 3}); },
       {"'indices'", "have 1 dimensions"}},
      {"indices strided", kM1, true, [](KVSetup& s) { s.gp.indices.strides[0] = 2; }, {"'indices'", "contiguous"}},
      {"out f16", kM1, true, [](KVSetup& s) { s.gp.out.dtype = DType::F16; }, {"'out'", "be bf16 or f32"}},
      {"out rows", kPT, true, [](KVSetup& s) { s.gp.out.shape[0] = 4; }, {"'out'", "have shape [3, 512]"}},
      {"out inner stride", kM1, true, [](KVSetup& s) { s.gp.out.strides[1] = 2; }, {"'out'", "innermost stride 1"}},
      {"out misaligned", kM1, true, [](KVSetup& s) { s.gp.out = shifted(s.gp.out, 4); }, {"'out'", "aligned to 16"}},
      {"out row stride", kM1, true, [](KVSetup& s) { s.gp.out.strides[0] = 514; }, {"'out'", "row stride"}},
      {"out overlaps cache.data", kM1, true, [](KVSetup& s) { s.gp.out.data = s.gp.cache.data.data; },
       {"'out' and 'cache.data'", "overlap"}},
      {"out overlaps cache.scales", kPT, true,
       [](KVSetup& s) { s.gp.cache.scales.data = static_cast<uint8_t*>(s.gp.out.data) + 16; },
       {"'out' and 'cache.scales'", "overlap"}},
      {"out overlaps indices", kM1, true,
       [](KVSetup& s) { s.gp.indices.data = static_cast<uint8_t*>(s.gp.out.data) + 2048; },
       {"'out' and 'indices'", "overlap"}},
      {"indices on cuda", kM1, true, [](KVSetup& s) { s.gp.indices = on_cuda(s.gp.indices); },
       {"'indices'", "different device"}},
      {"cache.data on cuda", kM1, true, [](KVSetup& s) { s.gp.cache.data = on_cuda(s.gp.cache.data); },
       {"'cache.data'", "different device"}},
      // The CPU backend's data-dependent check.
      {"index out of range", kPT, true, [](KVSetup& s) { s.gp.indices.ptr<int32_t>()[0] = -7; },
       {"'indices'", "holds -7 at position 0"}},
  };
  for (const auto& c : cases) run_kv_case(c);
}

}  // namespace
}  // namespace dsv4::test
