// The C ABI (include/dsv4/dsv4.h) over the C++ API. Its job is the boundary: turn C structs into
// TensorViews after checking what the C++ types cannot express (enum ranges, ndim, NULL), and make
// sure no C++ exception ever unwinds into a C caller.
#include "dsv4/dsv4.h"

#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <type_traits>

#include "backend/backends.h"
#include "core/validate.h"
#include "dsv4/ops/gemm.h"
#include "dsv4/ops/kv_cache.h"
#include "dsv4/ops/quant.h"
#include "dsv4/ops/sparse_decode.h"

namespace {

using dsv4::DType;
using dsv4::KVLayout;
using dsv4::QuantFormat;
using dsv4::StatusCode;

// The C enums must stay numerically identical to the C++ ones: the C layer casts between them.
static_assert(DSV4_DTYPE_F32 == static_cast<int>(DType::F32));
static_assert(DSV4_DTYPE_BF16 == static_cast<int>(DType::BF16));
static_assert(DSV4_DTYPE_F16 == static_cast<int>(DType::F16));
static_assert(DSV4_DTYPE_E4M3 == static_cast<int>(DType::E4M3));
static_assert(DSV4_DTYPE_E5M2 == static_cast<int>(DType::E5M2));
static_assert(DSV4_DTYPE_E2M1 == static_cast<int>(DType::E2M1));
static_assert(DSV4_DTYPE_UE8M0 == static_cast<int>(DType::UE8M0));
static_assert(DSV4_DTYPE_I32 == static_cast<int>(DType::I32));
static_assert(DSV4_DTYPE_I64 == static_cast<int>(DType::I64));
static_assert(DSV4_DTYPE_U8 == static_cast<int>(DType::U8));
static_assert(DSV4_OK == static_cast<int>(StatusCode::kOk));
static_assert(DSV4_ERROR_INVALID_ARGUMENT == static_cast<int>(StatusCode::kInvalidArgument));
static_assert(DSV4_ERROR_UNSUPPORTED == static_cast<int>(StatusCode::kUnsupported));
static_assert(DSV4_ERROR_CUDA == static_cast<int>(StatusCode::kCudaError));
static_assert(DSV4_ERROR_INTERNAL == static_cast<int>(StatusCode::kInternal));
static_assert(DSV4_DEVICE_CPU == static_cast<int>(dsv4::DeviceType::kCPU));
static_assert(DSV4_DEVICE_CUDA == static_cast<int>(dsv4::DeviceType::kCUDA));
static_assert(DSV4_QUANT_MXFP4 == static_cast<int>(QuantFormat::kMXFP4));
static_assert(DSV4_QUANT_NVFP4 == static_cast<int>(QuantFormat::kNVFP4));
static_assert(DSV4_QUANT_MXFP8 == static_cast<int>(QuantFormat::kMXFP8));
static_assert(DSV4_QUANT_FP8_1X128 == static_cast<int>(QuantFormat::kFP8_1x128));
static_assert(DSV4_QUANT_FP8_128X128 == static_cast<int>(QuantFormat::kFP8_128x128));
static_assert(DSV4_KV_MODEL1 == static_cast<int>(KVLayout::kModel1));
static_assert(DSV4_KV_PER_TOKEN_SCALE == static_cast<int>(KVLayout::kPerTokenScale));
static_assert(DSV4_MAX_DIMS == dsv4::kMaxDims);
static_assert(std::is_standard_layout_v<dsv4_tensor> && std::is_standard_layout_v<dsv4_kv_cache>);

thread_local std::string t_last_error;

int finish(const dsv4::Status& s) {
  if (s.ok()) {
    t_last_error.clear();
    return DSV4_OK;
  }
  // Assigning may itself throw bad_alloc; the callers' catch-all turns that into kInternal.
  t_last_error = s.message();
  return static_cast<int>(s.code());
}

using dsv4::core::invalid;

// C struct -> TensorView, rejecting what would be undefined behaviour on the C++ side (describe()
// indexes shape[ndim - 1], enum class values outside their range).
dsv4::Status to_view(const char* op, const char* arg, const dsv4_tensor* t, bool optional, dsv4::TensorView* out) {
  *out = dsv4::TensorView{};
  if (t == nullptr) {
    if (optional) return dsv4::Status::Ok();
    return invalid(op, std::string("argument '") + arg + "' is a NULL pointer (a dsv4_tensor is required)");
  }
  const std::string where = std::string("argument '") + arg + "' ";
  if (t->ndim < 0 || t->ndim > DSV4_MAX_DIMS)
    return invalid(op, where + "must have ndim in [0, 6], got " + std::to_string(t->ndim));
  if (!dsv4::dtype_valid(t->dtype)) return invalid(op, where + "has unknown dtype " + std::to_string(t->dtype));
  if (t->device_type != DSV4_DEVICE_CPU && t->device_type != DSV4_DEVICE_CUDA)
    return invalid(op, where + "has unknown device_type " + std::to_string(t->device_type) +
                           " (expected 0 = cpu or 1 = cuda)");
  if (t->device_index < 0) return invalid(op, where + "has negative device_index " + std::to_string(t->device_index));
  out->data = t->data;
  out->dtype = static_cast<DType>(t->dtype);
  out->ndim = t->ndim;
  for (int i = 0; i < t->ndim; ++i) {
    out->shape[i] = t->shape[i];
    out->strides[i] = t->strides[i];
  }
  out->device = {static_cast<dsv4::DeviceType>(t->device_type), t->device_index};
  return dsv4::Status::Ok();
}

dsv4::Status to_cache(const char* op, const dsv4_kv_cache* c, dsv4::KVCacheView* out) {
  if (c == nullptr) return invalid(op, "argument 'cache' is a NULL pointer (a dsv4_kv_cache is required)");
  if (c->layout != DSV4_KV_MODEL1 && c->layout != DSV4_KV_PER_TOKEN_SCALE)
    return invalid(op, "argument 'cache' has unknown layout " + std::to_string(c->layout) +
                           " (expected 0 = MODEL1 or 1 = per-token scale)");
  if (c->reserved != 0) return invalid(op, "argument 'cache' has reserved = " + std::to_string(c->reserved) + ", must be 0");
  out->layout = static_cast<KVLayout>(c->layout);
  out->page_size = c->page_size;
  DSV4_RETURN_IF_ERROR(to_view(op, "cache.data", &c->data, false, &out->data));
  return to_view(op, "cache.scales", &c->scales, false, &out->scales);
}

dsv4::Status check_format(const char* op, int32_t format) {
  if (format < DSV4_QUANT_MXFP4 || format > DSV4_QUANT_FP8_128X128)
    return invalid(op, "argument 'format' is unknown: " + std::to_string(format) + " (expected 0..4)");
  return dsv4::Status::Ok();
}

// Every entry point body runs inside this: an exception (bad_alloc in a message, a bug) becomes a
// status instead of unwinding through C frames, which is undefined behaviour.
template <class F>
int guarded(const char* op, F&& body) noexcept {
  try {
    return finish(body());
  } catch (const std::bad_alloc&) {
    try {
      t_last_error = std::string(op) + ": out of host memory";
    } catch (...) {
      t_last_error.clear();  // no memory even for the message: an empty one beats none
    }
    return DSV4_ERROR_INTERNAL;
  } catch (const std::exception& e) {
    try {
      t_last_error = std::string(op) + ": internal error: " + e.what();
    } catch (...) {
    }
    return DSV4_ERROR_INTERNAL;
  } catch (...) {
    try {
      t_last_error = std::string(op) + ": internal error: unknown exception";
    } catch (...) {
    }
    return DSV4_ERROR_INTERNAL;
  }
}

}  // namespace

