// GPU KV-cache insert / gather against the CPU reference, bit for bit, for both layouts and the
// page sizes engines use (64, and 2 for compressed entries).
//
// Insert: the cache is prefilled with a NaN-ish byte pattern; after the same insert on the CPU and
// the GPU the whole cache buffers must be identical, so bytes of unused pages, of slots the call
// skipped (-1) and of padding must be untouched. Gather: the outputs must match, NaN matching NaN.
// GPU-only behaviour (the CPU rejects these): out-of-range insert slots are skipped, out-of-range
// gather indices give a NaN row.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/quant_kv_test_util.h"
#include "dsv4/ops/kv_cache.h"

namespace dsv4::test {
namespace {

constexpr uint8_t kPoisons[2] = {0xFF, 0x7F};

struct Cache {
  KVLayout layout;
  int64_t page_size, pages;
  size_t data_bytes() const {
    return static_cast<size_t>(layout == KVLayout::kModel1 ? pages * model1_page_bytes(page_size)
                                                           : pages * page_size * kKVDim);
  }
  size_t scale_bytes() const { return layout == KVLayout::kModel1 ? 0 : static_cast<size_t>(pages * page_size * 2); }
  int64_t slots() const { return pages * page_size; }
  KVCacheView view(void* data, void* scales, Device d) const {
    KVCacheView v;
    v.layout = layout;
    v.page_size = page_size;
    if (layout == KVLayout::kModel1) {
      v.data = view2d(data, DType::U8, pages, model1_page_bytes(page_size), model1_page_bytes(page_size), 1, d);
    } else {
      v.data = make_tensor(data, DType::E4M3, {pages, page_size, kKVDim}, d);
      v.scales = view2d(scales, DType::BF16, pages, page_size, page_size, 1, d);
    }
    return v;
  }
};

// Token rows group by group (64 values): ordinary data over a wide range, zeros, NaN / +-inf,
// subnormals, an amax exactly at or one ulp around 448 * 2^e, exact e4m3 rounding ties, 30
// binades in one group. Row padding holds random junk.
std::vector<uint8_t> make_kv(int64_t T, int64_t stride, std::mt19937_64& g) {
  std::vector<uint8_t> b = random_bytes(g, static_cast<size_t>(T * stride * 2));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  auto randint = [&](int lo, int hi) { return lo + static_cast<int>(g() % static_cast<uint64_t>(hi - lo + 1)); };
  auto sign = [&]() { return (g() & 1) ? -1.0f : 1.0f; };
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> v(kKVDim);
    for (int grp = 0; grp < kKVDim / 64; ++grp) {
      float* x = v.data() + grp * 64;
      const int kind = randint(0, 99);
      const float p2 = std::ldexp(1.0f, randint(-20, 20));
      if (kind < 55) {
        const int spread = randint(-30, 30);
        for (int i = 0; i < 64; ++i) x[i] = normal(g) * std::ldexp(1.0f, spread);
        if (kind >= 50) x[g() % 64] = kind < 52 ? NAN : sign() * INFINITY;
      } else if (kind < 60) {
        for (int i = 0; i < 64; ++i) x[i] = sign() * 0.0f;
      } else if (kind < 70) {
        for (int i = 0; i < 64; ++i) x[i] = normal(g) * std::ldexp(1.0f, randint(-135, -120));
      } else if (kind < 82) {
        float bound = 448.0f * p2;
        const int variant = randint(0, 3);
        if (variant == 1) bound = num::bf16_to_float(static_cast<uint16_t>(num::bf16_from_float(bound) + 1));
        if (variant == 2) bound = num::bf16_to_float(static_cast<uint16_t>(num::bf16_from_float(bound) - 1));
        if (variant == 3) bound = num::bf16_to_float(num::bf16_from_float(448.0f * 1e-4f));  // the 1e-4 floor
        for (int i = 0; i < 64; ++i) x[i] = unit(g) * bound;
        x[g() % 64] = sign() * bound;
      } else if (kind < 92) {
        for (int i = 0; i < 64; ++i) {
          const int E = randint(-6, 8);
          const float t = g() % 4 == 0 ? (static_cast<float>(g() % 8) + 0.5f) * std::ldexp(1.0f, -9)
                                       : (8.0f + static_cast<float>(randint(0, E == 8 ? 5 : 7)) + 0.5f) *
                                             std::ldexp(1.0f, E - 3);
          x[i] = sign() * t * p2;
        }
        x[g() % 64] = sign() * 448.0f * p2;
      } else {
        for (int i = 0; i < 64; ++i) x[i] = sign() * p2 * std::ldexp(1.0f, -randint(0, 30)) * (1.0f + 0.5f * unit(g));
      }
    }
    for (int i = 0; i < kKVDim; ++i) store_u16(b, static_cast<size_t>(t * stride + i), num::bf16_from_float(v[i]));
  }
  return b;
}

// Distinct slots for T tokens, about one in eight -1.
std::vector<int64_t> make_slots(int64_t T, int64_t num_slots, std::mt19937_64& g) {
  std::vector<int64_t> all(static_cast<size_t>(num_slots));
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), g);
  std::vector<int64_t> s(all.begin(), all.begin() + T);
  for (auto& x : s)
    if (g() % 8 == 0) x = -1;
  return s;
}

