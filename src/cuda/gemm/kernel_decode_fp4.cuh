// The FP4-weight decode GEMM for sm_90a (M <= 16; W4A16 MXFP4/NVFP4 and W4A8 MXFP4):
// D[M, N] = A[M, K] x B[N, K]^T computed as D^T = B A^T, so the weights are the 64-row side of the
// tensor-core instruction and the <= 16 tokens its n16 side (no zero rows, no expanded tile in
// shared memory; docs/notes/gemm.md, "Design for the FP4-weight decode kernel").
//
// Per CTA (one a SM, persistent over units; config.h, choose_decode_fp4_config):
//  - warp 0 of the producer warpgroup streams each stage of two 128-K blocks by TMA: per block the
//    16-token activation tile (128B swizzle, rows past M zero-filled), and the packed weights of
//    the unit's 64 * WR rows for both blocks as one box (128 bytes a row, 128B swizzle), into a
//    ring of stages (config.h, kDecodeFp4Blocks: fewer, larger transactions a weight byte);
//  - warps 1-3 ("loaders") take the stages in turn and write their scales next to the tiles,
//    converted once: W4A16 block scales as bf16x2, W4A8's B exponents and token scales as f32;
//  - the loader warp of a stage also permutes its activation tile's K order in place (see
//    `permute`), so that each consumer thread's weight codes are whole words;
//  - WR x WK consumer warpgroups: warpgroup (r, j) owns rows [64r, 64r + 64) of the unit and the
//    unit's K blocks j, j + WK, ... Each thread loads its words of its two weight rows (thread
//    (g = lane / 4, c = lane % 4) of warp w holds rows 16w + g and 16w + g + 8), decodes them
//    straight into the wgmma A fragments (subnormal e2m1 decode, see e2m1x8_to_bf16_sub) and
//    issues wgmma with A from registers. Conversion of the next half/stage runs while the
//    wgmmas of the previous one are in flight (two fragment sets).
//
// Numerics (the same products as kernel.cuh's paths):
//  - W4A16: e2m1 x block scale in bf16 (exact), bf16 wgmma accumulating in f32. NVFP4 folds
//    the decode's 2^-126 into its scale (scaled by 2^-kDecodeBf16Fold, undone with the global
//    scale on the f32 result); MXFP4 multiplies by 2^126 first, so every ue8m0 scale stays exact.
//  - W4A8: e2m1 as exact e4m3 times 2^-6 (2^6 in the epilogue), one k32 wgmma a 32-element
//    sub-block into its own f32 scratch tile, promoted with B's ue8m0 scale of that sub-block times the token's scale
//    (1x128: once a 128-block; MXFP8: its per-32 scale). Exact wherever the old path was, and for
//    every scale span.
//  - K lanes are summed through shared memory in lane order, splits by splitk_reduce_kernel.
#pragma once
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/ptx_tma.cuh"
#include "cuda/common/ptx_wgmma.cuh"
#include "cuda/gemm/config.h"
#include "cuda/gemm/kernel.cuh"
#include "dsv4/numerics.h"

