#include "core/validate.h"

#include <algorithm>
#include <span>
#include <sstream>

namespace dsv4 {

std::string describe(const TensorView& t) {
  if (!t.defined()) return "an empty (undefined) tensor";
  std::ostringstream os;
  os << dtype_name(t.dtype) << " [";
  for (int i = 0; i < t.ndim; ++i) os << (i ? ", " : "") << t.shape[i];
  os << "] strides [";
  for (int i = 0; i < t.ndim; ++i) os << (i ? ", " : "") << t.strides[i];
  os << "] on " << (t.device.type == DeviceType::kCUDA ? "cuda:" : "cpu:") << t.device.index;
  return os.str();
}

namespace core {

Status invalid(const char* op, const std::string& what) {
  return {StatusCode::kInvalidArgument, std::string(op) + ": " + what};
}

Status arg_error(const char* op, const char* arg, const std::string& expected, const TensorView& got) {
  return invalid(op, std::string("argument '") + arg + "' must " + expected + ", got " + describe(got));
}

Status expect_defined(const char* op, const char* arg, const TensorView& t) {
  if (t.ndim <= 0 || t.ndim > kMaxDims) return arg_error(op, arg, "be a tensor with 1 to 6 dimensions", t);
  return Status::Ok();
}

Status expect_dtype(const char* op, const char* arg, const TensorView& t, std::initializer_list<DType> allowed) {
  if (std::find(allowed.begin(), allowed.end(), t.dtype) != allowed.end()) return Status::Ok();
  std::string exp = "be ";
  int i = 0;
  for (DType d : allowed) {
    if (i++) exp += (i == static_cast<int>(allowed.size()) ? " or " : ", ");
    exp += dtype_name(d);
  }
  return arg_error(op, arg, exp, t);
}

static std::string shape_str(std::initializer_list<int64_t> shape) {
  std::ostringstream os;
  os << "[";
  int i = 0;
  for (int64_t s : shape) {
    os << (i++ ? ", " : "");
    if (s < 0) os << "*";
    else os << s;
  }
  os << "]";
  return os.str();
}

Status expect_ndim(const char* op, const char* arg, const TensorView& t, int ndim) {
  if (t.ndim != ndim) return arg_error(op, arg, "have " + std::to_string(ndim) + " dimensions", t);
  return Status::Ok();
}

Status expect_shape(const char* op, const char* arg, const TensorView& t, std::initializer_list<int64_t> shape) {
  bool ok = t.ndim == static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) {
    if (!ok) break;
    if (s >= 0 && t.shape[i] != s) ok = false;
    ++i;
  }
  if (!ok) return arg_error(op, arg, "have shape " + shape_str(shape), t);
  return Status::Ok();
}

Status expect_inner_contiguous(const char* op, const char* arg, const TensorView& t) {
  if (t.ndim > 0 && t.shape[t.ndim - 1] > 1 && t.strides[t.ndim - 1] != 1)
    return arg_error(op, arg, "have innermost stride 1", t);
  return Status::Ok();
}

Status expect_contiguous(const char* op, const char* arg, const TensorView& t) {
  if (!t.is_contiguous()) return arg_error(op, arg, "be contiguous (row-major)", t);
  return Status::Ok();
}

Status expect_aligned(const char* op, const char* arg, const TensorView& t, int bytes) {
  if (reinterpret_cast<uintptr_t>(t.data) % bytes != 0)
    return arg_error(op, arg, "have a data pointer aligned to " + std::to_string(bytes) + " bytes", t);
  return Status::Ok();
}

Status expect_well_formed(const char* op, const char* arg, const TensorView& t) {
  DSV4_RETURN_IF_ERROR(expect_defined(op, arg, t));
  if (!dtype_valid(static_cast<int32_t>(t.dtype))) return arg_error(op, arg, "have a known dtype", t);
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] < 0) return arg_error(op, arg, "have non-negative extents", t);
    if (t.strides[i] < 0) return arg_error(op, arg, "have non-negative strides", t);
  }
  if (t.dtype == DType::E2M1) {
    for (int i = 0; i < t.ndim; ++i) {
      const bool inner = i == t.ndim - 1;
      if (inner && t.shape[i] > 1 && t.strides[i] != 1)
        return arg_error(op, arg, "(packed e2m1) have innermost stride 1", t);
      if (!inner && t.shape[i] > 1 && t.strides[i] % 2 != 0)
        return arg_error(op, arg, "(packed e2m1) have even outer strides so rows start on a byte", t);
    }
  }
  if (t.numel() > 0 && t.data == nullptr) return arg_error(op, arg, "have a non-null data pointer", t);
  return Status::Ok();
}

Status common_device(const char* op, const Arg* args, size_t n, Device* out) {
  const Arg* first = nullptr;
  for (const Arg& a : std::span<const Arg>(args, n)) {
    if (!a.t->defined()) continue;
    if (!first) {
      first = &a;
      continue;
    }
    if (!(a.t->device == first->t->device))
      return invalid(op, std::string("argument '") + a.name + "' is on a different device than '" +
                             first->name + "': " + describe(*a.t) + " vs " + describe(*first->t));
  }
  *out = first ? first->t->device : Device::cpu();
  return Status::Ok();
}

// Extent of the bytes a view can touch: [lo, hi).
static void byte_span(const TensorView& t, uintptr_t* lo, uintptr_t* hi) {
  int64_t last = 0;
  for (int i = 0; i < t.ndim; ++i) last += (t.shape[i] - 1) * t.strides[i];
  *lo = reinterpret_cast<uintptr_t>(t.data);
  *hi = *lo + static_cast<uintptr_t>((last * dtype_bits(t.dtype)) / 8 + (dtype_bits(t.dtype) + 7) / 8);
}

Status expect_disjoint(const char* op, const char* a_name, const TensorView& a, const char* b_name,
                       const TensorView& b) {
  if (!a.defined() || !b.defined() || a.numel() == 0 || b.numel() == 0) return Status::Ok();
  uintptr_t alo, ahi, blo, bhi;
  byte_span(a, &alo, &ahi);
  byte_span(b, &blo, &bhi);
  if (alo < bhi && blo < ahi)
    return invalid(op, std::string("arguments '") + a_name + "' and '" + b_name + "' must not overlap in memory");
  return Status::Ok();
}

}  // namespace core
}  // namespace dsv4
