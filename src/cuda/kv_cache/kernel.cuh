// FP8 KV-cache kernels (include/dsv4/ops/kv_cache.h, spec 3.5/3.6). Numerics follow the CPU
// reference (src/cpu/kv_cache.cpp) bit for bit: same f32 operations, software scale rules, and the
// hardware e4m3 / bf16 conversions only on non-NaN values, where they equal the num:: codecs (a
// NaN output is some NaN; the payload is not part of the contract).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common/fast_div.h"
#include "cuda/common/vec.cuh"
#include "cuda/kv_cache/config.h"
#include "dsv4/numerics.h"

namespace dsv4::cuda::kv {

constexpr uint32_t kFullMask = 0xFFFFFFFFu;
constexpr uint32_t kInfBits = 0x7F800000u;
constexpr int kModel1MinExp = -13;  // 2^-13 * 448 > 1e-4: the floor max(amax/448, 1e-4) rounds up to

struct CacheRef {
  uint8_t* data;
  uint16_t* scales;     // per-token layout only
  int64_t page_size;
  int64_t page_bytes;   // MODEL1 page stride
  int64_t num_slots;    // pages * page_size
  FastDiv page_div;     // page_size, for slots below 2^32 (every cache that fits in memory)
  bool slots_32bit;     // num_slots <= 2^32: a valid slot splits with page_div
};

// slot -> (page, offset) for a slot in [0, num_slots). A 64-bit division is a long software
// sequence on the GPU, which showed in the gather kernel's time; the multiply-high form is exact
// for 32-bit slots.
__device__ __forceinline__ void split_slot(const CacheRef& c, int64_t slot, int64_t* page, int64_t* off) {
  if (c.slots_32bit) {
    const uint32_t s = static_cast<uint32_t>(slot), p = c.page_div.div(s);
    *page = p;
    *off = s - p * c.page_div.divisor;
  } else {
    *page = slot / c.page_size;
    *off = slot - *page * c.page_size;
  }
}

struct InsertArgs {
  const uint8_t* kv;
  int64_t kv_row_bytes;
  const void* slots;
  bool slots_i64;
  int64_t tokens;
  CacheRef cache;
};

struct GatherArgs {
  const int32_t* indices;
  int64_t rows;
  uint8_t* out;
  int64_t out_row_bytes;
  CacheRef cache;
};

__device__ __forceinline__ void unpack_bf16x8(const uint4& v, float* f) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
  }
}
__device__ __forceinline__ uint32_t absmax_bf16x8(const uint4& v) {
  const uint32_t acc = dev::bf16x2_absmax_acc(dev::bf16x2_absmax_acc(v.x & 0x7FFF7FFFu, v.y), v.z);
  return dev::bf16x2_acc_to_f32_bits(dev::bf16x2_absmax_acc(acc, v.w));
}
// e4m3 codes of 8 values times (kDivide ? 1/s : s), exact f32 operations as the reference.
template <bool kDivide>
__device__ __forceinline__ uint2 e4m3x8(const float* f, float s) {
  float y[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) y[i] = kDivide ? f[i] / s : f[i] * s;
  return make_uint2(dev::e4m3x4(y[0], y[1], y[2], y[3]), dev::e4m3x4(y[4], y[5], y[6], y[7]));
}

// MODEL1 scale of a 64-value group from its amax bits: the ue8m0 byte and the exact multiplier.
__device__ __forceinline__ uint2 model1_encode_chunk(const uint4& v, uint32_t group_amax_bits, uint32_t* scale_byte) {
  if (group_amax_bits >= kInfBits) {
    *scale_byte = 0xFF;
    return make_uint2(0, 0);
  }
  const int e = num::ceil_log2_ratio(__uint_as_float(group_amax_bits), 448.0f, kModel1MinExp);
  *scale_byte = num::ue8m0_from_exp(e);
  float f[8];
  unpack_bf16x8(v, f);
  return e4m3x8<false>(f, num::exp2i(-e));
}

