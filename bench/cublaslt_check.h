// cuBLASLt helpers for the bench files that drive it (ceilings and peers): status -> BenchError, the
// objects of one matmul, and the TN GEMM used both as the fp8/bf16 ceiling and as the GEMM peer.
// Only for translation units built with CUDA.
#pragma once
#include <cublasLt.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "dsv4/numerics.h"
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


// How an fp8 LtGemm scales its operands: one f32 a tensor (1.0), or DeepSeek's blocks, the same
// math as dsv4's FP8Block format: A per token and 128 K (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F),
// B per 128 x 128 block (BLK128x128_32F), both f32, supported by cuBLASLt 12.9+ on sm_90. Their
// layouts (lt_block_scales below): A's [K/128][M] (M contiguous, "outer-dim-major"), B's
// [N/128][round_up(K/128, 4)] (K blocks contiguous, rows 16-byte aligned).
enum class LtScales { kTensor, kBlock };

// cuBLASLt D[M, N] bf16 = A[M, K] * B[N, K]^T, i.e. column-major D^T = B^T(op T) * A: the TN layout
// FP8 cuBLASLt requires. fp8 uses per-tensor scales of 1 unless `scales` is kBlock; then set_scales
// names the scale tensors before select() / run(), and the operands trade places: cuBLASLt takes
// the 1x128-scaled operand as its A and the 128 x 128 one as its B only (its heuristic refuses the
// other order, CUDA 13.0), so it computes column-major D[M, N] = A(op T) * B, i.e. D^T row-major
// ([N][M]: same work and bytes, transposed store).
class LtGemm {
 public:
  LtGemm(bool fp8, int64_t M, int64_t N, int64_t K, LtScales scales = LtScales::kTensor, size_t workspace_bytes = 32 << 20)
      : ws_(workspace_bytes), sc_(32) {
    const float ones[8] = {1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f};
    to_device(sc_.data(), ones, sizeof ones);
    const cudaDataType_t in = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    DSV4_BENCH_LT(cublasLtCreate(&lt_.h));
    DSV4_BENCH_LT(cublasLtMatmulDescCreate(&lt_.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    DSV4_BENCH_LT(cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    DSV4_BENCH_LT(cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    a_first_ = fp8 && scales == LtScales::kBlock;
    if (a_first_) {
      const cublasLtMatmulMatrixScale_t am = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F,
                                        wm = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
      DSV4_BENCH_LT(cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &am, sizeof am));
      DSV4_BENCH_LT(cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &wm, sizeof wm));
    } else if (fp8) {
      // 16 bytes apart: cuBLASLt answers NOT_SUPPORTED for a scale pointer only 4-byte aligned.
      const float* sa = sc_.as<float>();
      const float* sb = sc_.as<float>() + 4;
      DSV4_BENCH_LT(cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa));
      DSV4_BENCH_LT(cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb));
    }
    DSV4_BENCH_LT(cublasLtMatrixLayoutCreate(&lt_.la, in, K, a_first_ ? M : N, K));
    DSV4_BENCH_LT(cublasLtMatrixLayoutCreate(&lt_.lb, in, K, a_first_ ? N : M, K));
    DSV4_BENCH_LT(cublasLtMatrixLayoutCreate(&lt_.ld, CUDA_R_16BF, a_first_ ? M : N, a_first_ ? N : M, a_first_ ? M : N));
    DSV4_BENCH_LT(cublasLtMatmulPreferenceCreate(&lt_.pref));
    const size_t wsb = ws_.size();
    DSV4_BENCH_LT(cublasLtMatmulPreferenceSetAttribute(lt_.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    what_ = fp8 ? (a_first_ ? "block-scaled fp8" : "fp8") : "bf16";
    if (!a_first_) plan();  // kBlock plans in select(): the heuristic wants the scale pointers set
  }
  // kBlock: the scale tensors of the next calls (device, layouts of lt_block_scales).
  void set_scales(const float* a_scales, const float* b_scales) {
    DSV4_BENCH_LT(cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scales, sizeof a_scales));
    DSV4_BENCH_LT(cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scales, sizeof b_scales));
  }
  // The heuristic's first choice can still refuse at run time; keep the first that runs.
  void select(const void* a, const void* b, void* d) {
    if (found_ == 0) plan();
    const float alpha = 1.f, beta = 0.f;
    cublasStatus_t last = CUBLAS_STATUS_NOT_SUPPORTED;
    for (; pick_ < found_; ++pick_) {
      if (heur_[pick_].workspaceSize > ws_.size()) continue;
      last = cublasLtMatmul(lt_.h, lt_.op, &alpha, first(a, b), lt_.la, second(a, b), lt_.lb, &beta, d, lt_.ld, d, lt_.ld, &heur_[pick_].algo, ws_.data(),
                            ws_.size(), static_cast<cudaStream_t>(stream()));
      if (last == CUBLAS_STATUS_SUCCESS) return;
    }
    lt_check(last, "cublasLtMatmul (every heuristic algorithm)");
  }
  void run(const void* a, const void* b, void* d) {
    const float alpha = 1.f, beta = 0.f;
    DSV4_BENCH_LT(cublasLtMatmul(lt_.h, lt_.op, &alpha, first(a, b), lt_.la, second(a, b), lt_.lb, &beta, d, lt_.ld, d, lt_.ld, &heur_[pick_].algo, ws_.data(),
                           ws_.size(), static_cast<cudaStream_t>(stream())));
  }

 private:
  void plan() {
    DSV4_BENCH_LT(cublasLtMatmulAlgoGetHeuristic(lt_.h, lt_.op, lt_.la, lt_.lb, lt_.ld, lt_.ld, lt_.pref, kMaxAlgos, heur_, &found_));
    if (found_ == 0) throw BenchError(std::string("cuBLASLt has no ") + what_ + " algorithm for this shape");
  }
  const char* what_ = "";
  const void* first(const void* a, const void* b) const { return a_first_ ? a : b; }
  const void* second(const void* a, const void* b) const { return a_first_ ? b : a; }
  bool a_first_ = false;  // kBlock: cuBLASLt's A is our A
  DeviceBuffer ws_, sc_;
  LtObjects lt_;  // after the workspace: destroyed first
  static constexpr int kMaxAlgos = 8;
  cublasLtMatmulHeuristicResult_t heur_[kMaxAlgos] = {};
  int found_ = 0, pick_ = 0;
};

// dsv4's FP8Block ue8m0 scales (A [M, K/128], B [N/128, K/128], row-major) as the f32 tensors an
// LtScales::kBlock GEMM takes: A's transposed to [K/128][M], B's rows padded to a multiple of 4
// K blocks (padding 1.0, never read for K's own blocks).
inline int64_t lt_b_scale_cols(int64_t K) { return (K / 128 + 3) / 4 * 4; }
inline void lt_block_scales(const uint8_t* a_ue8m0, const uint8_t* b_ue8m0, int64_t M, int64_t N, int64_t K,
                            float* a_out, float* b_out) {
  const int64_t kb = K / 128, nb = N / 128, ldb = lt_b_scale_cols(K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < kb; ++k) a_out[k * M + m] = num::ue8m0_to_float(a_ue8m0[m * kb + k]);
  for (int64_t n = 0; n < nb; ++n)
    for (int64_t k = 0; k < ldb; ++k) b_out[n * ldb + k] = k < kb ? num::ue8m0_to_float(b_ue8m0[n * kb + k]) : 1.f;
}

}  // namespace dsv4::bench

