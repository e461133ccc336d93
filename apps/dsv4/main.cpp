// dsv4: the project's command-line tool. `dsv4 --help` for usage.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "dsv4/dsv4.h"
#include "harness.h"
#include "registry.h"

namespace {

using namespace dsv4::bench;

// A malformed command line: exit code 2 rather than 1.
class UsageError : public BenchError {
 public:
  using BenchError::BenchError;
};

constexpr const char* kUsage = R"(dsv4 - DeepSeek-V4 kernels for Hopper (sm_90a)

usage:
  dsv4 info [--json FILE] [--no-ceilings]
      The GPU (name, SMs, memory, L2, clocks) and the ceilings measured now: device copy and read
      bandwidth, cuBLASLt bf16 and fp8 GEMM at 8192^3. Without a GPU it says so and exits 0.
  dsv4 bench <op|all> [options] [--json FILE]
      Time an op's cases; print a table, and JSON to FILE ('-' = stdout instead of the table).
      Without a GPU (or a CUDA build) it says so and exits 0.
  dsv4 verify <op|all> [options] [--json FILE]
      GPU against the CPU reference on random data (seed printed; --seed N replays). Without a GPU
      the CPU reference is checked alone on a small case and the GPU part is reported skipped.
      Exit code 1 if any case FAILs.
  dsv4 list          the ops with bench / verify cases
  dsv4 --version | --help

options (bench and verify):
  --iters N (30) --warmup N (5)       timed runs (median reported) and untimed warm-up runs
  --l2 rotate|flush|hot (rotate)      rotate among input copies that exceed L2, flush L2 each run,
                                      or keep one L2-resident copy (hot: a diagnostic bound)
  --graph N (0)                       time N back-to-back calls captured in a CUDA graph (per call)
                                      instead of isolated launches; shown as "graph xN" in the table
  --seed N                            data seed
  quant:    --m M --k K (bench 16384x8192, verify 4096x7168) --formats mxfp4,nvfp4,mxfp8,fp8_1x128,fp8_128x128
            --wide bf16,f32 (both) --scales ue8m0,f32 (both; FP8 1x128/128x128 only)
  kv_cache: --tokens T (bench 262144, verify 16384) --page-size P (64)
  gemm:     --m M --n N --k K (bench: the issue's shapes; --m may list rows, e.g. 64,128,129,256)
            --formats fp8block,w4a8-mxfp4,w4a16-mxfp4,w4a16-nvfp4
            --no-workspace (no split-K, FP4 weights expanded in the kernel) --no-baseline (skip cuBLASLt)
            --b-scales narrow|wide (MXFP4 weight exponents in 2^[-3,3], default, or 2^[-8,8])
            --a-scales row|col (activation scales row-major, default, or column-major as DeepGEMM
                                takes them)
            --data uniform|normal (operand codes spread evenly, default, or N(0,1) values quantized
                                   per block like a model's; cuBLASLt baselines alike)

exit codes: 0 ok (or GPU work skipped for lack of a GPU), 1 a failure, 2 a usage error
)";

bool write_file(const std::string& path, const std::string& text) {
  if (path == "-") {
    std::cout << text;
    return true;
  }
  std::ofstream f(path);
  f << text;
  if (!f) {
    std::fprintf(stderr, "dsv4: cannot write %s\n", path.c_str());
    return false;
  }
  return true;
}

// Splits the arguments after the command into a positional op name and options; pulls --json.
struct Cmd {
  std::string op;
  std::string json;
  Options opts;
};
Cmd parse_cmd(const std::vector<std::string>& args, bool needs_op) {
  Cmd c;
  std::vector<std::string> rest;
  size_t i = 0;
  if (needs_op) {
    if (args.empty() || args[0].rfind("--", 0) == 0) throw UsageError("missing <op> (see `dsv4 list`)");
    c.op = args[0];
    i = 1;
  }
  for (; i < args.size(); ++i) {
    if (args[i] == "--json") {
      if (i + 1 >= args.size()) throw UsageError("--json needs a FILE ('-' for stdout)");
      c.json = args[++i];
    } else {
      rest.push_back(args[i]);
    }
  }
  try {
    c.opts = Options::parse(rest);
  } catch (const BenchError& e) {
    throw UsageError(e.what());
  }
  return c;
}

void warn_unused(const Options& o) {
  for (const std::string& k : o.unused()) std::fprintf(stderr, "dsv4: warning: option --%s was not used\n", k.c_str());
}

template <class Map>
std::vector<std::string> select_ops(const Map& reg, const std::string& op, const char* what) {
  std::vector<std::string> ops;
  if (op == "all") {
    for (const auto& [name, fns] : reg) ops.push_back(name);
  } else if (reg.count(op)) {
    ops.push_back(op);
  } else {
    std::string known;
    for (const auto& [name, fns] : reg) known += " " + name;
    throw UsageError(std::string("no ") + what + " cases for op '" + op + "'; known:" + known);
  }
  return ops;
}

// Human-readable lines go to `f`: stderr when stdout carries JSON.
void print_gpu(FILE* f, const GpuInfo& g) {
  std::fprintf(f, "dsv4 %s, C ABI %s\n", dsv4_version(), DSV4_VERSION_STRING);
  if (!g.present) {
    std::fprintf(f, "GPU: none (%s)\n", g.reason.c_str());
    return;
  }
  std::fprintf(f, "GPU %d: %s (sm_%d%d), %d SMs\n", g.index, g.name.c_str(), g.cc_major, g.cc_minor, g.sms);
  std::fprintf(f, "  memory %.1f GiB, %d-bit bus%s", g.mem_bytes / 1073741824.0, g.mem_bus_bits,
              g.mem_clock_mhz ? "" : "\n");
  if (g.mem_clock_mhz) std::fprintf(f, ", memory clock %d MHz\n", g.mem_clock_mhz);
  std::fprintf(f, "  L2 %.1f MiB%s", g.l2_bytes / 1048576.0, g.clock_mhz ? "" : "\n");
  if (g.clock_mhz) std::fprintf(f, ", SM clock %d MHz (peak)\n", g.clock_mhz);
  std::fprintf(f, "  driver %d, runtime %d\n", g.driver_version, g.runtime_version);
  if (!g.supported) std::fprintf(f, "  dsv4 kernels: unavailable (%s)\n", g.reason.c_str());
}

int cmd_info(const std::vector<std::string>& args) {
  const Cmd c = parse_cmd(args, false);
  const bool want_ceilings = !c.opts.has("no-ceilings");
  warn_unused(c.opts);
  const GpuInfo& g = gpu();
  FILE* f = c.json == "-" ? stderr : stdout;
  print_gpu(f, g);
  Ceilings ce;
  if (g.present && g.supported && want_ceilings) {
    std::fprintf(f, "measuring ceilings (1 GiB copy/read, 8192^3 GEMMs)...\n");
    std::fflush(f);
    ce = ceilings();
    std::fprintf(f, "  device copy bandwidth   %8.0f GB/s (cudaMemcpyAsync D2D, read + written)\n", ce.copy_gbps);
    std::fprintf(f, "  device read bandwidth   %8.0f GB/s (streaming reduction kernel)\n", ce.read_gbps);
    std::fprintf(f, "  bf16 GEMM 8192^3        %8.1f TFLOP/s (cuBLASLt, bf16 out)\n", ce.bf16_tflops);
    std::fprintf(f, "  fp8 e4m3 GEMM 8192^3    %8.1f TFLOP/s (cuBLASLt, per-tensor scales, bf16 out)\n", ce.fp8_tflops);
  } else if (!g.present) {
    std::fprintf(f, "no GPU: ceilings not measured\n");
  }
  if (!c.json.empty() && !write_file(c.json, to_json({}, ce, gpu_json(g)))) return 1;
  return 0;
}

int cmd_bench(const std::vector<std::string>& args) {
  const Cmd c = parse_cmd(args, true);
  const auto ops = select_ops(bench_registry(), c.op, "bench");
  const GpuInfo& g = gpu();
  if (!g.present || !g.supported) {
    // Not an error: a CPU-only machine has nothing to time.
    std::fprintf(c.json == "-" ? stderr : stdout, "dsv4 bench %s: skipped, no GPU: %s\n", c.op.c_str(),
                 g.reason.c_str());
    if (!c.json.empty() && !write_file(c.json, to_json({}, Ceilings{}, gpu_json(g)))) return 1;
    return 0;
  }
  FILE* f = c.json == "-" ? stderr : stdout;
  print_gpu(f, g);
  std::fprintf(f, "measuring ceilings...\n");
  std::fflush(f);
  const Ceilings& ce = ceilings();
  std::fprintf(f, "ceilings: copy %.0f GB/s, read %.0f GB/s, bf16 %.1f TFLOP/s, fp8 %.1f TFLOP/s\n\n", ce.copy_gbps,
              ce.read_gbps, ce.bf16_tflops, ce.fp8_tflops);
  std::vector<Result> results;
  int rc = 0;
  for (const std::string& op : ops) {
    for (const BenchFn& fn : bench_registry().at(op)) {
      try {
        fn(c.opts, results);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "dsv4 bench %s: FAILED: %s\n", op.c_str(), e.what());
        rc = 1;
      }
    }
  }
  warn_unused(c.opts);
  if (c.json != "-") std::printf("%s", format_table(results).c_str());
  if (!c.json.empty() && !write_file(c.json, to_json(results, ce, gpu_json(g)))) return 1;
  return rc;
}

std::string verify_json(const std::vector<VerifyReport>& reps, const GpuInfo& g) {
  std::ostringstream os;
  os << "{\n  \"device\": " << gpu_json(g) << ",\n  \"verify\": [";
  for (size_t i = 0; i < reps.size(); ++i) {
    const VerifyReport& r = reps[i];
    os << (i ? "," : "") << "\n    {\"op\": \"" << json_escape(r.op) << "\", \"case\": \"" << json_escape(r.case_name)
       << "\", \"shape\": \"" << json_escape(r.shape) << "\", \"pass\": " << (r.pass ? "true" : "false")
       << ", \"gpu_ran\": " << (r.gpu_ran ? "true" : "false") << ", \"mismatches\": " << r.mismatches
       << ", \"max_abs_err\": " << (std::isfinite(r.max_abs_err) ? std::to_string(r.max_abs_err) : "null")
       << ", \"detail\": \"" << json_escape(r.detail) << "\"}";
  }
  os << "\n  ]\n}\n";
  return os.str();
}

int cmd_verify(const std::vector<std::string>& args) {
  const Cmd c = parse_cmd(args, true);
  const auto ops = select_ops(verify_registry(), c.op, "verify");
  const GpuInfo& g = gpu();
  if (!g.present || !g.supported)
    std::printf("dsv4 verify: no usable GPU (%s): checking the CPU reference alone; GPU part skipped\n",
                g.reason.c_str());
  std::vector<VerifyReport> reps;
  int rc = 0;
  for (const std::string& op : ops) {
    for (const VerifyFn& fn : verify_registry().at(op)) {
      try {
        fn(c.opts, reps);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "dsv4 verify %s: FAILED with an error: %s\n", op.c_str(), e.what());
        VerifyReport r;
        r.op = op;
        r.case_name = "(error)";
        r.detail = e.what();
        reps.push_back(r);
      }
    }
  }
  warn_unused(c.opts);
  for (const VerifyReport& r : reps) {
    std::printf("%-4s  %-10s %-28s %-18s max_abs_err %-10.4g mismatches %lld%s\n    %s\n",
                r.pass ? "PASS" : "FAIL", r.op.c_str(), r.case_name.c_str(), r.shape.c_str(), r.max_abs_err,
                (long long)r.mismatches, r.gpu_ran ? "" : "  (CPU only)", r.detail.c_str());
    if (!r.pass) rc = 1;
  }
  std::printf("%s\n", rc ? "verify: FAIL" : "verify: all PASS");
  if (!c.json.empty() && !write_file(c.json, verify_json(reps, g))) return 1;
  return rc;
}

int cmd_list() {
  std::printf("bench:");
  for (const auto& [name, fns] : bench_registry()) std::printf(" %s", name.c_str());
  std::printf("\nverify:");
  for (const auto& [name, fns] : verify_registry()) std::printf(" %s", name.c_str());
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::printf("%s", kUsage);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    std::printf("dsv4 %s\n", dsv4_version());
    return 0;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  try {
    if (cmd == "info") return cmd_info(args);
    if (cmd == "bench") return cmd_bench(args);
    if (cmd == "verify") return cmd_verify(args);
    if (cmd == "list") return cmd_list();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "dsv4 %s: %s (see dsv4 --help)\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsv4 %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
  std::fprintf(stderr, "dsv4: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
  return 2;
}