__device__ __forceinline__ int64_t load_slot(const InsertArgs& a, int64_t t) {
  return a.slots_i64 ? static_cast<const int64_t*>(a.slots)[t] : static_cast<const int32_t*>(a.slots)[t];
}

// Group amax across the 8 lanes that hold one 64-value group.
__device__ __forceinline__ uint32_t group_max(uint32_t m) {
#pragma unroll
  for (int o = 1; o < kLanesPerGroup; o <<= 1) m = max(m, __shfl_xor_sync(kFullMask, m, o));
  return m;
}

// Slots outside the cache (the CPU backend rejects them; the GPU cannot check device data without a
// sync) are skipped, like -1. Duplicate slots in one call race: the caller must not pass them.
__global__ void __launch_bounds__(kThreads) model1_insert_kernel(InsertArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + threadIdx.x / 32;
  if (t >= a.tokens) return;  // warp-uniform
  const int64_t slot = load_slot(a, t);
  if (slot < 0 || slot >= a.cache.num_slots) return;  // warp-uniform
  int64_t page, off;
  split_slot(a.cache, slot, &page, &off);
  uint8_t* page_base = a.cache.data + page * a.cache.page_bytes;
  uint8_t* tok = page_base + off * 576;

  const uint8_t* row = a.kv + t * a.kv_row_bytes;
  const uint4 v0 = __ldg(reinterpret_cast<const uint4*>(row) + lane);
  const uint4 v1 = __ldg(reinterpret_cast<const uint4*>(row) + 32 + lane);
  const uint32_t m0 = group_max(absmax_bf16x8(v0));
  const uint32_t m1 = group_max(absmax_bf16x8(v1));  // lanes 24..31: the rope "group", unused

  uint32_t sb0, sb1 = 0;
  *reinterpret_cast<uint2*>(tok + lane * 8) = model1_encode_chunk(v0, m0, &sb0);
  if (lane < kRopeFirstLane) {
    *reinterpret_cast<uint2*>(tok + 256 + lane * 8) = model1_encode_chunk(v1, m1, &sb1);
  } else {
    dev::st16(tok + 448 + (lane - kRopeFirstLane) * 16, v1);  // rope bf16, verbatim
  }
  // Scale bytes 0..3 come from the group leaders of the first half, 4..6 from the second half.
  const uint32_t packed = sb0 | (sb1 << 8);
  const uint32_t p0 = __shfl_sync(kFullMask, packed, 0), p1 = __shfl_sync(kFullMask, packed, 8);
  const uint32_t p2 = __shfl_sync(kFullMask, packed, 16), p3 = __shfl_sync(kFullMask, packed, 24);
  if (lane == 0) {
    const uint32_t lo = (p0 & 0xFF) | ((p1 & 0xFF) << 8) | ((p2 & 0xFF) << 16) | ((p3 & 0xFF) << 24);
    const uint32_t hi = ((p0 >> 8) & 0xFF) | (((p1 >> 8) & 0xFF) << 8) | (((p2 >> 8) & 0xFF) << 16);  // pad byte 0
    *reinterpret_cast<uint2*>(page_base + a.cache.page_size * 576 + off * 8) = make_uint2(lo, hi);
  }
}