std::vector<uint8_t> encode_index(const std::vector<int64_t>& v, DType dt) {
  std::vector<uint8_t> b(v.size() * (dt == DType::I64 ? 8 : 4));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dt == DType::I64) std::memcpy(b.data() + 8 * i, &v[i], 8);
    else {
      const int32_t x = static_cast<int32_t>(v[i]);
      std::memcpy(b.data() + 4 * i, &x, 4);
    }
  }
  return b;
}

using KVParam = std::tuple<KVLayout, int64_t, DType>;  // layout, page size, slot dtype

class KVCacheGpu : public ::testing::TestWithParam<KVParam> {};

// Inserts on both backends; `gpu_extra` are out-of-range slots the GPU call additionally gets in
// place of some -1 entries (the GPU must skip them).
TEST_P(KVCacheGpu, InsertAndGatherMatchCpu) {
  DSV4_SKIP_WITHOUT_GPU();
  const auto [layout, P, slot_dt] = GetParam();
  auto g = rng_for_test();
  const Cache c{layout, P, P == 64 ? 4 : 40};
  const int64_t T = P == 64 ? 150 : 37;
  const int64_t kv_stride = 512 + 8;
  const std::vector<uint8_t> kv = make_kv(T, kv_stride, g);
  const std::vector<int64_t> slots = make_slots(T, c.slots(), g);
  // The GPU call's slot list: -1 entries partly replaced by out-of-range slots, which it must skip.
  std::vector<int64_t> gpu_slots = slots;
  const int64_t bad[] = {c.slots(), c.slots() + 7, -2, slot_dt == DType::I64 ? int64_t{1} << 40 : int64_t{INT32_MAX},
                         slot_dt == DType::I64 ? -(int64_t{1} << 40) : int64_t{INT32_MIN}};
  int nb = 0;
  for (auto& s : gpu_slots)
    if (s == -1 && (g() & 1)) s = bad[nb++ % 5];

  DevBuf kv_dev(kv.size()), data_dev(c.data_bytes()), scales_dev(std::max<size_t>(c.scale_bytes(), 1)),
      slots_dev(slots.size() * 8);
  kv_dev.upload(kv);
  slots_dev.upload(encode_index(gpu_slots, slot_dt));
  const Device gpu = Device::cuda(0), cpu = Device::cpu();

  for (uint8_t poison : kPoisons) {
    SCOPED_TRACE("poison " + hex(poison, 2));
    std::vector<uint8_t> kv_cpu = kv, data_cpu(c.data_bytes(), poison), scales_cpu(c.scale_bytes(), poison);
    std::vector<uint8_t> slots_cpu = encode_index(slots, slot_dt);
    data_dev.fill(poison);
    scales_dev.fill(poison);

    KVInsertParams ip;
    ip.kv = view2d(kv_cpu.data(), DType::BF16, T, kKVDim, kv_stride, 1, cpu);
    ip.slot_mapping = view1d(slots_cpu.data(), slot_dt, T, cpu);
    ip.cache = c.view(data_cpu.data(), scales_cpu.data(), cpu);
    DSV4_ASSERT_OK(kv_cache_insert(ip));
    ip.kv = view2d(kv_dev.get(), DType::BF16, T, kKVDim, kv_stride, 1, gpu);
    ip.slot_mapping = view1d(slots_dev.get(), slot_dt, T, gpu);
    ip.cache = c.view(data_dev.get(), scales_dev.get(), gpu);
    DSV4_ASSERT_OK(kv_cache_insert(ip));
    DSV4_CUDA_OK(cudaDeviceSynchronize());
    const int64_t row = layout == KVLayout::kModel1 ? model1_page_bytes(P) : kKVDim;
    EXPECT_TRUE(same_buffer(data_dev.download(), data_cpu, Cmp::kBytes, "cache.data", row));
    if (layout == KVLayout::kPerTokenScale) {
      std::vector<uint8_t> s = scales_dev.download();
      s.resize(c.scale_bytes());
      EXPECT_TRUE(same_buffer(s, scales_cpu, Cmp::kBytes, "cache.scales", P));
    }
    if (HasFailure()) return;

    // Gather from the (now identical) caches: written slots, repeats, never-written slots (which
    // decode the poison), and -1. The GPU additionally gets out-of-range indices -> NaN rows.
    std::vector<int64_t> idx;
    for (int64_t s : slots)
      if (s >= 0) idx.push_back(s);
    for (int i = 0; i < 20; ++i) idx.push_back(static_cast<int64_t>(g() % static_cast<uint64_t>(c.slots())));
    for (int i = 0; i < 6; ++i) idx.push_back(-1);
    std::shuffle(idx.begin(), idx.end(), g);
    std::vector<int64_t> gpu_idx = idx;
    std::vector<bool> nan_row(idx.size(), false);
    const int64_t bad_idx[] = {c.slots(), c.slots() + 1, -2, INT32_MAX, INT32_MIN};
    for (int i = 0; i < 5; ++i) {
      const size_t at = g() % idx.size();
      if (idx[at] == -1 || nan_row[at]) continue;
      gpu_idx[at] = bad_idx[i];
      idx[at] = -1;  // the CPU rejects it; its row is checked separately below
      nan_row[at] = true;
    }
    const int64_t N = static_cast<int64_t>(idx.size());
    const std::vector<uint8_t> idx_host = encode_index(gpu_idx, DType::I32);
    DevBuf idx_dev(idx_host.size());
    idx_dev.upload(idx_host);
    for (DType out_dt : {DType::BF16, DType::F32}) {
      SCOPED_TRACE(std::string("out ") + std::string(dtype_name(out_dt)));
      const int64_t ob = dtype_bits(out_dt) / 8, out_stride = kKVDim + 16 / ob;
      const size_t out_bytes = static_cast<size_t>(N * out_stride * ob);
      DevBuf out_dev(out_bytes);
      out_dev.fill(poison);
      std::vector<uint8_t> out_cpu(out_bytes, poison), idx_cpu = encode_index(idx, DType::I32);
      KVGatherParams gp;
      gp.cache = c.view(data_cpu.data(), scales_cpu.data(), cpu);
      gp.indices = view1d(idx_cpu.data(), DType::I32, N, cpu);
      gp.out = view2d(out_cpu.data(), out_dt, N, kKVDim, out_stride, 1, cpu);
      DSV4_ASSERT_OK(kv_cache_gather(gp));
      gp.cache = c.view(data_dev.get(), scales_dev.get(), gpu);
      gp.indices = view1d(idx_dev.get(), DType::I32, N, gpu);
      gp.out = view2d(out_dev.get(), out_dt, N, kKVDim, out_stride, 1, gpu);
      DSV4_ASSERT_OK(kv_cache_gather(gp));
      DSV4_CUDA_OK(cudaDeviceSynchronize());
      std::vector<uint8_t> out_gpu = out_dev.download();
      // The out-of-range rows: every value the quiet NaN the kernel writes; then compare the rest with the CPU
      // (whose row there is the -1 row of zeros, so patch the expectation).
      for (int64_t n = 0; n < N; ++n) {
        if (!nan_row[static_cast<size_t>(n)]) continue;
        for (int i = 0; i < kKVDim; ++i) {
          const size_t at = static_cast<size_t>((n * out_stride + i) * ob);
          uint32_t bits = 0;
          std::memcpy(&bits, out_gpu.data() + at, static_cast<size_t>(ob));
          const uint32_t nan_bits = out_dt == DType::F32 ? 0x7FC00000u : 0x7FC0u;
          ASSERT_EQ(bits, nan_bits) << "row " << n << " (index " << gpu_idx[static_cast<size_t>(n)]
                                    << ") value " << i << " should be NaN";
          std::memcpy(out_cpu.data() + at, &nan_bits, static_cast<size_t>(ob));
        }
      }
      EXPECT_TRUE(same_buffer(out_gpu, out_cpu, out_dt == DType::F32 ? Cmp::kF32 : Cmp::kBf16, "gather out",
                              out_stride));
      // -1 rows are exact zeros (+0), not merely equal-as-floats.
      for (int64_t n = 0; n < N; ++n) {
        if (gpu_idx[static_cast<size_t>(n)] != -1) continue;
        for (int64_t b = 0; b < kKVDim * ob; ++b)
          ASSERT_EQ(out_gpu[static_cast<size_t>(n * out_stride * ob + b)], 0) << "row " << n << " of index -1";
      }
    }
  }
}

