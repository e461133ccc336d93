#include "registry.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace dsv4::bench {

void check_ok(const Status& s, const std::string& context) {
  if (!s.ok()) throw BenchError(context + ": " + s.message());
}

Options Options::parse(const std::vector<std::string>& args) {
  Options o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0 || a.size() < 3) throw BenchError("expected an option --key [value], got '" + a + "'");
    std::string key = a.substr(2), value = "1";
    const size_t eq = key.find('=');
    if (eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {
      value = args[++i];
    }
    o.kv_[key] = value;
  }
  return o;
}

bool Options::has(const std::string& key) const {
  read_[key] = true;
  return kv_.count(key) != 0;
}

std::string Options::get(const std::string& key, const std::string& def) const {
  read_[key] = true;
  auto it = kv_.find(key);
  return it == kv_.end() ? def : it->second;
}

namespace {
// The whole of `text` as a base-10 integer, or false.
bool parse_int(const std::string& text, int64_t* v) {
  char* end = nullptr;
  *v = std::strtoll(text.c_str(), &end, 10);
  return end != text.c_str() && *end == '\0';
}
}  // namespace

int64_t Options::get_int(const std::string& key, int64_t def) const {
  read_[key] = true;
  auto it = kv_.find(key);
  if (it == kv_.end()) return def;
  int64_t v = 0;
  if (!parse_int(it->second, &v)) throw BenchError("option --" + key + " needs an integer, got '" + it->second + "'");
  return v;
}

std::vector<int64_t> Options::get_int_list(const std::string& key, const std::vector<int64_t>& def) const {
  read_[key] = true;
  auto it = kv_.find(key);
  if (it == kv_.end()) return def;
  std::vector<int64_t> out;
  const std::string& text = it->second;
  size_t pos = 0;
  for (;;) {
    const size_t comma = text.find(',', pos);
    int64_t v = 0;
    if (!parse_int(text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos), &v))
      throw BenchError("option --" + key + " needs integers separated by commas, got '" + text + "'");
    out.push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

std::vector<std::string> Options::unused() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : kv_)
    if (!read_.count(k)) out.push_back(k);
  return out;
}

void finalize(Result& r, const Ceilings& c) {
  const double s = r.median_us * 1e-6;
  r.tflops = (s > 0 && r.flops > 0) ? r.flops / s * 1e-12 : 0;
  r.gbps = (s > 0 && r.bytes > 0) ? r.bytes / s * 1e-9 : 0;
  r.pct_copy_bw = c.copy_gbps > 0 ? 100.0 * r.gbps / c.copy_gbps : 0;
  r.pct_read_bw = c.read_gbps > 0 ? 100.0 * r.gbps / c.read_gbps : 0;
  const double peak = r.peak == Peak::kBF16 ? c.bf16_tflops : r.peak == Peak::kFP8 ? c.fp8_tflops : 0;
  r.pct_peak = peak > 0 ? 100.0 * r.tflops / peak : 0;
  r.ratio = r.baseline_us > 0 ? r.median_us / r.baseline_us : 0;
}

