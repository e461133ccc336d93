// The C ABI, exercised the way a C caller would: only dsv4_* functions and structs. The C++ API is
// used solely as the oracle the C results must equal byte for byte.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/test_util.h"
#include "dsv4/dsv4.h"
#include "dsv4/ops/kv_cache.h"
#include "dsv4/ops/quant.h"

// Defined by the C translation unit capi_c_compile.c.
extern "C" int dsv4_c_compile_check(void);

namespace {

dsv4_tensor ctensor(void* data, int32_t dtype, std::initializer_list<int64_t> shape) {
  dsv4_tensor t;
  std::memset(&t, 0, sizeof t);
  t.data = data;
  t.dtype = dtype;
  t.ndim = static_cast<int32_t>(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t st = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.strides[d] = st;
    st *= t.shape[d];
  }
  t.device_type = DSV4_DEVICE_CPU;
  return t;
}

bool contains(const char* haystack, const char* needle) { return std::strstr(haystack, needle) != nullptr; }

TEST(CApi, VersionMatchesHeaderAndProject) {
  EXPECT_STREQ(dsv4_version(), DSV4_VERSION_STRING);
#ifdef DSV4_PROJECT_VERSION
  EXPECT_STREQ(dsv4_version(), DSV4_PROJECT_VERSION) << "bump DSV4_VERSION_STRING in dsv4.h with the project";
#endif
}

TEST(CApi, StatusNamesAndSizes) {
  EXPECT_STREQ(dsv4_status_name(DSV4_OK), "ok");
  EXPECT_STREQ(dsv4_status_name(DSV4_ERROR_INVALID_ARGUMENT), "invalid argument");
  EXPECT_STREQ(dsv4_status_name(12345), "unknown status");
  for (int64_t p : {1, 2, 63, 64, 65}) EXPECT_EQ(dsv4_model1_page_bytes(p), dsv4::model1_page_bytes(p)) << p;
  EXPECT_EQ(dsv4_model1_page_bytes(0), -1);
  EXPECT_TRUE(contains(dsv4_last_error(), "page_size")) << dsv4_last_error();
  EXPECT_EQ(dsv4_swizzled_scales_size(129, 5), dsv4::swizzled_scales_size(129, 5));
  EXPECT_STREQ(dsv4_last_error(), "");  // a success clears the previous error
  EXPECT_EQ(dsv4_swizzled_scales_size(-1, 5), -1);
}

// MXFP4 round trip through the C ABI equals the C++ API, byte for byte and bit for bit.
TEST(CApi, Mxfp4RoundTripMatchesCpp) {
  auto g = dsv4::test::rng_for_test();
  const int64_t M = 37, K = 256, S = K / 32;
  auto x = dsv4::test::random_bf16(g, M * K, 3.0f);

  std::vector<uint8_t> q_c(M * K / 2, 0xAB), s_c(M * S, 0xAB), q_cpp(M * K / 2, 0xCD), s_cpp(M * S, 0xCD);
  dsv4_tensor cx = ctensor(x.data(), DSV4_DTYPE_BF16, {M, K});
  dsv4_tensor cq = ctensor(q_c.data(), DSV4_DTYPE_E2M1, {M, K});
  dsv4_tensor cs = ctensor(s_c.data(), DSV4_DTYPE_UE8M0, {M, S});
  ASSERT_EQ(dsv4_quantize(DSV4_QUANT_MXFP4, &cx, &cq, &cs, nullptr, 0, nullptr), DSV4_OK) << dsv4_last_error();
  EXPECT_STREQ(dsv4_last_error(), "");

  dsv4::QuantizeParams qp;
  qp.format = dsv4::QuantFormat::kMXFP4;
  qp.x = dsv4::make_tensor(x.data(), dsv4::DType::BF16, {M, K});
  qp.q = dsv4::make_tensor(q_cpp.data(), dsv4::DType::E2M1, {M, K});
  qp.scales = dsv4::make_tensor(s_cpp.data(), dsv4::DType::UE8M0, {M, S});
  ASSERT_TRUE(dsv4::quantize(qp).ok());
  EXPECT_EQ(q_c, q_cpp);
  EXPECT_EQ(s_c, s_cpp);

  std::vector<uint16_t> out_c(M * K, dsv4::test::kBf16NaN), out_cpp(M * K, 0);
  dsv4_tensor cout_ = ctensor(out_c.data(), DSV4_DTYPE_BF16, {M, K});
  ASSERT_EQ(dsv4_dequantize(DSV4_QUANT_MXFP4, &cq, &cs, nullptr, &cout_, nullptr), DSV4_OK) << dsv4_last_error();
  dsv4::DequantizeParams dp;
  dp.format = dsv4::QuantFormat::kMXFP4;
  dp.q = qp.q;
  dp.scales = qp.scales;
  dp.out = dsv4::make_tensor(out_cpp.data(), dsv4::DType::BF16, {M, K});
  ASSERT_TRUE(dsv4::dequantize(dp).ok());
  EXPECT_EQ(out_c, out_cpp);
  // Not a tautology of two identical wrong results: the round trip stays within the MXFP4 step.
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < S; ++b) {
      float amax = 0;
      for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(dsv4::num::bf16_to_float(x[m * K + b * 32 + k])));
      // Scale 2^ceil(log2(amax/6)); the largest e2m1 step is 2, so rounding costs at most one scale.
      const float scale = std::exp2(std::ceil(std::log2(std::max(amax, 6 * std::ldexp(1.0f, -126)) / 6)));
      for (int k = 0; k < 32; ++k) {
        const int64_t i = m * K + b * 32 + k;
        ASSERT_LE(std::fabs(dsv4::num::bf16_to_float(out_c[i]) - dsv4::num::bf16_to_float(x[i])), scale)
            << "row " << m << " col " << b * 32 + k;
      }
    }
}

