// Does the order in which a decode GEMM's CTAs stream the weight matrix change the DRAM rate?
// Reads a 4096 x 7168-byte matrix (an FP8 weight of the 16x4096x7168 decode GEMM, 29.4 MB) once
// with 128 CTAs in three orders, all with ~64 KiB of 16-byte loads in flight a CTA:
//   tiles:  CTA (n, s) owns rows [128 n, +128) and K bytes [1792 s, +1792) and walks K in 128-byte
//           steps (each step: 128 rows x 128 bytes), as the split-K GEMM's TMA boxes do;
//   rows:   CTA c owns rows [32 c, +32) and walks all of K in 512-byte steps (32 rows x 512 bytes);
//   linear: CTA c reads one contiguous 229 KiB range.
// Build and run on the GPU machine: nvcc -O3 -arch=sm_90a -o /tmp/dp scripts/dram-pattern.cu && /tmp/dp
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

constexpr int kRows = 4096, kCols = 7168, kCtas = 128, kThreads = 256;
constexpr int kUnroll = 16;  // 16-byte loads a thread in flight: 256 x 16 x 16 B = 64 KiB a CTA

enum Pattern { kTiles, kRowsWalk, kLinear };

// Byte offset of the i-th 16-byte piece (i < 14336) of CTA c's share of the matrix.
__device__ __forceinline__ size_t piece(Pattern p, int c, int i) {
  switch (p) {
    case kTiles: {  // 14 steps of 128 rows x 8 pieces
      const int n = c / 4, s = c % 4, step = i / 1024, r = (i / 8) % 128, q = i % 8;
      return size_t(128 * n + r) * kCols + 1792 * s + 128 * step + 16 * q;
    }
    case kRowsWalk: {  // 14 steps of 32 rows x 32 pieces
      const int step = i / 1024, r = (i / 32) % 32, q = i % 32;
      return size_t(32 * c + r) * kCols + 512 * step + 16 * q;
    }
    default:
      return size_t(c) * (size_t(kRows) * kCols / kCtas) + size_t(16) * i;
  }
}

__global__ void __launch_bounds__(kThreads) stream(const uint4* __restrict__ w, Pattern p, uint4* sink) {
  const uint8_t* base = reinterpret_cast<const uint8_t*>(w);
  constexpr int kPieces = kRows / kCtas * kCols / 16;  // 14336
  uint4 acc = make_uint4(0, 0, 0, 0);
  for (int i0 = threadIdx.x; i0 < kPieces; i0 += kThreads * kUnroll) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = i0 + u * kThreads;
      v[u] = i < kPieces ? __ldcs(reinterpret_cast<const uint4*>(base + piece(p, blockIdx.x, i))) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc.x ^= v[u].x, acc.y ^= v[u].y, acc.z ^= v[u].z, acc.w ^= v[u].w;
  }
  if (acc.x == 0x12345678u) sink[blockIdx.x] = acc;  // keeps the loads; practically never taken
}

#define CK(x)                                                                    \
  do {                                                                           \
    cudaError_t e_ = (x);                                                        \
    if (e_ != cudaSuccess) {                                                     \
      std::printf("%s failed: %s\n", #x, cudaGetErrorString(e_));                 \
      return 1;                                                                  \
    }                                                                            \
  } while (0)

}  // namespace

int main() {
  const size_t bytes = size_t(kRows) * kCols;
  constexpr int kCopies = 4;  // rotate so L2 (50 MiB) never holds the matrix being read
  uint4 *w = nullptr, *sink = nullptr;
  CK(cudaMalloc(&w, bytes * kCopies));
  CK(cudaMalloc(&sink, kCtas * sizeof(uint4)));
  CK(cudaMemset(w, 0x5A, bytes * kCopies));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  const char* names[] = {"tiles (128 rows x 128 B steps)", "rows (32 rows x 512 B steps)", "linear (contiguous)"};
  // Isolated launches (event pair around each) and back-to-back launches (10 a pair of events):
  // the second excludes the launch gap a lone kernel pays.
  for (int round = 0; round < 2; ++round)
    for (int p = 0; p < 3; ++p) {
      CK(cudaEventRecord(e0));
      for (int it = 0; it < 40; ++it) {
        const uint4* src = reinterpret_cast<const uint4*>(reinterpret_cast<const uint8_t*>(w) + bytes * (it % kCopies));
        stream<<<kCtas, kThreads>>>(src, static_cast<Pattern>(p), sink);
      }
      CK(cudaEventRecord(e1));
      CK(cudaEventSynchronize(e1));
      float total = 0;
      CK(cudaEventElapsedTime(&total, e0, e1));
      std::printf("round %d  %-32s back-to-back %7.2f us a kernel  %7.1f GB/s\n", round, names[p], total * 25.f,
                  bytes / (total * 25e-6) / 1e9);
    }
  for (int round = 0; round < 2; ++round)
    for (int p = 0; p < 3; ++p) {
      std::vector<float> us;
      for (int it = 0; it < 40; ++it) {
        const uint4* src = reinterpret_cast<const uint4*>(reinterpret_cast<const uint8_t*>(w) + bytes * (it % kCopies));
        CK(cudaEventRecord(e0));
        stream<<<kCtas, kThreads>>>(src, static_cast<Pattern>(p), sink);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (it >= 8) us.push_back(ms * 1000.f);
      }
      std::sort(us.begin(), us.end());
      const float med = us[us.size() / 2];
      std::printf("round %d  %-32s median %7.2f us  %7.1f GB/s\n", round, names[p], med, bytes / (med * 1e-6) / 1e9);
    }
  CK(cudaGetLastError());
  return 0;
}
