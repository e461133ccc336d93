// Tile constants and the split-KV schedule of the sparse-decode kernel. Host and device; the
// schedule is a pure function of the shapes and the SM count, so it can be tested on the CPU and
// never needs device data (no host sync, CUDA-graph capturable).
#pragma once
#include <cstdint>

namespace dsv4::cuda::sdec {

inline constexpr int kDim = 512;
inline constexpr int kTileKeys = 64;      // keys gathered, dequantized and consumed per step
inline constexpr int kMaxRowsPerCta = 64;  // query heads of one token a CTA serves (16-row MMA groups)
inline constexpr int kThreads = 256;       // 8 warps (mma.sync kernels; the wgmma kernel runs 512)

// Smem bytes of the raw (still quantized) key tile: MODEL1 needs 576 data + 8 scale bytes a key;
// the per-token layout 512 bytes (its bf16 scales travel in registers).
inline constexpr int kRawDataBytesPerKey = 576;
inline constexpr int kRawBytes = kTileKeys * kRawDataBytesPerKey + kTileKeys * 8;
inline constexpr int kScoreStride = kTileKeys + 8;  // f32 row pitch of the score tile: no bank conflicts

struct Schedule {
  int head_blocks = 0;      // CTAs per query token along the heads
  int row_groups = 0;       // 16-row MMA groups per CTA: 1, 2 or 4 (a template parameter)
  int tiles_main = 0;       // key tiles of the main set (a tile never mixes the two sets)
  int tiles_extra = 0;
  int num_splits = 1;       // CTAs per (token, head block) along the keys
  int tiles_per_split = 0;
  int64_t tokens = 0;       // B * s_q
  int64_t ctas() const { return tokens * head_blocks * num_splits; }
};

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Splits the keys only when the (token, head block) pairs alone leave SMs idle, and then only as
// far as it shortens the critical path: a CTA's time is about its tile count, so the estimate is
// waves(base * splits) * tiles_per_split, plus one tile for the combine pass (partials written and
// read back). With base = 128 on 132 SMs, two splits would make two waves of half the tiles: no
// faster than one wave, and the combine is pure loss.
inline Schedule make_schedule(int64_t B, int64_t s_q, int64_t H, int64_t k_main, int64_t k_extra, int num_sms) {
  Schedule s;
  s.tokens = B * s_q;
  s.head_blocks = static_cast<int>(ceil_div(H, kMaxRowsPerCta));
  const int64_t rows = H < kMaxRowsPerCta ? H : kMaxRowsPerCta;
  s.row_groups = rows <= 16 ? 1 : (rows <= 32 ? 2 : 4);
  s.tiles_main = static_cast<int>(ceil_div(k_main, kTileKeys));
  s.tiles_extra = static_cast<int>(ceil_div(k_extra, kTileKeys));
  const int64_t tiles = s.tiles_main + s.tiles_extra;
  const int64_t base = s.tokens * s.head_blocks;
  int64_t splits = 1;
  if (base > 0 && base < num_sms && tiles > 1) {
    int64_t max_splits = ceil_div(num_sms, base);
    if (max_splits > tiles) max_splits = tiles;
    int64_t best = tiles;  // one wave, unsplit
    for (int64_t n = 2; n <= max_splits; ++n) {
      const int64_t cost = ceil_div(base * n, num_sms) * ceil_div(tiles, n) + 1;
      if (cost < best) {
        best = cost;
        splits = n;
      }
    }
  }
  s.tiles_per_split = static_cast<int>(ceil_div(tiles, splits));
  s.num_splits = s.tiles_per_split > 0 ? static_cast<int>(ceil_div(tiles, s.tiles_per_split)) : 1;
  return s;
}

// Workspace layout when num_splits > 1: partial outputs f32 [splits, B*s_q*H, 512], then partial
// log2-sum-exps f32 [splits, B*s_q*H].
inline int64_t workspace_o_floats(const Schedule& s, int64_t H) { return s.num_splits * s.tokens * H * kDim; }
inline int64_t workspace_bytes(const Schedule& s, int64_t H) {
  if (s.num_splits <= 1) return 0;
  const int64_t floats = workspace_o_floats(s, H) + s.num_splits * s.tokens * H;
  return (floats * 4 + 255) / 256 * 256;
}

}  // namespace dsv4::cuda::sdec
