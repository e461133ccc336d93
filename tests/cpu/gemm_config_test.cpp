// The GEMM launch heuristic (src/cuda/gemm/config.h) is a pure function: its invariants are checked
// here, on the CPU, over a sweep of the shapes the model uses and awkward ones.
#include <gtest/gtest.h>

#include "cuda/gemm/config.h"

namespace dsv4::cuda::gemm_detail {
namespace {

constexpr GemmFormat kFormats[] = {GemmFormat::kFP8Block, GemmFormat::kW4A16MXFP4, GemmFormat::kW4A16NVFP4,
                                   GemmFormat::kW4A8MXFP4};
constexpr int64_t kHuge = int64_t(1) << 40;

TEST(GemmConfig, InvariantsOverSweep) {
  const int64_t Ms[] = {1, 7, 16, 64, 65, 128, 129, 200, 256, 257, 1000, 4096, 65536};
  const int64_t Ns[] = {128, 512, 1536, 4096, 7168, 24576};
  const int64_t Ks[] = {128, 256, 512, 2048, 4096, 7168};
  const int sms[] = {1, 16, 114, 132};
  for (GemmFormat f : kFormats)
    for (int64_t M : Ms)
      for (int64_t N : Ns)
        for (int64_t K : Ks)
          for (int sm : sms)
            for (int64_t ws : {int64_t(0), int64_t(1) << 20, kHuge}) {
              const GemmConfig c = choose_gemm_config(M, N, K, f, sm, ws);
              SCOPED_TRACE(testing::Message() << gemm_format_name(f) << " M=" << M << " N=" << N << " K=" << K
                                              << " sms=" << sm << " ws=" << ws);
              ASSERT_EQ(c.stage_k, is_w4a16(f) && c.bn == kBNWide ? 64 : kBK);
              const int kblocks = static_cast<int>(K / c.stage_k);
              ASSERT_TRUE(c.bm == 64 || c.bm == 128);
              const bool fp8 = f == GemmFormat::kFP8Block;
              const bool mid64 = fp8 && M > 128 && M <= 256 && (M + 127) / 128 * (N / 128) * 4 < int64_t(sm) * 3 &&
                                 (M + 63) / 64 * (N / 128) <= sm;
              ASSERT_EQ(c.bm, M <= 64 || (fp8 && M <= 128) || mid64 ? 64 : 128);
              const int64_t mt = (M + 127) / 128;
              const bool wide = is_w4a16(f) && c.pre_expand && N % 256 == 0 &&
                                (mt * (N / 256) + sm - 1) / sm < (mt * (N / 128) + sm - 1) / sm;
              const bool dec = f == GemmFormat::kFP8Block && M >= 8 && M <= 128;
              const int64_t dmt = (M + 63) / 64;
              ASSERT_EQ(c.bn, dec && dmt * (N / 32) <= sm                                          ? kBNDecode
                              : dec && dmt * (N / 64) <= sm                                          ? 2 * kBNDecode
                              : wide                                                         ? kBNWide
                                                                                             : kBN);
              ASSERT_GE(c.stages, 2);
              ASSERT_LE(c.stages, c.bn < kBN ? kMaxStagesDecode : kMaxStages);
              ASSERT_LE(smem_bytes(f, c.bm, c.stages, c.bn, c.pre_expand), kSmemLimit);
              // B is expanded before the kernel exactly when FP4 weights meet a large M and the
              // workspace holds the expanded B; that plan never splits K.
              ASSERT_EQ(c.pre_expand, f != GemmFormat::kFP8Block && M >= pre_expand_min_m(f) && pre_expand_bytes(f, N, K) <= ws);
              ASSERT_GE(c.splits, 1);
              ASSERT_LE(c.splits, kMaxSplits);
              // Every K block belongs to exactly one split and no split is empty.
              ASSERT_GE(int64_t(c.splits) * c.kblocks_per_split, kblocks);
              ASSERT_LT(int64_t(c.splits - 1) * c.kblocks_per_split, kblocks);
              ASSERT_EQ(c.tiles, (M + c.bm - 1) / c.bm * (N / c.bn));
              ASSERT_LE(c.workspace_bytes, ws);
              ASSERT_EQ(c.workspace_bytes, c.pre_expand   ? pre_expand_bytes(f, N, K)
                                           : c.splits > 1 ? int64_t(c.splits) * M * N * 4
                                                          : 0);
              if (c.pre_expand) ASSERT_EQ(c.splits, 1);
              ASSERT_GE(c.grid, 1);
              ASSERT_LE(c.grid, sm);
              ASSERT_LE(int64_t(c.grid), c.tiles * c.splits);
              if (c.splits > 1) {
                ASSERT_LE(c.tiles * c.splits, sm) << "split-K must not spill into a second wave";
                ASSERT_LE(M, 256);
              }
            }
}

TEST(GemmConfig, DecodeShapesSplitAcrossAllSms) {
  // The decode shapes on an H100 (132 SMs): weights dominate, so the CTAs must cover the SMs,
  // through split-K, or for FP8 at 8 <= M <= 128 through 32- or 64-row weight tiles (no split, no
  // reduction).
  for (GemmFormat f : kFormats)
    for (int64_t M : {1, 16, 64, 128}) {
      const GemmConfig c = choose_gemm_config(M, 4096, 7168, f, 132, kHuge);
      SCOPED_TRACE(testing::Message() << gemm_format_name(f) << " M=" << M);
      if (f == GemmFormat::kFP8Block && M >= 8) {
        EXPECT_EQ(c.bn, M <= 64 ? kBNDecode : 2 * kBNDecode);  // M = 128: two 64-row tiles of A
        EXPECT_EQ(c.tiles, 128);
        EXPECT_EQ(c.splits, 1);
        EXPECT_EQ(c.stages, M <= 64 ? kMaxStagesDecode : max_stages(f, 64, 2 * kBNDecode));
      } else {
        EXPECT_EQ(c.bn, kBN);
        EXPECT_GT(c.splits, 1);
      }
      EXPECT_GE(c.tiles * c.splits, 100);
      EXPECT_EQ(c.grid, c.tiles * c.splits);
    }
}

TEST(GemmConfig, Fp8MidSizedMTakes64RowTilesWhere128WouldSplit) {
  // 129..256 x 4096 x 7168 on 132 SMs: 128-row tiles (64) would split K; 64-row ones (96, 128) make
  // one round without a split.
  for (int64_t M : {129, 192, 256}) {
    const GemmConfig c = choose_gemm_config(M, 4096, 7168, GemmFormat::kFP8Block, 132, kHuge);
    SCOPED_TRACE(testing::Message() << "M=" << M);
    EXPECT_EQ(c.bm, 64);
    EXPECT_EQ(c.bn, kBN);
    EXPECT_EQ(c.splits, 1);
    EXPECT_EQ(c.tiles, (M + 63) / 64 * 32);
    EXPECT_EQ(c.workspace_bytes, 0);
  }
  // Enough 128-row tiles without a split (N = 7168: 112; N = 24576: 384): BM stays 128.
  EXPECT_EQ(choose_gemm_config(129, 7168, 2048, GemmFormat::kFP8Block, 132, kHuge).bm, 128);
  EXPECT_EQ(choose_gemm_config(256, 24576, 1536, GemmFormat::kFP8Block, 132, kHuge).bm, 128);
  // Past 256 rows, and for FP4 weights, 128-row tiles.
  EXPECT_EQ(choose_gemm_config(257, 4096, 7168, GemmFormat::kFP8Block, 132, kHuge).bm, 128);
  EXPECT_EQ(choose_gemm_config(129, 4096, 7168, GemmFormat::kW4A8MXFP4, 132, kHuge).bm, 128);
  // Grouped (b_rows = groups x N; M a group's average rows): 128-row tiles.
  EXPECT_EQ(choose_gemm_config(200, 4096, 7168, GemmFormat::kFP8Block, 132, kHuge, 8 * 4096).bm, 128);
}

TEST(GemmConfig, LargeProblemsDoNotSplit) {
  for (GemmFormat f : kFormats) {
    const GemmConfig c = choose_gemm_config(4096, 4096, 7168, f, 132, kHuge);
    EXPECT_EQ(c.splits, 1);
    EXPECT_EQ(c.bm, 128);
    EXPECT_EQ(c.grid, 132);
    // FP4 weights: the workspace holds B expanded once (W4A8: e4m3 + f32 scales a row and 128-block;
    // W4A16: bf16).
    const int64_t want = f == GemmFormat::kFP8Block    ? 0
                         : f == GemmFormat::kW4A8MXFP4 ? pre_expand_layout(f, 4096, 7168).bytes
                                                       : int64_t(4096) * 7168 * 2;
    if (f == GemmFormat::kW4A8MXFP4) {  // e4m3, row scales, block scales and exponents, the flag
      const PreExpandLayout l = pre_expand_layout(f, 4096, 7168);
      EXPECT_EQ(l.row_scales, int64_t(4096) * 7168);
      EXPECT_EQ(l.block_scales, l.row_scales + int64_t(4096) * 56 * 4);
      EXPECT_EQ(l.block_exps, l.block_scales + 32 * 56 * 4);
      EXPECT_EQ(l.cta_flags, l.block_exps + 1792);  // 32 x 56 exponents, 256-aligned
      EXPECT_EQ(l.flag, l.cta_flags + kStatsCtas);  // a byte a statistics CTA
      EXPECT_EQ(l.bytes, l.flag + 16);
    }
    EXPECT_EQ(c.pre_expand, f != GemmFormat::kFP8Block);
    EXPECT_EQ(c.workspace_bytes, want);
    // Without that workspace the same problem expands B inside the kernel.
    const GemmConfig n = choose_gemm_config(4096, 4096, 7168, f, 132, want - 1);
    EXPECT_FALSE(n.pre_expand);
    EXPECT_EQ(n.workspace_bytes, 0);
  }
  // Pre-expanded W4A16 takes 256-wide tiles where they make fewer waves (H100: 132 SMs).
  EXPECT_EQ(choose_gemm_config(4096, 4096, 7168, GemmFormat::kW4A16MXFP4, 132, kHuge).bn, kBNWide);
  EXPECT_EQ(choose_gemm_config(1024, 4096, 7168, GemmFormat::kW4A16NVFP4, 132, kHuge).bn, kBNWide);
  EXPECT_EQ(choose_gemm_config(512, 4096, 7168, GemmFormat::kW4A16MXFP4, 132, kHuge).bn, kBN);
  EXPECT_EQ(choose_gemm_config(4096, 384, 7168, GemmFormat::kW4A16MXFP4, 132, kHuge).bn, kBN);  // N % 256
  // Grouped weights: the expansion covers every group's rows.
  const GemmConfig g = choose_gemm_config(1024, 2048, 7168, GemmFormat::kW4A16NVFP4, 132, kHuge, 8 * 2048);
  EXPECT_TRUE(g.pre_expand);
  EXPECT_EQ(g.workspace_bytes, int64_t(8) * 2048 * 7168 * 2);
}

TEST(GemmConfig, NoWorkspaceMeansNoSplit) {
  const GemmConfig c = choose_gemm_config(16, 4096, 7168, GemmFormat::kW4A16MXFP4, 132, 0);
  EXPECT_EQ(c.splits, 1);
  EXPECT_EQ(c.kblocks_per_split, 56);
  // A workspace for exactly two splits allows two.
  const GemmConfig c2 = choose_gemm_config(16, 4096, 7168, GemmFormat::kW4A16MXFP4, 132, 2 * 16 * 4096 * 4);
  EXPECT_EQ(c2.splits, 2);
}

// The A/B override of the expansion threshold (DSV4_GEMM_PRE_EXPAND_MIN_M reaches choose_gemm_config
// as pre_min_m): below 257 rows the expanded B holds the workspace, so the plan must not split K
// into the same bytes, and FP8 never expands.
TEST(GemmConfig, PreExpandOverrideNeverSplits) {
  for (GemmFormat f : {GemmFormat::kW4A8MXFP4, GemmFormat::kW4A16MXFP4, GemmFormat::kW4A16NVFP4})
    for (int64_t M : {129, 200, 256}) {
      const GemmConfig base = choose_gemm_config(M, 4096, 7168, f, 132, kHuge);
      EXPECT_FALSE(base.pre_expand);
      EXPECT_GT(base.splits, 1) << gemm_format_name(f) << " M=" << M;  // what the override turns off
      const GemmConfig c = choose_gemm_config(M, 4096, 7168, f, 132, kHuge, 0, 129);
      EXPECT_TRUE(c.pre_expand) << gemm_format_name(f) << " M=" << M;
      EXPECT_EQ(c.splits, 1);
      EXPECT_EQ(c.workspace_bytes, pre_expand_bytes(f, 4096, 7168));
    }
  EXPECT_FALSE(choose_gemm_config(200, 4096, 7168, GemmFormat::kFP8Block, 132, kHuge, 0, 129).pre_expand);
  // W4A16-NVFP4 expands from 257 by default, MXFP4 from 512.
  EXPECT_TRUE(choose_gemm_config(257, 4096, 7168, GemmFormat::kW4A16NVFP4, 132, kHuge).pre_expand);
  EXPECT_FALSE(choose_gemm_config(511, 4096, 7168, GemmFormat::kW4A16MXFP4, 132, kHuge).pre_expand);
}

TEST(GemmConfig, StageBudgetPerFormat) {
  // The pipeline must stay deep enough to hide TMA latency on every path.
  EXPECT_GE(max_stages(GemmFormat::kFP8Block, 128), 5);
  EXPECT_GE(max_stages(GemmFormat::kFP8Block, 64), 8);
  EXPECT_EQ(max_stages(GemmFormat::kFP8Block, 64, kBNDecode), kMaxStagesDecode);
  EXPECT_GE(max_stages(GemmFormat::kFP8Block, 64, 2 * kBNDecode), 12);  // 64-row decode tiles
  EXPECT_EQ(choose_gemm_config(16, 7168, 2048, GemmFormat::kFP8Block, 132, kHuge).bn, 2 * kBNDecode);
  EXPECT_EQ(choose_gemm_config(16, 7168, 2048, GemmFormat::kFP8Block, 132, kHuge).splits, 1);
  EXPECT_GE(max_stages(GemmFormat::kW4A8MXFP4, 128), 5);
  EXPECT_GE(max_stages(GemmFormat::kW4A16MXFP4, 128), 3);
  EXPECT_GE(max_stages(GemmFormat::kW4A8MXFP4, 128, kBN, true), 5);
  EXPECT_GE(max_stages(GemmFormat::kW4A16MXFP4, 128, kBN, true), 3);
  EXPECT_GE(max_stages(GemmFormat::kW4A16NVFP4, 128, kBN, true), 3);
  EXPECT_GE(max_stages(GemmFormat::kW4A16NVFP4, 128, kBNWide, true), 4);  // 64-K stages of 48 KiB
}

// The FP4-weight decode kernel (kernel_decode_fp4.cuh): which calls take it, and its unit / split
// plan's invariants.
TEST(GemmConfig, DecodeFp4Routing) {
  for (GemmFormat f : kFormats)
    for (int64_t M : {0, 1, 7, 16, 17, 64})
      for (bool grouped : {false, true})
        EXPECT_EQ(decode_fp4_for(M, f, grouped), f != GemmFormat::kFP8Block && !grouped && M >= 1 && M <= 16)
            << gemm_format_name(f) << " M=" << M << " grouped=" << grouped;
}

TEST(GemmConfig, DecodeFp4InvariantsOverSweep) {
  for (GemmFormat f : {GemmFormat::kW4A16MXFP4, GemmFormat::kW4A16NVFP4, GemmFormat::kW4A8MXFP4})
    for (bool mx_a : {false, true})
      for (int wr : {1, 2}) {
        if (mx_a && f != GemmFormat::kW4A8MXFP4) continue;
        const int wk = decode_fp4_wk(wr);
        SCOPED_TRACE(testing::Message() << gemm_format_name(f) << " mx_a=" << mx_a << " wr=" << wr);
        // At least 8 K blocks in flight (a stage holds kDecodeFp4Blocks).
        EXPECT_GE(decode_fp4_stages(f, mx_a, wr, wk) * kDecodeFp4Blocks, 8);
        EXPECT_GE(decode_fp4_stages(f, mx_a, wr, wk), 4);
        EXPECT_LE(decode_fp4_stages(f, mx_a, wr, wk), kDecodeFp4MaxStages);
        EXPECT_LE(decode_fp4_smem_bytes(f, mx_a, wr, wk), kSmemLimit);
        EXPECT_EQ(decode_fp4_act_bytes(f) % 1024, 0);
        EXPECT_EQ(decode_fp4_side_bytes(f, mx_a, wr) % 16, 0);
      }
  // The 4-lane instances (W4A16 only, DSV4_DECODE_FP4_WK=4).
  for (GemmFormat f : {GemmFormat::kW4A16MXFP4, GemmFormat::kW4A16NVFP4}) {
    EXPECT_TRUE(decode_fp4_wk_ok(f, 1, 4));
    EXPECT_GE(decode_fp4_stages(f, false, 1, 4) * kDecodeFp4Blocks, 8);
    EXPECT_LE(decode_fp4_smem_bytes(f, false, 1, 4), kSmemLimit);
  }
  EXPECT_FALSE(decode_fp4_wk_ok(GemmFormat::kW4A8MXFP4, 1, 4));
  EXPECT_TRUE(decode_fp4_wk_ok(GemmFormat::kW4A8MXFP4, 1, 3));
  EXPECT_FALSE(decode_fp4_wk_ok(GemmFormat::kW4A16MXFP4, 2, 3));
  EXPECT_TRUE(decode_fp4_wk_ok(GemmFormat::kW4A16MXFP4, 2, 1));
  const int64_t Ms[] = {1, 7, 16};
  const int64_t Ns[] = {128, 384, 512, 1536, 4096, 7168, 16384, 24576};
  const int64_t Ks[] = {128, 256, 640, 1536, 2048, 7168};
  for (GemmFormat f : {GemmFormat::kW4A16MXFP4, GemmFormat::kW4A16NVFP4, GemmFormat::kW4A8MXFP4})
    for (int64_t M : Ms)
      for (int64_t N : Ns)
        for (int64_t K : Ks)
          for (int sm : {1, 16, 114, 132})
            for (int64_t ws : {int64_t(0), int64_t(1) << 16, kHuge}) {
              const DecodeFp4Config c = choose_decode_fp4_config(M, N, K, f, sm, ws);
              SCOPED_TRACE(testing::Message() << gemm_format_name(f) << " M=" << M << " N=" << N << " K=" << K
                                              << " sms=" << sm << " ws=" << ws);
              ASSERT_TRUE(c.wr == 1 || c.wr == 2);
              ASSERT_EQ(c.wk, c.wr == 1 && is_w4a16(f) && c.kblocks_per_split > 16 ? 4 : decode_fp4_wk(c.wr));
              ASSERT_TRUE(decode_fp4_wk_ok(f, c.wr, c.wk));
              ASSERT_EQ(N % (64 * c.wr), 0);
              const int kblocks = static_cast<int>(K / kBK);
              ASSERT_GE(c.splits, 1);
              ASSERT_LE(c.splits, kMaxSplits);
              ASSERT_GE(int64_t(c.splits) * c.kblocks_per_split, kblocks);
              ASSERT_LT(int64_t(c.splits - 1) * c.kblocks_per_split, kblocks);
              ASSERT_EQ(c.units, N / (64 * c.wr) * c.splits);
              ASSERT_GE(c.grid, 1);
              ASSERT_LE(c.grid, sm);
              ASSERT_LE(int64_t(c.grid), c.units);
              ASSERT_LE(c.workspace_bytes, ws);
              ASSERT_EQ(c.workspace_bytes, c.splits > 1 ? int64_t(c.splits) * M * N * 4 : 0);
              if (c.splits > 1) ASSERT_LE(c.units, sm) << "split-K must not spill into a second round";
            }
}

TEST(GemmConfig, DecodeFp4IssueShapes) {
  // H100 (132 SMs): 16 x 4096 x 7168 splits K in two (128 units of 64 rows), 16 x 7168 x 2048 runs
  // 112 unsplit units, 16 x 24576 x 1536 384 units on 132 persistent CTAs (3 rounds, against 2
  // rounds of 128-row units holding twice the rows).
  for (GemmFormat f : {GemmFormat::kW4A16MXFP4, GemmFormat::kW4A16NVFP4, GemmFormat::kW4A8MXFP4}) {
    DecodeFp4Config c = choose_decode_fp4_config(16, 4096, 7168, f, 132, kHuge);
    EXPECT_EQ(c.wr, 1);
    EXPECT_EQ(c.splits, 2);
    EXPECT_EQ(c.units, 128);
    EXPECT_EQ(c.wk, is_w4a16(f) ? 4 : 3);  // 28 K blocks a unit
    c = choose_decode_fp4_config(16, 7168, 2048, f, 132, kHuge);
    EXPECT_EQ(c.wr, 1);
    EXPECT_EQ(c.splits, 1);
    EXPECT_EQ(c.units, 112);
    EXPECT_EQ(c.wk, 3);
    c = choose_decode_fp4_config(16, 24576, 1536, f, 132, kHuge);
    EXPECT_EQ(c.wr, 1);
    EXPECT_EQ(c.wk, 3);
    EXPECT_EQ(c.splits, 1);
    EXPECT_EQ(c.grid, 132);
    c = choose_decode_fp4_config(16, 16384, 7168, f, 132, kHuge);  // 256 slices: 128-row units, one round
    EXPECT_EQ(c.wr, 2);
    EXPECT_EQ(c.units, 128);
    c = choose_decode_fp4_config(1, 4096, 7168, f, 132, 0);  // no workspace: no split
    EXPECT_EQ(c.splits, 1);
    EXPECT_EQ(c.workspace_bytes, 0);
  }
}

}  // namespace
}  // namespace dsv4::cuda::gemm_detail
