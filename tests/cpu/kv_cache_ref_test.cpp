// The CPU reference KV cache (src/cpu/kv_cache.cpp): MODEL1 page layout byte for byte, the
// per-token-scale layout, an independent model of both (exact ceil_log2_ratio and f32 multiply by
// 2^-e, as the CUDA kernels compute it) on random tokens, gather round trips, slot -1, and bad
// slots/indices rejected with nothing written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "common/test_util.h"
#include "cpu/ref_test_util.h"
#include "dsv4/numerics.h"
#include "dsv4/ops/kv_cache.h"

namespace dsv4::test {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// ---- the independent model ----

void model1_token(const uint16_t* kv, uint8_t* data, uint8_t* scales) {
  for (int j = 0; j < 7; ++j) {
    bool finite = true;
    float amax = 0;
    for (int i = 64 * j; i < 64 * (j + 1); ++i) {
      const float v = num::bf16_to_float(kv[i]);
      if (!std::isfinite(v)) finite = false;
      else amax = std::max(amax, std::fabs(v));
    }
    if (!finite) {
      scales[j] = 0xFF;
      for (int i = 64 * j; i < 64 * (j + 1); ++i) data[i] = 0;
      continue;
    }
    const int e = num::ceil_log2_ratio(amax, 448.0f, -13);
    scales[j] = static_cast<uint8_t>(e + 127);
    for (int i = 64 * j; i < 64 * (j + 1); ++i) data[i] = num::e4m3_from_float(num::bf16_to_float(kv[i]) * num::exp2i(-e));
  }
  scales[7] = 0;
  std::memcpy(data + 448, kv + 448, 128);
}

void per_token_model(const uint16_t* kv, uint8_t* data, uint16_t* scale) {
  bool finite = true;
  float amax = 0;
  for (int i = 0; i < 512; ++i) {
    const float v = num::bf16_to_float(kv[i]);
    if (!std::isfinite(v)) finite = false;
    else amax = std::max(amax, std::fabs(v));
  }
  if (!finite) {
    *scale = kBf16NaN;
    std::memset(data, 0, 512);
    return;
  }
  *scale = num::bf16_from_float(amax / 448.0f);
  const float s = num::bf16_to_float(*scale);
  for (int i = 0; i < 512; ++i) data[i] = s == 0 ? 0 : num::e4m3_from_float(num::bf16_to_float(kv[i]) / s);
}

// ---- a cache in a poisoned arena ----

struct Cache {
  Arena arena;
  KVCacheView view;
  int64_t num_pages = 0;
  uint8_t* data = nullptr;
  uint16_t* scales = nullptr;

  Cache(KVLayout layout, int64_t page_size, int64_t pages, uint8_t fill = 0xCD)
      : arena(static_cast<size_t>(pages * (model1_page_bytes(page_size) + page_size * 514) + 4096), fill) {
    num_pages = pages;
    view.layout = layout;
    view.page_size = page_size;
    if (layout == KVLayout::kModel1) {
      data = arena.alloc(pages * model1_page_bytes(page_size));
      view.data = make_tensor(data, DType::U8, {pages, model1_page_bytes(page_size)});
    } else {
      data = arena.alloc(pages * page_size * 512);
      scales = reinterpret_cast<uint16_t*>(arena.alloc(pages * page_size * 2));
      view.data = make_tensor(data, DType::E4M3, {pages, page_size, 512});
      view.scales = make_tensor(scales, DType::BF16, {pages, page_size});
    }
  }
  int64_t slots() const { return num_pages * view.page_size; }
  uint8_t* model1_data(int64_t slot) {
    return data + (slot / view.page_size) * model1_page_bytes(view.page_size) + (slot % view.page_size) * 576;
  }
  uint8_t* model1_scales(int64_t slot) {
    return data + (slot / view.page_size) * model1_page_bytes(view.page_size) + view.page_size * 576 +
           (slot % view.page_size) * 8;
  }
};

// kv rows [T, 512] bf16 with row stride `stride`.
struct Tokens {
  std::vector<uint16_t> buf;
  int64_t T, stride;
  Tokens(int64_t t, int64_t s) : buf(static_cast<size_t>(std::max<int64_t>(t, 1) * s + 64), 0x7FC1), T(t), stride(s) {}
  uint16_t* row(int64_t t) { return aligned() + t * stride; }
  uint16_t* aligned() {
    auto* p = buf.data();
    while (reinterpret_cast<uintptr_t>(p) % 16) ++p;
    return p;
  }
  TensorView view() { return view2d(aligned(), DType::BF16, T, 512, stride, 1); }
};

void fill_random(std::mt19937_64& g, Tokens& tk) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ex(-24.0f, 12.0f);
  for (int64_t t = 0; t < tk.T; ++t) {
    for (int grp = 0; grp < 8; ++grp) {
      const int kind = static_cast<int>(g() % 10);
      const float mag = kind == 0 ? 0.0f : std::exp2(ex(g));
      for (int i = 64 * grp; i < 64 * (grp + 1); ++i) tk.row(t)[i] = num::bf16_from_float(nd(g) * mag);
    }
  }
}

