// Launch geometry of the quantization kernels: pure host functions of the problem (testable on the
// CPU). Every kernel streams the wide tensor ([M, K] bf16/f32) in 16-byte chunks, so the chunk is
// the unit of work; scale blocks are whole numbers of chunks because K is a multiple of the scale
// block and a block is at least 16 elements.
#pragma once
#include <algorithm>
#include <cstdint>

namespace dsv4::cuda::quant {

// The element kinds a quantize kernel is specialised for: value codec plus scale rule.
enum class Kind : int {
  kMXFP4,     // e2m1, ue8m0 per 32: 2^ceil_log2_ratio(amax, 6, -126)
  kNVFP4,     // e2m1, e4m3 per 16 times an f32 global scale
  kMXFP8,     // e4m3, ue8m0 per 32: 2^ceil_log2_ratio(amax, 448, -22)
  kFP8Pow2,   // e4m3, ue8m0 per 128 along K (per row, or per 128 rows): same rule as MXFP8
  kFP8F32,    // e4m3, f32 per 128: max(amax, 1e-4) / 448
};

constexpr int block_k(Kind k) {
  return k == Kind::kNVFP4 ? 16 : (k == Kind::kMXFP4 || k == Kind::kMXFP8) ? 32 : 128;
}
// 16-byte chunks one quantize thread owns: 4 (64 contiguous bytes: one or two whole scale blocks,
// or a quarter of a 128-wide one), except 2 (one NVFP4 block) for NVFP4 on bf16 when a row's
// chunk count is not a multiple of 4 (a unit never straddles rows) or when q's rows are only
// 8-byte aligned (two blocks' codes leave in one 16-byte store).
constexpr int own_chunks(Kind k, int elem_bytes, int64_t chunks_per_row, int64_t q_row_bytes) {
  const int cpb = block_k(k) * elem_bytes / 16;
  return cpb < 4 && (chunks_per_row % 4 != 0 || q_row_bytes % 16 != 0) ? cpb : 4;
}
constexpr bool is_fp4(Kind k) { return k == Kind::kMXFP4 || k == Kind::kNVFP4; }

// The streaming kernels: 256 threads a CTA, each thread keeps several independent 16-byte chunks in
// flight per loop trip (quantize: 4 chunks of the wide input, plus the next trip's 4 loading meanwhile; dequantize: 4 narrow code loads, its
// traffic is mostly stores), and the grid covers the device a few CTAs deep per SM (grid-stride).
inline constexpr int kThreads = 256;
inline constexpr int kQuantUnroll = 4;  // chunks a trip; the next trip's are loaded meanwhile
inline constexpr int kAmaxUnroll = 8;
inline constexpr int kDequantUnroll = 4;
// Quantize keeps 4 CTAs (32 warps) resident per SM: 64 registers a thread.
inline constexpr int kQuantMinCtasPerSm = 4;
inline constexpr int kCtasPerSm = 8;
// One launch indexes chunks with 32 bits (with headroom for the unrolled stride); bigger tensors
// are cut into row slices, each its own launch.
inline constexpr int64_t kMaxChunksPerLaunch = int64_t{1} << 30;

inline int grid_for(int64_t chunks, int unroll, int sm_count) {
  const int64_t per_cta = int64_t{kThreads} * unroll;
  const int64_t need = (chunks + per_cta - 1) / per_cta;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(need, int64_t{sm_count} * kCtasPerSm)));
}

// Rows one launch may cover so that rows * chunks_per_row <= kMaxChunksPerLaunch (>= 1 row when a
// single row fits, 0 when even one row does not).
inline int64_t rows_per_launch(int64_t chunks_per_row) {
  if (chunks_per_row <= 0) return 0;
  return kMaxChunksPerLaunch / chunks_per_row;
}

// FP8_128x128: one CTA owns one 128x128 block in registers (amax, then encode from the same
// registers, so the tensor is read once). 8 chunks a thread: 256 threads for bf16, 512 for f32.
inline constexpr int kTileRows = 128;
inline constexpr int kTileCols = 128;
inline constexpr int kTileChunksPerThread = 8;
constexpr int tile_threads(int in_elem_bytes) {
  return kTileRows * kTileCols * in_elem_bytes / 16 / kTileChunksPerThread;
}

// The tiny ops (swizzle, global-scale finalize) use plain 256-thread CTAs.
inline constexpr int kSmallThreads = 256;

}  // namespace dsv4::cuda::quant
