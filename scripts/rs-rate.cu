// How fast can a swap-AB W4A8 GEMM's consumer loop run on one H100 SM? (docs/notes/gemm.md, "Plan for
// the next session".) D^T = B A^T: 64 weight rows a warpgroup are wgmma's register A operand, their
// e2m1 codes decoded from shared memory into e4m3 fragments every 128-K block, and N tokens (64 or
// 128) are the shared-memory B operand. One CTA an SM, kWG consumer warpgroups, no producer: the
// operands sit in shared memory, so this measures the tensor / ALU side alone, like wgmma-rate.cu's
// "no feed" column.
//
// Modes, per 128-K block and warpgroup (four m64nNk32 wgmmas, one a 32-K sub-block):
//   chain  straight into acc, no promotion: the tensor pipe's own rate with the decode
//   block  into a scratch tile (two, alternating between blocks), promoted once a block:
//          acc += (tmp * row_scale) * token_scale (the four sub-block scales folded into the codes)
//   sub    each sub-block into its own scratch (two, alternating), promoted after each: four
//          promotions a block (the per-32 scales kept apart)
//   nocvt  block, with the fragments decoded once outside the loop: what the decode costs
// Reports TFLOP/s from events, the SM clock (clock64 against %globaltimer) and the share of the
// tensor peak at that clock (4096 e4m3 MACs a clock an SM).
// Not run yet (written at the end of a session without device time). ptxas 13.0 reports C7514
// (wgmmas serialised: accumulator registers read between start and end of a pipeline stage) for
// the block / sub / nocvt instances, whose promotion reads one scratch tile while the other's
// RS group is in flight; the SS loop of kernel.cuh does the same without the warning, and the FP4
// decode kernel promotes only after wgmma_wait<0>. Checked here: the warning stays with SS wgmmas
// in place of the RS ones, without the fragment pins and without fence_accumulators, and goes when
// the promotion does not read the scratch tile: so it is this loop's structure, not the RS form.
// Settle that first (compare the SASS, WARPGROUP.DEPBAR / ARRIVE placement, with kernel.cuh's
// two-scratch loop) before the numbers of those modes mean what their names say; chain has only
// C7517 (a wait injected at the loop exit).
// Build and run on the GPU machine:
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Isrc -o /tmp/rs scripts/rs-rate.cu && /tmp/rs
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda/common/ptx_tma.cuh"
#include "cuda/common/ptx_wgmma.cuh"

namespace {
using namespace dsv4::cuda::ptx;

constexpr int kIters = 4096;      // 128-K blocks a warpgroup
constexpr int kWRing = 8;         // weight blocks in shared memory (64 rows x 64 bytes each)
constexpr int kBRing = 4;         // token blocks in shared memory (N rows x 128 bytes each)

// RS wgmma, e4m3: D(64 x N, f32) (+)= A(64 x 32, registers) * B(N x 32, shared memory)^T.
#define RS_E4M3(NAME, N, D, ACC, IA0, IA1, IA2, IA3, IB, IP, shape)                                       \
  __device__ __forceinline__ void NAME(float (&d)[N], const uint32_t (&a)[4], uint64_t desc_b, int accumulate) { \
    asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %" #IP ", 0;\n\t"                                 \
                 "wgmma.mma_async.sync.aligned." shape ".f32.e4m3.e4m3 " D ", {%" #IA0 ", %" #IA1 ", %" #IA2 \
                 ", %" #IA3 "}, %" #IB ", p, 1, 1;\n\t}"                                                    \
                 : ACC(d, 0)                                                                                \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate));               \
  }
RS_E4M3(rs_m64n64k32, 32, DSV4_WGMMA_D32, DSV4_WGMMA_ACC32, 32, 33, 34, 35, 36, 37, "m64n64k32")
RS_E4M3(rs_m64n128k32, 64, DSV4_WGMMA_D64, DSV4_WGMMA_ACC64, 64, 65, 66, 67, 68, 69, "m64n128k32")
#undef RS_E4M3

template <int N>
__device__ __forceinline__ void rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b, int accumulate) {
  if constexpr (N == 64) rs_m64n64k32(d, a, desc_b, accumulate);
  else rs_m64n128k32(d, a, desc_b, accumulate);
}

// Eight e2m1 codes to two e4m3x4 words of 2^-6 x value (the decode kernel's bit placement).
__device__ __forceinline__ void e2m1x8_to_e4m3(uint32_t x, uint32_t& lo, uint32_t& hi) {
  lo = ((x << 2) & 0x1C1C1C1Cu) | ((x << 4) & 0x80808080u);
  hi = ((x >> 2) & 0x1C1C1C1Cu) | (x & 0x80808080u);
}