Status insert(Cache& c, Tokens& tk, const void* slots, DType slot_dt) {
  KVInsertParams p;
  p.kv = tk.view();
  p.slot_mapping = make_tensor(const_cast<void*>(slots), slot_dt, {tk.T});
  p.cache = c.view;
  return kv_cache_insert(p);
}

// ---------------------------------------------------------------------------------------------

TEST(KVCacheRef, Model1PageBytes) {
  EXPECT_EQ(model1_page_bytes(64), 37440);  // 64 * 584 = 37376 -> 65 * 576
  EXPECT_EQ(model1_page_bytes(2), 1728);    // 1168 -> 3 * 576
  EXPECT_EQ(model1_page_bytes(1), 1152);
  for (int64_t p = 1; p <= 256; ++p) {
    EXPECT_EQ(model1_page_bytes(p) % 576, 0);
    EXPECT_GE(model1_page_bytes(p), p * 584);
    EXPECT_LT(model1_page_bytes(p), p * 584 + 576);
  }
}

TEST(KVCacheRef, Model1HandLayout) {
  // Page size 2, 3 pages: slot 3 is page 1 offset 1; page 1 starts at byte 1728, its scale bytes
  // at 1728 + 2*576 = 2880, offset 1's at 2888.
  Cache c(KVLayout::kModel1, 2, 3);
  Tokens tk(2, 512);
  uint16_t* r = tk.row(0);
  auto set = [&](int i, float v) { r[i] = num::bf16_from_float(v); };
  for (int i = 0; i < 512; ++i) set(i, 0.0f);
  for (int i = 0; i < 64; ++i) set(i, 1.0f);
  set(5, 448.0f);           // group 0: amax 448 -> 2^0 (127); 1 -> 0x38, 448 -> 0x7E
  /* group 1 all zero */    // -> floor 2^-13 (114), codes 0
  set(128, 896.0f);         // group 2: 2^1 (128); 896 -> 0x7E, 3 -> 1.5 (0x3C)
  set(129, 3.0f);
  set(192, kNaN);           // group 3: 0xFF, codes 0
  set(193, 5.0f);
  set(256, 1e-3f);          // group 4: bf16 0.00099945; max(2^-18, 2^-13) -> 114; * 2^13 = 8.19 -> 8 (0x50)
  set(320, 450.0f);         // group 5: 2^1; 225 -> 224 (0x76)
  set(384, -kInf);          // group 6: 0xFF
  for (int i = 448; i < 512; ++i) r[i] = static_cast<uint16_t>(0x1234 + i);  // rope, any bits
  for (int i = 0; i < 512; ++i) tk.row(1)[i] = num::bf16_from_float(7.0f);
  const int32_t slots[2] = {3, -1};
  const auto snap = c.arena.snapshot();
  DSV4_EXPECT_OK(insert(c, tk, slots, DType::I32));

  const uint8_t* d = c.data + 1728 + 576;
  const uint8_t* s = c.data + 2888;
  EXPECT_EQ(c.model1_data(3), d);
  EXPECT_EQ(c.model1_scales(3), s);
  const uint8_t want_scales[8] = {127, 114, 128, 0xFF, 114, 128, 0xFF, 0};
  for (int j = 0; j < 8; ++j) EXPECT_EQ(s[j], want_scales[j]) << j;
  EXPECT_EQ(d[0], 0x38);
  EXPECT_EQ(d[5], 0x7E);
  EXPECT_EQ(d[64], 0x00);
  EXPECT_EQ(d[128], 0x7E);
  EXPECT_EQ(d[129], 0x3C);
  EXPECT_EQ(d[130], 0x00);
  for (int i = 192; i < 256; ++i) EXPECT_EQ(d[i], 0) << i;
  EXPECT_EQ(d[256], 0x50);
  EXPECT_EQ(d[320], 0x76);
  for (int i = 384; i < 448; ++i) EXPECT_EQ(d[i], 0) << i;
  for (int i = 0; i < 64; ++i) {
    const uint16_t want = static_cast<uint16_t>(0x1234 + 448 + i);
    EXPECT_EQ(d[448 + 2 * i], want & 0xFF) << i;  // little-endian bf16 bits, verbatim
    EXPECT_EQ(d[449 + 2 * i], want >> 8) << i;
  }
  // Nothing else changed: not the other slots, not the pad between tokens' scales, not token 1 (-1).
  for (size_t i = 0; i < snap.size(); ++i) {
    const uint8_t* p = c.arena.base() + i;
    const bool owned = (p >= d && p < d + 576) || (p >= s && p < s + 8);
    if (!owned && *p != snap[i]) {
      ADD_FAILURE() << "insert wrote arena byte " << i;
      break;
    }
  }

  // Gather it back (f32): nope = e4m3 * 2^(e-127), rope decoded exactly.
  alignas(16) float out[2 * 512];
  std::fill(out, out + 1024, kNaN);
  alignas(16) int32_t idx[2] = {-1, 3};
  KVGatherParams gp;
  gp.cache = c.view;
  gp.indices = make_tensor(idx, DType::I32, {2});
  gp.out = make_tensor(out, DType::F32, {2, 512});
  DSV4_EXPECT_OK(kv_cache_gather(gp));
  for (int i = 0; i < 512; ++i) EXPECT_TRUE(same_bits(out[i], 0.0f)) << i;  // index -1: zeros
  const float* o = out + 512;
  EXPECT_EQ(o[0], 1.0f);
  EXPECT_EQ(o[5], 448.0f);
  EXPECT_EQ(o[64], 0.0f);
  EXPECT_EQ(o[128], 896.0f);
  EXPECT_EQ(o[129], 3.0f);
  for (int i = 192; i < 256; ++i) EXPECT_TRUE(std::isnan(o[i])) << i;
  EXPECT_EQ(o[256], std::ldexp(8.0f, -13));
  EXPECT_EQ(o[320], 448.0f);
  for (int i = 384; i < 448; ++i) EXPECT_TRUE(std::isnan(o[i])) << i;
  for (int i = 448; i < 512; ++i) EXPECT_TRUE(same_bits(o[i], num::bf16_to_float(r[i]))) << i;
}