namespace dsv4::cuda::gemm_detail {

struct DecodeArgs {
  int M = 0, N = 0, K = 0;
  int row_units = 0;  // N / (64 * WR)
  int splits = 1, kblocks_per_split = 1, kblocks = 0;
  const uint8_t* a_scales = nullptr;  // W4A8: [M, K/128] ue8m0|f32, or [M, K/32] ue8m0 (MXFP8)
  int64_t as_s0 = 0, as_s1 = 0;
  bool a_scale_f32 = false;
  const uint8_t* b_scales = nullptr;  // MXFP4: [N, K/32] ue8m0; NVFP4: [N, K/16] e4m3
  int64_t bs_s0 = 0, bs_s1 = 0;
  bool b_vec = false;  // unit column stride and rows aligned: a row's scales of a stage in one load
  const float* b_global = nullptr;  // NVFP4
  const __nv_bfloat16* bias = nullptr;
  const __nv_bfloat16* residual = nullptr;
  int64_t res_ld = 0;
  __nv_bfloat16* d = nullptr;
  int64_t d_ld = 0;
  float* partial = nullptr;  // [splits, M, N] f32 when splits > 1
  bool skip_permute = false;  // timing experiments only (wrong results): launch_decode_fp4.cuh
  bool skip_compute = false;  // timing experiments only: consumers only wait and release stages
  int ring = 0;               // timing experiments only: ring slots used (0: all)
  bool skip_scales = false;   // timing experiments only (wrong results): loaders load no scales
  bool no_wait = false;       // timing experiments only (wrong results): consumers alone, no data
};

// The consumers' e2m1 decode places a code's three magnitude bits (e1 e0 m) at the low exponent
// bits and the top mantissa bit of the target format and its sign at the sign bit: every code
// then reads as exactly 2^-126 (bf16) or 2^-6 (e4m3) times its value, the codes with e = 0 (0 and
// 0.5) as subnormals. The factor is folded into the block scale (W4A16) or the epilogue (W4A8).
//
// Eight e2m1 codes (a word, code i in bits 4i..4i+3) to four bf16x2 of 2^-126 x value: o[i] holds
// codes i (low half) and i + 4 (high half). Masking two codes 16 bits apart and multiplying by
// 2^a + 2^b writes two disjoint copies of each (no carries): the first copy puts the magnitude at
// bits 6..8, the second the sign at bit 15; the final mask keeps those.
__device__ __forceinline__ void e2m1x8_to_bf16_sub(uint32_t x, uint32_t (&o)[4]) {
  const uint32_t y = x >> 8;
  o[0] = ((x & 0x000F000Fu) * 0x1040u) & 0x81C081C0u;
  o[1] = ((x & 0x00F000F0u) * 0x0104u) & 0x81C081C0u;
  o[2] = ((y & 0x000F000Fu) * 0x1040u) & 0x81C081C0u;
  o[3] = ((y & 0x00F000F0u) * 0x0104u) & 0x81C081C0u;
}
// Eight e2m1 codes to two e4m3x4 words of 2^-6 x value: lo byte q = code 2q (the byte's low
// nibble), hi byte q = code 2q + 1 (the high nibble, whose sign is at bit 7 already).
__device__ __forceinline__ void e2m1x8_to_e4m3_sub(uint32_t x, uint32_t& lo, uint32_t& hi) {
  lo = ((x << 2) & 0x1C1C1C1Cu) | ((x << 4) & 0x80808080u);
  hi = ((x >> 2) & 0x1C1C1C1Cu) | (x & 0x80808080u);
}
// W4A16 NVFP4: the loader warps store each block scale times 2^(126 - kDecodeBf16Fold) in bf16, so
// one bf16 multiply turns a decoded code into value x scale x 2^-kDecodeBf16Fold (exact: e4m3 scales
// span 2^-9 .. 448); the epilogue multiplies by 2^kDecodeBf16Fold. MXFP4 cannot fold: its scales
// span 2^-127 .. 2^127 and a folded scale of 2^(s - 1 - fold) leaves bf16's range at one end or
// the other (fold 32 lost every scale above 2^33 to inf and below 2^-100 to zero). So MXFP4 codes
// go through value = code x 2^126 (exact, the subnormal codes included) and then x 2^(s - 127),
// the same single rounding-free product as the reference: one more multiply a register.
inline constexpr int kDecodeBf16Fold = 32;
inline constexpr uint32_t kBf16x2Pow126 = 0x7E807E80u;  // 2^126 in both halves

template <GemmFormat F, bool kMXFP8A, int WR, int WK>
struct DecodeTraits {
  static constexpr bool kBF16 = is_w4a16(F);
  static constexpr bool kNV = F == GemmFormat::kW4A16NVFP4;
  static constexpr int kConsumerWGs = WR * WK;
  static constexpr int kThreads = 128 * (1 + kConsumerWGs);
  static constexpr int kRows = 64 * WR;
  static constexpr int kB = kDecodeFp4Blocks;  // 128-K blocks a stage
  static constexpr int kActBlockBytes = decode_fp4_act_block_bytes(F);
  static constexpr int kActBytes = decode_fp4_act_bytes(F);
  static constexpr int kWBytes = decode_fp4_w_bytes(WR);
  static constexpr int kScaleRowBytes = decode_fp4_scale_row_bytes(F);
  static constexpr int kBlockSideBytes = decode_fp4_block_side_bytes(F, kMXFP8A, WR);
  static constexpr int kSideBytes = decode_fp4_side_bytes(F, kMXFP8A, WR);
  static constexpr int kStages = decode_fp4_stages(F, kMXFP8A, WR, WK);
  static constexpr int kRedBytes = decode_fp4_red_bytes(WR, WK);
  static constexpr int kSmemBytes = decode_fp4_smem_bytes(F, kMXFP8A, WR, WK);
  static constexpr int kLaunchRegs = (65536 / kThreads) / 8 * 8 > 232 ? 232 : (65536 / kThreads) / 8 * 8;
  // The producer warpgroup (TMA issuer + loader warps with their register ring and the activation
  // permutation) keeps 72, 96 with two 64-row slices (twice the scale rows a lane); the consumers
  // take what it frees (144 with three consumer warpgroups, 96 with four, 200 for WR = 2).
  static constexpr int kProducerRegs = WR == 2 ? 96 : 72;
  static constexpr int kConsumerRegsFree = ((128 + 128 * kConsumerWGs) * kLaunchRegs - 128 * kProducerRegs) /
                                           (128 * kConsumerWGs) / 8 * 8;
  static constexpr int kConsumerRegs = kConsumerRegsFree > 232 ? 232 : kConsumerRegsFree;
  static constexpr int kLoaderWarps = 3;
  // Stages (of kB blocks each) of scale loads in flight a loader warp: two, one for the formats with
  // twice the scale words (NVFP4 B, MXFP8 A), which spill in 72 registers next to the permutation.
  static constexpr int kLoaderDepth = kNV || kMXFP8A ? 1 : 2;
  static_assert(WR == 1 || WR == 2, "one or two 64-row slices a CTA");
  static_assert(WK >= 1 && WK <= 4, "at most four K lanes");
  static_assert(!kMXFP8A || F == GemmFormat::kW4A8MXFP4, "MXFP8 activations are W4A8's");
  static_assert(kActBytes % 1024 == 0 && kActBlockBytes % 1024 == 0 && kWBytes % 1024 == 0,
                "activation and weight stages keep the 1024-byte swizzle alignment");
  static_assert(kB == 2 && kRows * kB * (kBK / 2) == kWBytes, "a weight row of a stage is one 128-byte swizzle row");
  static_assert(kSideBytes % 16 == 0 && kRedBytes % 16 == 0, "16-byte aligned side data");
  static_assert(kStages >= 4, "pipeline depth");
  static_assert(1024 + 24 * kStages + 16 * WR <= kDecodeFp4Reserved, "reserved smem too small");
  static_assert(kSmemBytes <= kSmemLimit, "shared memory");
  static_assert(kProducerRegs <= kLaunchRegs && kConsumerRegs >= kLaunchRegs, "setmaxnreg directions");
  static_assert(128 * (kLaunchRegs - kProducerRegs) >= 128 * kConsumerWGs * (kConsumerRegs - kLaunchRegs),
                "setmaxnreg.inc would wait forever");
};

// The stage sequence every role walks in the same order: units blockIdx.x, += gridDim.x; each
// unit's K blocks [kb0, kb1).
struct DecodeUnit {
  int ru = 0, split = 0, kb0 = 0, kb1 = 0;
};
__device__ __forceinline__ DecodeUnit decode_unit(const DecodeArgs& a, int unit) {
  DecodeUnit u;
  u.ru = unit / a.splits;
  u.split = unit - u.ru * a.splits;
  u.kb0 = u.split * a.kblocks_per_split;
  u.kb1 = min(u.kb0 + a.kblocks_per_split, a.kblocks);
  return u;
}

template <GemmFormat F, bool kMXFP8A, int WR, int WK>
__global__ void __launch_bounds__(DecodeTraits<F, kMXFP8A, WR, WK>::kThreads, 1)
    gemm_decode_fp4_kernel(const __grid_constant__ CUtensorMap tm_act, const __grid_constant__ CUtensorMap tm_w,
                           const DecodeArgs args) {
  using T = DecodeTraits<F, kMXFP8A, WR, WK>;
#ifdef DSV4_GEMM_TIMING_KNOBS
  const int S = args.ring > 0 && args.ring < T::kStages ? args.ring : T::kStages;
#else
  constexpr int S = T::kStages;
#endif
  constexpr int SL = T::kStages;  // the layout's ring
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (ptx::smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* s_act = smem;                        // SL x kActBytes, 1024-aligned (128B swizzle)
  uint8_t* s_w = s_act + SL * T::kActBytes;     // SL x kWBytes
  uint8_t* s_side = s_w + SL * T::kWBytes;      // SL x kSideBytes
  float* s_red = reinterpret_cast<float*>(s_side + SL * T::kSideBytes);
  uint64_t* full = reinterpret_cast<uint64_t*>(reinterpret_cast<uint8_t*>(s_red) + T::kRedBytes);
  uint64_t* empty = full + SL;
  // K-lane reduction hand-off of slice r (WK > 1): red_full when lanes 1..WK-1 stored their sums,
  // red_free when lane 0 has read them. mbarriers rather than named barriers: compute-sanitizer's
  // racecheck models mbarrier arrive/wait but not barriers of part of the CTA (it flagged the
  // named-barrier version; scripts/racecheck-named-barrier.cu shows the same on a race-free kernel).
  uint64_t* red_full = empty + SL;
  uint64_t* red_free = red_full + WR;
  // tma_full[s]: the stage's TMA bytes landed (the loader warp of the stage waits for it, permutes
  // the activations in place and then arrives on full[s], which the consumers wait for).
  uint64_t* tma_full = red_free + WR;

  const int wg = threadIdx.x / 128;
  const int tid_wg = threadIdx.x % 128;
  const int warp = tid_wg / 32, lane = tid_wg % 32;
  const int units = args.row_units * args.splits;
  // The split-K reduction (a programmatic dependent) may launch early; it waits for this grid.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      ptx::mbar_init(&full[s], 32);           // the loader warp's lanes
      ptx::mbar_init(&tma_full[s], 1);        // TMA issuer (+ transaction bytes)
      ptx::mbar_init(&empty[s], 128 * WR * T::kB);  // every thread of the K lane's warpgroups, a block
    }
    for (int r = 0; r < WR && WK > 1; ++r) {
      ptx::mbar_init(&red_full[r], 128 * (WK - 1));  // every thread of lanes 1..WK-1
      ptx::mbar_init(&red_free[r], 128);             // every thread of lane 0
    }
    ptx::fence_barrier_init();
  }
  __syncthreads();

