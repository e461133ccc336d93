// How fast can TMA stream a decode GEMM's weights into shared memory, by box shape? (docs/notes/gemm.md,
// round 10.) The FP4-weight decode kernel's skeleton (no conversion, no tensor work, no scales) runs
// 16 x 4096 x 7168 in ~10-12 us from graphs, L2-resident or not, while a plain read of the bytes takes
// ~6: this isolates the TMA side. One CTA an SM; thread 0 issues a ring of stages (one weight box,
// optionally the activation boxes the kernel adds a 128-K block), warp 1 waits for each stage and
// frees it. Weights: a 4096-row matrix of `row_bytes` bytes a row (3584 = FP4 at K = 7168), CTA c
// streams rows [rows * (c / splits), +rows) and its split's K bytes, `box_bytes` a stage; or, as
// "packed", the same bytes as one contiguous 1-D bulk copy a stage (a pre-tiled weight layout).
// Hot: one copy, L2-resident after the first launch; cold: rotating copies past 3x L2. Timed as 40
// launches from one CUDA graph.
// Build and run on the GPU machine:
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Isrc -o /tmp/tr scripts/tma-rate.cu && /tmp/tr
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "cuda/common/ptx_tma.cuh"

namespace {
using namespace dsv4::cuda::ptx;

#define CK(x)                                                                           \
  do {                                                                                  \
    cudaError_t e_ = (x);                                                               \
    if (e_ != cudaSuccess) {                                                            \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      return 1;                                                                         \
    }                                                                                   \
  } while (0)

constexpr int kRing = 32;

struct Job {
  int rows, box_bytes, splits, row_bytes;
  int act_boxes;   // activation boxes (16 rows x 128 B) a 128-K block of weights
  bool packed;     // one 1-D bulk copy of rows * box_bytes a stage instead of the 2-D box
  int ring;
  int slot = 0;  // bytes a ring slot (set by main)
};

__global__ void __launch_bounds__(64, 1)
    stream(const __grid_constant__ CUtensorMap tm_w, const __grid_constant__ CUtensorMap tm_act, const uint8_t* w,
           const Job j) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);  // 128B swizzle alignment
  __shared__ uint64_t full[kRing], empty[kRing];
  const int S = j.ring;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) mbar_init(&full[s], 1), mbar_init(&empty[s], 1);
    fence_barrier_init();
  }
  __syncthreads();
  const int rb = blockIdx.x / j.splits, sp = blockIdx.x % j.splits;
  const int kb = j.row_bytes / j.splits;  // this CTA's K bytes
  const int stages = kb / j.box_bytes;
  const int act_per_stage = j.act_boxes * j.box_bytes / 64;  // act boxes a stage (64 weight bytes = 128 K)
  const uint32_t bytes = j.rows * j.box_bytes + act_per_stage * 2048;
  if (threadIdx.x == 0) {
    for (int it = 0; it < stages; ++it) {
      const int s = it % S;
      if (it >= S) mbar_wait(&empty[s], ((it / S) - 1) & 1);
      mbar_arrive_expect_tx(&full[s], bytes);
      uint8_t* dst = smem + s * j.slot;
      const int k0 = sp * kb + it * j.box_bytes;
      if (j.packed)
        bulk_load_1d(dst, w + (size_t(rb) * j.splits * stages + size_t(sp) * stages + it) * j.rows * j.box_bytes,
                 j.rows * j.box_bytes, &full[s]);
      else
        tma_load_2d(dst, &tm_w, &full[s], k0, rb * j.rows);
      for (int a = 0; a < act_per_stage; ++a)
        tma_load_2d(dst + j.rows * j.box_bytes + a * 2048, &tm_act, &full[s], (k0 * 2 + a * 128) % 7168, 0);
    }
  } else if (threadIdx.x == 32) {
    for (int it = 0; it < stages; ++it) {
      const int s = it % S;
      mbar_wait(&full[s], (it / S) & 1);
      mbar_arrive(&empty[s]);
    }
  }
}

}  // namespace