TEST(KVCacheRef, PerTokenHand) {
  Cache c(KVLayout::kPerTokenScale, 2, 2);
  Tokens tk(4, 512);
  for (int t = 0; t < 4; ++t)
    for (int i = 0; i < 512; ++i) tk.row(t)[i] = 0;
  // Token 0: amax 448 -> s = bf16(1.0) = 0x3F80, codes e4m3(x).
  tk.row(0)[0] = num::bf16_from_float(448.0f);
  tk.row(0)[511] = num::bf16_from_float(-1.5f);
  // Token 1: amax 3 -> s = bf16(3/448) = 0.0066833 (rounded down), so 3/s = 448.9 saturates.
  tk.row(1)[7] = num::bf16_from_float(3.0f);
  // Token 2 all zero -> s = 0, codes 0. Token 3 holds a NaN -> s = NaN, codes 0.
  tk.row(3)[100] = num::bf16_from_float(kNaN);
  tk.row(3)[101] = num::bf16_from_float(2.0f);
  const int64_t slots[4] = {0, 1, 3, 2};
  DSV4_EXPECT_OK(insert(c, tk, slots, DType::I64));
  EXPECT_EQ(c.scales[0], 0x3F80);
  EXPECT_EQ(c.data[0], 0x7E);
  EXPECT_EQ(c.data[511], 0xBC);
  EXPECT_EQ(c.scales[1], 0x3BDB);  // 1.7109375 * 2^-8
  EXPECT_EQ(num::bf16_to_float(c.scales[1]), 0.006683349609375f);
  EXPECT_EQ(c.data[512 + 7], 0x7E);
  EXPECT_EQ(c.scales[3], 0x0000);
  for (int i = 0; i < 512; ++i) EXPECT_EQ(c.data[3 * 512 + i], 0) << i;
  EXPECT_EQ(c.scales[2], kBf16NaN);
  for (int i = 0; i < 512; ++i) EXPECT_EQ(c.data[2 * 512 + i], 0) << i;

  alignas(16) uint16_t out[4 * 512];
  alignas(16) int32_t idx[4] = {1, 2, 0, -1};
  KVGatherParams gp;
  gp.cache = c.view;
  gp.indices = make_tensor(idx, DType::I32, {4});
  gp.out = make_tensor(out, DType::BF16, {4, 512});
  DSV4_EXPECT_OK(kv_cache_gather(gp));
  EXPECT_EQ(out[7], num::bf16_from_float(448.0f * 0.006683349609375f));
  EXPECT_TRUE(std::isnan(num::bf16_to_float(out[512 + 5])));
  EXPECT_EQ(out[1024], num::bf16_from_float(448.0f));
  EXPECT_EQ(out[1024 + 511], num::bf16_from_float(-1.5f));
  for (int i = 0; i < 512; ++i) EXPECT_EQ(out[1536 + i], 0) << i;
}

