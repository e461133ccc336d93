// Host side of the FP4-weight decode GEMM (kernel_decode_fp4.cuh): tensor maps, the kernel
// instance for the format and unit shape, and the split-K reduction (launch.cu's, same kernel).
// Included once, by launch.cu (kernel.cuh defines non-inline kernels, so the GEMM kernels share one
// translation unit).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "core/validate.h"
#include "cuda/common/check.h"
#include "cuda/common/launch_pdl.h"
#include "cuda/common/tensor_map.h"
#include "cuda/gemm/decode_fp4.h"
#include "cuda/gemm/kernel_decode_fp4.cuh"
#include "cuda/gemm/launch_common.h"

namespace dsv4::cuda {
namespace decode_fp4_detail {

constexpr const char* kOp = "gemm";

template <GemmFormat F, bool kMXFP8A, int WR, int WK>
Status launch_one(const CUtensorMap& tm_act, const CUtensorMap& tm_w, const gemm_detail::DecodeArgs& args, int grid,
                  cudaStream_t stream) {
  using T = gemm_detail::DecodeTraits<F, kMXFP8A, WR, WK>;
  auto kernel = gemm_detail::gemm_decode_fp4_kernel<F, kMXFP8A, WR, WK>;
  static std::atomic<uint64_t> smem_set{0};
  DSV4_RETURN_IF_ERROR(opt_in_smem(kernel, T::kSmemBytes, smem_set, kOp));
  kernel<<<grid, T::kThreads, T::kSmemBytes, stream>>>(tm_act, tm_w, args);
  return launch_status(kOp, "gemm_decode_fp4_kernel");
}

template <GemmFormat F, bool kMXFP8A>
Status launch_wr(int wr, int wk, const CUtensorMap& tm_act, const CUtensorMap& tm_w,
                 const gemm_detail::DecodeArgs& args, int grid, cudaStream_t stream) {
  if (wr == 2) return launch_one<F, kMXFP8A, 2, 1>(tm_act, tm_w, args, grid, stream);
  if constexpr (gemm_detail::is_w4a16(F)) {
    if (wk == 4) return launch_one<F, kMXFP8A, 1, 4>(tm_act, tm_w, args, grid, stream);
  }
  return launch_one<F, kMXFP8A, 1, 3>(tm_act, tm_w, args, grid, stream);
}

}  // namespace decode_fp4_detail

// config.h's plan, with experiment overrides for same-binary A/Bs: DSV4_DECODE_FP4_WR (1 or 2) and
// DSV4_DECODE_FP4_SPLITS (K splits; applied when the workspace holds the partials).
inline gemm_detail::DecodeFp4Config decode_fp4_plan(int64_t M, int64_t N, int64_t K, GemmFormat f, int sms,
                                                    int64_t workspace_limit) {
  static const int env_wr = [] {
    const char* e = std::getenv("DSV4_DECODE_FP4_WR");
    return e ? std::atoi(e) : 0;
  }();
  static const int env_wk = [] {
    const char* e = std::getenv("DSV4_DECODE_FP4_WK");
    return e ? std::atoi(e) : 0;
  }();
  static const int env_splits = [] {
    const char* e = std::getenv("DSV4_DECODE_FP4_SPLITS");
    return e ? std::atoi(e) : 0;
  }();
  gemm_detail::DecodeFp4Config c = gemm_detail::choose_decode_fp4_config(M, N, K, f, sms, workspace_limit);
  if (env_wr == 0 && env_splits == 0 && env_wk == 0) return c;
  if ((env_wr == 1 || env_wr == 2) && N % (64 * env_wr) == 0) c.wr = env_wr, c.wk = gemm_detail::decode_fp4_wk(env_wr);
  if (gemm_detail::decode_fp4_wk_ok(f, c.wr, env_wk)) c.wk = env_wk;
  const int kblocks = static_cast<int>(K / gemm_detail::kBK);
  if (env_splits > 0 && int64_t(env_splits) * M * N * 4 <= workspace_limit) {
    c.splits = std::min(env_splits, kblocks);
    c.kblocks_per_split = (kblocks + c.splits - 1) / c.splits;
    c.splits = (kblocks + c.kblocks_per_split - 1) / c.kblocks_per_split;
  }
  c.units = N / (64 * c.wr) * c.splits;
  c.grid = static_cast<int>(std::min<int64_t>(c.units, std::max(sms, 1)));
  c.workspace_bytes = c.splits > 1 ? int64_t(c.splits) * M * N * 4 : 0;
  return c;
}

Status gemm_decode_fp4(const GemmParams& p, const gemm_detail::DecodeFp4Config& cfg, bool mx_a, int sm_count,
                       cudaStream_t stream) {
  using namespace decode_fp4_detail;
  const GemmFormat f = p.format;
  const int64_t M = p.a.shape[0], K = p.a.shape[1], N = p.b.shape[0];
  const bool a_bf16 = gemm_detail::is_w4a16(f);
  CUtensorMap tm_act, tm_w;
  // Tokens: a 16-row box (rows past M are zero-filled), 128 bytes of K a box, 128B swizzle.
  if (a_bf16)
    DSV4_RETURN_IF_ERROR(encode_2d(&tm_act, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, p.a.data, K, M, row_bytes(p.a), 64, 16,
                                   CU_TENSOR_MAP_SWIZZLE_128B, kOp, "a"));
  else
    DSV4_RETURN_IF_ERROR(encode_2d(&tm_act, CU_TENSOR_MAP_DATA_TYPE_UINT8, p.a.data, K, M, row_bytes(p.a), 128, 16,
                                   CU_TENSOR_MAP_SWIZZLE_128B, kOp, "a"));
  // Packed weights: 128 bytes (two 128-K blocks) x 64 * wr rows a stage, 128B swizzle.
  DSV4_RETURN_IF_ERROR(encode_2d(&tm_w, CU_TENSOR_MAP_DATA_TYPE_UINT8, p.b.data, K / 2, N, row_bytes(p.b),
                                 gemm_detail::kDecodeFp4Blocks * 64, static_cast<uint32_t>(64 * cfg.wr),
                                 CU_TENSOR_MAP_SWIZZLE_128B, kOp, "b"));

  gemm_detail::DecodeArgs args;
  args.M = static_cast<int>(M), args.N = static_cast<int>(N), args.K = static_cast<int>(K);
  args.row_units = static_cast<int>(N / (64 * cfg.wr));
  args.splits = cfg.splits;
  args.kblocks_per_split = cfg.kblocks_per_split;
  args.kblocks = static_cast<int>(K / gemm_detail::kBK);
  set_common_args(args, p);
  const int64_t per = f == GemmFormat::kW4A16NVFP4 ? 8 : 4;  // scale bytes a row a 128-K block
  args.b_vec = args.bs_s1 == 1 && args.bs_s0 % per == 0 && reinterpret_cast<uintptr_t>(args.b_scales) % per == 0;
  if (cfg.splits > 1) args.partial = static_cast<float*>(p.workspace.data);
#ifdef DSV4_GEMM_TIMING_KNOBS
  // Timing experiments only: skips the activation permutation, so the results are WRONG. Compiled
  // in only with -DDSV4_GEMM_TIMING_KNOBS, never in a normal build.
  static const bool env_noperm = std::getenv("DSV4_DECODE_FP4_NOPERM") != nullptr;
  args.skip_permute = env_noperm;
  // Consumers only wait for and release each stage (the data pipeline's own pace), and a shorter
  // ring than the layout's (how deep the prefetch should be).
  static const bool env_skipc = std::getenv("DSV4_DECODE_FP4_SKIPC") != nullptr;
  static const int env_ring = [] {
    const char* e = std::getenv("DSV4_DECODE_FP4_RING");
    return e ? std::atoi(e) : 0;
  }();
  args.skip_compute = env_skipc;
  args.ring = env_ring;
  static const bool env_noscale = std::getenv("DSV4_DECODE_FP4_NOSCALE") != nullptr;
  args.skip_scales = env_noscale;
  static const bool env_nowait = std::getenv("DSV4_DECODE_FP4_NOWAIT") != nullptr;
  args.no_wait = env_nowait;
#endif

  switch (f) {
    case GemmFormat::kW4A16MXFP4:
      DSV4_RETURN_IF_ERROR((launch_wr<GemmFormat::kW4A16MXFP4, false>(cfg.wr, cfg.wk, tm_act, tm_w, args, cfg.grid, stream)));
      break;
    case GemmFormat::kW4A16NVFP4:
      DSV4_RETURN_IF_ERROR((launch_wr<GemmFormat::kW4A16NVFP4, false>(cfg.wr, cfg.wk, tm_act, tm_w, args, cfg.grid, stream)));
      break;
    case GemmFormat::kW4A8MXFP4:
      if (mx_a) DSV4_RETURN_IF_ERROR((launch_wr<GemmFormat::kW4A8MXFP4, true>(cfg.wr, cfg.wk, tm_act, tm_w, args, cfg.grid, stream)));
      else DSV4_RETURN_IF_ERROR((launch_wr<GemmFormat::kW4A8MXFP4, false>(cfg.wr, cfg.wk, tm_act, tm_w, args, cfg.grid, stream)));
      break;
    case GemmFormat::kFP8Block:
      return {StatusCode::kInternal, "gemm: the FP4 decode kernel got FP8 weights"};
  }
  if (cfg.splits > 1)
    DSV4_RETURN_IF_ERROR(launch_splitk_reduce(args.partial, cfg.splits, args.M, args.N, args.bias, args.residual,
                                              args.res_ld, args.d, args.d_ld, sm_count, stream, kOp));
  return Status::Ok();
}

}  // namespace dsv4::cuda
