// Backend entry points of the GEMM ops (include/dsv4/ops/gemm.h). src/core/gemm.cpp validates,
// then calls exactly one of these; they may assume valid arguments. Without a CUDA build the cuda::
// entries come from src/backend/gemm_stub.cpp.
#pragma once
#include "dsv4/ops/gemm.h"

namespace dsv4::cpu {
Status gemm(const GemmParams& p);
}  // namespace dsv4::cpu

namespace dsv4::cuda {
Status gemm(const GemmParams& p, Stream stream);
// The MoE building block (no public entry yet; the MoE issue adds it with its validation): rows
// [group_rows[g], group_rows[g+1]) of a/d (group_rows: device i32 [num_groups + 1], ascending, from
// 0 to M) multiply rows [g * n_per_group, (g + 1) * n_per_group) of b, which stacks the groups'
// weights as [num_groups * n_per_group, K] (b_scales stacked alike). d is [M, n_per_group]. No
// split-K. The arguments must already be valid.
Status gemm_grouped_contiguous(const GemmParams& p, int64_t n_per_group, const int32_t* group_rows, int num_groups,
                               Stream stream);
// Split-K scratch the CUDA backend picks for this problem on device `device_index`.
int64_t gemm_workspace_size(GemmFormat format, int64_t M, int64_t N, int64_t K, int device_index);
}  // namespace dsv4::cuda
