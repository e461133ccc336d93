// CUDA error handling for the backend: every runtime call and every launch is checked and turned
// into a Status naming the op; nothing exits.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "dsv4/status.h"

namespace dsv4::cuda {

inline Status cuda_status(cudaError_t e, const char* op, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return {StatusCode::kCudaError,
           std::string(op) + ": " + what + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")"};
}

// After a <<<>>> launch: configuration errors surface through cudaGetLastError.
inline Status launch_status(const char* op, const char* kernel) { return cuda_status(cudaGetLastError(), op, kernel); }

}  // namespace dsv4::cuda

#define DSV4_CUDA_RETURN_IF_ERROR(call, op)                                  \
  do {                                                                      \
    ::dsv4::Status _dsv4_cs = ::dsv4::cuda::cuda_status((call), (op), #call); \
    if (!_dsv4_cs.ok()) return _dsv4_cs;                                    \
  } while (0)
