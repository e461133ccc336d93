// Quantization kernels (include/dsv4/ops/quant.h). All are memory-bound streams: 16-byte loads,
// several in flight per thread, coalesced stores, no shared-memory round trips except the one
// CTA-wide amax of an FP8_128x128 block. Numerics follow the CPU reference bit for bit: the same
// f32 operations in the same order, the codecs of dsv4/numerics.h or forms proven equal to them
// (fast::e2m1_code, tested against num:: over whole binades; the hardware e4m3 and bf16 conversions
// on non-NaN values). A NaN output is some NaN: its payload is not part of the contract.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/fast_codecs.h"
#include "cuda/common/fast_div.h"
#include "cuda/common/vec.cuh"
#include "cuda/quant/config.h"
#include "dsv4/numerics.h"

namespace dsv4::cuda::quant {

constexpr uint32_t kFullMask = 0xFFFFFFFFu;
constexpr uint32_t kInfBits = 0x7F800000u;  // magnitude bits at or above this are inf or NaN
constexpr uint32_t kF32NaNBits = 0x7FC00000u;

// ---------------------------------------------------------------------------------------------
// Element types of the wide tensor. A 16-byte chunk holds kElems of them; unpacking to f32 is
// exact, and absmax collects magnitude bits (unsigned order = |x| order, NaN above inf).
struct Bf16 {};
template <class T>
struct Wide;
template <>
struct Wide<float> {
  static constexpr int kElems = 4;
  static constexpr int kBytes = 4;
  __device__ __forceinline__ static void unpack(const uint4& v, float* f) {
    f[0] = __uint_as_float(v.x);
    f[1] = __uint_as_float(v.y);
    f[2] = __uint_as_float(v.z);
    f[3] = __uint_as_float(v.w);
  }
  __device__ __forceinline__ static uint32_t absmax_bits(const uint4& v) {
    return max(max(v.x & 0x7FFFFFFFu, v.y & 0x7FFFFFFFu), max(v.z & 0x7FFFFFFFu, v.w & 0x7FFFFFFFu));
  }
  // Largest finite magnitude (for the NVFP4 global amax, which skips non-finite values).
  __device__ __forceinline__ static uint32_t finite_absmax_bits(const uint4& v) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
    uint32_t m = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t b = w[i] & 0x7FFFFFFFu;
      m = b < kInfBits ? max(m, b) : m;
    }
    return m;
  }
};
template <>
struct Wide<Bf16> {
  static constexpr int kElems = 8;
  static constexpr int kBytes = 2;
  __device__ __forceinline__ static void unpack(const uint4& v, float* f) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
    }
  }
  __device__ __forceinline__ static uint32_t absmax_bits(const uint4& v) {
    uint32_t acc = dev::bf16x2_absmax_acc(dev::bf16x2_absmax_acc(v.x & 0x7FFF7FFFu, v.y), v.z);
    return dev::bf16x2_acc_to_f32_bits(dev::bf16x2_absmax_acc(acc, v.w));
  }
  __device__ __forceinline__ static uint32_t finite_absmax_bits(const uint4& v) {
    uint32_t acc = dev::bf16x2_finite_absmax_acc(dev::bf16x2_finite_absmax_acc(0, v.x), v.y);
    acc = dev::bf16x2_finite_absmax_acc(dev::bf16x2_finite_absmax_acc(acc, v.z), v.w);
    return dev::bf16x2_acc_to_f32_bits(acc);
  }
};

// ---------------------------------------------------------------------------------------------
// Encoders for one chunk's E values (callers skip them for a non-finite block, whose codes are 0).

