// CUDA backend of the KV-cache ops: one warp per token / output row. Arguments arrive validated
// by src/core/kv_cache.cpp (shapes, 16-byte aligned rows, contiguous cache).
#include "backend/backends.h"
#include "core/validate.h"
#include "cuda/common/check.h"
#include "cuda/common/device_props.h"
#include "cuda/kv_cache/kernel.cuh"

namespace dsv4::cuda {
namespace {

kv::CacheRef cache_ref(const KVCacheView& c) {
  kv::CacheRef r{};
  r.data = static_cast<uint8_t*>(c.data.data);
  r.scales = c.layout == KVLayout::kPerTokenScale ? static_cast<uint16_t*>(c.scales.data) : nullptr;
  r.page_size = c.page_size;
  r.page_bytes = c.layout == KVLayout::kModel1 ? model1_page_bytes(c.page_size) : c.page_size * kKVDim;
  r.num_slots = c.data.shape[0] * c.page_size;
  r.slots_32bit = r.num_slots <= (int64_t{1} << 32) && c.page_size <= (int64_t{1} << 31);
  r.page_div = FastDiv(static_cast<uint32_t>(r.slots_32bit ? c.page_size : 1));
  return r;
}

Status check_grid(const char* op, int64_t rows) {
  if (kv::grid_for(rows) > INT32_MAX)
    return {StatusCode::kUnsupported, std::string(op) + ": " + std::to_string(rows) + " rows exceed one launch"};
  return Status::Ok();
}

}  // namespace

Status kv_cache_insert(const KVInsertParams& p, Stream s) {
  constexpr const char* op = "kv_cache_insert";
  const int64_t T = p.kv.shape[0];
  if (T == 0) return Status::Ok();
  DSV4_RETURN_IF_ERROR(check_grid(op, T));
  ScopedDevice guard;
  DSV4_RETURN_IF_ERROR(guard.enter(p.kv.device.index, op));
  kv::InsertArgs a{};
  a.kv = static_cast<const uint8_t*>(p.kv.data);
  a.kv_row_bytes = p.kv.strides[0] * 2;
  a.slots = p.slot_mapping.data;
  a.slots_i64 = p.slot_mapping.dtype == DType::I64;
  a.tokens = T;
  a.cache = cache_ref(p.cache);
  const auto grid = static_cast<unsigned>(kv::grid_for(T));
  const auto stream = static_cast<cudaStream_t>(s);
  if (p.cache.layout == KVLayout::kModel1) kv::model1_insert_kernel<<<grid, kv::kThreads, 0, stream>>>(a);
  else kv::per_token_insert_kernel<<<grid, kv::kThreads, 0, stream>>>(a);
  return launch_status(op, "kv insert kernel");
}

Status kv_cache_gather(const KVGatherParams& p, Stream s) {
  constexpr const char* op = "kv_cache_gather";
  const int64_t N = p.indices.shape[0];
  if (N == 0) return Status::Ok();
  DSV4_RETURN_IF_ERROR(check_grid(op, N));
  ScopedDevice guard;
  DSV4_RETURN_IF_ERROR(guard.enter(p.out.device.index, op));
  kv::GatherArgs a{};
  a.indices = static_cast<const int32_t*>(p.indices.data);
  a.rows = N;
  a.out = static_cast<uint8_t*>(p.out.data);
  a.out_row_bytes = p.out.strides[0] * (dtype_bits(p.out.dtype) / 8);
  a.cache = cache_ref(p.cache);
  const auto grid = static_cast<unsigned>(kv::grid_for(N, kv::kGatherRows));
  const auto stream = static_cast<cudaStream_t>(s);
  const bool bf16 = p.out.dtype == DType::BF16;
  if (p.cache.layout == KVLayout::kModel1) {
    if (bf16) kv::model1_gather_kernel<kv::Bf16><<<grid, kv::kThreads, 0, stream>>>(a);
    else kv::model1_gather_kernel<float><<<grid, kv::kThreads, 0, stream>>>(a);
  } else {
    if (bf16) kv::per_token_gather_kernel<kv::Bf16><<<grid, kv::kThreads, 0, stream>>>(a);
    else kv::per_token_gather_kernel<float><<<grid, kv::kThreads, 0, stream>>>(a);
  }
  return launch_status(op, "kv gather kernel");
}

}  // namespace dsv4::cuda
