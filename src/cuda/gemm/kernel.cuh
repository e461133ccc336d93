// The block-scaled GEMM kernel for sm_90a: D[M, N] = A[M, K] x B[N, K]^T with per-block scales.
//
// Structure (one CTA a SM, persistent):
//  - warpgroup 0 is the producer: one thread walks the CTA's work units and streams A and B tiles
//    (BK = 128 along K a stage) into a ring of shared-memory stages with TMA, each stage guarded by a
//    "full" mbarrier (TMA bytes landed) and an "empty" one (consumers done reading);
//  - warpgroups 1..BM/64 are consumers: each owns 64 rows of the BM x 128 output tile, issues wgmma
//    on the stages, applies the scales to f32 accumulators and writes the epilogue (bf16 D, or f32
//    split-K partials) straight from registers while the producer already fetches the next unit.
//  - FP4 weights (W4A8, W4A16) arrive packed; the consumers expand each stage's B tile into a
//    double-buffered, 128B-swizzled operand tile (e4m3 or bf16) before their wgmmas read it.
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
// Work units: output tiles (BM x 128) times K splits. Groups (MoE): rows [group_rows[g],
// group_rows[g+1]) of A and D use rows [g * N, (g + 1) * N) of B; a plain GEMM is one group.
#pragma once
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

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
  float* partial = nullptr;  // [splits, M, N] f32 when splits > 1
};

// Everything the kernel's layout derives from (format, BM); the static_asserts pin the invariants
// the descriptors and TMA boxes rely on.
template <GemmFormat F, int BM, bool kMXFP8A = false>
struct Traits {
  static constexpr bool kBF16 = F == GemmFormat::kW4A16MXFP4 || F == GemmFormat::kW4A16NVFP4;
  static constexpr bool kConvertB = F != GemmFormat::kFP8Block;
  static constexpr bool kPer32 = kMXFP8A;  // W4A8 with MXFP8 activations: promote every k32
  static constexpr int kConsumerWGs = BM / 64;
  static constexpr int kConsumerThreads = 128 * kConsumerWGs;
  static constexpr int kThreads = 128 + kConsumerThreads;
  static constexpr int kABytes = kBF16 ? BM * kBK * 2 : BM * kBK;   // one stage of A
  static constexpr int kBBytes = kConvertB ? kBN * kBK / 2 : kBN * kBK;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kStages = max_stages(F, BM);
  static constexpr int kBConvBytes = kBF16 ? kBN * kBK * 2 : kBN * kBK;  // one expanded B buffer
  static constexpr int kScaleRowFloats = F == GemmFormat::kW4A8MXFP4 ? 4 * kBN : 0;  // per buffer
  static constexpr int kSmemBytes = smem_bytes(F, BM, kStages);
  static_assert(BM == 64 || BM == 128, "one or two consumer warpgroups of 64 rows");
  static_assert(kStageBytes == stage_bytes(F, BM), "TMA bytes a stage must match the heuristic's budget");
  static_assert(kABytes % 1024 == 0 && kBBytes % 1024 == 0, "stages must keep 1024-byte swizzle alignment");
  static_assert(kStages >= 2, "the pipeline needs at least double buffering");
  static_assert(1024 + 16 * kStages + 2 * kScaleRowFloats * 4 <= kSmemReserved, "reserved smem too small");
  static_assert(!kPer32 || F == GemmFormat::kW4A8MXFP4, "per-32 promotion is the W4A8/MXFP8 path");
};

struct Tile {
  int m0 = 0, m_end = 0;  // first row of the tile, end of its group's rows
  int n0 = 0;             // first output column
  int b_row0 = 0;         // first row of B (group offset + n0)
  int split = 0, kb0 = 0, kb1 = 0;
};

// Maps a work unit to its tile; false once past the last unit. Units are split-minor so the splits
// of one tile run side by side, and m-minor so concurrent CTAs share B tiles in L2.
template <int BM>
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
      t.n0 = n_blk * kBN;
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

