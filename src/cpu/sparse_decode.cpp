// CPU reference of sparse decode attention: decode every key with the software codecs, accumulate
// in double, round once. Deliberately naive: it is the oracle the CUDA kernel is tested against.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backend/sparse_decode.h"
#include "dsv4/numerics.h"

namespace dsv4::cpu {
namespace {

int64_t at(const TensorView& t, int64_t i0, int64_t i1, int64_t i2) {
  return i0 * t.strides[0] + i1 * t.strides[1] + i2 * t.strides[2];
}

int32_t row_length(const TensorView& len, int64_t b, int64_t s, int64_t k) {
  if (!len.defined()) return static_cast<int32_t>(k);
  const int32_t* p = len.ptr<const int32_t>();
  return len.ndim == 1 ? p[b * len.strides[0]] : p[b * len.strides[0] + s * len.strides[1]];
}

// Real value of one cache slot (spec 3.5 / 3.6); false when the slot is outside the cache.
bool decode_slot(const KVCacheView& c, int64_t slot, double* key) {
  const int64_t P = c.page_size, pages = c.data.shape[0];
  if (slot < 0 || slot >= pages * P) return false;
  const int64_t page = slot / P, off = slot % P;
  if (c.layout == KVLayout::kModel1) {
    const uint8_t* base = c.data.ptr<const uint8_t>() + page * model1_page_bytes(P);
    const uint8_t* tok = base + off * kModel1DataBytes;
    const uint8_t* sc = base + P * kModel1DataBytes + off * 8;
    for (int i = 0; i < kKVNopeDim; ++i)
      key[i] = static_cast<double>(num::e4m3_to_float(tok[i])) * num::ue8m0_to_float(sc[i / 64]);
    for (int i = 0; i < kKVRopeDim; ++i) {
      uint16_t h;
      std::memcpy(&h, tok + kKVNopeDim + 2 * i, 2);
      key[kKVNopeDim + i] = num::bf16_to_float(h);
    }
  } else {
    const uint8_t* tok = c.data.ptr<const uint8_t>() + (page * P + off) * kKVDim;
    const double scale = num::bf16_to_float(c.scales.ptr<const uint16_t>()[page * P + off]);
    for (int i = 0; i < kKVDim; ++i) key[i] = static_cast<double>(num::e4m3_to_float(tok[i])) * scale;
  }
  return true;
}

// Appends the valid keys of one index row of one key set.
void gather(const KVCacheView& c, const TensorView& idx, const TensorView& len, int64_t b, int64_t s,
            std::vector<double>* keys) {
  const int64_t K = idx.shape[2];
  int64_t n = row_length(len, b, s, K);
  if (n > K) n = K;
  const int32_t* ip = idx.ptr<const int32_t>();
  std::vector<double> key(kKVDim);
  for (int64_t j = 0; j < n; ++j) {
    const int32_t slot = ip[at(idx, b, s, j)];
    if (!decode_slot(c, slot, key.data())) continue;  // -1 or out of the cache: logit -inf
    keys->insert(keys->end(), key.begin(), key.end());
  }
}

// The reference; with rss / abs_sum non-null also, per output element, sqrt(sum_j (p_j v_ji)^2) and
// sum_j |p_j v_ji|, times the sink factor (see sparse_decode_weight_rss).
Status run(const SparseDecodeParams& p, std::vector<float>* rss, std::vector<float>* abs_sum) {
  const int64_t B = p.q.shape[0], S = p.q.shape[1], H = p.q.shape[2];
  const uint16_t* q = p.q.ptr<const uint16_t>();
  uint16_t* out = p.out.ptr<uint16_t>();
  float* lse_out = p.lse.defined() ? p.lse.ptr<float>() : nullptr;
  const bool extra = p.extra_indices.defined();
  std::vector<double> keys, logits, acc(kKVDim), acc_sq(kKVDim), acc_abs(kKVDim);
  if (rss) rss->assign(static_cast<size_t>(B * S * H * kKVDim), 0.0f);
  if (abs_sum) abs_sum->assign(static_cast<size_t>(B * S * H * kKVDim), 0.0f);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t s = 0; s < S; ++s) {
      keys.clear();
      gather(p.main_cache, p.main_indices, p.main_lengths, b, s, &keys);
      if (extra) gather(p.extra_cache, p.extra_indices, p.extra_lengths, b, s, &keys);
      const int64_t nk = static_cast<int64_t>(keys.size()) / kKVDim;
      logits.resize(nk);
      for (int64_t h = 0; h < H; ++h) {
        const uint16_t* qr = q + b * p.q.strides[0] + s * p.q.strides[1] + h * p.q.strides[2];
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < nk; ++j) {
          double dot = 0;
          for (int i = 0; i < kKVDim; ++i) dot += static_cast<double>(num::bf16_to_float(qr[i])) * keys[j * kKVDim + i];
          logits[j] = dot * static_cast<double>(p.softmax_scale);
          if (logits[j] > mx) mx = logits[j];
        }
        double lse, factor = 1.0;
        std::fill(acc.begin(), acc.end(), 0.0);
        std::fill(acc_sq.begin(), acc_sq.end(), 0.0);
        std::fill(acc_abs.begin(), acc_abs.end(), 0.0);
        if (nk == 0) {
          lse = std::numeric_limits<double>::infinity();
        } else {
          double sum = 0;
          for (int64_t j = 0; j < nk; ++j) sum += std::exp(logits[j] - mx);
          lse = mx + std::log(sum);
          for (int64_t j = 0; j < nk; ++j) {
            const double w = std::exp(logits[j] - mx) / sum;
            for (int i = 0; i < kKVDim; ++i) {
              acc[i] += w * keys[j * kKVDim + i];
              acc_sq[i] += (w * keys[j * kKVDim + i]) * (w * keys[j * kKVDim + i]);
              acc_abs[i] += std::fabs(w * keys[j * kKVDim + i]);
            }
          }
          if (p.attn_sink.defined()) {
            const double sink = p.attn_sink.ptr<const float>()[h * p.attn_sink.strides[0]];
            factor = 1.0 / (1.0 + std::exp(sink - lse));
          }
        }
        const int64_t row = (b * S + s) * H + h;
        for (int i = 0; i < kKVDim; ++i) out[row * kKVDim + i] = num::bf16_from_float(static_cast<float>(acc[i] * factor));
        if (lse_out) lse_out[row] = static_cast<float>(lse);
        if (rss)
          for (int i = 0; i < kKVDim; ++i) (*rss)[row * kKVDim + i] = static_cast<float>(std::sqrt(acc_sq[i]) * factor);
        if (abs_sum)
          for (int i = 0; i < kKVDim; ++i) (*abs_sum)[row * kKVDim + i] = static_cast<float>(acc_abs[i] * factor);
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Status sparse_decode(const SparseDecodeParams& p) { return run(p, nullptr, nullptr); }

Status sparse_decode_weight_rss(const SparseDecodeParams& p, std::vector<float>* rss, std::vector<float>* abs_sum) {
  return run(p, rss, abs_sum);
}

}  // namespace dsv4::cpu
