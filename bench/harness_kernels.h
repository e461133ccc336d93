// Launchers for the harness's kernels (harness_kernels.cu); CUDA builds only.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace dsv4::bench::kernels {

enum FillKind {
  kFillBF16 = 0,
  kFillF32 = 1,
  kFillE4M3 = 2,
  kFillUE8M0 = 3,
  kFillBytes = 4,
  kFillUE8M0Narrow = 5,
  kFillBF16Normal = 6,
  kFillE4M3Normal = 7,
  kFillE2M1Normal = 8,
};

cudaError_t fill(void* dst, size_t bytes, int kind, uint64_t seed, int sms, cudaStream_t stream);
// Reads `bytes` (a multiple of 16, 16-byte aligned) once.
cudaError_t read(const void* src, size_t bytes, unsigned long long* sink, int sms, cudaStream_t stream);

}  // namespace dsv4::bench::kernels
