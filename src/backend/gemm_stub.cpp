// The GEMM entry points of a build without nvcc.
#include <string>

#include "backend/gemm.h"

namespace dsv4::cuda {
Status gemm(const GemmParams&, Stream) {
  return {StatusCode::kUnsupported, "gemm: this dsv4 build has no CUDA backend (built without nvcc)"};
}
Status gemm_grouped_contiguous(const GemmParams&, int64_t, const int32_t*, int, Stream) {
  return {StatusCode::kUnsupported, "gemm_grouped_contiguous: this dsv4 build has no CUDA backend (built without nvcc)"};
}
int64_t gemm_workspace_size(GemmFormat, int64_t, int64_t, int64_t, int) { return 0; }
}  // namespace dsv4::cuda
