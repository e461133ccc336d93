// Host side of the FP4-weight decode GEMM (kernel_decode_fp4.cuh): tensor maps, the kernel
// instance for the format and unit shape, and the split-K reduction (launch.cu's, same kernel).
// Included once, by launch.cu (kernel.cuh defines non-inline kernels, so the GEMM kernels share one
// translation unit).
#pragma once
#include <cudaTypedefs.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>

#include "core/validate.h"
#include "cuda/common/check.h"
#include "cuda/common/launch_pdl.h"
#include "cuda/gemm/decode_fp4.h"
#include "cuda/gemm/kernel_decode_fp4.cuh"

namespace dsv4::cuda {
namespace decode_fp4_detail {

constexpr const char* kOp = "gemm";

Status encoder(PFN_cuTensorMapEncodeTiled_v12000* out) {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) == cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  });
  if (!fn) return {StatusCode::kUnsupported, "gemm: the CUDA driver does not provide cuTensorMapEncodeTiled"};
  *out = fn;
  return Status::Ok();
}

// A 2-D map (inner elements contiguous, rows row_bytes apart), boxes box_inner x box_rows. Serving
// reuses the same buffers, so each thread keeps its last few encodings (a microsecond each).
Status encode(CUtensorMap* map, CUtensorMapDataType dtype, const void* base, uint64_t inner, uint64_t rows,
              uint64_t row_bytes, uint32_t box_inner, uint32_t box_rows, CUtensorMapSwizzle swizzle) {
  struct Entry {
    const void* base;
    uint64_t inner, rows, row_bytes;
    uint32_t box_inner, box_rows;
    int dtype, swizzle;
    CUtensorMap map;
  };
  constexpr int kEntries = 16;
  thread_local Entry cache[kEntries] = {};
  thread_local int next = 0;
  for (const Entry& e : cache)
    if (e.base == base && e.base && e.inner == inner && e.rows == rows && e.row_bytes == row_bytes &&
        e.box_inner == box_inner && e.box_rows == box_rows && e.dtype == int(dtype) && e.swizzle == int(swizzle)) {
      *map = e.map;
      return Status::Ok();
    }
  PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  DSV4_RETURN_IF_ERROR(encoder(&fn));
  const cuuint64_t dims[2] = {inner, rows};
  const cuuint64_t strides[1] = {row_bytes};
  const cuuint32_t box[2] = {box_inner, box_rows};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = fn(map, dtype, 2, const_cast<void*>(base), dims, strides, box, elem_strides,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return {StatusCode::kCudaError, "gemm (decode fp4): cuTensorMapEncodeTiled failed with CUresult " +
                                        std::to_string(static_cast<int>(r))};
  cache[next] = Entry{base, inner, rows, row_bytes, box_inner, box_rows, int(dtype), int(swizzle), *map};
  next = (next + 1) % kEntries;
  return Status::Ok();
}

uint64_t row_bytes_of(const TensorView& t) {
  const int64_t stride = t.shape[0] > 1 ? t.strides[0] : t.shape[1];
  return static_cast<uint64_t>(stride * dtype_bits(t.dtype) / 8);
}

template <GemmFormat F, bool kMXFP8A, int WR, int WK>
Status launch_one(const CUtensorMap& tm_act, const CUtensorMap& tm_w, const gemm_detail::DecodeArgs& args, int grid,
                  cudaStream_t stream) {
  using T = gemm_detail::DecodeTraits<F, kMXFP8A, WR, WK>;
  auto kernel = gemm_detail::gemm_decode_fp4_kernel<F, kMXFP8A, WR, WK>;
  static std::atomic<uint64_t> smem_set{0};  // the opt-in is per device: a bit each
  int dev = 0;
  DSV4_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev), kOp);
  const uint64_t bit = dev < 64 ? uint64_t(1) << dev : 0;
  if (!bit || !(smem_set.load(std::memory_order_acquire) & bit)) {
    DSV4_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmemBytes),
                              kOp);
    smem_set.fetch_or(bit, std::memory_order_release);
  }
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
    DSV4_RETURN_IF_ERROR(encode(&tm_act, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, p.a.data, K, M, row_bytes_of(p.a), 64, 16,
                                CU_TENSOR_MAP_SWIZZLE_128B));
  else
    DSV4_RETURN_IF_ERROR(encode(&tm_act, CU_TENSOR_MAP_DATA_TYPE_UINT8, p.a.data, K, M, row_bytes_of(p.a), 128, 16,
                                CU_TENSOR_MAP_SWIZZLE_128B));
  // Packed weights: 64 bytes (128 K) x 64 * wr rows, no swizzle.
  DSV4_RETURN_IF_ERROR(encode(&tm_w, CU_TENSOR_MAP_DATA_TYPE_UINT8, p.b.data, K / 2, N, row_bytes_of(p.b), 64,
                              static_cast<uint32_t>(64 * cfg.wr), CU_TENSOR_MAP_SWIZZLE_NONE));

  gemm_detail::DecodeArgs args;
  args.M = static_cast<int>(M), args.N = static_cast<int>(N), args.K = static_cast<int>(K);
  args.row_units = static_cast<int>(N / (64 * cfg.wr));
  args.splits = cfg.splits;
  args.kblocks_per_split = cfg.kblocks_per_split;
  args.kblocks = static_cast<int>(K / gemm_detail::kBK);
  if (p.a_scales.defined()) {
    args.a_scales = static_cast<const uint8_t*>(p.a_scales.data);
    args.as_s0 = p.a_scales.strides[0], args.as_s1 = p.a_scales.strides[1];
    args.a_scale_f32 = p.a_scales.dtype == DType::F32;
  }
  args.b_scales = static_cast<const uint8_t*>(p.b_scales.data);
  args.bs_s0 = p.b_scales.strides[0], args.bs_s1 = p.b_scales.strides[1];
  const int64_t per = f == GemmFormat::kW4A16NVFP4 ? 8 : 4;  // scale bytes a row a 128-K block
  args.b_vec = args.bs_s1 == 1 && args.bs_s0 % per == 0 && reinterpret_cast<uintptr_t>(args.b_scales) % per == 0;
  if (p.b_global_scale.defined()) args.b_global = static_cast<const float*>(p.b_global_scale.data);
  if (p.bias.defined()) args.bias = static_cast<const __nv_bfloat16*>(p.bias.data);
  if (p.residual.defined()) {
    args.residual = static_cast<const __nv_bfloat16*>(p.residual.data);
    args.res_ld = p.residual.strides[0];
  }
  args.d = static_cast<__nv_bfloat16*>(p.d.data);
  args.d_ld = p.d.strides[0];
  if (cfg.splits > 1) args.partial = static_cast<float*>(p.workspace.data);

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
  if (cfg.splits > 1) {
    // The same PDL reduction as launch.cu's split-K path.
    const int64_t quads = M * N / 4;
    const int threads = 256;
    const int blocks = static_cast<int>(std::min<int64_t>((quads + threads - 1) / threads, int64_t(sm_count) * 8));
    DSV4_CUDA_RETURN_IF_ERROR(
        launch_programmatic(gemm_detail::splitk_reduce_kernel, dim3(blocks), dim3(threads), stream,
                            static_cast<const float*>(args.partial), cfg.splits, args.M, args.N, args.bias,
                            args.residual, args.res_ld, args.d, args.d_ld),
        kOp);
  }
  return Status::Ok();
}

}  // namespace dsv4::cuda
