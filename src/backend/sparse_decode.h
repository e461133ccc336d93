// Backend entries of sparse decode attention (include/dsv4/ops/sparse_decode.h). Core code validates
// first; the backends may assume valid arguments. Without CUDA the cuda:: entries report
// kUnsupported (src/backend/sparse_decode_stub.cpp).
#pragma once
#include <vector>

#include "dsv4/ops/sparse_decode.h"

namespace dsv4::cpu {
Status sparse_decode(const SparseDecodeParams& p);
// The same reference (p on the host), plus rss[((b * s_q + s) * H + h) * 512 + i] =
// sqrt(sum_j (p_j v_ji)^2) and abs_sum[...] = sum_j |p_j v_ji|, both times the sink factor. The
// kernels multiply the softmax weights P in bf16 (8 significant bits): each p_j carries a relative
// rounding error of at most 2^-8 (about 2^-8 * 0.42 standard deviation), so out_i moves by about
// 2^-9 * rss_i when the errors are independent, and by at most 2^-8 * abs_sum_i whatever they are
// (a key named by several indices rounds alike each time). Tests and `dsv4 verify` allow one bf16
// ulp of the reference plus max(2^-7 rss_i, 2^-8 (abs_sum_i + |out_i|)): never less than the worst
// case (the |out_i| term covers a normaliser summed from the rounded weights). The earlier bound,
// 2^-7 rss_i alone (written for a 2^-9 rounding error), failed one element of 8M: slots named 3
// and 2 times in a 128-key row, whose bf16 weights the test's host emulation reproduces exactly.
Status sparse_decode_weight_rss(const SparseDecodeParams& p, std::vector<float>* rss,
                                std::vector<float>* abs_sum = nullptr);
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
