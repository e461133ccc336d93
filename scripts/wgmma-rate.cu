// How fast can the FP8 block-scaled GEMM's K loop run on one H100 SM, before tile scheduling and
// the epilogue? (docs/notes/gemm.md, round 9.) One CTA per SM, three warpgroups: warpgroups 0-1 are
// consumers running the GEMM's per-stage wgmma pattern on a ring of stages; warpgroup 2's first
// thread is the producer, refilling each stage (a 128 x 128 A tile and an N x 128 B tile) behind
// full / empty mbarriers with 1-D bulk copies from an L2-resident buffer or 2-D TMA loads of real
// 4096 x 7168 operands (template kTma, below), or nobody (consumers loop without waiting: the
// tensor pipe alone); its warps 1-3 can play the kernel's loader warps.
//
// Consumer modes, per 128-K stage and warpgroup (m64 x N accumulators):
//   chain      4 wgmma m64nNk32 (N = 128, 192, 256) straight into acc, wait<1> (no promotion)
//   two        N = 128: dsv4's loop: two scratch tiles, block k + 1 issued before block k is
//              promoted (64 FFMA a thread a stage, acc += tmp * scale)
//   one        N = 128 or 192: one scratch tile, wait<0>, then promote (DeepGEMM's order)
//   halves     N = 256: one 64 x 128 scratch, the stage as two n128 halves, each wait<0> + promote
//              into its half of the 64 x 256 accumulator (acc 128 + scratch 64 registers)
//   halfchain  N = 256 as two n128 chains (A read twice), no promotion
//   rshalves   as halves, but A from registers: the stage's four k32 fragments loaded once by
//              ldmatrix and used by both n128 halves (A read once from shared memory, as m64n256)
//   rschain    N = 256 as two n128 register-A chains sharing the fragments, no promotion
// Reports TFLOP/s from events, the SM clock (clock64 against %globaltimer) and the share of the
// tensor peak at that clock (4096 e4m3 MACs a clock an SM). WR_SET=N picks a set of runs (main());
// WR_DATA=full fills the operands with every non-NaN e4m3 code (the default keeps them in
// +-[2^-3, 2^-1): the operand bits set the power draw, and so the clock).
// Build and run on the GPU machine:
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Isrc -o /tmp/wr scripts/wgmma-rate.cu && WR_SET=1 /tmp/wr
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/common/ptx_tma.cuh"
#include "cuda/common/ptx_wgmma.cuh"

namespace {
using namespace dsv4::cuda::ptx;

__device__ __forceinline__ void wgmma_m64n256k32_e4m3(float (&d)[128], uint64_t desc_a, uint64_t desc_b, int acc) {
  asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %130, 0;\n\t"
               "wgmma.mma_async.sync.aligned.m64n256k32.f32.e4m3.e4m3 " DSV4_WGMMA_D128
               ", %128, %129, p, 1, 1;\n\t}"
               : DSV4_WGMMA_ACC128(d, 0)
               : "l"(desc_a), "l"(desc_b), "r"(acc));
}

#define WR_D96 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}"
__device__ __forceinline__ void wgmma_m64n192k32_e4m3(float (&d)[96], uint64_t desc_a, uint64_t desc_b, int acc) {
  asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %98, 0;\n\t"
               "wgmma.mma_async.sync.aligned.m64n192k32.f32.e4m3.e4m3 " WR_D96 ", %96, %97, p, 1, 1;\n\t}"
               : DSV4_WGMMA_ACC64(d, 0), DSV4_WGMMA_ACC32(d, 64)
               : "l"(desc_a), "l"(desc_b), "r"(acc));
}


// D(64 x 128, f32) (+)= A(64 x 32 e4m3, registers: the ldmatrix.x4 fragment of the k32 step) * B^T.
__device__ __forceinline__ void wgmma_m64n128k32_e4m3_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b,
                                                         int acc) {
  asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %69, 0;\n\t"
               "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " DSV4_WGMMA_D64
               ", {%64, %65, %66, %67}, %68, p, 1, 1;\n\t}"
               : DSV4_WGMMA_ACC64(d, 0)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(acc));
}
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Halves modes: waits for the n128 scratch tile t of half h and adds it, scaled per row, into that
// half of the 64 x 256 accumulator.
__device__ __forceinline__ void promote_half(float (&acc)[128], float (&t)[64], int h, float s_lo, float s_hi) {
  fence_accumulators(t);
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    acc[64 * h + 4 * j + 0] += t[4 * j + 0] * s_lo;
    acc[64 * h + 4 * j + 1] += t[4 * j + 1] * s_lo;
    acc[64 * h + 4 * j + 2] += t[4 * j + 2] * s_hi;
    acc[64 * h + 4 * j + 3] += t[4 * j + 3] * s_hi;
  }
}

