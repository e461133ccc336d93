// PTX wrappers for Hopper warpgroup MMA (wgmma): shared-memory matrix descriptors, the fences and
// group waits around it, and the m64nNk* instructions the GEMMs and the sparse decode use. Device
// code only, sm_90a.
//
// Operands come from shared memory, K-major (one exception, marked _tb), in the 128-byte swizzle
// TMA writes with CU_TENSOR_MAP_SWIZZLE_128B: rows of 128 bytes, 8-row (1024-byte) swizzle atoms
// stacked along M/N.
// One instruction reads a 64 x (32 bytes of K) slice of A and an N x (32 bytes of K) slice of B;
// the next K slice starts 32 bytes further in the same rows, which is how the descriptors step.
//
// Accumulator layout (m64nN, f32): warp w of the warpgroup owns rows 16w..16w+15; lane l holds, for
// each 8-column group j < N/8, d[4j+0..1] at row 16w + l/4, columns 8j + 2(l%4) + {0,1}, and
// d[4j+2..3] at row 16w + l/4 + 8, same columns.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda::ptx {

// Descriptor of a K-major, 128B-swizzled operand tile starting at shared address `addr` (which must
// lie in a 1024-byte-aligned swizzle atom; stepping by 32/64/96 bytes inside the atom selects K
// slices). Fields: start address >> 4 (bits 0-13), leading byte offset (unused for swizzled K-major,
// set to 1), stride byte offset = 1024 >> 4 between 8-row groups (bits 32-45), swizzle mode 1 =
// 128B (bits 62-63).
__device__ __forceinline__ uint64_t wgmma_desc_sw128(uint32_t addr) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((addr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>(1) << 16;
  d |= static_cast<uint64_t>(1024 >> 4) << 32;
  d |= static_cast<uint64_t>(1) << 62;
  return d;
}

// v as lane 0 of the warp holds it. For a value that is warp-uniform already (a warpgroup index,
// a per-CTA length) this tells ptxas so: what derives from it (wgmma descriptors, tile indices,
// mbarrier addresses) then lives in uniform registers instead of per-thread ones with an R2UR at
// every use (the FP8 GEMM's K loop: 83.9 M -> 67.8 M warp instructions, docs/notes/gemm.md round 13).
__device__ __forceinline__ int warp_uniform(int v) { return __shfl_sync(0xffffffffu, v, 0); }

// Orders prior register/shared accesses before the next wgmma reads them (needed before the first
// wgmma and whenever the accumulator registers were touched by ordinary instructions).
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
// Waits until at most kPending committed wgmma groups are still in flight.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}
// Keeps the compiler from moving accumulator reads/writes across an async wgmma.
template <int kN>
__device__ __forceinline__ void fence_accumulators(float (&d)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The SS (both operands in shared memory) wrappers below share their operand lists: the
// accumulator registers as "{%0, ..., %(N-1)}" in the instruction and "+f"(d[i]) bindings, then
// desc_a, desc_b and the accumulate flag as operands N, N + 1, N + 2.
#define DSV4_WGMMA_D8 "{%0, %1, %2, %3, %4, %5, %6, %7}"
#define DSV4_WGMMA_D16 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define DSV4_WGMMA_D32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define DSV4_WGMMA_D64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define DSV4_WGMMA_D128 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"
#define DSV4_WGMMA_ACC8(d, i)                                                                     \
  "+f"(d[(i)]), "+f"(d[(i) + 1]), "+f"(d[(i) + 2]), "+f"(d[(i) + 3]), "+f"(d[(i) + 4]), "+f"(d[(i) + 5]), \
      "+f"(d[(i) + 6]), "+f"(d[(i) + 7])
#define DSV4_WGMMA_ACC16(d, i) DSV4_WGMMA_ACC8(d, i), DSV4_WGMMA_ACC8(d, (i) + 8)
#define DSV4_WGMMA_ACC32(d, i) DSV4_WGMMA_ACC16(d, i), DSV4_WGMMA_ACC16(d, (i) + 16)
#define DSV4_WGMMA_ACC64(d, i) DSV4_WGMMA_ACC32(d, i), DSV4_WGMMA_ACC32(d, (i) + 32)
#define DSV4_WGMMA_ACC128(d, i) DSV4_WGMMA_ACC64(d, i), DSV4_WGMMA_ACC64(d, (i) + 64)
// One SS wgmma: NAME(float (&d)[N], desc_a, desc_b, accumulate), `shape_types` the instruction's
// suffix (e.g. m64n128k32.f32.e4m3.e4m3), `tail` its operands after the predicate (the scale and,
// for 16-bit types, the transpose immediates). accumulate = 0 overwrites D.
#define DSV4_WGMMA_SS(NAME, N, IA, IB, IP, shape_types, tail)                                        \
  __device__ __forceinline__ void NAME(float (&d)[N], uint64_t desc_a, uint64_t desc_b, int accumulate) { \
    asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %" #IP ", 0;\n\t"                          \
                 "wgmma.mma_async.sync.aligned." shape_types " " DSV4_WGMMA_D##N ", %" #IA ", %" #IB  \
                 ", p, " tail ";\n\t}"                                                              \
                 : DSV4_WGMMA_ACC##N(d, 0)                                                            \
                 : "l"(desc_a), "l"(desc_b), "r"(accumulate));                                       \
  }

// D(64 x N, f32) (+)= A(64 x 32 e4m3) * B(N x 32 e4m3)^T, both K-major. N = 128: the GEMM tiles;
// 32 / 64: FP8 decode tiles of 32 / 64 weight rows.
DSV4_WGMMA_SS(wgmma_m64n128k32_e4m3, 64, 64, 65, 66, "m64n128k32.f32.e4m3.e4m3", "1, 1")
DSV4_WGMMA_SS(wgmma_m64n32k32_e4m3, 16, 16, 17, 18, "m64n32k32.f32.e4m3.e4m3", "1, 1")
DSV4_WGMMA_SS(wgmma_m64n64k32_e4m3, 32, 32, 33, 34, "m64n64k32.f32.e4m3.e4m3", "1, 1")
// D(64 x N, f32) (+)= A(64 x 16 bf16) * B(N x 16 bf16)^T, both K-major (transpose immediates 0).
// N = 256: pre-expanded W4A16's 128 x 256 tiles (a quarter fewer operand bytes a MAC).
DSV4_WGMMA_SS(wgmma_m64n128k16_bf16, 64, 64, 65, 66, "m64n128k16.f32.bf16.bf16", "1, 1, 0, 0")
DSV4_WGMMA_SS(wgmma_m64n256k16_bf16, 128, 128, 129, 130, "m64n256k16.f32.bf16.bf16", "1, 1, 0, 0")
// N = 64: the sparse-decode S = Q K^T over a 64-key tile.
DSV4_WGMMA_SS(wgmma_m64n64k16_bf16, 32, 32, 33, 34, "m64n64k16.f32.bf16.bf16", "1, 1, 0, 0")
// N = 16: the narrow sparse decode's S^T = K Q^T (64 keys as M, up to 16 heads as N).
DSV4_WGMMA_SS(wgmma_m64n16k16_bf16, 8, 8, 9, 10, "m64n16k16.f32.bf16.bf16", "1, 1, 0, 0")
#undef DSV4_WGMMA_SS

// D(64 x 128, f32) += A(64 x 16 bf16, K-major) * B(16 x 128 bf16, N-major: transpose bit set), always
// accumulating: the sparse-decode O += P V with the key tile read as V in place.
__device__ __forceinline__ void wgmma_m64n128k16_bf16_tb(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " DSV4_WGMMA_D64 ", %64, %65, 1, 1, 1, 0, 1;\n"
               : DSV4_WGMMA_ACC64(d, 0)
               : "l"(desc_a), "l"(desc_b));
}

// D(64 x N, f32) += A(64 x 16 bf16, M-major: transpose bit set) * B(N x 16 bf16, K-major)^T, always
// accumulating, N = 16: the sparse decode's transposed O^T += V^T P^T for up to 16 heads (the key
// tile read as V^T in place, 64 dims a call; P's first 16 rows as B), a quarter of the tensor work
// of the 64-row P V.
__device__ __forceinline__ void wgmma_m64n16k16_bf16_ta(float (&d)[8], uint64_t desc_a, uint64_t desc_b) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, 1, 1, 1, 1, 0;\n"
               : DSV4_WGMMA_ACC8(d, 0)
               : "l"(desc_a), "l"(desc_b));
}