TEST(CApi, NvFp4WithGlobalScaleMatchesCpp) {
  auto g = dsv4::test::rng_for_test();
  const int64_t M = 5, K = 64, S = K / 16;
  auto x = dsv4::test::random_bf16(g, M * K);
  std::vector<uint8_t> q_c(M * K / 2), s_c(M * S), q_cpp(M * K / 2), s_cpp(M * S);
  float g_c = -1, g_cpp = -2;
  dsv4_tensor cx = ctensor(x.data(), DSV4_DTYPE_BF16, {M, K});
  dsv4_tensor cq = ctensor(q_c.data(), DSV4_DTYPE_E2M1, {M, K});
  dsv4_tensor cs = ctensor(s_c.data(), DSV4_DTYPE_E4M3, {M, S});
  dsv4_tensor cg = ctensor(&g_c, DSV4_DTYPE_F32, {1});
  ASSERT_EQ(dsv4_quantize(DSV4_QUANT_NVFP4, &cx, &cq, &cs, &cg, 1, nullptr), DSV4_OK) << dsv4_last_error();
  dsv4::QuantizeParams qp;
  qp.format = dsv4::QuantFormat::kNVFP4;
  qp.x = dsv4::make_tensor(x.data(), dsv4::DType::BF16, {M, K});
  qp.q = dsv4::make_tensor(q_cpp.data(), dsv4::DType::E2M1, {M, K});
  qp.scales = dsv4::make_tensor(s_cpp.data(), dsv4::DType::E4M3, {M, S});
  qp.global_scale = dsv4::make_tensor(&g_cpp, dsv4::DType::F32, {1});
  qp.compute_global_scale = true;
  ASSERT_TRUE(dsv4::quantize(qp).ok());
  EXPECT_EQ(g_c, g_cpp);
  EXPECT_GT(g_c, 0.0f);
  EXPECT_EQ(q_c, q_cpp);
  EXPECT_EQ(s_c, s_cpp);
}

TEST(CApi, SwizzleRoundTripMatchesCpp) {
  auto g = dsv4::test::rng_for_test();
  const int64_t R = 130, S = 7, N = dsv4_swizzled_scales_size(R, S);
  auto src = dsv4::test::random_bytes(g, R * S);
  std::vector<uint8_t> sw_c(N, 0x55), sw_cpp(N, 0x66), back(R * S, 0);
  dsv4_tensor cs = ctensor(src.data(), DSV4_DTYPE_UE8M0, {R, S});
  dsv4_tensor cd = ctensor(sw_c.data(), DSV4_DTYPE_UE8M0, {N});
  ASSERT_EQ(dsv4_swizzle_scales_128x4(&cs, &cd, nullptr), DSV4_OK) << dsv4_last_error();
  ASSERT_TRUE(dsv4::swizzle_scales_128x4(dsv4::make_tensor(src.data(), dsv4::DType::UE8M0, {R, S}),
                                         dsv4::make_tensor(sw_cpp.data(), dsv4::DType::UE8M0, {N}))
                  .ok());
  EXPECT_EQ(sw_c, sw_cpp);
  dsv4_tensor cb = ctensor(back.data(), DSV4_DTYPE_UE8M0, {R, S});
  ASSERT_EQ(dsv4_unswizzle_scales_128x4(&cd, &cb, nullptr), DSV4_OK) << dsv4_last_error();
  EXPECT_EQ(back, src);
}

