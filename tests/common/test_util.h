// Shared test helpers: seeded random data (fresh seed each run, printed so a failure can be
// replayed with DSV4_TEST_SEED), NaN poison, and host/device buffers.
#pragma once
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "dsv4/numerics.h"
#include "dsv4/tensor.h"

namespace dsv4::test {

// One seed per test process: DSV4_TEST_SEED if set, else the clock. Printed on first use.
inline uint64_t base_seed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("DSV4_TEST_SEED");
    uint64_t s = env ? std::strtoull(env, nullptr, 10)
                     : static_cast<uint64_t>(std::chrono::high_resolution_clock::now().time_since_epoch().count());
    std::printf("[dsv4] test seed %llu (replay with DSV4_TEST_SEED=%llu)\n", (unsigned long long)s,
                (unsigned long long)s);
    return s;
  }();
  return seed;
}

// A generator per test, derived from the process seed and the test's name.
inline std::mt19937_64 rng_for_test() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  uint64_t h = base_seed();
  if (info) {
    for (const char* c = info->name(); *c; ++c) h = h * 1099511628211ull + static_cast<unsigned char>(*c);
    for (const char* c = info->test_suite_name(); *c; ++c) h = h * 1099511628211ull + static_cast<unsigned char>(*c);
  }
  return std::mt19937_64(h);
}

// bf16 values ~ N(0, sigma) with a spread of magnitudes so scale rules get exercised.
inline std::vector<uint16_t> random_bf16(std::mt19937_64& g, size_t n, float sigma = 1.0f) {
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = num::bf16_from_float(d(g));
  return v;
}

inline std::vector<uint8_t> random_bytes(std::mt19937_64& g, size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(g());
  return v;
}

constexpr uint16_t kBf16NaN = 0x7FC0;
constexpr uint32_t kF32NaNBits = 0x7FC00000u;

}  // namespace dsv4::test