  if (wg == 0) {
    ptx::setmaxnreg_dec<T::kProducerRegs>();
#ifdef DSV4_GEMM_TIMING_KNOBS
    if (args.no_wait) return;
#endif
    if (warp == 0) {
      if (lane != 0) return;
      ptx::tma_prefetch_desc(&tm_act);
      ptx::tma_prefetch_desc(&tm_w);
      int slot = 0;
      uint32_t phase = 0;
      for (int unit = blockIdx.x; unit < units; unit += gridDim.x) {
        const DecodeUnit u = decode_unit(args, unit);
        // A unit's odd last block still loads a whole stage: past K the boxes are zero-filled, inside
        // K (the next split's block) they are read and never used.
        for (int kb = u.kb0; kb < u.kb1; kb += T::kB) {
          ptx::mbar_wait(&empty[slot], phase ^ 1);
          ptx::mbar_arrive_expect_tx(&tma_full[slot], T::kActBytes + T::kWBytes);
          uint8_t* act = s_act + slot * T::kActBytes;
#pragma unroll
          for (int b = 0; b < T::kB; ++b) {
            uint8_t* ab = act + b * T::kActBlockBytes;
            ptx::tma_load_2d(ab, &tm_act, &tma_full[slot], (kb + b) * kBK, 0);
            if constexpr (T::kBF16) ptx::tma_load_2d(ab + 16 * 128, &tm_act, &tma_full[slot], (kb + b) * kBK + 64, 0);
          }
          ptx::tma_load_2d(s_w + slot * T::kWBytes, &tm_w, &tma_full[slot], kb * (kBK / 2), u.ru * T::kRows);
          if (++slot == S) slot = 0, phase ^= 1;
        }
      }
      return;
    }
    // Loader warps: stage it goes to warp it % 3; each keeps kLoaderDepth stages of loads in flight
    // and issues a stage's loads before waiting for the stage to be free.
    const int lw = warp - 1;
    constexpr int kD = T::kLoaderDepth;
    constexpr int kBRows = T::kRows / 32;           // weight rows a lane
    constexpr int kBWords = T::kNV ? 2 : 1;         // scale words a row a stage (4 or 8 bytes)
    constexpr bool kA = F == GemmFormat::kW4A8MXFP4;
    struct Regs {  // per block of the stage
      uint32_t b[T::kB][kBRows * kBWords];
      uint32_t a[T::kB];  // token `lane`'s scale bits (MXFP8: four ue8m0 bytes)
    };
    struct Pos {
      int it, unit, kb, kb1, ru;
      bool valid;
    };
    auto set_unit = [&](Pos& p) {
      p.valid = p.unit < units;
      if (!p.valid) return;
      const DecodeUnit u = decode_unit(args, p.unit);
      p.kb = u.kb0, p.kb1 = u.kb1, p.ru = u.ru;
    };
    auto step = [&](Pos& p) {
      ++p.it;
      p.kb += T::kB;
      if (p.kb < p.kb1) return;
      p.unit += gridDim.x;
      set_unit(p);
    };
    auto advance = [&](Pos& p, int n) {
      for (int i = 0; i < n && p.valid; ++i) step(p);
    };
    auto load = [&](const Pos& p, Regs& r) {
#pragma unroll
      for (int bb = 0; bb < T::kB; ++bb) {
        const int kb = p.kb + bb;
        r.a[bb] = 0;
#ifdef DSV4_GEMM_TIMING_KNOBS
        if (args.skip_scales) {
#pragma unroll
          for (int q = 0; q < kBRows * kBWords; ++q) r.b[bb][q] = 0x7F7F7F7Fu;
          r.a[bb] = 0x3F800000u;
          continue;
        }
#endif
        if (kb >= p.kb1) {  // the unit's odd last block: nothing to load (its results are never used)
#pragma unroll
          for (int q = 0; q < kBRows * kBWords; ++q) r.b[bb][q] = 0;
          continue;
        }
        constexpr int kPer = T::kNV ? 8 : 4;  // scale bytes a row a block
#pragma unroll
        for (int q = 0; q < kBRows; ++q) {
          const int64_t row = int64_t(p.ru) * T::kRows + lane + 32 * q;
          const uint8_t* sp = args.b_scales + row * args.bs_s0 + int64_t(kb) * kPer * args.bs_s1;
          if (args.b_vec) {
            if constexpr (T::kNV) {
              const uint2 v = __ldg(reinterpret_cast<const uint2*>(sp));
              r.b[bb][2 * q] = v.x, r.b[bb][2 * q + 1] = v.y;
            } else {
              r.b[bb][q] = __ldg(reinterpret_cast<const uint32_t*>(sp));
            }
          } else {
#pragma unroll
            for (int w = 0; w < kBWords; ++w) {
              uint32_t v = 0;
#pragma unroll
              for (int b = 0; b < 4; ++b) v |= uint32_t(__ldg(sp + (w * 4 + b) * args.bs_s1)) << (8 * b);
              r.b[bb][q * kBWords + w] = v;
            }
          }
        }
        if constexpr (kA) {
          if (lane < 16) {
            const int64_t t = min(lane, args.M - 1);  // tokens past M: any finite value (never stored)
            if constexpr (kMXFP8A) {
              const uint8_t* sp = args.a_scales + t * args.as_s0 + int64_t(kb) * 4 * args.as_s1;
              r.a[bb] = uint32_t(__ldg(sp)) | (uint32_t(__ldg(sp + args.as_s1)) << 8) |
                        (uint32_t(__ldg(sp + 2 * args.as_s1)) << 16) | (uint32_t(__ldg(sp + 3 * args.as_s1)) << 24);
            } else {
              r.a[bb] = load_scale_bits(args.a_scales, t * args.as_s0 + int64_t(kb) * args.as_s1, args.a_scale_f32);
            }
          }
        }
      }
    };
    // The activation K permutation (in place, 128B-swizzled rows: chunk j of token row t at 16-byte
    // position j ^ (t & 7)); logical K order = the order the consumers' fragments use:
    //  - bf16 (per 64-K box): logical chunk 4b + j' takes, for c = 0..3, the bf16 pair (o, o + 4) of
    //    natural chunk 2c + b, o = 2 (j' >> 1) + (j' & 1): lane (t, b) reads four chunks and writes
    //    four, the box's reads finished warp-wide before its writes;
    //  - e4m3 (per 32-K step s): logical chunk 2s takes the even bytes of natural chunks 2s, 2s + 1,
    //    chunk 2s + 1 the odd bytes (lane-local).
    auto permute = [&](int slot) {
      uint8_t* act = s_act + slot * T::kActBytes;
      const int t = lane & 15, b = lane >> 4;
      const uint32_t sw = t & 7;
      if constexpr (T::kBF16) {
#pragma unroll
        for (int h = 0; h < 2 * T::kB; ++h) {  // the stage's 64-K boxes
          uint8_t* rowp = act + h * 16 * 128 + t * 128;
          uint32_t in[4][4];
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const uint4 v = *reinterpret_cast<const uint4*>(rowp + ((uint32_t(2 * c + b) ^ sw) << 4));
            in[c][0] = v.x, in[c][1] = v.y, in[c][2] = v.z, in[c][3] = v.w;
          }
          __syncwarp();
#pragma unroll
          for (int jp = 0; jp < 4; ++jp) {
            const uint32_t sel = jp & 1 ? 0x7632u : 0x5410u;
            const int q = jp >> 1;
            *reinterpret_cast<uint4*>(rowp + ((uint32_t(4 * b + jp) ^ sw) << 4)) =
                make_uint4(__byte_perm(in[0][q], in[0][q + 2], sel), __byte_perm(in[1][q], in[1][q + 2], sel),
                           __byte_perm(in[2][q], in[2][q + 2], sel), __byte_perm(in[3][q], in[3][q + 2], sel));
          }
        }
      } else {
#pragma unroll
        for (int bb = 0; bb < T::kB; ++bb)
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          uint8_t* rowp = act + bb * T::kActBlockBytes + t * 128;
          const int s = 2 * b + q;
          uint4* p0 = reinterpret_cast<uint4*>(rowp + ((uint32_t(2 * s) ^ sw) << 4));
          uint4* p1 = reinterpret_cast<uint4*>(rowp + ((uint32_t(2 * s + 1) ^ sw) << 4));
          const uint4 i0 = *p0, i1 = *p1;
          *p0 = make_uint4(__byte_perm(i0.x, i0.y, 0x6420u), __byte_perm(i0.z, i0.w, 0x6420u),
                           __byte_perm(i1.x, i1.y, 0x6420u), __byte_perm(i1.z, i1.w, 0x6420u));
          *p1 = make_uint4(__byte_perm(i0.x, i0.y, 0x7531u), __byte_perm(i0.z, i0.w, 0x7531u),
                           __byte_perm(i1.x, i1.y, 0x7531u), __byte_perm(i1.z, i1.w, 0x7531u));
        }
      }
    };
    auto store = [&](int it, const Regs& r) {
      const int slot = it % S;
      // The TMA of this round was issued after the stage went free, so its landing implies both.
      ptx::mbar_wait(&tma_full[slot], (it / S) & 1);
      if (!args.skip_permute) permute(slot);
#pragma unroll
      for (int bb = 0; bb < T::kB; ++bb) {
        uint8_t* side = s_side + slot * T::kSideBytes + bb * T::kBlockSideBytes;
#pragma unroll
        for (int q = 0; q < kBRows; ++q) {
          uint8_t* dst = side + (lane + 32 * q) * T::kScaleRowBytes;
          if constexpr (T::kBF16) {
            uint32_t o[kBWords * 4];
#pragma unroll
            for (int e = 0; e < kBWords * 4; ++e) {
              if constexpr (T::kNV) {
                // e4m3 pairs by the hardware converter (exact through f16 and f32 into bf16; NaN
                // stays NaN), each scale then doubled into a bf16x2.
                if (e % 2 == 0) {
                  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(
                      static_cast<__nv_fp8x2_storage_t>((r.b[bb][q * kBWords + e / 4] >> (8 * (e % 4))) & 0xFFFF), __NV_E4M3);
                  const float2 f2 = __half22float2(*reinterpret_cast<const __half2*>(&h));
                  constexpr float kUp = float(1ull << 62) * float(1ull << (126 - kDecodeBf16Fold - 62));
                  const __nv_bfloat162 b2 = __floats2bfloat162_rn(f2.x * kUp, f2.y * kUp);
                  const uint32_t b2bits = *reinterpret_cast<const uint32_t*>(&b2);
                  o[e] = __byte_perm(b2bits, 0, 0x1010);
                  o[e + 1] = __byte_perm(b2bits, 0, 0x3232);
                }
              } else {
                // 2^(s - 127) as bf16 bits (the same exponent bias): NaN for 0xFF, the subnormal
                // 2^-127 for 0.
                const uint32_t sb = (r.b[bb][q * kBWords + e / 4] >> (8 * (e % 4))) & 0xFF;
                const uint32_t bits = sb == 0xFF ? 0x7FC0u : sb == 0 ? 0x0040u : sb << 7;
                o[e] = bits | (bits << 16);
              }
            }
#pragma unroll
            for (int w = 0; w < kBWords; ++w)
              reinterpret_cast<uint4*>(dst)[w] = make_uint4(o[4 * w], o[4 * w + 1], o[4 * w + 2], o[4 * w + 3]);
          } else {
            const uint32_t v = r.b[bb][q];
            *reinterpret_cast<float4*>(dst) =
                make_float4(num::ue8m0_to_float(v & 0xFF), num::ue8m0_to_float((v >> 8) & 0xFF),
                            num::ue8m0_to_float((v >> 16) & 0xFF), num::ue8m0_to_float(v >> 24));
          }
        }
        if constexpr (kA) {
          float* sa = reinterpret_cast<float*>(side + T::kRows * T::kScaleRowBytes);
          if (lane < 16) {
            if constexpr (kMXFP8A) {
              *reinterpret_cast<float4*>(sa + 4 * lane) =
                  make_float4(num::ue8m0_to_float(r.a[bb] & 0xFF), num::ue8m0_to_float((r.a[bb] >> 8) & 0xFF),
                              num::ue8m0_to_float((r.a[bb] >> 16) & 0xFF), num::ue8m0_to_float(r.a[bb] >> 24));
            } else {
              sa[lane] = scale_from_bits(r.a[bb], args.a_scale_f32);
            }
          }
        }
      }
      // The permuted activations are read by wgmma (the async proxy).
      ptx::fence_proxy_async_smem();
      ptx::mbar_arrive(&full[slot]);  // release: the stores above are visible to the waiters
    };
    Pos pos[kD];
    Regs regs[kD];
    Pos q;
    q.it = 0, q.unit = blockIdx.x;
    set_unit(q);
    advance(q, lw);