extern "C" {

const char* dsv4_version(void) { return DSV4_VERSION_STRING; }

const char* dsv4_last_error(void) { return t_last_error.c_str(); }

const char* dsv4_status_name(int status) {
  switch (status) {
    case DSV4_OK: return "ok";
    case DSV4_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case DSV4_ERROR_UNSUPPORTED: return "unsupported";
    case DSV4_ERROR_CUDA: return "CUDA error";
    case DSV4_ERROR_INTERNAL: return "internal error";
    default: return "unknown status";
  }
}

int dsv4_cuda_available(void) {
  try {
    return dsv4::cuda::available() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

int dsv4_quantize(int32_t format, const dsv4_tensor* x, const dsv4_tensor* q, const dsv4_tensor* scales,
                  const dsv4_tensor* global_scale, int32_t compute_global_scale, void* stream) {
  constexpr const char* op = "quantize";
  return guarded(op, [&]() -> dsv4::Status {
    DSV4_RETURN_IF_ERROR(check_format(op, format));
    if (compute_global_scale != 0 && compute_global_scale != 1)
      return invalid(op, "argument 'compute_global_scale' must be 0 or 1, got " + std::to_string(compute_global_scale));
    dsv4::QuantizeParams p;
    p.format = static_cast<QuantFormat>(format);
    DSV4_RETURN_IF_ERROR(to_view(op, "x", x, false, &p.x));
    DSV4_RETURN_IF_ERROR(to_view(op, "q", q, false, &p.q));
    DSV4_RETURN_IF_ERROR(to_view(op, "scales", scales, false, &p.scales));
    DSV4_RETURN_IF_ERROR(to_view(op, "global_scale", global_scale, true, &p.global_scale));
    p.compute_global_scale = compute_global_scale != 0;
    return dsv4::quantize(p, stream);
  });
}

int dsv4_dequantize(int32_t format, const dsv4_tensor* q, const dsv4_tensor* scales, const dsv4_tensor* global_scale,
                    const dsv4_tensor* out, void* stream) {
  constexpr const char* op = "dequantize";
  return guarded(op, [&]() -> dsv4::Status {
    DSV4_RETURN_IF_ERROR(check_format(op, format));
    dsv4::DequantizeParams p;
    p.format = static_cast<QuantFormat>(format);
    DSV4_RETURN_IF_ERROR(to_view(op, "q", q, false, &p.q));
    DSV4_RETURN_IF_ERROR(to_view(op, "scales", scales, false, &p.scales));
    DSV4_RETURN_IF_ERROR(to_view(op, "global_scale", global_scale, true, &p.global_scale));
    DSV4_RETURN_IF_ERROR(to_view(op, "out", out, false, &p.out));
    return dsv4::dequantize(p, stream);
  });
}

int64_t dsv4_swizzled_scales_size(int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0) {
    try {
      t_last_error = "swizzled_scales_size: rows and cols must be >= 0, got " + std::to_string(rows) + " x " +
                     std::to_string(cols);
    } catch (...) {
    }
    return -1;
  }
  t_last_error.clear();
  return dsv4::swizzled_scales_size(rows, cols);
}

int dsv4_swizzle_scales_128x4(const dsv4_tensor* src, const dsv4_tensor* dst, void* stream) {
  constexpr const char* op = "swizzle_scales_128x4";
  return guarded(op, [&]() -> dsv4::Status {
    dsv4::TensorView s, d;
    DSV4_RETURN_IF_ERROR(to_view(op, "src", src, false, &s));
    DSV4_RETURN_IF_ERROR(to_view(op, "dst", dst, false, &d));
    return dsv4::swizzle_scales_128x4(s, d, stream);
  });
}

int dsv4_unswizzle_scales_128x4(const dsv4_tensor* src, const dsv4_tensor* dst, void* stream) {
  constexpr const char* op = "unswizzle_scales_128x4";
  return guarded(op, [&]() -> dsv4::Status {
    dsv4::TensorView s, d;
    DSV4_RETURN_IF_ERROR(to_view(op, "src", src, false, &s));
    DSV4_RETURN_IF_ERROR(to_view(op, "dst", dst, false, &d));
    return dsv4::unswizzle_scales_128x4(s, d, stream);
  });
}

int64_t dsv4_model1_page_bytes(int64_t page_size) {
  if (page_size < 1) {
    try {
      t_last_error = "model1_page_bytes: page_size must be >= 1, got " + std::to_string(page_size);
    } catch (...) {
    }
    return -1;
  }
  t_last_error.clear();
  return dsv4::model1_page_bytes(page_size);
}

int dsv4_kv_cache_insert(const dsv4_tensor* kv, const dsv4_tensor* slot_mapping, const dsv4_kv_cache* cache,
                         void* stream) {
  constexpr const char* op = "kv_cache_insert";
  return guarded(op, [&]() -> dsv4::Status {
    dsv4::KVInsertParams p;
    DSV4_RETURN_IF_ERROR(to_view(op, "kv", kv, false, &p.kv));
    DSV4_RETURN_IF_ERROR(to_view(op, "slot_mapping", slot_mapping, false, &p.slot_mapping));
    DSV4_RETURN_IF_ERROR(to_cache(op, cache, &p.cache));
    return dsv4::kv_cache_insert(p, stream);
  });
}

int dsv4_kv_cache_gather(const dsv4_kv_cache* cache, const dsv4_tensor* indices, const dsv4_tensor* out, void* stream) {
  constexpr const char* op = "kv_cache_gather";
  return guarded(op, [&]() -> dsv4::Status {
    dsv4::KVGatherParams p;
    DSV4_RETURN_IF_ERROR(to_cache(op, cache, &p.cache));
    DSV4_RETURN_IF_ERROR(to_view(op, "indices", indices, false, &p.indices));
    DSV4_RETURN_IF_ERROR(to_view(op, "out", out, false, &p.out));
    return dsv4::kv_cache_gather(p, stream);
  });
}

static_assert(DSV4_GEMM_FP8_BLOCK == static_cast<int>(dsv4::GemmFormat::kFP8Block));
static_assert(DSV4_GEMM_W4A16_MXFP4 == static_cast<int>(dsv4::GemmFormat::kW4A16MXFP4));
static_assert(DSV4_GEMM_W4A16_NVFP4 == static_cast<int>(dsv4::GemmFormat::kW4A16NVFP4));
static_assert(DSV4_GEMM_W4A8_MXFP4 == static_cast<int>(dsv4::GemmFormat::kW4A8MXFP4));

int dsv4_gemm(int32_t format, const dsv4_tensor* a, const dsv4_tensor* a_scales, const dsv4_tensor* b,
              const dsv4_tensor* b_scales, const dsv4_tensor* b_global_scale, const dsv4_tensor* bias,
              const dsv4_tensor* residual, const dsv4_tensor* d, const dsv4_tensor* workspace, void* stream) {
  constexpr const char* op = "gemm";
  return guarded(op, [&]() -> dsv4::Status {
    if (format < DSV4_GEMM_FP8_BLOCK || format > DSV4_GEMM_W4A8_MXFP4)
      return invalid(op, "argument 'format' is unknown: " + std::to_string(format) + " (expected 0..3)");
    dsv4::GemmParams p;
    p.format = static_cast<dsv4::GemmFormat>(format);
    DSV4_RETURN_IF_ERROR(to_view(op, "a", a, false, &p.a));
    DSV4_RETURN_IF_ERROR(to_view(op, "a_scales", a_scales, true, &p.a_scales));
    DSV4_RETURN_IF_ERROR(to_view(op, "b", b, false, &p.b));
    DSV4_RETURN_IF_ERROR(to_view(op, "b_scales", b_scales, false, &p.b_scales));
    DSV4_RETURN_IF_ERROR(to_view(op, "b_global_scale", b_global_scale, true, &p.b_global_scale));
    DSV4_RETURN_IF_ERROR(to_view(op, "bias", bias, true, &p.bias));
    DSV4_RETURN_IF_ERROR(to_view(op, "residual", residual, true, &p.residual));
    DSV4_RETURN_IF_ERROR(to_view(op, "d", d, false, &p.d));
    DSV4_RETURN_IF_ERROR(to_view(op, "workspace", workspace, true, &p.workspace));
    return dsv4::gemm(p, stream);
  });
}

int64_t dsv4_gemm_workspace_size(int32_t format, int64_t M, int64_t N, int64_t K, int32_t device_type,
                                 int32_t device_index) {
  try {
    if (format < DSV4_GEMM_FP8_BLOCK || format > DSV4_GEMM_W4A8_MXFP4 ||
        (device_type != DSV4_DEVICE_CPU && device_type != DSV4_DEVICE_CUDA) || device_index < 0) {
      t_last_error = "gemm_workspace_size: unknown format " + std::to_string(format) + " or device " +
                     std::to_string(device_type) + ":" + std::to_string(device_index);
      return -1;
    }
    t_last_error.clear();
    return dsv4::gemm_workspace_size(static_cast<dsv4::GemmFormat>(format), M, N, K,
                                     {static_cast<dsv4::DeviceType>(device_type), device_index});
  } catch (...) {
    return -1;
  }
}

int dsv4_sparse_decode(const dsv4_tensor* q, const dsv4_kv_cache* main_cache, const dsv4_tensor* main_indices,
                       const dsv4_tensor* main_lengths, const dsv4_kv_cache* extra_cache,
                       const dsv4_tensor* extra_indices, const dsv4_tensor* extra_lengths,
                       const dsv4_tensor* attn_sink, float softmax_scale, const dsv4_tensor* out,
                       const dsv4_tensor* lse, const dsv4_tensor* workspace, void* stream) {
  constexpr const char* op = "sparse_decode";
  return guarded(op, [&]() -> dsv4::Status {
    dsv4::SparseDecodeParams p;
    DSV4_RETURN_IF_ERROR(to_view(op, "q", q, false, &p.q));
    DSV4_RETURN_IF_ERROR(to_cache(op, main_cache, &p.main_cache));
    DSV4_RETURN_IF_ERROR(to_view(op, "main_indices", main_indices, false, &p.main_indices));
    DSV4_RETURN_IF_ERROR(to_view(op, "main_lengths", main_lengths, true, &p.main_lengths));
    if (extra_cache) DSV4_RETURN_IF_ERROR(to_cache(op, extra_cache, &p.extra_cache));
    DSV4_RETURN_IF_ERROR(to_view(op, "extra_indices", extra_indices, true, &p.extra_indices));
    DSV4_RETURN_IF_ERROR(to_view(op, "extra_lengths", extra_lengths, true, &p.extra_lengths));
    DSV4_RETURN_IF_ERROR(to_view(op, "attn_sink", attn_sink, true, &p.attn_sink));
    p.softmax_scale = softmax_scale;
    DSV4_RETURN_IF_ERROR(to_view(op, "out", out, false, &p.out));
    DSV4_RETURN_IF_ERROR(to_view(op, "lse", lse, true, &p.lse));
    DSV4_RETURN_IF_ERROR(to_view(op, "workspace", workspace, true, &p.workspace));
    return dsv4::sparse_decode(p, stream);
  });
}

int dsv4_swa_decode(const dsv4_tensor* q, const dsv4_kv_cache* cache, const dsv4_tensor* swa_indices,
                    const dsv4_tensor* swa_lens, float softmax_scale, const dsv4_tensor* out, const dsv4_tensor* lse,
                    const dsv4_tensor* workspace, void* stream) {
  constexpr const char* op = "swa_decode";
  return guarded(op, [&]() -> dsv4::Status {
    dsv4::SwaDecodeParams p;
    DSV4_RETURN_IF_ERROR(to_view(op, "q", q, false, &p.q));
    DSV4_RETURN_IF_ERROR(to_cache(op, cache, &p.cache));
    DSV4_RETURN_IF_ERROR(to_view(op, "swa_indices", swa_indices, false, &p.swa_indices));
    DSV4_RETURN_IF_ERROR(to_view(op, "swa_lens", swa_lens, false, &p.swa_lens));
    p.softmax_scale = softmax_scale;
    DSV4_RETURN_IF_ERROR(to_view(op, "out", out, false, &p.out));
    DSV4_RETURN_IF_ERROR(to_view(op, "lse", lse, true, &p.lse));
    DSV4_RETURN_IF_ERROR(to_view(op, "workspace", workspace, true, &p.workspace));
    return dsv4::swa_decode(p, stream);
  });
}

int64_t dsv4_sparse_decode_workspace_size(int64_t batch, int64_t s_q, int64_t heads, int64_t k_main, int64_t k_extra,
                                          int32_t device_type, int32_t device_index) {
  try {
    if ((device_type != DSV4_DEVICE_CPU && device_type != DSV4_DEVICE_CUDA) || device_index < 0 || batch < 0 ||
        s_q < 0 || heads < 0 || k_main < 0 || k_extra < 0) {
      t_last_error = "sparse_decode_workspace_size: unknown device " + std::to_string(device_type) + ":" +
                     std::to_string(device_index) + " or a negative extent";
      return -1;
    }
    t_last_error.clear();
    const dsv4::Device dev{static_cast<dsv4::DeviceType>(device_type), device_index};
    dsv4::SparseDecodeParams p;
    p.q = dsv4::make_tensor(nullptr, DType::BF16, {batch, s_q, heads, dsv4::kKVDim}, dev);
    p.main_indices = dsv4::make_tensor(nullptr, DType::I32, {batch, s_q, k_main}, dev);
    if (k_extra > 0) p.extra_indices = dsv4::make_tensor(nullptr, DType::I32, {batch, s_q, k_extra}, dev);
    return dsv4::sparse_decode_workspace_size(p);
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
