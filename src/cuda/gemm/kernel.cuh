// The block-scaled GEMM kernel for sm_90a: D[M, N] = A[M, K] x B[N, K]^T with per-block scales.
//
// Structure (one CTA a SM, persistent):
//  - warpgroup 0 is the producer: one thread walks the CTA's work units and streams A and B tiles
//    (BK = 128 along K a stage) into a ring of shared-memory stages with TMA, each stage guarded by a
//    "full" mbarrier (TMA bytes landed) and an "empty" one (consumers done reading);
//  - warpgroups 1..BM/64 are consumers: each owns 64 rows of the BM x BN output tile, issues wgmma
//    on the stages, applies the scales to f32 accumulators and writes the epilogue (bf16 D, or f32
//    split-K partials) straight from registers while the producer already fetches the next unit.
//  - FP4 weights (W4A8, W4A16) arrive packed; the consumers expand each stage's B tile into a
//    double-buffered, 128B-swizzled operand tile (e4m3 or bf16) before their wgmmas read it.
//    At large M the expansion would repeat in every M tile, so launch.cu runs pre_expand_kernel
//    once into the workspace instead and this kernel (kPreB) reads the expanded B like FP8's.
//
// Scale application ("promotion"):
//  - FP8 block: per 128-K block, the 4 fp8 wgmmas accumulate into a scratch f32 tile that is then
//    added to the accumulators times a_scale[row] * b_scale[block]. Promoting every 128 also bounds
//    the error of the fp8 tensor cores' reduced-precision internal accumulation.
//  - W4A8, 1x128 activations: B's four per-32 ue8m0 exponents s0..s3 of a row's 128-block are folded
//    into the e4m3 re-encoding: element e2m1 * 2^(si - smax + 6) is stored as e4m3 and the row's
//    scale becomes 2^(smax - 6), applied per 128 like the FP8 path. e2m1 values carry 2 significant
//    bits, so the re-encoding is exact while smax - si <= 14 (the smallest magnitude 0.5 * 2^(6-14)
//    is e4m3's smallest subnormal 2^-9; 6 * 2^6 = 384 <= 448 never saturates). Beyond that span the
//    elements of the small sub-block are rounded to nearest even e4m3 (subnormal or zero): an error
//    below 2^-9 of the row block's largest scale times 6, which this path accepts.
//  - W4A8, MXFP8 activations: the A scale changes every 32, so each k32 wgmma is promoted on its own
//    with a_scale[row][k32] * b_scale[col][k32]; B re-encodes exactly (scale 2^0).
//  - W4A16: B is expanded to bf16 with its scale applied (exact: e2m1 x a power of two, or x an e4m3
//    scale, fits bf16's 8 significant bits); bf16 wgmma accumulates straight into the accumulators.
//    NVFP4's f32 global scale multiplies the accumulators in the epilogue.
//
// Work units: output tiles (BM x BN; BN is 128, 32/64 for FP8 decode, 256 for pre-expanded W4A16)
// times K splits. Groups (MoE): rows [group_rows[g],
// group_rows[g+1]) of A and D use rows [g * N, (g + 1) * N) of B; a plain GEMM is one group.
#pragma once
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common/ptx_tma.cuh"
#include "cuda/common/ptx_wgmma.cuh"
#include "cuda/gemm/config.h"
#include "dsv4/numerics.h"

namespace dsv4::cuda::gemm_detail {

struct KernelArgs {
  int M = 0, N = 0, K = 0;  // N: columns of D (rows of B per group)
  int n_tiles = 0, splits = 1, kblocks_per_split = 1, kblocks = 0;
  int num_groups = 1;
  const int32_t* group_rows = nullptr;  // device [num_groups + 1] row offsets, or null: one group of M
  // Bytes a stage's TMA loads deliver, when the A box holds fewer rows than BM (plain GEMMs with
  // M <= 16 load 16 rows; the tile's other A rows in shared memory hold stale bytes that only
  // reach accumulator rows the epilogue never stores). 0: Traits::kTmaBytes.
  int tma_bytes = 0;

  const uint8_t* a_scales = nullptr;  // FP8 / W4A8: [M, K/128] or [M, K/32] (MXFP8)
  int64_t as_s0 = 0, as_s1 = 0;       // element strides
  bool a_scale_f32 = false;
  const uint8_t* b_scales = nullptr;  // FP8: [N/128, K/128]; MXFP4: [N, K/32] ue8m0; NVFP4: [N, K/16] e4m3
  int64_t bs_s0 = 0, bs_s1 = 0;
  bool b_scale_f32 = false;
  const float* b_global = nullptr;    // NVFP4

