// Host side of the block-scaled GEMMs: picks the configuration (config.h), encodes the TMA tensor
// maps, launches the persistent kernel (and the split-K reduction) on the caller's stream. Nothing
// here allocates or synchronises, so the op can be captured in a CUDA graph.
#include <atomic>
#include <mutex>
#include <string>

#include "backend/gemm.h"
#include "core/validate.h"
#include "cuda/common/check.h"
#include "cuda/common/launch_pdl.h"
#include "cuda/common/tensor_map.h"
#include "cuda/gemm/config.h"
#include "cuda/gemm/decode_fp4.h"
#include "cuda/gemm/kernel.cuh"
#include "cuda/gemm/launch_common.h"
#include "cuda/gemm/launch_decode_fp4.cuh"

namespace dsv4::cuda {
namespace {

constexpr const char* kOp = "gemm";
constexpr int kMaxDevices = 64;

// Multiprocessor count of `device`, cached (the attribute query is not free on every call).
Status sm_count(int device, int* out) {
  static int cache[kMaxDevices] = {};
  if (device >= 0 && device < kMaxDevices && cache[device] > 0) {
    *out = cache[device];
    return Status::Ok();
  }
  int n = 0;
  DSV4_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), kOp);
  if (device >= 0 && device < kMaxDevices) cache[device] = n;
  *out = n;
  return Status::Ok();
}

class DeviceGuard {
 public:
  Status enter(int device) {
    DSV4_CUDA_RETURN_IF_ERROR(cudaGetDevice(&prev_), kOp);
    if (prev_ != device) DSV4_CUDA_RETURN_IF_ERROR(cudaSetDevice(device), kOp);
    else prev_ = -1;
    return Status::Ok();
  }
  ~DeviceGuard() {
    if (prev_ >= 0) (void)cudaSetDevice(prev_);
  }

 private:
  int prev_ = -1;
};

template <GemmFormat F, int BM, bool kMXFP8A, int BN = gemm_detail::kBN, bool kPreB = false>
Status launch_kernel(const CUtensorMap& tm_a, const CUtensorMap& tm_b, const CUtensorMap& tm_d,
                     const gemm_detail::KernelArgs& args, int grid, cudaStream_t stream) {
  using T = gemm_detail::Traits<F, BM, kMXFP8A, BN, kPreB>;
  auto kernel = gemm_detail::gemm_kernel<F, BM, kMXFP8A, BN, kPreB>;
  static std::atomic<uint64_t> smem_set{0};
  DSV4_RETURN_IF_ERROR(opt_in_smem(kernel, T::kSmemBytes, smem_set, kOp));
  if constexpr (kPreB) {
    // The expansion pass's programmatic dependent (the kernel waits for its results first thing).
    return cuda_status(launch_programmatic_smem(kernel, dim3(grid), dim3(T::kThreads), T::kSmemBytes, stream, tm_a,
                                                tm_b, tm_d, args),
                       kOp, "gemm_kernel launch");
  }
  kernel<<<grid, T::kThreads, T::kSmemBytes, stream>>>(tm_a, tm_b, tm_d, args);
  return launch_status(kOp, "gemm_kernel");
}

template <GemmFormat F, bool kMXFP8A = false>
Status launch_bm(int bm, int bn, bool pre, const CUtensorMap& tm_a, const CUtensorMap& tm_b, const CUtensorMap& tm_d,
                 const gemm_detail::KernelArgs& args, int grid, cudaStream_t stream) {
  if constexpr (gemm_detail::is_w4a16(F)) {
    if (pre && bn == gemm_detail::kBNWide)
      return launch_kernel<F, 128, false, gemm_detail::kBNWide, true>(tm_a, tm_b, tm_d, args, grid, stream);
  }
  if constexpr (F != GemmFormat::kFP8Block && !kMXFP8A) {
    if (pre) return launch_kernel<F, 128, false, gemm_detail::kBN, true>(tm_a, tm_b, tm_d, args, grid, stream);
  }
  if (bm == 64) return launch_kernel<F, 64, kMXFP8A>(tm_a, tm_b, tm_d, args, grid, stream);
  return launch_kernel<F, 128, kMXFP8A>(tm_a, tm_b, tm_d, args, grid, stream);
}