__global__ void __launch_bounds__(kThreads) per_token_insert_kernel(InsertArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + threadIdx.x / 32;
  if (t >= a.tokens) return;
  const int64_t slot = load_slot(a, t);
  if (slot < 0 || slot >= a.cache.num_slots) return;
  const uint8_t* row = a.kv + t * a.kv_row_bytes;
  const uint4 v0 = __ldg(reinterpret_cast<const uint4*>(row) + lane);
  const uint4 v1 = __ldg(reinterpret_cast<const uint4*>(row) + 32 + lane);
  const uint32_t m = __reduce_max_sync(kFullMask, max(absmax_bf16x8(v0), absmax_bf16x8(v1)));
  uint16_t s_bits = 0x7FC0;
  uint2 c0 = make_uint2(0, 0), c1 = make_uint2(0, 0);
  if (m < kInfBits) {
    s_bits = num::bf16_from_float(__uint_as_float(m) / 448.0f);
    const float s = num::bf16_to_float(s_bits);
    if (s != 0.0f) {
      float f[8];
      unpack_bf16x8(v0, f);
      c0 = e4m3x8<true>(f, s);
      unpack_bf16x8(v1, f);
      c1 = e4m3x8<true>(f, s);
    }
  }
  uint8_t* tok = a.cache.data + slot * 512;
  *reinterpret_cast<uint2*>(tok + lane * 8) = c0;
  *reinterpret_cast<uint2*>(tok + 256 + lane * 8) = c1;
  if (lane == 0) a.cache.scales[slot] = s_bits;
}

// ---- gather ----

// Writes one 8-value chunk of an output row: 16 bytes of bf16 or 32 bytes of f32.
template <class O>
__device__ __forceinline__ void store_chunk(uint8_t* row, int chunk, const float* y);
template <>
__device__ __forceinline__ void store_chunk<float>(uint8_t* row, int chunk, const float* y) {
  uint8_t* p = row + chunk * 32;
  dev::st16(p, make_uint4(__float_as_uint(y[0]), __float_as_uint(y[1]), __float_as_uint(y[2]), __float_as_uint(y[3])));
  dev::st16(p + 16, make_uint4(__float_as_uint(y[4]), __float_as_uint(y[5]), __float_as_uint(y[6]), __float_as_uint(y[7])));
}
struct Bf16 {};
template <>
__device__ __forceinline__ void store_chunk<Bf16>(uint8_t* row, int chunk, const float* y) {
  dev::st16(row + chunk * 16, make_uint4(dev::bf16x2_rn(y[0], y[1]), dev::bf16x2_rn(y[2], y[3]),
                                         dev::bf16x2_rn(y[4], y[5]), dev::bf16x2_rn(y[6], y[7])));
}
// Eight bf16 rope values, written as the reference does: bf16 -> f32 exactly, then f32 out as is,
// or back to bf16 (identical bits, except that a signalling NaN comes back quiet).
template <class O>
__device__ __forceinline__ void store_rope_chunk(uint8_t* row, int chunk, const uint4& v);
template <>
__device__ __forceinline__ void store_rope_chunk<float>(uint8_t* row, int chunk, const uint4& v) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  uint8_t* p = row + chunk * 32;
  dev::st16(p, make_uint4(w[0] << 16, w[0] & 0xFFFF0000u, w[1] << 16, w[1] & 0xFFFF0000u));
  dev::st16(p + 16, make_uint4(w[2] << 16, w[2] & 0xFFFF0000u, w[3] << 16, w[3] & 0xFFFF0000u));
}
__device__ __forceinline__ uint32_t quiet_bf16x2(uint32_t w) {
  const uint32_t lo_nan = (w & 0x7FFFu) > 0x7F80u ? 0x40u : 0u;
  const uint32_t hi_nan = ((w >> 16) & 0x7FFFu) > 0x7F80u ? 0x400000u : 0u;
  return w | lo_nan | hi_nan;
}
template <>
__device__ __forceinline__ void store_rope_chunk<Bf16>(uint8_t* row, int chunk, const uint4& v) {
  dev::st16(row + chunk * 16, make_uint4(quiet_bf16x2(v.x), quiet_bf16x2(v.y), quiet_bf16x2(v.z), quiet_bf16x2(v.w)));
}
// A whole row of one value: +0, or the quiet NaN (f32 0x7FC00000, bf16 0x7FC0), bits written directly.
template <class O>
__device__ __forceinline__ void fill_row(uint8_t* row, int lane, bool nan) {
  const uint32_t w = std::is_same_v<O, float> ? (nan ? 0x7FC00000u : 0u) : (nan ? 0x7FC07FC0u : 0u);
  const uint4 v = make_uint4(w, w, w, w);
  constexpr int kChunkBytes = std::is_same_v<O, float> ? 32 : 16;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    uint8_t* p = row + (half * 32 + lane) * kChunkBytes;
    dev::st16(p, v);
    if constexpr (kChunkBytes == 32) dev::st16(p + 16, v);
  }
}

