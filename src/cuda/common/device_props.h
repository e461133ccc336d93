// Per-device facts the launchers size grids with, and a guard that runs a launcher on the tensors'
// device. Host-only; both are cheap enough to call on every op (the attribute query is cached) and
// neither synchronises, so they are safe inside CUDA-graph capture.
#pragma once
#include "dsv4/status.h"

namespace dsv4::cuda {

// Multiprocessor count of `device`, queried once per device and cached.
Status multiprocessor_count(int device, const char* op, int* out);

// Makes `device` current for the guard's lifetime and restores the caller's device afterwards,
// so an op on cuda:1 works whatever device the calling thread has selected.
class ScopedDevice {
 public:
  ScopedDevice() = default;
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  ~ScopedDevice();
  Status enter(int device, const char* op);

 private:
  int previous_ = -1;
};

}  // namespace dsv4::cuda