  const __nv_bfloat16* bias = nullptr;      // [N] or null
  const __nv_bfloat16* residual = nullptr;  // [M, N] or null
  int64_t res_ld = 0;
  __nv_bfloat16* d = nullptr;
  int64_t d_ld = 0;
  // tm_d (bf16 D, boxes of 64 rows x 64 columns, 128B swizzle) is valid: the epilogue stages each
  // warpgroup's 64 x 128 tile in shared memory and TMA-stores it. Host side: no split-K, no bias or
  // residual, D 16-byte aligned rows.
  bool tma_store_d = false;
  float* partial = nullptr;  // [splits, M, N] f32 when splits > 1
  // Pre-expanded W4A8 (config.h, PreExpandLayout): f32 scales a 128 x 128 block of B, and the flag
  // that says whether they apply (0) or b_scales' per-row ones do.
  const float* b_block_scales = nullptr;
  const uint32_t* pre_flag = nullptr;
};

// Everything the kernel's layout derives from (format, BM); the static_asserts pin the invariants
// the descriptors and TMA boxes rely on.
// kPreB: B was expanded before the kernel (config.h, pre_expand_bytes): W4A8's B is e4m3 with an
// f32 scale a row and K block, promoted per column like the in-kernel W4A8 path; W4A16's B is bf16
// with its scales applied. Either feeds wgmma straight from the TMA stage.
template <GemmFormat F, int BM, bool kMXFP8A = false, int BN = kBN, bool kPreB = false>
struct Traits {
  static constexpr bool kBF16 = is_w4a16(F);
  static constexpr bool kConvertB = F != GemmFormat::kFP8Block && !kPreB;
  static constexpr bool kColScales = F == GemmFormat::kW4A8MXFP4 && kPreB;  // per-row B scales in the stage
  static constexpr bool kPer32 = kMXFP8A;  // W4A8 with MXFP8 activations: promote every k32
  static constexpr int kConsumerWGs = BM / 64;
  static constexpr int kConsumerThreads = 128 * kConsumerWGs;
  // FP4 weights at BM = 64 (decode-sized M): two warpgroups expand packed B into the converted-B
  // ring while the consumer runs only wgmma and promotion. The expansion is what bounds decode:
  // with one expander warpgroup (one warp a scheduler, its dependent chains unhidden) the ncu
  // source profile of W4A16 16x4096x7168 put 69% of all stall samples in it, at issue IPC 1.3. At
  // BM = 128 one expander warpgroup is slower than the tensor work of two consumers (measured:
  // W4A16 617 -> 731 us at 4096^2 x 7168), so there the consumers expand the next stage
  // themselves, under their wgmmas.
  static constexpr int kExpanderWGs = kConvertB && BM == 64 ? 2 : 0;
  static constexpr int kExpanderThreads = 128 * kExpanderWGs;
  static constexpr int kThreads = 128 * (1 + kExpanderWGs) + kConsumerThreads;
  static constexpr int kConvSlots = 2;
  // setmaxnreg budget: launched at 65536 / kThreads (rounded down to 8, at most 232) registers a
  // thread; the producer and expander give back exactly enough for the consumers' increase.
  static constexpr int kLaunchRegs = (65536 / kThreads) / 8 * 8 > 232 ? 232 : (65536 / kThreads) / 8 * 8;
  // Kernels with one consumer warpgroup and no expanders (FP8 at BM = 64) have registers to spare:
  // their loader warps keep four stages of scale loads in flight; the others one (40 registers).
  static constexpr bool kRoomyProducer = kExpanderWGs == 0 && BM == 64;
  static constexpr int kProducerRegs = kRoomyProducer ? 128 : 40;
  static constexpr int kLoaderDepth = kRoomyProducer ? 4 : 1;
  // With two expander warpgroups (BM = 64) the expanders get the registers the lone consumer
  // warpgroup does not need (acc + one scratch tile), so their unrolled units can overlap.
  static constexpr int kExpanderRegs = kExpanderWGs == 2 ? 152 : 96;
  static constexpr int kConsumerRegs = kExpanderWGs == 2 ? 168 : 232;
  static constexpr int kStageK = stage_k(F, BN, kPreB);  // K elements a stage: 128, or 64 (BN = 256)
  static constexpr int kABoxes = kBF16 ? kStageK / 64 : 1;  // 128-byte-wide TMA boxes a stage's A (and bf16 B)
  static constexpr int kABytes = kBF16 ? BM * kStageK * 2 : BM * kBK;   // one stage of A
  static constexpr int kBBytes = kConvertB ? kBN * kBK / 2 : kBF16 ? BN * kStageK * 2 : BN * kBK;
  static constexpr int kTmaBytes = kABytes + kBBytes;
  // Scales of a stage in shared memory, written by the loader warps: A's as f32 [cols][BM], then
  // B's (FP8: one f32; MXFP4: four ue8m0 bytes a row, packed; NVFP4: eight e4m3 bytes a row).
  static constexpr bool kAScales = !kBF16;
  static constexpr int kAScaleCols = kMXFP8A ? 4 : 1;
  static constexpr int kAScaleFloats = kAScales ? BM * kAScaleCols : 0;
  static constexpr int kBScaleBytes = F == GemmFormat::kFP8Block ? 16
                                      : kPreB                      ? (kBF16 ? 0 : kBN * 4)
                                      : F == GemmFormat::kW4A16NVFP4 ? kBN * 8
                                                                     : kBN * 4;
  static constexpr int kSideBytes = kAScaleFloats * 4 + kBScaleBytes;
  static constexpr int kLoaderWarps = 3;  // warps 1-3 of the producer warpgroup
  static constexpr int kStages = max_stages(F, BM, BN, kPreB);
  static constexpr int kBConvBytes = kBF16 ? kBN * kBK * 2 : kBN * kBK;  // one expanded B buffer
  static constexpr int kScaleRowFloats = F == GemmFormat::kW4A8MXFP4 && !kPreB ? 4 * kBN : 0;  // per buffer
  static constexpr int kEpiBytes = epilogue_bytes(BM, BN);  // 16 KiB a consumer warpgroup, or 0
  static constexpr int kSmemBytes = smem_bytes(F, BM, kStages, BN, kPreB);
  static_assert(BM == 64 || BM == 128, "one or two consumer warpgroups of 64 rows");
  static_assert(BN == kBN || ((BN == kBNDecode || BN == 2 * kBNDecode) && F == GemmFormat::kFP8Block && BM == 64) ||
                    (BN == kBNWide && kBF16 && kPreB && BM == 128),
                "32-column tiles are the FP8 decode kernel's only, 256-column ones pre-expanded W4A16's");
  static_assert(!kPreB || (F != GemmFormat::kFP8Block && BM == 128 && (BN == kBN || BN == kBNWide) && !kMXFP8A),
                "pre-expanded B: FP4 weights at large M, 1x128 activation scales");
  static_assert(kTmaBytes == tma_stage_bytes(F, BM, BN, kPreB), "TMA bytes a stage must match the heuristic's budget");
  static_assert(kSideBytes <= scale_stage_bytes(F, BM, kPreB), "stage scales must fit the heuristic's budget");
  static_assert(kSideBytes % 16 == 0, "the barriers after the scales need 8-byte alignment");
  static_assert(kABytes % 1024 == 0 && kBBytes % 1024 == 0, "stages must keep 1024-byte swizzle alignment");
  static_assert(kBConvBytes % 1024 == 0 && kEpiBytes == (BN >= kBN ? 64 * 128 * 2 * kConsumerWGs : 0),
                "epilogue tiles: 1024-aligned, 64 x 128 bf16 a warpgroup");
  static_assert(kStages >= 2, "the pipeline needs at least double buffering");
  static_assert(1024 + 16 * kStages + 16 * kConvSlots + 2 * kScaleRowFloats * 4 <= reserved_bytes(F, kPreB),
                "reserved smem too small");
  static_assert(!kPer32 || F == GemmFormat::kW4A8MXFP4, "per-32 promotion is the W4A8/MXFP8 path");
  static_assert(128 * kProducerRegs + 128 * kExpanderWGs * kExpanderRegs + kConsumerThreads * kConsumerRegs <= 65536,
                "setmaxnreg targets exceed the register file");
  static_assert(128 * (kLaunchRegs - kProducerRegs) + 128 * kExpanderWGs * (kLaunchRegs - kExpanderRegs) >=
                    kConsumerThreads * (kConsumerRegs - kLaunchRegs),
                "setmaxnreg.inc would wait forever: the decreases free fewer registers than it takes");
};

struct Tile {
  int m0 = 0, m_end = 0;  // first row of the tile, end of its group's rows
  int n0 = 0;             // first output column
  int b_row0 = 0;         // first row of B (group offset + n0)
  int split = 0, kb0 = 0, kb1 = 0;
};

// Maps a work unit to its tile; false once past the last unit. Units are split-minor so the splits
// of one tile run side by side, and m-minor so concurrent CTAs share B tiles in L2.
template <int BM, int BN>
__device__ __forceinline__ bool get_tile(const KernelArgs& a, int unit, Tile& t) {
  const int tile = unit / a.splits;
  t.split = unit - tile * a.splits;
  int rem = tile, row0 = 0, rows = a.M, g = 0;
  for (;;) {
    if (a.group_rows) {
      if (g >= a.num_groups) return false;
      row0 = a.group_rows[g];
      rows = a.group_rows[g + 1] - row0;
    } else if (g > 0) {
      return false;
    }
    const int m_tiles = (rows + BM - 1) / BM;
    const int tiles = m_tiles * a.n_tiles;
    if (rem < tiles) {
      const int n_blk = rem / m_tiles;
      t.m0 = row0 + (rem - n_blk * m_tiles) * BM;
      t.m_end = row0 + rows;
      t.n0 = n_blk * BN;
      t.b_row0 = g * a.N + t.n0;
      break;
    }
    rem -= tiles;
    ++g;
  }
  t.kb0 = t.split * a.kblocks_per_split;
  t.kb1 = min(t.kb0 + a.kblocks_per_split, a.kblocks);
  return true;
}

// A scale's raw bits (f32 or ue8m0 byte): the loader warps issue every load of a stage before they
// wait for the stage to be free, and only then decode.
__device__ __forceinline__ uint32_t load_scale_bits(const uint8_t* base, int64_t elem, bool f32) {
  if (f32) return __ldg(reinterpret_cast<const uint32_t*>(base) + elem);
  return __ldg(base + elem);
}
__device__ __forceinline__ float scale_from_bits(uint32_t bits, bool f32) {
  return f32 ? __uint_as_float(bits) : num::ue8m0_to_float(static_cast<uint8_t>(bits));
}

// Four e2m1 codes (the low 16 bits of x, element 0 lowest) to four bytes through an 8-entry byte
// table of the magnitudes (lut0: entries 0-3, lut1: 4-7); the sign bit of each code selects the
// entry with bit 7 set. Three byte permutes and three logic ops for four elements.
__device__ __forceinline__ uint32_t e2m1x4_lookup(uint32_t x, uint32_t lut0, uint32_t lut1) {
  const uint32_t mag = __byte_perm(lut0, lut1, x & 0x7777u);
  const uint32_t neg = mag | 0x80808080u;
  return __byte_perm(mag, neg, ((x >> 1) & 0x4444u) | 0x3210u);
}

// e4m3 codes of {0, .5, 1, 1.5, 2, 3, 4, 6} * 2^shift (round to nearest even, like the reference
// e4m3 codec), packed as the two table words of e2m1x4_lookup.
__device__ __forceinline__ void e4m3_table(int shift, uint32_t& lut0, uint32_t& lut1) {
  const float s = num::exp2i(shift < -40 ? -40 : shift);
  auto pair = [&](float a, float b) -> uint32_t {
    return __nv_cvt_float2_to_fp8x2(make_float2(a * s, b * s), __NV_SATFINITE, __NV_E4M3);
  };
  lut0 = pair(0.f, 0.5f) | (pair(1.f, 1.5f) << 16);
  lut1 = pair(2.f, 3.f) | (pair(4.f, 6.f) << 16);
}

// A row's four ue8m0 exponents of 128-K block kb (byte i = sub-block i): one 4-byte load where the
// scale tensor's layout allows it (vec4: unit column stride, 4-byte aligned rows).
__device__ __forceinline__ uint32_t load_exponents4(const uint8_t* srow, int kb, int64_t bs_s1, bool vec4) {
  if (vec4) return __ldg(reinterpret_cast<const uint32_t*>(srow + kb * 4));
  uint32_t v = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) v |= uint32_t(__ldg(srow + (int64_t(kb) * 4 + j) * bs_s1)) << (8 * j);
  return v;
}