int main() {
  constexpr int kRows = 4096, kRowBytes = 3584;
  const size_t wbytes = size_t(kRows) * kRowBytes;
  constexpr int kCopies = 12;  // 176 MB: past 3x L2
  uint8_t *w = nullptr, *act = nullptr;
  CK(cudaMalloc(&w, wbytes * kCopies));
  CK(cudaMemset(w, 0x5A, wbytes * kCopies));
  CK(cudaMalloc(&act, 16 * 7168));
  CK(cudaMemset(act, 0x3C, 16 * 7168));
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult q;
  CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q));
  auto encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  auto map2d = [&](CUtensorMap* m, const void* base, uint64_t inner, uint64_t outer, uint64_t stride, uint32_t bi,
                   uint32_t bo, CUtensorMapSwizzle sw) {
    const cuuint64_t dims[2] = {inner, outer}, strides[1] = {stride};
    const cuuint32_t box[2] = {bi, bo}, es[2] = {1, 1};
    return encode(m, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(base), dims, strides, box, es,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, sw, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
  };
  CUtensorMap tm_act;
  if (!map2d(&tm_act, act, 7168, 16, 7168, 128, 16, CU_TENSOR_MAP_SWIZZLE_128B)) return std::printf("encode act\n"), 1;
  CK(cudaFuncSetAttribute(stream, cudaFuncAttributeMaxDynamicSharedMemorySize, 226 * 1024));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::printf("%-34s %8s %8s %9s %9s\n", "job (rows x box bytes, splits, act)", "hot us", "cold us", "hot GB/s",
              "cold GB/s");
  const std::vector<Job> jobs = {
      {64, 64, 2, kRowBytes, 0, false, 24},  {64, 64, 2, kRowBytes, 2, false, 24}, {64, 64, 2, kRowBytes, 1, false, 24},
      {64, 128, 2, kRowBytes, 0, false, 24}, {64, 128, 2, kRowBytes, 2, false, 16}, {64, 256, 2, kRowBytes, 0, false, 16},
      {128, 64, 4, kRowBytes, 0, false, 24}, {128, 64, 4, kRowBytes, 2, false, 24}, {128, 128, 4, kRowBytes, 0, false, 16},
      {64, 64, 2, kRowBytes, 0, true, 24},   {64, 128, 2, kRowBytes, 0, true, 24},  {64, 64, 2, kRowBytes, 2, true, 24},
      {32, 128, 1, kRowBytes, 0, false, 24}, {64, 64, 2, kRowBytes, 0, false, 8},   {64, 128, 2, kRowBytes, 0, false, 8},
      {64, 128, 2, kRowBytes, 1, false, 16}, {128, 128, 4, kRowBytes, 2, false, 12}, {128, 128, 4, kRowBytes, 1, false, 12},
      {64, 128, 1, kRowBytes, 0, false, 24}, {128, 128, 2, kRowBytes, 0, false, 14},
  };
  for (Job j : jobs) {
    j.slot = (j.rows * j.box_bytes + j.act_boxes * j.box_bytes / 64 * 2048 + 1023) / 1024 * 1024;
    j.ring = std::min({j.ring, kRing, (226 * 1024 - 1024) / j.slot});
    const int ctas = kRows / j.rows * j.splits;
    double us[2];
    for (int cold = 0; cold < 2; ++cold) {
      std::vector<CUtensorMap> tms(kCopies);
      for (int c = 0; c < kCopies; ++c)
        if (!map2d(&tms[c], w + c * wbytes, kRowBytes, kRows, kRowBytes, j.box_bytes, j.rows,
                   CU_TENSOR_MAP_SWIZZLE_NONE))
          return std::printf("encode w\n"), 1;
      constexpr int kLaunches = 40;
      auto launch = [&](int i) {
        const int c = cold ? i % kCopies : 0;
        stream<<<ctas, 64, j.ring * j.slot + 1024>>>(tms[c], tm_act, w + c * wbytes, j);
      };
      for (int i = 0; i < 4; ++i) launch(i);
      CK(cudaGetLastError());
      // Back to back from one CUDA graph (as an engine's decode step runs): no launch gaps.
      cudaStream_t st;
      CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
      cudaGraph_t g;
      cudaGraphExec_t ge;
      CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
      for (int i = 0; i < kLaunches; ++i) {
        const int c = cold ? i % kCopies : 0;
        stream<<<ctas, 64, j.ring * j.slot + 1024, st>>>(tms[c], tm_act, w + c * wbytes, j);
      }
      CK(cudaStreamEndCapture(st, &g));
      CK(cudaGraphInstantiate(&ge, g, 0));
      CK(cudaGraphLaunch(ge, st));
      CK(cudaStreamSynchronize(st));
      CK(cudaEventRecord(e0, st));
      CK(cudaGraphLaunch(ge, st));
      CK(cudaEventRecord(e1, st));
      CK(cudaEventSynchronize(e1));
      CK(cudaGetLastError());
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      us[cold] = 1e3 * ms / kLaunches;
      CK(cudaGraphExecDestroy(ge));
      CK(cudaGraphDestroy(g));
      CK(cudaStreamDestroy(st));
    }
    char name[64];
    std::snprintf(name, sizeof name, "%dx%d s%d act%d%s ring%d", j.rows, j.box_bytes, j.splits, j.act_boxes,
                  j.packed ? " packed" : "", j.ring);
    std::printf("%-34s %8.2f %8.2f %9.0f %9.0f\n", name, us[0], us[1], wbytes / us[0] / 1e3, wbytes / us[1] / 1e3);
  }
  return 0;
}
