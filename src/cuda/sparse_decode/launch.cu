// Host side of the sparse-decode kernel: schedule, argument packing, launch, split combine.
// Nothing here allocates or synchronises; the only device queries (SM count, current device) are
// not stream operations, so the call can be captured in a CUDA graph.
#include <atomic>
#include <limits>
#ifdef DSV4_SD_PROFILE
#include <cstdio>
#include <cstdlib>
#endif

#include "backend/sparse_decode.h"
#include "core/validate.h"
#include "cuda/common/check.h"
#include "cuda/common/launch_pdl.h"
#include "cuda/sparse_decode/kernel_wg.cuh"

namespace dsv4::cuda {
namespace {

namespace sd = sdec;
constexpr const char* kOp = "sparse_decode";

Status sm_count(int device, int* out) {
  static std::atomic<int> cached[64];
  if (device >= 0 && device < 64) {
    const int c = cached[device].load(std::memory_order_relaxed);
    if (c > 0) {
      *out = c;
      return Status::Ok();
    }
  }
  int n = 0;
  DSV4_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), kOp);
  if (n < 1) n = 1;
  if (device >= 0 && device < 64) cached[device].store(n, std::memory_order_relaxed);
  *out = n;
  return Status::Ok();
}

int64_t k_of(const TensorView& idx) { return idx.defined() && idx.ndim == 3 ? idx.shape[2] : 0; }

Status schedule_for(const SparseDecodeParams& p, sd::Schedule* s) {
  int sms = 0;
  DSV4_RETURN_IF_ERROR(sm_count(p.q.device.index, &sms));
  *s = sd::make_schedule(p.q.shape[0], p.q.shape[1], p.q.shape[2], k_of(p.main_indices), k_of(p.extra_indices), sms);
  return Status::Ok();
}

sd::KeySet key_set(const KVCacheView& c, const TensorView& idx, const TensorView& len) {
  sd::KeySet k;
  if (!idx.defined()) return k;
  k.data = static_cast<const uint8_t*>(c.data.data);
  k.scales = static_cast<const uint16_t*>(c.scales.data);
  k.page_bytes = model1_page_bytes(c.page_size);
  k.page_size = static_cast<int32_t>(c.page_size);
  k.num_slots = static_cast<int32_t>(c.data.shape[0] * c.page_size);  // < 2^31, validated
  k.model1 = c.layout == KVLayout::kModel1 ? 1 : 0;
  k.idx = static_cast<const int32_t*>(idx.data);
  k.idx_sb = idx.strides[0];
  k.idx_ss = idx.strides[1];
  k.idx_sk = idx.strides[2];
  k.K = static_cast<int32_t>(idx.shape[2]);
  if (len.defined()) {
    k.len = static_cast<const int32_t*>(len.data);
    k.len_sb = len.strides[0];
    k.len_ss = len.ndim == 2 ? len.strides[1] : 0;
  }
  return k;
}

// Runs `device`'s launches with it current, restoring the caller's device after.
class DeviceGuard {
 public:
  Status enter(int device) {
    int cur = 0;
    DSV4_CUDA_RETURN_IF_ERROR(cudaGetDevice(&cur), kOp);
    if (cur != device) {
      DSV4_CUDA_RETURN_IF_ERROR(cudaSetDevice(device), kOp);
      prev_ = cur;
    }
    return Status::Ok();
  }
  ~DeviceGuard() {
    if (prev_ >= 0) (void)cudaSetDevice(prev_);
  }

 private:
  int prev_ = -1;
};

std::atomic<bool> g_force_mma_sync{false};

template <int RG>
Status launch_main(const sd::Args& a, int64_t ctas, cudaStream_t st) {
  const auto kernel = sd::sparse_decode_kernel<RG>;
  DSV4_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, sd::Smem::kLaunchBytes), kOp);
  kernel<<<static_cast<unsigned>(ctas), sd::kThreads, sd::Smem::kLaunchBytes, st>>>(a);
  return launch_status(kOp, "sparse_decode_kernel");
}