// W4A8 with 1x128 activations folds a row's four per-32 exponents s0..s3 of a 128-block into the
// e4m3 re-encoding (see the top of this file): the block's largest exponent, and the row scale
// 2^(smax - 6) the promotion applies (NaN for the 0xFF code).
__device__ __forceinline__ int w4a8_fold_smax(uint32_t packed_s) {
  const int s0 = packed_s & 0xFF, s1 = (packed_s >> 8) & 0xFF, s2 = (packed_s >> 16) & 0xFF, s3 = packed_s >> 24;
  return max(max(s0, s1), max(s2, s3));
}
__device__ __forceinline__ float w4a8_fold_scale(int smax) {
  return smax == 0xFF ? __uint_as_float(0x7FC00000u) : num::exp2i(smax - 127 - 6);
}
// 16 e2m1 codes (8 packed bytes) to 16 e4m3 bytes through a table of e4m3_table.
__device__ __forceinline__ uint4 e2m1x16_lookup(uint32_t w0, uint32_t w1, uint32_t lut0, uint32_t lut1) {
  return make_uint4(e2m1x4_lookup(w0, lut0, lut1), e2m1x4_lookup(w0 >> 16, lut0, lut1), e2m1x4_lookup(w1, lut0, lut1),
                    e2m1x4_lookup(w1 >> 16, lut0, lut1));
}

// W4A8: expand one stage's packed B tile [128 rows][64 bytes] into e4m3 [128][128] (128B swizzle)
// and the per-row scales the promotion needs: fold mode writes scale_rows[row] = 2^(smax - 6);
// per-32 mode writes scale_rows[j * 128 + row] = 2^(s_j). b_scales: the stage's four ue8m0 bytes
// a row (packed). A unit is one row's 32-element sub-block.
template <bool kPer32, int kThreads>
__device__ __forceinline__ void expand_w4a8(const uint8_t* packed, uint8_t* dst, float* scale_rows,
                                            const uint32_t* b_scales, int ctid) {
#pragma unroll
  for (int i = 0; i < kBN * 4 / kThreads; ++i) {
    const int u = ctid + i * kThreads;
    const int row = u >> 2, j = u & 3;
    const uint32_t packed_s = b_scales[row];
    const int sj = (packed_s >> (8 * j)) & 0xFF;
    uint32_t lut0 = 0x3C383000u, lut1 = 0x4C484440u;  // shift 0: e2m1 values are exact e4m3
    if constexpr (kPer32) {
      scale_rows[j * kBN + row] = num::ue8m0_to_float(static_cast<uint8_t>(sj));
    } else {
      const int smax = w4a8_fold_smax(packed_s);
      e4m3_table(sj - smax + 6, lut0, lut1);
      if (j == 0) scale_rows[row] = w4a8_fold_scale(smax);
    }
    const uint4 w = *reinterpret_cast<const uint4*>(packed + row * 64 + j * 16);
    const uint4 lo = e2m1x16_lookup(w.x, w.y, lut0, lut1), hi = e2m1x16_lookup(w.z, w.w, lut0, lut1);
    uint8_t* drow = dst + row * 128;
    *reinterpret_cast<uint4*>(drow + (((2 * j) ^ (row & 7)) << 4)) = lo;
    *reinterpret_cast<uint4*>(drow + (((2 * j + 1) ^ (row & 7)) << 4)) = hi;
  }
}

// Four e2m1 codes to four bf16 (two bf16x2 words): byte tables of the bf16 high and low bytes of
// {0, .5, 1, 1.5, 2, 3, 4, 6}, sign into the high byte, then interleave.
__device__ __forceinline__ void e2m1x4_to_bf16(uint32_t x, uint32_t& w0, uint32_t& w1) {
  const uint32_t hi = e2m1x4_lookup(x, 0x3F3F3F00u, 0x40404040u);
  const uint32_t lo = __byte_perm(0xC0800000u, 0xC0804000u, x & 0x7777u);
  w0 = __byte_perm(lo, hi, 0x5140);
  w1 = __byte_perm(lo, hi, 0x7362);
}

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, __nv_bfloat162 s) {
  __nv_bfloat162 v = *reinterpret_cast<__nv_bfloat162*>(&a);
  v = __hmul2(v, s);
  return *reinterpret_cast<uint32_t*>(&v);
}

// A W4A16 block scale as a bf16 pair: NVFP4's e4m3 byte, or MXFP4's ue8m0 2^(s-127) (exact in bf16,
// NaN for 0xFF, the subnormal 2^-127 for 0).
template <GemmFormat F>
__device__ __forceinline__ __nv_bfloat162 w4a16_scale2(uint32_t sbyte) {
  uint16_t sbits;
  if constexpr (F == GemmFormat::kW4A16NVFP4) {
    sbits = num::bf16_from_float(num::e4m3_to_float(static_cast<uint8_t>(sbyte)));
  } else {
    sbits = sbyte == 0xFF ? 0x7FC0 : sbyte == 0 ? 0x0040 : static_cast<uint16_t>(sbyte << 7);
  }
  const __nv_bfloat16 s1 = __ushort_as_bfloat16(sbits);
  return __halves2bfloat162(s1, s1);
}
// 8 e2m1 codes (4 packed bytes) to 8 bf16 times the block scale (exact: see the file's top).
__device__ __forceinline__ uint4 e2m1x8_to_bf16_scaled(uint32_t w, __nv_bfloat162 s2) {
  uint4 c;
  e2m1x4_to_bf16(w, c.x, c.y);
  e2m1x4_to_bf16(w >> 16, c.z, c.w);
  c.x = bf16x2_mul(c.x, s2), c.y = bf16x2_mul(c.y, s2), c.z = bf16x2_mul(c.z, s2), c.w = bf16x2_mul(c.w, s2);
  return c;
}

// W4A16: expand one stage's packed B tile into bf16 [2 atoms of 64 K][128 rows][128 B] (128B
// swizzle), scale applied. Each unit is 16 elements of one row (one NVFP4 block, half an MXFP4 one).
// b_scales: the stage's scale bytes, eight e4m3 (NVFP4) or four ue8m0 (MXFP4) a row.
template <GemmFormat F, int kThreads>
__device__ __forceinline__ void expand_w4a16(const uint8_t* packed, uint8_t* dst, const uint8_t* b_scales, int ctid) {
#pragma unroll
  for (int i = 0; i < kBN * 8 / kThreads; ++i) {
    const int u = ctid + i * kThreads;
    const int row = u >> 3, q = u & 7;
    const uint32_t sbyte = F == GemmFormat::kW4A16NVFP4 ? b_scales[row * 8 + q] : b_scales[row * 4 + (q >> 1)];
    const uint2 w = *reinterpret_cast<const uint2*>(packed + row * 64 + q * 8);
    const __nv_bfloat162 s2 = w4a16_scale2<F>(sbyte);
    const uint4 c0 = e2m1x8_to_bf16_scaled(w.x, s2), c1 = e2m1x8_to_bf16_scaled(w.y, s2);
    uint8_t* drow = dst + (q >> 2) * (kBN * 128) + row * 128;
    const int chunk = (q & 3) * 2;
    *reinterpret_cast<uint4*>(drow + ((chunk ^ (row & 7)) << 4)) = c0;
    *reinterpret_cast<uint4*>(drow + (((chunk + 1) ^ (row & 7)) << 4)) = c1;
  }
}

