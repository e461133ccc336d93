// Element types understood by dsv4. Host-only header: no CUDA includes.
#pragma once
#include <cstdint>
#include <string_view>

namespace dsv4 {

// Values are part of the C ABI (dsv4.h mirrors them): never renumber.
enum class DType : int32_t {
  F32 = 0,
  BF16 = 1,
  F16 = 2,
  E4M3 = 3,   // float8_e4m3fn: bias 7, max 448, no inf, NaN = 0x7F/0xFF
  E5M2 = 4,   // float8_e5m2: IEEE-like, has inf and NaN
  E2M1 = 5,   // fp4, two per byte, element 0 in the low nibble
  UE8M0 = 6,  // unsigned power-of-two scale 2^(e-127), 0xFF = NaN
  I32 = 7,
  I64 = 8,
  U8 = 9,
};

// Bits one element occupies in memory (E2M1 packs two per byte).
constexpr int dtype_bits(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 32;
    case DType::BF16: case DType::F16: return 16;
    case DType::E4M3: case DType::E5M2: case DType::UE8M0: case DType::U8: return 8;
    case DType::E2M1: return 4;
    case DType::I64: return 64;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::E4M3: return "e4m3";
    case DType::E5M2: return "e5m2";
    case DType::E2M1: return "e2m1";
    case DType::UE8M0: return "ue8m0";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::U8: return "u8";
  }
  return "?";
}

constexpr bool dtype_valid(int32_t v) { return v >= 0 && v <= static_cast<int32_t>(DType::U8); }

}  // namespace dsv4
