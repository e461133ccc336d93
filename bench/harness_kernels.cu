// The harness's own kernels: random fills for GiB-sized inputs and the read-bandwidth probe.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "dsv4/numerics.h"
#include "harness_kernels.h"

namespace dsv4::bench::kernels {
namespace {

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// One 32-bit lane of random bits -> one element's code of the requested kind.
__device__ __forceinline__ uint32_t bf16_code(uint32_t r) {
  const uint32_t exp = 127 - 4 + (r >> 8) % 7;  // 2^-4 .. 2^2, times a mantissa in [1, 2)
  return ((r >> 31) << 15) | (exp << 7) | (r & 0x7F);
}
__device__ __forceinline__ uint32_t e4m3_code(uint32_t r) {
  const uint32_t exp = 3 + (r >> 8) % 9;  // biased 3..11: 2^-4 .. 2^4, never the NaN code
  return ((r >> 31) << 7) | (exp << 3) | (r & 7);
}

// A standard normal sample from 32 random bits (Box-Muller on two 16-bit uniforms in (0, 1)).
__device__ __forceinline__ float normal_sample(uint32_t r) {
  const float u1 = (float(r & 0xFFFF) + 0.5f) * (1.0f / 65536.0f), u2 = float(r >> 16) * (1.0f / 65536.0f);
  return sqrtf(-2.0f * __logf(u1)) * __cosf(6.2831853f * u2);
}

__global__ void fill_kernel(uint8_t* dst, size_t bytes, int kind, uint64_t seed) {
  const size_t words = bytes / 8;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t w = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; w < words + 1; w += stride) {
    const uint64_t h0 = mix64(seed ^ (w * 0x9E3779B97F4A7C15ull));
    const uint64_t h1 = mix64(h0 + 0x632BE59BD9B4E019ull);
    uint64_t v = 0;
    switch (kind) {
      case kFillBF16:
        for (int i = 0; i < 4; ++i)
          v |= static_cast<uint64_t>(bf16_code(static_cast<uint32_t>((i < 2 ? h0 : h1) >> (32 * (i & 1))))) << (16 * i);
        break;
      case kFillF32:
        for (int i = 0; i < 2; ++i) {
          const uint32_t r = static_cast<uint32_t>(i ? h1 : h0);
          const uint32_t exp = 127 - 4 + (static_cast<uint32_t>(h0 >> 32) >> (8 * i)) % 7;
          v |= static_cast<uint64_t>(((r >> 31) << 31) | (exp << 23) | (r & 0x7FFFFF)) << (32 * i);
        }
        break;
      case kFillE4M3:
        for (int i = 0; i < 8; ++i) {
          const uint64_t src = i < 4 ? h0 : h1;
          const uint32_t r = static_cast<uint32_t>(mix64(src + i));
          v |= static_cast<uint64_t>(e4m3_code(r)) << (8 * i);
        }
        break;
      case kFillUE8M0:
        for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(127 - 8 + ((h0 >> (8 * i)) & 0xFF) % 17) << (8 * i);
        break;
      case kFillBF16Normal:
        for (int i = 0; i < 4; ++i) {
          const float z = normal_sample(static_cast<uint32_t>(mix64(h0 + i)));
          v |= static_cast<uint64_t>(__bfloat16_as_ushort(__float2bfloat16_rn(z))) << (16 * i);
        }
        break;
      case kFillE4M3Normal:
        for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(num::e4m3_from_float(normal_sample(static_cast<uint32_t>(mix64(h0 + i))) * (448.0f / 3.5f))) << (8 * i);
        break;
      case kFillE2M1Normal:
        for (int i = 0; i < 16; ++i) v |= static_cast<uint64_t>(num::e2m1_from_float(normal_sample(static_cast<uint32_t>(mix64(h0 + i))) * (6.0f / 2.5f))) << (4 * i);
        break;
      case kFillUE8M0Narrow:
        for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(127 - 3 + ((h0 >> (8 * i)) & 0xFF) % 7) << (8 * i);
        break;
      default:
        v = h0;
        break;
    }
    if (w < words) {
      reinterpret_cast<uint64_t*>(dst)[w] = v;
    } else {
      // The tail (bytes % 8), written by the one thread that owns word `words`.
      for (size_t b = words * 8; b < bytes; ++b) dst[b] = static_cast<uint8_t>(v >> (8 * (b - words * 8)));
    }
  }
}

// Streams `n16` 16-byte vectors with several loads in flight per thread. The XOR is stored only
// when it hits an impossible-to-predict value, so the loads cannot be optimised away and almost
// nothing is written.
__global__ void read_kernel(const uint4* __restrict__ src, size_t n16, unsigned long long* sink) {
  constexpr int kUnroll = 4;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  uint32_t acc = 0;
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  for (; i + (kUnroll - 1) * stride < n16; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = __ldcs(src + i + u * stride);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n16; i += stride) {
    const uint4 v = __ldcs(src + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9E3779B9u) *sink = acc;
}

}  // namespace

cudaError_t fill(void* dst, size_t bytes, int kind, uint64_t seed, int sms, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  const size_t words = bytes / 8 + 1;
  const size_t want = (words + 255) / 256;
  const unsigned blocks = static_cast<unsigned>(want < static_cast<size_t>(sms) * 16 ? want : static_cast<size_t>(sms) * 16);
  fill_kernel<<<blocks, 256, 0, stream>>>(static_cast<uint8_t*>(dst), bytes, kind, seed);
  return cudaGetLastError();
}

cudaError_t read(const void* src, size_t bytes, unsigned long long* sink, int sms, cudaStream_t stream) {
  read_kernel<<<sms * 8, 512, 0, stream>>>(static_cast<const uint4*>(src), bytes / 16, sink);
  return cudaGetLastError();
}

}  // namespace dsv4::bench::kernels