__device__ __forceinline__ void decode_e4m3x8(const uint2& c, float s, float* y) {
  const uint32_t w[2] = {c.x, c.y};
#pragma unroll
  for (int i = 0; i < 8; i += 2) {
    const float2 d = dev::e4m3x2_to_float2(w[i / 4] >> (8 * (i % 4)));
    y[i] = d.x * s;
    y[i + 1] = d.y * s;
  }
}

// -1 gives a row of zeros; any other index outside the cache a row of NaN (the fault stays visible).
template <class O>
__device__ __forceinline__ bool gather_special_row(const GatherArgs& a, int64_t slot, uint8_t* out_row, int lane) {
  if (slot == -1) {
    fill_row<O>(out_row, lane, false);
    return true;
  }
  if (slot < 0 || slot >= a.cache.num_slots) {
    fill_row<O>(out_row, lane, true);
    return true;
  }
  return false;
}

// f32 rows leave through shared memory: a lane's decoded 8 values are 32 bytes, so storing them
// straight to the row takes two 16-byte stores that each cover every other half-sector of the
// warp's span, which measured 64-76% of copy bandwidth. Staged, each warp store is one contiguous
// 512-byte span.
constexpr int kStageChunks = kKVDim * 4 / 16;  // 16-byte pieces of one f32 row
__device__ __forceinline__ void flush_staged_row(const uint8_t* stage_row, uint8_t* out_row, int lane) {
  __syncwarp();
#pragma unroll
  for (int i = 0; i < kStageChunks / 32; ++i)
    dev::st16(out_row + (i * 32 + lane) * 16, *reinterpret_cast<const uint4*>(stage_row + (i * 32 + lane) * 16));
  __syncwarp();
}

// A warp gathers kGatherRows rows: one coalesced load fetches their indices, then every row's
// scales, e4m3 codes and rope are requested before the first is decoded, so a warp keeps
// kGatherRows * 584 bytes in flight instead of waiting out index -> data -> store one row at a time.
template <class O>
__global__ void __launch_bounds__(kThreads) model1_gather_kernel(GatherArgs a) {
  constexpr bool kStage = std::is_same_v<O, float>;
  __shared__ uint4 stage[kStage ? kWarpsPerCta * kStageChunks : 1];
  uint8_t* stage_row = reinterpret_cast<uint8_t*>(stage + (kStage ? (threadIdx.x / 32) * kStageChunks : 0));
  const int lane = threadIdx.x & 31;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + threadIdx.x / 32) * kGatherRows;
  if (n0 >= a.rows) return;  // warp-uniform
  const int32_t my_index = lane < kGatherRows && n0 + lane < a.rows ? a.indices[n0 + lane] : -1;
  const int g0 = lane / kLanesPerGroup;  // groups 0..3, and 4..6 in the second half
  int64_t slot[kGatherRows];
  uint2 sc[kGatherRows], c0[kGatherRows], c1[kGatherRows];
  uint4 rope[kGatherRows];