namespace {

std::string fmt(double v, int prec) {
  if (v == 0 || !std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

std::string peak_name(Peak p) { return p == Peak::kBF16 ? "bf16" : p == Peak::kFP8 ? "fp8" : ""; }

std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace

std::string format_table(const std::vector<Result>& results) {
  const std::vector<std::string> head = {"op",      "case",  "shape", "median_us", "p10_us",   "p90_us",
                                         "TFLOP/s", "GB/s",  "%copy", "%read",     "%peak",    "baseline",
                                         "base_us", "t/base"};
  std::vector<std::vector<std::string>> rows;
  for (const Result& r : results) {
    rows.push_back({r.op, r.case_name, r.shape, fmt(r.median_us, 1), fmt(r.p10_us, 1), fmt(r.p90_us, 1),
                    fmt(r.tflops, 1), fmt(r.gbps, 0), fmt(r.pct_copy_bw, 1), fmt(r.pct_read_bw, 1),
                    r.peak == Peak::kNone ? "-" : fmt(r.pct_peak, 1) + " " + peak_name(r.peak),
                    r.baseline.empty() ? "-" : r.baseline, fmt(r.baseline_us, 1), fmt(r.ratio, 2)});
  }
  std::vector<size_t> w(head.size());
  for (size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) w[i] = std::max(w[i], row[i].size());
  std::ostringstream os;
  auto line = [&](const std::vector<std::string>& cells) {
    for (size_t i = 0; i < cells.size(); ++i) {
      // Text columns left-aligned, numbers right-aligned.
      const bool left = i < 3 || i == 11;
      const std::string pad(w[i] - cells[i].size(), ' ');
      os << (i ? "  " : "") << (left ? cells[i] + pad : pad + cells[i]);
    }
    os << "\n";
  };
  line(head);
  std::vector<std::string> rule;
  for (size_t x : w) rule.push_back(std::string(x, '-'));
  line(rule);
  for (const auto& row : rows) line(row);
  for (const Result& r : results)
    if (!r.note.empty()) os << "  note (" << r.case_name << "): " << r.note << "\n";
  if (!results.empty() && results.front().chain > 0)
    os << "  timing: per call, from CUDA graphs of " << results.front().chain
       << " back-to-back calls (--graph); without --graph every call is an isolated launch\n";
  return os.str();
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      o += '\\';
      o += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += ch;
    }
  }
  return o;
}

std::string gpu_json(const GpuInfo& g) {
  std::ostringstream os;
  os << "{\"present\": " << (g.present ? "true" : "false") << ", \"supported\": " << (g.supported ? "true" : "false")
     << ", \"reason\": \"" << json_escape(g.reason) << "\", \"index\": " << g.index << ", \"name\": \""
     << json_escape(g.name) << "\", \"cc\": \"" << g.cc_major << "." << g.cc_minor << "\", \"sms\": " << g.sms
     << ", \"mem_bytes\": " << g.mem_bytes << ", \"l2_bytes\": " << g.l2_bytes << ", \"clock_mhz\": " << g.clock_mhz
     << ", \"mem_clock_mhz\": " << g.mem_clock_mhz << ", \"mem_bus_bits\": " << g.mem_bus_bits
     << ", \"driver_version\": " << g.driver_version << ", \"runtime_version\": " << g.runtime_version << "}";
  return os.str();
}

std::string to_json(const std::vector<Result>& results, const Ceilings& c, const std::string& device_json) {
  std::ostringstream os;
  os << "{\n  \"device\": " << (device_json.empty() ? "null" : device_json) << ",\n";
  os << "  \"ceilings\": {\"measured\": " << (c.measured ? "true" : "false") << ", \"copy_gbps\": " << num(c.copy_gbps)
     << ", \"read_gbps\": " << num(c.read_gbps) << ", \"bf16_tflops\": " << num(c.bf16_tflops)
     << ", \"fp8_tflops\": " << num(c.fp8_tflops) << "},\n";
  os << "  \"results\": [";
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    os << (i ? "," : "") << "\n    {\"op\": \"" << json_escape(r.op) << "\", \"case\": \"" << json_escape(r.case_name)
       << "\", \"shape\": \"" << json_escape(r.shape) << "\", \"median_us\": " << num(r.median_us)
       << ", \"min_us\": " << num(r.min_us) << ", \"max_us\": " << num(r.max_us) << ", \"p10_us\": " << num(r.p10_us)
       << ", \"p90_us\": " << num(r.p90_us) << ", \"runs\": " << r.runs << ", \"flops\": " << num(r.flops)
       << ", \"bytes\": " << num(r.bytes) << ", \"tflops\": " << num(r.tflops) << ", \"gbps\": " << num(r.gbps)
       << ", \"pct_of_copy_bw\": " << num(r.pct_copy_bw) << ", \"pct_of_read_bw\": " << num(r.pct_read_bw)
       << ", \"peak\": \"" << peak_name(r.peak) << "\", \"pct_of_peak\": " << num(r.pct_peak)
       << ", \"baseline\": \"" << json_escape(r.baseline) << "\", \"baseline_us\": " << num(r.baseline_us)
       << ", \"ratio\": " << num(r.ratio) << ", \"graph_chain\": " << r.chain << ", \"note\": \"" << json_escape(r.note) << "\"}";
  }
  os << "\n  ]\n}\n";
  return os.str();
}

namespace {
// Function-local statics: registration from other translation units' static initializers may run
// before this file's globals would have been constructed.
std::map<std::string, std::vector<BenchFn>>& benches() {
  static std::map<std::string, std::vector<BenchFn>> m;
  return m;
}
std::map<std::string, std::vector<VerifyFn>>& verifies() {
  static std::map<std::string, std::vector<VerifyFn>> m;
  return m;
}
}  // namespace

bool register_bench(const char* op, BenchFn fn) {
  benches()[op].push_back(std::move(fn));
  return true;
}
bool register_verify(const char* op, VerifyFn fn) {
  verifies()[op].push_back(std::move(fn));
  return true;
}
const std::map<std::string, std::vector<BenchFn>>& bench_registry() { return benches(); }
const std::map<std::string, std::vector<VerifyFn>>& verify_registry() { return verifies(); }

}  // namespace dsv4::bench
