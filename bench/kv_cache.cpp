// Bench and verify cases for the FP8 KV cache (include/dsv4/ops/kv_cache.h).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "bench_util.h"
#include "dsv4/ops/kv_cache.h"

namespace dsv4::bench {
namespace {

struct Layout {
  KVLayout layout;
  const char* name;
};
constexpr Layout kLayouts[] = {{KVLayout::kModel1, "MODEL1"}, {KVLayout::kPerTokenScale, "per-token"}};

// A cache's device/host storage and its view. MODEL1: data only; per-token: data then scales.
struct CacheShape {
  KVLayout layout;
  int64_t pages, P;
  int64_t data_bytes() const {
    return layout == KVLayout::kModel1 ? pages * model1_page_bytes(P) : pages * P * kKVDim;
  }
  int64_t scale_bytes() const { return layout == KVLayout::kModel1 ? 0 : pages * P * 2; }
  int64_t total() const { return (data_bytes() + 255) / 256 * 256 + scale_bytes(); }
  // Bytes one token occupies in the cache (what insert writes and gather reads).
  int64_t token_bytes() const { return layout == KVLayout::kModel1 ? kModel1TokenBytes : kKVDim + 2; }
  KVCacheView view(void* base, bool on_gpu) const {
    KVCacheView c;
    c.layout = layout;
    c.page_size = P;
    const Device d = on_gpu ? Device::cuda(0) : Device::cpu();
    if (layout == KVLayout::kModel1) {
      c.data = make_tensor(base, DType::U8, {pages, model1_page_bytes(P)}, d);
    } else {
      c.data = make_tensor(base, DType::E4M3, {pages, P, kKVDim}, d);
      c.scales = make_tensor(static_cast<uint8_t*>(base) + (data_bytes() + 255) / 256 * 256, DType::BF16, {pages, P}, d);
    }
    return c;
  }
};

// Prefill-like slots: pages in random order (as a block allocator hands them out), tokens in
// order within a page.
std::vector<int64_t> prefill_slots(std::mt19937_64& g, int64_t T, int64_t P, int64_t pages) {
  std::vector<int64_t> page_ids(pages);
  std::iota(page_ids.begin(), page_ids.end(), 0);
  std::shuffle(page_ids.begin(), page_ids.end(), g);
  std::vector<int64_t> slots(T);
  for (int64_t t = 0; t < T; ++t) slots[t] = page_ids[t / P] * P + t % P;
  return slots;
}

void read_shape(const Options& o, int64_t def_tokens, int64_t* T, int64_t* P) {
  *T = o.get_int("tokens", def_tokens);
  *P = o.get_int("page-size", 64);
  if (*T < 1 || *P < 1) throw BenchError("--tokens and --page-size must be >= 1");
}

// ---------------------------------------------------------------------------------------------
// bench

void bench_kv_cache(const Options& o, std::vector<Result>& out) {
  // 262144 tokens x 512 bf16 = 256 MiB to insert; the gather reads the same tokens back.
  int64_t T, P;
  read_shape(o, 262144, &T, &P);
  const TimerOptions t = timer_options(o);
  require_gpu();
  void* st = stream();
  const int64_t pages = (T + P - 1) / P;
  std::mt19937_64 rng(42);
  const std::vector<int64_t> slots = prefill_slots(rng, T, P, pages);
  std::vector<int32_t> gather_idx(T);
  for (int64_t i = 0; i < T; ++i) gather_idx[i] = static_cast<int32_t>(slots[i]);
  std::shuffle(gather_idx.begin(), gather_idx.end(), rng);  // sparse attention reads slots in any order

  const int64_t kv_bytes = T * kKVDim * 2;
  const int kvcopies = rotation_copies(kv_bytes, t);
  DeviceBuffer kv(kv_bytes * kvcopies), dslots(T * 8), didx(T * 4), gout(kv_bytes * 2);  // gout: room for the f32 gather
  fill_random(kv.data(), kv.size(), Fill::kBF16, 5);
  to_device(dslots.data(), slots.data(), T * 8);
  to_device(didx.data(), gather_idx.data(), T * 4);

  for (const Layout& L : kLayouts) {
    const CacheShape cs{L.layout, pages, P};
    const int ccopies = rotation_copies(cs.total(), t);
    DeviceBuffer cache(cs.total() * ccopies);
    fill_bytes(cache.data(), 0, cache.size());
    auto cache_at = [&](int i) { return static_cast<uint8_t*>(cache.data()) + (i % ccopies) * cs.total(); };
    auto insert = [&](int i, int c) {
      KVInsertParams p;
      p.kv = view(static_cast<uint8_t*>(kv.data()) + (i % kvcopies) * kv_bytes, DType::BF16, {T, kKVDim}, true);
      p.slot_mapping = view(dslots.data(), DType::I64, {T}, true);
      p.cache = cs.view(cache_at(c), true);
      check_ok(kv_cache_insert(p, st), std::string("kv_cache_insert ") + L.name);
    };
    for (int c = 0; c < ccopies; ++c) insert(0, c);  // every cache copy holds real tokens for the gather
    sync();
    const std::string shape = std::to_string(T) + " tok, P=" + std::to_string(P);
    {
      Result r;
      r.op = "kv_cache";
      r.case_name = std::string("insert ") + L.name;
      r.shape = shape;
      r.bytes = static_cast<double>(kv_bytes + T * 8 + T * cs.token_bytes());
      record(r, time_gpu([&](int i) { insert(i, i); }, t), t);
      out.push_back(r);
    }
    for (DType out_dt : {DType::BF16, DType::F32}) {  // both output kernels
      Result r;
      r.op = "kv_cache";
      r.case_name = std::string("gather ") + L.name + " ->" + std::string(dtype_name(out_dt));
      r.shape = shape;
      const int64_t out_bytes = T * kKVDim * dtype_bits(out_dt) / 8;
      r.bytes = static_cast<double>(T * 4 + T * cs.token_bytes() + out_bytes);
      const Timing tm = time_gpu(
          [&](int i) {
            KVGatherParams p;
            p.cache = cs.view(cache_at(i), true);
            p.indices = view(didx.data(), DType::I32, {T}, true);
            p.out = view(gout.data(), out_dt, {T, kKVDim}, true);
            check_ok(kv_cache_gather(p, st), r.case_name);
          },
          t);
      record(r, tm, t);
      out.push_back(r);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// verify

// Gathered rows against the tokens that were inserted: e4m3 within half a step (plus bf16
// rounding and the subnormal step of the group's scale); MODEL1 keeps the rope dims exact.
int64_t check_round_trip(KVLayout layout, const std::vector<uint16_t>& kv, const std::vector<int64_t>& token_of_row,
                         const std::vector<uint16_t>& out, double* max_err) {
  int64_t bad = 0;
  for (size_t n = 0; n < token_of_row.size(); ++n) {
    const uint16_t* y = &out[n * kKVDim];
    if (token_of_row[n] < 0) {
      for (int c = 0; c < kKVDim; ++c) bad += y[c] != 0 && y[c] != 0x8000;
      continue;
    }
    const uint16_t* x = &kv[token_of_row[n] * kKVDim];
    const int group = layout == KVLayout::kModel1 ? 64 : kKVDim;
    const int quantized = layout == KVLayout::kModel1 ? kKVNopeDim : kKVDim;
    for (int g0 = 0; g0 < quantized; g0 += group) {
      double amax = 0;
      for (int c = g0; c < g0 + group; ++c) amax = std::max(amax, (double)std::fabs(num::bf16_to_float(x[c])));
      for (int c = g0; c < g0 + group; ++c) {
        const double a = num::bf16_to_float(x[c]), b = num::bf16_to_float(y[c]);
        // per-token: the scale is bf16(amax/448), so amax/scale may exceed 448 by a bf16 step.
        const double bound = std::fabs(a) * (0.0625 + 0.0039) + amax * (layout == KVLayout::kModel1 ? 1.6e-5 : 8e-3);
        const double e = std::fabs(a - b);
        if (!(e <= bound)) ++bad;
        if (std::isfinite(e)) *max_err = std::max(*max_err, e);
      }
    }
    for (int c = quantized; c < kKVDim; ++c) bad += y[c] != x[c];
  }
  return bad;
}

void verify_kv_cache(const Options& o, std::vector<VerifyReport>& out) {
  std::string why;
  const bool gpu_ok = gpu_usable(&why);
  int64_t T, P;
  read_shape(o, gpu_ok ? 16384 : 512, &T, &P);
  const uint64_t seed = seed_from(o);
  std::printf("verify kv_cache: %lld tokens, page %lld, seed %llu (replay with --seed %llu)%s%s\n", (long long)T,
              (long long)P, (unsigned long long)seed, (unsigned long long)seed, gpu_ok ? "" : "; GPU part skipped: ",
              why.c_str());
  std::mt19937_64 rng(seed);
  // Twice the pages the tokens need: a stray write into an unused page shows up as a byte diff.
  const int64_t pages = 2 * ((T + P - 1) / P);
  std::vector<uint16_t> kv = host_random_bf16(rng, T * kKVDim);
  std::vector<int64_t> slots = prefill_slots(rng, T, P, pages);
  for (int64_t t = 0; t < T; t += 97) slots[t] = -1;  // skipped tokens
  // Gather every inserted slot in random order plus a few -1 rows (zeros).
  std::vector<int32_t> idx;
  std::vector<int64_t> token_of_row;
  for (int64_t t = 0; t < T; ++t)
    if (slots[t] >= 0) idx.push_back(static_cast<int32_t>(slots[t])), token_of_row.push_back(t);
  for (int i = 0; i < 5; ++i) idx.push_back(-1), token_of_row.push_back(-1);
  std::vector<size_t> perm(idx.size());
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  {
    std::vector<int32_t> i2(idx.size());
    std::vector<int64_t> t2(idx.size());
    for (size_t i = 0; i < perm.size(); ++i) i2[i] = idx[perm[i]], t2[i] = token_of_row[perm[i]];
    idx.swap(i2);
    token_of_row.swap(t2);
  }
  const int64_t N = static_cast<int64_t>(idx.size());

  for (const Layout& L : kLayouts) {
    const CacheShape cs{L.layout, pages, P};
    VerifyReport rep;
    rep.op = "kv_cache";
    rep.case_name = std::string("insert+gather ") + L.name;
    rep.shape = std::to_string(T) + " tok, P=" + std::to_string(P);
    std::vector<uint8_t> cache(cs.total(), 0xA5);
    std::vector<uint16_t> y(N * kKVDim, 0x7FC0);
    KVInsertParams ip;
    ip.kv = view(kv.data(), DType::BF16, {T, kKVDim}, false);
    ip.slot_mapping = view(slots.data(), DType::I64, {T}, false);
    ip.cache = cs.view(cache.data(), false);
    check_ok(kv_cache_insert(ip), "CPU kv_cache_insert");
    KVGatherParams gp;
    gp.cache = ip.cache;
    gp.indices = view(idx.data(), DType::I32, {N}, false);
    gp.out = view(y.data(), DType::BF16, {N, kKVDim}, false);
    check_ok(kv_cache_gather(gp), "CPU kv_cache_gather");
    double cpu_err = 0;
    const int64_t cpu_bad = check_round_trip(L.layout, kv, token_of_row, y, &cpu_err);
    std::ostringstream detail;
    detail << "CPU round trip: " << cpu_bad << " values outside the e4m3 bound (max err " << cpu_err << ")";
    rep.pass = cpu_bad == 0;
    rep.mismatches = cpu_bad;

    if (gpu_ok) {
      rep.gpu_ran = true;
      void* st = stream();
      DeviceBuffer dkv(T * kKVDim * 2), dslots(T * 8), didx(N * 4), dcache(cs.total()), dy(N * kKVDim * 2);
      to_device(dkv.data(), kv.data(), dkv.size());
      to_device(dslots.data(), slots.data(), dslots.size());
      to_device(didx.data(), idx.data(), didx.size());
      fill_bytes(dcache.data(), 0xA5, cs.total());
      KVInsertParams dip = ip;
      dip.kv = view(dkv.data(), DType::BF16, {T, kKVDim}, true);
      dip.slot_mapping = view(dslots.data(), DType::I64, {T}, true);
      dip.cache = cs.view(dcache.data(), true);
      check_ok(kv_cache_insert(dip, st), "GPU kv_cache_insert");
      std::vector<uint8_t> gcache(cs.total());
      to_host(gcache.data(), dcache.data(), cs.total());
      int64_t cbad = 0;
      for (int64_t i = 0; i < cs.total(); ++i) cbad += gcache[i] != cache[i];
      // Gather from the reference cache into a NaN-poisoned output.
      to_device(dcache.data(), cache.data(), cs.total());
      fill_bytes(dy.data(), 0xFF, dy.size());
      KVGatherParams dgp;
      dgp.cache = dip.cache;
      dgp.indices = view(didx.data(), DType::I32, {N}, true);
      dgp.out = view(dy.data(), DType::BF16, {N, kKVDim}, true);
      check_ok(kv_cache_gather(dgp, st), "GPU kv_cache_gather");
      std::vector<uint16_t> gy(N * kKVDim);
      to_host(gy.data(), dy.data(), dy.size());
      int64_t ybad = 0;
      for (int64_t i = 0; i < N * kKVDim; ++i) {
        ybad += gy[i] != y[i];
        const double e = std::fabs(num::bf16_to_float(gy[i]) - num::bf16_to_float(y[i]));
        rep.max_abs_err = std::isfinite(e) ? std::max(rep.max_abs_err, e) : INFINITY;
      }
      rep.mismatches += cbad + ybad;
      rep.pass = rep.pass && cbad == 0 && ybad == 0;
      detail << "; GPU vs CPU: cache " << cbad << "/" << cs.total() << " bytes differ, gather " << ybad << "/"
             << N * kKVDim << " values differ";
    } else {
      detail << "; GPU part skipped";
    }
    rep.detail = detail.str();
    out.push_back(rep);
  }
}

DSV4_BENCH_CASE("kv_cache", bench_kv_cache);
DSV4_VERIFY_CASE("kv_cache", verify_kv_cache);

}  // namespace
}  // namespace dsv4::bench