#pragma unroll
    for (int d = 0; d < kD; ++d) {
      pos[d] = q;
      if (q.valid) load(q, regs[d]);
      advance(q, T::kLoaderWarps);
    }
    // Stored and refilled a whole ring turn at a time, as kernel.cuh's loaders (one scoreboard for
    // all these loads: refilling slot d before storing slot d + 1 made that store wait for the
    // fresh load).
    for (;;) {
#pragma unroll
      for (int d = 0; d < kD; ++d) {
        if (!pos[d].valid) return;
        store(pos[d].it, regs[d]);
      }
#pragma unroll
      for (int d = 0; d < kD; ++d) {
        pos[d] = q;
        if (q.valid) load(q, regs[d]);
        advance(q, T::kLoaderWarps);
      }
    }
  }

  // Consumers: warpgroup (r, j) = rows [64r, 64r + 64) of the unit, K lane j.
  ptx::setmaxnreg_inc<T::kConsumerRegs>();
  const int cw = wg - 1;
  const int r = cw % WR, j = cw / WR;
  const int g = lane / 4, c = lane % 4;
  const int row0 = r * 64 + warp * 16 + g;  // this thread's rows in the unit: row0, row0 + 8
  // The epilogue's factor: NVFP4's global scale times its fold 2^kDecodeBf16Fold; 2^6 for W4A8's
  // e4m3 codes; 1 for MXFP4 (no fold).
  const float global = T::kNV ? __ldg(args.b_global) * float(1ull << kDecodeBf16Fold) : T::kBF16 ? 1.f : 64.f;
  const uint64_t desc_act0 = ptx::wgmma_desc_sw128(ptx::smem_addr(s_act));

  // A fragments of four wgmma K steps: W4A16 half a stage (k16 steps 4h..4h+3, activation box h),
  // W4A8 a whole stage (k32 steps 0..3). The K order inside a stage is the loader warps' permutation
  // (permute above), chosen so that a thread's codes come as whole words:
  //  - bf16, half h: thread c's 16 codes of a row are bytes 32h + 8c .. 32h + 8c + 7 (one 8-byte
  //    load; one MXFP4 sub-block / NVFP4 block, so one scale); word u's codes (i, i + 4) make the
  //    register of step 4h + 2u + (i >> 1), slots 2c + 8 (i & 1) + {0, 1};
  //  - e4m3, step s: thread c's 8 codes of a row are word 4s + c (32-K sub-block s stays one step,
  //    so the promotion by its scale is unchanged); low nibbles make slots 4c..4c+3, high nibbles
  //    slots 16 + 4c .. 16 + 4c + 3.
  struct Frag {
    uint32_t x[4][4];
  };
