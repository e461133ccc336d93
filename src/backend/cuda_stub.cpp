// The CUDA entry points of a build without nvcc: every one reports kUnsupported.
#include "backend/backends.h"

namespace dsv4::cuda {
namespace {
Status no_cuda(const char* op) {
  return {StatusCode::kUnsupported, std::string(op) + ": this dsv4 build has no CUDA backend (built without nvcc)"};
}
}  // namespace
bool available() { return false; }
Status quantize(const QuantizeParams&, Stream) { return no_cuda("quantize"); }
Status dequantize(const DequantizeParams&, Stream) { return no_cuda("dequantize"); }
Status swizzle_scales_128x4(const TensorView&, const TensorView&, Stream) { return no_cuda("swizzle_scales_128x4"); }
Status unswizzle_scales_128x4(const TensorView&, const TensorView&, Stream) { return no_cuda("unswizzle_scales_128x4"); }
Status kv_cache_insert(const KVInsertParams&, Stream) { return no_cuda("kv_cache_insert"); }
Status kv_cache_gather(const KVGatherParams&, Stream) { return no_cuda("kv_cache_gather"); }
}  // namespace dsv4::cuda
