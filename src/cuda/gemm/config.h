// The GEMM launch heuristic: a pure function from the problem to tile shape, pipeline depth and
// split-K. No CUDA includes, so the CPU tests check it directly (tests/cpu/gemm_config_test.cpp).
//
// Tiles are BM x BN output elements, BK = 128 K elements a pipeline stage (one scale block of the
// FP8 formats, four of MXFP4). BM is 64 (one consumer warpgroup: decode-sized M, and FP8 at 129..256
// rows where 128-row tiles would split K, see bm_for) or 128 (two consumer warpgroups).
// BN is 128, except FP8 decode (8 <= M <= 128, BM = 64): 32- or 64-row
// weight tiles, the narrowest whose tiles cover the SMs in one round without split-K (no
// partials, no reduction kernel), each CTA streaming its weight rows with up to 16 stages in
// flight; and pre-expanded W4A16, 256 (see bn_for). Other
// small problems split K so that about one CTA runs per SM: at decode the GEMM is bound by weight
// bytes. Large problems with FP4 weights (M >= pre_expand_min_m: 257 for W4A8 and W4A16-NVFP4, 512
// for W4A16-MXFP4)
// expand B once into the caller's workspace (e4m3 with per-row scales, or bf16) and run the kernel
// on the expanded operand: the in-kernel expansion is repeated by each of the M / BM tiles that
// read a B tile.
#pragma once
#include <algorithm>
#include <cstdint>

#include "dsv4/ops/gemm.h"

