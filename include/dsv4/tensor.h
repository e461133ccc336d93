// A non-owning view of a tensor in host or device memory. Host-only header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "dsv4/dtype.h"

namespace dsv4 {

enum class DeviceType : int32_t { kCPU = 0, kCUDA = 1 };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int32_t index = 0;
  static constexpr Device cpu() { return {DeviceType::kCPU, 0}; }
  static constexpr Device cuda(int32_t i = 0) { return {DeviceType::kCUDA, i}; }
  friend constexpr bool operator==(Device a, Device b) { return a.type == b.type && a.index == b.index; }
};

inline constexpr int kMaxDims = 6;

// Shape and strides count elements, never bytes. For E2M1 (two elements a byte) the innermost
// stride must be 1 and every other stride even, so each row starts on a byte.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::F32;
  int32_t ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};
  Device device{};

  int64_t size(int d) const { return shape[d < 0 ? d + ndim : d]; }
  int64_t stride(int d) const { return strides[d < 0 ? d + ndim : d]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  bool defined() const { return ndim > 0 || data != nullptr; }
  bool is_contiguous() const {
    int64_t expect = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expect) return false;
      expect *= shape[i];
    }
    return true;
  }
  // Bytes covered by a contiguous tensor of this shape.
  int64_t nbytes() const { return (numel() * dtype_bits(dtype) + 7) / 8; }
  template <class T>
  T* ptr() const { return static_cast<T*>(data); }
};

// A contiguous (row-major) view.
inline TensorView make_tensor(void* data, DType dtype, std::initializer_list<int64_t> shape,
                              Device device = Device::cpu()) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.ndim = static_cast<int32_t>(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t st = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.strides[d] = st;
    st *= t.shape[d];
  }
  t.device = device;
  return t;
}

// A view with explicit strides (in elements), e.g. a column-major scale matrix or padded rows.
inline TensorView make_strided_tensor(void* data, DType dtype, std::initializer_list<int64_t> shape,
                                      std::initializer_list<int64_t> strides, Device device = Device::cpu()) {
  TensorView t = make_tensor(data, dtype, shape, device);
  int i = 0;
  for (int64_t s : strides)
    if (i < t.ndim) t.strides[i++] = s;
  return t;
}

// "bf16 [3, 512] strides [512, 1] on cuda:0", for error messages.
std::string describe(const TensorView& t);

// The CUDA stream an op is enqueued on (a cudaStream_t); nullptr is the legacy default stream.
using Stream = void*;

}  // namespace dsv4
