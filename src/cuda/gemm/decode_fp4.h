// Host entry of the FP4-weight decode GEMM (kernel_decode_fp4.cuh): launch.cu routes plain GEMMs
// with FP4 weights and M <= 16 here (config.h, decode_fp4_for).
#pragma once
#include <cuda_runtime.h>

#include "cuda/gemm/config.h"
#include "dsv4/ops/gemm.h"
#include "dsv4/status.h"

namespace dsv4::cuda {

// p validated by the caller (plain GEMM: N = b rows); mx_a: W4A8 with MXFP8 activation scales.
// Uses p.workspace for split-K partials when cfg.splits > 1.
Status gemm_decode_fp4(const GemmParams& p, const gemm_detail::DecodeFp4Config& cfg, bool mx_a, int sm_count,
                       cudaStream_t stream);

}  // namespace dsv4::cuda