// The expansion pass of a pre-expanded GEMM: B [b_rows, K] packed e2m1 into the workspace.
template <GemmFormat F>
Status launch_pre_expand(const GemmParams& p, int64_t b_rows, int64_t K, uint8_t* ws, cudaStream_t stream) {
  const int kblocks = static_cast<int>(K / gemm_detail::kBK);
  const int64_t chunks = b_rows * K / (F == GemmFormat::kW4A8MXFP4 ? 32 : 8);  // threads (pre_expand_kernel)
  const int64_t blocks64 = (chunks + 255) / 256;
  if (blocks64 > INT32_MAX) return {StatusCode::kUnsupported, "gemm: weights too large to expand in one pass"};
  const int blocks = static_cast<int>(blocks64);
  const gemm_detail::PreExpandLayout l = gemm_detail::pre_expand_layout(F, b_rows, K);
  const uint8_t* bs = static_cast<const uint8_t*>(p.b_scales.data);
  const int64_t bs0 = p.b_scales.strides[0], bs1 = p.b_scales.strides[1];
  // Four exponents a 128-K block in one load where the layout allows (see load_exponents4).
  const bool vec4 = bs1 == 1 && bs0 % 4 == 0 && reinterpret_cast<uintptr_t>(bs) % 4 == 0;
  uint32_t* flag = reinterpret_cast<uint32_t*>(ws + l.flag);
  int n_stats = 0;
  if constexpr (F == GemmFormat::kW4A8MXFP4) {
    const int64_t warps = (b_rows + gemm_detail::kBK - 1) / gemm_detail::kBK * kblocks;
    n_stats = static_cast<int>(std::min<int64_t>((warps + 7) / 8, gemm_detail::kStatsCtas));
    gemm_detail::w4a8_block_stats_kernel<<<n_stats, 256, 0, stream>>>(
        bs, bs0, bs1, vec4, static_cast<int>(b_rows), kblocks, reinterpret_cast<float*>(ws + l.block_scales),
        ws + l.block_exps, ws + l.cta_flags);
    DSV4_RETURN_IF_ERROR(launch_status(kOp, "w4a8_block_stats_kernel"));
  }
  const uint8_t* b = static_cast<const uint8_t*>(p.b.data);
  const int64_t b_ld = static_cast<int64_t>(row_bytes(p.b));
  float* row_scales = reinterpret_cast<float*>(ws + l.row_scales);
  if constexpr (F == GemmFormat::kW4A8MXFP4) {
    // The statistics kernel's programmatic dependent: the pass's loads of B overlap the statistics.
    return cuda_status(launch_programmatic(gemm_detail::pre_expand_kernel<F>, dim3(blocks), dim3(256), stream, b, b_ld,
                                           bs, bs0, bs1, vec4, static_cast<int>(b_rows), kblocks, ws, row_scales,
                                           static_cast<const uint8_t*>(ws + l.block_exps),
                                           static_cast<const uint8_t*>(ws + l.cta_flags), n_stats, flag),
                       kOp, "pre_expand_kernel launch");
  }
  gemm_detail::pre_expand_kernel<F><<<blocks, 256, 0, stream>>>(b, b_ld, bs, bs0, bs1, vec4, static_cast<int>(b_rows),
                                                                kblocks, ws, row_scales, ws + l.block_exps,
                                                                ws + l.cta_flags, n_stats, flag);
  return launch_status(kOp, "pre_expand_kernel");
}

}  // namespace