// The expansion pass before a large-M GEMM with FP4 weights (config.h, pre_expand_bytes), with the
// codecs of the in-kernel expansion, so both paths give the same bits. W4A8 (1x128 activations)
// writes e4m3 [rows, K] and f32 scales [rows, K / 128]; W4A16 writes bf16 [rows, K] with the
// block scales applied. A thread writes one 16-byte chunk of the output, so a warp's loads and
// stores are contiguous runs (a thread a 128-K block wrote 16 bytes every 128 or 256: ~0.5 TB/s on
// H100). b_ld: bytes between rows of packed B.
// W4A8 expansion, first step: a warp a 128 x 128 block of B's ue8m0 exponents (grid-stride, at
// most kStatsCtas CTAs of 256 threads). It writes the block's largest exponent S and its scale
// 2^(S - 133), and its CTA's byte of cta_flags: 1 when a block it saw spans more than kFoldMaxSpan
// or holds the NaN code (then every row keeps its own exponent: see config.h). Assigned, not
// OR-ed: nothing needs zeroing before the launch. A lane's four row loads are issued together.
__global__ void __launch_bounds__(256) w4a8_block_stats_kernel(const uint8_t* __restrict__ bs, int64_t bs_s0,
                                                                int64_t bs_s1, bool vec4, int rows, int kblocks,
                                                                float* __restrict__ block_scales,
                                                                uint8_t* __restrict__ block_exps, uint8_t* __restrict__ cta_flags) {
  // The expansion pass is its programmatic dependent: its CTAs start now and issue their loads of
  // the packed weights (which this kernel does not write) while the statistics run.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  const int lane = threadIdx.x % 32;
  const int nblocks = (rows + kBK - 1) / kBK;
  const int64_t total = int64_t(nblocks) * kblocks;
  bool bad = false;
  for (int64_t block = (blockIdx.x * int64_t(256) + threadIdx.x) / 32; block < total; block += gridDim.x * int64_t(8)) {
    const int nb = static_cast<int>(block / kblocks), kb = static_cast<int>(block - int64_t(nb) * kblocks);
    uint32_t e4[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t row = min(int64_t(nb) * kBK + lane + 32 * i, int64_t(rows) - 1);  // past the end: a repeat
      e4[i] = load_exponents4(bs + row * bs_s0, kb, bs_s1, vec4);
    }
    int hi = 0, lo = 0xFF;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int e = (e4[i] >> (8 * j)) & 0xFF;
        hi = max(hi, e), lo = min(lo, e);
      }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      hi = max(hi, __shfl_xor_sync(0xFFFFFFFFu, hi, o));
      lo = min(lo, __shfl_xor_sync(0xFFFFFFFFu, lo, o));
    }
    if (lane == 0) {
      block_exps[block] = static_cast<uint8_t>(hi);
      block_scales[block] = w4a8_fold_scale(hi);
    }
    bad |= hi == 0xFF || hi - lo > kFoldMaxSpan;
  }
  bad = __syncthreads_or(bad);
  if (threadIdx.x == 0) cta_flags[blockIdx.x] = bad ? 1 : 0;
}

// block_exps / cta_flags: W4A8 only, from w4a8_block_stats_kernel (all of its n_stats bytes 0: fold
// each 128 x 128 block's largest exponent; otherwise each row's own, and out_scales holds the row
// scales). Each CTA ORs the statistics CTAs' bytes itself; CTA 0 stores the result in *flag for the
// GEMM kernel (KernelArgs::pre_flag). A W4A8 thread
// writes a whole 32-element sub-block (two chunks under one scale: its exponent loads and table are
// set up once for 32 bytes; 1.8 TB/s with a thread a chunk against W4A16's 2.6).
template <GemmFormat F>
__global__ void __launch_bounds__(256) pre_expand_kernel(const uint8_t* __restrict__ b, int64_t b_ld,
                                                          const uint8_t* __restrict__ bs, int64_t bs_s0, int64_t bs_s1,
                                                          bool vec4, int rows, int kblocks, uint8_t* __restrict__ out,
                                                          float* __restrict__ out_scales,
                                                          const uint8_t* __restrict__ block_exps,
                                                          const uint8_t* __restrict__ cta_flags, int n_stats,
                                                          uint32_t* __restrict__ flag) {
  constexpr int kElems = F == GemmFormat::kW4A8MXFP4 ? 32 : 8;  // elements a thread (32 or 16 output bytes)
  constexpr int kChunks = kBK / kElems;                          // threads a 128-K block
  const int64_t chunk = blockIdx.x * int64_t(256) + threadIdx.x;
  const int64_t per_row = int64_t(kblocks) * kChunks;
  const bool in_range = chunk < int64_t(rows) * per_row;
  const int64_t row = in_range ? chunk / per_row : 0;
  const int c = static_cast<int>(chunk - row * per_row);  // chunk in the row
  const int kb = c / kChunks;
  const int k0 = c * kElems;  // first element
  const uint8_t* src = b + row * b_ld + k0 / 2;
  const uint8_t* srow = bs + row * bs_s0;
  if constexpr (F == GemmFormat::kW4A8MXFP4) {
    // Launched as the statistics kernel's programmatic dependent: the loads of B and its exponents
    // (inputs of the op, complete before the statistics started) go out first; griddepcontrol.wait
    // then waits for the statistics' results (block exponents, the CTAs' flag bytes).
    uint32_t packed_s = 0;
    uint4 w = make_uint4(0, 0, 0, 0);
    if (in_range) {
      packed_s = load_exponents4(srow, kb, bs_s1, vec4);
      w = __ldg(reinterpret_cast<const uint4*>(src));
    }
    asm volatile("griddepcontrol.wait;" ::: "memory");
    const bool fold_block = !__syncthreads_or(threadIdx.x < n_stats && cta_flags[threadIdx.x] != 0);
    if (blockIdx.x == 0 && threadIdx.x == 0) *flag = fold_block ? 0u : 1u;
    if (!in_range) return;
    const int block_smax = block_exps[(row / kBK) * kblocks + kb];
    int smax = w4a8_fold_smax(packed_s);
    if (c % kChunks == 0) out_scales[row * kblocks + kb] = w4a8_fold_scale(smax);
    if (fold_block) smax = block_smax;
    uint32_t lut0, lut1;
    e4m3_table(int((packed_s >> (8 * (c % kChunks))) & 0xFF) - smax + 6, lut0, lut1);
    uint4* dst = reinterpret_cast<uint4*>(out) + 2 * chunk;
    dst[0] = e2m1x16_lookup(w.x, w.y, lut0, lut1);
    dst[1] = e2m1x16_lookup(w.z, w.w, lut0, lut1);
  } else {
    if (!in_range) return;
    const int64_t sidx = F == GemmFormat::kW4A16NVFP4 ? k0 / 16 : k0 / 32;
    reinterpret_cast<uint4*>(out)[chunk] =
        e2m1x8_to_bf16_scaled(__ldg(reinterpret_cast<const uint32_t*>(src)), w4a16_scale2<F>(__ldg(srow + sidx * bs_s1)));
  }
}

