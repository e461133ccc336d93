// Helpers for the GPU quantization / KV-cache tests: device buffers, 2-D views, and comparisons
// that name the first mismatching element. Plain C++ against the CUDA runtime.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend/backends.h"
#include "common/test_util.h"
#include "dsv4/numerics.h"
#include "dsv4/tensor.h"

namespace dsv4::test {

#define DSV4_SKIP_WITHOUT_GPU()                                                                   \
  do {                                                                                            \
    if (!::dsv4::cuda::available()) GTEST_SKIP() << "no sm_90 CUDA device (or a CPU-only build)"; \
  } while (0)

#define DSV4_CUDA_OK(call)                                                                  \
  do {                                                                                      \
    const cudaError_t _e = (call);                                                          \
    ASSERT_EQ(_e, cudaSuccess) << #call << ": " << cudaGetErrorName(_e) << " " << cudaGetErrorString(_e); \
  } while (0)

#define DSV4_ASSERT_OK(expr)                                     \
  do {                                                           \
    const ::dsv4::Status _s = (expr);                            \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s.message();       \
  } while (0)

// A device allocation (at least 256 bytes, so empty tensors still get a valid pointer).
class DevBuf {
 public:
  explicit DevBuf(size_t bytes) : n_(bytes) {
    const cudaError_t e = cudaMalloc(&p_, bytes < 256 ? 256 : bytes);
    if (e != cudaSuccess) {
      ADD_FAILURE() << "cudaMalloc(" << bytes << "): " << cudaGetErrorString(e);
      p_ = nullptr;
    }
  }
  ~DevBuf() {
    if (p_) cudaFree(p_);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  uint8_t* get() const { return static_cast<uint8_t*>(p_); }
  size_t size() const { return n_; }
  void upload(const std::vector<uint8_t>& h) const {
    EXPECT_EQ(cudaMemcpy(p_, h.data(), h.size(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<uint8_t> download() const {
    std::vector<uint8_t> h(n_);
    EXPECT_EQ(cudaMemcpy(h.data(), p_, n_, cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
  void fill(uint8_t b) const { EXPECT_EQ(cudaMemset(p_, b, n_), cudaSuccess); }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

inline TensorView view2d(void* data, DType dt, int64_t rows, int64_t cols, int64_t s0, int64_t s1, Device dev) {
  return make_strided_tensor(data, dt, {rows, cols}, {s0, s1}, dev);
}
inline TensorView view1d(void* data, DType dt, int64_t n, Device dev) { return make_tensor(data, dt, {n}, dev); }
// The same view on another device / at another address.
inline TensorView moved(TensorView t, void* data, Device dev) {
  t.data = data;
  t.device = dev;
  return t;
}

// How two buffers are compared: raw bytes, or as f32 / bf16 words where any NaN equals any NaN
// (NaN payloads are not part of the contract: the hardware and the host propagate them differently)
// and every other value must match bit for bit (so -0 != +0).
enum class Cmp { kBytes, kF32, kBf16 };

inline std::string hex(uint64_t v, int digits) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%0*llx", digits, static_cast<unsigned long long>(v));
  return buf;
}

// `row_elems` (> 0) turns the flat index of the first mismatch into (row, col) in the message.
inline ::testing::AssertionResult same_buffer(const std::vector<uint8_t>& gpu, const std::vector<uint8_t>& cpu,
                                              Cmp mode, const std::string& what, int64_t row_elems = 0) {
  if (gpu.size() != cpu.size())
    return ::testing::AssertionFailure() << what << ": sizes differ " << gpu.size() << " vs " << cpu.size();
  const size_t w = mode == Cmp::kBytes ? 1 : mode == Cmp::kBf16 ? 2 : 4;
  int64_t mismatches = 0, first = -1;
  uint64_t first_g = 0, first_c = 0;
  for (size_t i = 0; i + w <= gpu.size(); i += w) {
    uint64_t a = 0, b = 0;
    std::memcpy(&a, gpu.data() + i, w);
    std::memcpy(&b, cpu.data() + i, w);
    if (a == b) continue;
    if (mode == Cmp::kF32 && num::is_nan(num::f32_from_bits(static_cast<uint32_t>(a))) &&
        num::is_nan(num::f32_from_bits(static_cast<uint32_t>(b))))
      continue;
    if (mode == Cmp::kBf16 && (a & 0x7FFF) > 0x7F80 && (b & 0x7FFF) > 0x7F80) continue;
    if (first < 0) {
      first = static_cast<int64_t>(i / w);
      first_g = a;
      first_c = b;
    }
    ++mismatches;
  }
  if (first < 0) return ::testing::AssertionSuccess();
  auto f = ::testing::AssertionFailure();
  f << what << ": " << mismatches << " mismatching elements; first at element " << first;
  if (row_elems > 0) f << " (row " << first / row_elems << ", col " << first % row_elems << ")";
  f << ": gpu " << hex(first_g, static_cast<int>(2 * w)) << " vs cpu " << hex(first_c, static_cast<int>(2 * w));
  if (mode == Cmp::kF32)
    f << " (" << num::f32_from_bits(static_cast<uint32_t>(first_g)) << " vs "
      << num::f32_from_bits(static_cast<uint32_t>(first_c)) << ")";
  if (mode == Cmp::kBf16)
    f << " (" << num::bf16_to_float(static_cast<uint16_t>(first_g)) << " vs "
      << num::bf16_to_float(static_cast<uint16_t>(first_c)) << ")";
  return f;
}

inline void store_f32(std::vector<uint8_t>& buf, size_t index, float v) { std::memcpy(buf.data() + 4 * index, &v, 4); }
inline void store_u16(std::vector<uint8_t>& buf, size_t index, uint16_t v) { std::memcpy(buf.data() + 2 * index, &v, 2); }

}  // namespace dsv4::test