#ifdef DSV4_GEMM_TIMING_KNOBS
  // A stage of this K lane (the skip_compute knob's walk): ring slot and barrier parity.
  struct Stg {
    int slot;
    uint32_t phase;
  };
  auto next = [&](Stg st) {
    st.slot += WK;
    if (st.slot >= S) st.slot -= S, st.phase ^= 1;
    return st;
  };
#endif
  // A block of this K lane: ring slot and parity of its stage, the stage's index in the unit and
  // the block's in the stage. Blocks advance within a stage, then by WK stages.
  struct Blk {
    int slot;
    uint32_t phase;
    int p, b;
  };
  auto convert = [&](const Blk& bk, int half, Frag& f) {
    const int slot = bk.slot;
#ifdef DSV4_GEMM_TIMING_KNOBS
    if (bk.b == 0 && half == 0 && !args.no_wait) {
#else
    if (bk.b == 0 && half == 0) {
#endif
      ptx::mbar_wait(&full[slot], bk.phase);
      ptx::mbar_wait(&tma_full[slot], bk.phase);  // (complete already: the TMA bytes' visibility)
    }
    // Waits for the stage (its first block), loads this thread's words of its two weight rows and
    // their scales, and builds the fragments of half `half` (bf16) or the whole block (e4m3).
    // Weight row r of the stage: 128 bytes (block b at byte 64b), 16-byte chunk q stored at q ^ (r & 7)
    // (TMA's 128B swizzle; r & 7 = g for both of this thread's rows, so the 8 rows a warp reads
    // together hit distinct banks).
    const uint8_t* wbase = s_w + slot * T::kWBytes;
    const uint8_t* side = s_side + slot * T::kSideBytes + bk.b * T::kBlockSideBytes;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row0 + 8 * h;
      const uint8_t* wrowp = wbase + row * 128;
      if constexpr (T::kBF16) {
        const int chunk = 4 * bk.b + 2 * half + (c >> 1);
        const uint2 wv = *reinterpret_cast<const uint2*>(wrowp + ((chunk ^ g) << 4) + 8 * (c & 1));
        const uint32_t sc = *reinterpret_cast<const uint32_t*>(
            side + row * T::kScaleRowBytes + 4 * (T::kNV ? 4 * half + c : 2 * half + (c >> 1)));
        const __nv_bfloat162 s2 = *reinterpret_cast<const __nv_bfloat162*>(&sc);
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          uint32_t o[4];
          e2m1x8_to_bf16_sub(u ? wv.y : wv.x, o);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            uint32_t v = o[i];
            if constexpr (!T::kNV) {
              const uint32_t p126 = kBf16x2Pow126;
              v = bf16x2_mul(v, *reinterpret_cast<const __nv_bfloat162*>(&p126));
            }
            f.x[2 * u + (i >> 1)][2 * (i & 1) + h] = bf16x2_mul(v, s2);
          }
        }
      } else {
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          const uint32_t w = *reinterpret_cast<const uint32_t*>(wrowp + (((4 * bk.b + s) ^ g) << 4) + 4 * c);
          e2m1x8_to_e4m3_sub(w, f.x[s][h], f.x[s][2 + h]);
        }
      }
    }
  };

  float acc[8];
  [[maybe_unused]] float scr[4][8];  // W4A8: one f32 tile a 32-element sub-block
  if constexpr (!T::kBF16) {
#pragma unroll
    for (int s = 0; s < 4; ++s)
#pragma unroll
      for (int i = 0; i < 8; ++i) scr[s][i] = 0.f;
  }
  // The four descriptors of a call differ only in the start address (low word, 16-byte units,
  // never carrying out of its 14 bits): built before the fence, so no descriptor arithmetic sits
  // between the wgmmas of a group.
  const uint32_t desc_lo0 = static_cast<uint32_t>(desc_act0), desc_hi = static_cast<uint32_t>(desc_act0 >> 32);
  auto issue = [&](const Blk& bk, int half, Frag& f) {
    const uint32_t lo = desc_lo0 + ((uint32_t(bk.slot) * T::kActBytes + uint32_t(bk.b) * T::kActBlockBytes +
                                     (T::kBF16 ? half * 16 * 128 : 0)) >>
                                    4);
    uint64_t db[4];
#pragma unroll
    for (int s = 0; s < 4; ++s)
      asm("mov.b64 %0, {%1, %2};" : "=l"(db[s]) : "r"(lo + uint32_t(s * 32 / 16)), "r"(desc_hi));
    // Every fragment register is final before the group starts (else the compiler sinks the
    // conversion of later steps between the wgmmas, and ptxas serialises them: C7513).
#pragma unroll
    for (int s = 0; s < 4; ++s)
#pragma unroll
      for (int k = 0; k < 4; ++k) asm volatile("" : "+r"(f.x[s][k])::"memory");
#pragma unroll
    for (int s = 0; s < 4; ++s) asm volatile("" : "+l"(db[s])::"memory");
    ptx::wgmma_fence();
    if constexpr (T::kBF16) {
#pragma unroll
      for (int s = 0; s < 4; ++s) ptx::wgmma_m64n16k16_bf16_rs(acc, f.x[s], db[s], 1);
    } else {
#pragma unroll
      for (int s = 0; s < 4; ++s) ptx::wgmma_m64n16k32_e4m3_rs(scr[s], f.x[s], db[s], 0);
    }
    ptx::wgmma_commit();
  };
  // After wgmma_wait<0>: the block's wgmmas are done; W4A8 promotes its sub-block tiles. Each
  // thread arrives on the stage's `empty` once a block, and for the blocks a short last stage lacks
  // with its last one (an arrival count rather than a branch next to the wgmmas: C7518).
  auto retire = [&](const Blk& bk, uint32_t arrivals) {
    const int slot = bk.slot;
    if constexpr (!T::kBF16) {
#pragma unroll
      for (int s = 0; s < 4; ++s) ptx::fence_accumulators(scr[s]);
      const uint8_t* side = s_side + slot * T::kSideBytes + bk.b * T::kBlockSideBytes;
      const float4 b0 = *reinterpret_cast<const float4*>(side + row0 * 16);
      const float4 b1 = *reinterpret_cast<const float4*>(side + (row0 + 8) * 16);
      const float* sa = reinterpret_cast<const float*>(side + T::kRows * T::kScaleRowBytes);
      // Accumulator i: row row0 + 8 * ((i >> 1) & 1), token 8 * (i >> 2) + 2c + (i & 1).
      if constexpr (kMXFP8A) {
        float4 at[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) at[k] = *reinterpret_cast<const float4*>(sa + 4 * (8 * (k >> 1) + 2 * c + (k & 1)));
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const float4& b = (i >> 1) & 1 ? b1 : b0;
          const float4& a = at[2 * (i >> 2) + (i & 1)];
          float t = scr[0][i] * (b.x * a.x);
          t = fmaf(scr[1][i], b.y * a.y, t);
          t = fmaf(scr[2][i], b.z * a.z, t);
          t = fmaf(scr[3][i], b.w * a.w, t);
          acc[i] += t;
        }
      } else {
        const float2 a_lo = *reinterpret_cast<const float2*>(sa + 2 * c);
        const float2 a_hi = *reinterpret_cast<const float2*>(sa + 8 + 2 * c);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const float4& b = (i >> 1) & 1 ? b1 : b0;
          float t = scr[0][i] * b.x;
          t = fmaf(scr[1][i], b.y, t);
          t = fmaf(scr[2][i], b.z, t);
          t = fmaf(scr[3][i], b.w, t);
          const float a = i >> 2 ? (i & 1 ? a_hi.y : a_hi.x) : (i & 1 ? a_lo.y : a_lo.x);
          acc[i] = fmaf(t, a, acc[i]);
        }
      }
    }
    ptx::mbar_arrive_n(&empty[slot], arrivals);
  };

  int it_base = 0;  // stage index of the unit's first K block in the CTA's sequence
  uint32_t red_phase = 0;  // parity of this warpgroup's next K-lane hand-off
  for (int unit = blockIdx.x; unit < units; unit += gridDim.x) {
    const DecodeUnit u = decode_unit(args, unit);
    const int n = u.kb1 - u.kb0;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] = 0.f;
    ptx::fence_accumulators(acc);
    const int nst = (n + T::kB - 1) / T::kB;  // the unit's stages
    const int cst = nst > j ? (nst - j + WK - 1) / WK : 0;  // this K lane's stages: j, j + WK, ...
    // Its blocks: kB a stage, fewer in the unit's last stage when n is not a multiple of kB.
    const int cnt = cst * T::kB - (cst > 0 && (nst - 1 - j) % WK == 0 ? nst * T::kB - n : 0);
    auto blocks_in = [&](int p) { return min(T::kB, n - p * T::kB); };
    auto adv = [&](Blk x) {
      if (x.b + 1 < blocks_in(x.p)) {
        ++x.b;
        return x;
      }
      x.b = 0;
      x.p += WK;
      x.slot += WK;
      if (x.slot >= S) x.slot -= S, x.phase ^= 1;
      return x;
    };
    // Arrivals for block x: 1, plus the blocks its stage lacks when x is the stage's last.
    auto arrivals = [&](const Blk& x) {
      return uint32_t(1 + (x.b + 1 == blocks_in(x.p) ? T::kB - blocks_in(x.p) : 0));
    };
