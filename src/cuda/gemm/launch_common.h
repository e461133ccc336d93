// Host pieces both GEMM launchers share (launch.cu, launch_decode_fp4.cuh): the kernel arguments
// every path reads the same way, and the split-K epilogue launch (D = the sum of the f32 partials
// + bias + residual, kernel.cuh's splitk_reduce_kernel). Host code of launch.cu's translation unit
// (kernel.cuh defines non-inline kernels).
#pragma once
#include <algorithm>
#include <cstdint>

#include "cuda/common/check.h"
#include "cuda/common/launch_pdl.h"
#include "cuda/gemm/kernel.cuh"
#include "dsv4/ops/gemm.h"

namespace dsv4::cuda {

// A's scales, B's scales, NVFP4's global scale, bias, residual and D, as both kernels' argument
// structs name them (KernelArgs, DecodeArgs).
template <class Args>
void set_common_args(Args& args, const GemmParams& p) {
  if (p.a_scales.defined()) {
    args.a_scales = static_cast<const uint8_t*>(p.a_scales.data);
    args.as_s0 = p.a_scales.strides[0], args.as_s1 = p.a_scales.strides[1];
    args.a_scale_f32 = p.a_scales.dtype == DType::F32;
  }
  args.b_scales = static_cast<const uint8_t*>(p.b_scales.data);
  args.bs_s0 = p.b_scales.strides[0], args.bs_s1 = p.b_scales.strides[1];
  if (p.b_global_scale.defined()) args.b_global = static_cast<const float*>(p.b_global_scale.data);
  if (p.bias.defined()) args.bias = static_cast<const __nv_bfloat16*>(p.bias.data);
  if (p.residual.defined()) {
    args.residual = static_cast<const __nv_bfloat16*>(p.residual.data);
    args.res_ld = p.residual.strides[0];
  }
  args.d = static_cast<__nv_bfloat16*>(p.d.data);
  args.d_ld = p.d.strides[0];
}

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