__device__ __forceinline__ float load_scale(const uint8_t* base, int64_t elem, bool f32) {
  if (f32) return __ldg(reinterpret_cast<const float*>(base) + elem);
  return num::ue8m0_to_float(__ldg(base + elem));
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

// B scale bytes an expansion needs, loaded by the consumer threads two K blocks ahead of use so
// the global-memory latency never sits on the critical path. Unit i of thread ctid is
// u = ctid + i * kThreads, the same rows every K block.
//  W4A8 (512 units: row u/4, 32-element sub-block u%4): the row's four ue8m0 bytes, packed.
//  W4A16 (1024 units: row u/8, 16 elements u%8): the one scale byte of the unit (MXFP4 ue8m0 of
//  its 32-block, NVFP4 e4m3 of its 16-block).
template <GemmFormat F, int kThreads>
struct ExpandScales {
  static constexpr int kUnits = (F == GemmFormat::kW4A8MXFP4 ? kBN * 4 : kBN * 8) / kThreads;
  uint32_t v[kUnits];
  __device__ __forceinline__ void load(const KernelArgs& a, int b_row0, int kb, int ctid) {
#pragma unroll
    for (int i = 0; i < kUnits; ++i) {
      const int u = ctid + i * kThreads;
      if constexpr (F == GemmFormat::kW4A8MXFP4) {
        const uint8_t* sp = a.b_scales + static_cast<int64_t>(b_row0 + (u >> 2)) * a.bs_s0 +
                            static_cast<int64_t>(kb) * 4 * a.bs_s1;
        v[i] = uint32_t(__ldg(sp)) | (uint32_t(__ldg(sp + a.bs_s1)) << 8) | (uint32_t(__ldg(sp + 2 * a.bs_s1)) << 16) |
               (uint32_t(__ldg(sp + 3 * a.bs_s1)) << 24);
      } else {
        const int q = u & 7;
        const int64_t col = F == GemmFormat::kW4A16NVFP4 ? kb * 8 + q : kb * 4 + (q >> 1);
        v[i] = __ldg(a.b_scales + static_cast<int64_t>(b_row0 + (u >> 3)) * a.bs_s0 + col * a.bs_s1);
      }
    }
  }
};

// W4A8: expand one stage's packed B tile [128 rows][64 bytes] into e4m3 [128][128] (128B swizzle)
// and the per-row scales the promotion needs: fold mode writes scale_rows[row] = 2^(smax - 6);
// per-32 mode writes scale_rows[j * 128 + row] = 2^(s_j).
template <bool kPer32, int kThreads>
__device__ __forceinline__ void expand_w4a8(const uint8_t* packed, uint8_t* dst, float* scale_rows,
                                            const ExpandScales<GemmFormat::kW4A8MXFP4, kThreads>& sc, int ctid) {
#pragma unroll
  for (int i = 0; i < ExpandScales<GemmFormat::kW4A8MXFP4, kThreads>::kUnits; ++i) {
    const int u = ctid + i * kThreads;
    const int row = u >> 2, j = u & 3;
    const uint32_t packed_s = sc.v[i];
    const int sj = (packed_s >> (8 * j)) & 0xFF;
    uint32_t lut0 = 0x3C383000u, lut1 = 0x4C484440u;  // shift 0: e2m1 values are exact e4m3
    if constexpr (kPer32) {
      scale_rows[j * kBN + row] = num::ue8m0_to_float(static_cast<uint8_t>(sj));
    } else {
      const int s0 = packed_s & 0xFF, s1 = (packed_s >> 8) & 0xFF, s2 = (packed_s >> 16) & 0xFF, s3 = packed_s >> 24;
      const int smax = max(max(s0, s1), max(s2, s3));
      e4m3_table(sj - smax + 6, lut0, lut1);
      if (j == 0)
        scale_rows[row] = smax == 0xFF ? __uint_as_float(0x7FC00000u) : num::exp2i(smax - 127 - 6);
    }
    const uint4 w = *reinterpret_cast<const uint4*>(packed + row * 64 + j * 16);
    uint4 lo, hi;
    lo.x = e2m1x4_lookup(w.x, lut0, lut1), lo.y = e2m1x4_lookup(w.x >> 16, lut0, lut1);
    lo.z = e2m1x4_lookup(w.y, lut0, lut1), lo.w = e2m1x4_lookup(w.y >> 16, lut0, lut1);
    hi.x = e2m1x4_lookup(w.z, lut0, lut1), hi.y = e2m1x4_lookup(w.z >> 16, lut0, lut1);
    hi.z = e2m1x4_lookup(w.w, lut0, lut1), hi.w = e2m1x4_lookup(w.w >> 16, lut0, lut1);
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

// W4A16: expand one stage's packed B tile into bf16 [2 atoms of 64 K][128 rows][128 B] (128B
// swizzle), scale applied. Each unit is 16 elements of one row (one NVFP4 block, half an MXFP4 one).
template <GemmFormat F, int kThreads>
__device__ __forceinline__ void expand_w4a16(const uint8_t* packed, uint8_t* dst, const ExpandScales<F, kThreads>& sc,
                                             int ctid) {
#pragma unroll
  for (int i = 0; i < ExpandScales<F, kThreads>::kUnits; ++i) {
    const int u = ctid + i * kThreads;
    const int row = u >> 3, q = u & 7;
    const uint32_t s = sc.v[i];
    uint16_t sbits;
    if constexpr (F == GemmFormat::kW4A16NVFP4) {
      sbits = num::bf16_from_float(num::e4m3_to_float(static_cast<uint8_t>(s)));
    } else {
      sbits = s == 0xFF ? 0x7FC0 : s == 0 ? 0x0040 : static_cast<uint16_t>(s << 7);  // 2^(s-127) as bf16
    }
    const __nv_bfloat16 s1 = __ushort_as_bfloat16(sbits);
    const __nv_bfloat162 s2 = __halves2bfloat162(s1, s1);
    const uint2 w = *reinterpret_cast<const uint2*>(packed + row * 64 + q * 8);
    uint4 c0, c1;
    e2m1x4_to_bf16(w.x, c0.x, c0.y);
    e2m1x4_to_bf16(w.x >> 16, c0.z, c0.w);
    e2m1x4_to_bf16(w.y, c1.x, c1.y);
    e2m1x4_to_bf16(w.y >> 16, c1.z, c1.w);
    c0.x = bf16x2_mul(c0.x, s2), c0.y = bf16x2_mul(c0.y, s2), c0.z = bf16x2_mul(c0.z, s2), c0.w = bf16x2_mul(c0.w, s2);
    c1.x = bf16x2_mul(c1.x, s2), c1.y = bf16x2_mul(c1.y, s2), c1.z = bf16x2_mul(c1.z, s2), c1.w = bf16x2_mul(c1.w, s2);
    uint8_t* drow = dst + (q >> 2) * (kBN * 128) + row * 128;
    const int chunk = (q & 3) * 2;
    *reinterpret_cast<uint4*>(drow + ((chunk ^ (row & 7)) << 4)) = c0;
    *reinterpret_cast<uint4*>(drow + (((chunk + 1) ^ (row & 7)) << 4)) = c1;
  }
}

template <GemmFormat F, int BM, bool kMXFP8A>
__global__ void __launch_bounds__(Traits<F, BM, kMXFP8A>::kThreads, 1)
    gemm_kernel(const __grid_constant__ CUtensorMap tm_a, const __grid_constant__ CUtensorMap tm_b,
                const KernelArgs args) {
  using T = Traits<F, BM, kMXFP8A>;
  constexpr int S = T::kStages;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  uint8_t* s_a = smem;
  uint8_t* s_b = s_a + S * T::kABytes;
  uint8_t* s_bconv = s_b + S * T::kBBytes;
  float* s_scale_rows = reinterpret_cast<float*>(s_bconv + (T::kConvertB ? 2 * T::kBConvBytes : 0));
  uint64_t* full = reinterpret_cast<uint64_t*>(s_scale_rows + 2 * T::kScaleRowFloats);
  uint64_t* empty = full + S;

  const int wg = threadIdx.x / 128;
  const int tid_wg = threadIdx.x % 128;
  // Lets a programmatic dependent (the split-K reduction) get launched early; it waits for this
  // grid's completion itself. A no-op for ordinary launches.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      ptx::mbar_init(&full[s], 1);
      ptx::mbar_init(&empty[s], T::kConsumerWGs * 4);  // one arrival per consumer warp
    }
    ptx::fence_barrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    // Producer: a single thread issues every TMA; the rest of the warpgroup gives its registers away.
    ptx::setmaxnreg_dec<40>();
    if (tid_wg != 0) return;
    ptx::tma_prefetch_desc(&tm_a);
    ptx::tma_prefetch_desc(&tm_b);
    int stage = 0;
    uint32_t phase = 0;
    Tile t;
    for (int unit = blockIdx.x; get_tile<BM>(args, unit, t); unit += gridDim.x) {
      for (int kb = t.kb0; kb < t.kb1; ++kb) {
        ptx::mbar_wait(&empty[stage], phase ^ 1);
        ptx::mbar_arrive_expect_tx(&full[stage], T::kStageBytes);
        uint8_t* a_dst = s_a + stage * T::kABytes;
        if constexpr (T::kBF16) {
          ptx::tma_load_2d(a_dst, &tm_a, &full[stage], kb * kBK, t.m0);
          ptx::tma_load_2d(a_dst + BM * 128, &tm_a, &full[stage], kb * kBK + 64, t.m0);
        } else {
          ptx::tma_load_2d(a_dst, &tm_a, &full[stage], kb * kBK, t.m0);
        }
        // Packed fp4 B is addressed in bytes (two elements each).
        ptx::tma_load_2d(s_b + stage * T::kBBytes, &tm_b, &full[stage], T::kConvertB ? kb * kBK / 2 : kb * kBK,
                         t.b_row0);
        if (++stage == S) stage = 0, phase ^= 1;
      }
    }
    return;
  }

  // Consumers.
  ptx::setmaxnreg_inc<232>();
  const int cw = wg - 1;
  const int ctid = threadIdx.x - 128;
  const int warp = tid_wg / 32, lane = tid_wg % 32;
  const int row_in_tile = cw * 64 + warp * 16 + lane / 4;
  int stage = 0;
  uint32_t phase = 0;
  int buf = 0;
  float acc[64];
  [[maybe_unused]] float tmp[64];
  const float global = F == GemmFormat::kW4A16NVFP4 ? __ldg(args.b_global) : 1.f;

  Tile t;
  for (int unit = blockIdx.x; get_tile<BM>(args, unit, t); unit += gridDim.x) {
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = 0.f;
    const int r_lo = t.m0 + row_in_tile, r_hi = r_lo + 8;
    // Rows past the group's end compute on TMA's zero fill; their scale reads are clamped in range.
    const int64_t rs_lo = min(r_lo, t.m_end - 1), rs_hi = min(r_hi, t.m_end - 1);

    // A K block's scales; loaded ahead of the barrier waits so their latency hides behind them.
    struct Scales {
      float lo = 1.f, hi = 1.f, b = 1.f;  // a_scale of rows r_lo / r_hi, FP8's block b_scale
      float lo32[4], hi32[4];             // MXFP8 activations: per k32
    };
    auto load_scales = [&](int kb, Scales& sc) {
      if constexpr (F == GemmFormat::kFP8Block || (F == GemmFormat::kW4A8MXFP4 && !kMXFP8A)) {
        sc.lo = load_scale(args.a_scales, rs_lo * args.as_s0 + kb * args.as_s1, args.a_scale_f32);
        sc.hi = load_scale(args.a_scales, rs_hi * args.as_s0 + kb * args.as_s1, args.a_scale_f32);
      }
      if constexpr (F == GemmFormat::kFP8Block)
        sc.b = load_scale(args.b_scales, (t.b_row0 / 128) * args.bs_s0 + kb * args.bs_s1, args.b_scale_f32);
      if constexpr (kMXFP8A) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          sc.lo32[j] = load_scale(args.a_scales, rs_lo * args.as_s0 + (kb * 4 + j) * args.as_s1, false);
          sc.hi32[j] = load_scale(args.a_scales, rs_hi * args.as_s0 + (kb * 4 + j) * args.as_s1, false);
        }
      }
    };
    // acc += tmp * a_scale[row] * b_scale[col] with b_scale per column from shared memory.
    auto promote_cols = [&](const float* sb_row, float s_lo, float s_hi) {
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int col = j * 8 + (lane % 4) * 2;
        const float2 sbc = *reinterpret_cast<const float2*>(sb_row + col);
        acc[4 * j + 0] += tmp[4 * j + 0] * (s_lo * sbc.x);
        acc[4 * j + 1] += tmp[4 * j + 1] * (s_lo * sbc.y);
        acc[4 * j + 2] += tmp[4 * j + 2] * (s_hi * sbc.x);
        acc[4 * j + 3] += tmp[4 * j + 3] * (s_hi * sbc.y);
      }
    };

    // Scales ride a register ring several K blocks ahead of use (one for MXFP8 activations, whose
    // eight values a block would not fit many times): a global load's latency under full TMA
    // traffic exceeds a K block's tensor-core time, so loading at the point of use stalls every
    // block. The shifts below are register moves (the ring is indexed statically).
    constexpr int kAhead = kMXFP8A ? 1 : 4;
    Scales sq[kAhead + 1];
