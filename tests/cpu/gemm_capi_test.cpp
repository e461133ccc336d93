// The C ABI entry of the GEMM (dsv4_gemm) against the C++ API on the CPU reference, and its
// boundary checks (format range, NULL required tensors).
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "common/gemm_test_util.h"
#include "dsv4/dsv4.h"

namespace dsv4 {
namespace {

dsv4_tensor to_c(const TensorView& t) {
  dsv4_tensor c;
  std::memset(&c, 0, sizeof c);
  c.data = t.data;
  c.dtype = static_cast<int32_t>(t.dtype);
  c.ndim = t.ndim;
  for (int i = 0; i < t.ndim; ++i) c.shape[i] = t.shape[i], c.strides[i] = t.strides[i];
  c.device_type = static_cast<int32_t>(t.device.type);
  c.device_index = t.device.index;
  return c;
}

TEST(GemmCapi, MatchesCppAndChecksArguments) {
  std::mt19937_64 g = test::rng_for_test();
  for (GemmFormat f : {GemmFormat::kFP8Block, GemmFormat::kW4A16NVFP4}) {
    test::HostGemm h = test::make_exact_gemm(f, 3, 128, 256, g);
    h.has_bias = true;
    test::add_epilogue_inputs(h, g, true);
    std::vector<uint16_t> want, got;
    ASSERT_TRUE(gemm(h.host_params(want)).ok());
    const GemmParams p = h.host_params(got);
    const dsv4_tensor a = to_c(p.a), as = to_c(p.a_scales), b = to_c(p.b), bs = to_c(p.b_scales),
                      gs = to_c(p.b_global_scale), bias = to_c(p.bias), d = to_c(p.d);
    const bool has_as = p.a_scales.defined(), has_g = p.b_global_scale.defined();
    ASSERT_EQ(dsv4_gemm(static_cast<int32_t>(f), &a, has_as ? &as : nullptr, &b, &bs, has_g ? &gs : nullptr, &bias,
                        nullptr, &d, nullptr, nullptr),
              DSV4_OK)
        << dsv4_last_error();
    EXPECT_EQ(got, want);
    EXPECT_EQ(dsv4_gemm(7, &a, &as, &b, &bs, nullptr, nullptr, nullptr, &d, nullptr, nullptr),
              DSV4_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(dsv4_last_error()).find("'format'"), std::string::npos);
    EXPECT_EQ(dsv4_gemm(static_cast<int32_t>(f), &a, &as, nullptr, &bs, nullptr, nullptr, nullptr, &d, nullptr, nullptr),
              DSV4_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(dsv4_last_error()).find("'b'"), std::string::npos);
  }
  EXPECT_EQ(dsv4_gemm_workspace_size(0, 16, 4096, 7168, DSV4_DEVICE_CPU, 0), 0);
  EXPECT_EQ(dsv4_gemm_workspace_size(9, 16, 4096, 7168, DSV4_DEVICE_CPU, 0), -1);
}

}  // namespace
}  // namespace dsv4
