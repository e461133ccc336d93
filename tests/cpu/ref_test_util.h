// Helpers for the CPU reference tests: an aligned byte arena that can be poisoned and compared,
// strided 2-D views, and brute-force format facts (grids, half-ulps) used as independent oracles.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "dsv4/numerics.h"
#include "dsv4/status.h"
#include "dsv4/tensor.h"

namespace dsv4::test {

// One allocation holding several buffers, each on a 64-byte boundary (so a test can misalign by
// adding a few bytes on purpose). snapshot()/unchanged() detect any write anywhere in it.
class Arena {
 public:
  explicit Arena(size_t capacity = 1 << 20, uint8_t fill = 0xA5) : raw_(capacity + 64, fill) {
    base_ = raw_.data() + (64 - reinterpret_cast<uintptr_t>(raw_.data()) % 64) % 64;
    cap_ = capacity;
  }
  // A fresh region of `bytes`, followed by 64 bytes of slack nobody owns (to catch overruns).
  uint8_t* alloc(size_t bytes) {
    const size_t at = used_;
    used_ += (bytes + 64 + 63) / 64 * 64;
    if (used_ > cap_) {
      ADD_FAILURE() << "Arena too small";
      return base_;
    }
    return base_ + at;
  }
  std::vector<uint8_t> snapshot() const { return std::vector<uint8_t>(base_, base_ + cap_); }
  // Index of the first byte differing from `snap`, or -1.
  int64_t first_change(const std::vector<uint8_t>& snap) const {
    for (size_t i = 0; i < cap_; ++i)
      if (base_[i] != snap[i]) return static_cast<int64_t>(i);
    return -1;
  }
  uint8_t* base() const { return base_; }

 private:
  std::vector<uint8_t> raw_;
  uint8_t* base_;
  size_t cap_;
  size_t used_ = 0;
};

inline TensorView view2d(void* data, DType dt, int64_t rows, int64_t cols, int64_t s0, int64_t s1,
                         Device dev = Device::cpu()) {
  return make_strided_tensor(data, dt, {rows, cols}, {s0, s1}, dev);
}

inline bool same_bits(float a, float b) { return num::f32_bits(a) == num::f32_bits(b); }

// Assert helpers for Status.
#define DSV4_EXPECT_OK(expr)                                   \
  do {                                                         \
    const ::dsv4::Status _s = (expr);                          \
    EXPECT_TRUE(_s.ok()) << "status message: " << _s.message(); \
  } while (0)

inline ::testing::AssertionResult has_all(const Status& s, StatusCode code, const std::vector<std::string>& subs) {
  if (s.code() != code)
    return ::testing::AssertionFailure() << "code " << static_cast<int>(s.code()) << " != expected "
                                         << static_cast<int>(code) << "; message: " << s.message();
  for (const auto& sub : subs)
    if (s.message().find(sub) == std::string::npos)
      return ::testing::AssertionFailure() << "message lacks \"" << sub << "\": " << s.message();
  return ::testing::AssertionSuccess();
}

// ---- format facts computed by brute force over the code tables ----

// Magnitude of the e4m3 code c (0..0x7E), as a double.
inline double e4m3_mag(int c) {
  const int e = (c >> 3) & 0xF, m = c & 7;
  return e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
}
inline double e2m1_mag(int c) {
  static const double v[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  return v[c & 7];
}

// Half the distance between the two grid points around |y| (clamped to the largest finite), the
// largest error round-to-nearest can make. grid(c) for c = 0..n_max.
template <class Grid>
double half_gap(double y, Grid grid, int n_max) {
  y = std::fabs(y);
  for (int c = 0; c < n_max; ++c)
    if (y <= grid(c + 1)) return (grid(c + 1) - grid(c)) / 2;
  return (grid(n_max) - grid(n_max - 1)) / 2;
}
inline double e4m3_half_gap(double y) { return half_gap(y, e4m3_mag, 0x7E); }
inline double e2m1_half_gap(double y) { return half_gap(y, e2m1_mag, 7); }

}  // namespace dsv4::test
