// Sparse decode on the GPU against the CPU reference, on fresh random caches and index rows: every
// head count class, both cache layouts and page sizes 64 and 2, split and unsplit schedules,
// scattered -1 and out-of-cache indices, lengths from 0 to full, rows with no valid key, sinks
// absent / finite / -inf / +inf, never-indexed pages full of NaN bytes, NaN-poisoned outputs and
// workspace, and capture in a CUDA graph.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <string>
#include <vector>

#include "backend/backends.h"
#include "backend/sparse_decode.h"
#include "common/sparse_decode_util.h"
#include "dsv4/ops/sparse_decode.h"

namespace dsv4 {
namespace {

using test::HostCache;

#define SKIP_WITHOUT_GPU() \
  if (!cuda::available()) GTEST_SKIP() << "no sm_90 CUDA device: GPU sparse_decode tests skipped"

struct DevBuf {
  void* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t bytes) : n(bytes) {
    if (bytes) EXPECT_EQ(cudaMalloc(&p, bytes), cudaSuccess);
  }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <class T>
  void upload(const std::vector<T>& v) {
    ASSERT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  template <class T>
  std::vector<T> download(size_t count) const {
    std::vector<T> v(count);
    EXPECT_EQ(cudaMemcpy(v.data(), p, count * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
};

enum class Sink { kNone, kMixed };             // kMixed cycles finite, -inf, +inf, finite over heads
enum class Len { kNone, kPerSeq, kPerToken };  // lengths absent, [B], [B, s_q]

struct Case {
  int64_t B, S, H;
  int64_t k_main, k_extra;
  KVLayout main_layout;
  int64_t main_P;
  KVLayout extra_layout;
  int64_t extra_P;
  Sink sink;
  Len len;
  bool shared_idx = false;  // one index row for all s_q tokens (stride 0)
  bool extreme_scales = false;  // MODEL1: some block scales 2^-127, 2^-126, 2^-27
};

std::string describe_case(const Case& c) {
  auto lay = [](KVLayout l) { return l == KVLayout::kModel1 ? "MODEL1" : "per-token"; };
  return "B=" + std::to_string(c.B) + " s_q=" + std::to_string(c.S) + " H=" + std::to_string(c.H) +
         " keys=" + std::to_string(c.k_main) + "+" + std::to_string(c.k_extra) + " main=" + lay(c.main_layout) +
         "/P" + std::to_string(c.main_P) + " extra=" + lay(c.extra_layout) + "/P" + std::to_string(c.extra_P);
}

// A cache whose even pages hold random keys and whose odd pages are NaN bytes no index names.
struct CacheSet {
  HostCache host;
  std::vector<int32_t> pool;  // the slots that hold keys
  DevBuf data, scales;
  CacheSet(std::mt19937_64& g, KVLayout layout, int64_t P, int64_t want_slots)
      : host(layout, P, 2 * ((want_slots + P - 1) / P)),
        data(host.data.size()),
        scales(host.scales.size() * 2) {
    for (int64_t page = 0; page < host.pages; page += 2) {
      host.fill_random(g, page * P, P);
      for (int64_t o = 0; o < P; ++o) pool.push_back(static_cast<int32_t>(page * P + o));
    }
    data.upload(host.data);
    if (!host.scales.empty()) scales.upload(host.scales);
  }
  KVCacheView device_view() const { return host.view(data.p, scales.p, Device::cuda(0)); }
};

// Index rows: pool slots, ~8% -1, ~2% past the cache; row b == 1 has no valid index at all.
std::vector<int32_t> make_indices(std::mt19937_64& g, const Case& c, int64_t K, const CacheSet& cs) {
  std::vector<int32_t> idx(c.B * c.S * K);
  std::uniform_int_distribution<size_t> pick(0, cs.pool.size() - 1);
  std::uniform_int_distribution<int> pct(0, 99);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t i = 0; i < c.S * K; ++i) {
      int32_t v = cs.pool[pick(g)];
      const int r = pct(g);
      if (r < 8 || b == 1) v = -1;
      else if (r < 9) v = static_cast<int32_t>(cs.host.slots() + pct(g));
      else if (r < 10) v = std::numeric_limits<int32_t>::max();
      idx[b * c.S * K + i] = v;
    }
  return idx;
}

// Lengths: b == 0 full, b == 2 zero, others uniform in [0, K] (and K + 5 sometimes: capped by K).
std::vector<int32_t> make_lengths(std::mt19937_64& g, const Case& c, int64_t K) {
  const int64_t n = c.len == Len::kPerToken ? c.B * c.S : c.B;
  std::vector<int32_t> len(n);
  std::uniform_int_distribution<int64_t> d(0, K + 5);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = c.len == Len::kPerToken ? i / c.S : i;
    len[i] = static_cast<int32_t>(b == 0 ? K : (b == 2 ? 0 : d(g)));
  }
  return len;
}

struct Problem {
  Case c;
  std::mt19937_64 g;
  std::vector<uint16_t> q;
  std::unique_ptr<CacheSet> main, extra;
  std::vector<int32_t> main_idx, extra_idx, main_len, extra_len;
  std::vector<float> sink;
  std::unique_ptr<DevBuf> d_q, d_main_idx, d_extra_idx, d_main_len, d_extra_len, d_sink, d_out, d_lse, d_ws;

  explicit Problem(const Case& cs) : c(cs), g(test::rng_for_test()) {
    // Seed per case too, so the cases of one test differ.
    g.discard(static_cast<unsigned long long>(c.B * 131 + c.S * 17 + c.H * 7 + c.k_extra));
    q = test::random_bf16(g, c.B * c.S * c.H * kKVDim, 2.0f);
    main = std::make_unique<CacheSet>(g, c.main_layout, c.main_P, 512);
    const int64_t KS = c.shared_idx ? 1 : c.S;
    Case ic = c;
    ic.S = KS;
    main_idx = make_indices(g, ic, c.k_main, *main);
    if (c.k_extra > 0) {
      extra = std::make_unique<CacheSet>(g, c.extra_layout, c.extra_P, 2048);
      extra_idx = make_indices(g, ic, c.k_extra, *extra);
    }
    if (c.extreme_scales) {
      extreme(*main);
      if (extra) extreme(*extra);
    }
    if (c.len != Len::kNone) {
      main_len = make_lengths(g, c, c.k_main);
      if (extra) extra_len = make_lengths(g, c, c.k_extra);
    }
    if (c.sink == Sink::kMixed) {
      std::normal_distribution<float> n(1.0f, 2.0f);
      const float inf = std::numeric_limits<float>::infinity();
      for (int64_t h = 0; h < c.H; ++h) {
        const int k = static_cast<int>(h % 4);
        sink.push_back(c.H == 1 || k == 0 || k == 3 ? n(g) : (k == 1 ? -inf : inf));
      }
    }
  }

  // About one in eight MODEL1 block scales of the keys replaced by a tiny one: ue8m0 0 and 1 (2^-127,
  // 2^-126: the dequantized keys land in the bf16 subnormals, where the producers' single rounding
  // of e4m3 x scale must still match the reference) and 100 (2^-27). Large scales are not here:
  // logits past ~2^24 make any fp32 softmax lose the exact max (the reference is fp64).
  void extreme(CacheSet& cs) {
    if (cs.host.layout != KVLayout::kModel1) return;
    static constexpr uint8_t kExp[] = {0, 1, 100};
    std::uniform_int_distribution<int> pick(0, 23);
    const int64_t P = cs.host.page_size;
    for (int32_t slot : cs.pool) {
      uint8_t* sc = cs.host.data.data() + (slot / P) * cs.host.page_bytes() + P * kModel1DataBytes + (slot % P) * 8;
      for (int gi = 0; gi < kKVNopeDim / 64; ++gi) {
        const int r = pick(g);
        if (r < 3) sc[gi] = kExp[r];
      }
    }
    cs.data.upload(cs.host.data);
  }

  TensorView idx_view(void* p, int64_t K, Device dev) const {
    TensorView t = make_tensor(p, DType::I32, {c.B, c.S, K}, dev);
    if (c.shared_idx) {
      t.strides[0] = K;
      t.strides[1] = 0;
    }
    return t;
  }
  TensorView len_view(void* p, Device dev) const {
    return c.len == Len::kPerToken ? make_tensor(p, DType::I32, {c.B, c.S}, dev) : make_tensor(p, DType::I32, {c.B}, dev);
  }

  // Views of the host copies (for the reference) or the device copies.
  SparseDecodeParams params(bool device) {
    const Device dev = device ? Device::cuda(0) : Device::cpu();
    SparseDecodeParams p;
    p.q = make_tensor(device ? d_q->p : q.data(), DType::BF16, {c.B, c.S, c.H, kKVDim}, dev);
    p.main_cache = device ? main->device_view() : main->host.host_view();
    p.main_indices = idx_view(device ? d_main_idx->p : main_idx.data(), c.k_main, dev);
    if (!main_len.empty()) p.main_lengths = len_view(device ? d_main_len->p : main_len.data(), dev);
    if (extra) {
      p.extra_cache = device ? extra->device_view() : extra->host.host_view();
      p.extra_indices = idx_view(device ? d_extra_idx->p : extra_idx.data(), c.k_extra, dev);
      if (!extra_len.empty()) p.extra_lengths = len_view(device ? d_extra_len->p : extra_len.data(), dev);
    }
    if (!sink.empty()) p.attn_sink = make_tensor(device ? d_sink->p : sink.data(), DType::F32, {c.H}, dev);
    return p;
  }

  void upload() {
    auto up = [](auto& buf, const auto& v) {
      using T = typename std::decay_t<decltype(v)>::value_type;
      buf = std::make_unique<DevBuf>(v.size() * sizeof(T));
      if (!v.empty()) buf->upload(v);
    };
    up(d_q, q);
    up(d_main_idx, main_idx);
    up(d_extra_idx, extra_idx);
    up(d_main_len, main_len);
    up(d_extra_len, extra_len);
    up(d_sink, sink);
    d_out = std::make_unique<DevBuf>(c.B * c.S * c.H * kKVDim * 2);
    d_lse = std::make_unique<DevBuf>(c.B * c.S * c.H * 4);
  }

  // Device params with NaN-poisoned outputs and a NaN-filled workspace of the queried size.
  SparseDecodeParams device_params() {
    SparseDecodeParams p = params(true);
    p.out = make_tensor(d_out->p, DType::BF16, {c.B, c.S, c.H, kKVDim}, Device::cuda(0));
    p.lse = make_tensor(d_lse->p, DType::F32, {c.B, c.S, c.H}, Device::cuda(0));
    EXPECT_EQ(cudaMemset(d_out->p, 0xFF, d_out->n), cudaSuccess);
    EXPECT_EQ(cudaMemset(d_lse->p, 0xFF, d_lse->n), cudaSuccess);
    const int64_t ws = sparse_decode_workspace_size(p);
    d_ws = std::make_unique<DevBuf>(static_cast<size_t>(ws));
    if (ws > 0) {
      EXPECT_EQ(cudaMemset(d_ws->p, 0xFF, d_ws->n), cudaSuccess);
      p.workspace = make_tensor(d_ws->p, DType::U8, {ws}, Device::cuda(0));
    }
    return p;
  }
};

struct Reference {
  std::vector<uint16_t> out;
  std::vector<float> lse;
  std::vector<float> rss, abs_sum;  // per output element, see cpu::sparse_decode_weight_rss
};

Reference run_reference(Problem& pr) {
  Reference r;
  r.out.assign(pr.c.B * pr.c.S * pr.c.H * kKVDim, test::kBf16NaN);
  r.lse.assign(pr.c.B * pr.c.S * pr.c.H, std::numeric_limits<float>::quiet_NaN());
  SparseDecodeParams p = pr.params(false);
  p.out = make_tensor(r.out.data(), DType::BF16, {pr.c.B, pr.c.S, pr.c.H, kKVDim});
  p.lse = make_tensor(r.lse.data(), DType::F32, {pr.c.B, pr.c.S, pr.c.H});
  const Status s = cpu::sparse_decode_weight_rss(p, &r.rss, &r.abs_sum);
  EXPECT_TRUE(s.ok()) << s.message();
  return r;
}

// One bf16 ulp at |v| (2^-7 to 2^-8 of it): the GPU and the reference each round once to bf16,
// so two results within a hair of the same real value can still land one ulp apart.
double bf16_ulp(double v) {
  const double a = std::fabs(v);
  if (a < 1e-30) return 0.0;
  return std::ldexp(1.0, std::ilogb(a) - 7);
}

// out: |gpu - ref| <= ulp(ref) + max(2^-7 rss, 2^-8 (abs_sum + |ref|)), the second term for the
// kernel's bf16 rounding of the softmax weights (src/backend/sparse_decode.h: ~7 standard deviations
// of independent errors, and never below the worst case); and over the whole output ||gpu - ref|| <= 2^-8 ||ref|| so that no
// systematic error hides under the per-element bound. Rows with no valid key or a +inf sink must
// be exactly 0. lse: 1e-4 relative (absolute below 1).
void compare(const Problem& pr, const Reference& ref, const std::vector<uint16_t>& out,
             const std::vector<float>& lse, const std::string& what) {
  const int64_t rows = pr.c.B * pr.c.S * pr.c.H;
  int64_t bad = 0, empty_rows = 0;
  double worst = 0, err2 = 0, ref2 = 0;
  for (int64_t r = 0; r < rows && bad < 10; ++r) {
    for (int i = 0; i < kKVDim; ++i) {
      const double e = num::bf16_to_float(ref.out[r * kKVDim + i]);
      const double gv = num::bf16_to_float(out[r * kKVDim + i]);
      const double err = std::fabs(gv - e);
      const double tol = bf16_ulp(e) + std::max(std::ldexp(static_cast<double>(ref.rss[r * kKVDim + i]), -7),
                                                std::ldexp(ref.abs_sum[r * kKVDim + i] + std::fabs(e), -8));
      err2 += (gv - e) * (gv - e);
      ref2 += e * e;
      if (!(err <= tol)) {
        if (++bad <= 5)
          ADD_FAILURE() << what << ": out row " << r << " (b " << r / (pr.c.S * pr.c.H) << " s "
                        << (r / pr.c.H) % pr.c.S << " h " << r % pr.c.H << ") dim " << i << ": gpu " << gv
                        << " ref " << e << " tol " << tol;
      }
      if (tol > 0) worst = std::max(worst, err / tol);
    }
    const float el = ref.lse[r], gl = lse[r];
    if (std::isinf(el)) {
      ++empty_rows;
      if (gl != el) {
        ++bad;
        ADD_FAILURE() << what << ": lse row " << r << ": gpu " << gl << " ref " << el;
      }
    } else if (!(std::fabs(gl - el) <= 1e-4 * std::max(1.0, std::fabs(static_cast<double>(el))))) {
      ++bad;
      ADD_FAILURE() << what << ": lse row " << r << ": gpu " << gl << " ref " << el;
    }
  }
  EXPECT_EQ(bad, 0) << what;
  const double rel_l2 = ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  EXPECT_LE(rel_l2, std::ldexp(1.0, -8)) << what << ": relative L2 error of the whole output";
  std::printf("[sparse_decode] %s: %lld rows (%lld without a valid key), worst err/tol %.3f, rel L2 %.2e\n",
              what.c_str(), static_cast<long long>(rows), static_cast<long long>(empty_rows), worst, rel_l2);
}

// Every head count runs on the wgmma kernel; each case is also checked on the mma.sync kernel
// (the test hook) so that both stay correct.
void run_case(const Case& c) {
  const std::string what = describe_case(c);
  Problem pr(c);
  pr.upload();
  const Reference ref = run_reference(pr);
  for (int variant = 0; variant < 2; ++variant) {
    cuda::sparse_decode_force_mma_sync(variant == 1);
    SparseDecodeParams p = pr.device_params();
    const Status s = sparse_decode(p);
    cuda::sparse_decode_force_mma_sync(false);
    ASSERT_TRUE(s.ok()) << what << ": " << s.message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;
    const int64_t rows = c.B * c.S * c.H;
    compare(pr, ref, pr.d_out->download<uint16_t>(rows * kKVDim), pr.d_lse->download<float>(rows),
            what + (variant ? " [mma.sync]" : " [wgmma]"));
  }
}

constexpr KVLayout M1 = KVLayout::kModel1, PT = KVLayout::kPerTokenScale;

TEST(SparseDecodeCuda, SmallBatchSplitKV) {
  SKIP_WITHOUT_GPU();
  run_case({1, 1, 128, 128, 1024, M1, 64, M1, 64, Sink::kMixed, Len::kPerSeq});
  run_case({1, 2, 16, 128, 512, M1, 64, M1, 2, Sink::kNone, Len::kPerToken});
  run_case({3, 2, 24, 128, 1024, PT, 64, M1, 2, Sink::kMixed, Len::kPerSeq});
  run_case({3, 1, 1, 128, 512, M1, 64, PT, 64, Sink::kMixed, Len::kPerToken});
  run_case({3, 2, 8, 128, 0, PT, 64, M1, 64, Sink::kNone, Len::kPerSeq, /*shared_idx=*/true});
  run_case({3, 2, 128, 128, 512, M1, 64, M1, 64, Sink::kMixed, Len::kPerSeq});
  run_case({3, 2, 64, 128, 512, PT, 64, PT, 2, Sink::kMixed, Len::kPerToken});  // per-token on wgmma
  run_case({2, 2, 96, 128, 512, PT, 64, M1, 2, Sink::kMixed, Len::kPerToken});  // 2 head blocks, mixed layouts, padded block
}

TEST(SparseDecodeCuda, LargeBatch) {
  SKIP_WITHOUT_GPU();
  run_case({64, 2, 128, 128, 0, M1, 64, M1, 64, Sink::kMixed, Len::kNone});          // 256 CTAs, unsplit
  run_case({64, 1, 64, 128, 512, M1, 64, M1, 64, Sink::kMixed, Len::kPerSeq});       // 64 CTAs, split
  run_case({64, 2, 16, 128, 1024, M1, 2, M1, 2, Sink::kNone, Len::kPerToken});       // page size 2
  run_case({64, 1, 8, 128, 512, PT, 64, PT, 2, Sink::kMixed, Len::kPerSeq});
  run_case({160, 1, 24, 128, 512, PT, 64, M1, 64, Sink::kMixed, Len::kNone});        // unsplit, padded rows
}

// At most 16 heads, MODEL1 caches, a positive scale and at least two tiles a CTA: the narrow
// instance (S^T and O^T on m64 x n16 wgmma, kernel_wg.cuh kNO). Unsplit (160 CTAs) and split-KV
// (combine) epilogues, padding heads (H = 5, 1), page sizes 64 and 2, MTP.
TEST(SparseDecodeCuda, NarrowFewHeads) {
  SKIP_WITHOUT_GPU();
  run_case({160, 1, 16, 128, 1024, M1, 64, M1, 64, Sink::kMixed, Len::kPerSeq});
  run_case({32, 1, 5, 128, 1024, M1, 64, M1, 2, Sink::kMixed, Len::kPerToken});
  run_case({24, 2, 1, 128, 512, M1, 2, M1, 64, Sink::kNone, Len::kPerSeq});
}

// Page sizes that are not powers of two (48, 3, 7; the other tests use 64 and 2): the producers'
// slot -> (page, offset) arithmetic and the page stride, on the narrow and the wide kernel.
TEST(SparseDecodeCuda, PageSizesNotPowersOfTwo) {
  SKIP_WITHOUT_GPU();
  run_case({32, 1, 16, 128, 1024, M1, 48, M1, 3, Sink::kMixed, Len::kPerSeq});  // narrow, unsplit
  run_case({3, 2, 64, 128, 512, M1, 3, M1, 48, Sink::kNone, Len::kPerToken});   // wide, split-KV
  run_case({2, 1, 5, 128, 512, M1, 64, M1, 7, Sink::kMixed, Len::kPerSeq});     // narrow, split, 64 and 7
}

// Tiny block scales (subnormal dequantized keys) on the narrow and the wide kernel.
TEST(SparseDecodeCuda, ExtremeBlockScales) {
  SKIP_WITHOUT_GPU();
  Case a{64, 1, 16, 128, 1024, M1, 64, M1, 64, Sink::kMixed, Len::kPerSeq};
  a.extreme_scales = true;
  run_case(a);  // the narrow instance
  Case b{3, 2, 64, 128, 512, M1, 64, M1, 2, Sink::kNone, Len::kNone};
  b.extreme_scales = true;
  run_case(b);
}

TEST(SparseDecodeCuda, LongExtraSet) {
  SKIP_WITHOUT_GPU();
  run_case({1, 1, 64, 128, 8192, M1, 64, M1, 2, Sink::kMixed, Len::kPerSeq});
  run_case({3, 1, 16, 128, 8192, M1, 64, M1, 64, Sink::kNone, Len::kNone});
}

// The whole op (main kernel and combine) inside a CUDA graph, replayed twice.
TEST(SparseDecodeCuda, CapturesInACudaGraph) {
  SKIP_WITHOUT_GPU();
  const Case c{1, 2, 64, 128, 1024, M1, 64, M1, 64, Sink::kMixed, Len::kPerSeq};
  Problem pr(c);
  pr.upload();
  const Reference ref = run_reference(pr);
  SparseDecodeParams p = pr.device_params();
  ASSERT_GT(p.workspace.numel(), 0) << "this shape should split the keys";
  cudaStream_t st;
  ASSERT_EQ(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const Status s = sparse_decode(p, st);
  ASSERT_EQ(cudaStreamEndCapture(st, &graph), cudaSuccess);
  ASSERT_TRUE(s.ok()) << s.message();
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int rep = 0; rep < 2; ++rep) {
    ASSERT_EQ(cudaMemsetAsync(pr.d_out->p, 0xFF, pr.d_out->n, st), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, st), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
    const int64_t rows = c.B * c.S * c.H;
    compare(pr, ref, pr.d_out->download<uint16_t>(rows * kKVDim), pr.d_lse->download<float>(rows),
            "graph replay " + std::to_string(rep));
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(st);
}

TEST(SparseDecodeCuda, SwaEntryMatchesReference) {
  SKIP_WITHOUT_GPU();
  auto g = test::rng_for_test();
  const int64_t T = 5, H = 32;
  CacheSet cache(g, PT, 64, 512);
  auto q = test::random_bf16(g, T * H * kKVDim, 2.0f);
  std::vector<int32_t> idx(T * 128), lens = {128, 0, 77, 1, 200};
  std::uniform_int_distribution<size_t> pick(0, cache.pool.size() - 1);
  for (auto& v : idx) v = g() % 10 == 0 ? -1 : cache.pool[pick(g)];
  std::vector<uint16_t> ref_out(T * H * kKVDim, test::kBf16NaN);
  SwaDecodeParams s;
  s.q = make_tensor(q.data(), DType::BF16, {T, H, kKVDim});
  s.cache = cache.host.host_view();
  s.swa_indices = make_tensor(idx.data(), DType::I32, {T, 128});
  s.swa_lens = make_tensor(lens.data(), DType::I32, {T});
  s.out = make_tensor(ref_out.data(), DType::BF16, {T, H, kKVDim});
  ASSERT_TRUE(swa_decode(s).ok());

  DevBuf dq(q.size() * 2), didx(idx.size() * 4), dlen(lens.size() * 4), dout(ref_out.size() * 2);
  dq.upload(q);
  didx.upload(idx);
  dlen.upload(lens);
  ASSERT_EQ(cudaMemset(dout.p, 0xFF, dout.n), cudaSuccess);
  const Device dev = Device::cuda(0);
  s.q = make_tensor(dq.p, DType::BF16, {T, H, kKVDim}, dev);
  s.cache = cache.device_view();
  s.swa_indices = make_tensor(didx.p, DType::I32, {T, 128}, dev);
  s.swa_lens = make_tensor(dlen.p, DType::I32, {T}, dev);
  s.out = make_tensor(dout.p, DType::BF16, {T, H, kKVDim}, dev);
  const int64_t ws = swa_decode_workspace_size(s);
  DevBuf dws(static_cast<size_t>(ws));
  if (ws > 0) s.workspace = make_tensor(dws.p, DType::U8, {ws}, dev);
  const Status st = swa_decode(s);
  ASSERT_TRUE(st.ok()) << st.message();
  const auto out = dout.download<uint16_t>(ref_out.size());
  int bad = 0;
  for (size_t i = 0; i < out.size() && bad < 5; ++i) {
    const double e = num::bf16_to_float(ref_out[i]), gv = num::bf16_to_float(out[i]);
    if (!(std::fabs(gv - e) <= bf16_ulp(e) + 2e-2)) {
      ++bad;
      ADD_FAILURE() << "swa_decode element " << i << ": gpu " << gv << " ref " << e;
    }
  }
}

// Errors that only the device path can hit, and nothing written when they fire.
TEST(SparseDecodeCuda, BadDeviceInputWritesNothing) {
  SKIP_WITHOUT_GPU();
  const Case c{1, 1, 64, 128, 512, M1, 64, M1, 64, Sink::kNone, Len::kPerSeq};
  Problem pr(c);
  pr.upload();
  SparseDecodeParams p = pr.device_params();
  ASSERT_GT(p.workspace.numel(), 0);
  auto expect_untouched = [&](const SparseDecodeParams& bad, const char* what) {
    const Status s = sparse_decode(bad);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << what << ": " << s.message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    for (uint16_t v : pr.d_out->download<uint16_t>(c.B * c.S * c.H * kKVDim)) ASSERT_EQ(v, 0xFFFF) << what;
  };
  SparseDecodeParams bad = p;
  bad.workspace.shape[0] -= 16;
  expect_untouched(bad, "workspace too small");
  bad = p;
  bad.workspace = TensorView{};
  expect_untouched(bad, "workspace missing");
  bad = p;
  bad.main_indices.data = static_cast<char*>(bad.main_indices.data) + 2;
  expect_untouched(bad, "misaligned indices");
  bad = p;
  bad.extra_cache.data.data = static_cast<char*>(bad.extra_cache.data.data) + 8;
  expect_untouched(bad, "misaligned cache");
  bad = p;
  bad.q.device = Device::cpu();
  expect_untouched(bad, "q on the host");
}

}  // namespace
}  // namespace dsv4
