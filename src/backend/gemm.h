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
// Split-K scratch the CUDA backend picks for this problem on device `device_index`.
int64_t gemm_workspace_size(GemmFormat format, int64_t M, int64_t N, int64_t K, int device_index);
}  // namespace dsv4::cuda