#ifdef DSV4_SD_PROFILE
// Profile build only: prints the per-phase cycle sums of kernel_wg.cuh at process exit, as the
// average per tile (per warp) of each role's loop phases, and per warp for prologue / epilogue.
void print_profile() {
  unsigned long long h[8][3][sd::kProfCols];
  if (cudaDeviceSynchronize() != cudaSuccess || cudaMemcpyFromSymbol(h, sd::g_sd_prof, sizeof h) != cudaSuccess) {
    std::fprintf(stderr, "sd-prof: readback failed\n");
    return;
  }
  static const char* names[3][14] = {
      {"prologue", "S wait", "softmax+P", "fence+pready", "bar2", "resc+O issue", "wait full", "S issue",
       "O wait", "empty+loop", "epilogue"},
      {"prologue", "wait pready", "wait full", "resc+O issue", "O wait", "empty+loop", "", "", "", "", "epilogue"},
      {"prologue", "ldB+idx+pf", "wait empty", "cvtA+ldA'", "cvtB", "mask+arrive", "pro: to idx", "pro: to Q", "pro: to sync",
       "1st keys in", "end", "pro: 1st param", "pro: idx addr", "(A landed)"}};
  static const char* roles[3] = {"wg0 (S, softmax, O lo)", "wg1 (O hi)", "producers"};
  const char* var = std::getenv("DSV4_SD_VAR");
  std::fprintf(stderr, "sd-prof: DSV4_SD_VAR=%s, clock64 cycles per warp (tile phases: per tile)\n", var ? var : "0");
  for (int r = 0; r < 3; ++r) {
    unsigned long long v[sd::kProfCols] = {};
    for (int sp = 0; sp < 8; ++sp)
      for (int c = 0; c < sd::kProfCols; ++c) v[c] += h[sp][r][c];
    const double warps = v[14] ? static_cast<double>(v[14]) : 1.0, tiles = v[15] ? static_cast<double>(v[15]) : 1.0;
    double loop = 0;
    std::fprintf(stderr, "sd-prof: %s: warps %llu, tiles/warp %.2f\n", roles[r], v[14], tiles / warps);
    for (int c = 0; c <= 13; ++c) {
      if (names[r][c] == nullptr || names[r][c][0] == 0) continue;
      const bool per_warp = c == 0 || c == 10 || (r == 2 && c >= 6 && c != 13);
      const double x = static_cast<double>(v[c]) / (per_warp ? warps : tiles);
      if (!per_warp && c != 13) loop += x;  // 13 is a part of 1, not a phase of its own
      std::fprintf(stderr, "sd-prof:   %-14s %9.1f%s\n", names[r][c], x, per_warp ? " (per warp)" : "");
    }
    std::fprintf(stderr, "sd-prof:   %-14s %9.1f\n", "loop total", loop);
  }
}
#endif

// Kernel instance (round 8). Default: MODEL1 with a positive scale and at least two tiles a CTA
// runs kV = 12 (the softmax fold, decided at compile time, plus the all-valid select skip: -5..9%
// on Pro / HCA); everything else kV = 0. The fold made Pro B=1 (one tile a CTA) ~15% slower in every
// A/B, from outside the CTA's own clocks (docs/notes/sparse_decode.md, round 8), hence the
// tiles_per_split condition. DSV4_SD_KV=N forces kV = N (0 or 12) for A/B runs. (kV = 1, producer
// shortcuts, measured no change: docs/notes/sparse_decode_r8_producer_shortcuts.patch.)
int wg_variant() {
  static const int v = [] {
    const char* e = std::getenv("DSV4_SD_KV");
    return e ? std::atoi(e) : -1;
  }();
  return v;
}

template <bool kM1, int kV, int kNO = 0>
Status launch_wg_v(const sd::Args& a, int64_t ctas, cudaStream_t st) {
  const auto kernel = sd::sparse_decode_wg_kernel<kM1, kV, kNO>;
#ifdef DSV4_SD_PROFILE
  static std::atomic<bool> registered{false};
  if (!registered.exchange(true)) std::atexit(print_profile);
#endif
  DSV4_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, sd::SmemWg::kLaunchBytes), kOp);
  kernel<<<static_cast<unsigned>(ctas), sd::kWgThreads, sd::SmemWg::kLaunchBytes, st>>>(a);
  return launch_status(kOp, "sparse_decode_wg_kernel");
}

// Narrow instance (kernel_wg.cuh, kNO = 16): blocks of at most 16 heads compute S^T and O^T on
// m64 x n16 tiles. Only with the fold instance (MODEL1, scale > 0, at least two tiles a CTA: tensor
// parallelism's few-head batches). H100, same-run A/B (4 rounds, 128 + 1024 keys, B = 128): H = 16
// 42.7-42.9 us from graphs against 47.4-47.8 (isolated 46.9-49.8 against 50.3-54.6); the n32
// instance was slower than the wide kernel at H = 32 (54.2-54.6 against 48.1-48.6), so 17..32 heads
// stay on the wide one (docs/notes/sparse_decode.md, round 11). DSV4_SD_NARROW=0 turns it off for
// A/B runs.
int narrow_max_heads() {
  static const int h = [] {
    const char* e = std::getenv("DSV4_SD_NARROW");
    return e ? std::atoi(e) : 16;
  }();
  return h;
}

template <bool kM1>
Status launch_wg_as(const sd::Args& a, int64_t ctas, cudaStream_t st) {
  int v = wg_variant();
  if (v < 0) v = a.sched.tiles_per_split >= 2 ? 12 : 0;
  if constexpr (kM1) {
    if (v == 12 && a.scale_log2 > 0.0f) {
      if (a.H <= 16 && a.H <= narrow_max_heads()) return launch_wg_v<true, 12, 16>(a, ctas, st);
      return launch_wg_v<true, 12>(a, ctas, st);
    }
  }
  return launch_wg_v<kM1, 0>(a, ctas, st);
}

