// Validation and dispatch for sparse decode attention (include/dsv4/ops/sparse_decode.h).
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "backend/backends.h"
#include "backend/sparse_decode.h"
#include "core/kv_cache_check.h"
#include "core/validate.h"

namespace dsv4 {
namespace {

constexpr const char* kOp = "sparse_decode";
constexpr const char* kSwaOp = "swa_decode";

int64_t cache_pages(const KVCacheView& c) { return c.data.ndim > 0 ? c.data.shape[0] : 0; }

// One key set: its cache, its [B, s_q, K] indices and optional [B] / [B, s_q] lengths. `which` is
// "main" or "extra" and prefixes the argument names in errors.
Status check_key_set(const std::string& which, const KVCacheView& cache, const TensorView& idx,
                     const TensorView& len, int64_t B, int64_t s_q) {
  const std::string cache_op = std::string(kOp) + " (" + which + "_cache)";
  DSV4_RETURN_IF_ERROR(core::check_kv_cache(cache_op.c_str(), cache));
  // Indices are int32 slots: every slot of the cache must be addressable, or part of it could
  // never be read and an index past it could not be told apart from an overflow.
  const int64_t pages = cache_pages(cache);
  if (pages > std::numeric_limits<int32_t>::max() / cache.page_size)
    return core::invalid(kOp, which + "_cache holds " + std::to_string(pages) + " pages of " +
                                  std::to_string(cache.page_size) +
                                  " tokens: more slots than i32 indices can address (at most 2^31 - 1)");
  const std::string iname = which + "_indices", lname = which + "_lengths";
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, iname.c_str(), idx));
  DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, iname.c_str(), idx, {DType::I32}));
  DSV4_RETURN_IF_ERROR(core::expect_shape(kOp, iname.c_str(), idx, {B, s_q, -1}));
  DSV4_RETURN_IF_ERROR(core::expect_aligned(kOp, iname.c_str(), idx, 4));
  if (len.defined()) {
    DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, lname.c_str(), len));
    DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, lname.c_str(), len, {DType::I32}));
    if (len.ndim == 1) DSV4_RETURN_IF_ERROR(core::expect_shape(kOp, lname.c_str(), len, {B}));
    else DSV4_RETURN_IF_ERROR(core::expect_shape(kOp, lname.c_str(), len, {B, s_q}));
    DSV4_RETURN_IF_ERROR(core::expect_aligned(kOp, lname.c_str(), len, 4));
  }
  return Status::Ok();
}

// Every tensor the op reads, by argument name (the workspace too: outputs must not alias it).
std::array<core::Arg, 11> named_inputs(const SparseDecodeParams& p) {
  return {{{"q", &p.q},
           {"main_cache.data", &p.main_cache.data},
           {"main_cache.scales", &p.main_cache.scales},
           {"main_indices", &p.main_indices},
           {"main_lengths", &p.main_lengths},
           {"extra_cache.data", &p.extra_cache.data},
           {"extra_cache.scales", &p.extra_cache.scales},
           {"extra_indices", &p.extra_indices},
           {"extra_lengths", &p.extra_lengths},
           {"attn_sink", &p.attn_sink},
           {"workspace", &p.workspace}}};
}

Status check_outputs_disjoint(const char* out_name, const TensorView& o, const SparseDecodeParams& p) {
  for (const core::Arg& in : named_inputs(p)) DSV4_RETURN_IF_ERROR(core::expect_disjoint(kOp, out_name, o, in.name, *in.t));
  return Status::Ok();
}

bool has_extra(const SparseDecodeParams& p) {
  return p.extra_cache.data.defined() || p.extra_indices.defined() || p.extra_lengths.defined();
}

