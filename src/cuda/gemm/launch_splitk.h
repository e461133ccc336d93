// The split-K epilogue launch both GEMM launchers share (launch.cu, launch_decode_fp4.cuh): D =
// the sum of the f32 partials + bias + residual, by kernel.cuh's splitk_reduce_kernel. Host code
// of launch.cu's translation unit (kernel.cuh defines non-inline kernels).
#pragma once
#include <algorithm>
#include <cstdint>

#include "cuda/common/check.h"
#include "cuda/common/launch_pdl.h"
#include "cuda/gemm/kernel.cuh"

namespace dsv4::cuda {

// A programmatic dependent launch: the reduction's launch overlaps the GEMM's tail (decode GEMMs
// last ~10 us, so a launch gap is a visible share); the kernel waits for the GEMM's partials.
inline Status launch_splitk_reduce(const float* partial, int splits, int M, int N, const __nv_bfloat16* bias,
                                   const __nv_bfloat16* residual, int64_t res_ld, __nv_bfloat16* d, int64_t d_ld,
                                   int sm_count, cudaStream_t stream, const char* op) {
  const int64_t quads = static_cast<int64_t>(M) * N / 4;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((quads + threads - 1) / threads, int64_t(sm_count) * 8));
  return cuda_status(launch_programmatic(gemm_detail::splitk_reduce_kernel, dim3(blocks), dim3(threads), stream,
                                         partial, splits, M, N, bias, residual, res_ld, d, d_ld),
                     op, "splitk_reduce_kernel launch");
}

}  // namespace dsv4::cuda
