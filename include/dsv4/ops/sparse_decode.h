// Sparse decode attention over the FP8 KV cache (spec DSV4.md section 2, issue 4).
//
// Per query row (b, s) and head h, with keys = gather(main) ++ gather(extra):
//   s_j  = softmax_scale * q[b,s,h] . key_j           (an invalid key has s_j = -inf)
//   lse  = logsumexp_j(s_j)
//   o    = softmax(s) @ keys                           (K = V: the same dequantized 512-dim rows)
//   if attn_sink: o *= 1 / (1 + exp(attn_sink[h] - lse))
//   if lse == -inf (no valid key): o = 0, lse = +inf
// A key index is a global slot (page * page_size + offset) into its cache. It is invalid when it is
// negative, when it is >= num_pages * page_size, or when its position along the index row is >= the
// row's length. Invalid keys are never read, so pages the indices do not name may hold anything.
//
// The CUDA backend neither allocates nor synchronises: scratch comes from the caller's workspace
// (sparse_decode_workspace_size) and the split-KV schedule depends on shapes only, so a call can be
// captured in a CUDA graph. Host-only header.
#pragma once
#include <cstdint>

#include "dsv4/ops/kv_cache.h"
#include "dsv4/status.h"
#include "dsv4/tensor.h"

namespace dsv4 {

inline constexpr int kSparseDecodeMaxHeads = 128;
inline constexpr int kSparseDecodeMaxQueryLen = 4;  // s_q: the token plus up to 3 MTP drafts
inline constexpr float kSparseDecodeDefaultScale = 0.044194173824159216f;  // 512^-0.5

struct SparseDecodeParams {
  // [B, s_q, H, 512] bf16; innermost stride 1, other strides multiples of 8 elements, 16-byte aligned.
  // 1 <= s_q <= 4, 1 <= H <= 128 (any count, no padding).
  TensorView q;

  // The main key set (the SWA window). Any layout and page size (ops/kv_cache.h).
  KVCacheView main_cache;
  // [B, s_q, K_main] i32 slots into main_cache, -1 = unused. Any non-negative strides: a stride of
  // 0 on dim 1 shares one index row among the s_q query tokens.
  TensorView main_indices;
  // Optional [B] or [B, s_q] i32: only the first main_lengths[b(, s)] indices of a row count.
  TensorView main_lengths;

  // Optional second key set (CSA top-k or HCA entries), same conventions as main. Leave
  // extra_cache.data and extra_indices empty to attend over main only.
  KVCacheView extra_cache;
  TensorView extra_indices;  // [B, s_q, K_extra] i32
  TensorView extra_lengths;  // optional [B] or [B, s_q] i32

  // Optional [H] f32 attention-sink logits (may be -inf or +inf).
  TensorView attn_sink;
  float softmax_scale = kSparseDecodeDefaultScale;  // finite

  // [B, s_q, H, 512] bf16, contiguous, 16-byte aligned.
  TensorView out;
  // Optional [B, s_q, H] f32, contiguous: the natural-log logsumexp of the scaled logits, without
  // the sink; +inf where no key is valid.
  TensorView lse;

  // CUDA only: u8 [>= sparse_decode_workspace_size(*this)], 16-byte aligned, on q's device. May be
  // empty when that size is 0. Its contents need no initialisation and are not kept.
  TensorView workspace;
};

// Bytes of workspace the CUDA backend needs for these shapes (q, the index tensors, the device of
// q). 0 for CPU tensors and for shapes that need no split-KV combine. Depends on shapes only.
int64_t sparse_decode_workspace_size(const SparseDecodeParams& p);

Status sparse_decode(const SparseDecodeParams& p, Stream stream = nullptr);

// The prototype's entry: SWA-only decode over the per-token-scale cache with a window of 128.
//   q [T, H, 512] bf16; swa_indices [T, 128] i32 slots; swa_lens [T] i32; out [T, H, 512] bf16;
//   lse optional [T, H] f32. No sink. Equivalent to sparse_decode with B = T, s_q = 1.
struct SwaDecodeParams {
  TensorView q;
  KVCacheView cache;  // layout must be KVLayout::kPerTokenScale
  TensorView swa_indices;
  TensorView swa_lens;
  float softmax_scale = kSparseDecodeDefaultScale;
  TensorView out;
  TensorView lse;
  TensorView workspace;  // u8 [>= swa_decode_workspace_size(*this)]
};
int64_t swa_decode_workspace_size(const SwaDecodeParams& p);
Status swa_decode(const SwaDecodeParams& p, Stream stream = nullptr);

}  // namespace dsv4