enum Mode { kChain, kTwo, kOne, kHalves, kHalfChain, kRSHalves, kRSChain };
constexpr int kThreads = 384;
constexpr int kABytes = 128 * 128;
template <int N>
__host__ __device__ constexpr int stage_bytes() {
  return kABytes + N * 128 + 1024;  // A, B, then 128 f32 row scales (padded to 1 KiB)
}
template <int N, int kStages>
__host__ __device__ constexpr int smem_bytes() {
  return kStages * stage_bytes<N>() + 1024 + 128;
}

struct Out {
  unsigned long long clk0, clk1, ns0, ns1;
};

// kTma: 0 = 1-D bulk copies; >= 1: the producer loads real GEMM tiles with 2-D TMA (128B swizzle):
// A box (k, 128 rows at m0), B box (k, N rows at n0) of 4096 x 7168 e4m3 matrices. 1: CTA c stays
// on tile (c % 32, c / 32) walking its 56 K blocks round and round; 2: CTA c walks the GEMM's units
// c, c + 132, ... (m-minor, as the kernel's get_tile), so L2 sees the kernel's access pattern; 3: as
// 2, plus the kernel's loader warps (warps 1-3 of the producer warpgroup take the stages in turn,
// load 128 A scales and one B scale from global a stage ahead, store them into the stage after it
// is free and arrive on `full`, which then counts 1 + 32 arrivals); 4: as 3, polling `empty` with
// __nanosleep; 5: as 3 without the scale loads; 6: as 3 without the arrivals (`full` counts 1); 7: as
// 3 with lane 0 alone polling `empty`; 8: as 3 with column-major A scales (coalesced); 9: 7 + 8;
// 10: as 2, the consumers (halves mode) loading their rows' scales from global two stages ahead;
// 11: as 2, the TMA thread bulk-copying the stage's column-major A scales (512 B) and B scale;
// 12: as 11 from the same source lines every stage.
template <int N, int M, bool kFeed, int kStages, int kTma = 0>
__global__ void __launch_bounds__(kThreads, 1) rate(const uint8_t* __restrict__ src, size_t src_bytes, int iters,
                                                     int chunk, Out* out, float* sink,
                                                     const __grid_constant__ CUtensorMap tm_a,
                                                     const __grid_constant__ CUtensorMap tm_b,
                                                     const float* __restrict__ scales) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t raw = smem_addr(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  uint8_t* smem = smem_raw + (base - raw);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * stage_bytes<N>());
  uint64_t* empty = full + kStages;
  const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, warp = (tid >> 5) & 3;

  // Random e4m3 codes in +-[2^-3, 2^3) everywhere (no zeros, no NaN), scales near 1.
  for (int i = tid; i < kStages * stage_bytes<N>() / 4; i += kThreads) {
    uint32_t h = (i + 1) * 2654435761u ^ blockIdx.x * 40503u;
    h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
    reinterpret_cast<uint32_t*>(smem)[i] = (h & 0x87878787u) | 0x28282828u;
  }
  __syncthreads();
  for (int s = 0; s < kStages; ++s)
    if (tid < 128) reinterpret_cast<float*>(smem + s * stage_bytes<N>() + kABytes + N * 128)[tid] = 1.0f + tid * 1e-3f;
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) mbar_init(&full[s], (kTma >= 3 && kTma <= 9 && kTma != 6) ? 33 : 1), mbar_init(&empty[s], 256);
    fence_barrier_init();
  }
  __syncthreads();

  // Tile of stage `it` in the kernel's order (kTma >= 2): unit blockIdx.x + (it / 56) * gridDim.x.
  auto tile_of = [&](int it, int& m0, int& n0) {
    constexpr int units = 32 * (4096 / N);
    const int unit = (blockIdx.x + (it / 56) * gridDim.x) % units;
    m0 = (unit % 32) * 128, n0 = (unit / 32) * N;
  };
  if (wg == 2) {
    setmaxnreg_dec<40>();
    if constexpr (kTma >= 3 && kTma <= 9) {
      if (tid >= 288) {  // loader warps 1..3
        const int lw = (tid - 256) / 32 - 1;
        for (int it = lw; it < iters; it += 3) {
          int m0, n0;
          tile_of(it, m0, n0);
          const int kb = it % 56;
          float ra[4];
          float rb = 1.0f;
#pragma unroll
          for (int j = 0; j < 4; ++j) ra[j] = 1.0f;
          if (kTma == 8 || kTma == 9) {  // column-major A scales: a stage's 128 are contiguous
#pragma unroll
            for (int j = 0; j < 4; ++j) ra[j] = __ldg(scales + kb * 4096 + m0 + lane + 32 * j);
            rb = __ldg(scales + 4096 * 56 + (n0 / 128) * 56 + kb);
          } else if (kTma != 5) {
#pragma unroll
            for (int j = 0; j < 4; ++j) ra[j] = __ldg(scales + (m0 + lane + 32 * j) * 56 + kb);
            rb = __ldg(scales + 4096 * 56 + (n0 / 128) * 56 + kb);
          }
          const int s = it % kStages;
          if (kTma == 4) {
            while (it >= kStages && !mbar_try_wait(&empty[s], ((it / kStages) - 1) & 1)) __nanosleep(256);
          } else if (kTma == 7 || kTma == 9) {  // one lane polls, the warp follows
            if (lane == 0 && it >= kStages) mbar_wait(&empty[s], ((it / kStages) - 1) & 1);
            __syncwarp();
          } else {
            if (it >= kStages) mbar_wait(&empty[s], ((it / kStages) - 1) & 1);
          }
          float* side = reinterpret_cast<float*>(smem + s * stage_bytes<N>() + kABytes + N * 128);
#pragma unroll
          for (int j = 0; j < 4; ++j) side[lane + 32 * j] = ra[j];
          if (lane == 0) side[128] = rb;
          if (kTma != 6) mbar_arrive(&full[s]);
        }
        return;
      }
    }
    if (!kFeed || tid != 256) return;
    // Producer: refill stage s once both consumer warpgroups released it, from a rotating window of
    // the source buffer (L2-resident: the GEMM's tiles are mostly L2 hits).
    const size_t bytes = kABytes + N * 128;
    size_t off = (static_cast<size_t>(blockIdx.x) * 7919 * bytes) % (src_bytes - bytes);
    off &= ~static_cast<size_t>(1023);
    const int m0 = (blockIdx.x % 32) * 128, n0 = (blockIdx.x / 32) * N;
    for (int it = 0; it < iters; ++it) {
      const int s = it % kStages;
      if (it >= kStages) mbar_wait(&empty[s], ((it / kStages) - 1) & 1);
      mbar_arrive_expect_tx(&full[s], static_cast<uint32_t>(bytes + (kTma == 11 || kTma == 12 ? 528 : 0)));
      const uint32_t dst = base + s * stage_bytes<N>();
      if constexpr (kTma > 0) {
        uint8_t* sdst = smem + s * stage_bytes<N>();
        int tm0 = m0, tn0 = n0;
        if constexpr (kTma >= 2) tile_of(it, tm0, tn0);
        tma_load_2d(sdst, &tm_a, &full[s], (it % 56) * 128, tm0);
        tma_load_2d(sdst + kABytes, &tm_b, &full[s], (it % 56) * 128, tn0);
        if constexpr (kTma == 11 || kTma == 12) {
          // The stage's 128 A scales (column-major: contiguous) by a 512-byte bulk copy, and the B
          // scale's 16-byte line, into the side buffer, on the same barrier (expect_tx covers them).
          // 12: always the same (L2-hot) source lines.
          const int kb = kTma == 12 ? 0 : it % 56;
          const int am = kTma == 12 ? 0 : tm0, bn = kTma == 12 ? 0 : tn0;
          uint64_t* bar = &full[s];
          bulk_load_1d(dst + kABytes + N * 128, scales + kb * 4096 + am, 512, bar);
          bulk_load_1d(dst + kABytes + N * 128 + 512, scales + 4096 * 56 + ((bn / 128) * 56 + kb) / 4 * 4, 16, bar);
        }
        continue;
      }
      for (uint32_t b = 0; b < bytes; b += chunk) bulk_load_1d(dst + b, src + off + b, chunk, &full[s]);
      off += bytes;
      if (off + bytes > src_bytes) off = 0;
    }
    return;
  }
  setmaxnreg_inc<232>();

  unsigned long long clk0 = clock64(), ns0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns0));
  const int row = warp * 16 + lane / 4;  // this thread's rows row, row + 8 of the warpgroup's 64
  const uint64_t da0 = wgmma_desc_sw128(base + wg * 64 * 128);
  const uint64_t db0 = wgmma_desc_sw128(base + kABytes);
  constexpr uint32_t kStageDesc = stage_bytes<N>() >> 4;
  auto wait_full = [&](int it) {
    if (kFeed) mbar_wait(&full[it % kStages], (it / kStages) & 1);
  };
  // Waits for stage `it` (fed runs) and returns its A and B descriptors.
  auto stage_descs = [&](int it, uint64_t& da, uint64_t& db) {
    wait_full(it);
    da = da0 + (it % kStages) * kStageDesc, db = db0 + (it % kStages) * kStageDesc;
  };
  auto release = [&](int it) {
    if (kFeed) mbar_arrive(&empty[it % kStages]);
  };
  auto scale_of = [&](int it, int r) {
    return reinterpret_cast<const float*>(smem + (it % kStages) * stage_bytes<N>() + kABytes + N * 128)[wg * 64 + r];
  };
  constexpr int kAcc = N / 2;
  float acc[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;

  if constexpr (M == kChain || M == kHalfChain) {
    // kHalfChain: N = 256 as two n128 wgmma chains (A read twice a k step), no promotion: against
    // the n256 chain, what reading A once saves (operand traffic, energy).
    static_assert(M == kChain || N == 256, "half-chain mode at n256");
    float c0[M == kHalfChain ? 64 : 1], c1[M == kHalfChain ? 64 : 1];
#pragma unroll
    for (int i = 0; i < (M == kHalfChain ? 64 : 1); ++i) c0[i] = c1[i] = 0.f;
    for (int it = 0; it < iters; ++it) {
      uint64_t da, db;
      stage_descs(it, da, db);
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if constexpr (M == kHalfChain) {
          wgmma_m64n128k32_e4m3(c0, da + k * 2, db + k * 2, 1);
          wgmma_m64n128k32_e4m3(c1, da + k * 2, db + (128 * 128 >> 4) + k * 2, 1);
        } else if constexpr (N == 128) {
          wgmma_m64n128k32_e4m3(acc, da + k * 2, db + k * 2, 1);
        } else if constexpr (N == 192) {
          wgmma_m64n192k32_e4m3(acc, da + k * 2, db + k * 2, 1);
        } else {
          wgmma_m64n256k32_e4m3(acc, da + k * 2, db + k * 2, 1);
        }
      }
      wgmma_commit();
      wgmma_wait<1>();
      if (it > 0) release(it - 1);
    }
    wgmma_wait<0>();
    fence_accumulators(acc);
    fence_accumulators(c0);
    fence_accumulators(c1);
    release(iters - 1);
    if constexpr (M == kHalfChain) {
#pragma unroll
      for (int i = 0; i < 64; ++i) acc[i] = c0[i] + c1[i];
    }
  } else if constexpr (M == kTwo || M == kOne) {
    static_assert(N == 128 || (N == 192 && M == kOne), "scratch modes at n128, one scratch also at n192");
    float t0[kAcc], t1[M == kTwo ? kAcc : 1];
    auto issue = [&](float(&d)[kAcc], int it) {
      uint64_t da, db;
      stage_descs(it, da, db);
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if constexpr (N == 128) wgmma_m64n128k32_e4m3(d, da + k * 2, db + k * 2, k > 0);
        else wgmma_m64n192k32_e4m3(d, da + k * 2, db + k * 2, k > 0);
      }
      wgmma_commit();
    };
    auto retire = [&](float(&d)[kAcc], int it) {
      fence_accumulators(d);
      const float s_lo = scale_of(it, row), s_hi = scale_of(it, row + 8);
      release(it);
#pragma unroll
      for (int j = 0; j < kAcc / 4; ++j) {
        acc[4 * j + 0] += d[4 * j + 0] * s_lo;
        acc[4 * j + 1] += d[4 * j + 1] * s_lo;
        acc[4 * j + 2] += d[4 * j + 2] * s_hi;
        acc[4 * j + 3] += d[4 * j + 3] * s_hi;
      }
    };
    if constexpr (M == kTwo) {
      issue(t0, 0);
      int it = 0;
      for (; it + 2 < iters; it += 2) {
        issue(t1, it + 1);
        wgmma_wait<1>();
        retire(t0, it);
        issue(t0, it + 2);
        wgmma_wait<1>();
        retire(t1, it + 1);
      }
      if (it + 1 < iters) {
        issue(t1, it + 1);
        wgmma_wait<1>();
        retire(t0, it);
        wgmma_wait<0>();
        retire(t1, it + 1);
      } else {
        wgmma_wait<0>();
        retire(t0, it);
      }
    } else {
      for (int it = 0; it < iters; ++it) {
        issue(t0, it);
        wgmma_wait<0>();
        retire(t0, it);
      }
    }
    (void)t1;
  } else if constexpr (M == kRSHalves || M == kRSChain) {
    static_assert(N == 256, "register-A modes at n256");
    // ldmatrix.x4 of k32 step k: lanes 0-7 / 8-15 address rows 0-7 / 8-15 of the warp's 16 at the
    // step's first 16-byte chunk, lanes 16-31 the same rows at its second: the registers are then
    // the wgmma A fragment (rows g, g + 8; K bytes 4c.. and 16 + 4c..). 128B swizzle: chunk ^ row % 8.
    const int lrow = wg * 64 + warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
    const uint32_t a_lane = base + lrow * 128;
    const int a_hi = lane >> 4, a_sw = lane & 7;
    float t0[64], t1[M == kRSChain ? 64 : 1];
#pragma unroll
    for (int i = 0; i < 64; ++i) t0[i] = 0.f;
#pragma unroll
    for (int i = 0; i < (M == kRSChain ? 64 : 1); ++i) t1[i] = 0.f;
    for (int it = 0; it < iters; ++it) {
      uint64_t da, db;
      stage_descs(it, da, db);
      (void)da;
      uint32_t af[4][4];
      const uint32_t a_stage = a_lane + (it % kStages) * stage_bytes<N>();
#pragma unroll
      for (int k = 0; k < 4; ++k) ldsm_x4(a_stage + (((2 * k + a_hi) ^ a_sw) << 4), af[k]);
      if constexpr (M == kRSChain) {
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          wgmma_m64n128k32_e4m3_rs(t0, af[k], db + k * 2, 1);
          wgmma_m64n128k32_e4m3_rs(t1, af[k], db + (128 * 128 >> 4) + k * 2, 1);
        }
        wgmma_commit();
        wgmma_wait<0>();  // the fragments are rewritten next stage
        release(it);
      } else {
        const float s_lo = scale_of(it, row), s_hi = scale_of(it, row + 8);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          wgmma_fence();
#pragma unroll
          for (int k = 0; k < 4; ++k) wgmma_m64n128k32_e4m3_rs(t0, af[k], db + h * (128 * 128 >> 4) + k * 2, k > 0);
          wgmma_commit();
          wgmma_wait<0>();
          promote_half(acc, t0, h, s_lo, s_hi);
        }
        release(it);
      }
    }
    fence_accumulators(t0);
    fence_accumulators(t1);
    if constexpr (M == kRSChain) {
#pragma unroll
      for (int i = 0; i < 64; ++i) acc[i] = t0[i] + t1[i];
    }
  } else {
    static_assert(N == 256, "halves mode at n256");
    float t0[64];
    // kTma == 10: the consumers load their rows' scales from global themselves, two stages ahead,
    // into two register sets used on alternate stages (no register moves that would wait on loads).
    auto gload = [&](int it, float& lo, float& hi, float& b) {
      if (it >= iters) return;
      int m0, n0;
      tile_of(it, m0, n0);
      const int kb = it % 56;
      lo = __ldg(scales + (m0 + wg * 64 + row) * 56 + kb);
      hi = __ldg(scales + (m0 + wg * 64 + row + 8) * 56 + kb);
      b = __ldg(scales + 4096 * 56 + (n0 / 128) * 56 + kb);
    };
    float ga_lo = 1.f, ga_hi = 1.f, ga_b = 1.f, gb_lo = 1.f, gb_hi = 1.f, gb_b = 1.f;
    if constexpr (kTma == 10) gload(0, ga_lo, ga_hi, ga_b), gload(1, gb_lo, gb_hi, gb_b);
    for (int it = 0; it < iters; ++it) {
      uint64_t da, db;
      stage_descs(it, da, db);
      float s_lo, s_hi;
      if constexpr (kTma == 10) {
        const bool odd = it & 1;
        s_lo = (odd ? gb_lo : ga_lo) * (odd ? gb_b : ga_b);
        s_hi = (odd ? gb_hi : ga_hi) * (odd ? gb_b : ga_b);
        if (odd) gload(it + 2, gb_lo, gb_hi, gb_b);
        else gload(it + 2, ga_lo, ga_hi, ga_b);
      } else {
        s_lo = scale_of(it, row), s_hi = scale_of(it, row + 8);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < 4; ++k) wgmma_m64n128k32_e4m3(t0, da + k * 2, db + h * (128 * 128 >> 4) + k * 2, k > 0);
        wgmma_commit();
        wgmma_wait<0>();
        promote_half(acc, t0, h, s_lo, s_hi);
      }
      release(it);
    }
  }

  float v = 0.f;