#ifdef DSV4_GEMM_TIMING_KNOBS
    if (args.skip_compute && cst > 0) {
      Stg st{(it_base + j) % S, uint32_t((it_base + j) / S) & 1};
      for (int q = 0; q < cst; ++q) {
        ptx::mbar_wait(&full[st.slot], st.phase);
        ptx::mbar_wait(&tma_full[st.slot], st.phase);
        ptx::mbar_arrive_n(&empty[st.slot], T::kB);
        st = next(st);
      }
    } else
#endif
    if (cnt > 0) {
      const int it0 = it_base + j;  // this K lane's first stage of the unit
      const Blk first{it0 % S, uint32_t(it0 / S) & 1, j, 0};
      Frag f0, f1;
      if constexpr (T::kBF16) {
        // Half-block groups H0(q), H1(q) of block q in the two fragment sets: each half converts
        // while the previous one's wgmmas run, then waits for them before it issues (ptxas
        // serialises every wgmma (C7513) when a group is issued from freshly written registers
        // while another is still in flight; two full-block sets need 64 registers and hit C7512
        // at 512 threads).
        Blk cur = first;
        convert(cur, 0, f0);
        issue(cur, 0, f0);
        int q = 0;
        for (; q + 1 < cnt; ++q) {
          const Blk nxt = adv(cur);
          convert(cur, 1, f1);
          ptx::wgmma_wait<0>();  // H0(q) done: f0 free
          issue(cur, 1, f1);
          convert(nxt, 0, f0);
          ptx::wgmma_wait<0>();  // H1(q) done: f1 free, block q read
          retire(cur, arrivals(cur));
          issue(nxt, 0, f0);
          cur = nxt;
        }
        convert(cur, 1, f1);
        ptx::wgmma_wait<0>();
        issue(cur, 1, f1);
        ptx::wgmma_wait<0>();
        retire(cur, arrivals(cur));
      } else {
        // Two fragment sets: block q + 1 converts while block q's wgmmas run. Fixed wait counts
        // in a two-block steady state, the odd block peeled.
        Blk prev = first;
        convert(prev, 0, f0);
        issue(prev, 0, f0);
        int q = 1;
        for (; q + 1 < cnt; q += 2) {
          const Blk a = adv(prev), b = adv(a);
          convert(a, 0, f1);
          ptx::wgmma_wait<0>();
          retire(prev, arrivals(prev));
          issue(a, 0, f1);
          convert(b, 0, f0);
          ptx::wgmma_wait<0>();
          retire(a, arrivals(a));
          issue(b, 0, f0);
          prev = b;
        }
        if (q < cnt) {
          const Blk a = adv(prev);
          convert(a, 0, f1);
          ptx::wgmma_wait<0>();
          retire(prev, arrivals(prev));
          issue(a, 0, f1);
          prev = a;
        }
        ptx::wgmma_wait<0>();
        retire(prev, arrivals(prev));
      }
    }
    ptx::fence_accumulators(acc);
    it_base += nst;

    // K lanes 1..WK-1 hand their sums to lane 0 through shared memory (summed in lane order).
    if constexpr (WK > 1) {
      float* red = s_red + r * (WK - 1) * 1024;
      const uint32_t par = red_phase;
      red_phase ^= 1;
      if (j > 0) {
        ptx::mbar_wait(&red_free[r], par ^ 1);  // lane 0 has read the previous unit's sums
        float4* dst = reinterpret_cast<float4*>(red + (j - 1) * 1024 + tid_wg * 8);
        dst[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
        dst[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
        ptx::mbar_arrive(&red_full[r]);
        continue;
      }
      ptx::mbar_wait(&red_full[r], par);
#pragma unroll
      for (int l = 1; l < WK; ++l) {
        const float4* src = reinterpret_cast<const float4*>(red + (l - 1) * 1024 + tid_wg * 8);
        const float4 p0 = src[0], p1 = src[1];
        acc[0] += p0.x, acc[1] += p0.y, acc[2] += p0.z, acc[3] += p0.w;
        acc[4] += p1.x, acc[5] += p1.y, acc[6] += p1.z, acc[7] += p1.w;
      }
      ptx::mbar_arrive(&red_free[r]);
    }

    // Epilogue (K lane 0): accumulator i is D[token][col] transposed.
    const int col_base = u.ru * T::kRows + row0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int t = 8 * (i >> 2) + 2 * c + (i & 1);
      if (t >= args.M) continue;
      const int col = col_base + 8 * ((i >> 1) & 1);
      float v = acc[i] * global;
      if (args.splits > 1) {
        args.partial[(int64_t(u.split) * args.M + t) * args.N + col] = v;
        continue;
      }
      if (args.bias) v += __bfloat162float(args.bias[col]);
      if (args.residual) v += __bfloat162float(args.residual[t * args.res_ld + col]);
      args.d[t * args.d_ld + col] = __float2bfloat16_rn(v);
    }
  }
}

}  // namespace dsv4::cuda::gemm_detail
