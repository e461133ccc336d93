// CUDA implementation of harness.h.
#include "harness.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "cublaslt_check.h"
#include "dsv4/dsv4.h"
#include "harness_kernels.h"

namespace dsv4::bench {
namespace {

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw BenchError(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}
#define BENCH_CUDA(call) cuda_check((call), #call)


cudaStream_t cstream() { return static_cast<cudaStream_t>(stream()); }

GpuInfo query_gpu() {
  GpuInfo g;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    cudaGetLastError();
    g.reason = e != cudaSuccess ? std::string("no CUDA device: ") + cudaGetErrorString(e) : "no CUDA device found";
    return g;
  }
  g.present = true;
  cudaGetDevice(&g.index);
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, g.index) != cudaSuccess) {
    g.present = false;
    g.reason = "cudaGetDeviceProperties failed";
    return g;
  }
  g.name = p.name;
  g.cc_major = p.major;
  g.cc_minor = p.minor;
  g.sms = p.multiProcessorCount;
  g.mem_bytes = static_cast<int64_t>(p.totalGlobalMem);
  g.l2_bytes = p.l2CacheSize;
  g.mem_bus_bits = p.memoryBusWidth;
  int khz = 0;
  if (cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, g.index) == cudaSuccess) g.clock_mhz = khz / 1000;
  if (cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, g.index) == cudaSuccess) g.mem_clock_mhz = khz / 1000;
  cudaGetLastError();  // the clock attributes are optional
  cudaDriverGetVersion(&g.driver_version);
  cudaRuntimeGetVersion(&g.runtime_version);
  g.supported = dsv4_cuda_available() != 0;
  if (!g.supported) g.reason = "dsv4 kernels need an sm_90 (Hopper) GPU; this is sm_" + std::to_string(p.major * 10 + p.minor);
  return g;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * (v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

// One GEMM ceiling: D[M,N] bf16 = A[M,K] * B[N,K]^T (the "TN" layout FP8 cuBLASLt requires), with
// per-tensor scales of 1 for e4m3. Random non-zero inputs: zeros would understate power draw.
double gemm_tflops(bool fp8) {
  constexpr int64_t n = 8192;
  const size_t eb = fp8 ? 1 : 2;
  DeviceBuffer a(n * n * eb), b(n * n * eb), d(n * n * 2);
  fill_random(a.data(), a.size(), fp8 ? Fill::kE4M3 : Fill::kBF16, 11);
  fill_random(b.data(), b.size(), fp8 ? Fill::kE4M3 : Fill::kBF16, 12);
  LtGemm lt(fp8, n, n, n, LtScales::kTensor, size_t(64) << 20);
  lt.select(a.data(), b.data(), d.data());
  TimerOptions t;
  t.warmup = 5;
  t.iters = 20;
  const Timing tm = time_gpu([&](int) { lt.run(a.data(), b.data(), d.data()); }, t);
  return 2.0 * n * n * n / (tm.median_us * 1e-6) * 1e-12;
}

}  // namespace

const GpuInfo& gpu() {
  static const GpuInfo g = query_gpu();
  return g;
}

void require_gpu() {
  const GpuInfo& g = gpu();
  if (!g.present || !g.supported) throw BenchError("no GPU: " + g.reason);
}

void* stream() {
  static cudaStream_t s = [] {
    cudaStream_t st = nullptr;
    BENCH_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    return st;
  }();
  return s;
}

DeviceBuffer::DeviceBuffer(size_t bytes) : n_(bytes) {
  if (bytes == 0) return;
  const cudaError_t e = cudaMalloc(&p_, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    p_ = nullptr;
    throw BenchError("cudaMalloc of " + std::to_string(bytes) + " bytes failed: " + cudaGetErrorString(e));
  }
}
DeviceBuffer::~DeviceBuffer() {
  if (p_) cudaFree(p_);
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) cudaFree(p_);
    p_ = o.p_;
    n_ = o.n_;
    o.p_ = nullptr;
    o.n_ = 0;
  }
  return *this;
}