#pragma unroll
  for (int r = 0; r < kGatherRows; ++r) {
    slot[r] = __shfl_sync(kFullMask, my_index, r);
    if (slot[r] < 0 || slot[r] >= a.cache.num_slots) continue;  // warp-uniform: written below
    int64_t page, off;
    split_slot(a.cache, slot[r], &page, &off);
    const uint8_t* page_base = a.cache.data + page * a.cache.page_bytes;
    const uint8_t* tok = page_base + off * 576;
    sc[r] = __ldg(reinterpret_cast<const uint2*>(page_base + a.cache.page_size * 576 + off * 8));
    c0[r] = __ldg(reinterpret_cast<const uint2*>(tok) + lane);
    if (lane < kRopeFirstLane) c1[r] = __ldg(reinterpret_cast<const uint2*>(tok + 256) + lane);
    else rope[r] = __ldg(reinterpret_cast<const uint4*>(tok + 448) + (lane - kRopeFirstLane));
  }
#pragma unroll
  for (int r = 0; r < kGatherRows; ++r) {
    if (n0 + r >= a.rows) break;
    uint8_t* out_row = a.out + (n0 + r) * a.out_row_bytes;
    if (gather_special_row<O>(a, slot[r], out_row, lane)) continue;
    uint8_t* dst = kStage ? stage_row : out_row;
    float y[8];
    decode_e4m3x8(c0[r], num::ue8m0_to_float(static_cast<uint8_t>(sc[r].x >> (8 * g0))), y);
    store_chunk<O>(dst, lane, y);
    if (lane < kRopeFirstLane) {
      decode_e4m3x8(c1[r], num::ue8m0_to_float(static_cast<uint8_t>(sc[r].y >> (8 * g0))), y);
      store_chunk<O>(dst, 32 + lane, y);
    } else {
      store_rope_chunk<O>(dst, 32 + lane, rope[r]);
    }
    if constexpr (kStage) flush_staged_row(stage_row, out_row, lane);
  }
}

// Like the MODEL1 gather: kGatherRows rows a warp, every row's bytes requested before any decode.
template <class O>
__global__ void __launch_bounds__(kThreads) per_token_gather_kernel(GatherArgs a) {
  constexpr bool kStage = std::is_same_v<O, float>;
  __shared__ uint4 stage[kStage ? kWarpsPerCta * kStageChunks : 1];
  uint8_t* stage_row = reinterpret_cast<uint8_t*>(stage + (kStage ? (threadIdx.x / 32) * kStageChunks : 0));
  const int lane = threadIdx.x & 31;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + threadIdx.x / 32) * kGatherRows;
  if (n0 >= a.rows) return;  // warp-uniform
  const int32_t my_index = lane < kGatherRows && n0 + lane < a.rows ? a.indices[n0 + lane] : -1;
  int64_t slot[kGatherRows];
  uint16_t sc[kGatherRows];
  uint2 c0[kGatherRows], c1[kGatherRows];
#pragma unroll
  for (int r = 0; r < kGatherRows; ++r) {
    slot[r] = __shfl_sync(kFullMask, my_index, r);
    if (slot[r] < 0 || slot[r] >= a.cache.num_slots) continue;  // warp-uniform: written below
    const uint8_t* tok = a.cache.data + slot[r] * 512;
    sc[r] = a.cache.scales[slot[r]];
    c0[r] = __ldg(reinterpret_cast<const uint2*>(tok) + lane);
    c1[r] = __ldg(reinterpret_cast<const uint2*>(tok + 256) + lane);
  }
#pragma unroll
  for (int r = 0; r < kGatherRows; ++r) {
    if (n0 + r >= a.rows) break;
    uint8_t* out_row = a.out + (n0 + r) * a.out_row_bytes;
    if (gather_special_row<O>(a, slot[r], out_row, lane)) continue;
    uint8_t* dst = kStage ? stage_row : out_row;
    const float s = num::bf16_to_float(sc[r]);
    float y[8];
    decode_e4m3x8(c0[r], s, y);
    store_chunk<O>(dst, lane, y);
    decode_e4m3x8(c1[r], s, y);
    store_chunk<O>(dst, 32 + lane, y);
    if constexpr (kStage) flush_staged_row(stage_row, out_row, lane);
  }
}

}  // namespace dsv4::cuda::kv
