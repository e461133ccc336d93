// CPU reference for the FP8 KV cache (include/dsv4/ops/kv_cache.h), the oracle for the CUDA kernels.
//
// MODEL1 (spec 3.5). Page p starts at byte p * model1_page_bytes(P); slot s is page s / P, offset
// o = s % P. Insert, per token: for each of the 7 groups of 64 nope values, amax = max |x| (bf16 ->
// f32), e = max(ceil(log2((double)amax / 448)), -13) (naive, in double; see cpu/ref_numerics.h),
// codes e4m3((float)((double)x / 2^e)) at bytes [o*576 + 64*j, ...); the 64 rope bf16 are copied
// verbatim to bytes [o*576 + 448, o*576 + 576) (little-endian, as in memory); the 7 scale bytes
// e + 127 and one 0 pad byte at P*576 + o*8. A group holding a NaN or +-inf gets scale 0xFF and
// codes 0. Gather: nope = e4m3_to_float(code) * ue8m0_to_float(scale) in f32, rope decoded from
// bf16, each rounded to the out dtype (bf16_from_float; bf16 rope round-trips bit for bit).
//
// Per-token scale (spec 3.6). Insert: amax over the token's 512 values (bf16 -> f32),
// s = bf16_from_float(amax / 448.0f); code = e4m3(x / bf16_to_float(s)) (f32 division), or 0 when
// that scale is 0. A token holding a NaN or +-inf gets s = bf16 NaN (0x7FC0) and codes 0. Gather:
// e4m3_to_float(code) * bf16_to_float(s) in f32, rounded to the out dtype.
//
// Index -1 (insert: skip the token; gather: a row of zeros). Every other slot or index outside
// [0, num_pages * P) is rejected with kInvalidArgument before anything is written; duplicate slots
// in one insert are written in token order (the last one wins).
#include <cmath>
#include <cstring>
#include <string>

#include "backend/backends.h"
#include "core/validate.h"
#include "cpu/ref_numerics.h"
#include "dsv4/numerics.h"