// The e2m1 sign bits (bit 3 of each nibble) of a chunk's elements, straight from the input bits.
// bf16: byte 1 of each word holds the even element's sign, byte 3 the odd one's; four byte
// permutes gather them as [e0 e2 e4 e6] and [e1 e3 e5 e7], which land on bit 3 of nibbles
// 0,2,4,6 (shifted down by 4) and 1,3,5,7 (in place).
template <class T>
__device__ __forceinline__ uint32_t e2m1_sign_bits(const uint4& v);
template <>
__device__ __forceinline__ uint32_t e2m1_sign_bits<Bf16>(const uint4& v) {
  const uint32_t r01 = __byte_perm(v.x, v.y, 0x7351), r23 = __byte_perm(v.z, v.w, 0x7351);
  const uint32_t even = __byte_perm(r01, r23, 0x5410), odd = __byte_perm(r01, r23, 0x7632);
  return ((even >> 4) & 0x08080808u) | (odd & 0x80808080u);
}
template <>
__device__ __forceinline__ uint32_t e2m1_sign_bits<float>(const uint4& v) {
  return (v.x >> 28 & 0x8u) | (v.y >> 24 & 0x80u) | (v.z >> 20 & 0x800u) | (v.w >> 16 & 0x8000u);
}
// Magnitude codes m[i] (3 bits) packed as nibbles, element 0 lowest: a multiply-add chain, which
// runs on the fma pipe and leaves the integer pipe (the bottleneck here) to the codec.
template <int E>
__device__ __forceinline__ uint32_t pack_nibbles(const uint32_t* m) {
  uint32_t c = m[E - 1];
#pragma unroll
  for (int i = E - 2; i >= 0; --i) c = c * 16u + m[i];
  return c;
}

// e4m3 codes of y[i], 4 a word, element 0 in the lowest byte.
template <int E>
__device__ __forceinline__ uint2 e4m3_codes(const float* y) {
  uint2 r;
  r.x = dev::e4m3x4(y[0], y[1], y[2], y[3]);
  if constexpr (E == 8) r.y = dev::e4m3x4(y[4], y[5], y[6], y[7]);
  else r.y = 0;
  return r;
}

// Stores the codes of one chunk: fp4 E/2 bytes, fp8 E bytes.
template <bool kFp4, int E>
__device__ __forceinline__ void store_codes(uint8_t* dst, uint2 c) {
  if constexpr (kFp4) {
    if constexpr (E == 8) *reinterpret_cast<uint32_t*>(dst) = c.x;
    else *reinterpret_cast<uint16_t*>(dst) = static_cast<uint16_t>(c.x);
  } else {
    if constexpr (E == 8) *reinterpret_cast<uint2*>(dst) = c;
    else *reinterpret_cast<uint32_t*>(dst) = c.x;
  }
}

// NVFP4's per-kernel constants: g, g * 6 and its reciprocal, so each block's
// amax / (g * 6) costs a multiply and four fmas instead of a division (exact, fast::div_nonneg).
struct GlobalScale {
  float g = 0.0f, g6 = 0.0f, y6 = 0.0f;
  bool fast = false;
};
__device__ __forceinline__ GlobalScale make_global_scale(float g) {
  GlobalScale c;
  c.g = g;
  c.g6 = g * 6.0f;
  c.y6 = __frcp_rn(c.g6);
  c.fast = c.g6 >= 0x1p-60f && c.g6 <= 0x1p100f;
  return c;
}
__device__ __forceinline__ float nvfp4_scale_ratio(float amax, const GlobalScale& c) {
  return c.fast && amax * c.y6 <= 0x1p100f ? fast::div_nonneg(amax, c.g6, c.y6) : amax / c.g6;
}

