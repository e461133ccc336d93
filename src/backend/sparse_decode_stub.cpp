// The sparse-decode CUDA entries of a build without nvcc.
#include "backend/sparse_decode.h"

namespace dsv4::cuda {
int64_t sparse_decode_workspace_size(const SparseDecodeParams&) { return 0; }
void sparse_decode_force_mma_sync(bool) {}
Status sparse_decode(const SparseDecodeParams&, Stream) {
  return {StatusCode::kUnsupported, "sparse_decode: this dsv4 build has no CUDA backend (built without nvcc)"};
}
}  // namespace dsv4::cuda