enum Mode { kChain = 0, kBlock = 1, kSub = 2, kNoCvt = 3 };

template <int N, int kMode, int kWG>
__global__ void __launch_bounds__(128 * kWG, 1) rs_rate(unsigned long long* clocks, unsigned long long* ns, float* sink) {
  constexpr int kAcc = N / 2;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* s_b = smem;                               // kBRing x N x 128 bytes (128B swizzle)
  uint8_t* s_w = s_b + kBRing * N * 128;             // kWG x kWRing x 64 rows x 64 bytes
  const int wg = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x / 128), 0);
  const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
  // Operands: finite e4m3 bytes of magnitude 2^-4..2^-1 for B, every e2m1 code for the weights.
  for (int i = threadIdx.x; i < kBRing * N * 128 / 4; i += blockDim.x) {
    uint32_t h = (i + 1) * 2654435761u;
    reinterpret_cast<uint32_t*>(s_b)[i] = (h & 0x8F8F8F8Fu) | 0x18181818u;
  }
  for (int i = threadIdx.x; i < kWG * kWRing * 64 * 64 / 4; i += blockDim.x)
    reinterpret_cast<uint32_t*>(s_w)[i] = (i + 7) * 2246822519u;
  __syncthreads();

  const uint8_t* wbase = s_w + wg * kWRing * 64 * 64;
  const int g = lane / 4, c = lane % 4;
  const int row0 = warp * 16 + g;
  const uint64_t desc_b0 = wgmma_desc_sw128(smem_addr(s_b));
  const float row_scale = 1.0f + 0.001f * g, tok_scale = 1.0f - 0.001f * c;

  float acc[kAcc], tmp0[kAcc], tmp1[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] = tmp0[i] = tmp1[i] = 0.f;
  // Two fragment sets: block b + 1 decodes while block b's wgmmas run (as the decode kernel does).
  uint32_t fa[4][4], fb[4][4];
  auto decode = [&](int blk, uint32_t(&f)[4][4]) {
    if (kMode == kNoCvt && blk > 1) return;
    const uint8_t* wb = wbase + (blk % kWRing) * 64 * 64;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint8_t* wrow = wb + (row0 + 8 * h) * 64;
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const uint32_t w = *reinterpret_cast<const uint32_t*>(wrow + ((s ^ (g & 3)) << 4) + 4 * c);
        e2m1x8_to_e4m3(w, f[s][h], f[s][2 + h]);
      }
    }
  };
  auto desc = [&](int blk, int s) { return desc_b0 + ((uint32_t((blk % kBRing) * N * 128) + 32 * s) >> 4); };
  auto promote = [&](float(&t)[kAcc]) {
    fence_accumulators(t);
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = fmaf(t[i] * row_scale, tok_scale, acc[i]);
  };
  // Every fragment register final before a group starts (else ptxas sinks the decode between the
  // wgmmas and serialises them).
  auto pin = [&](uint32_t(&f)[4][4]) {
#pragma unroll
    for (int s = 0; s < 4; ++s)
#pragma unroll
      for (int k = 0; k < 4; ++k) asm volatile("" : "+r"(f[s][k])::"memory");
  };
  // One block's four sub-blocks: into acc (chain) or one scratch tile, one group.
  auto issue = [&](int b, uint32_t(&f)[4][4], float(&t)[kAcc]) {
    pin(f);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < 4; ++s) rs<N>(t, f[s], desc(b, s), kMode == kChain || s > 0);
    wgmma_commit();
  };
  // Sub-block s of block b alone into t, its own group.
  auto issue_sub = [&](int b, int s, uint32_t(&f)[4][4], float(&t)[kAcc]) {
    if (s == 0) pin(f);
    wgmma_fence();
    rs<N>(t, f[s], desc(b, s), 0);
    wgmma_commit();
  };

  decode(0, fa);
  decode(1, fb);
  unsigned long long clk0 = clock64(), ns0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns0));
  if constexpr (kMode == kSub) {
    // Sub-blocks alternate between the two scratch tiles; each is promoted once the next is issued.
    issue_sub(0, 0, fa, tmp0);
    for (int b = 0; b + 2 <= kIters; b += 2) {
      issue_sub(b, 1, fa, tmp1); wgmma_wait<1>(); promote(tmp0);
      issue_sub(b, 2, fa, tmp0); wgmma_wait<1>(); promote(tmp1);
      issue_sub(b, 3, fa, tmp1); wgmma_wait<1>(); promote(tmp0);
      issue_sub(b + 1, 0, fb, tmp0); wgmma_wait<1>(); promote(tmp1);
      decode(b + 2, fa);  // block b's wgmmas are done: fa is free
      issue_sub(b + 1, 1, fb, tmp1); wgmma_wait<1>(); promote(tmp0);
      issue_sub(b + 1, 2, fb, tmp0); wgmma_wait<1>(); promote(tmp1);
      issue_sub(b + 1, 3, fb, tmp1); wgmma_wait<1>(); promote(tmp0);
      issue_sub(b + 2, 0, fa, tmp0); wgmma_wait<1>(); promote(tmp1);
      decode(b + 3, fb);
    }
    wgmma_wait<0>();
  } else {
    // Block b into tmp[b & 1] (chain: acc), promoted once block b + 1 is issued; the decode of
    // block b + 2 follows, under block b + 1's wgmmas.
    issue(0, fa, tmp0);
    for (int b = 1; b + 2 <= kIters; b += 2) {
      if constexpr (kMode == kChain) {
        issue(b, fb, acc);
        wgmma_wait<1>();
        decode(b + 1, fa);
        issue(b + 1, fa, acc);
        wgmma_wait<1>();
        decode(b + 2, fb);
      } else {
        issue(b, fb, tmp1);
        wgmma_wait<1>();
        promote(tmp0);
        decode(b + 1, fa);
        issue(b + 1, fa, tmp0);
        wgmma_wait<1>();
        promote(tmp1);
        decode(b + 2, fb);
      }
    }
    wgmma_wait<0>();
    if constexpr (kMode != kChain) promote(tmp0);
  }
  unsigned long long clk1 = clock64(), ns1;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns1));
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kAcc; ++i) sum += acc[i];
  if (sum == 1234.5f) sink[threadIdx.x] = sum;  // keeps the work alive
  if (threadIdx.x == 0) {
    clocks[blockIdx.x] = clk1 - clk0;
    ns[blockIdx.x] = ns1 - ns0;
  }
}