// The scale of one block from its amax bits, and the codes of the chunk `raw`. Returns the codes;
// *scale receives the stored scale (one byte in the low bits, or f32 bits for kFP8F32).
template <Kind K, class T>
__device__ __forceinline__ uint2 encode_block(const uint4& raw, uint32_t amax_bits, const GlobalScale& gs,
                                              uint32_t* scale) {
  constexpr int E = Wide<T>::kElems;
  float f[E];
  Wide<T>::unpack(raw, f);
  const bool finite = amax_bits < kInfBits;
  const float amax = __uint_as_float(amax_bits);
  uint2 c = make_uint2(0, 0);
  float y[E];
  if constexpr (K == Kind::kMXFP4) {
    const int e = num::ceil_log2_ratio(amax, 6.0f, -126);
    *scale = finite ? num::ue8m0_from_exp(e) : 0xFFu;
    if (finite) {
      const float mul = num::exp2i(-e);
      uint32_t m[E];
#pragma unroll
      for (int i = 0; i < E; ++i) m[i] = fast::e2m1_magnitude_code(fabsf(__fmul_rn(f[i], mul)));
      c.x = pack_nibbles<E>(m) | e2m1_sign_bits<T>(raw);
    }
  } else if constexpr (K == Kind::kNVFP4) {
    // The block scale through the hardware e4m3 conversions: exact equivalents of num:: for
    // non-NaN values, and the quotient is NaN only when g == 0, whose block is zeroed anyway.
    uint32_t sc = dev::e4m3x2(nvfp4_scale_ratio(amax, gs), 0.0f) & 0xFFu;
    const float sg = dev::e4m3x2_to_float2(sc).x * gs.g;
    const bool zero = gs.g == 0.0f || sg == 0.0f;
    if (zero) sc = 0;
    *scale = finite ? sc : 0x7Fu;
    if (finite && !zero) {
      // The reference's r = min(1.0f / (s * g), FLT_MAX): __frcp_rn is the IEEE-rounded reciprocal.
      const float r = fminf(__frcp_rn(sg), 0x1.fffffep127f);
      uint32_t m[E];
#pragma unroll
      // __fmul_rn: the product must be rounded on its own, as in the reference; a plain `*` may be
      // contracted with the encoder's first addition into one fma and round differently.
      for (int i = 0; i < E; ++i) m[i] = fast::e2m1_magnitude_code(__fmul_rn(fabsf(f[i]), r));
      c.x = pack_nibbles<E>(m) | e2m1_sign_bits<T>(raw);
    }
  } else if constexpr (K == Kind::kMXFP8 || K == Kind::kFP8Pow2) {
    const int e = num::ceil_log2_ratio(amax, 448.0f, -22);
    *scale = finite ? num::ue8m0_from_exp(e) : 0xFFu;
    if (finite) {
      const float mul = num::exp2i(-e);
#pragma unroll
      for (int i = 0; i < E; ++i) y[i] = f[i] * mul;
      c = e4m3_codes<E>(y);
    }
  } else {
    static_assert(K == Kind::kFP8F32);
    const float a = fmaxf(amax, 1e-4f);
    *scale = finite ? __float_as_uint(a / 448.0f) : kF32NaNBits;
    if (finite) {
      const float r = 448.0f / a;
#pragma unroll
      for (int i = 0; i < E; ++i) y[i] = __fmul_rn(f[i], r);
      c = e4m3_codes<E>(y);
    }
  }
  return c;
}

template <Kind K>
__device__ __forceinline__ void store_scale(uint8_t* dst, uint32_t scale) {
  if constexpr (K == Kind::kFP8F32) *reinterpret_cast<uint32_t*>(dst) = scale;
  else *dst = static_cast<uint8_t>(scale);
}
template <Kind K>
constexpr int scale_bytes() {
  return K == Kind::kFP8F32 ? 4 : 1;
}

// ---------------------------------------------------------------------------------------------
// Per-row block formats (MXFP4, NVFP4, MXFP8, FP8_1x128): a flat grid-stride stream of "units",
// each kOwn (4, or 2 for NVFP4 on bf16 rows of an odd number of 32-element pairs) consecutive
// 16-byte chunks owned by one thread. Owning whole small blocks (NVFP4, MXFP4/MXFP8 on bf16)
// means each block's scale and reciprocal are computed once instead of once per chunk, no shuffle
// is needed, and the codes leave in one 8-32 byte store; a 128-wide block spans kLanes consecutive
// lanes (aligned, because the unit index is congruent to the lane modulo 32 and K is a whole
// number of blocks), which reduce the amax with xor shuffles. The loads are L1-cached so the 16-byte pieces of a thread's 64 contiguous
// bytes, which land in shared 32-byte sectors, are fetched from L2 once.
struct RowArgs {
  const uint8_t* x;      // row 0 of this launch's slice
  int64_t x_row_bytes;
  uint8_t* q;
  int64_t q_row_bytes;
  uint8_t* scales;       // scale (row 0 of the slice, column 0)
  int64_t s_row_bytes;   // scale strides, in bytes
  int64_t s_col_bytes;
  const float* global_scale;  // NVFP4: g, read on the device (it may be computed by the previous kernel)
  uint32_t chunks;            // rows * chunks_per_row (quantize: units, see own_chunks)
  FastDiv chunks_per_row;     // (quantize: units per row)
};

// Stores n = kWords 32-bit words of codes with the widest aligned vector stores.
template <int kWords>
__device__ __forceinline__ void store_words(uint8_t* dst, const uint32_t* w) {
  if constexpr (kWords == 2) {
    *reinterpret_cast<uint2*>(dst) = make_uint2(w[0], w[1]);
  } else {
    static_assert(kWords % 4 == 0);
#pragma unroll
    for (int i = 0; i < kWords; i += 4) dev::st16(dst + 4 * i, make_uint4(w[i], w[i + 1], w[i + 2], w[i + 3]));
  }
}