Status validate(const SparseDecodeParams& p, Device* dev) {
  // q first: it fixes B, s_q and H for everything else.
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, "q", p.q));
  DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, "q", p.q, {DType::BF16}));
  DSV4_RETURN_IF_ERROR(core::expect_shape(kOp, "q", p.q, {-1, -1, -1, kKVDim}));
  const int64_t B = p.q.shape[0], s_q = p.q.shape[1], H = p.q.shape[2];
  if (s_q < 1 || s_q > kSparseDecodeMaxQueryLen)
    return core::arg_error(kOp, "q", "have 1 to 4 query tokens per sequence (dim 1, s_q)", p.q);
  if (H < 1 || H > kSparseDecodeMaxHeads) return core::arg_error(kOp, "q", "have 1 to 128 heads (dim 2)", p.q);
  DSV4_RETURN_IF_ERROR(core::expect_inner_contiguous(kOp, "q", p.q));
  DSV4_RETURN_IF_ERROR(core::expect_aligned(kOp, "q", p.q, 16));
  for (int d = 0; d < 3; ++d)
    if (p.q.shape[d] > 1 && p.q.strides[d] % 8 != 0)
      return core::arg_error(kOp, "q", "have outer strides that are multiples of 8 elements (16-byte rows)", p.q);

  DSV4_RETURN_IF_ERROR(check_key_set("main", p.main_cache, p.main_indices, p.main_lengths, B, s_q));
  if (has_extra(p)) {
    if (!p.extra_cache.data.defined() || !p.extra_indices.defined())
      return core::invalid(kOp, "an extra key set needs both extra_cache.data and extra_indices (got only one)");
    DSV4_RETURN_IF_ERROR(check_key_set("extra", p.extra_cache, p.extra_indices, p.extra_lengths, B, s_q));
  }

  if (p.attn_sink.defined()) {
    DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, "attn_sink", p.attn_sink));
    DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, "attn_sink", p.attn_sink, {DType::F32}));
    DSV4_RETURN_IF_ERROR(core::expect_shape(kOp, "attn_sink", p.attn_sink, {H}));
    DSV4_RETURN_IF_ERROR(core::expect_aligned(kOp, "attn_sink", p.attn_sink, 4));
  }
  if (!std::isfinite(p.softmax_scale))
    return core::invalid(kOp, "softmax_scale must be finite, got " + std::to_string(p.softmax_scale));

  DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, "out", p.out));
  DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, "out", p.out, {DType::BF16}));
  DSV4_RETURN_IF_ERROR(core::expect_shape(kOp, "out", p.out, {B, s_q, H, kKVDim}));
  DSV4_RETURN_IF_ERROR(core::expect_contiguous(kOp, "out", p.out));
  DSV4_RETURN_IF_ERROR(core::expect_aligned(kOp, "out", p.out, 16));
  DSV4_RETURN_IF_ERROR(check_outputs_disjoint("out", p.out, p));
  if (p.lse.defined()) {
    DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, "lse", p.lse));
    DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, "lse", p.lse, {DType::F32}));
    DSV4_RETURN_IF_ERROR(core::expect_shape(kOp, "lse", p.lse, {B, s_q, H}));
    DSV4_RETURN_IF_ERROR(core::expect_contiguous(kOp, "lse", p.lse));
    DSV4_RETURN_IF_ERROR(core::expect_aligned(kOp, "lse", p.lse, 4));
    DSV4_RETURN_IF_ERROR(check_outputs_disjoint("lse", p.lse, p));
    DSV4_RETURN_IF_ERROR(core::expect_disjoint(kOp, "lse", p.lse, "out", p.out));
  }

  std::vector<core::Arg> all;
  for (const core::Arg& in : named_inputs(p)) all.push_back(in);
  all.push_back({"out", &p.out});
  all.push_back({"lse", &p.lse});
  DSV4_RETURN_IF_ERROR(core::common_device(kOp, all.data(), all.size(), dev));

  if (dev->type == DeviceType::kCUDA) {
    const int64_t need = cuda::sparse_decode_workspace_size(p);
    if (need > 0) {
      DSV4_RETURN_IF_ERROR(core::expect_well_formed(kOp, "workspace", p.workspace));
      DSV4_RETURN_IF_ERROR(core::expect_dtype(kOp, "workspace", p.workspace, {DType::U8}));
      DSV4_RETURN_IF_ERROR(core::expect_contiguous(kOp, "workspace", p.workspace));
      DSV4_RETURN_IF_ERROR(core::expect_aligned(kOp, "workspace", p.workspace, 16));
      if (p.workspace.numel() < need)
        return core::arg_error(kOp, "workspace",
                               "hold at least " + std::to_string(need) + " bytes (sparse_decode_workspace_size)",
                               p.workspace);
    }
  }
  return Status::Ok();
}

