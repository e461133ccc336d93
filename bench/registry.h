// The CUDA-free half of the benchmark harness: command-line options, the Result record and its
// table/JSON forms, and the registry each bench/<op>.cpp adds its cases to. Built with or without
// CUDA so the `dsv4` CLI always links.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "dsv4/status.h"

namespace dsv4::bench {

// Thrown inside the harness and bench cases (never inside the library) on a failed CUDA call, a
// failed op or bad options; the CLI turns it into a message and a non-zero exit.
class BenchError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws BenchError with `context` when an op returns an error.
void check_ok(const Status& s, const std::string& context);

// "--key value" / "--flag" pairs after the op name. Unknown keys are reported by the CLI: every
// case declares the keys it reads through get_* so a typo does not silently use the default.
class Options {
 public:
  static Options parse(const std::vector<std::string>& args);  // throws BenchError
  bool has(const std::string& key) const;
  std::string get(const std::string& key, const std::string& def) const;
  int64_t get_int(const std::string& key, int64_t def) const;  // throws BenchError on a non-number
  // A comma-separated list of integers ("64,128,129"); `def` when the key is absent.
  std::vector<int64_t> get_int_list(const std::string& key, const std::vector<int64_t>& def) const;
  void set(const std::string& key, const std::string& value) { kv_[key] = value; }
  // Keys present on the command line that no get_*/has call asked about.
  std::vector<std::string> unused() const;

 private:
  std::map<std::string, std::string> kv_;
  mutable std::map<std::string, bool> read_;
};

// Which measured compute ceiling a case is compared against (memory-bound ops: none).
enum class Peak { kNone, kBF16, kFP8 };

struct Ceilings {
  bool measured = false;
  double copy_gbps = 0;    // cudaMemcpyAsync D2D, (read + written bytes) / time
  double read_gbps = 0;    // a streaming reduction kernel, bytes read / time
  double bf16_tflops = 0;  // cuBLASLt bf16 GEMM 8192^3, bf16 out
  double fp8_tflops = 0;   // cuBLASLt e4m3 GEMM 8192^3, per-tensor scales, bf16 out
};

// What `dsv4 info` prints and the JSON records carry. Filled by the harness (harness.h).
struct GpuInfo {
  bool present = false;  // a CUDA device could be opened
  bool supported = false;  // and dsv4's kernels can run on it (sm_90)
  std::string reason;    // why not, when !present or !supported
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sms = 0;
  int64_t mem_bytes = 0;
  int64_t l2_bytes = 0;
  int clock_mhz = 0, mem_clock_mhz = 0, mem_bus_bits = 0;  // 0 where the runtime does not say
  int driver_version = 0, runtime_version = 0;
};
std::string gpu_json(const GpuInfo& g);

struct Result {
  std::string op;         // "quant"
  std::string case_name;  // "quantize MXFP4"
  std::string shape;      // "16384x8192 bf16"
  double median_us = 0, min_us = 0, max_us = 0, p10_us = 0, p90_us = 0;
  int runs = 0;
  double flops = 0;  // 0 for pure data movement
  double bytes = 0;  // the minimum bytes read + written
  Peak peak = Peak::kNone;
  std::string baseline;  // "memcpy": the named comparison run in the same process
  double baseline_us = 0;
  std::string note;
  int chain = 0;  // TimerOptions::chain the times were taken with (0: isolated launches)
  // Derived by finalize():
  double tflops = 0, gbps = 0, pct_copy_bw = 0, pct_read_bw = 0, pct_peak = 0;
  double ratio = 0;  // median_us / baseline_us: 1.0 = as fast as the baseline, lower is better
};

void finalize(Result& r, const Ceilings& c);
std::string format_table(const std::vector<Result>& results);
// {"op":..., "results":[...]} with the ceilings and the device line the CLI passes.
std::string to_json(const std::vector<Result>& results, const Ceilings& c, const std::string& device_json);
std::string json_escape(const std::string& s);

struct VerifyReport {
  std::string op, case_name, shape;
  bool pass = false;
  bool gpu_ran = false;    // false: only the CPU reference was exercised (no GPU / no CUDA)
  double max_abs_err = 0;  // over the compared wide (bf16/f32) outputs
  int64_t mismatches = 0;  // bytes or elements that differ where bit-exactness is required
  std::string detail;
};

// A bench case appends its rows; a verify case appends its reports. Both may throw BenchError.
using BenchFn = std::function<void(const Options&, std::vector<Result>&)>;
using VerifyFn = std::function<void(const Options&, std::vector<VerifyReport>&)>;

// An op may register several functions; `dsv4 bench <op>` runs them in registration order.
bool register_bench(const char* op, BenchFn fn);
bool register_verify(const char* op, VerifyFn fn);
const std::map<std::string, std::vector<BenchFn>>& bench_registry();
const std::map<std::string, std::vector<VerifyFn>>& verify_registry();

}  // namespace dsv4::bench

#define DSV4_BENCH_CAT2(a, b) a##b
#define DSV4_BENCH_CAT(a, b) DSV4_BENCH_CAT2(a, b)
// Registration runs from a static initializer, so bench/<op>.cpp files must be linked as object
// files (bench/CMakeLists.txt builds them as an OBJECT library), never from a static archive
// whose members the linker would drop.
#define DSV4_BENCH_CASE(op, fn) \
  static const bool DSV4_BENCH_CAT(dsv4_bench_reg_, __LINE__) = ::dsv4::bench::register_bench(op, fn)
#define DSV4_VERIFY_CASE(op, fn) \
  static const bool DSV4_BENCH_CAT(dsv4_verify_reg_, __LINE__) = ::dsv4::bench::register_verify(op, fn)
