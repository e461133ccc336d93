// Host-side helpers the bench/verify cases share: seeds, host random data, tensor views, checks.
#pragma once
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "dsv4/numerics.h"
#include "dsv4/tensor.h"
#include "harness.h"

namespace dsv4::bench {

// --seed N, else the clock; verify cases print it so a failure can be replayed.
inline uint64_t seed_from(const Options& o) {
  const int64_t s = o.get_int("seed", -1);
  if (s >= 0) return static_cast<uint64_t>(s);
  return static_cast<uint64_t>(std::chrono::high_resolution_clock::now().time_since_epoch().count()) & 0x7FFFFFFFFFFFull;
}

// bf16 values N(0, 1) times a per-run-of-16 power of two in [2^-4, 2^4]: neighbouring scale blocks
// get different exponents, so every scale rule is exercised.
inline std::vector<uint16_t> host_random_bf16(std::mt19937_64& g, size_t n) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::uniform_int_distribution<int> e(-4, 4);
  std::vector<uint16_t> v(n);
  float mag = 1;
  for (size_t i = 0; i < n; ++i) {
    if (i % 16 == 0) mag = std::ldexp(1.0f, e(g));
    float x = d(g) * mag;
    if (x == 0.0f) x = mag;
    v[i] = num::bf16_from_float(x);
  }
  return v;
}

inline TensorView view(void* data, DType dt, std::initializer_list<int64_t> shape, bool on_gpu) {
  return make_tensor(data, dt, shape, on_gpu ? Device::cuda(0) : Device::cpu());
}

inline std::string shape_str(std::initializer_list<int64_t> dims, const char* suffix = "") {
  std::string s;
  for (int64_t d : dims) {
    if (!s.empty()) s += 'x';
    s += std::to_string(d);
  }
  s += suffix;
  return s;
}

inline bool same_bits(float a, float b) { return num::f32_bits(a) == num::f32_bits(b); }

// True when the GPU half of a verify case can run; otherwise `why` says what is missing.
inline bool gpu_usable(std::string* why) {
  const GpuInfo& g = gpu();
  if (g.present && g.supported) return true;
  *why = g.reason;
  return false;
}

}  // namespace dsv4::bench