TEST(CApi, KvCacheInsertGatherMatchesCpp) {
  auto g = dsv4::test::rng_for_test();
  const int64_t P = 4, pages = 3, T = 7, PB = dsv4_model1_page_bytes(P);
  auto kv = dsv4::test::random_bf16(g, T * 512);
  std::vector<int64_t> slots = {0, 5, -1, 11, 3, 8, 2};
  std::vector<uint8_t> cache_c(pages * PB, 0x7F), cache_cpp(pages * PB, 0x7F);

  dsv4_kv_cache cc;
  std::memset(&cc, 0, sizeof cc);
  cc.layout = DSV4_KV_MODEL1;
  cc.page_size = P;
  cc.data = ctensor(cache_c.data(), DSV4_DTYPE_U8, {pages, PB});
  dsv4_tensor ckv = ctensor(kv.data(), DSV4_DTYPE_BF16, {T, 512});
  dsv4_tensor csl = ctensor(slots.data(), DSV4_DTYPE_I64, {T});
  ASSERT_EQ(dsv4_kv_cache_insert(&ckv, &csl, &cc, nullptr), DSV4_OK) << dsv4_last_error();

  dsv4::KVInsertParams ip;
  ip.kv = dsv4::make_tensor(kv.data(), dsv4::DType::BF16, {T, 512});
  ip.slot_mapping = dsv4::make_tensor(slots.data(), dsv4::DType::I64, {T});
  ip.cache.layout = dsv4::KVLayout::kModel1;
  ip.cache.page_size = P;
  ip.cache.data = dsv4::make_tensor(cache_cpp.data(), dsv4::DType::U8, {pages, PB});
  ASSERT_TRUE(dsv4::kv_cache_insert(ip).ok());
  EXPECT_EQ(cache_c, cache_cpp);

  std::vector<int32_t> idx = {11, 0, -1, 3};
  std::vector<float> out_c(idx.size() * 512, 1.0f), out_cpp(idx.size() * 512, 2.0f);
  dsv4_tensor cidx = ctensor(idx.data(), DSV4_DTYPE_I32, {(int64_t)idx.size()});
  dsv4_tensor cout_ = ctensor(out_c.data(), DSV4_DTYPE_F32, {(int64_t)idx.size(), 512});
  ASSERT_EQ(dsv4_kv_cache_gather(&cc, &cidx, &cout_, nullptr), DSV4_OK) << dsv4_last_error();
  dsv4::KVGatherParams gp;
  gp.cache = ip.cache;
  gp.indices = dsv4::make_tensor(idx.data(), dsv4::DType::I32, {(int64_t)idx.size()});
  gp.out = dsv4::make_tensor(out_cpp.data(), dsv4::DType::F32, {(int64_t)idx.size(), 512});
  ASSERT_TRUE(dsv4::kv_cache_gather(gp).ok());
  EXPECT_EQ(0, std::memcmp(out_c.data(), out_cpp.data(), out_c.size() * sizeof(float)));
  // Rope dims are kept in bf16: slot 11 was written by token 3, slot 0 by token 0.
  EXPECT_EQ(out_c[0 * 512 + 500], dsv4::num::bf16_to_float(kv[3 * 512 + 500]));
  EXPECT_EQ(out_c[1 * 512 + 448], dsv4::num::bf16_to_float(kv[0 * 512 + 448]));
  EXPECT_EQ(out_c[2 * 512 + 7], 0.0f);  // index -1 gives zeros
}