template <Kind K, class T, int kOwn>
__global__ void __launch_bounds__(kThreads, kQuantMinCtasPerSm) quantize_rows_kernel(RowArgs a) {
  using W = Wide<T>;
  constexpr int E = W::kElems;
  constexpr int kCpb = block_k(K) / E;                     // chunks a scale block
  constexpr int kBlocks = kOwn > kCpb ? kOwn / kCpb : 1;   // whole blocks a unit holds
  constexpr int kLanes = kCpb > kOwn ? kCpb / kOwn : 1;    // lanes sharing one block
  constexpr int kUnitCpb = kOwn / kBlocks;                 // a unit's chunks in one of its blocks
  static_assert(kLanes >= 1 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "a block is 1..32 lanes");
  constexpr int kUnroll = kQuantUnroll / kOwn;  // units per trip: kQuantUnroll chunks in flight
  constexpr int kCodeBytes = is_fp4(K) ? E / 2 : E;  // per chunk
  constexpr int kWords = kOwn * kCodeBytes / 4;       // per unit
  static_assert(kOwn * kCodeBytes % 8 == 0, "a unit's codes are a whole number of 8-byte words");

  GlobalScale gs;
  if constexpr (K == Kind::kNVFP4) gs = make_global_scale(*a.global_scale);
  const uint32_t tid = blockIdx.x * kThreads + threadIdx.x;
  const uint32_t stride = gridDim.x * kThreads;
  const bool leader = (threadIdx.x & (kLanes - 1)) == 0;

  // Software pipelined: the next trip's loads are issued before this trip's arithmetic, so every
  // warp keeps memory requests in flight while it computes (the arithmetic per byte is too large
  // for load-then-compute warps to cover the memory latency on their own).
  uint4 v[kUnroll][kOwn];
  uint32_t row[kUnroll], col[kUnroll];
  auto load = [&](uint32_t it, uint4 (&dst)[kUnroll][kOwn], uint32_t (&r)[kUnroll], uint32_t (&cl)[kUnroll]) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint32_t c = it + u * stride + tid;
      r[u] = a.chunks_per_row.div(c);
      cl[u] = c - r[u] * a.chunks_per_row.divisor;
      const uint8_t* src = a.x + r[u] * a.x_row_bytes + cl[u] * (16u * kOwn);
#pragma unroll
      for (int j = 0; j < kOwn; ++j) dst[u][j] = c < a.chunks ? dev::ld_cached16(src + 16 * j) : make_uint4(0, 0, 0, 0);
    }
  };
  const uint32_t warp0 = tid & ~31u, step = stride * kUnroll;
  if (warp0 < a.chunks) load(0, v, row, col);
  // The trip condition is uniform across the warp: shuffles below need every lane.
  for (uint32_t it = 0; it + warp0 < a.chunks; it += step) {
    uint4 nv[kUnroll][kOwn];
    uint32_t nrow[kUnroll], ncol[kUnroll];
    const bool more = it + step + warp0 < a.chunks;
    if (more) load(it + step, nv, nrow, ncol);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const bool ok = it + u * stride + tid < a.chunks;
      uint32_t m[kBlocks];
#pragma unroll
      for (int b = 0; b < kBlocks; ++b) {
        m[b] = W::absmax_bits(v[u][b * kUnitCpb]);
#pragma unroll
        for (int j = 1; j < kUnitCpb; ++j) m[b] = max(m[b], W::absmax_bits(v[u][b * kUnitCpb + j]));
      }
#pragma unroll
      for (int o = 1; o < kLanes; o <<= 1) m[0] = max(m[0], __shfl_xor_sync(kFullMask, m[0], o));
      // One amax for every chunk of a block: the block-scale arithmetic inside encode_block is the
      // same expression for each of them and is computed once.
      uint32_t scale[kBlocks] = {};
      uint32_t w[kWords];
#pragma unroll
      for (int j = 0; j < kOwn; ++j) {
        const uint2 codes = encode_block<K, T>(v[u][j], m[j / kUnitCpb], gs, &scale[j / kUnitCpb]);
        if constexpr (kCodeBytes == 2) {
          if (j % 2 == 0) w[j / 2] = codes.x & 0xFFFFu;
          else w[j / 2] |= codes.x << 16;
        } else if constexpr (kCodeBytes == 4) {
          w[j] = codes.x;
        } else {
          w[2 * j] = codes.x;
          w[2 * j + 1] = codes.y;
        }
      }
      if (ok) {
        store_words<kWords>(a.q + row[u] * a.q_row_bytes + col[u] * (kOwn * kCodeBytes), w);
        if (leader) {
#pragma unroll
          for (int b = 0; b < kBlocks; ++b)
            store_scale<K>(a.scales + row[u] * a.s_row_bytes + ((col[u] * kBlocks + b) / kLanes) * a.s_col_bytes,
                           scale[b]);
        }
      }
    }
    if (more) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        row[u] = nrow[u];
        col[u] = ncol[u];
