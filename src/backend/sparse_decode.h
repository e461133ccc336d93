// Backend entries of sparse decode attention (include/dsv4/ops/sparse_decode.h). Core code validates
// first; the backends may assume valid arguments. Without CUDA the cuda:: entries report
// kUnsupported (src/backend/sparse_decode_stub.cpp).
#pragma once
#include "dsv4/ops/sparse_decode.h"

namespace dsv4::cpu {
Status sparse_decode(const SparseDecodeParams& p);
}  // namespace dsv4::cpu

namespace dsv4::cuda {
// Workspace bytes for these shapes on q's device (the split-KV partials), 0 when none is needed.
int64_t sparse_decode_workspace_size(const SparseDecodeParams& p);
Status sparse_decode(const SparseDecodeParams& p, Stream stream);
// Tests and benchmarks only: run every head block on the mma.sync kernel instead of the wgmma one
// (process-wide, not for concurrent use).
void sparse_decode_force_mma_sync(bool on);
// The softmax of the bench's unfused baseline: p[r, :] = bf16(softmax(scale * s[r, :])) for f32
// s [rows, cols]. CUDA builds only.
Status sparse_decode_baseline_softmax(const float* s, void* p_bf16, int64_t rows, int64_t cols, float scale,
                                      Stream stream);
}  // namespace dsv4::cuda