template <GemmFormat F, int BM, bool kMXFP8A, int BN = kBN, bool kPreB = false>
__global__ void __launch_bounds__(Traits<F, BM, kMXFP8A, BN, kPreB>::kThreads, 1)
    gemm_kernel(const __grid_constant__ CUtensorMap tm_a, const __grid_constant__ CUtensorMap tm_b,
                const __grid_constant__ CUtensorMap tm_d, const KernelArgs args) {
  using T = Traits<F, BM, kMXFP8A, BN, kPreB>;
  constexpr int kAcc = BN / 2;  // f32 accumulators a thread of an m64 x BN wgmma tile
  constexpr int kJ = BN / 8;    // their 8-column groups
  constexpr int S = T::kStages;
  extern __shared__ uint8_t smem_raw[];
  // Aligned by pointer arithmetic on smem_raw (no integer round trip), so the compiler keeps every
  // derived pointer in the shared window: LDS/STS instead of generic loads and stores.
  uint8_t* smem = smem_raw + ((1024 - (ptx::smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* s_a = smem;
  uint8_t* s_b = s_a + S * T::kABytes;
  uint8_t* s_bconv = s_b + S * T::kBBytes;
  uint8_t* s_epi = s_bconv + (T::kConvertB ? 2 * T::kBConvBytes : 0);  // 1024-aligned: 128B swizzle
  uint8_t* s_side = s_epi + T::kEpiBytes;
  float* s_scale_rows = reinterpret_cast<float*>(s_side + S * T::kSideBytes);
  uint64_t* full = reinterpret_cast<uint64_t*>(s_scale_rows + 2 * T::kScaleRowFloats);
  uint64_t* empty = full + S;
  uint64_t* conv_full = empty + S;                  // FP4: converted-B slot written (expander)
  uint64_t* conv_empty = conv_full + T::kConvSlots;  // FP4: converted-B slot read (consumers)

  const int wg = ptx::warp_uniform(static_cast<int>(threadIdx.x / 128));  // descriptors in uniform registers
  const int tid_wg = threadIdx.x % 128;
  const int warp = tid_wg / 32, lane = tid_wg % 32;
  // Lets a programmatic dependent (the split-K reduction) get launched early; it waits for this
  // grid's completion itself. A no-op for ordinary launches.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      ptx::mbar_init(&full[s], 1 + 32);                // TMA issuer + the loader warp's lanes
      // Every consumer and expander thread arrives for its own reads of the stage (no lane
      // releasing on behalf of its warp).
      ptx::mbar_init(&empty[s], T::kConsumerThreads + 128 * T::kExpanderWGs);
    }
    for (int s = 0; s < T::kConvSlots; ++s) {
      ptx::mbar_init(&conv_full[s], T::kExpanderThreads);  // every expander thread
      ptx::mbar_init(&conv_empty[s], T::kConsumerThreads);  // every consumer thread
    }
    ptx::fence_barrier_init();
  }
  // Pre-expanded B: launched as the expansion pass's programmatic dependent (its launch and the
  // set-up above overlap the pass's tail); nothing the pass writes is read before this. A no-op
  // for ordinary launches.
  if constexpr (kPreB) asm volatile("griddepcontrol.wait;" ::: "memory");
  // Pre-expanded W4A8: one B scale a 128 x 128 block (FP8's promotion) or one a row (per column).
  bool block_mode = false;
  if constexpr (T::kColScales) block_mode = *args.pre_flag == 0;
  __syncthreads();

  if (wg == 0) {
    // Traits::kConsumerRegs' static_asserts: what this frees covers the consumers' increase.
    ptx::setmaxnreg_dec<T::kProducerRegs>();
    if (warp == 0) {
      // The TMA issuer: a single thread streams the A and B tiles.
      if (lane != 0) return;
      ptx::tma_prefetch_desc(&tm_a);
      ptx::tma_prefetch_desc(&tm_b);
      int stage = 0;
      uint32_t phase = 0;
      Tile t;
      for (int unit = blockIdx.x; get_tile<BM, BN>(args, unit, t); unit += gridDim.x) {
        for (int kb = t.kb0; kb < t.kb1; ++kb) {
          ptx::mbar_wait(&empty[stage], phase ^ 1);
          ptx::mbar_arrive_expect_tx(&full[stage], args.tma_bytes ? args.tma_bytes : T::kTmaBytes);
          // bf16 A (and pre-expanded bf16 B) come in boxes of 64 K (128 bytes) a row.
          const int k0 = kb * T::kStageK;
          uint8_t* a_dst = s_a + stage * T::kABytes;
#pragma unroll
          for (int x = 0; x < T::kABoxes; ++x) ptx::tma_load_2d(a_dst + x * BM * 128, &tm_a, &full[stage], k0 + 64 * x, t.m0);
          // Packed fp4 B is addressed in bytes (two elements each).
          uint8_t* b_dst = s_b + stage * T::kBBytes;
          if constexpr (T::kBF16 && !T::kConvertB) {
#pragma unroll
            for (int x = 0; x < T::kABoxes; ++x)
              ptx::tma_load_2d(b_dst + x * BN * 128, &tm_b, &full[stage], k0 + 64 * x, t.b_row0);
          } else {
            ptx::tma_load_2d(b_dst, &tm_b, &full[stage], T::kConvertB ? kb * kBK / 2 : kb * kBK, t.b_row0);
          }
          if (++stage == S) stage = 0, phase ^= 1;
        }
      }
      return;
    }
    // Loader warps 1..3 take the stages in turn and copy their scales into shared memory. A warp
    // keeps the loads of its next kLoaderDepth stages in flight (a ring of registers), and issues
    // a stage's loads before it waits for that stage to be free, so the scales' global latency
    // overlaps the waits and the other warps' stages, never the consumers' loop. (One stage in
    // flight a warp made the loaders the critical path of the decode kernels: ~19 dependent
    // round trips a warp at 56 K blocks a CTA.)
    const int lw = warp - 1;
    constexpr int kARows = T::kAScales ? BM / 32 : 0;
    constexpr int kBRows = kBN / 32;  // B scale rows of a lane (FP4 weights)
    constexpr int kD = T::kLoaderDepth;
    struct Regs {
      uint32_t ra[kARows > 0 ? kARows : 1];                                    // A scale bits
      uint32_t rb[F == GemmFormat::kW4A16NVFP4 ? 2 * kBRows : kBRows];        // B scale bits
    };
    struct Pos {  // a stage of this CTA's sequence: its tile and K block
      int it, unit, kb;
      Tile t;
      bool valid;
    };
    auto step = [&](Pos& p) {  // the next stage in the CTA's order
      ++p.it;
      if (++p.kb < p.t.kb1) return;
      p.unit += gridDim.x;
      p.valid = get_tile<BM, BN>(args, p.unit, p.t);
      p.kb = p.t.kb0;
    };
    auto advance = [&](Pos& p, int n) {
      for (int i = 0; i < n && p.valid; ++i) step(p);
    };
    auto load = [&](const Pos& p, Regs& r) {
      const Tile& t = p.t;
      const int kb = p.kb;
      // A scales: one f32/ue8m0 a row, or MXFP8's four ue8m0 bytes of the K block packed.
#pragma unroll
      for (int j = 0; j < kARows; ++j) {
        const int64_t row = min(t.m0 + lane + 32 * j, t.m_end - 1);  // rows past the group: clamped
        if constexpr (kMXFP8A) {
          const uint8_t* sp = args.a_scales + row * args.as_s0 + static_cast<int64_t>(kb) * 4 * args.as_s1;
          r.ra[j] = uint32_t(__ldg(sp)) | (uint32_t(__ldg(sp + args.as_s1)) << 8) |
                    (uint32_t(__ldg(sp + 2 * args.as_s1)) << 16) | (uint32_t(__ldg(sp + 3 * args.as_s1)) << 24);
        } else {
          r.ra[j] = load_scale_bits(args.a_scales, row * args.as_s0 + static_cast<int64_t>(kb) * args.as_s1,
                                    args.a_scale_f32);
        }
      }
      if constexpr (F == GemmFormat::kFP8Block) {
        r.rb[0] = load_scale_bits(args.b_scales,
                                  static_cast<int64_t>(t.b_row0 / 128) * args.bs_s0 + static_cast<int64_t>(kb) * args.bs_s1,
                                  args.b_scale_f32);
      } else if constexpr (kPreB) {
        // Pre-expanded W4A8: an f32 a 128 x 128 block or a row (W4A16's expanded B carries its scales).
        if constexpr (T::kColScales) {
          if (block_mode) {
            r.rb[0] = __float_as_uint(__ldg(args.b_block_scales + static_cast<int64_t>(t.b_row0 / kBK) * args.kblocks + kb));
            return;
          }
#pragma unroll
          for (int j = 0; j < kBRows; ++j)
            r.rb[j] = load_scale_bits(args.b_scales,
                                      static_cast<int64_t>(t.b_row0 + lane + 32 * j) * args.bs_s0 + static_cast<int64_t>(kb) * args.bs_s1,
                                      true);
        }
      } else {
        constexpr int kPerRow = F == GemmFormat::kW4A16NVFP4 ? 8 : 4;  // scale bytes a row a K block
#pragma unroll
        for (int j = 0; j < kBRows; ++j) {
          const uint8_t* sp = args.b_scales + static_cast<int64_t>(t.b_row0 + lane + 32 * j) * args.bs_s0 +
                              static_cast<int64_t>(kb) * kPerRow * args.bs_s1;
#pragma unroll
          for (int w = 0; w < kPerRow / 4; ++w) {
            uint32_t v = 0;
#pragma unroll
            for (int q = 0; q < 4; ++q) v |= uint32_t(__ldg(sp + (w * 4 + q) * args.bs_s1)) << (8 * q);
            r.rb[j * (kPerRow / 4) + w] = v;
          }
        }
      }
    };
    auto store = [&](int it, const Regs& r) {
      const int stage = it % S;
      ptx::mbar_wait(&empty[stage], ((it / S) & 1) ^ 1);
      uint8_t* side = s_side + stage * T::kSideBytes;
      float* sa = reinterpret_cast<float*>(side);
#pragma unroll
      for (int j = 0; j < kARows; ++j) {
        if constexpr (kMXFP8A) {
#pragma unroll
          for (int c = 0; c < 4; ++c) sa[c * BM + lane + 32 * j] = num::ue8m0_to_float(static_cast<uint8_t>(r.ra[j] >> (8 * c)));
        } else {
          sa[lane + 32 * j] = scale_from_bits(r.ra[j], args.a_scale_f32);
        }
      }
      uint32_t* sb = reinterpret_cast<uint32_t*>(side + T::kAScaleFloats * 4);
      if constexpr (F == GemmFormat::kFP8Block) {
        if (lane == 0) *reinterpret_cast<float*>(sb) = scale_from_bits(r.rb[0], args.b_scale_f32);
      } else if constexpr (kPreB && !T::kColScales) {
        // No scales to store.
      } else if constexpr (T::kColScales) {
        if (block_mode) {
          if (lane == 0) sb[0] = r.rb[0];
        } else {
#pragma unroll
          for (int j = 0; j < kBRows; ++j) sb[lane + 32 * j] = r.rb[j];
        }
      } else if constexpr (F == GemmFormat::kW4A16NVFP4 && !kPreB) {
#pragma unroll
        for (int j = 0; j < kBRows; ++j)
          *reinterpret_cast<uint2*>(sb + 2 * (lane + 32 * j)) = make_uint2(r.rb[2 * j], r.rb[2 * j + 1]);
      } else {
#pragma unroll
        for (int j = 0; j < kBRows; ++j) sb[lane + 32 * j] = r.rb[j];
      }
      ptx::mbar_arrive(&full[stage]);  // release: the stores above are visible to the waiters
    };
    // Ring slot d holds this warp's (d + 1)-th next stage: kD stages of loads in flight.
    Pos pos[kD];
    Regs regs[kD];
    Pos q;
    q.it = 0, q.unit = blockIdx.x, q.valid = get_tile<BM, BN>(args, q.unit, q.t), q.kb = q.t.kb0;
    advance(q, lw);
#pragma unroll
    for (int d = 0; d < kD; ++d) {
      pos[d] = q;
      if (q.valid) load(q, regs[d]);
      advance(q, T::kLoaderWarps);
    }
    // The ring is stored and refilled a whole turn at a time. ptxas puts every one of these loads
    // on one scoreboard, and the first read of a loaded register waits for all of them: refilling
    // slot d right after storing it made the store of slot d + 1 wait for that fresh load, so a
    // warp paid a full load latency a stage whatever kD was. Now the first store of a turn waits
    // for loads issued a turn ago, and the rest of the turn reads registers already complete.
    for (;;) {
#pragma unroll
      for (int d = 0; d < kD; ++d) {
        if (!pos[d].valid) return;
        store(pos[d].it, regs[d]);
      }
#pragma unroll
      for (int d = 0; d < kD; ++d) {
        pos[d] = q;  // q is this warp's stage kD slots ahead
        if (q.valid) load(q, regs[d]);
        advance(q, T::kLoaderWarps);
      }
    }
  }

  if (T::kExpanderWGs && wg >= 1 && wg <= T::kExpanderWGs) {
    // Expander: packed B of each stage into the converted-B ring (slot = K block % kConvSlots),
    // W4A8's per-row scales beside it; then the stage's packed B is released (one arrival a warp)
    // and the slot published (every thread: each one's stores and its proxy fence).
    if constexpr (T::kExpanderRegs > T::kLaunchRegs) ptx::setmaxnreg_inc<T::kExpanderRegs>();
    else ptx::setmaxnreg_dec<T::kExpanderRegs>();
    if constexpr (T::kExpanderWGs > 0) {
      int stage = 0, slot = 0;
      uint32_t phase = 0, cphase = 0;
      Tile t;
      for (int unit = blockIdx.x; get_tile<BM, BN>(args, unit, t); unit += gridDim.x) {
        for (int kb = t.kb0; kb < t.kb1; ++kb) {
          ptx::mbar_wait(&full[stage], phase);
          ptx::mbar_wait(&conv_empty[slot], cphase ^ 1);
          uint8_t* dst = s_bconv + slot * T::kBConvBytes;
          const uint8_t* src = s_b + stage * T::kBBytes;
          const uint8_t* side_b = s_side + stage * T::kSideBytes + T::kAScaleFloats * 4;
          const int etid = threadIdx.x - 128;  // expander thread index
          if constexpr (T::kBF16) expand_w4a16<F, T::kExpanderThreads>(src, dst, side_b, etid);
          else
            expand_w4a8<kMXFP8A, T::kExpanderThreads>(src, dst, s_scale_rows + slot * T::kScaleRowFloats,
                                                      reinterpret_cast<const uint32_t*>(side_b), etid);
          ptx::fence_proxy_async_smem();  // the converted tile is read by wgmma (async proxy)
          ptx::mbar_arrive(&conv_full[slot]);
          ptx::mbar_arrive(&empty[stage]);
          if (++stage == S) stage = 0, phase ^= 1;
          if (++slot == T::kConvSlots) slot = 0, cphase ^= 1;
        }
      }
    }
    return;
  }

  // Consumers.
  ptx::setmaxnreg_inc<T::kConsumerRegs>();
  const int cw = wg - 1 - T::kExpanderWGs;
  const int row_in_tile = cw * 64 + warp * 16 + lane / 4;
  int stage = 0;
  uint32_t phase = 0;
  [[maybe_unused]] int slot = 0, buf = 0;
  [[maybe_unused]] uint32_t cphase = 0;
  [[maybe_unused]] const int ctid = threadIdx.x - 128 * (1 + T::kExpanderWGs);  // consumer thread index
  float acc[kAcc];
  [[maybe_unused]] float tmp[kAcc];
  const float global = F == GemmFormat::kW4A16NVFP4 ? __ldg(args.b_global) : 1.f;
  // Descriptors of stage 0 / buffer 0; a stage, buffer or K slice is a byte offset, added in
  // 16-byte units to the address field (shared addresses < 256 KiB never carry out of it).
  const uint64_t desc_a0 = ptx::wgmma_desc_sw128(ptx::smem_addr(s_a + cw * 64 * 128));
  const uint64_t desc_b0 = ptx::wgmma_desc_sw128(ptx::smem_addr(T::kConvertB ? s_bconv : s_b));
  auto desc_at = [](uint64_t d, uint32_t bytes) { return d + (bytes >> 4); };

  Tile t;
  for (int unit = blockIdx.x; get_tile<BM, BN>(args, unit, t); unit += gridDim.x) {
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;
    const int r_lo = t.m0 + row_in_tile, r_hi = r_lo + 8;

    // acc += d * a_scale[row] * b_scale[col] with b_scale per column from shared memory.
    // The FP4 paths' helpers (BN = 128 only). They are generic lambdas so that their 64-register
    // operands are instantiated only where an FP4 path calls them.
    [[maybe_unused]] auto promote_cols = [&](const auto& d, const float* sb_row, float s_lo, float s_hi) {
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int col = j * 8 + (lane % 4) * 2;
        const float2 sbc = *reinterpret_cast<const float2*>(sb_row + col);
        acc[4 * j + 0] += d[4 * j + 0] * (s_lo * sbc.x);
        acc[4 * j + 1] += d[4 * j + 1] * (s_lo * sbc.y);
        acc[4 * j + 2] += d[4 * j + 2] * (s_hi * sbc.x);
        acc[4 * j + 3] += d[4 * j + 3] * (s_hi * sbc.y);
      }
    };
    // One 128-K block of wgmmas from converted B: bf16 into acc, or e4m3 into tmp.
    [[maybe_unused]] auto mma_bf16 = [&](auto& d, uint64_t da, uint64_t db) {
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const uint32_t off = (k & 3) * 32;  // K slice inside a 64-element swizzle atom
        ptx::wgmma_m64n128k16_bf16(d, desc_at(da, (k >> 2) * BM * 128 + off), desc_at(db, (k >> 2) * kBN * 128 + off), 1);
      }
    };
    [[maybe_unused]] auto mma_e4m3_block = [&](auto& d, uint64_t da, uint64_t db) {
#pragma unroll
      for (int k = 0; k < 4; ++k) ptx::wgmma_m64n128k32_e4m3(d, desc_at(da, k * 32), desc_at(db, k * 32), k > 0);
    };

    // An FP4 block's operands: the stage's A scales and A descriptor, the expanded-B buffer's
    // descriptor and (W4A8) its per-row scales.
    struct BlockOps {
      const float* sa;
      float s_lo, s_hi;
      uint64_t da, db;
      const float* scale_rows;
    };
    [[maybe_unused]] auto block_ops = [&](int stg, int bbuf) {
      BlockOps o;
      o.sa = reinterpret_cast<const float*>(s_side + stg * T::kSideBytes);
      o.s_lo = o.s_hi = 1.f;
      if constexpr (T::kAScales && !kMXFP8A) o.s_lo = o.sa[row_in_tile], o.s_hi = o.sa[row_in_tile + 8];
      o.da = desc_at(desc_a0, stg * T::kABytes);
      o.db = desc_at(desc_b0, bbuf * T::kBConvBytes);
      o.scale_rows = s_scale_rows + bbuf * T::kScaleRowFloats;
      return o;
    };

    if constexpr (T::kBF16 && !T::kConvertB) {
      // Pre-expanded W4A16: bf16 B straight from the TMA stage into the accumulators, no scales.
      // A stage goes back one block later, once the next block's wgmmas are queued behind it.
      int prev = -1;
      for (int kb = t.kb0; kb < t.kb1; ++kb) {
        ptx::mbar_wait(&full[stage], phase);
        ptx::wgmma_fence();
        if constexpr (BN == kBNWide) {  // one 64-K atom a stage
          const uint64_t da = desc_at(desc_a0, stage * T::kABytes), db = desc_at(desc_b0, stage * T::kBBytes);
#pragma unroll
          for (int k = 0; k < 4; ++k) ptx::wgmma_m64n256k16_bf16(acc, desc_at(da, k * 32), desc_at(db, k * 32), 1);
        } else {
          mma_bf16(acc, desc_at(desc_a0, stage * T::kABytes), desc_at(desc_b0, stage * T::kBBytes));
        }
        ptx::wgmma_commit();
        ptx::wgmma_wait<1>();
        if (prev >= 0) ptx::mbar_arrive(&empty[prev]);
        prev = stage;
        if (++stage == S) stage = 0, phase ^= 1;
      }
      ptx::wgmma_wait<0>();
      ptx::fence_accumulators(acc);
      if (prev >= 0) ptx::mbar_arrive(&empty[prev]);
    } else if constexpr (!T::kConvertB) {
      // FP8: B feeds wgmma straight from the TMA stage. Two scratch tiles, so the wgmmas of block
      // kb+1 run while block kb is promoted: the tensor pipe always has this warpgroup's next
      // block queued, not only the other warpgroup's.
      float tmp2[kAcc];
      float sl[2], sh[2];  // scales of the block in tmp (0) / tmp2 (1)
      // kCol: pre-expanded W4A8 in row mode (B's scales per column, applied at retirement). A
      // compile-time switch, so each mode gets its own loop: one loop branching on the mode at
      // every block spilled ~400 bytes.
      auto mainloop = [&](auto col_tag) {
        constexpr bool kCol = decltype(col_tag)::value;
        auto issue = [&](float(&d)[kAcc], float& s_lo, float& s_hi) {
          ptx::mbar_wait(&full[stage], phase);
          const float* sa = reinterpret_cast<const float*>(s_side + stage * T::kSideBytes);
          const float sb = kCol ? 1.f : sa[T::kAScaleFloats];
          s_lo = sa[row_in_tile] * sb, s_hi = sa[row_in_tile + 8] * sb;
          const uint64_t da = desc_at(desc_a0, stage * T::kABytes), db = desc_at(desc_b0, stage * T::kBBytes);
          ptx::wgmma_fence();
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if constexpr (BN == kBN) ptx::wgmma_m64n128k32_e4m3(d, desc_at(da, k * 32), desc_at(db, k * 32), k > 0);
            else if constexpr (BN == 2 * kBNDecode) ptx::wgmma_m64n64k32_e4m3(d, desc_at(da, k * 32), desc_at(db, k * 32), k > 0);
            else ptx::wgmma_m64n32k32_e4m3(d, desc_at(da, k * 32), desc_at(db, k * 32), k > 0);
          }
          ptx::wgmma_commit();
          if (++stage == S) stage = 0, phase ^= 1;
        };
        // Retires the older in-flight block: its stage goes back to the producer, its product into acc.
        int retire_stage = stage;
        auto retire = [&](float(&d)[kAcc], float s_lo, float s_hi) {
          ptx::fence_accumulators(d);
          if constexpr (kCol) {
            // The column scales live in the stage: read them before it goes back.
            promote_cols(d, reinterpret_cast<const float*>(s_side + retire_stage * T::kSideBytes + T::kAScaleFloats * 4),
                         s_lo, s_hi);
            ptx::mbar_arrive(&empty[retire_stage]);
            if (++retire_stage == S) retire_stage = 0;
            return;
          }
          ptx::mbar_arrive(&empty[retire_stage]);
          if (++retire_stage == S) retire_stage = 0;
#pragma unroll
          for (int j = 0; j < kJ; ++j) {
            acc[4 * j + 0] += d[4 * j + 0] * s_lo;
            acc[4 * j + 1] += d[4 * j + 1] * s_lo;
            acc[4 * j + 2] += d[4 * j + 2] * s_hi;
            acc[4 * j + 3] += d[4 * j + 3] * s_hi;
          }
        };
        // Steady state without data-dependent wait counts (ptxas serializes every wgmma when it
        // cannot prove which group a wait retires); the one- or two-block tail follows.
        issue(tmp, sl[0], sh[0]);
        int kb = t.kb0;
        for (; kb + 2 < t.kb1; kb += 2) {
          issue(tmp2, sl[1], sh[1]);
          ptx::wgmma_wait<1>();
          retire(tmp, sl[0], sh[0]);
          issue(tmp, sl[0], sh[0]);
          ptx::wgmma_wait<1>();
          retire(tmp2, sl[1], sh[1]);
        }
        if (kb + 1 < t.kb1) {
          issue(tmp2, sl[1], sh[1]);
          ptx::wgmma_wait<1>();
          retire(tmp, sl[0], sh[0]);
          ptx::wgmma_wait<0>();
          retire(tmp2, sl[1], sh[1]);
        } else {
          ptx::wgmma_wait<0>();
          retire(tmp, sl[0], sh[0]);
        }
      };
      if constexpr (T::kColScales) {
        if (block_mode) mainloop(std::false_type{});
        else mainloop(std::true_type{});
      } else {
        mainloop(std::false_type{});
      }
    } else if constexpr (T::kExpanderWGs == 0) {
      // FP4 B: the consumers expand stage kb+1 into the other buffer while the wgmmas of stage kb
      // run, so the expansion overlaps the tensor cores. One named barrier an iteration both
      // publishes the expanded tile and proves every warpgroup is done with the older buffer.
      auto expand = [&](int stg, int bf) {
        uint8_t* dst = s_bconv + bf * T::kBConvBytes;
        const uint8_t* src = s_b + stg * T::kBBytes;
        const uint8_t* side_b = s_side + stg * T::kSideBytes + T::kAScaleFloats * 4;
        if constexpr (T::kBF16) expand_w4a16<F, T::kConsumerThreads>(src, dst, side_b, ctid);
        else
          expand_w4a8<kMXFP8A, T::kConsumerThreads>(src, dst, s_scale_rows + bf * T::kScaleRowFloats,
                                                    reinterpret_cast<const uint32_t*>(side_b), ctid);
        ptx::fence_proxy_async_smem();  // the expanded tile is read by wgmma (async proxy)
      };
      ptx::mbar_wait(&full[stage], phase);
      expand(stage, buf);
      ptx::named_barrier_sync(1, T::kConsumerThreads);
      for (int kb = t.kb0; kb < t.kb1; ++kb) {
        const auto [sa, s_lo, s_hi, da, db, scale_rows] = block_ops(stage, buf);
        ptx::wgmma_fence();
        if constexpr (T::kBF16) {
          mma_bf16(acc, da, db);
        } else if constexpr (kMXFP8A) {
          ptx::wgmma_m64n128k32_e4m3(tmp, da, db, 0);
        } else {
          mma_e4m3_block(tmp, da, db);
        }
        ptx::wgmma_commit();

        const int next_stage = stage + 1 == S ? 0 : stage + 1;
        const uint32_t next_phase = stage + 1 == S ? phase ^ 1 : phase;
        if (kb + 1 < t.kb1) {
          ptx::mbar_wait(&full[next_stage], next_phase);
          expand(next_stage, buf ^ 1);
        }

        if constexpr (T::kBF16) {
          ptx::wgmma_wait<0>();
          ptx::fence_accumulators(acc);
        } else if constexpr (kMXFP8A) {
          // One wgmma per 32-wide scale block, promoted one by one.
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            ptx::wgmma_wait<0>();
            ptx::fence_accumulators(tmp);
            promote_cols(tmp, scale_rows + k * kBN, sa[k * BM + row_in_tile], sa[k * BM + row_in_tile + 8]);
            if (k < 3) {
              ptx::wgmma_fence();
              ptx::wgmma_m64n128k32_e4m3(tmp, desc_at(da, (k + 1) * 32), desc_at(db, (k + 1) * 32), 0);
              ptx::wgmma_commit();
            }
          }
        } else {
          ptx::wgmma_wait<0>();
          ptx::fence_accumulators(tmp);
          promote_cols(tmp, scale_rows, s_lo, s_hi);
        }
        // Stage kb's A and scales were read by this warp (wgmmas done), its packed B by the
        // expansion before the previous barrier.
        ptx::mbar_arrive(&empty[stage]);
        stage = next_stage, phase = next_phase;
        buf ^= 1;
        ptx::named_barrier_sync(1, T::kConsumerThreads);
      }
    } else {
      // FP4 B: the expander warpgroup has converted B into ring slot kb % kConvSlots; A and its
      // scales are in the TMA stage. The stage and the slot go back once this block's wgmmas (and,
      // for W4A8, the promotion's reads of the slot's row scales) are done.
      for (int kb = t.kb0; kb < t.kb1; ++kb) {
        ptx::mbar_wait(&full[stage], phase);
        ptx::mbar_wait(&conv_full[slot], cphase);
        const auto [sa, s_lo, s_hi, da, db, scale_rows] = block_ops(stage, slot);
        ptx::wgmma_fence();
        if constexpr (T::kBF16) {
          mma_bf16(acc, da, db);
          ptx::wgmma_commit();
          ptx::wgmma_wait<0>();
          ptx::fence_accumulators(acc);
        } else if constexpr (kMXFP8A) {
          // One wgmma per 32-wide scale block, promoted one by one.
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            ptx::wgmma_m64n128k32_e4m3(tmp, desc_at(da, k * 32), desc_at(db, k * 32), 0);
            ptx::wgmma_commit();
            ptx::wgmma_wait<0>();
            ptx::fence_accumulators(tmp);
            promote_cols(tmp, scale_rows + k * kBN, sa[k * BM + row_in_tile], sa[k * BM + row_in_tile + 8]);
            if (k < 3) ptx::wgmma_fence();
          }
        } else {
          mma_e4m3_block(tmp, da, db);
          ptx::wgmma_commit();
          ptx::wgmma_wait<0>();
          ptx::fence_accumulators(tmp);
          promote_cols(tmp, scale_rows, s_lo, s_hi);
        }
        ptx::mbar_arrive(&empty[stage]);
        ptx::mbar_arrive(&conv_empty[slot]);
        if (++stage == S) stage = 0, phase ^= 1;
        if (++slot == T::kConvSlots) slot = 0, cphase ^= 1;
      }
    }

    // Epilogue. Plain bf16 D: the warpgroup's 64 x 128 tile goes through shared memory (two
    // 128B-swizzled 64 x 64 boxes, conflict-free bf16x2 stores) and one thread TMA-stores it, so the
    // warpgroup starts the next tile's wgmmas while the store drains. Rows past a group's end that
    // belong to the next group (grouped GEMM) must not be written: those tiles, split-K partials,
    // bias and residual take the direct path below.
    const int wg_row0 = t.m0 + cw * 64;
    if constexpr (BN >= kBN) {  // decode tiles (BN = 32 / 64) are small: direct stores (the host agrees)
      if (args.tma_store_d && wg_row0 < t.m_end && (wg_row0 + 64 <= t.m_end || t.m_end == args.M)) {
        uint8_t* ebuf = s_epi + cw * (64 * 128 * 2);
        // 128 columns at a time through the buffer (256-wide tiles in two passes).
#pragma unroll
        for (int c0 = 0; c0 < BN; c0 += kBN) {
          // The previous store must be done reading the buffer (long since, in practice, except
          // between the two passes of a wide tile).
          if (tid_wg == 0) ptx::bulk_wait_group_read<0>();
          ptx::named_barrier_sync(2 + cw, 128);
#pragma unroll
          for (int jj = 0; jj < 16; ++jj) {
            const int j = c0 / 8 + jj;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int row = warp * 16 + lane / 4 + 8 * h;  // inside the warpgroup's 64 rows
              const __nv_bfloat162 v = __floats2bfloat162_rn(acc[4 * j + 2 * h] * global, acc[4 * j + 2 * h + 1] * global);
              // Box jj / 8 (64 columns), 16-byte chunk jj % 8 of the row, swizzled by row % 8.
              uint8_t* dst = ebuf + (jj >> 3) * (64 * 128) + row * 128 + (((jj & 7) ^ (row & 7)) << 4) + (lane % 4) * 4;
              *reinterpret_cast<__nv_bfloat162*>(dst) = v;
            }
          }
          ptx::fence_proxy_async_smem();  // each thread's stores, before the TMA (async proxy) reads them
          ptx::named_barrier_sync(2 + cw, 128);
          if (tid_wg == 0) {
            ptx::tma_store_2d(&tm_d, ebuf, t.n0 + c0, wg_row0);
            ptx::tma_store_2d(&tm_d, ebuf + 64 * 128, t.n0 + c0 + 64, wg_row0);
            ptx::bulk_commit_group();
          }
        }
        continue;
      }
    }
    // Direct path, straight from the accumulators.