void to_device(void* dst, const void* src, size_t bytes) {
  BENCH_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cstream()));
  sync();
}
void to_host(void* dst, const void* src, size_t bytes) {
  BENCH_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cstream()));
  sync();
}
void copy_device(void* dst, const void* src, size_t bytes) {
  BENCH_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cstream()));
}
void fill_bytes(void* dst, uint8_t value, size_t bytes) { BENCH_CUDA(cudaMemsetAsync(dst, value, bytes, cstream())); }
void sync() { BENCH_CUDA(cudaStreamSynchronize(cstream())); }

void fill_random(void* dst, size_t bytes, Fill kind, uint64_t seed) {
  int k = kernels::kFillBytes;
  switch (kind) {
    case Fill::kBF16: k = kernels::kFillBF16; break;
    case Fill::kF32: k = kernels::kFillF32; break;
    case Fill::kE4M3: k = kernels::kFillE4M3; break;
    case Fill::kUE8M0: k = kernels::kFillUE8M0; break;
    case Fill::kUE8M0Narrow: k = kernels::kFillUE8M0Narrow; break;
    case Fill::kBytes: k = kernels::kFillBytes; break;
    case Fill::kBF16Normal: k = kernels::kFillBF16Normal; break;
    case Fill::kE4M3Normal: k = kernels::kFillE4M3Normal; break;
    case Fill::kE2M1Normal: k = kernels::kFillE2M1Normal; break;
  }
  BENCH_CUDA(kernels::fill(dst, bytes, k, seed, std::max(gpu().sms, 1), cstream()));
}

TimerOptions timer_options(const Options& o) {
  TimerOptions t;
  t.warmup = static_cast<int>(o.get_int("warmup", t.warmup));
  t.iters = static_cast<int>(o.get_int("iters", t.iters));
  const std::string l2 = o.get("l2", "rotate");
  if (l2 == "rotate") t.l2 = L2Policy::kRotate;
  else if (l2 == "flush") t.l2 = L2Policy::kFlush;
  else if (l2 == "hot") t.l2 = L2Policy::kHot;
  else throw BenchError("--l2 must be 'rotate', 'flush' or 'hot', got '" + l2 + "'");
  t.chain = static_cast<int>(o.get_int("graph", 0));
  if (t.iters < 1 || t.warmup < 0) throw BenchError("--iters must be >= 1 and --warmup >= 0");
  if (t.chain < 0 || t.chain > 1000) throw BenchError("--graph must be 0..1000 calls, got " + std::to_string(t.chain));
  return t;
}

int rotation_copies(size_t bytes, const TimerOptions& t) {
  if (t.l2 == L2Policy::kHot) return 1;
  const double l2 = static_cast<double>(std::max<int64_t>(gpu().l2_bytes, 1 << 20));
  if (bytes == 0) return 1;
  return static_cast<int>(std::clamp(std::ceil(3.0 * l2 / static_cast<double>(bytes)), 1.0, 64.0));
}

