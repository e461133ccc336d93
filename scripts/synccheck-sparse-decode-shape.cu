// The sparse-decode wgmma kernel's synchronisation shape, one feature at a time, for
// compute-sanitizer synccheck (docs/notes/sparse_decode.md, round 12, "synccheck reports"): the
// real kernel is reported ("Barrier error detected. Divergent thread(s) in block" at the consumers'
// pre-epilogue bar.sync 1, 256); none of these variants is (H100, 2026-11-24), so the trigger is
// something this file does not have yet. Variant bits: 1 setmaxnreg (producers 80, consumers 160),
// 2 bar.sync 2, 128 inside warpgroup 0's loop, 4 a divergent store right before bar.sync 1, 8 an
// mbarrier phase completed by the producers and waited for by both consumer warpgroups, 16
// griddepcontrol.launch_dependents, 32 cp.async into shared memory, 64 one wgmma a consumer
// warpgroup. Warpgroups 2-3 return early in every variant, as the producers do.
//
//   nvcc -gencode arch=compute_90a,code=sm_90a -lineinfo -o /tmp/sc scripts/synccheck-sparse-decode-shape.cu
//   for v in 0 1 2 3 4 7 8 16 31 32 64 127; do compute-sanitizer --tool synccheck /tmp/sc $v; done
#include <cstdio>
#include <cstdint>
#include <cstdlib>
template <int kV>
__global__ void __launch_bounds__(512, 1) k(float* out, int iters) {
  __shared__ float v[256];
  __shared__ float red[128];
  __shared__ __align__(8) unsigned long long bar;
  __shared__ __align__(1024) uint16_t tile[64 * 64];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int dg = __shfl_sync(0xffffffffu, tid >> 7, 0);
  if (kV & 16) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (kV & 32) {  // cp.async of 16 bytes a thread, as the Q load
    const uint32_t dst = (uint32_t)__cvta_generic_to_shared(tile) + 16u * (tid & 511);
    if (tid < 512) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(out + 4 * (tid & 255)));
    asm volatile("cp.async.commit_group;\ncp.async.wait_all;" ::: "memory");
  }
  if (tid == 0) asm volatile("mbarrier.init.shared.b64 [%0], %1;" ::"r"((uint32_t)__cvta_generic_to_shared(&bar)), "r"(256));
  __syncthreads();
  if (dg >= 2) {
    if (kV & 1) asm volatile("setmaxnreg.dec.sync.aligned.u32 80;");
    if (kV & 8) {  // producers complete one phase of an mbarrier
      unsigned long long st;
      asm volatile("mbarrier.arrive.shared.b64 %0, [%1];" : "=l"(st) : "r"((uint32_t)__cvta_generic_to_shared(&bar)));
    }
    return;
  }
  if (kV & 1) asm volatile("setmaxnreg.inc.sync.aligned.u32 160;");
  float acc = tid;
  for (int i = 0; i < iters; ++i) {
    if (dg == 0 && (kV & 2)) {
      if (lane < 4) red[warp * 4 + lane] = acc;
      asm volatile("bar.sync 2, 128;" ::: "memory");
      acc += red[(warp ^ 1) * 4 + (lane & 3)];
    }
    if ((kV & 8) && i == 0) {  // both consumer warpgroups wait for that phase
      const uint32_t a = (uint32_t)__cvta_generic_to_shared(&bar);
      uint32_t done = 0;
      while (!done) asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }" : "=r"(done) : "r"(a), "r"(0) : "memory");
    }
  }
  if (kV & 64) {  // one wgmma m64n16k16 (bf16, both operands in smem) a consumer warpgroup
    float d[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const uint64_t desc = ((uint64_t)((__cvta_generic_to_shared(tile) >> 4) & 0x3FFF)) | ((uint64_t)(1024 >> 4) << 32) | (1ull << 62);
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
    asm volatile("wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, 1, 1, 1, 0, 0;"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
                 : "l"(desc), "l"(desc));
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    acc += d[0] + d[7];
  }
  if ((kV & 4) && (lane & 3) == 0) v[tid] = acc;  // divergent store right before the barrier
  else v[tid] = acc + 1;
  asm volatile("bar.sync 1, 256;" ::: "memory");
  out[blockIdx.x * 256 + tid] = v[tid ^ 128];
}
int main(int argc, char** argv) {
  float* d;
  cudaMalloc(&d, 4 * 256 * sizeof(float));
  const int v = argc > 1 ? atoi(argv[1]) : 0;
  switch (v) {
    case 0: k<0><<<4, 512>>>(d, 8); break;
    case 1: k<1><<<4, 512>>>(d, 8); break;
    case 2: k<2><<<4, 512>>>(d, 8); break;
    case 4: k<4><<<4, 512>>>(d, 8); break;
    case 3: k<3><<<4, 512>>>(d, 8); break;
    case 7: k<7><<<4, 512>>>(d, 8); break;
    case 8: k<8><<<4, 512>>>(d, 8); break;
    case 16: k<16><<<4, 512>>>(d, 8); break;
    case 31: k<31><<<4, 512>>>(d, 8); break;
    case 32: k<32><<<4, 512>>>(d, 8); break;
    case 64: k<64><<<4, 512>>>(d, 8); break;
    case 127: k<127><<<4, 512>>>(d, 8); break;
  }
  printf("done: %s\n", cudaGetErrorString(cudaDeviceSynchronize()));
  return 0;
}
