// Host helpers every TMA-based launcher needs: 2-D tensor maps (encoded through the runtime's
// driver entry point, so libdsv4 needs no -lcuda, and cached per thread), the byte row stride of a
// validated view, and the per-device dynamic shared-memory opt-in of a kernel.
#pragma once
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "core/validate.h"
#include "cuda/common/check.h"
#include "dsv4/status.h"
#include "dsv4/tensor.h"

namespace dsv4::cuda {

inline Status tensor_map_encoder(PFN_cuTensorMapEncodeTiled_v12000* out, const char* op) {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static cudaError_t err = cudaSuccess;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q);
    if (err == cudaSuccess && q == cudaDriverEntryPointSuccess) fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  });
  if (!fn) {
    if (err != cudaSuccess) return cuda_status(err, op, "cudaGetDriverEntryPointByVersion(cuTensorMapEncodeTiled)");
    return {StatusCode::kUnsupported, std::string(op) + ": the CUDA driver does not provide cuTensorMapEncodeTiled"};
  }
  *out = fn;
  return Status::Ok();
}

// A 2-D row-major tensor map: `inner` elements a row (contiguous), `rows` rows `row_bytes` apart,
// boxes of box_inner x box_rows. Encoding is pure host work of a microsecond or more, a visible
// share of a decode GEMM; serving reuses the same weight and activation buffers, so each thread
// keeps its last encodings, keyed by everything the encoding depends on. `what` names the operand
// in the error.
inline Status encode_2d(CUtensorMap* map, CUtensorMapDataType dtype, const void* base, uint64_t inner, uint64_t rows,
                        uint64_t row_bytes, uint32_t box_inner, uint32_t box_rows, CUtensorMapSwizzle swizzle,
                        const char* op, const char* what) {
  struct Entry {
    const void* base;
    uint64_t inner, rows, row_bytes;
    uint32_t box_inner, box_rows;
    int dtype, swizzle;
    CUtensorMap map;
  };
  constexpr int kEntries = 32;
  thread_local Entry cache[kEntries] = {};
  thread_local int next = 0;
  for (const Entry& e : cache)
    if (e.base && e.base == base && e.inner == inner && e.rows == rows && e.row_bytes == row_bytes &&
        e.box_inner == box_inner && e.box_rows == box_rows && e.dtype == int(dtype) && e.swizzle == int(swizzle)) {
      *map = e.map;
      return Status::Ok();
    }
  PFN_cuTensorMapEncodeTiled_v12000 encode = nullptr;
  DSV4_RETURN_IF_ERROR(tensor_map_encoder(&encode, op));
  const cuuint64_t dims[2] = {inner, rows};
  const cuuint64_t strides[1] = {row_bytes};
  const cuuint32_t box[2] = {box_inner, box_rows};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = encode(map, dtype, 2, const_cast<void*>(base), dims, strides, box, elem_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return {StatusCode::kCudaError, std::string(op) + ": cuTensorMapEncodeTiled for '" + what +
                                        "' failed with CUresult " + std::to_string(static_cast<int>(r))};
  cache[next] = Entry{base, inner, rows, row_bytes, box_inner, box_rows, int(dtype), int(swizzle), *map};
  next = (next + 1) % kEntries;
  return Status::Ok();
}

// Row stride in bytes of a validated 2-D view; a one-row view may carry any stride, so use the
// packed one (TMA wants a multiple of 16 even when it never steps).
inline uint64_t row_bytes(const TensorView& t) {
  const int64_t stride = t.shape[0] > 1 ? t.strides[0] : t.shape[1];
  return static_cast<uint64_t>(stride * dtype_bits(t.dtype) / 8);
}

// cudaFuncAttributeMaxDynamicSharedMemorySize is per device and per kernel: set it once per device
// (`done`: one static bit set a kernel instance, a bit per device).
template <typename Kernel>
Status opt_in_smem(Kernel kernel, int bytes, std::atomic<uint64_t>& done, const char* op) {
  int dev = 0;
  DSV4_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev), op);
  const uint64_t bit = dev < 64 ? uint64_t(1) << dev : 0;
  if (bit && (done.load(std::memory_order_acquire) & bit)) return Status::Ok();
  DSV4_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), op);
  done.fetch_or(bit, std::memory_order_release);
  return Status::Ok();
}

}  // namespace dsv4::cuda
