// cuBLASLt status -> BenchError, for the bench files that drive cuBLASLt (ceilings and peers).
// Only for translation units built with CUDA.
#pragma once
#include <cublasLt.h>

#include <string>

#include "harness.h"

namespace dsv4::bench {

inline void lt_check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw BenchError(std::string(what) + ": " + cublasLtGetStatusString(s));
}

}  // namespace dsv4::bench

#define DSV4_BENCH_LT(call) ::dsv4::bench::lt_check((call), #call)