#pragma unroll
  for (int i = 0; i < kAcc; ++i) v += acc[i];
  if (v == 1234.5f) sink[tid] = v;  // keeps the accumulators alive
  unsigned long long clk1 = clock64(), ns1;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns1));
  if (tid == 0) out[blockIdx.x] = Out{clk0, clk1, ns0, ns1};
}

#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

CUtensorMap g_tm_a, g_tm_b128, g_tm_b192, g_tm_b256;  // the kTma runs' A and B (main() encodes them)

const float* g_scales = nullptr;  // kTma == 3: A scales [4096][56] then B scales [32][56], all 1

template <int N, int M, bool kFeed, int kStages = 4, int kTma = 0>
int run(const char* name, const uint8_t* src, size_t src_bytes, int sms, Out* d_out, float* sink, int chunk = 16384) {
  auto k = rate<N, M, kFeed, kStages, kTma>;
  CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<N, kStages>()));
  const int iters = 6000;
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<double> tf, mhz, util;
  for (int rep = 0; rep < 6; ++rep) {
    CK(cudaEventRecord(e0));
    k<<<sms, kThreads, smem_bytes<N, kStages>()>>>(src, src_bytes, iters, chunk, d_out, sink, g_tm_a,
                                                    N == 128 ? g_tm_b128 : N == 192 ? g_tm_b192 : g_tm_b256, g_scales);
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    CK(cudaGetLastError());
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    std::vector<Out> h(sms);
    CK(cudaMemcpy(h.data(), d_out, sms * sizeof(Out), cudaMemcpyDeviceToHost));
    double f = 0;
    for (const Out& o : h) f += double(o.clk1 - o.clk0) / double(o.ns1 - o.ns0);
    f /= sms;  // GHz
    const double macs = double(sms) * 2 * iters * 4 * 64.0 * N * 32;
    if (rep == 0) continue;  // warm-up
    tf.push_back(2 * macs / (ms * 1e-3) / 1e12);
    mhz.push_back(f * 1e3);
    double kcyc = 0;
    for (const Out& o : h) kcyc = std::max(kcyc, double(o.clk1 - o.clk0));
    util.push_back(macs / sms / kcyc / 4096.0);
  }
  std::sort(tf.begin(), tf.end());
  std::sort(mhz.begin(), mhz.end());
  std::sort(util.begin(), util.end());
  std::printf("%-34s n%-3d S%d  %7.1f TFLOP/s (min %7.1f max %7.1f)  SM clock %6.0f MHz  tensor busy %5.1f%% of 4096 MAC/clk\n",
              name, N, kStages, tf[tf.size() / 2], tf.front(), tf.back(), mhz[mhz.size() / 2], 100 * util[util.size() / 2]);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return 0;
}

}  // namespace

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t big = size_t(256) << 20;  // the refills read a window of this buffer
  uint8_t* src = nullptr;
  Out* d_out = nullptr;
  float* sink = nullptr;
  CK(cudaMalloc(&src, big));
  CK(cudaMalloc(&d_out, sms * sizeof(Out)));
  CK(cudaMalloc(&sink, kThreads * sizeof(float)));
  {
    // WR_DATA=full: every e4m3 code but NaN, as the GEMM bench fills its operands (the tensor
    // pipe's power, and so the clock, depends on the operand bits); default: +-[2^-3, 2^-1).
    const char* data = std::getenv("WR_DATA");
    const bool full_range = data && std::string(data) == "full";
    std::vector<uint32_t> h(big / 4);
    uint32_t x = 12345;
    for (auto& w : h) {
      x ^= x << 13, x ^= x >> 17, x ^= x << 5;
      if (!full_range) {
        w = (x & 0x87878787u) | 0x28282828u;
        continue;
      }
      w = x;
      for (int b = 0; b < 4; ++b)
        if (((w >> (8 * b)) & 0x7Fu) == 0x7Fu) w ^= 1u << (8 * b);  // NaN -> 448 / -448
    }
    CK(cudaMemcpy(src, h.data(), big, cudaMemcpyHostToDevice));
  }
  {
    // 4096 x 7168 e4m3 A and B (the 4096^2 x 7168 GEMM's operands) inside the big buffer.
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q;
    CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q));
    auto encode = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
    auto map = [&](CUtensorMap* m, const uint8_t* base, uint32_t box_rows) {
      const cuuint64_t dims[2] = {7168, 4096}, strides[1] = {7168};
      const cuuint32_t box[2] = {128, box_rows}, es[2] = {1, 1};
      return encode(m, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<uint8_t*>(base), dims, strides, box, es,
                    CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                    CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
    };
    const size_t mat = size_t(4096) * 7168;
    if (!map(&g_tm_a, src, 128) || !map(&g_tm_b128, src + mat, 128) || !map(&g_tm_b192, src + mat, 192) ||
        !map(&g_tm_b256, src + mat, 256)) {
      std::printf("cuTensorMapEncodeTiled failed\n");
      return 1;
    }
  }
  const size_t l2 = size_t(24) << 20;  // half of L2: refills are L2 hits, as most GEMM tile loads are
  const size_t hot = size_t(2) << 20;  // every SM reads the same 2 MB
  int rc = 0;
  const char* what = std::getenv("WR_SET");
  const int set = what ? std::atoi(what) : 0;
  if (set == 0 || set == 1) {
    rc |= run<128, kChain, false>("chain, no feed", src, l2, sms, d_out, sink);
    rc |= run<128, kChain, true>("chain, fed (24 MB)", src, l2, sms, d_out, sink);
    rc |= run<128, kTwo, false>("two scratch, no feed", src, l2, sms, d_out, sink);
    rc |= run<128, kTwo, true>("two scratch, fed", src, l2, sms, d_out, sink);
    rc |= run<128, kOne, true>("one scratch, fed", src, l2, sms, d_out, sink);
    rc |= run<256, kChain, false>("chain, no feed", src, l2, sms, d_out, sink);
    rc |= run<256, kChain, true>("chain, fed", src, l2, sms, d_out, sink);
    rc |= run<256, kHalves, false>("halves, no feed", src, l2, sms, d_out, sink);
    rc |= run<256, kHalves, true>("halves, fed", src, l2, sms, d_out, sink);
  }
  if (set == 0 || set == 3) {  // the GEMM kernel's 128 x 256 ring: 3 stages
    rc |= run<256, kChain, true, 3>("chain, fed, 3 stages", src, l2, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3>("halves, fed, 3 stages", src, l2, sms, d_out, sink);
    rc |= run<256, kHalves, true, 2>("halves, fed, 2 stages", src, l2, sms, d_out, sink);
    rc |= run<128, kTwo, true, 6>("two scratch, fed, 6 stages", src, l2, sms, d_out, sink);
  }
  {
    std::vector<float> ones((4096 + 32) * 56, 1.0f);
    float* d = nullptr;
    CK(cudaMalloc(&d, ones.size() * 4));
    CK(cudaMemcpy(d, ones.data(), ones.size() * 4, cudaMemcpyHostToDevice));
    g_scales = d;
  }
  if (set == 0 || set == 4) {  // fed by 2-D TMA from the GEMM's operands, as the kernel is
    rc |= run<128, kTwo, true, 5, 1>("two scratch, TMA fed, 5 stages", src, big, sms, d_out, sink);
    rc |= run<128, kChain, true, 5, 1>("chain, TMA fed, 5 stages", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 1>("halves, TMA fed, 3 stages", src, big, sms, d_out, sink);
    rc |= run<256, kChain, true, 3, 1>("chain, TMA fed, 3 stages", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5>("two scratch, bulk fed, 5 stages", src, l2, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3>("halves, bulk fed, 3 stages", src, l2, sms, d_out, sink);
  }
  if (set == 0 || set == 5) {  // the kernel's parts added to the loop: its tile order, its loader warps
    rc |= run<128, kTwo, true, 5, 1>("two scratch, TMA, one tile", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 2>("two scratch, TMA, kernel order", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 3>("two scratch, TMA, order+loaders", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 1>("halves, TMA, one tile", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 2>("halves, TMA, kernel order", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 3>("halves, TMA, order+loaders", src, big, sms, d_out, sink);
  }
  if (set == 0 || set == 7) {  // cheaper loaders
    rc |= run<256, kHalves, true, 3, 2>("halves, no loaders", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 3>("halves, loaders", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 7>("halves, loaders lane-0 poll", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 8>("halves, loaders col-major", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 9>("halves, loaders lane-0 + col-major", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 2>("two scratch, no loaders", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 3>("two scratch, loaders", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 7>("two scratch, loaders lane-0 poll", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 9>("two scratch, lane-0 + col-major", src, big, sms, d_out, sink);
  }
  if (set == 0 || set == 11) {  // 128 x 192 tiles: m64n192 with one 96-register scratch (acc 96 + 96)
    rc |= run<192, kChain, true, 4, 2>("n192 chain, TMA", src, big, sms, d_out, sink);
    rc |= run<192, kOne, true, 4, 2>("n192 one scratch + promotion", src, big, sms, d_out, sink);
    rc |= run<192, kOne, true, 4, 3>("n192 one scratch, loaders", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 2>("halves + promotion (n256)", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 2>("two scratch (n128)", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 3>("two scratch (n128), loaders", src, big, sms, d_out, sink);
  }
  if (set == 0 || set == 10) {  // reading A once (m64n256) against twice (two n128 chains), run with WR_DATA=full
    rc |= run<256, kChain, true, 3, 2>("n256 chain, TMA", src, big, sms, d_out, sink);
    rc |= run<256, kHalfChain, true, 3, 2>("two n128 chains, TMA", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 2>("halves + promotion, TMA", src, big, sms, d_out, sink);
    rc |= run<128, kChain, true, 5, 2>("n128 chain, TMA (128 x 128)", src, big, sms, d_out, sink);
  }
  if (set == 0 || set == 9) {  // with WR_DATA=full against the default data
    rc |= run<256, kHalves, true, 3, 2>("halves, TMA, no loaders", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 3>("halves, TMA, loaders", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 2>("two scratch, TMA, no loaders", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 3>("two scratch, TMA, loaders", src, big, sms, d_out, sink);
  }
  if (set == 0 || set == 8) {  // no loader warps: the consumers load their own scales
    rc |= run<256, kHalves, true, 3, 2>("halves, no loaders (smem scales)", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 3>("halves, loaders", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 10>("halves, consumers load scales", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 11>("halves, scales by bulk copy", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 12>("halves, bulk copy, hot lines", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 2>("two scratch, no loaders", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 3>("two scratch, loaders", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 11>("two scratch, scales by bulk copy", src, big, sms, d_out, sink);
  }
  if (set == 0 || set == 6) {  // which part of the loaders costs
    rc |= run<256, kHalves, true, 3, 2>("halves, no loaders", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 3>("halves, loaders", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 5>("halves, loaders without loads", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 6>("halves, loaders no full arrive", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 2>("two scratch, no loaders", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 3>("two scratch, loaders", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 6>("two scratch, loaders no full arrive", src, big, sms, d_out, sink);
  }
  if (set == 0 || set == 12) {  // A from registers, read once for both n128 halves (the smem-bandwidth model)
    rc |= run<256, kChain, true, 3, 2>("n256 chain, TMA", src, big, sms, d_out, sink);
    rc |= run<256, kHalfChain, true, 3, 2>("two n128 chains (SS), TMA", src, big, sms, d_out, sink);
    rc |= run<256, kRSChain, true, 3, 2>("two n128 chains (RS), TMA", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 2>("halves SS + promotion, TMA", src, big, sms, d_out, sink);
    rc |= run<256, kRSHalves, true, 3, 2>("halves RS + promotion, TMA", src, big, sms, d_out, sink);
    rc |= run<256, kRSHalves, true, 4, 2>("halves RS + promotion, TMA, 4 st", src, big, sms, d_out, sink);
    rc |= run<256, kRSHalves, true, 3, 3>("halves RS, loaders", src, big, sms, d_out, sink);
    rc |= run<256, kRSHalves, true, 3, 11>("halves RS, scales by bulk copy", src, big, sms, d_out, sink);
    rc |= run<256, kHalves, true, 3, 11>("halves SS, scales by bulk copy", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 2>("two scratch (n128), TMA", src, big, sms, d_out, sink);
    rc |= run<128, kTwo, true, 5, 3>("two scratch (n128), loaders", src, big, sms, d_out, sink);
    rc |= run<256, kRSHalves, false>("halves RS, no feed", src, l2, sms, d_out, sink);
  }
  if (set == 0 || set == 2) {
    // What bounds the feed: ring depth (stages), request size, where the bytes come from.
    rc |= run<128, kChain, true, 2>("chain, fed, 2 stages", src, l2, sms, d_out, sink);
    rc |= run<128, kChain, true, 6>("chain, fed, 6 stages", src, l2, sms, d_out, sink);
    rc |= run<128, kTwo, true, 6>("two scratch, fed, 6 stages", src, l2, sms, d_out, sink);
    rc |= run<128, kChain, true, 4>("chain, fed, 4 KB copies", src, l2, sms, d_out, sink, 4096);
    rc |= run<128, kChain, true, 4>("chain, fed (2 MB hot)", src, hot, sms, d_out, sink);
    rc |= run<128, kChain, true, 4>("chain, fed (256 MB, DRAM)", src, big, sms, d_out, sink);
    rc |= run<256, kChain, true, 2>("chain, fed, 2 stages", src, l2, sms, d_out, sink);
    rc |= run<256, kChain, true, 4>("chain, fed (2 MB hot)", src, hot, sms, d_out, sink);
  }
  return rc;
}