namespace dsv4::cpu {
namespace {

constexpr int kGroup = 64;
constexpr int kGroups = kKVNopeDim / kGroup;  // 7

int64_t load_index(const TensorView& t, int64_t i) {
  return t.dtype == DType::I64 ? t.ptr<const int64_t>()[i] : static_cast<int64_t>(t.ptr<const int32_t>()[i]);
}

int64_t num_slots(const KVCacheView& c) { return c.data.shape[0] * c.page_size; }

// All entries must be -1 or a slot of the cache.
Status check_slots(const char* op, const char* arg, const TensorView& t, const KVCacheView& c) {
  const int64_t n = num_slots(c);
  for (int64_t i = 0; i < t.shape[0]; ++i) {
    const int64_t s = load_index(t, i);
    if (s != -1 && (s < 0 || s >= n))
      return {StatusCode::kInvalidArgument,
              std::string(op) + ": argument '" + arg + "' holds " + std::to_string(s) + " at position " +
                  std::to_string(i) + "; entries must be -1 or in [0, " + std::to_string(n) + ") (" +
                  std::to_string(c.data.shape[0]) + " pages of " + std::to_string(c.page_size) + " tokens)"};
  }
  return Status::Ok();
}

float load_bf16(const uint16_t* row, int i) { return num::bf16_to_float(row[i]); }

void store_out(const TensorView& out, int64_t n, int i, float v) {
  const int64_t off = n * out.strides[0] + i;
  if (out.dtype == DType::BF16) out.ptr<uint16_t>()[off] = num::bf16_from_float(v);
  else out.ptr<float>()[off] = v;
}

// ---- MODEL1 ----

uint8_t* model1_token_data(const KVCacheView& c, int64_t slot) {
  return c.data.ptr<uint8_t>() + (slot / c.page_size) * model1_page_bytes(c.page_size) +
         (slot % c.page_size) * kModel1DataBytes;
}
uint8_t* model1_token_scales(const KVCacheView& c, int64_t slot) {
  return c.data.ptr<uint8_t>() + (slot / c.page_size) * model1_page_bytes(c.page_size) +
         c.page_size * kModel1DataBytes + (slot % c.page_size) * 8;
}

void model1_insert_token(const uint16_t* kv, uint8_t* data, uint8_t* scales) {
  for (int j = 0; j < kGroups; ++j) {
    bool finite = true;
    float amax = 0.0f;
    for (int i = j * kGroup; i < (j + 1) * kGroup; ++i) {
      const float v = load_bf16(kv, i);
      if (!num::is_finite(v)) finite = false;
      else amax = std::fmax(amax, std::fabs(v));
    }
    if (!finite) {
      scales[j] = 0xFF;
      for (int i = j * kGroup; i < (j + 1) * kGroup; ++i) data[i] = 0;
      continue;
    }
    const int e = ref_pow2_exponent(amax, 448.0f, kModel1MinExp);
    scales[j] = num::ue8m0_from_exp(e);
    const double step = std::ldexp(1.0, e);
    for (int i = j * kGroup; i < (j + 1) * kGroup; ++i)
      data[i] = num::e4m3_from_float(static_cast<float>(static_cast<double>(load_bf16(kv, i)) / step));
  }
  scales[kGroups] = 0;
  std::memcpy(data + kKVNopeDim, kv + kKVNopeDim, kKVRopeDim * sizeof(uint16_t));
}

void model1_gather_token(const KVCacheView& c, int64_t slot, const TensorView& out, int64_t n) {
  const uint8_t* data = model1_token_data(c, slot);
  const uint8_t* scales = model1_token_scales(c, slot);
  for (int i = 0; i < kKVNopeDim; ++i)
    store_out(out, n, i, num::e4m3_to_float(data[i]) * num::ue8m0_to_float(scales[i / kGroup]));
  for (int i = 0; i < kKVRopeDim; ++i) {
    uint16_t h;
    std::memcpy(&h, data + kKVNopeDim + 2 * i, 2);
    store_out(out, n, kKVNopeDim + i, num::bf16_to_float(h));
  }
}

// ---- per-token scale ----

void per_token_insert(const uint16_t* kv, uint8_t* data, uint16_t* scale) {
  bool finite = true;
  float amax = 0.0f;
  for (int i = 0; i < kKVDim; ++i) {
    const float v = load_bf16(kv, i);
    if (!num::is_finite(v)) finite = false;
    else amax = std::fmax(amax, std::fabs(v));
  }
  if (!finite) {
    *scale = 0x7FC0;
    std::memset(data, 0, kKVDim);
    return;
  }
  *scale = num::bf16_from_float(amax / 448.0f);
  const float s = num::bf16_to_float(*scale);
  for (int i = 0; i < kKVDim; ++i) data[i] = s == 0.0f ? 0 : num::e4m3_from_float(load_bf16(kv, i) / s);
}

}  // namespace

Status kv_cache_insert(const KVInsertParams& p) {
  DSV4_RETURN_IF_ERROR(check_slots("kv_cache_insert", "slot_mapping", p.slot_mapping, p.cache));
  const KVCacheView& c = p.cache;
  for (int64_t t = 0; t < p.kv.shape[0]; ++t) {
    const int64_t slot = load_index(p.slot_mapping, t);
    if (slot == -1) continue;
    const uint16_t* kv = p.kv.ptr<const uint16_t>() + t * p.kv.strides[0];
    if (c.layout == KVLayout::kModel1) {
      model1_insert_token(kv, model1_token_data(c, slot), model1_token_scales(c, slot));
    } else {
      per_token_insert(kv, c.data.ptr<uint8_t>() + slot * kKVDim, c.scales.ptr<uint16_t>() + slot);
    }
  }
  return Status::Ok();
}

Status kv_cache_gather(const KVGatherParams& p) {
  DSV4_RETURN_IF_ERROR(check_slots("kv_cache_gather", "indices", p.indices, p.cache));
  const KVCacheView& c = p.cache;
  for (int64_t n = 0; n < p.out.shape[0]; ++n) {
    const int64_t slot = load_index(p.indices, n);
    if (slot == -1) {
      for (int i = 0; i < kKVDim; ++i) store_out(p.out, n, i, 0.0f);
    } else if (c.layout == KVLayout::kModel1) {
      model1_gather_token(c, slot, p.out, n);
    } else {
      const uint8_t* data = c.data.ptr<const uint8_t>() + slot * kKVDim;
      const float s = num::bf16_to_float(c.scales.ptr<const uint16_t>()[slot]);
      for (int i = 0; i < kKVDim; ++i) store_out(p.out, n, i, num::e4m3_to_float(data[i]) * s);
    }
  }
  return Status::Ok();
}

}  // namespace dsv4::cpu
