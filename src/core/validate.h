// Argument checks every op shares. Each returns a Status whose message names the op, the argument,
// what was expected and what was received, e.g.
//   quantize: argument 'scales' must have shape [4, 8], got ue8m0 [4, 7] strides [7, 1] on cuda:0
#pragma once
#include <cstddef>
#include <initializer_list>
#include <string>

#include "dsv4/status.h"
#include "dsv4/tensor.h"

#define DSV4_RETURN_IF_ERROR(expr)          \
  do {                                      \
    ::dsv4::Status _dsv4_s = (expr);        \
    if (!_dsv4_s.ok()) return _dsv4_s;      \
  } while (0)

namespace dsv4::core {

struct Arg {
  const char* name;
  const TensorView* t;
};

Status invalid(const char* op, const std::string& what);
Status arg_error(const char* op, const char* arg, const std::string& expected, const TensorView& got);

Status expect_defined(const char* op, const char* arg, const TensorView& t);
Status expect_dtype(const char* op, const char* arg, const TensorView& t, std::initializer_list<DType> allowed);
// -1 in `shape` accepts any extent in that dimension.
Status expect_shape(const char* op, const char* arg, const TensorView& t, std::initializer_list<int64_t> shape);
Status expect_ndim(const char* op, const char* arg, const TensorView& t, int ndim);
Status expect_inner_contiguous(const char* op, const char* arg, const TensorView& t);
Status expect_contiguous(const char* op, const char* arg, const TensorView& t);
Status expect_aligned(const char* op, const char* arg, const TensorView& t, int bytes);
// Non-negative strides, E2M1 packing rules, and a non-null pointer when the tensor has elements.
Status expect_well_formed(const char* op, const char* arg, const TensorView& t);
// All defined tensors must sit on one device; returns it through `out`.
Status common_device(const char* op, const Arg* args, size_t n, Device* out);
inline Status common_device(const char* op, std::initializer_list<Arg> args, Device* out) {
  return common_device(op, args.begin(), args.size(), out);
}
// Two tensors must not overlap in memory (outputs against inputs).
Status expect_disjoint(const char* op, const char* a_name, const TensorView& a, const char* b_name,
                       const TensorView& b);

// Byte address of element (i0, i1) of a 2-D view (E2M1 aware).
inline int64_t byte_offset_2d(const TensorView& t, int64_t i0, int64_t i1) {
  const int64_t e = i0 * t.strides[0] + i1 * t.strides[1];
  return e * dtype_bits(t.dtype) / 8;
}

}  // namespace dsv4::core