// Every malformed call returns a status with a message naming the argument; nothing is written.
TEST(CApi, ErrorsComeBackWithMessages) {
  std::vector<uint16_t> x(4 * 64, 0x3F80);
  std::vector<uint8_t> q(4 * 32, 0xEE), s(4 * 2, 0xEE);
  dsv4_tensor cx = ctensor(x.data(), DSV4_DTYPE_BF16, {4, 64});
  dsv4_tensor cq = ctensor(q.data(), DSV4_DTYPE_E2M1, {4, 64});
  dsv4_tensor cs = ctensor(s.data(), DSV4_DTYPE_UE8M0, {4, 2});

  struct Case {
    const char* what;
    int rc;
    const char* needle;
  };
  std::vector<Case> cases;
  auto call = [&](const dsv4_tensor* a, const dsv4_tensor* b, const dsv4_tensor* c, int fmt = DSV4_QUANT_MXFP4) {
    return dsv4_quantize(fmt, a, b, c, nullptr, 0, nullptr);
  };
  auto record = [&](const char* what, int rc, const char* needle) {
    cases.push_back({what, rc, needle});
    EXPECT_NE(rc, DSV4_OK) << what;
    EXPECT_TRUE(contains(dsv4_last_error(), needle)) << what << ": '" << dsv4_last_error() << "' lacks '" << needle << "'";
    EXPECT_TRUE(contains(dsv4_last_error(), "quantize")) << what << ": " << dsv4_last_error();
  };
  record("null x", call(nullptr, &cq, &cs), "'x'");
  record("null q", call(&cx, nullptr, &cs), "'q'");
  record("null scales", call(&cx, &cq, nullptr), "'scales'");
  record("bad format", call(&cx, &cq, &cs, 99), "format");
  dsv4_tensor bad = cx;
  bad.ndim = 7;
  record("ndim 7", call(&bad, &cq, &cs), "ndim");
  bad = cx;
  bad.ndim = -1;
  record("ndim -1", call(&bad, &cq, &cs), "ndim");
  bad = cx;
  bad.dtype = 42;
  record("bad dtype", call(&bad, &cq, &cs), "dtype");
  bad = cx;
  bad.device_type = 7;
  record("bad device", call(&bad, &cq, &cs), "device_type");
  dsv4_tensor wrong_s = ctensor(s.data(), DSV4_DTYPE_UE8M0, {4, 3});
  record("wrong scale shape", call(&cx, &cq, &wrong_s), "'scales'");
  EXPECT_EQ(call(&cx, &cq, &wrong_s), DSV4_ERROR_INVALID_ARGUMENT);
  dsv4_tensor wrong_q = ctensor(q.data(), DSV4_DTYPE_E4M3, {4, 64});
  record("wrong q dtype", call(&cx, &wrong_q, &cs), "e2m1");
  EXPECT_EQ(dsv4_quantize(DSV4_QUANT_MXFP4, &cx, &cq, &cs, nullptr, 2, nullptr), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(dsv4_last_error(), "compute_global_scale")) << dsv4_last_error();
  for (uint8_t b : q) ASSERT_EQ(b, 0xEE) << "an erroring call wrote q";
  for (uint8_t b : s) ASSERT_EQ(b, 0xEE) << "an erroring call wrote scales";

  // The KV entry points: NULL cache, unknown layout, non-zero reserved.
  std::vector<int32_t> idx = {0};
  std::vector<uint16_t> out(512);
  dsv4_tensor cidx = ctensor(idx.data(), DSV4_DTYPE_I32, {1});
  dsv4_tensor cout_ = ctensor(out.data(), DSV4_DTYPE_BF16, {1, 512});
  EXPECT_EQ(dsv4_kv_cache_gather(nullptr, &cidx, &cout_, nullptr), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(dsv4_last_error(), "'cache'")) << dsv4_last_error();
  dsv4_kv_cache cc;
  std::memset(&cc, 0, sizeof cc);
  cc.layout = 9;
  cc.page_size = 64;
  EXPECT_EQ(dsv4_kv_cache_gather(&cc, &cidx, &cout_, nullptr), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(dsv4_last_error(), "layout")) << dsv4_last_error();
  cc.layout = DSV4_KV_MODEL1;
  cc.reserved = 1;
  EXPECT_EQ(dsv4_kv_cache_insert(&cout_, &cidx, &cc, nullptr), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(dsv4_last_error(), "reserved")) << dsv4_last_error();
  cc.reserved = 0;  // now an empty cache.data: the core validation names it
  EXPECT_EQ(dsv4_kv_cache_insert(&cout_, &cidx, &cc, nullptr), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(dsv4_last_error(), "cache.data")) << dsv4_last_error();
  EXPECT_EQ(dsv4_swizzle_scales_128x4(nullptr, nullptr, nullptr), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(dsv4_last_error(), "'src'")) << dsv4_last_error();
  EXPECT_EQ(dsv4_dequantize(DSV4_QUANT_MXFP8, &cq, &cs, nullptr, nullptr, nullptr), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(dsv4_last_error(), "'out'")) << dsv4_last_error();
}

// The message is per thread: an error on one thread does not show up on another.
TEST(CApi, LastErrorIsThreadLocal) {
  EXPECT_EQ(dsv4_swizzle_scales_128x4(nullptr, nullptr, nullptr), DSV4_ERROR_INVALID_ARGUMENT);
  std::string other = "unset";
  std::thread th([&] { other = dsv4_last_error(); });
  th.join();
  EXPECT_EQ(other, "");
  EXPECT_TRUE(contains(dsv4_last_error(), "swizzle")) << dsv4_last_error();
}

TEST(CApi, HeaderCompilesAsC) { EXPECT_EQ(dsv4_c_compile_check(), 0) << dsv4_last_error(); }

}  // namespace