#pragma unroll
        for (int j = 0; j < kOwn; ++j) v[u][j] = nv[u][j];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// FP8_128x128: one CTA per 128x128 block. Each thread loads its 8 chunks into registers, the CTA
// reduces the amax (warp redux, then one word per warp through shared memory), and the same
// registers are encoded: the tensor is read once. Rows past M (a partial last row-block) read as 0.
struct TileArgs {
  const uint8_t* x;
  int64_t x_row_bytes;
  uint8_t* q;
  int64_t q_row_bytes;
  uint8_t* scales;
  int64_t s_row_bytes;
  int64_t s_col_bytes;
  int64_t rows;
  uint32_t k_blocks;
};

template <Kind K, class T>
__global__ void __launch_bounds__(tile_threads(Wide<T>::kBytes)) quantize_tile_kernel(TileArgs a) {
  static_assert(K == Kind::kFP8Pow2 || K == Kind::kFP8F32);
  using W = Wide<T>;
  constexpr int E = W::kElems;
  constexpr int kThr = tile_threads(W::kBytes);
  constexpr int kChunksPerRow = kTileCols / E;
  constexpr int kWarps = kThr / 32;
  __shared__ uint32_t warp_max[kWarps];

  const uint32_t mb = blockIdx.x / a.k_blocks, kb = blockIdx.x - mb * a.k_blocks;
  const int64_t row0 = static_cast<int64_t>(mb) * kTileRows;
  const int64_t col_byte0 = static_cast<int64_t>(kb) * kTileCols * W::kBytes;
  uint4 v[kTileChunksPerThread];
  uint32_t m = 0;
#pragma unroll
  for (int j = 0; j < kTileChunksPerThread; ++j) {
    const int l = j * kThr + threadIdx.x;
    const int64_t r = row0 + l / kChunksPerRow;
    const int cc = l % kChunksPerRow;
    v[j] = r < a.rows ? dev::ld_stream16(a.x + r * a.x_row_bytes + col_byte0 + cc * 16) : make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int j = 0; j < kTileChunksPerThread; ++j) m = max(m, W::absmax_bits(v[j]));
  m = __reduce_max_sync(kFullMask, m);
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < kWarps; ++w) m = max(m, warp_max[w]);

  uint32_t scale = 0;
#pragma unroll
  for (int j = 0; j < kTileChunksPerThread; ++j) {
    const int l = j * kThr + threadIdx.x;
    const int64_t r = row0 + l / kChunksPerRow;
    const int cc = l % kChunksPerRow;
    const uint2 codes = encode_block<K, T>(v[j], m, GlobalScale{}, &scale);
    if (r < a.rows) store_codes<false, E>(a.q + r * a.q_row_bytes + kb * kTileCols + cc * E, codes);
  }
  if (threadIdx.x == 0) store_scale<K>(a.scales + mb * a.s_row_bytes + kb * a.s_col_bytes, scale);
}