// The SWA entry as a sparse_decode call: [T, ...] tensors gain an s_q = 1 dimension.
TensorView insert_unit_dim1(const TensorView& t) {
  if (!t.defined() || t.ndim < 1 || t.ndim >= kMaxDims) return t;
  TensorView v = t;
  v.ndim = t.ndim + 1;
  v.shape[0] = t.shape[0];
  v.strides[0] = t.strides[0];
  v.shape[1] = 1;
  v.strides[1] = t.ndim > 1 ? t.strides[1] * t.shape[1] : 1;
  for (int d = 1; d < t.ndim; ++d) {
    v.shape[d + 1] = t.shape[d];
    v.strides[d + 1] = t.strides[d];
  }
  return v;
}

Status swa_to_sparse(const SwaDecodeParams& s, SparseDecodeParams* p) {
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(kSwaOp, "q", s.q));
  DSV4_RETURN_IF_ERROR(core::expect_ndim(kSwaOp, "q", s.q, 3));
  if (s.cache.layout != KVLayout::kPerTokenScale)
    return core::invalid(kSwaOp, "cache.layout must be KVLayout::kPerTokenScale (the prototype's layout)");
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(kSwaOp, "swa_indices", s.swa_indices));
  DSV4_RETURN_IF_ERROR(core::expect_shape(kSwaOp, "swa_indices", s.swa_indices, {s.q.shape[0], 128}));
  DSV4_RETURN_IF_ERROR(core::expect_well_formed(kSwaOp, "swa_lens", s.swa_lens));
  DSV4_RETURN_IF_ERROR(core::expect_shape(kSwaOp, "swa_lens", s.swa_lens, {s.q.shape[0]}));
  p->q = insert_unit_dim1(s.q);
  p->main_cache = s.cache;
  p->main_indices = insert_unit_dim1(s.swa_indices);
  p->main_lengths = s.swa_lens;
  p->softmax_scale = s.softmax_scale;
  p->out = insert_unit_dim1(s.out);
  p->lse = insert_unit_dim1(s.lse);
  p->workspace = s.workspace;
  return Status::Ok();
}

}  // namespace

int64_t sparse_decode_workspace_size(const SparseDecodeParams& p) {
  if (p.q.device.type != DeviceType::kCUDA || p.q.ndim != 4) return 0;
  return cuda::sparse_decode_workspace_size(p);
}

Status sparse_decode(const SparseDecodeParams& p, Stream stream) {
  Device dev;
  DSV4_RETURN_IF_ERROR(validate(p, &dev));
  if (p.q.shape[0] == 0) return Status::Ok();
  if (dev.type == DeviceType::kCPU) return cpu::sparse_decode(p);
  return cuda::sparse_decode(p, stream);
}

int64_t swa_decode_workspace_size(const SwaDecodeParams& s) {
  SparseDecodeParams p;
  if (!swa_to_sparse(s, &p).ok()) return 0;
  return sparse_decode_workspace_size(p);
}

Status swa_decode(const SwaDecodeParams& s, Stream stream) {
  SparseDecodeParams p;
  DSV4_RETURN_IF_ERROR(swa_to_sparse(s, &p));
  return sparse_decode(p, stream);
}

}  // namespace dsv4
