// GPU GEMM tests (filled in with the kernels).
#include <gtest/gtest.h>
