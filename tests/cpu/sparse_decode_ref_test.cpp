// The CPU reference of sparse decode on cases whose answers are known by hand, plus validation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "backend/sparse_decode.h"
#include "common/sparse_decode_util.h"
#include "dsv4/dsv4.h"
#include "dsv4/ops/sparse_decode.h"

namespace dsv4 {
namespace {

using test::HostCache;

constexpr float kInf = std::numeric_limits<float>::infinity();

// One small problem on the host: q [B, S, H, 512], a main cache and index rows, outputs NaN-poisoned.
struct Problem {
  int64_t B, S, H, K;
  HostCache cache;
  std::vector<uint16_t> q;
  std::vector<int32_t> idx;
  std::vector<uint16_t> out;
  std::vector<float> lse;
  std::vector<float> sink;

  Problem(int64_t b, int64_t s, int64_t h, int64_t k, KVLayout layout = KVLayout::kModel1, int64_t P = 64,
          int64_t pages = 2)
      : B(b), S(s), H(h), K(k), cache(layout, P, pages) {
    q.assign(B * S * H * kKVDim, num::bf16_from_float(0.0f));
    idx.assign(B * S * K, -1);
    out.assign(B * S * H * kKVDim, test::kBf16NaN);
    lse.assign(B * S * H, std::numeric_limits<float>::quiet_NaN());
  }
  SparseDecodeParams params() {
    SparseDecodeParams p;
    p.q = make_tensor(q.data(), DType::BF16, {B, S, H, kKVDim});
    p.main_cache = cache.host_view();
    p.main_indices = make_tensor(idx.data(), DType::I32, {B, S, K});
    if (!sink.empty()) p.attn_sink = make_tensor(sink.data(), DType::F32, {H});
    p.out = make_tensor(out.data(), DType::BF16, {B, S, H, kKVDim});
    p.lse = make_tensor(lse.data(), DType::F32, {B, S, H});
    return p;
  }
  float o(int64_t row, int i) const { return num::bf16_to_float(out[row * kKVDim + i]); }
};

// A key that survives quantization exactly in both layouts: values k/8, k in [-7, 7], so every
// 64-group and the whole token have amax 7/8 and scale 2^-9, and each value is a multiple of 64 <= 448.
std::vector<float> exact_key(float mul = 1.0f) {
  std::vector<float> k(kKVDim);
  for (int i = 0; i < kKVDim; ++i) k[i] = mul * static_cast<float>(i % 15 - 7) / 8.0f;
  return k;
}

double dot_bf16(const std::vector<uint16_t>& q, int64_t row, const std::vector<float>& k) {
  double d = 0;
  for (int i = 0; i < kKVDim; ++i) d += static_cast<double>(num::bf16_to_float(q[row * kKVDim + i])) * k[i];
  return d;
}

void fill_q(Problem& pr, float step) {
  for (size_t i = 0; i < pr.q.size(); ++i)
    pr.q[i] = num::bf16_from_float(step * static_cast<float>(static_cast<int>(i % 11) - 5));
}

TEST(SparseDecodeRef, OneKeyGivesTheKey) {
  for (KVLayout layout : {KVLayout::kModel1, KVLayout::kPerTokenScale}) {
    Problem pr(1, 1, 3, 4, layout);
    const auto key = exact_key();
    pr.cache.set(70, key.data());
    pr.idx = {-1, 70, -1, -1};
    fill_q(pr, 0.125f);
    ASSERT_TRUE(sparse_decode(pr.params()).ok());
    for (int64_t h = 0; h < 3; ++h) {
      for (int i = 0; i < kKVDim; ++i) ASSERT_EQ(pr.o(h, i), key[i]) << "h " << h << " i " << i;
      EXPECT_NEAR(pr.lse[h], dot_bf16(pr.q, h, key) * kSparseDecodeDefaultScale, 1e-5);
    }
  }
}

TEST(SparseDecodeRef, TwoEqualKeysAddLog2) {
  Problem pr(1, 2, 2, 3, KVLayout::kModel1, 2, 4);
  const auto key = exact_key(2.0f);
  pr.cache.set(1, key.data());
  pr.cache.set(6, key.data());
  pr.idx = {1, 6, -1, /*s=1*/ 6, -1, 1};
  fill_q(pr, 0.0625f);
  ASSERT_TRUE(sparse_decode(pr.params()).ok());
  for (int64_t r = 0; r < 4; ++r) {
    for (int i = 0; i < kKVDim; ++i) ASSERT_EQ(pr.o(r, i), key[i]);
    EXPECT_NEAR(pr.lse[r], dot_bf16(pr.q, r, key) * kSparseDecodeDefaultScale + std::log(2.0), 1e-5);
  }
}

TEST(SparseDecodeRef, TwoKeysWeighByLogits) {
  Problem pr(1, 1, 1, 2);
  std::vector<float> a(kKVDim, 0.0f), b(kKVDim, 0.0f);
  a[0] = 1.0f;
  b[1] = 1.0f;
  pr.cache.set(3, a.data());
  pr.cache.set(9, b.data());
  pr.idx = {3, 9};
  // q . a = 2, q . b = 0, softmax_scale 1: weights e^2 / (e^2 + 1) and 1 / (e^2 + 1).
  pr.q[0] = num::bf16_from_float(2.0f);
  auto p = pr.params();
  p.softmax_scale = 1.0f;
  ASSERT_TRUE(sparse_decode(p).ok());
  const double e2 = std::exp(2.0);
  EXPECT_EQ(pr.o(0, 0), num::bf16_to_float(num::bf16_from_float(static_cast<float>(e2 / (e2 + 1)))));
  EXPECT_EQ(pr.o(0, 1), num::bf16_to_float(num::bf16_from_float(static_cast<float>(1 / (e2 + 1)))));
  EXPECT_EQ(pr.o(0, 2), 0.0f);
  EXPECT_NEAR(pr.lse[0], std::log(e2 + 1), 1e-6);
}

// The tolerance helper: rss_i = sqrt(sum_j (p_j v_ji)^2) times the sink factor, with the output it
// returns equal to the plain reference's.
TEST(SparseDecodeRef, WeightRssIsTheRootSumOfSquares) {
  Problem pr(1, 1, 2, 3);
  std::vector<float> a(kKVDim, 0.0f), b(kKVDim, 0.0f);
  a[0] = 1.0f, a[2] = -2.0f;
  b[1] = 1.0f, b[2] = 4.0f;
  pr.cache.set(3, a.data());
  pr.cache.set(9, b.data());
  pr.idx = {3, -1, 9};
  pr.q[0] = num::bf16_from_float(2.0f);  // head 0: logits 2 and 0; head 1: q = 0, equal weights
  pr.sink = {-kInf, 0.0f};               // head 1: sink 0 against lse ln 2, factor 2/3
  auto p = pr.params();
  p.softmax_scale = 1.0f;
  std::vector<float> rss, abs_sum;
  ASSERT_TRUE(cpu::sparse_decode_weight_rss(p, &rss, &abs_sum).ok());
  ASSERT_EQ(rss.size(), static_cast<size_t>(2 * kKVDim));
  const std::vector<uint16_t> with_rss = pr.out;
  ASSERT_TRUE(sparse_decode(p).ok());
  EXPECT_EQ(with_rss, pr.out);
  const double e2 = std::exp(2.0), pa = e2 / (e2 + 1), pb = 1 / (e2 + 1);
  EXPECT_NEAR(rss[0], pa, 1e-6);
  EXPECT_NEAR(rss[1], pb, 1e-6);
  EXPECT_NEAR(rss[2], std::hypot(2 * pa, 4 * pb), 1e-6);
  EXPECT_EQ(rss[3], 0.0f);
  EXPECT_NEAR(rss[kKVDim + 2], std::hypot(0.5 * 2, 0.5 * 4) * 2.0 / 3.0, 1e-6);
  ASSERT_EQ(abs_sum.size(), rss.size());
  EXPECT_NEAR(abs_sum[2], 2 * pa + 4 * pb, 1e-6);  // |-2 pa| + |4 pb|
  EXPECT_NEAR(abs_sum[kKVDim + 2], (0.5 * 2 + 0.5 * 4) * 2.0 / 3.0, 1e-6);
  EXPECT_EQ(abs_sum[3], 0.0f);
}

TEST(SparseDecodeRef, SinkScalesTheOutputOnly) {
  Problem pr(1, 1, 4, 1);
  const auto key = exact_key();
  pr.cache.set(0, key.data());
  pr.idx = {0};
  fill_q(pr, 0.25f);
  // Per head: sink = lse (out halves), -inf (no effect), +inf (out 0), lse + ln 3 (out quarters).
  std::vector<double> l(4);
  for (int h = 0; h < 4; ++h) l[h] = dot_bf16(pr.q, h, key) * kSparseDecodeDefaultScale;
  pr.sink = {static_cast<float>(l[0]), -kInf, kInf, static_cast<float>(l[3] + std::log(3.0))};
  ASSERT_TRUE(sparse_decode(pr.params()).ok());
  const double factor[4] = {0.5, 1.0, 0.0, 0.25};
  for (int h = 0; h < 4; ++h) {
    EXPECT_NEAR(pr.lse[h], l[h], 1e-5) << "the returned lse excludes the sink";
    for (int i = 0; i < kKVDim; ++i)
      ASSERT_NEAR(pr.o(h, i), key[i] * factor[h], 1e-6 + std::fabs(key[i]) * 1e-6) << "h " << h << " i " << i;
  }
}

TEST(SparseDecodeRef, NoValidKeyGivesZeroAndInfinity) {
  // Row 0: all -1. Row 1: length 0. Row 2: slots past the cache. Row 3: only a slot past the length.
  Problem pr(4, 1, 2, 3, KVLayout::kModel1, 2, 2);
  const auto key = exact_key();
  pr.cache.set(2, key.data());
  pr.idx = {-1, -1, -1, /*b1*/ 2, 2, 2, /*b2*/ 4, 1000, 2147483647, /*b3*/ -1, -1, 2};
  std::vector<int32_t> len = {3, 0, 3, 2};
  pr.sink = {0.5f, -kInf};
  fill_q(pr, 0.5f);
  auto p = pr.params();
  p.main_lengths = make_tensor(len.data(), DType::I32, {4});
  ASSERT_TRUE(sparse_decode(p).ok());
  for (int64_t r = 0; r < 8; ++r) {
    EXPECT_EQ(pr.lse[r], kInf) << "row " << r;
    for (int i = 0; i < kKVDim; ++i) ASSERT_EQ(pr.o(r, i), 0.0f) << "row " << r;
  }
}

TEST(SparseDecodeRef, ExtraKeysJoinTheSoftmax) {
  // The same key once in main and once in extra is two equal keys: lse + ln 2, out = key.
  Problem pr(1, 1, 1, 2);
  HostCache extra(KVLayout::kPerTokenScale, 2, 3);
  const auto key = exact_key();
  pr.cache.set(5, key.data());
  extra.set(4, key.data());
  pr.idx = {5, -1};
  // Slot 3 holds NaN bytes but sits past the length 2, so it must not be read.
  std::vector<int32_t> eidx = {-1, 4, 3}, elen = {2};
  fill_q(pr, 0.25f);
  auto p = pr.params();
  p.extra_cache = extra.host_view();
  p.extra_indices = make_tensor(eidx.data(), DType::I32, {1, 1, 3});
  p.extra_lengths = make_tensor(elen.data(), DType::I32, {1});
  ASSERT_TRUE(sparse_decode(p).ok());
  for (int i = 0; i < kKVDim; ++i) ASSERT_EQ(pr.o(0, i), key[i]);
  EXPECT_NEAR(pr.lse[0], dot_bf16(pr.q, 0, key) * kSparseDecodeDefaultScale + std::log(2.0), 1e-5);
}

TEST(SparseDecodeRef, SwaEntryMatchesSparseDecode) {
  HostCache cache(KVLayout::kPerTokenScale, 64, 2);
  auto g = test::rng_for_test();
  cache.fill_random(g, 0, 128);
  const int64_t T = 2, H = 3;
  auto q = test::random_bf16(g, T * H * kKVDim);
  std::vector<int32_t> idx(T * 128), lens = {128, 37};
  for (int64_t i = 0; i < T * 128; ++i) idx[i] = static_cast<int32_t>((i * 37) % 128);
  std::vector<uint16_t> out1(T * H * kKVDim, test::kBf16NaN), out2 = out1;
  SwaDecodeParams s;
  s.q = make_tensor(q.data(), DType::BF16, {T, H, kKVDim});
  s.cache = cache.host_view();
  s.swa_indices = make_tensor(idx.data(), DType::I32, {T, 128});
  s.swa_lens = make_tensor(lens.data(), DType::I32, {T});
  s.out = make_tensor(out1.data(), DType::BF16, {T, H, kKVDim});
  ASSERT_TRUE(swa_decode(s).ok());
  SparseDecodeParams p;
  p.q = make_tensor(q.data(), DType::BF16, {T, 1, H, kKVDim});
  p.main_cache = cache.host_view();
  p.main_indices = make_tensor(idx.data(), DType::I32, {T, 1, 128});
  p.main_lengths = make_tensor(lens.data(), DType::I32, {T});
  p.out = make_tensor(out2.data(), DType::BF16, {T, 1, H, kKVDim});
  ASSERT_TRUE(sparse_decode(p).ok());
  EXPECT_EQ(out1, out2);
  s.cache = HostCache(KVLayout::kModel1, 64, 2).host_view();
  EXPECT_EQ(swa_decode(s).code(), StatusCode::kInvalidArgument);
}

// Every rule fires with kInvalidArgument and leaves the outputs untouched.
TEST(SparseDecodeRef, BadInputIsRejectedAndNothingWritten) {
  Problem pr(2, 1, 2, 4);
  pr.idx.assign(pr.idx.size(), 0);
  std::vector<int32_t> len3(3, 1);
  std::vector<float> sink3(3, 0.0f);
  auto expect_rejected = [&](SparseDecodeParams p, const char* what, const char* needle) {
    const Status s = sparse_decode(p);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << what << ": " << s.message();
    EXPECT_NE(s.message().find(needle), std::string::npos) << what << ": " << s.message();
    for (uint16_t v : pr.out) ASSERT_EQ(v, test::kBf16NaN) << what;
    for (float v : pr.lse) ASSERT_TRUE(std::isnan(v)) << what;
  };
  SparseDecodeParams p;
  p = pr.params(); p.q.dtype = DType::F16;
  expect_rejected(p, "q dtype", "'q'");
  p = pr.params(); p.q.shape[3] = 256;
  expect_rejected(p, "head dim", "'q'");
  p = pr.params(); p.q.shape[2] = 129; p.out.shape[2] = 129; p.lse.shape[2] = 129;
  expect_rejected(p, "H > 128", "128 heads");
  p = pr.params(); p.q.shape[1] = 5; p.out.shape[1] = 5; p.lse.shape[1] = 5; p.main_indices.shape[1] = 5;
  expect_rejected(p, "s_q > 4", "query tokens");
  p = pr.params(); p.q.data = static_cast<char*>(p.q.data) + 2;
  expect_rejected(p, "misaligned q", "aligned");
  p = pr.params(); p.out.data = static_cast<char*>(p.out.data) + 2;
  expect_rejected(p, "misaligned out", "aligned");
  p = pr.params(); p.main_indices.dtype = DType::I64;
  expect_rejected(p, "indices dtype", "main_indices");
  p = pr.params(); p.main_indices.shape[0] = 3;
  expect_rejected(p, "indices batch", "main_indices");
  p = pr.params(); p.main_lengths = make_tensor(len3.data(), DType::I32, {3});
  expect_rejected(p, "lengths shape", "main_lengths");
  p = pr.params(); p.attn_sink = make_tensor(sink3.data(), DType::F32, {3});
  expect_rejected(p, "sink shape", "attn_sink");
  p = pr.params(); p.out.dtype = DType::F32;
  expect_rejected(p, "out dtype", "'out'");
  p = pr.params(); p.lse.shape[2] = 3;
  expect_rejected(p, "lse shape", "'lse'");
  p = pr.params(); p.softmax_scale = std::numeric_limits<float>::quiet_NaN();
  expect_rejected(p, "scale", "softmax_scale");
  p = pr.params(); p.main_cache.data.shape[1] = 100;
  expect_rejected(p, "cache page bytes", "main_cache");
  p = pr.params(); p.main_cache.data.shape[0] = (int64_t{1} << 31) / 64 + 1;
  expect_rejected(p, "page count past i32 slots", "pages");
  p = pr.params(); p.extra_indices = p.main_indices;
  expect_rejected(p, "extra indices without a cache", "extra");
  p = pr.params(); p.out.data = p.q.data;
  expect_rejected(p, "out overlapping q", "overlap");
}

dsv4_tensor c_view(const TensorView& t) {
  dsv4_tensor c{};
  c.data = t.data;
  c.dtype = static_cast<int32_t>(t.dtype);
  c.ndim = t.ndim;
  for (int i = 0; i < t.ndim; ++i) c.shape[i] = t.shape[i], c.strides[i] = t.strides[i];
  c.device_type = DSV4_DEVICE_CPU;
  return c;
}

TEST(SparseDecodeRef, CAbiMatchesCpp) {
  Problem pr(1, 1, 2, 2);
  const auto key = exact_key();
  pr.cache.set(5, key.data());
  pr.idx = {5, -1};
  fill_q(pr, 0.25f);
  const SparseDecodeParams p = pr.params();
  dsv4_kv_cache cache{};
  cache.layout = DSV4_KV_MODEL1;
  cache.page_size = pr.cache.page_size;
  cache.data = c_view(p.main_cache.data);
  const dsv4_tensor q = c_view(p.q), idx = c_view(p.main_indices), out = c_view(p.out), lse = c_view(p.lse);
  ASSERT_EQ(dsv4_sparse_decode(&q, &cache, &idx, nullptr, nullptr, nullptr, nullptr, nullptr,
                               DSV4_SPARSE_DECODE_DEFAULT_SCALE, &out, &lse, nullptr, nullptr),
            DSV4_OK)
      << dsv4_last_error();
  for (int i = 0; i < kKVDim; ++i) ASSERT_EQ(pr.o(1, i), key[i]);
  EXPECT_NEAR(pr.lse[1], dot_bf16(pr.q, 1, key) * kSparseDecodeDefaultScale, 1e-5);
  EXPECT_EQ(dsv4_sparse_decode(&q, &cache, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1.0f, &out, &lse,
                               nullptr, nullptr),
            DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(dsv4_last_error()).find("main_indices"), std::string::npos) << dsv4_last_error();
  EXPECT_EQ(dsv4_sparse_decode_workspace_size(1, 1, 128, 128, 1024, DSV4_DEVICE_CPU, 0), 0);
  EXPECT_EQ(dsv4_sparse_decode_workspace_size(1, 1, 128, 128, 1024, 7, 0), -1);
}

TEST(SparseDecodeRef, SwaCAbiMatchesCpp) {
  HostCache cache(KVLayout::kPerTokenScale, 64, 2);
  auto g = test::rng_for_test();
  cache.fill_random(g, 0, 128);
  const int64_t T = 3, H = 5;
  auto q = test::random_bf16(g, T * H * kKVDim);
  std::vector<int32_t> idx(T * 128), lens = {128, 0, 77};
  for (int64_t i = 0; i < T * 128; ++i) idx[i] = static_cast<int32_t>((i * 53) % 128);
  idx[5] = -1;
  std::vector<uint16_t> out_cpp(T * H * kKVDim, test::kBf16NaN), out_c = out_cpp;
  std::vector<float> lse_cpp(T * H, NAN), lse_c = lse_cpp;
  SwaDecodeParams s;
  s.q = make_tensor(q.data(), DType::BF16, {T, H, kKVDim});
  s.cache = cache.host_view();
  s.swa_indices = make_tensor(idx.data(), DType::I32, {T, 128});
  s.swa_lens = make_tensor(lens.data(), DType::I32, {T});
  s.out = make_tensor(out_cpp.data(), DType::BF16, {T, H, kKVDim});
  s.lse = make_tensor(lse_cpp.data(), DType::F32, {T, H});
  ASSERT_TRUE(swa_decode(s).ok());

  dsv4_kv_cache c{};
  c.layout = DSV4_KV_PER_TOKEN_SCALE;
  c.page_size = s.cache.page_size;
  c.data = c_view(s.cache.data);
  c.scales = c_view(s.cache.scales);
  const dsv4_tensor cq = c_view(s.q), ci = c_view(s.swa_indices), cl = c_view(s.swa_lens);
  const dsv4_tensor co = c_view(make_tensor(out_c.data(), DType::BF16, {T, H, kKVDim}));
  const dsv4_tensor clse = c_view(make_tensor(lse_c.data(), DType::F32, {T, H}));
  ASSERT_EQ(dsv4_swa_decode(&cq, &c, &ci, &cl, DSV4_SPARSE_DECODE_DEFAULT_SCALE, &co, &clse, nullptr, nullptr), DSV4_OK)
      << dsv4_last_error();
  EXPECT_EQ(out_c, out_cpp);
  for (int64_t i = 0; i < T * H; ++i) EXPECT_EQ(std::memcmp(&lse_c[i], &lse_cpp[i], 4), 0) << i;  // +inf rows too

  // Errors come back as codes with a message naming the argument; nothing is written.
  std::vector<uint16_t> before = out_c;
  EXPECT_EQ(dsv4_swa_decode(&cq, &c, nullptr, &cl, 1.0f, &co, nullptr, nullptr, nullptr), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(dsv4_last_error()).find("swa_indices"), std::string::npos) << dsv4_last_error();
  c.layout = DSV4_KV_MODEL1;
  EXPECT_EQ(dsv4_swa_decode(&cq, &c, &ci, &cl, 1.0f, &co, nullptr, nullptr, nullptr), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(out_c, before);
}

}  // namespace
}  // namespace dsv4
