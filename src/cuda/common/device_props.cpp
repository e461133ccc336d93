#include "cuda/common/device_props.h"

#include <atomic>

#include "cuda/common/check.h"

namespace dsv4::cuda {
namespace {
constexpr int kMaxCachedDevices = 64;
std::atomic<int> g_sm_count[kMaxCachedDevices];  // 0 = not yet queried
}  // namespace

Status multiprocessor_count(int device, const char* op, int* out) {
  if (device >= 0 && device < kMaxCachedDevices) {
    const int cached = g_sm_count[device].load(std::memory_order_relaxed);
    if (cached > 0) {
      *out = cached;
      return Status::Ok();
    }
  }
  int n = 0;
  DSV4_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), op);
  if (n < 1) n = 1;
  if (device >= 0 && device < kMaxCachedDevices) g_sm_count[device].store(n, std::memory_order_relaxed);
  *out = n;
  return Status::Ok();
}

Status ScopedDevice::enter(int device, const char* op) {
  int current = 0;
  DSV4_CUDA_RETURN_IF_ERROR(cudaGetDevice(&current), op);
  if (current == device) return Status::Ok();
  DSV4_CUDA_RETURN_IF_ERROR(cudaSetDevice(device), op);
  previous_ = current;
  return Status::Ok();
}

ScopedDevice::~ScopedDevice() {
  if (previous_ >= 0) (void)cudaSetDevice(previous_);
}

}  // namespace dsv4::cuda