std::string kv_name(const ::testing::TestParamInfo<KVParam>& info) {
  return std::string(std::get<0>(info.param) == KVLayout::kModel1 ? "Model1" : "PerToken") + "_P" +
         std::to_string(std::get<1>(info.param)) + "_" + std::string(dtype_name(std::get<2>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(Layouts, KVCacheGpu,
                         ::testing::Combine(::testing::Values(KVLayout::kModel1, KVLayout::kPerTokenScale),
                                            ::testing::Values(int64_t{64}, int64_t{2}),
                                            ::testing::Values(DType::I32, DType::I64)),
                         kv_name);

// Empty calls launch nothing and write nothing.
TEST(KVCacheGpuEmpty, NoTokensNoRows) {
  DSV4_SKIP_WITHOUT_GPU();
  const Cache c{KVLayout::kModel1, 2, 3};
  DevBuf data(c.data_bytes()), kv(1024), idx(64), out(1024);
  data.fill(0xAB);
  const Device d = Device::cuda(0);
  KVInsertParams ip;
  ip.kv = view2d(kv.get(), DType::BF16, 0, kKVDim, kKVDim, 1, d);
  ip.slot_mapping = view1d(idx.get(), DType::I32, 0, d);
  ip.cache = c.view(data.get(), nullptr, d);
  DSV4_ASSERT_OK(kv_cache_insert(ip));
  KVGatherParams gp;
  gp.cache = ip.cache;
  gp.indices = view1d(idx.get(), DType::I32, 0, d);
  gp.out = view2d(out.get(), DType::F32, 0, kKVDim, kKVDim, 1, d);
  DSV4_ASSERT_OK(kv_cache_gather(gp));
  DSV4_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_TRUE(same_buffer(data.download(), std::vector<uint8_t>(c.data_bytes(), 0xAB), Cmp::kBytes, "cache"));
}

}  // namespace
}  // namespace dsv4::test
