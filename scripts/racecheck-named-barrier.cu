// A race-free kernel that compute-sanitizer racecheck (2025.x, H100) reports as racy: evidence for
// why scripts/gpu-check keeps the sparse-decode tests out of its gating racecheck.
//
// The sparse-decode wgmma kernel (src/cuda/sparse_decode/kernel_wg.cuh) exchanges row maxima
// between warpgroups 0 and 1 through a partial named barrier (bar.sync 1, 256) while warpgroups
// 2 and 3 dequantize keys, then warpgroup 0 writes the rescale factors, the whole CTA meets at
// __syncthreads, and every warpgroup reads them. Racecheck flags each such read as a RAW hazard
// against the write before the CTA barrier. This kernel is that pattern and nothing else: every
// shared access is ordered by a barrier, yet racecheck reports hazards on the alpha read.
//
//   nvcc -arch=sm_90a -lineinfo -o /tmp/rc scripts/racecheck-named-barrier.cu
//   compute-sanitizer --tool racecheck /tmp/rc
#include <cstdio>

__global__ void named_barrier_pattern(float* out) {
  __shared__ float pmax[256];
  __shared__ float alpha[64];
  const int tid = threadIdx.x;
  for (int it = 0; it < 4; ++it) {
    if (tid < 256) {  // warpgroups 0 and 1
      pmax[tid] = tid * 1.f + it;
      asm volatile("bar.sync 1, 256;\n" ::: "memory");  // warpgroups 0 and 1 only
      const float m = pmax[tid ^ 128];                  // the other warpgroup's value
      if (tid < 64) alpha[tid] = m;
    }
    __syncthreads();
    out[blockIdx.x * blockDim.x + tid] += alpha[tid % 64];  // flagged: RAW against the write above
    __syncthreads();
  }
}

int main() {
  float* d = nullptr;
  if (cudaMalloc(&d, 2 * 512 * sizeof(float)) != cudaSuccess) return 1;
  cudaMemset(d, 0, 2 * 512 * sizeof(float));
  named_barrier_pattern<<<2, 512>>>(d);
  const cudaError_t e = cudaDeviceSynchronize();
  std::printf("named_barrier_pattern: %s\n", cudaGetErrorString(e));
  cudaFree(d);
  return e == cudaSuccess ? 0 : 1;
}