#pragma unroll
    for (int j = 0; j < kJ; ++j) {
      const int col = t.n0 + j * 8 + (lane % 4) * 2;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = h ? r_hi : r_lo;
        if (row >= t.m_end) continue;
        float v0 = acc[4 * j + 2 * h] * global, v1 = acc[4 * j + 2 * h + 1] * global;
        if (args.splits > 1) {
          float* p = args.partial + (static_cast<int64_t>(t.split) * args.M + row) * args.N + col;
          *reinterpret_cast<float2*>(p) = make_float2(v0, v1);
          continue;
        }
        if (args.bias) {
          const __nv_bfloat162 b = *reinterpret_cast<const __nv_bfloat162*>(args.bias + col);
          v0 += __bfloat162float(b.x), v1 += __bfloat162float(b.y);
        }
        if (args.residual) {
          const __nv_bfloat162 r = *reinterpret_cast<const __nv_bfloat162*>(args.residual + row * args.res_ld + col);
          v0 += __bfloat162float(r.x), v1 += __bfloat162float(r.y);
        }
        *reinterpret_cast<__nv_bfloat162*>(args.d + row * args.d_ld + col) = __floats2bfloat162_rn(v0, v1);
      }
    }
  }
  // The shared-memory source of the last TMA store must outlive its reads.
  if (tid_wg == 0) ptx::bulk_wait_group<0>();
}

