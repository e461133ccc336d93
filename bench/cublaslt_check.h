// cuBLASLt helpers for the bench files that drive it (ceilings and peers): status -> BenchError, the
// objects of one matmul, and the TN GEMM used both as the fp8/bf16 ceiling and as the GEMM peer.
// Only for translation units built with CUDA.
#pragma once
#include <cublasLt.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "harness.h"

#define DSV4_BENCH_LT(call) ::dsv4::bench::lt_check((call), #call)

namespace dsv4::bench {

inline void lt_check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw BenchError(std::string(what) + ": " + cublasLtGetStatusString(s));
}

// The cuBLASLt objects of one matmul, destroyed in reverse order of creation. A class holding it
// declares it after its workspace buffer, so these go before the memory they were planned for.
struct LtObjects {
  cublasLtHandle_t h = nullptr;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  LtObjects() = default;
  LtObjects(const LtObjects&) = delete;
  LtObjects& operator=(const LtObjects&) = delete;
  ~LtObjects() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    if (h) cublasLtDestroy(h);
  }
};


// cuBLASLt D[M, N] bf16 = A[M, K] * B[N, K]^T, i.e. column-major D^T = B^T(op T) * A: the TN layout
// FP8 cuBLASLt requires. fp8 uses per-tensor scales of 1.
class LtGemm {
 public:
  LtGemm(bool fp8, int64_t M, int64_t N, int64_t K, size_t workspace_bytes = 32 << 20)
      : ws_(workspace_bytes), sc_(32) {
    const float ones[8] = {1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f};
    to_device(sc_.data(), ones, sizeof ones);
    const cudaDataType_t in = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    DSV4_BENCH_LT(cublasLtCreate(&lt_.h));
    DSV4_BENCH_LT(cublasLtMatmulDescCreate(&lt_.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    DSV4_BENCH_LT(cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    DSV4_BENCH_LT(cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (fp8) {
      // 16 bytes apart: cuBLASLt answers NOT_SUPPORTED for a scale pointer only 4-byte aligned.
      const float* sa = sc_.as<float>();
      const float* sb = sc_.as<float>() + 4;
      DSV4_BENCH_LT(cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa));
      DSV4_BENCH_LT(cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb));
    }
    DSV4_BENCH_LT(cublasLtMatrixLayoutCreate(&lt_.la, in, K, N, K));
    DSV4_BENCH_LT(cublasLtMatrixLayoutCreate(&lt_.lb, in, K, M, K));
    DSV4_BENCH_LT(cublasLtMatrixLayoutCreate(&lt_.ld, CUDA_R_16BF, N, M, N));
    DSV4_BENCH_LT(cublasLtMatmulPreferenceCreate(&lt_.pref));
    const size_t wsb = ws_.size();
    DSV4_BENCH_LT(cublasLtMatmulPreferenceSetAttribute(lt_.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    DSV4_BENCH_LT(cublasLtMatmulAlgoGetHeuristic(lt_.h, lt_.op, lt_.la, lt_.lb, lt_.ld, lt_.ld, lt_.pref, kMaxAlgos, heur_, &found_));
    if (found_ == 0) throw BenchError(std::string("cuBLASLt has no ") + (fp8 ? "fp8" : "bf16") + " algorithm for this shape");
  }
  // The heuristic's first choice can still refuse at run time; keep the first that runs.
  void select(const void* a, const void* b, void* d) {
    const float alpha = 1.f, beta = 0.f;
    cublasStatus_t last = CUBLAS_STATUS_NOT_SUPPORTED;
    for (; pick_ < found_; ++pick_) {
      if (heur_[pick_].workspaceSize > ws_.size()) continue;
      last = cublasLtMatmul(lt_.h, lt_.op, &alpha, b, lt_.la, a, lt_.lb, &beta, d, lt_.ld, d, lt_.ld, &heur_[pick_].algo, ws_.data(),
                            ws_.size(), static_cast<cudaStream_t>(stream()));
      if (last == CUBLAS_STATUS_SUCCESS) return;
    }
    lt_check(last, "cublasLtMatmul (every heuristic algorithm)");
  }
  void run(const void* a, const void* b, void* d) {
    const float alpha = 1.f, beta = 0.f;
    DSV4_BENCH_LT(cublasLtMatmul(lt_.h, lt_.op, &alpha, b, lt_.la, a, lt_.lb, &beta, d, lt_.ld, d, lt_.ld, &heur_[pick_].algo, ws_.data(),
                           ws_.size(), static_cast<cudaStream_t>(stream())));
  }

 private:
  DeviceBuffer ws_, sc_;
  LtObjects lt_;  // after the workspace: destroyed first
  static constexpr int kMaxAlgos = 8;
  cublasLtMatmulHeuristicResult_t heur_[kMaxAlgos] = {};
  int found_ = 0, pick_ = 0;
};

}  // namespace dsv4::bench

