// GPU benchmark harness: device buffers, random fills, a CUDA-event timer with L2 hygiene, and the
// machine's ceilings measured in the same process. Host-only header (no CUDA includes) so bench
// cases read like plain C++; CUDA builds implement it in harness.cpp, CPU-only builds in
// harness_nocuda.cpp, where every GPU entry throws BenchError("no CUDA ...").
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>

#include "registry.h"

namespace dsv4::bench {

// The device the harness uses (device 0), queried once.
const GpuInfo& gpu();
// Throws BenchError saying why bench/verify GPU work cannot run (no CUDA build, no device, not sm_90).
void require_gpu();
// The stream every case enqueues on (a cudaStream_t), created once.
void* stream();

// Owning device allocation; throws BenchError on failure. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* data() const { return p_; }
  template <class T>
  T* as() const { return static_cast<T*>(p_); }
  size_t size() const { return n_; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

// Synchronous copies on stream() (the harness syncs; ops never do).
void to_device(void* dst, const void* src, size_t bytes);
void to_host(void* dst, const void* src, size_t bytes);
void copy_device(void* dst, const void* src, size_t bytes);
void fill_bytes(void* dst, uint8_t value, size_t bytes);
void sync();

// Random, non-zero, finite device data from a counter-based hash (fast for GiB-sized inputs).
enum class Fill {
  kBF16,   // sign random, magnitude 2^[-4, 3) with a random mantissa: a spread of block amaxes
  kF32,    // same magnitudes as kBF16
  kE4M3,   // finite codes, magnitude 2^[-4, 4]
  kUE8M0,  // 2^[-8, 8]
  kUE8M0Narrow,  // 2^[-3, 3]: the exponent spread of MXFP4 scales of a trained weight's block
  kBytes,  // any byte (valid for packed e2m1)
  // Values like a model's (`dsv4 bench gemm --data normal`): N(0, 1) samples quantized as the
  // per-block scaled formats store them, the block's largest magnitude near the format's top.
  kBF16Normal,  // bf16 of N(0, 1)
  kE4M3Normal,  // e4m3 of N(0, 1) x 448 / 3.5 (a 128-element block's amax ~3.5 sigma at 448), saturated
  kE2M1Normal,  // packed e2m1 of N(0, 1) x 6 / 2.5 (a 32-element block's amax ~2.5 sigma at 6), saturated
};
void fill_random(void* dst, size_t bytes, Fill kind, uint64_t seed);

enum class L2Policy {
  kRotate,  // the case cycles through rotation_copies() input copies (default, memory-bound ops)
  kFlush,   // the timer writes a 2x-L2 buffer before every timed run
  kHot,     // one input copy, no flush: the inputs stay L2-resident (a diagnostic upper bound that
            // separates a kernel's own pace from DRAM's; results are labelled "L2-hot")
};
struct TimerOptions {
  int warmup = 5;
  int iters = 30;
  L2Policy l2 = L2Policy::kRotate;
  // 0: every timed call is its own launch between two events (includes the launch latency and the
  // kernel's ramp-up). N > 0: N consecutive calls are captured into one CUDA graph and each timed
  // replay counts as N calls (back to back, as an engine's decode graph runs them; the calls still
  // rotate their input copies). Kernels launched as programmatic dependents overlap there.
  int chain = 0;
};
// --warmup N --iters N --l2 rotate|flush|hot --graph N
TimerOptions timer_options(const Options& o);

struct Timing {
  double median_us = 0, min_us = 0, max_us = 0, p10_us = 0, p90_us = 0;
  int runs = 0;
};
// Calls enqueue(i) for i = 0 .. warmup+iters-1 (on stream()), timing each of the last `iters`
// calls separately with CUDA events; the case uses i to pick its input copy when rotating. With
// t.chain = N, enqueue(0 .. N-1) is captured once into a graph instead (enqueue must then be
// capturable: no synchronisation), and `iters` replays are timed, each divided by N.
Timing time_gpu(const std::function<void(int)>& enqueue, const TimerOptions& t);
// Copies of a `bytes`-sized working set that together exceed 3x L2, so a rotated input is never
// L2-resident when its run starts; at least 1. 1 with `--l2 hot`.
int rotation_copies(size_t bytes, const TimerOptions& t);

// The same-process ceilings: measured on the first call (about a second), then cached.
const Ceilings& ceilings();
// A cudaMemcpyAsync D2D moving `traffic_bytes` in total (traffic/2 read, traffic/2 written).
Timing time_memcpy(double traffic_bytes, const TimerOptions& t);

// Copies the timing into r and, when the case named none, adds the "memcpy" baseline for r.bytes.
void record(Result& r, const Timing& t, const TimerOptions& opts, bool memcpy_baseline = true);

}  // namespace dsv4::bench
