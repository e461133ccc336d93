// Launch geometry of the KV-cache kernels: one warp per token (insert) or per output row (gather).
// A 512-value bf16 row is 64 16-byte chunks: lane l owns chunks l and 32 + l, so every warp-wide
// access is one contiguous, fully coalesced 512-byte (or 256-byte) span. In the first half lanes
// 8g..8g+7 hold MODEL1 group g (0..3); in the second half lanes 0..23 hold groups 4..6 and lanes
// 24..31 the 64 rope values.
#pragma once
#include <cstdint>

namespace dsv4::cuda::kv {

inline constexpr int kThreads = 256;
inline constexpr int kWarpsPerCta = kThreads / 32;
inline constexpr int kLanesPerGroup = 8;   // 64 values / 8 values a chunk
inline constexpr int kRopeFirstLane = 24;  // second-half chunks 56..63 are the rope

inline constexpr int kGatherRows = 4;      // gathers: rows a warp keeps in flight

inline int64_t grid_for(int64_t rows, int rows_per_warp = 1) {
  const int64_t per_cta = int64_t{kWarpsPerCta} * rows_per_warp;
  return (rows + per_cta - 1) / per_cta;
}

}  // namespace dsv4::cuda::kv