// Random tokens into a poisoned cache; the whole cache image must equal the model's.
void check_insert_matches_model(KVLayout layout, int64_t page_size, int64_t pages, int64_t T, DType slot_dt,
                                int64_t stride, std::mt19937_64& g) {
  Cache c(layout, page_size, pages);
  Tokens tk(T, stride);
  fill_random(g, tk);
  if (T > 2) {
    tk.row(1)[g() % 512] = num::bf16_from_float(kNaN);
    tk.row(2)[g() % 512] = num::bf16_from_float(-kInf);
  }
  std::vector<int64_t> perm(c.slots());
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), g);
  std::vector<int64_t> s64(T);
  for (int64_t t = 0; t < T; ++t) s64[t] = (g() % 5 == 0) ? -1 : perm[t % perm.size()];
  std::vector<int32_t> s32(s64.begin(), s64.end());
  const void* slots = slot_dt == DType::I64 ? static_cast<const void*>(s64.data()) : s32.data();

  // The expected image: the poisoned arena with the model's tokens written.
  std::vector<uint8_t> want = c.arena.snapshot();
  const int64_t base = c.data - c.arena.base();
  for (int64_t t = 0; t < T; ++t) {
    const int64_t s = s64[t];
    if (s < 0) continue;
    if (layout == KVLayout::kModel1) {
      model1_token(tk.row(t), want.data() + (c.model1_data(s) - c.arena.base()),
                   want.data() + (c.model1_scales(s) - c.arena.base()));
    } else {
      uint16_t sc;
      per_token_model(tk.row(t), want.data() + base + s * 512, &sc);
      std::memcpy(want.data() + (reinterpret_cast<uint8_t*>(c.scales + s) - c.arena.base()), &sc, 2);
    }
  }
  const Status st = insert(c, tk, slots, slot_dt);
  ASSERT_TRUE(st.ok()) << st.message();
  const int64_t at = c.arena.first_change(want);
  EXPECT_EQ(at, -1) << "cache byte " << at - base << " differs from the model (page size " << page_size << ")";
}

TEST(KVCacheRef, InsertMatchesIndependentModel) {
  auto g = rng_for_test();
  for (KVLayout layout : {KVLayout::kModel1, KVLayout::kPerTokenScale}) {
    for (int64_t P : {64, 2}) {
      for (DType dt : {DType::I32, DType::I64}) {
        check_insert_matches_model(layout, P, 3, 37, dt, 512, g);
        check_insert_matches_model(layout, P, 2, 1, dt, 512, g);
        check_insert_matches_model(layout, P, 5, 7, dt, 520, g);  // row stride > 512
        check_insert_matches_model(layout, P, 1, 0, dt, 512, g);  // nothing to insert
      }
    }
  }
}