#pragma unroll
    for (int i = 0; i <= kAhead; ++i)
      if (t.kb0 + i < t.kb1) load_scales(t.kb0 + i, sq[i]);
    auto next_scales = [&](int kb) -> Scales {
      const Scales cur = sq[0];
#pragma unroll
      for (int i = 0; i < kAhead; ++i) sq[i] = sq[i + 1];
      if (kb + kAhead + 1 < t.kb1) load_scales(kb + kAhead + 1, sq[kAhead]);
      return cur;
    };

    if constexpr (!T::kConvertB) {
      // FP8: B feeds wgmma straight from the TMA stage.
      for (int kb = t.kb0; kb < t.kb1; ++kb) {
        const Scales sc = next_scales(kb);
        ptx::mbar_wait(&full[stage], phase);
        const uint32_t a_addr = ptx::smem_addr(s_a + stage * T::kABytes + cw * 64 * 128);
        const uint32_t b_addr = ptx::smem_addr(s_b + stage * T::kBBytes);
        ptx::wgmma_fence();
#pragma unroll
        for (int k = 0; k < 4; ++k)
          ptx::wgmma_m64n128k32_e4m3(tmp, ptx::wgmma_desc_sw128(a_addr + k * 32),
                                     ptx::wgmma_desc_sw128(b_addr + k * 32), k > 0);
        ptx::wgmma_commit();
        ptx::wgmma_wait<0>();
        ptx::fence_accumulators(tmp);
        if (lane == 0) ptx::mbar_arrive(&empty[stage]);
        if (++stage == S) stage = 0, phase ^= 1;
        const float s_lo = sc.lo * sc.b, s_hi = sc.hi * sc.b;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          acc[4 * j + 0] += tmp[4 * j + 0] * s_lo;
          acc[4 * j + 1] += tmp[4 * j + 1] * s_lo;
          acc[4 * j + 2] += tmp[4 * j + 2] * s_hi;
          acc[4 * j + 3] += tmp[4 * j + 3] * s_hi;
        }
      }
    } else {
      // FP4 B: the consumers expand stage kb+1 into the other buffer while the wgmmas of stage kb
      // run, so the expansion overlaps the tensor cores. One named barrier an iteration both
      // publishes the expanded tile and proves every warpgroup is done with the older buffer.
      using ES = ExpandScales<F, T::kConsumerThreads>;
      auto expand = [&](int stg, int bf, const ES& es) {
        uint8_t* dst = s_bconv + bf * T::kBConvBytes;
        const uint8_t* src = s_b + stg * T::kBBytes;
        if constexpr (T::kBF16) expand_w4a16<F, T::kConsumerThreads>(src, dst, es, ctid);
        else expand_w4a8<kMXFP8A, T::kConsumerThreads>(src, dst, s_scale_rows + bf * T::kScaleRowFloats, es, ctid);
        ptx::fence_proxy_async_smem();  // the expanded tile is read by wgmma (async proxy)
      };
      // The expansions' B scales, a ring like the scales': es[i] holds K block kb + 1 + i once the
      // iteration for kb has shifted it.
      constexpr int kEAhead = 3;
      ES es[kEAhead + 1];
#pragma unroll
      for (int i = 0; i <= kEAhead; ++i)
        if (t.kb0 + i < t.kb1) es[i].load(args, t.b_row0, t.kb0 + i, ctid);
      ptx::mbar_wait(&full[stage], phase);
      expand(stage, buf, es[0]);
      ptx::named_barrier_sync(1, T::kConsumerThreads);
      for (int kb = t.kb0; kb < t.kb1; ++kb) {
        const Scales sc = next_scales(kb);
#pragma unroll
        for (int i = 0; i < kEAhead; ++i) es[i] = es[i + 1];  // es[0]: K block kb+1
        if (kb + kEAhead + 1 < t.kb1) es[kEAhead].load(args, t.b_row0, kb + kEAhead + 1, ctid);
        const uint32_t a_addr = ptx::smem_addr(s_a + stage * T::kABytes + cw * 64 * 128);
        const uint32_t b_addr = ptx::smem_addr(s_bconv + buf * T::kBConvBytes);
        const float* scale_rows = s_scale_rows + buf * T::kScaleRowFloats;
        ptx::wgmma_fence();
        if constexpr (T::kBF16) {
#pragma unroll
          for (int k = 0; k < 8; ++k) {
            const uint32_t off = (k & 3) * 32;  // K slice inside a 64-element swizzle atom
            ptx::wgmma_m64n128k16_bf16(acc, ptx::wgmma_desc_sw128(a_addr + (k >> 2) * BM * 128 + off),
                                       ptx::wgmma_desc_sw128(b_addr + (k >> 2) * kBN * 128 + off), 1);
          }
        } else if constexpr (kMXFP8A) {
          ptx::wgmma_m64n128k32_e4m3(tmp, ptx::wgmma_desc_sw128(a_addr), ptx::wgmma_desc_sw128(b_addr), 0);
        } else {
#pragma unroll
          for (int k = 0; k < 4; ++k)
            ptx::wgmma_m64n128k32_e4m3(tmp, ptx::wgmma_desc_sw128(a_addr + k * 32),
                                       ptx::wgmma_desc_sw128(b_addr + k * 32), k > 0);
        }
        ptx::wgmma_commit();

        const int next_stage = stage + 1 == S ? 0 : stage + 1;
        const uint32_t next_phase = stage + 1 == S ? phase ^ 1 : phase;
        if (kb + 1 < t.kb1) {
          ptx::mbar_wait(&full[next_stage], next_phase);
          expand(next_stage, buf ^ 1, es[0]);
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
            const float* sbr = scale_rows + k * kBN;
#pragma unroll
            for (int j = 0; j < 16; ++j) {
              const int col = j * 8 + (lane % 4) * 2;
              const float2 sbc = *reinterpret_cast<const float2*>(sbr + col);
              acc[4 * j + 0] += tmp[4 * j + 0] * (sc.lo32[k] * sbc.x);
              acc[4 * j + 1] += tmp[4 * j + 1] * (sc.lo32[k] * sbc.y);
              acc[4 * j + 2] += tmp[4 * j + 2] * (sc.hi32[k] * sbc.x);
              acc[4 * j + 3] += tmp[4 * j + 3] * (sc.hi32[k] * sbc.y);
            }
            if (k < 3) {
              ptx::wgmma_fence();
              ptx::wgmma_m64n128k32_e4m3(tmp, ptx::wgmma_desc_sw128(a_addr + (k + 1) * 32),
                                         ptx::wgmma_desc_sw128(b_addr + (k + 1) * 32), 0);
              ptx::wgmma_commit();
            }
          }
        } else {
          ptx::wgmma_wait<0>();
          ptx::fence_accumulators(tmp);
          promote_cols(scale_rows, sc.lo, sc.hi);
        }
        // Stage kb's A was read by this warp's wgmmas (done), its packed B by the expansion before
        // the previous barrier.
        if (lane == 0) ptx::mbar_arrive(&empty[stage]);
        stage = next_stage, phase = next_phase;
        buf ^= 1;
        ptx::named_barrier_sync(1, T::kConsumerThreads);
      }
    }

    // Epilogue straight from the accumulators.
#pragma unroll
    for (int j = 0; j < 16; ++j) {
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