template <int N, int kMode, int kWG>
void run(const char* name) {
  const int sms = 132;
  const size_t smem = 1024 + kBRing * N * 128 + kWG * kWRing * 64 * 64;
  auto kernel = rs_rate<N, kMode, kWG>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  unsigned long long *d_clk, *d_ns;
  float* d_sink;
  cudaMalloc(&d_clk, sms * 8);
  cudaMalloc(&d_ns, sms * 8);
  cudaMalloc(&d_sink, 1024 * 4);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  kernel<<<sms, 128 * kWG, smem>>>(d_clk, d_ns, d_sink);  // warm-up
  cudaEventRecord(e0);
  kernel<<<sms, 128 * kWG, smem>>>(d_clk, d_ns, d_sink);
  cudaEventRecord(e1);
  const cudaError_t err = cudaEventSynchronize(e1);
  if (err != cudaSuccess || cudaGetLastError() != cudaSuccess) {
    std::printf("%-28s error: %s\n", name, cudaGetErrorString(err));
    return;
  }
  float ms = 0.f;
  cudaEventElapsedTime(&ms, e0, e1);
  std::vector<unsigned long long> clk(sms), ns(sms);
  cudaMemcpy(clk.data(), d_clk, sms * 8, cudaMemcpyDeviceToHost);
  cudaMemcpy(ns.data(), d_ns, sms * 8, cudaMemcpyDeviceToHost);
  double ghz = 0;
  for (int i = 0; i < sms; ++i) ghz += double(clk[i]) / double(ns[i]);
  ghz /= sms;
  const double macs = 64.0 * N * 128 * kIters * kWG * sms;
  const double tflops = 2 * macs / (ms * 1e-3) / 1e12;
  const double peak = 2.0 * 4096 * sms * ghz * 1e9 / 1e12;
  std::printf("%-28s %8.3f ms  %7.1f TFLOP/s  %.2f GHz  %5.1f%% of the tensor peak\n", name, ms, tflops, ghz,
              100 * tflops / peak);
  cudaFree(d_clk);
  cudaFree(d_ns);
  cudaFree(d_sink);
}

}  // namespace

int main() {
  run<64, kChain, 3>("n64 chain, 3 wg");
  run<64, kNoCvt, 3>("n64 block nocvt, 3 wg");
  run<64, kBlock, 3>("n64 block, 3 wg");
  run<64, kSub, 3>("n64 sub, 3 wg");
  run<128, kChain, 2>("n128 chain, 2 wg");
  run<128, kNoCvt, 2>("n128 block nocvt, 2 wg");
  run<128, kBlock, 2>("n128 block, 2 wg");
  run<128, kSub, 2>("n128 sub, 2 wg");
  return 0;
}