TEST(KVCacheRef, GatherRoundTrip) {
  auto g = rng_for_test();
  for (KVLayout layout : {KVLayout::kModel1, KVLayout::kPerTokenScale}) {
    for (int64_t P : {64, 2}) {
      for (DType odt : {DType::F32, DType::BF16}) {
        const int64_t pages = 3, T = 40;
        Cache c(layout, P, pages);
        Tokens tk(T, 512);
        fill_random(g, tk);
        std::vector<int32_t> slots(T);
        std::vector<int64_t> perm(c.slots());
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), g);
        for (int64_t t = 0; t < T; ++t) slots[t] = static_cast<int32_t>(perm[t % perm.size()]);
        // With fewer slots than tokens (P = 2), later tokens overwrite earlier ones: gather the
        // last token written to each slot.
        DSV4_EXPECT_OK(insert(c, tk, slots.data(), DType::I32));
        std::vector<int64_t> last(c.slots(), -1);
        for (int64_t t = 0; t < T; ++t) last[slots[t]] = t;

        const int64_t N = 29, ostride = 520;
        std::vector<int32_t> idx(N);
        for (int64_t n = 0; n < N; ++n) idx[n] = (n % 7 == 3) ? -1 : static_cast<int32_t>(g() % c.slots());
        std::vector<float> of(N * ostride + 16);
        std::vector<uint16_t> ob(N * ostride + 16);
        float* ofp = of.data();
        while (reinterpret_cast<uintptr_t>(ofp) % 16) ++ofp;
        uint16_t* obp = ob.data();
        while (reinterpret_cast<uintptr_t>(obp) % 16) ++obp;
        std::fill(of.begin(), of.end(), kNaN);
        std::fill(ob.begin(), ob.end(), kBf16NaN);
        KVGatherParams gp;
        gp.cache = c.view;
        gp.indices = make_tensor(idx.data(), DType::I32, {N});
        gp.out = odt == DType::F32 ? view2d(ofp, DType::F32, N, 512, ostride, 1)
                                   : view2d(obp, DType::BF16, N, 512, ostride, 1);
        DSV4_EXPECT_OK(kv_cache_gather(gp));
        int bad = 0;
        for (int64_t n = 0; n < N; ++n) {
          const int64_t s = idx[n];
          for (int i = 0; i < 512; ++i) {
            float want;
            double x = 0, scale = 0;
            if (s < 0) {
              want = 0.0f;
            } else if (layout == KVLayout::kModel1) {
              const uint8_t* d = c.model1_data(s);
              const uint8_t* sc = c.model1_scales(s);
              if (i < 448) {
                scale = num::ue8m0_to_float(sc[i / 64]);
                want = num::e4m3_to_float(d[i]) * static_cast<float>(scale);
              } else {
                uint16_t h;
                std::memcpy(&h, d + 448 + 2 * (i - 448), 2);
                want = num::bf16_to_float(h);
              }
            } else {
              scale = num::bf16_to_float(c.scales[s]);
              want = num::e4m3_to_float(c.data[s * 512 + i]) * static_cast<float>(scale);
            }
            if (s >= 0 && last[s] >= 0) x = num::bf16_to_float(tk.row(last[s])[i]);
            const float got = odt == DType::F32 ? ofp[n * ostride + i] : num::bf16_to_float(obp[n * ostride + i]);
            if (odt == DType::BF16) want = num::bf16_to_float(num::bf16_from_float(want));
            if (!same_bits(got, want) && ++bad <= 5)
              ADD_FAILURE() << "row " << n << " slot " << s << " elem " << i << ": " << got << " want " << want;
            // Against the original token: half an e4m3 step of the scale (plus bf16 output rounding).
            if (s >= 0 && last[s] >= 0 && std::isfinite(x)) {
              const bool exact = (i >= 448 && layout == KVLayout::kModel1) || scale == 0;  // rope; zero token
              double bound = exact ? 0 : e4m3_half_gap(x / scale) * scale;
              if (odt == DType::BF16) bound += std::fabs(x) * 0x1p-8;
              if (!(std::fabs(got - x) <= bound) && ++bad <= 5)
                ADD_FAILURE() << "row " << n << " elem " << i << ": " << got << " vs original " << x << " bound " << bound;
            }
          }
          for (int64_t i = 512; i < ostride && n + 1 < N; ++i) {
            const bool untouched = odt == DType::F32 ? std::isnan(ofp[n * ostride + i]) : obp[n * ostride + i] == kBf16NaN;
            if (!untouched && ++bad <= 5) ADD_FAILURE() << "row padding written at row " << n;
          }
        }
        EXPECT_EQ(bad, 0);
      }
    }
  }
}