// ---------------------------------------------------------------------------------------------
// NVFP4 global scale: amax over the finite values of x into the global_scale slot (zeroed by the
// launcher; non-negative f32 bit patterns order as unsigned integers, so atomicMax on the bits is
// a float max), then a one-thread finalize g = amax / 2688 in place.
template <class T>
__global__ void __launch_bounds__(kThreads) finite_amax_kernel(RowArgs a, uint32_t* slot) {
  using W = Wide<T>;
  __shared__ uint32_t warp_max[kThreads / 32];
  const uint32_t tid = blockIdx.x * kThreads + threadIdx.x;
  const uint32_t stride = gridDim.x * kThreads;
  uint32_t m = 0;
  for (uint32_t it = 0; it + (tid & ~31u) < a.chunks; it += stride * kAmaxUnroll) {
    uint4 v[kAmaxUnroll];
#pragma unroll
    for (int u = 0; u < kAmaxUnroll; ++u) {
      const uint32_t c = it + u * stride + tid;
      const uint32_t row = a.chunks_per_row.div(c);
      const uint32_t col = c - row * a.chunks_per_row.divisor;
      v[u] = c < a.chunks ? dev::ld_stream16(a.x + row * a.x_row_bytes + col * 16u) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kAmaxUnroll; ++u) m = max(m, W::finite_absmax_bits(v[u]));
  }
  m = __reduce_max_sync(kFullMask, m);
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) m = max(m, warp_max[w]);
    if (m != 0) atomicMax(slot, m);
  }
}

__global__ void nvfp4_finalize_global_kernel(float* g) {
  *g = __uint_as_float(*reinterpret_cast<const uint32_t*>(g)) / 2688.0f;
}

// ---------------------------------------------------------------------------------------------
// Dequantize: the unit is one 16-byte chunk of the output (8 bf16 or 4 f32), so stores are full
// 16-byte vectors and the (narrower) code loads are still coalesced across the warp.
struct DequantArgs {
  const uint8_t* q;
  int64_t q_row_bytes;
  const uint8_t* scales;
  int64_t s_row_bytes;
  int64_t s_col_bytes;
  const float* global_scale;
  uint8_t* out;
  int64_t out_row_bytes;
  uint32_t units;  // rows * units_per_row
  FastDiv units_per_row;
  uint32_t row_shift;  // log2(rows per scale block): 0, or 7 for FP8_128x128
};

template <class O>
struct Out;
template <>
struct Out<float> {
  static constexpr int kElems = 4;
  __device__ __forceinline__ static uint4 pack(const float* y) {
    return make_uint4(__float_as_uint(y[0]), __float_as_uint(y[1]), __float_as_uint(y[2]), __float_as_uint(y[3]));
  }
};
template <>
struct Out<Bf16> {
  static constexpr int kElems = 8;
  __device__ __forceinline__ static uint4 pack(const float* y) {
    return make_uint4(dev::bf16x2_rn(y[0], y[1]), dev::bf16x2_rn(y[2], y[3]), dev::bf16x2_rn(y[4], y[5]),
                      dev::bf16x2_rn(y[6], y[7]));
  }
};

// The codes of one unit: fp4 E/2 bytes, fp8 E bytes, zero-extended into a uint2.
template <bool kFp4, int E>
__device__ __forceinline__ uint2 load_codes(const uint8_t* p) {
  constexpr int kBytes = kFp4 ? E / 2 : E;
  if constexpr (kBytes == 8) return dev::ld_stream8(p);
  else if constexpr (kBytes == 4) return make_uint2(dev::ld_stream4(p), 0);
  else return make_uint2(dev::ld_stream2(p), 0);
}

template <Kind K>
__device__ __forceinline__ float load_scale(const uint8_t* p) {
  if constexpr (K == Kind::kFP8F32) return __ldg(reinterpret_cast<const float*>(p));
  else if constexpr (K == Kind::kNVFP4) return num::e4m3_to_float(__ldg(p));
  else return num::ue8m0_to_float(__ldg(p));
}

