// Validation and dispatch for the KV-cache ops (include/dsv4/ops/kv_cache.h).
#include "backend/backends.h"
#include "core/validate.h"

namespace dsv4 {

int64_t model1_page_bytes(int64_t page_size) {
  const int64_t raw = page_size * kModel1TokenBytes;
  return (raw + kModel1DataBytes - 1) / kModel1DataBytes * kModel1DataBytes;
}

namespace core {

Status check_kv_cache(const char* op, const KVCacheView& c) {
  if (c.page_size < 1) return invalid(op, "cache.page_size must be >= 1, got " + std::to_string(c.page_size));
  DSV4_RETURN_IF_ERROR(expect_well_formed(op, "cache.data", c.data));
  DSV4_RETURN_IF_ERROR(expect_contiguous(op, "cache.data", c.data));
  DSV4_RETURN_IF_ERROR(expect_aligned(op, "cache.data", c.data, 16));
  switch (c.layout) {
    case KVLayout::kModel1:
      DSV4_RETURN_IF_ERROR(expect_dtype(op, "cache.data", c.data, {DType::U8}));
      DSV4_RETURN_IF_ERROR(expect_shape(op, "cache.data", c.data, {-1, model1_page_bytes(c.page_size)}));
      if (c.scales.defined()) return arg_error(op, "cache.scales", "be empty for the MODEL1 layout", c.scales);
      return Status::Ok();
    case KVLayout::kPerTokenScale:
      DSV4_RETURN_IF_ERROR(expect_dtype(op, "cache.data", c.data, {DType::E4M3}));
      DSV4_RETURN_IF_ERROR(expect_shape(op, "cache.data", c.data, {-1, c.page_size, kKVDim}));
      DSV4_RETURN_IF_ERROR(expect_well_formed(op, "cache.scales", c.scales));
      DSV4_RETURN_IF_ERROR(expect_dtype(op, "cache.scales", c.scales, {DType::BF16}));
      DSV4_RETURN_IF_ERROR(expect_shape(op, "cache.scales", c.scales, {c.data.shape[0], c.page_size}));
      DSV4_RETURN_IF_ERROR(expect_contiguous(op, "cache.scales", c.scales));
      DSV4_RETURN_IF_ERROR(expect_aligned(op, "cache.scales", c.scales, 2));
      return Status::Ok();
  }
  return invalid(op, "unknown KVLayout " + std::to_string(static_cast<int>(c.layout)));
}

// A [rows, 512] bf16/f32 activation tensor the kernels read or write with 16-byte vectors.
static Status check_rows512(const char* op, const char* name, const TensorView& t, std::initializer_list<DType> dt,
                            int64_t rows) {
  DSV4_RETURN_IF_ERROR(expect_well_formed(op, name, t));
  DSV4_RETURN_IF_ERROR(expect_dtype(op, name, t, dt));
  DSV4_RETURN_IF_ERROR(expect_shape(op, name, t, {rows, kKVDim}));
  DSV4_RETURN_IF_ERROR(expect_inner_contiguous(op, name, t));
  DSV4_RETURN_IF_ERROR(expect_aligned(op, name, t, 16));
  if (t.shape[0] > 1 && (t.strides[0] * dtype_bits(t.dtype) / 8) % 16 != 0)
    return arg_error(op, name, "have a row stride that is a multiple of 16 bytes", t);
  return Status::Ok();
}

}  // namespace core

Status kv_cache_insert(const KVInsertParams& p, Stream stream) {
  constexpr const char* op = "kv_cache_insert";
  DSV4_RETURN_IF_ERROR(core::check_kv_cache(op, p.cache));
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(op, "slot_mapping", p.slot_mapping));
  DSV4_RETURN_IF_ERROR(core::expect_dtype(op, "slot_mapping", p.slot_mapping, {DType::I32, DType::I64}));
  DSV4_RETURN_IF_ERROR(core::expect_ndim(op, "slot_mapping", p.slot_mapping, 1));
  DSV4_RETURN_IF_ERROR(core::expect_contiguous(op, "slot_mapping", p.slot_mapping));
  DSV4_RETURN_IF_ERROR(core::check_rows512(op, "kv", p.kv, {DType::BF16}, p.slot_mapping.shape[0]));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(op, "cache.data", p.cache.data, "kv", p.kv));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(op, "cache.scales", p.cache.scales, "kv", p.kv));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(op, "cache.data", p.cache.data, "slot_mapping", p.slot_mapping));
  Device dev;
  DSV4_RETURN_IF_ERROR(core::common_device(op,
                                           {{"kv", &p.kv},
                                            {"slot_mapping", &p.slot_mapping},
                                            {"cache.data", &p.cache.data},
                                            {"cache.scales", &p.cache.scales}},
                                           &dev));
  if (dev.type == DeviceType::kCPU) return cpu::kv_cache_insert(p);
  return cuda::kv_cache_insert(p, stream);
}

Status kv_cache_gather(const KVGatherParams& p, Stream stream) {
  constexpr const char* op = "kv_cache_gather";
  DSV4_RETURN_IF_ERROR(core::check_kv_cache(op, p.cache));
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(op, "indices", p.indices));
  DSV4_RETURN_IF_ERROR(core::expect_dtype(op, "indices", p.indices, {DType::I32}));
  DSV4_RETURN_IF_ERROR(core::expect_ndim(op, "indices", p.indices, 1));
  DSV4_RETURN_IF_ERROR(core::expect_contiguous(op, "indices", p.indices));
  DSV4_RETURN_IF_ERROR(core::check_rows512(op, "out", p.out, {DType::BF16, DType::F32}, p.indices.shape[0]));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(op, "out", p.out, "cache.data", p.cache.data));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(op, "out", p.out, "cache.scales", p.cache.scales));
  DSV4_RETURN_IF_ERROR(core::expect_disjoint(op, "out", p.out, "indices", p.indices));
  Device dev;
  DSV4_RETURN_IF_ERROR(core::common_device(op,
                                           {{"indices", &p.indices},
                                            {"out", &p.out},
                                            {"cache.data", &p.cache.data},
                                            {"cache.scales", &p.cache.scales}},
                                           &dev));
  if (dev.type == DeviceType::kCPU) return cpu::kv_cache_gather(p);
  return cuda::kv_cache_gather(p, stream);
}

}  // namespace dsv4