Timing time_gpu(const std::function<void(int)>& enqueue, const TimerOptions& t) {
  static DeviceBuffer flush_buf;  // 2x L2, allocated on the first flushing run
  if (t.l2 == L2Policy::kFlush && flush_buf.size() == 0)
    flush_buf = DeviceBuffer(static_cast<size_t>(std::max<int64_t>(gpu().l2_bytes, 1 << 20)) * 2);
  struct Events {
    std::vector<cudaEvent_t> ev;
    ~Events() {
      for (cudaEvent_t e : ev) cudaEventDestroy(e);
    }
  } events;
  events.ev.resize(2 * t.iters, nullptr);
  for (auto& e : events.ev) BENCH_CUDA(cudaEventCreate(&e));
  struct Graph {
    cudaGraph_t g = nullptr;
    cudaGraphExec_t exec = nullptr;
    ~Graph() {
      if (exec) cudaGraphExecDestroy(exec);
      if (g) cudaGraphDestroy(g);
    }
  } graph;
  if (t.chain > 0) {
    for (int i = 0; i < t.warmup; ++i) enqueue(i);  // module load, handles: outside the capture
    BENCH_CUDA(cudaStreamBeginCapture(cstream(), cudaStreamCaptureModeThreadLocal));
    try {
      for (int i = 0; i < t.chain; ++i) enqueue(i);
    } catch (...) {
      cudaStreamEndCapture(cstream(), &graph.g);
      throw;
    }
    BENCH_CUDA(cudaStreamEndCapture(cstream(), &graph.g));
    BENCH_CUDA(cudaGraphInstantiate(&graph.exec, graph.g, 0));
    for (int i = 0; i < std::max(t.warmup, 1); ++i) BENCH_CUDA(cudaGraphLaunch(graph.exec, cstream()));
  } else {
    for (int i = 0; i < t.warmup; ++i) enqueue(i);
  }
  for (int i = 0; i < t.iters; ++i) {
    if (t.l2 == L2Policy::kFlush) BENCH_CUDA(cudaMemsetAsync(flush_buf.data(), i & 0xFF, flush_buf.size(), cstream()));
    BENCH_CUDA(cudaEventRecord(events.ev[2 * i], cstream()));
    if (t.chain > 0) BENCH_CUDA(cudaGraphLaunch(graph.exec, cstream()));
    else enqueue(t.warmup + i);
    BENCH_CUDA(cudaEventRecord(events.ev[2 * i + 1], cstream()));
  }
  sync();
  std::vector<double> us(t.iters);
  for (int i = 0; i < t.iters; ++i) {
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, events.ev[2 * i], events.ev[2 * i + 1]));
    us[i] = ms * 1000.0 / std::max(t.chain, 1);
  }
  Timing r;
  r.runs = t.iters;
  r.median_us = percentile(us, 0.5);
  r.p10_us = percentile(us, 0.1);
  r.p90_us = percentile(us, 0.9);
  r.min_us = *std::min_element(us.begin(), us.end());
  r.max_us = *std::max_element(us.begin(), us.end());
  return r;
}

Timing time_memcpy(double traffic_bytes, const TimerOptions& t) {
  const size_t half = static_cast<size_t>(traffic_bytes / 2) / 256 * 256;
  const int copies = rotation_copies(half, t);
  DeviceBuffer src(half * copies), dst(half);
  fill_random(src.data(), src.size(), Fill::kBytes, 99);
  return time_gpu(
      [&](int i) {
        BENCH_CUDA(cudaMemcpyAsync(dst.data(), src.as<uint8_t>() + (i % copies) * half, half, cudaMemcpyDeviceToDevice,
                                   cstream()));
      },
      t);
}

const Ceilings& ceilings() {
  static const Ceilings c = [] {
    require_gpu();
    Ceilings r;
    constexpr size_t kGiB = size_t(1) << 30;
    TimerOptions t;
    t.warmup = 3;
    t.iters = 10;
    {
      DeviceBuffer src(kGiB), dst(kGiB);
      DeviceBuffer sink(sizeof(unsigned long long));
      fill_random(src.data(), kGiB, Fill::kBytes, 7);
      const Timing copy = time_gpu(
          [&](int) { BENCH_CUDA(cudaMemcpyAsync(dst.data(), src.data(), kGiB, cudaMemcpyDeviceToDevice, cstream())); }, t);
      r.copy_gbps = 2.0 * kGiB / (copy.median_us * 1e-6) * 1e-9;
      const Timing rd = time_gpu(
          [&](int) {
            BENCH_CUDA(kernels::read(src.data(), kGiB, sink.as<unsigned long long>(), gpu().sms, cstream()));
          },
          t);
      r.read_gbps = 1.0 * kGiB / (rd.median_us * 1e-6) * 1e-9;
    }
    r.bf16_tflops = gemm_tflops(false);
    r.fp8_tflops = gemm_tflops(true);
    r.measured = true;
    return r;
  }();
  return c;
}

void record(Result& r, const Timing& t, const TimerOptions& opts, bool memcpy_baseline) {
  r.median_us = t.median_us;
  r.min_us = t.min_us;
  r.max_us = t.max_us;
  r.p10_us = t.p10_us;
  r.p90_us = t.p90_us;
  r.runs = t.runs;
  r.chain = opts.chain;
  if (opts.l2 == L2Policy::kHot) r.note += std::string(r.note.empty() ? "" : "; ") + "L2-hot (inputs L2-resident)";
  if (memcpy_baseline && r.baseline.empty() && r.bytes > 0) {
    r.baseline = "memcpy";
    r.baseline_us = time_memcpy(r.bytes, opts).median_us;
  }
  finalize(r, ceilings());
}

}  // namespace dsv4::bench