TEST(KVCacheRef, AllSlotsMinusOneWriteNothing) {
  for (KVLayout layout : {KVLayout::kModel1, KVLayout::kPerTokenScale}) {
    Cache c(layout, 64, 2);
    Tokens tk(5, 512);
    for (int64_t t = 0; t < 5; ++t)
      for (int i = 0; i < 512; ++i) tk.row(t)[i] = num::bf16_from_float(1.0f);
    const int32_t slots[5] = {-1, -1, -1, -1, -1};
    const auto snap = c.arena.snapshot();
    DSV4_EXPECT_OK(insert(c, tk, slots, DType::I32));
    EXPECT_EQ(c.arena.first_change(snap), -1);
  }
}

TEST(KVCacheRef, BadSlotsRejectedBeforeAnyWrite) {
  for (KVLayout layout : {KVLayout::kModel1, KVLayout::kPerTokenScale}) {
    for (int64_t P : {64, 2}) {
      Cache c(layout, P, 3);
      const int64_t n = c.slots();
      Tokens tk(4, 512);
      for (int64_t t = 0; t < 4; ++t)
        for (int i = 0; i < 512; ++i) tk.row(t)[i] = num::bf16_from_float(1.0f);
      for (int64_t bad : {n, int64_t{-2}, n + 1000, int64_t{1} << 40, std::numeric_limits<int64_t>::min()}) {
        // The bad slot is last: the valid ones before it must not have been written either.
        const int64_t s64[4] = {0, 1, -1, bad};
        const auto snap = c.arena.snapshot();
        Status st = insert(c, tk, s64, DType::I64);
        EXPECT_TRUE(has_all(st, StatusCode::kInvalidArgument,
                            {"kv_cache_insert", "'slot_mapping'", std::to_string(bad), "position 3", std::to_string(n)}));
        EXPECT_EQ(c.arena.first_change(snap), -1);
        if (bad == static_cast<int32_t>(bad)) {
          const int32_t s32[4] = {0, 1, -1, static_cast<int32_t>(bad)};
          st = insert(c, tk, s32, DType::I32);
          EXPECT_TRUE(has_all(st, StatusCode::kInvalidArgument, {"'slot_mapping'", std::to_string(bad), "position 3"}));
          EXPECT_EQ(c.arena.first_change(snap), -1);
        }
      }
      // Gather: a bad index, output untouched.
      alignas(16) float out[3 * 512];
      std::fill(out, out + 3 * 512, kNaN);
      for (int32_t bad : {static_cast<int32_t>(n), -2, std::numeric_limits<int32_t>::max()}) {
        alignas(16) int32_t idx[3] = {0, bad, 1};
        KVGatherParams gp;
        gp.cache = c.view;
        gp.indices = make_tensor(idx, DType::I32, {3});
        gp.out = make_tensor(out, DType::F32, {3, 512});
        const Status st = kv_cache_gather(gp);
        EXPECT_TRUE(has_all(st, StatusCode::kInvalidArgument,
                            {"kv_cache_gather", "'indices'", std::to_string(bad), "position 1"}));
        for (int i = 0; i < 3 * 512; ++i) ASSERT_TRUE(std::isnan(out[i])) << "gather wrote " << i;
      }
    }
  }
}

TEST(KVCacheRef, GatherEmpty) {
  Cache c(KVLayout::kModel1, 64, 1);
  alignas(16) float out[4] = {1, 2, 3, 4};
  alignas(16) int32_t idx[1] = {0};
  KVGatherParams gp;
  gp.cache = c.view;
  gp.indices = make_tensor(idx, DType::I32, {0});
  gp.out = make_tensor(out, DType::F32, {0, 512});
  DSV4_EXPECT_OK(kv_cache_gather(gp));
  EXPECT_EQ(out[0], 1.0f);
}

}  // namespace
}  // namespace dsv4::test