template <Kind K, class O>
__global__ void __launch_bounds__(kThreads) dequantize_rows_kernel(DequantArgs a) {
  constexpr int E = Out<O>::kElems;
  constexpr int kUnitsPerBlock = block_k(K) / E;
  constexpr bool kFp4 = is_fp4(K);
  constexpr int kCodeBytes = kFp4 ? E / 2 : E;

  float g = 1.0f;
  if constexpr (K == Kind::kNVFP4) g = *a.global_scale;
  const uint32_t tid = blockIdx.x * kThreads + threadIdx.x;
  const uint32_t stride = gridDim.x * kThreads;
  for (uint32_t it = 0; it < a.units; it += stride * kDequantUnroll) {
    uint2 codes[kDequantUnroll] = {};
    float s[kDequantUnroll] = {};
    uint32_t row[kDequantUnroll], col[kDequantUnroll];
#pragma unroll
    for (int u = 0; u < kDequantUnroll; ++u) {
      const uint32_t c = it + u * stride + tid;
      row[u] = a.units_per_row.div(c);
      col[u] = c - row[u] * a.units_per_row.divisor;
      if (c < a.units) {
        codes[u] = load_codes<kFp4, E>(a.q + row[u] * a.q_row_bytes + col[u] * kCodeBytes);
        s[u] = load_scale<K>(a.scales + (row[u] >> a.row_shift) * a.s_row_bytes +
                             (col[u] / kUnitsPerBlock) * a.s_col_bytes);
      }
    }
#pragma unroll
    for (int u = 0; u < kDequantUnroll; ++u) {
      if (it + u * stride + tid >= a.units) continue;
      float y[E];
      if constexpr (kFp4) {
#pragma unroll
        for (int i = 0; i < E; ++i) {
          const float v = dev::e2m1_to_float(codes[u].x >> (4 * i)) * s[u];
          y[i] = K == Kind::kNVFP4 ? v * g : v;
        }
      } else {
        const uint32_t w[2] = {codes[u].x, codes[u].y};
#pragma unroll
        for (int i = 0; i < E; i += 2) {
          const float2 d = dev::e4m3x2_to_float2(w[i / 4] >> (8 * (i % 4)));
          y[i] = d.x * s[u];
          y[i + 1] = d.y * s[u];
        }
      }
      dev::st16(a.out + row[u] * a.out_row_bytes + col[u] * 16u, Out<O>::pack(y));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The 128x4 scale swizzle (spec 3.7). One thread per 4-byte word of the swizzled buffer: a word is
// the 4 scale columns 4*kt..4*kt+3 of one row, so each thread gathers 4 source bytes (0 past the
// matrix) and writes one word, or reads one word and scatters it back.
struct SwizzleArgs {
  uint8_t* mat;        // [rows, cols], strides in bytes
  int64_t m_row, m_col;
  uint8_t* flat;       // swizzled, contiguous
  int64_t rows, cols;
  int64_t k_tiles;     // ceil(cols / 4)
  int64_t words;       // swizzled bytes / 4
  bool flat_aligned;   // flat may be read/written as 32-bit words
};

__device__ __forceinline__ void swizzle_word_coords(int64_t w, int64_t k_tiles, int64_t* m, int64_t* k0) {
  const int64_t tile = w >> 7;  // 128 words = 512 bytes per (128-row, 4-column) tile
  const int r = static_cast<int>(w & 127) * 4;  // byte offset in the tile, a multiple of 4
  *m = (tile / k_tiles) * 128 + ((r % 16) / 4) * 32 + r / 16;
  *k0 = (tile % k_tiles) * 4;
}

__global__ void __launch_bounds__(kSmallThreads) swizzle_kernel(SwizzleArgs a) {
  for (int64_t w = blockIdx.x * int64_t{kSmallThreads} + threadIdx.x; w < a.words;
       w += int64_t{gridDim.x} * kSmallThreads) {
    int64_t m, k0;
    swizzle_word_coords(w, a.k_tiles, &m, &k0);
    uint32_t word = 0;
    if (m < a.rows) {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (k0 + j < a.cols) word |= static_cast<uint32_t>(a.mat[m * a.m_row + (k0 + j) * a.m_col]) << (8 * j);
    }
    if (a.flat_aligned) {
      reinterpret_cast<uint32_t*>(a.flat)[w] = word;
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) a.flat[w * 4 + j] = static_cast<uint8_t>(word >> (8 * j));
    }
  }
}

__global__ void __launch_bounds__(kSmallThreads) unswizzle_kernel(SwizzleArgs a) {
  for (int64_t w = blockIdx.x * int64_t{kSmallThreads} + threadIdx.x; w < a.words;
       w += int64_t{gridDim.x} * kSmallThreads) {
    int64_t m, k0;
    swizzle_word_coords(w, a.k_tiles, &m, &k0);
    if (m >= a.rows) continue;
    uint32_t word;
    if (a.flat_aligned) {
      word = reinterpret_cast<const uint32_t*>(a.flat)[w];
    } else {
      word = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) word |= static_cast<uint32_t>(a.flat[w * 4 + j]) << (8 * j);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (k0 + j < a.cols) a.mat[m * a.m_row + (k0 + j) * a.m_col] = static_cast<uint8_t>(word >> (8 * j));
  }
}

}  // namespace dsv4::cuda::quant
