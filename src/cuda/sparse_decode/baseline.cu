// The softmax step of the unfused baseline `dsv4 bench sparse_decode` compares against (gather to
// bf16, cuBLASLt Q K^T, this kernel, cuBLASLt P V). Not part of the op; exported for the bench.
#include <cuda_bf16.h>

#include "backend/sparse_decode.h"
#include "cuda/common/check.h"

namespace dsv4::cuda {
namespace {

// One 256-thread block a row: max, sum of exp, write bf16 probabilities.
__global__ void __launch_bounds__(256) baseline_softmax_kernel(const float* s, __nv_bfloat16* p, int64_t cols,
                                                               float scale) {
  __shared__ float red[8];
  const float* row = s + blockIdx.x * cols;
  __nv_bfloat16* prow = p + blockIdx.x * cols;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += 256) mx = fmaxf(mx, row[c] * scale);
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  if (lane == 0) red[warp] = mx;
  __syncthreads();
  mx = red[0];
  for (int w = 1; w < 8; ++w) mx = fmaxf(mx, red[w]);
  __syncthreads();
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += 256) sum += __expf(row[c] * scale - mx);
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0) red[warp] = sum;
  __syncthreads();
  sum = 0.0f;
  for (int w = 0; w < 8; ++w) sum += red[w];
  const float inv = 1.0f / sum;
  for (int64_t c = threadIdx.x; c < cols; c += 256) prow[c] = __float2bfloat16_rn(__expf(row[c] * scale - mx) * inv);
}

}  // namespace

Status sparse_decode_baseline_softmax(const float* s, void* p_bf16, int64_t rows, int64_t cols, float scale,
                                      Stream stream) {
  if (rows <= 0) return Status::Ok();
  baseline_softmax_kernel<<<static_cast<unsigned>(rows), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      s, static_cast<__nv_bfloat16*>(p_bf16), cols, scale);
  return launch_status("sparse_decode_baseline_softmax", "baseline_softmax_kernel");
}

}  // namespace dsv4::cuda
