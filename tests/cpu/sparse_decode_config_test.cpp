// The split-KV schedule of the sparse-decode kernel (src/cuda/sparse_decode/config.h): a pure
// function of the shapes, checked here without a GPU.
#include <gtest/gtest.h>

#include "cuda/sparse_decode/config.h"

namespace dsv4::cuda::sdec {
namespace {

TEST(SparseDecodeConfig, SplitsCoverEveryTileOnce) {
  for (int64_t B : {1, 3, 64, 128, 1000})
    for (int64_t S : {1, 2, 4})
      for (int64_t H : {1, 8, 16, 24, 64, 65, 128})
        for (int64_t k_main : {0, 1, 128})
          for (int64_t k_extra : {0, 63, 512, 1024, 8192})
            for (int sms : {1, 132}) {
              const Schedule s = make_schedule(B, S, H, k_main, k_extra, sms);
              const int tiles = s.tiles_main + s.tiles_extra;
              EXPECT_EQ(s.tiles_main, (k_main + 63) / 64);
              EXPECT_EQ(s.tiles_extra, (k_extra + 63) / 64);
              EXPECT_EQ(s.head_blocks, (H + 63) / 64);
              EXPECT_EQ(s.row_groups, H <= 16 ? 1 : (H <= 32 ? 2 : 4));
              ASSERT_GE(s.num_splits, 1);
              // Every tile belongs to exactly one split and no split is empty (when there are tiles).
              EXPECT_GE(static_cast<int64_t>(s.num_splits) * s.tiles_per_split, tiles);
              if (tiles > 0) EXPECT_LT(static_cast<int64_t>(s.num_splits - 1) * s.tiles_per_split, tiles);
              // Splits only when the unsplit grid leaves SMs idle, and never more CTAs than needed.
              const int64_t base = B * S * s.head_blocks;
              if (base >= sms) EXPECT_EQ(s.num_splits, 1);
              if (s.num_splits > 1) EXPECT_LE(base * (s.num_splits - 1), sms);
              EXPECT_EQ(s.ctas(), base * s.num_splits);
              // Workspace only for split schedules: partial outputs and partial lse of every row.
              const int64_t ws = workspace_bytes(s, H);
              if (s.num_splits == 1) EXPECT_EQ(ws, 0);
              else EXPECT_GE(ws, s.num_splits * B * S * H * (kDim + 1) * 4);
            }
}

TEST(SparseDecodeConfig, SmallBatchFillsTheMachine) {
  // B = 1, Pro: 2 head blocks x 18 key tiles -> one tile a CTA.
  const Schedule s = make_schedule(1, 1, 128, 128, 1024, 132);
  EXPECT_EQ(s.num_splits, 18);
  EXPECT_EQ(s.tiles_per_split, 1);
  EXPECT_EQ(s.ctas(), 36);
  // B = 128, Pro s_q = 2: 512 CTAs already, no split.
  EXPECT_EQ(make_schedule(128, 2, 128, 128, 1024, 132).num_splits, 1);
}

TEST(SparseDecodeConfig, SplitsOnlyWhenItShortensTheCriticalPath) {
  // 128 CTAs on 132 SMs: two splits would run as two waves of half the tiles, plus a combine.
  for (int64_t H : {16, 32, 64}) EXPECT_EQ(make_schedule(128, 1, H, 128, 512, 132).num_splits, 1) << H;
  // 64 CTAs: two splits still fit one wave and halve the tiles a CTA walks.
  const Schedule s = make_schedule(64, 1, 64, 128, 512, 132);
  EXPECT_EQ(s.num_splits, 2);
  EXPECT_EQ(s.tiles_per_split, 5);
}

}  // namespace
}  // namespace dsv4::cuda::sdec
