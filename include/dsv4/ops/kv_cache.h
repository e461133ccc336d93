// The FP8 KV cache: quantize-and-insert by slot, gather-and-dequantize by slot (spec 3.5, 3.6).
//
// A slot is a global token position in the paged cache: page * page_size + offset.
#pragma once
#include "dsv4/status.h"
#include "dsv4/tensor.h"

namespace dsv4 {

inline constexpr int kKVDim = 512;       // latent dim, K = V
inline constexpr int kKVNopeDim = 448;   // quantized to e4m3
inline constexpr int kKVRopeDim = 64;    // kept in bf16
inline constexpr int kModel1TokenBytes = 584;  // 448 e4m3 + 128 (bf16 rope) + 7 ue8m0 + 1 pad
inline constexpr int kModel1DataBytes = 576;

enum class KVLayout : int32_t {
  // "MODEL1", what DeepSeek-V4 uses. Page of P tokens, u8 [num_pages, model1_page_bytes(P)]:
  // bytes [0, P*576) token i's 448 e4m3 + 64 bf16 at i*576; bytes [P*576, P*576+P*8) token i's
  // 7 ue8m0 scales (one per 64 nope values, 2^ceil(log2(max(amax/448, 1e-4)))) + 1 zero pad byte
  // at P*576 + i*8. The page stride is P*584 rounded up to a multiple of 576.
  kModel1 = 0,
  // The prototype's layout: data e4m3 [num_pages, P, 512], scales bf16 [num_pages, P] holding
  // bf16(amax/448) over all 512 values of the token (dequant = e4m3 * scale).
  kPerTokenScale = 1,
};

int64_t model1_page_bytes(int64_t page_size);

struct KVCacheView {
  KVLayout layout = KVLayout::kModel1;
  int64_t page_size = 64;
  TensorView data;    // kModel1: u8 [num_pages, model1_page_bytes(P)]; kPerTokenScale: e4m3 [num_pages, P, 512]
  TensorView scales;  // kPerTokenScale: bf16 [num_pages, P]; kModel1: unused (leave empty)
};

// kv [T, 512] bf16 (innermost stride 1) -> cache slots slot_mapping[t] (i32 or i64 [T]).
// A slot of -1 is skipped. The CPU backend rejects other out-of-range slots; the CUDA backend
// cannot check device data without a sync, so it skips them.
struct KVInsertParams {
  TensorView kv;
  TensorView slot_mapping;
  KVCacheView cache;
};
Status kv_cache_insert(const KVInsertParams& p, Stream stream = nullptr);

// out [N, 512] bf16 or f32 (innermost stride 1) <- dequantized cache slots indices[n] (i32 [N]).
// Index -1 gives a row of zeros. Other out-of-range indices: the CPU backend returns an error,
// the CUDA backend writes a row of NaN so the fault cannot pass unseen.
struct KVGatherParams {
  KVCacheView cache;
  TensorView indices;
  TensorView out;
};
Status kv_cache_gather(const KVGatherParams& p, Stream stream = nullptr);

}  // namespace dsv4