namespace dsv4::cuda::gemm_detail {

inline constexpr int kBN = 128;     // the usual tile width
inline constexpr int kBNDecode = 32;  // FP8 decode tile width (64 where N / 32 tiles exceed the SMs)
inline constexpr int kBNWide = 256;   // pre-expanded W4A16 tile width (N % 256 == 0)
inline constexpr int kBK = 128;
inline constexpr int kMaxStages = 8;
inline constexpr int kMaxStagesDecode = 16;  // 32-row tiles: 4 KiB of weights a stage
inline constexpr int kMaxSplits = 16;
// Dynamic shared memory an sm_90 CTA may use.
inline constexpr int kSmemLimit = 232448;
// What the kernel keeps beside the stages: mbarriers and 1 KiB alignment slack for the 128B-swizzled
// tiles, plus in-kernel W4A8's converted-B scale rows (two buffers of 4 x 128 f32).
constexpr int reserved_bytes(GemmFormat f, bool pre = false) {
  return 2048 + (f == GemmFormat::kW4A8MXFP4 && !pre ? 4096 : 0);
}

constexpr bool is_w4a16(GemmFormat f) { return f == GemmFormat::kW4A16MXFP4 || f == GemmFormat::kW4A16NVFP4; }
// K elements a pipeline stage: 128 (one FP8 scale block), or 64 for the 128 x 256 bf16 tiles
// (4 stages of 48 KiB fit where 2 of 96 would).
constexpr int stage_k(GemmFormat f, int bn, bool pre) { return is_w4a16(f) && pre && bn == kBNWide ? 64 : kBK; }
// `pre`: B was expanded before the kernel (pre_expand_bytes below): W4A8's B is then e4m3 [N, K]
// with one f32 scale a row and 128-K block, W4A16's bf16 [N, K] with its scales applied.
// Bytes of one stage's A tile + B tile as TMA loads them.
constexpr int tma_stage_bytes(GemmFormat f, int bm, int bn = kBN, bool pre = false) {
  const int sk = stage_k(f, bn, pre);
  switch (f) {
    case GemmFormat::kFP8Block: return bm * kBK + bn * kBK;                         // e4m3 A, e4m3 B
    case GemmFormat::kW4A8MXFP4: return bm * kBK + (pre ? kBN * kBK : kBN * kBK / 2);  // e4m3 A, e4m3 or packed e2m1 B
    case GemmFormat::kW4A16MXFP4:
    case GemmFormat::kW4A16NVFP4: return bm * sk * 2 + (pre ? bn * sk * 2 : kBN * kBK / 2);  // bf16 A, bf16 or e2m1 B
  }
  return 0;
}
// Bytes of one stage's scales, which the producer's loader warps copy next to the tiles:
// A scales as f32 per row (W4A8 budgets MXFP8 activations' four per-32 scales a row), then B's
// scale bytes (FP8: one f32 in a 16-byte slot; MXFP4: four ue8m0 a row; NVFP4: eight e4m3 a row;
// pre-expanded W4A8: one f32 a row; pre-expanded W4A16: none).
constexpr int scale_stage_bytes(GemmFormat f, int bm, bool pre = false) {
  switch (f) {
    case GemmFormat::kFP8Block: return bm * 4 + 16;
    case GemmFormat::kW4A8MXFP4: return pre ? bm * 4 + kBN * 4 : bm * 4 * 4 + kBN * 4;
    case GemmFormat::kW4A16MXFP4: return pre ? 0 : kBN * 4;
    case GemmFormat::kW4A16NVFP4: return pre ? 0 : kBN * 8;
  }
  return 0;
}
constexpr int stage_bytes(GemmFormat f, int bm, int bn = kBN, bool pre = false) {
  return tma_stage_bytes(f, bm, bn, pre) + scale_stage_bytes(f, bm, pre);
}
// Shared memory for B expanded by the consumers (double-buffered): 0 when B feeds wgmma directly.
constexpr int converted_b_bytes(GemmFormat f, bool pre = false) {
  if (pre) return 0;
  switch (f) {
    case GemmFormat::kFP8Block: return 0;
    case GemmFormat::kW4A8MXFP4: return 2 * kBN * kBK;        // e4m3
    case GemmFormat::kW4A16MXFP4:
    case GemmFormat::kW4A16NVFP4: return 2 * kBN * kBK * 2;   // bf16
  }
  return 0;
}
// The bf16 output tile staged for its TMA store (so the consumers start the next tile's wgmmas
// while the store drains): BM rows x 128 columns (256-wide tiles go through it in two halves).
// Decode tiles (BN = 32) store directly.
constexpr int epilogue_bytes(int bm, int bn = kBN) { return bn >= kBN ? bm * kBN * 2 : 0; }
constexpr int max_stages(GemmFormat f, int bm, int bn = kBN, bool pre = false) {
  const int cap = bn < kBN ? kMaxStagesDecode : kMaxStages;
  const int s = (kSmemLimit - reserved_bytes(f, pre) - converted_b_bytes(f, pre) - epilogue_bytes(bm, bn)) /
                stage_bytes(f, bm, bn, pre);
  return s < cap ? s : cap;
}
constexpr int smem_bytes(GemmFormat f, int bm, int stages, int bn = kBN, bool pre = false) {
  return stages * stage_bytes(f, bm, bn, pre) + converted_b_bytes(f, pre) + epilogue_bytes(bm, bn) +
         reserved_bytes(f, pre);
}

// B expanded before the kernel, from this many rows of M a group. Each BM-row tile that reads a B
// tile expands it again in the kernel: at M = 4096 W4A8 spent ~60% of its time expanding (625 us
// against 228 for FP8 on the same shape, H100), while one expansion pass over a 4096 x 7168 weight
// costs about as much as three tiles' share.
// W4A8 from M = 257: past 256 rows K is no longer split, and its in-kernel expansion ran 85-104 us
// at 257..511 x 4096 x 7168 against 56-61 expanded once (H100, from graphs; 50-54 at M = 256 split-K
// in the kernel), so the time now grows smoothly through 256. W4A16's expanded B is bf16, twice the
// bytes: for MXFP4 the pass does not pay below 512 (511: 73 us in the kernel, 512: 76 expanded;
// 257..448: 69.7-74.3 in the kernel against 73.7-79.8 expanded), while NVFP4's in-kernel expansion
// (16-element blocks, e4m3 scales) is slower and the pass pays from 257 (H100, same binary, graphs,
// 257 / 320 / 384 / 448 x 4096 x 7168: 84.1-86.9 us in the kernel against 80.7 / 75.8-76.3 /
// 75.3-75.4 / 77.6 expanded; docs/notes/gemm.md round 14). Below 257 the in-kernel path with split-K
// wins for every format (W4A8 8-18%, W4A16 46-80% faster at 129..256).
inline constexpr int64_t kPreExpandMinM = 512;
inline constexpr int64_t kPreExpandMinMW4A8 = 257;
inline constexpr int64_t kPreExpandMinMNVFP4 = 257;
constexpr int64_t pre_expand_min_m(GemmFormat f) {
  return f == GemmFormat::kW4A8MXFP4 ? kPreExpandMinMW4A8 : f == GemmFormat::kW4A16NVFP4 ? kPreExpandMinMNVFP4 : kPreExpandMinM;
}
// min_m > 0 replaces pre_expand_min_m (same-binary A/Bs: DSV4_GEMM_PRE_EXPAND_MIN_M).
constexpr bool pre_expand_for(int64_t M, GemmFormat f, int64_t min_m = 0) {
  return f != GemmFormat::kFP8Block && M >= (min_m > 0 ? min_m : pre_expand_min_m(f));
}
// Workspace of the expanded B (b_rows x K). W4A16: bf16 elements. W4A8: e4m3 elements, then
// (each piece 256-aligned) f32 scales a row and 128-K block, f32 scales and their ue8m0 exponents a
// 128 x 128 block, one byte a CTA of the exponent-statistics pass (kStatsCtas: whether one of the
// blocks it saw spans too far), and one u32 flag, their OR, written by the expansion pass (every
// piece is assigned each call, so nothing needs zeroing first). The flag is 0 when every 128 x 128 block's exponents span at
// most 14 (and none is NaN): then the block's largest exponent folds exactly into the e4m3 values of
// all its rows and the kernel promotes once a block like FP8 (one FFMA an element); otherwise
// every row keeps its own exponent and the promotion scales each column (pre_expand_kernel).
inline constexpr int kStatsCtas = 256;  // CTAs of the W4A8 exponent-statistics pass at most
struct PreExpandLayout {
  int64_t row_scales = 0, block_scales = 0, block_exps = 0, cta_flags = 0, flag = 0, bytes = 0;
};
constexpr int64_t align256(int64_t x) { return (x + 255) / 256 * 256; }
constexpr PreExpandLayout pre_expand_layout(GemmFormat f, int64_t b_rows, int64_t K) {
  PreExpandLayout l;
  if (f == GemmFormat::kFP8Block) return l;
  if (f != GemmFormat::kW4A8MXFP4) {
    l.bytes = b_rows * K * 2;
    return l;
  }
  const int64_t kblocks = K / kBK, nblocks = (b_rows + kBK - 1) / kBK;
  l.row_scales = align256(b_rows * K);
  l.block_scales = l.row_scales + align256(b_rows * kblocks * 4);
  l.block_exps = l.block_scales + align256(nblocks * kblocks * 4);
  l.cta_flags = l.block_exps + align256(nblocks * kblocks);
  l.flag = l.cta_flags + align256(kStatsCtas);
  l.bytes = l.flag + 16;
  return l;
}
constexpr int64_t pre_expand_bytes(GemmFormat f, int64_t b_rows, int64_t K) { return pre_expand_layout(f, b_rows, K).bytes; }
inline constexpr int kFoldMaxSpan = 14;  // e2m1 * 2^(s - smax + 6) stays exact e4m3 while smax - s <= 14

// BM = 64 (one consumer warpgroup) up to M = 64; FP8 keeps it up to M = 128, where two 64-row
// tiles sharing each B tile through L2 beat one 128-row tile (H100, 128x4096x7168, same-run A/B:
// 22.7/22.3 vs 24.3/23.9 us); with FP4 weights the doubled expansion makes BM = 64 slower there
// (W4A16 44.6 vs 36.5 us).
// Whether `tiles` work units leave more than a quarter of the SMs idle: where split-K pays.
constexpr bool leaves_sms_idle(int64_t tiles, int64_t sm_count) { return tiles * 4 < sm_count * 3; }

// FP8 at 129..256 rows also takes BM = 64 (x 128-wide tiles, no split) where 128-row tiles would be
// too few and split K, and the 64-row tiles still make one round: each CTA then reads its A and B
// once, with no f32 partials and no reduction kernel. H100, same-run A/B from graphs (us, BM = 128
// split-K 2 -> BM = 64): 129 / 160 / 192 / 256 x 4096 x 7168 29.5 / 24.0-26.6 / 23.8-25.7 / 27.3-27.8
// -> 22.3-24.3 / 20.8-21.8 / 20.3-24.2 / 18.7-19.9; 129 x 24576 x 1536 (BM = 64 in 4.4 rounds instead
// of 2.9) 29.6-31.2 -> 26.0-28.4, but 192 and 256 x 24576 x 1536 and 129..256 x 7168 x 2048 (no
// split at BM = 128) 5-20% slower, hence the split condition (docs/notes/gemm.md, round 13).
// Grouped GEMMs (M is then a group's average) have tiles enough for every SM: not for them.
constexpr int bm_for(int64_t M, int64_t N, GemmFormat f, int sm_count, bool grouped = false) {
  if (M <= 64) return 64;
  if (f != GemmFormat::kFP8Block) return 128;
  if (M <= 128) return 64;
  if (M <= 256 && !grouped) {
    const int64_t tiles128 = (M + 127) / 128 * (N / kBN), tiles64 = (M + 63) / 64 * (N / kBN);
    if (leaves_sms_idle(tiles128, sm_count) && tiles64 <= sm_count) return 64;
  }
  return 128;
}

// FP8 at decode sizes takes 32-row weight tiles (see the top of this file) when they make one round
// of CTAs, else 64-row ones if those do: with more tiles than SMs each CTA walks several short
// tiles and its 2-deep wgmma pipeline restarts at every one (H100, 16x24576x1536: 26-27 us against
// 21 with split-K tiles of 128). M < 8 measured slower too (1x4096x7168: 21.4 vs 19.6 us). 64-row
// tiles (H100, same run): 16x7168x2048 12.2-12.8 us against 16.4-16.7 with split-K; 65 <= M <= 128
// (two 64-row A tiles): 128x4096x7168 18.1-19.7 against 22.4-23.3.
// Pre-expanded W4A16 (no promotion, so a 64 x 256 accumulator a warpgroup fits) takes 128 x 256
// tiles: at 128 x 128 its GEMM ran at ~570 TFLOP/s, taking in ~38 bytes a clock an SM, the same
// ceiling the FP8 kernel meets (docs/notes/gemm.md, round 4); 256 columns take a quarter fewer
// bytes a MAC (H100, 4096^2 x 7168: 363-378 us against 451-466). Only where they make fewer waves
// of tiles than 128 x 128 ones: at 512 x 4096 x 7168 their 64 tiles left half the SMs idle (115-118
// us against 85-87).
constexpr int bn_for(int64_t M, int64_t N, GemmFormat f, int sm_count, bool pre = false) {
  if (f == GemmFormat::kFP8Block && M >= 8 && M <= 128) {  // BM = 64: one or two M tiles
    const int64_t m_tiles = (M + 63) / 64;
    if (m_tiles * (N / kBNDecode) <= sm_count) return kBNDecode;
    if (m_tiles * (N / (2 * kBNDecode)) <= sm_count) return 2 * kBNDecode;  // e.g. N = 7168: 112 tiles of 64
  }
  if (is_w4a16(f) && pre && N % kBNWide == 0) {
    const int64_t m_tiles = (M + 127) / 128, sms = sm_count > 0 ? sm_count : 1;
    const int64_t waves_wide = (m_tiles * (N / kBNWide) + sms - 1) / sms, waves = (m_tiles * (N / kBN) + sms - 1) / sms;
    if (waves_wide < waves) return kBNWide;
  }
  return kBN;
}

struct GemmConfig {
  int bm = 128;          // 64 or 128
  int bn = kBN;          // 128, 32 for FP8 decode, 256 for pre-expanded W4A16
  int stage_k = kBK;     // K elements a stage (64 with bn = 256)
  int stages = 1;        // TMA pipeline depth
  int splits = 1;        // split-K factor (1: the kernel writes bf16 D directly)
  int kblocks_per_split = 1;
  int64_t tiles = 0;     // output tiles (M/BM x N/BN), times splits = work units
  int grid = 1;          // persistent CTAs
  bool pre_expand = false;  // B expanded into the workspace first (FP4 weights, large M)
  // f32 partial sums [splits, M, N] when splits > 1; the expanded B when pre_expand
  int64_t workspace_bytes = 0;
};

// M >= 1; N, K positive multiples of 128; sm_count >= 1. workspace_limit caps the split-K or
// expanded-B scratch (pass a huge value to ask for the ideal choice). b_rows: rows of B (all
// groups'), N when 0. With too small a workspace FP4 weights are expanded in the kernel.
// pre_min_m: pre_expand_for's override.
inline GemmConfig choose_gemm_config(int64_t M, int64_t N, int64_t K, GemmFormat f, int sm_count,
                                     int64_t workspace_limit, int64_t b_rows = 0, int64_t pre_min_m = 0) {
  GemmConfig c;
  sm_count = std::max(sm_count, 1);
  if (b_rows <= 0) b_rows = N;
  c.pre_expand = pre_expand_for(M, f, pre_min_m) && pre_expand_bytes(f, b_rows, K) <= workspace_limit;
  c.bm = bm_for(M, N, f, sm_count, b_rows > N);
  c.bn = bn_for(M, N, f, sm_count, c.pre_expand);
  c.stage_k = stage_k(f, c.bn, c.pre_expand);
  c.stages = max_stages(f, c.bm, c.bn, c.pre_expand);
  const int64_t m_tiles = (M + c.bm - 1) / c.bm;
  c.tiles = m_tiles * (N / c.bn);
  const int kblocks = static_cast<int>(K / c.stage_k);  // pipeline stages along K
  c.splits = 1;
  // Split only when the tiles leave more than a quarter of the SMs idle, keep at least 2 K blocks
  // (one 128-deep scale block each) per split so the pipeline fills, and never split big-M work:
  // there the f32 round trip would cost more than the idle SMs.
  // (The expanded B occupies the workspace: no split with it.)
  if (leaves_sms_idle(c.tiles, sm_count) && M <= 256 && kblocks >= 4 && !c.pre_expand) {
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
  if (c.pre_expand) c.workspace_bytes = pre_expand_bytes(f, b_rows, K);  // never split: M > 256
  const int64_t units = c.tiles * c.splits;
  c.grid = static_cast<int>(std::min<int64_t>(units, sm_count));
  return c;
}

// ---- The FP4-weight decode kernel (kernel_decode_fp4.cuh) ----
// Plain (ungrouped) GEMMs with FP4 weights and M <= 16 compute D^T = B A^T: 64 weight rows a
// consumer warpgroup are the register (RS) A operand of wgmma m64n16k16 (bf16) / m64n16k32 (e4m3),
// the <= 16 tokens the n16 B operand from shared memory. A CTA holds WR x WK consumer warpgroups:
// WR 64-row slices of B (one unit of 64 * WR rows), each slice's K blocks dealt round-robin to WK
// warpgroups and summed through shared memory at the end. Units x K splits make the grid; split-K
// partials go through the workspace and splitk_reduce_kernel like the other decode paths.
inline constexpr int kDecodeFp4MaxM = 16;
inline constexpr int kDecodeFp4MaxStages = 32;
constexpr bool decode_fp4_for(int64_t M, GemmFormat f, bool grouped) {
  return f != GemmFormat::kFP8Block && !grouped && M >= 1 && M <= kDecodeFp4MaxM;
}
// A stage holds kDecodeFp4Blocks 128-K blocks: per block the 16-token activation tile (TMA, 128B
// swizzle: bf16 two 64-K boxes, e4m3 one) and the scales the loader warps convert (per weight row:
// MXFP4 4 bf16x2 or W4A8 4 f32 = 16 bytes, NVFP4 8 bf16x2 = 32; W4A8 adds 16 token scales as f32,
// four each with MXFP8 activations); the packed weights of both blocks come as one box of
// 64 * WR rows x 128 bytes (128B swizzle). Two blocks a stage halve the TMA transactions and
// barrier round trips a weight byte: scripts/tma-rate.cu streams 16 x 4096 x 7168's FP4 weights
// with bf16 activations in 9.9 us as 64-byte rows a stage and 7.3 us as 128-byte rows (H100,
// from graphs, cold L2; docs/notes/gemm.md round 10).
inline constexpr int kDecodeFp4Blocks = 2;
constexpr int decode_fp4_act_block_bytes(GemmFormat f) { return is_w4a16(f) ? 16 * kBK * 2 : 16 * kBK; }
constexpr int decode_fp4_act_bytes(GemmFormat f) { return kDecodeFp4Blocks * decode_fp4_act_block_bytes(f); }
constexpr int decode_fp4_scale_row_bytes(GemmFormat f) { return f == GemmFormat::kW4A16NVFP4 ? 32 : 16; }
constexpr int decode_fp4_a_scale_bytes(GemmFormat f, bool mx_a) {
  return f == GemmFormat::kW4A8MXFP4 ? 16 * 4 * (mx_a ? 4 : 1) : 0;
}
constexpr int decode_fp4_block_side_bytes(GemmFormat f, bool mx_a, int wr) {
  return 64 * wr * decode_fp4_scale_row_bytes(f) + decode_fp4_a_scale_bytes(f, mx_a);
}
constexpr int decode_fp4_side_bytes(GemmFormat f, bool mx_a, int wr) {
  return kDecodeFp4Blocks * decode_fp4_block_side_bytes(f, mx_a, wr);
}
constexpr int decode_fp4_w_bytes(int wr) { return 64 * wr * kDecodeFp4Blocks * (kBK / 2); }
constexpr int decode_fp4_stage_bytes(GemmFormat f, bool mx_a, int wr) {
  return decode_fp4_act_bytes(f) + decode_fp4_w_bytes(wr) + decode_fp4_side_bytes(f, mx_a, wr);
}
// The K-lane warpgroups' partial sums (64 rows x 16 tokens f32 each), summed by K lane 0.
constexpr int decode_fp4_red_bytes(int wr, int wk) { return wr * (wk - 1) * 64 * 16 * 4; }
inline constexpr int kDecodeFp4Reserved = 2048;  // 1 KiB alignment slack + mbarriers
constexpr int decode_fp4_stages(GemmFormat f, bool mx_a, int wr, int wk) {
  const int s = (kSmemLimit - kDecodeFp4Reserved - decode_fp4_red_bytes(wr, wk)) / decode_fp4_stage_bytes(f, mx_a, wr);
  return s < kDecodeFp4MaxStages ? s : kDecodeFp4MaxStages;
}
constexpr int decode_fp4_smem_bytes(GemmFormat f, bool mx_a, int wr, int wk) {
  return decode_fp4_stages(f, mx_a, wr, wk) * decode_fp4_stage_bytes(f, mx_a, wr) + decode_fp4_red_bytes(wr, wk) +
         kDecodeFp4Reserved;
}
// Warpgroups a CTA: 3 K lanes for one 64-row slice, or two slices of one K lane (so a CTA keeps 8-12
// converting warps; the conversion, ~2 integer ops an element, is what the SM spends its time on).
// W4A16 also has a 4-lane instance (96 registers a thread; W4A8's full-stage fragments and
// sub-block tiles do not fit there), taken where a unit has more than 16 K blocks (H100, same-run
// A/B, three rounds: 16x4096x7168 21.6/21.6/21.6 against 23.5/22.1/23.5 us with 3 lanes; at 12-16
// K blocks a unit, 16x7168x2048 and 16x24576x1536, 4 lanes were no better). DSV4_DECODE_FP4_WK
// overrides it for A/Bs.
constexpr int decode_fp4_wk(int wr) { return wr == 1 ? 3 : 1; }
constexpr int decode_fp4_wk(int wr, GemmFormat f, int kblocks_per_split) {
  return wr == 1 && is_w4a16(f) && kblocks_per_split > 16 ? 4 : decode_fp4_wk(wr);
}
constexpr bool decode_fp4_wk_ok(GemmFormat f, int wr, int wk) {
  return wr == 2 ? wk == 1 : (wk == 3 || (wk == 4 && is_w4a16(f)));
}

struct DecodeFp4Config {
  int wr = 1, wk = 3;       // 64-row slices a CTA, K-lane warpgroups a slice
  int splits = 1, kblocks_per_split = 1;
  int64_t units = 0;        // (N / (64 * wr)) x splits
  int grid = 1;             // persistent CTAs
  int64_t workspace_bytes = 0;  // f32 partials [splits, M, N] when splits > 1
};
// N, K multiples of 128, 1 <= M <= 16. Time model: rounds of units x rows a unit x K blocks a split.
// One round of 64-row units without splitting when they cover 3/4 of the SMs (16 x 7168 x 2048: 112
// units); otherwise 128-row units where they take no more rounds-times-rows than 64-row ones (fewer
// activation bytes a weight byte); split K only when the units leave more than a quarter of the SMs
// idle, as few splits as fill them (partials cost M x N x 4 bytes each).
inline DecodeFp4Config choose_decode_fp4_config(int64_t M, int64_t N, int64_t K, GemmFormat f, int sm_count,
                                                int64_t workspace_limit) {
  DecodeFp4Config c;
  const int64_t sms = std::max(sm_count, 1);
  const int64_t slices = N / 64;
  const int kblocks = static_cast<int>(K / kBK);
  auto rounds = [&](int64_t units) { return (units + sms - 1) / sms; };
  c.wr = 1;
  if (rounds(slices / 2) * 2 <= rounds(slices) && slices / 2 * 4 >= sms * 3) c.wr = 2;
  c.wk = decode_fp4_wk(c.wr);
  const int64_t row_units = slices / c.wr;
  c.splits = 1;
  if (leaves_sms_idle(row_units, sms) && kblocks >= 4) {
    int want = static_cast<int>(sms / row_units);
    want = std::min({want, kMaxSplits, kblocks / 2});
    while (want > 1 && want * M * N * 4 > workspace_limit) --want;
    c.splits = std::max(want, 1);
  }
  c.kblocks_per_split = (kblocks + c.splits - 1) / c.splits;
  c.splits = (kblocks + c.kblocks_per_split - 1) / c.kblocks_per_split;  // no empty split
  c.wk = decode_fp4_wk(c.wr, f, c.kblocks_per_split);
  c.units = row_units * c.splits;
  c.grid = static_cast<int>(std::min<int64_t>(c.units, sms));
  c.workspace_bytes = c.splits > 1 ? static_cast<int64_t>(c.splits) * M * N * 4 : 0;
  return c;
}

}  // namespace dsv4::cuda::gemm_detail
