// The GEMM launch heuristic: a pure function from the problem to tile shape, pipeline depth and
// split-K. No CUDA includes, so the CPU tests check it directly (tests/cpu/gemm_config_test.cpp).
//
// Tiles are BM x BN output elements, BK = 128 K elements a pipeline stage (one scale block of the
// FP8 formats, four of MXFP4). BM is 64 (one consumer warpgroup, decode-sized M) or 128 (two
// consumer warpgroups). BN is 128, except FP8 decode (8 <= M <= 64, N / 32 <= SMs): 32-row weight
// tiles, so that N / 32 tiles cover the SMs in one round without split-K (no partials, no
// reduction kernel) and each CTA streams its weight rows with up to 16 stages in flight. Other
// small problems split K so that about one CTA runs per SM: at decode the GEMM is bound by weight
// bytes.
#pragma once
#include <algorithm>
#include <cstdint>

#include "dsv4/ops/gemm.h"

namespace dsv4::cuda::gemm_detail {

inline constexpr int kBN = 128;     // the usual tile width
inline constexpr int kBNDecode = 32;  // FP8 decode tile width
inline constexpr int kBK = 128;
inline constexpr int kMaxStages = 8;
inline constexpr int kMaxStagesDecode = 16;  // 32-row tiles: 4 KiB of weights a stage
inline constexpr int kMaxSplits = 16;
// Dynamic shared memory an sm_90 CTA may use, and what the kernel keeps beside the stages
// (mbarriers, 1 KiB alignment slack for the 128B-swizzled tiles, W4A8's converted-B scale rows).
inline constexpr int kSmemLimit = 232448;
inline constexpr int kSmemReserved = 6144;

// Bytes of one stage's A tile + B tile as TMA loads them.
constexpr int tma_stage_bytes(GemmFormat f, int bm, int bn = kBN) {
  switch (f) {
    case GemmFormat::kFP8Block: return bm * kBK + bn * kBK;            // e4m3 A, e4m3 B
    case GemmFormat::kW4A8MXFP4: return bm * kBK + kBN * kBK / 2;      // e4m3 A, packed e2m1 B
    case GemmFormat::kW4A16MXFP4:
    case GemmFormat::kW4A16NVFP4: return bm * kBK * 2 + kBN * kBK / 2;  // bf16 A, packed e2m1 B
  }
  return 0;
}
// Bytes of one stage's scales, which the producer's loader warps copy next to the tiles:
// A scales as f32 per row (W4A8 budgets MXFP8 activations' four per-32 scales a row), then B's
// scale bytes (FP8: one f32 in a 16-byte slot; MXFP4: four ue8m0 a row; NVFP4: eight e4m3 a row).
constexpr int scale_stage_bytes(GemmFormat f, int bm) {
  switch (f) {
    case GemmFormat::kFP8Block: return bm * 4 + 16;
    case GemmFormat::kW4A8MXFP4: return bm * 4 * 4 + kBN * 4;
    case GemmFormat::kW4A16MXFP4: return kBN * 4;
    case GemmFormat::kW4A16NVFP4: return kBN * 8;
  }
  return 0;
}
constexpr int stage_bytes(GemmFormat f, int bm, int bn = kBN) {
  return tma_stage_bytes(f, bm, bn) + scale_stage_bytes(f, bm);
}
// Shared memory for B expanded by the consumers (double-buffered): 0 when B feeds wgmma directly.
constexpr int converted_b_bytes(GemmFormat f) {
  switch (f) {
    case GemmFormat::kFP8Block: return 0;
    case GemmFormat::kW4A8MXFP4: return 2 * kBN * kBK;        // e4m3
    case GemmFormat::kW4A16MXFP4:
    case GemmFormat::kW4A16NVFP4: return 2 * kBN * kBK * 2;   // bf16
  }
  return 0;
}
// The bf16 output tile staged for its TMA store (so the consumers start the next tile's wgmmas
// while the store drains): BM rows x 128 columns. Decode tiles (BN = 32) store directly.
constexpr int epilogue_bytes(int bm, int bn = kBN) { return bn == kBN ? bm * kBN * 2 : 0; }
constexpr int max_stages(GemmFormat f, int bm, int bn = kBN) {
  const int cap = bn == kBN ? kMaxStages : kMaxStagesDecode;
  const int s = (kSmemLimit - kSmemReserved - converted_b_bytes(f) - epilogue_bytes(bm, bn)) / stage_bytes(f, bm, bn);
  return s < cap ? s : cap;
}
constexpr int smem_bytes(GemmFormat f, int bm, int stages, int bn = kBN) {
  return stages * stage_bytes(f, bm, bn) + converted_b_bytes(f) + epilogue_bytes(bm, bn) + kSmemReserved;
}

// BM = 64 (one consumer warpgroup) up to M = 64; FP8 keeps it up to M = 128, where two 64-row
// tiles sharing each B tile through L2 beat one 128-row tile (H100, 128x4096x7168, same-run A/B:
// 22.7/22.3 vs 24.3/23.9 us); with FP4 weights the doubled expansion makes BM = 64 slower there
// (W4A16 44.6 vs 36.5 us).
constexpr int bm_for(int64_t M, GemmFormat f) { return M <= 64 || (f == GemmFormat::kFP8Block && M <= 128) ? 64 : 128; }

// FP8 at decode sizes takes 32-row weight tiles (see the top of this file) when they make one round
// of CTAs: with more tiles than SMs each CTA walks several short tiles and its 2-deep wgmma
// pipeline restarts at every one (H100, 16x24576x1536: 26-27 us against 21 with split-K tiles of
// 128). M < 8 measured slower too (1x4096x7168: 21.4 vs 19.6 us).
constexpr int bn_for(int64_t M, int64_t N, GemmFormat f, int sm_count) {
  return f == GemmFormat::kFP8Block && M >= 8 && M <= 64 && N / kBNDecode <= sm_count ? kBNDecode : kBN;
}

struct GemmConfig {
  int bm = 128;          // 64 or 128
  int bn = kBN;          // 128, or 32 for FP8 decode
  int stages = 1;        // TMA pipeline depth
  int splits = 1;        // split-K factor (1: the kernel writes bf16 D directly)
  int kblocks_per_split = 1;
  int64_t tiles = 0;     // output tiles (M/BM x N/BN), times splits = work units
  int grid = 1;          // persistent CTAs
  int64_t workspace_bytes = 0;  // f32 partial sums [splits, M, N] when splits > 1
};

// M >= 1; N, K positive multiples of 128; sm_count >= 1. workspace_limit caps the split-K scratch
// (pass a huge value to ask for the ideal choice).
inline GemmConfig choose_gemm_config(int64_t M, int64_t N, int64_t K, GemmFormat f, int sm_count,
                                     int64_t workspace_limit) {
  GemmConfig c;
  sm_count = std::max(sm_count, 1);
  c.bm = bm_for(M, f);
  c.bn = bn_for(M, N, f, sm_count);
  c.stages = max_stages(f, c.bm, c.bn);
  const int64_t m_tiles = (M + c.bm - 1) / c.bm;
  c.tiles = m_tiles * (N / c.bn);
  const int kblocks = static_cast<int>(K / kBK);
  c.splits = 1;
  // Split only when the tiles leave more than a quarter of the SMs idle, keep at least 2 K blocks
  // (one 128-deep scale block each) per split so the pipeline fills, and never split big-M work:
  // there the f32 round trip would cost more than the idle SMs.
  if (c.tiles * 4 < static_cast<int64_t>(sm_count) * 3 && M <= 256 && kblocks >= 4) {
    // Floor, so tiles x splits fits one wave: a second, partial wave would cost a whole split.
    int want = static_cast<int>(sm_count / c.tiles);
    want = std::min({want, kMaxSplits, kblocks / 2});
    const int64_t per_split_bytes = M * N * 4;
    while (want > 1 && want * per_split_bytes > workspace_limit) --want;
    c.splits = std::max(want, 1);
  }
  c.kblocks_per_split = (kblocks + c.splits - 1) / c.splits;
  c.splits = (kblocks + c.kblocks_per_split - 1) / c.kblocks_per_split;  // no empty split
  c.workspace_bytes = c.splits > 1 ? static_cast<int64_t>(c.splits) * M * N * 4 : 0;
  const int64_t units = c.tiles * c.splits;
  c.grid = static_cast<int>(std::min<int64_t>(units, sm_count));
  return c;
}

}  // namespace dsv4::cuda::gemm_detail
