// harness.h for builds without CUDA: the CLI still links, and every GPU entry says why it cannot run.
#include "harness.h"

namespace dsv4::bench {
namespace {
[[noreturn]] void no_cuda() { throw BenchError("no CUDA: this dsv4 build has no CUDA backend (built without nvcc)"); }
}  // namespace

const GpuInfo& gpu() {
  static const GpuInfo g = [] {
    GpuInfo i;
    i.reason = "this dsv4 build has no CUDA backend (built without nvcc)";
    return i;
  }();
  return g;
}
void require_gpu() { no_cuda(); }
void* stream() { return nullptr; }
DeviceBuffer::DeviceBuffer(size_t) { no_cuda(); }
DeviceBuffer::~DeviceBuffer() = default;
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  p_ = o.p_;
  n_ = o.n_;
  return *this;
}
void to_device(void*, const void*, size_t) { no_cuda(); }
void to_host(void*, const void*, size_t) { no_cuda(); }
void copy_device(void*, const void*, size_t) { no_cuda(); }
void fill_bytes(void*, uint8_t, size_t) { no_cuda(); }
void sync() {}
void fill_random(void*, size_t, Fill, uint64_t) { no_cuda(); }
TimerOptions timer_options(const Options& o) {
  TimerOptions t;
  t.warmup = static_cast<int>(o.get_int("warmup", t.warmup));
  t.iters = static_cast<int>(o.get_int("iters", t.iters));
  o.get("l2", "rotate");
  t.chain = static_cast<int>(o.get_int("graph", 0));
  return t;
}
Timing time_gpu(const std::function<void(int)>&, const TimerOptions&) { no_cuda(); }
int rotation_copies(size_t, const TimerOptions&) { return 1; }
const Ceilings& ceilings() { no_cuda(); }
Timing time_memcpy(double, const TimerOptions&) { no_cuda(); }
void record(Result&, const Timing&, const TimerOptions&, bool) { no_cuda(); }
}  // namespace dsv4::bench