Status launch_wg(const sd::Args& a, int64_t ctas, cudaStream_t st) {
  // An absent set (K = 0) never supplies a tile, whatever its layout field says.
  const bool all_model1 = (a.set[0].K == 0 || a.set[0].model1) && (a.set[1].K == 0 || a.set[1].model1);
  return all_model1 ? launch_wg_as<true>(a, ctas, st) : launch_wg_as<false>(a, ctas, st);
}

}  // namespace

void sparse_decode_force_mma_sync(bool on) { g_force_mma_sync.store(on, std::memory_order_relaxed); }

int64_t sparse_decode_workspace_size(const SparseDecodeParams& p) {
  if (p.q.ndim != 4) return 0;
  sd::Schedule s;
  if (!schedule_for(p, &s).ok()) return 0;
  return sd::workspace_bytes(s, p.q.shape[2]);
}

Status sparse_decode(const SparseDecodeParams& p, Stream stream) {
  DeviceGuard guard;
  DSV4_RETURN_IF_ERROR(guard.enter(p.q.device.index));
  sd::Schedule s;
  DSV4_RETURN_IF_ERROR(schedule_for(p, &s));
  const int64_t H = p.q.shape[2];
  if (s.ctas() > std::numeric_limits<int32_t>::max() || s.tokens * H / 2 + 1 > std::numeric_limits<int32_t>::max())
    return {StatusCode::kUnsupported, "sparse_decode: batch too large for one launch (" + std::to_string(s.ctas()) +
                                          " CTAs); split the batch"};

  sd::Args a;
  a.q = static_cast<const __nv_bfloat16*>(p.q.data);
  a.q_sb = p.q.strides[0];
  a.q_ss = p.q.strides[1];
  a.q_sh = p.q.strides[2];
  a.S = static_cast<int32_t>(p.q.shape[1]);
  a.H = static_cast<int32_t>(H);
  a.set[0] = key_set(p.main_cache, p.main_indices, p.main_lengths);
  a.set[1] = key_set(p.extra_cache, p.extra_indices, p.extra_lengths);
  a.sink = p.attn_sink.defined() ? static_cast<const float*>(p.attn_sink.data) : nullptr;
  a.scale_log2 = p.softmax_scale * 1.4426950408889634f;
  a.out = static_cast<__nv_bfloat16*>(p.out.data);
  a.lse = p.lse.defined() ? static_cast<float*>(p.lse.data) : nullptr;
  a.sched = s;
#ifdef DSV4_SD_PROFILE
  if (const char* v = std::getenv("DSV4_SD_VAR")) a.prof_var = std::atoi(v);
#endif
  if (s.num_splits > 1) {
    a.ws_o = static_cast<float*>(p.workspace.data);
    a.ws_lse = a.ws_o + sd::workspace_o_floats(s, H);
  }

  auto st = static_cast<cudaStream_t>(stream);
  // Every head count runs on the pipelined wgmma kernel (zero Q rows pad a block to 64): for 16
  // or 32 heads the wasted MMA rows cost less than the mma.sync kernel's serial per-tile phases.
  if (g_force_mma_sync.load(std::memory_order_relaxed)) {
    switch (s.row_groups) {
      case 1: DSV4_RETURN_IF_ERROR(launch_main<1>(a, s.ctas(), st)); break;
      case 2: DSV4_RETURN_IF_ERROR(launch_main<2>(a, s.ctas(), st)); break;
      default: DSV4_RETURN_IF_ERROR(launch_main<4>(a, s.ctas(), st)); break;
    }
  } else {
    DSV4_RETURN_IF_ERROR(launch_wg(a, s.ctas(), st));
  }
  if (s.num_splits > 1) {
    const int64_t rows = s.tokens * H;
    // 4 warps a row. Programmatic dependent launch: the wgmma kernel lets the combine's CTAs
    // launch at its start (griddepcontrol.launch_dependents) and they wait in griddepcontrol.wait
    // for its partials, so the combine's launch latency hides under the main kernel (Pro B = 1:
    // ~18.6 -> ~17.4 us, docs/notes/sparse_decode.md). Graph capture keeps it as a programmatic
    // edge. The mma.sync kernel never triggers: the combine then launches when it completes.
    DSV4_CUDA_RETURN_IF_ERROR(
        launch_programmatic(sd::sparse_decode_combine, dim3(static_cast<unsigned>((rows + 1) / 2)), dim3(256), st, a),
        kOp);
    DSV4_RETURN_IF_ERROR(launch_status(kOp, "sparse_decode_combine"));
  }
  return Status::Ok();
}

}  // namespace dsv4::cuda
