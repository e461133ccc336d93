// Host-side builders for the sparse-decode tests: paged KV caches in both layouts filled through the
// software codecs (spec 3.5 / 3.6), pages nobody indexes poisoned with NaN bytes, random index rows.
#pragma once
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "dsv4/numerics.h"
#include "dsv4/ops/kv_cache.h"
#include "test_util.h"

namespace dsv4::test {

// A host copy of one paged cache. Pages [0, used_pages) hold keys; the rest are NaN bytes.
struct HostCache {
  KVLayout layout = KVLayout::kModel1;
  int64_t page_size = 64;
  int64_t pages = 0;
  std::vector<uint8_t> data;     // MODEL1: pages * model1_page_bytes(P); per-token: pages * P * 512
  std::vector<uint16_t> scales;  // per-token only: pages * P bf16

  int64_t slots() const { return pages * page_size; }
  int64_t page_bytes() const {
    return layout == KVLayout::kModel1 ? model1_page_bytes(page_size) : page_size * kKVDim;
  }

  HostCache(KVLayout l, int64_t P, int64_t n_pages) : layout(l), page_size(P), pages(n_pages) {
    data.assign(static_cast<size_t>(pages * page_bytes()), 0xFF);  // e4m3, ue8m0 and bf16 NaN
    if (layout == KVLayout::kPerTokenScale) scales.assign(static_cast<size_t>(pages * P), kBf16NaN);
  }

  // Quantizes a 512-value key into `slot` exactly as the cache writers do (bf16 rope kept as is).
  void set(int64_t slot, const float* v) {
    const int64_t page = slot / page_size, off = slot % page_size;
    if (layout == KVLayout::kModel1) {
      uint8_t* base = data.data() + page * page_bytes();
      uint8_t* tok = base + off * kModel1DataBytes;
      uint8_t* sc = base + page_size * kModel1DataBytes + off * 8;
      for (int g = 0; g < kKVNopeDim / 64; ++g) {
        float amax = 0;
        for (int i = 0; i < 64; ++i) amax = std::fmax(amax, std::fabs(v[g * 64 + i]));
        // 2^ceil(log2(max(amax/448, 1e-4)))
        const int e = num::ceil_log2_ratio(std::fmax(amax, 1e-4f * 448.0f), 448.0f, -127);
        sc[g] = num::ue8m0_from_exp(e);
        for (int i = 0; i < 64; ++i) tok[g * 64 + i] = num::e4m3_from_float(v[g * 64 + i] / num::exp2i(e));
      }
      sc[7] = 0;
      for (int i = 0; i < kKVRopeDim; ++i) {
        const uint16_t h = num::bf16_from_float(v[kKVNopeDim + i]);
        std::memcpy(tok + kKVNopeDim + 2 * i, &h, 2);
      }
    } else {
      float amax = 0;
      for (int i = 0; i < kKVDim; ++i) amax = std::fmax(amax, std::fabs(v[i]));
      const uint16_t s = num::bf16_from_float(std::fmax(amax / 448.0f, 1e-4f / 448.0f));
      scales[static_cast<size_t>(slot)] = s;
      const float sf = num::bf16_to_float(s);
      uint8_t* tok = data.data() + slot * kKVDim;
      for (int i = 0; i < kKVDim; ++i) tok[i] = num::e4m3_from_float(v[i] / sf);
    }
  }

  // Keys ~ N(0, sigma) with sigma varying per token so scales differ.
  void fill_random(std::mt19937_64& g, int64_t first_slot, int64_t n_slots) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::uniform_real_distribution<float> mag(0.25f, 4.0f);
    std::vector<float> v(kKVDim);
    for (int64_t s = first_slot; s < first_slot + n_slots; ++s) {
      const float sigma = mag(g);
      for (auto& x : v) x = d(g) * sigma;
      set(s, v.data());
    }
  }

  KVCacheView view(void* data_ptr, void* scales_ptr, Device dev) const {
    KVCacheView c;
    c.layout = layout;
    c.page_size = page_size;
    if (layout == KVLayout::kModel1) {
      c.data = make_tensor(data_ptr, DType::U8, {pages, page_bytes()}, dev);
    } else {
      c.data = make_tensor(data_ptr, DType::E4M3, {pages, page_size, kKVDim}, dev);
      c.scales = make_tensor(scales_ptr, DType::BF16, {pages, page_size}, dev);
    }
    return c;
  }
  KVCacheView host_view() { return view(data.data(), scales.empty() ? nullptr : scales.data(), Device::cpu()); }
};

}  // namespace dsv4::test