// Register-A ("RS") forms, for the FP4-weight decode GEMM (gemm/kernel_decode_fp4.cuh): A comes
// from registers, four 32-bit words a thread in the mma.sync fragment layout (warp w of the
// warpgroup holds rows 16w..16w+15; lane (g = l / 4, c = l % 4): word 0 row 16w + g, word 1 row
// 16w + g + 8, words 2 / 3 the same rows at K + 8 (bf16: K slots 2c, 2c+1 and 2c+8, 2c+9 of the
// k16 step) or K + 16 (e4m3: slots 4c..4c+3 and 4c+16..4c+19 of the k32 step), lowest K in the low
// bits). B (N x K, K-major) from shared memory by descriptor. The A registers are read
// asynchronously: they must stay unchanged until wgmma_wait retires the group.
// D(64 x 16, f32) (+)= A(64 x 16 bf16, registers) * B(16 x 16 bf16)^T.
__device__ __forceinline__ void wgmma_m64n16k16_bf16_rs(float (&d)[8], const uint32_t (&a)[4], uint64_t desc_b,
                                                        int accumulate) {
  asm volatile(
      "{\n\t.reg .pred p;\n\t"
      "setp.ne.b32 p, %13, 0;\n\t"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, 0;\n\t}"
      : DSV4_WGMMA_ACC8(d, 0)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate));
}
// D(64 x 16, f32) (+)= A(64 x 32 e4m3, registers) * B(16 x 32 e4m3)^T.
__device__ __forceinline__ void wgmma_m64n16k32_e4m3_rs(float (&d)[8], const uint32_t (&a)[4], uint64_t desc_b,
                                                        int accumulate) {
  asm volatile(
      "{\n\t.reg .pred p;\n\t"
      "setp.ne.b32 p, %13, 0;\n\t"
      "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1;\n\t}"
      : DSV4_WGMMA_ACC8(d, 0)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate));
}

}  // namespace dsv4::cuda::ptx