// Split-K epilogue: D = sum of the partials (fixed order, deterministic) + bias + residual.
__global__ void splitk_reduce_kernel(const float* __restrict__ partial, int splits, int M, int N,
                                     const __nv_bfloat16* __restrict__ bias, const __nv_bfloat16* residual,
                                     int64_t res_ld, __nv_bfloat16* d, int64_t d_ld) {
  // Launched as a programmatic dependent of the GEMM: wait for its partials (full completion and
  // memory flush) here, after the launch latency already overlapped the GEMM's tail.
  asm volatile("griddepcontrol.wait;" ::: "memory");
  const int64_t quads = static_cast<int64_t>(M) * N / 4;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < quads;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / (N / 4);
    const int col = static_cast<int>(i - row * (N / 4)) * 4;
    float4 s = *reinterpret_cast<const float4*>(partial + row * N + col);
    for (int k = 1; k < splits; ++k) {
      const float4 p = *reinterpret_cast<const float4*>(partial + (static_cast<int64_t>(k) * M + row) * N + col);
      s.x += p.x, s.y += p.y, s.z += p.z, s.w += p.w;
    }
    if (bias) {
      s.x += __bfloat162float(bias[col]), s.y += __bfloat162float(bias[col + 1]);
      s.z += __bfloat162float(bias[col + 2]), s.w += __bfloat162float(bias[col + 3]);
    }
    if (residual) {
      const __nv_bfloat16* r = residual + row * res_ld + col;
      s.x += __bfloat162float(r[0]), s.y += __bfloat162float(r[1]);
      s.z += __bfloat162float(r[2]), s.w += __bfloat162float(r[3]);
    }
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(d + row * d_ld + col);
    o[0] = __floats2bfloat162_rn(s.x, s.y);
    o[1] = __floats2bfloat162_rn(s.z, s.w);
  }
}

}  // namespace dsv4::cuda::gemm_detail