// Experiment override for same-binary A/Bs: the M from which FP4 weights are expanded before the
// GEMM (config.h, pre_expand_min_m), both formats; unset or 0 keeps the heuristic.
static int64_t env_pre_expand_min_m() {
  static const int64_t v = [] {
    const char* e = std::getenv("DSV4_GEMM_PRE_EXPAND_MIN_M");
    return e ? std::atoll(e) : 0;
  }();
  return v;
}

int64_t gemm_workspace_size(GemmFormat format, int64_t M, int64_t N, int64_t K, int device_index) {
  int sms = 0;
  if (!sm_count(device_index, &sms).ok()) {
    cudaGetLastError();
    return 0;
  }
  if (gemm_detail::decode_fp4_for(M, format, false))
    return decode_fp4_plan(M, N, K, format, sms, int64_t(1) << 62).workspace_bytes;
  return gemm_detail::choose_gemm_config(M, N, K, format, sms, int64_t(1) << 62, N, env_pre_expand_min_m())
      .workspace_bytes;
}

namespace {

// One launch for a plain GEMM (group_rows == nullptr) or a contiguous grouped one: N is the output
// width (B rows a group), B holds the groups' weights stacked as [num_groups * N, K].
Status launch(const GemmParams& p, int64_t N, const int32_t* group_rows, int num_groups, Stream stream_) {
  const GemmFormat f = p.format;
  const int64_t M = p.a.shape[0], K = p.a.shape[1], b_rows = p.b.shape[0];
  if (M > INT32_MAX / 2 || b_rows > INT32_MAX / 2 || K > INT32_MAX / 2)
    return {StatusCode::kUnsupported, "gemm: dimensions beyond 2^30 are not supported by the CUDA kernels"};
  DeviceGuard guard;
  DSV4_RETURN_IF_ERROR(guard.enter(p.d.device.index));
  int sms = 0;
  DSV4_RETURN_IF_ERROR(sm_count(p.d.device.index, &sms));
  const int64_t ws_bytes = p.workspace.defined() && !group_rows ? p.workspace.numel() : 0;
  // FP4 weights at M <= 16 (plain GEMMs): the register-A decode kernel (kernel_decode_fp4.cuh).
  if (gemm_detail::decode_fp4_for(M, f, group_rows != nullptr))
    return gemm_decode_fp4(p, decode_fp4_plan(M, N, K, f, sms, ws_bytes),
                           f == GemmFormat::kW4A8MXFP4 && p.a_scales.shape[1] == K / 32, sms,
                           static_cast<cudaStream_t>(stream_));
  gemm_detail::GemmConfig cfg =
      gemm_detail::choose_gemm_config(std::max<int64_t>(M / num_groups, 1), N, K, f, sms, ws_bytes, b_rows,
                                      env_pre_expand_min_m());
  // W4A8 with MXFP8 activations promotes every 32 along K; it keeps the in-kernel expansion.
  const bool mx_a = f == GemmFormat::kW4A8MXFP4 && p.a_scales.shape[1] == K / 32;
  const bool pre = cfg.pre_expand && !mx_a;
  if (group_rows) {
    // Group sizes live on the device: bound the tile count (each group wastes at most one M tile).
    const int64_t units = ((M + cfg.bm - 1) / cfg.bm + num_groups) * (N / cfg.bn);
    cfg.grid = static_cast<int>(std::min<int64_t>(units, sms));
  }

  const bool a_bf16 = gemm_detail::is_w4a16(f);
  const bool b_fp4 = f != GemmFormat::kFP8Block;
  // A plain GEMM of at most 16 rows loads a 16-row A box instead of a BM-row one that was 3/4 or
  // more zero fill (kernel.cuh, KernelArgs::tma_bytes). H100, same-run A/B, three rounds: FP8
  // 16x4096x7168 17.1/18.5/16.5 vs 20.6/20.0/20.4 us; boxes of the real rows at M = 48 (48 rows)
  // and M = 1 (8 rows) measured no better or worse, so only M <= 16 takes it.
  const int a_box_rows = !group_rows && M <= 16 && cfg.bm > 16 ? 16 : cfg.bm;
  CUtensorMap tm_a, tm_b;
  if (a_bf16)
    DSV4_RETURN_IF_ERROR(encode_2d(&tm_a, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, p.a.data, K, M, row_bytes(p.a), 64,
                                   static_cast<uint32_t>(a_box_rows), CU_TENSOR_MAP_SWIZZLE_128B, kOp, "a"));
  else
    DSV4_RETURN_IF_ERROR(encode_2d(&tm_a, CU_TENSOR_MAP_DATA_TYPE_UINT8, p.a.data, K, M, row_bytes(p.a), 128,
                                   static_cast<uint32_t>(a_box_rows), CU_TENSOR_MAP_SWIZZLE_128B, kOp, "a"));
  uint8_t* ws = static_cast<uint8_t*>(p.workspace.data);
  if (pre && a_bf16)  // bf16 B expanded into the workspace, read like A
    DSV4_RETURN_IF_ERROR(encode_2d(&tm_b, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, ws, K, b_rows, K * 2, 64,
                                   static_cast<uint32_t>(cfg.bn), CU_TENSOR_MAP_SWIZZLE_128B, kOp, "b (expanded)"));
  else if (pre)  // e4m3 B expanded into the workspace
    DSV4_RETURN_IF_ERROR(encode_2d(&tm_b, CU_TENSOR_MAP_DATA_TYPE_UINT8, ws, K, b_rows, K, 128, gemm_detail::kBN,
                                   CU_TENSOR_MAP_SWIZZLE_128B, kOp, "b (expanded)"));
  else if (b_fp4)  // packed bytes, expanded by the consumers: no swizzle needed
    DSV4_RETURN_IF_ERROR(encode_2d(&tm_b, CU_TENSOR_MAP_DATA_TYPE_UINT8, p.b.data, K / 2, b_rows, row_bytes(p.b), 64,
                                   gemm_detail::kBN, CU_TENSOR_MAP_SWIZZLE_NONE, kOp, "b"));
  else
    DSV4_RETURN_IF_ERROR(encode_2d(&tm_b, CU_TENSOR_MAP_DATA_TYPE_UINT8, p.b.data, K, b_rows, row_bytes(p.b), 128,
                                   cfg.bn, CU_TENSOR_MAP_SWIZZLE_128B, kOp, "b"));

  gemm_detail::KernelArgs args;
  args.M = static_cast<int>(M), args.N = static_cast<int>(N), args.K = static_cast<int>(K);
  args.n_tiles = static_cast<int>(N / cfg.bn);
  if (a_box_rows < cfg.bm) args.tma_bytes = gemm_detail::tma_stage_bytes(f, a_box_rows, cfg.bn, pre);
  args.splits = cfg.splits;
  args.kblocks_per_split = cfg.kblocks_per_split;
  args.kblocks = static_cast<int>(K / cfg.stage_k);
  args.num_groups = num_groups;
  args.group_rows = group_rows;
  set_common_args(args, p);
  args.b_scale_f32 = p.b_scales.dtype == DType::F32;
  if (pre) {  // the expansion's f32 scales (W4A8; unused by W4A16)
    const gemm_detail::PreExpandLayout l = gemm_detail::pre_expand_layout(f, b_rows, K);
    args.b_scales = ws + l.row_scales;
    args.b_block_scales = reinterpret_cast<const float*>(ws + l.block_scales);
    args.pre_flag = reinterpret_cast<const uint32_t*>(ws + l.flag);
    args.bs_s0 = K / gemm_detail::kBK, args.bs_s1 = 1;
    args.b_scale_f32 = true;
  }
  if (cfg.splits > 1) args.partial = reinterpret_cast<float*>(ws);
  // D by TMA store where the epilogue is a plain bf16 write (kernel.cuh says why); the map is
  // otherwise unused and tm_a stands in for it.
  CUtensorMap tm_d = tm_a;
  const uint64_t d_row_bytes = row_bytes(p.d);
  if (cfg.splits == 1 && cfg.bn >= gemm_detail::kBN && !args.bias && !args.residual &&
      reinterpret_cast<uintptr_t>(p.d.data) % 16 == 0 &&
      d_row_bytes % 16 == 0) {
    DSV4_RETURN_IF_ERROR(encode_2d(&tm_d, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, p.d.data, N, M, d_row_bytes, 64, 64,
                                   CU_TENSOR_MAP_SWIZZLE_128B, kOp, "d"));
    args.tma_store_d = true;
  }

  cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  if (pre) {
    switch (f) {
      case GemmFormat::kW4A8MXFP4: DSV4_RETURN_IF_ERROR(launch_pre_expand<GemmFormat::kW4A8MXFP4>(p, b_rows, K, ws, stream)); break;
      case GemmFormat::kW4A16MXFP4: DSV4_RETURN_IF_ERROR(launch_pre_expand<GemmFormat::kW4A16MXFP4>(p, b_rows, K, ws, stream)); break;
      case GemmFormat::kW4A16NVFP4: DSV4_RETURN_IF_ERROR(launch_pre_expand<GemmFormat::kW4A16NVFP4>(p, b_rows, K, ws, stream)); break;
      case GemmFormat::kFP8Block: break;
    }
  }
  switch (f) {
    case GemmFormat::kFP8Block:
      if (cfg.bn == gemm_detail::kBNDecode)
        DSV4_RETURN_IF_ERROR((launch_kernel<GemmFormat::kFP8Block, 64, false, gemm_detail::kBNDecode>(
            tm_a, tm_b, tm_d, args, cfg.grid, stream)));
      else if (cfg.bn == 2 * gemm_detail::kBNDecode)
        DSV4_RETURN_IF_ERROR((launch_kernel<GemmFormat::kFP8Block, 64, false, 2 * gemm_detail::kBNDecode>(
            tm_a, tm_b, tm_d, args, cfg.grid, stream)));
      else
        DSV4_RETURN_IF_ERROR(launch_bm<GemmFormat::kFP8Block>(cfg.bm, cfg.bn, false, tm_a, tm_b, tm_d, args, cfg.grid, stream));
      break;
    case GemmFormat::kW4A8MXFP4:
      if (mx_a) DSV4_RETURN_IF_ERROR((launch_bm<GemmFormat::kW4A8MXFP4, true>(cfg.bm, cfg.bn, false, tm_a, tm_b, tm_d, args, cfg.grid, stream)));
      else DSV4_RETURN_IF_ERROR(launch_bm<GemmFormat::kW4A8MXFP4>(cfg.bm, cfg.bn, pre, tm_a, tm_b, tm_d, args, cfg.grid, stream));
      break;
    case GemmFormat::kW4A16MXFP4:
      DSV4_RETURN_IF_ERROR(launch_bm<GemmFormat::kW4A16MXFP4>(cfg.bm, cfg.bn, pre, tm_a, tm_b, tm_d, args, cfg.grid, stream));
      break;
    case GemmFormat::kW4A16NVFP4:
      DSV4_RETURN_IF_ERROR(launch_bm<GemmFormat::kW4A16NVFP4>(cfg.bm, cfg.bn, pre, tm_a, tm_b, tm_d, args, cfg.grid, stream));
      break;
  }
  if (cfg.splits > 1)
    DSV4_RETURN_IF_ERROR(launch_splitk_reduce(args.partial, cfg.splits, args.M, args.N, args.bias, args.residual,
                                              args.res_ld, args.d, args.d_ld, sms, stream, kOp));
  return Status::Ok();
}

}  // namespace

Status gemm(const GemmParams& p, Stream stream) { return launch(p, p.b.shape[0], nullptr, 1, stream); }

Status gemm_grouped_contiguous(const GemmParams& p, int64_t n_per_group, const int32_t* group_rows, int num_groups,
                               Stream stream) {
  return launch(p, n_per_group, group_rows, num_groups, stream);
}

}  // namespace dsv4::cuda
