// Sparse decode attention on sm_90: one CTA per (query token, block of <= 64 heads, key split).
//
// Per 64-key tile: cp.async gathers the raw FP8 rows of the tile's slots into smem (issued one tile
// ahead, so the gather overlaps the tensor-core work of the tile before), the CTA dequantizes them
// once into a bf16 key tile shared by all its heads, then mma.sync computes S = Q K^T, an online
// softmax in fp32 turns S into P (bf16), and mma.sync accumulates O += P K (K = V) in registers.
//
// Exactness of the key tile: a MODEL1 value is e4m3 * 2^k, which bf16 holds exactly; a per-token
// value e4m3 * bf16 scale does not, so that layout keeps the raw e4m3 in the tile and applies the
// token's scale in fp32: to the logit, and to P before it is rounded to bf16.
//
// Invalid keys (index -1, a slot past the cache, a position past the row's length) are never
// loaded: their tile rows are zeroed and their logits set to -inf, so NaN bytes on pages no index
// names cannot leak. Split CTAs write normalised partial outputs and log2-sum-exps to the
// workspace and sparse_decode_combine merges them; an unsplit CTA finishes the rows itself.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/sparse_decode/config.h"

namespace dsv4::cuda::sdec {

struct KeySet {
  const uint8_t* data = nullptr;     // cache bytes
  const uint16_t* scales = nullptr;  // per-token layout: bf16 [slots]
  int64_t page_bytes = 0;            // MODEL1 page stride
  int32_t page_size = 1;
  int32_t num_slots = 0;             // pages * page_size, < 2^31 (validated)
  int32_t model1 = 1;                // layout: 1 = MODEL1, 0 = per-token scale
  const int32_t* idx = nullptr;      // [B, s_q, K]
  int64_t idx_sb = 0, idx_ss = 0, idx_sk = 1;
  int32_t K = 0;
  const int32_t* len = nullptr;      // optional [B] or [B, s_q]
  int64_t len_sb = 0, len_ss = 0;
};

struct Args {
  const __nv_bfloat16* q = nullptr;  // [B, s_q, H, 512]
  int64_t q_sb = 0, q_ss = 0, q_sh = 0;
  int32_t S = 1, H = 1;
  KeySet set[2];                     // main, extra
  const float* sink = nullptr;       // optional [H]
  float scale_log2 = 0;              // softmax_scale * log2(e)
  __nv_bfloat16* out = nullptr;      // [B, s_q, H, 512]
  float* lse = nullptr;              // optional [B, s_q, H]
  float* ws_o = nullptr;             // split partials (config.h)
  float* ws_lse = nullptr;
  Schedule sched;
};

// ---- small PTX wrappers ----
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async8(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x2(uint32_t addr, uint32_t (&r)[2]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// D += A (16x16 bf16, row) * B (16x8 bf16, col), f32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two e4m3 codes (low byte first) to two floats, exactly (every e4m3 value is an f16).
__device__ __forceinline__ float2 e4m3x2_to_f2(uint32_t codes) {
  uint32_t h2;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(h2) : "h"(static_cast<unsigned short>(codes & 0xFFFF)));
  __half2 h = *reinterpret_cast<__half2*>(&h2);
  return __half22float2(h);
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Byte offset of 16-byte chunk `c` of row `r` in a tile whose rows are `chunks` chunks long: the
// chunk index is XORed with the row's low bits so the 8 rows an ldmatrix reads hit 8 bank groups.
__device__ __forceinline__ uint32_t swz(int r, int c, int chunks) { return r * chunks * 16 + ((c ^ (r & 7)) * 16); }

struct Smem {
  static constexpr int kQBytes = kMaxRowsPerCta * kDim * 2;
  static constexpr int kKBytes = kTileKeys * kDim * 2;
  static constexpr int kSBytes = kMaxRowsPerCta * kScoreStride * 4;
  static constexpr int kPBytes = kMaxRowsPerCta * kTileKeys * 2;
  static constexpr int kOffK = kQBytes;
  static constexpr int kOffRaw = kOffK + kKBytes;
  static constexpr int kOffS = kOffRaw + kRawBytes;
  static constexpr int kOffP = kOffS + kSBytes;
  static constexpr int kOffVec = kOffP + kPBytes;  // six float/int arrays of 64
  static constexpr int kTotal = kOffVec + 6 * 64 * 4;
  static_assert(kOffRaw % 16 == 0 && kOffS % 16 == 0 && kOffP % 16 == 0, "16-byte aligned regions");
  static_assert(kTotal <= 227 * 1024, "fits the sm_90 smem carve-out");
};

template <int RG>
__global__ void __launch_bounds__(kThreads, 1) sparse_decode_kernel(const Args a) {
  static_assert(RG == 1 || RG == 2 || RG == 4, "16, 32 or 64 rows a CTA");
  constexpr int kRows = 16 * RG;
  constexpr int kSNt = RG;                 // 8-key n-tiles per warp in S = Q K^T
  constexpr int kKeysPerWarp = 8 * kSNt;   // warps split the 64 keys kWarps / RG ways
  constexpr int kDimsPerWarp = 64 * RG;    // warps split the 512 dims kWarps / RG ways in O += P K
  constexpr int kONt = kDimsPerWarp / 8;
  constexpr int kTpr = kThreads / kRows;   // softmax threads per row
  constexpr int kKpt = kTileKeys / kTpr;   // softmax keys per thread

  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* sQ = smem;
  uint8_t* sK = smem + Smem::kOffK;
  uint8_t* sRaw = smem + Smem::kOffRaw;
  float* sS = reinterpret_cast<float*>(smem + Smem::kOffS);
  uint8_t* sP = smem + Smem::kOffP;
  float* s_kscale = reinterpret_cast<float*>(smem + Smem::kOffVec);
  int* s_kvalid = reinterpret_cast<int*>(s_kscale + 64);
  int* s_rvalid = s_kvalid + 64;
  float* s_alpha = reinterpret_cast<float*>(s_rvalid + 64);
  float* s_m = s_alpha + 64;
  float* s_l = s_m + 64;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const Schedule& sc = a.sched;
  int64_t cta = blockIdx.x;
  const int hb = static_cast<int>(cta % sc.head_blocks);
  cta /= sc.head_blocks;
  const int split = static_cast<int>(cta % sc.num_splits);
  const int64_t tok = cta / sc.num_splits;  // b * S + s
  const int64_t b = tok / a.S;
  const int s = static_cast<int>(tok % a.S);
  const int head0 = hb * kMaxRowsPerCta;
  const int nh = min(kMaxRowsPerCta, a.H - head0);

  // ---- Q rows into smem (zeros past the last head) ----
  {
    const __nv_bfloat16* qrow0 = a.q + b * a.q_sb + s * a.q_ss + static_cast<int64_t>(head0) * a.q_sh;
    for (int i = tid; i < kRows * 64; i += kThreads) {
      const int r = i >> 6, c = i & 63;
      uint8_t* dst = sQ + swz(r, c, 64);
      if (r < nh) cp_async16(dst, qrow0 + r * a.q_sh + c * 8);
      else *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
  }

  // Effective lengths: positions at or past them are invalid, and whole tiles past them are skipped.
  int len[2];
#pragma unroll
  for (int w = 0; w < 2; ++w) {
    const KeySet& ks = a.set[w];
    int n = ks.K;
    if (ks.len) {
      const int l = ks.len[b * ks.len_sb + s * ks.len_ss];
      n = max(0, min(n, l));
    }
    len[w] = n;
  }
  const int t_begin = split * sc.tiles_per_split;
  const int t_end = min(t_begin + sc.tiles_per_split, sc.tiles_main + sc.tiles_extra);
  auto next_live = [&](int t) {
    if (t < sc.tiles_main) {
      if (t * kTileKeys < len[0]) return min(t, t_end);
      t = sc.tiles_main;
    }
    if (t >= t_end) return t_end;
    return ((t - sc.tiles_main) * kTileKeys < len[1]) ? t : t_end;
  };

  float pend_scale = 1.0f;  // per-token layout: the scale of key `tid` of the tile in flight

  // Gathers the raw bytes of tile t (cp.async) and its validity flags.
  auto issue = [&](int t) {
    const int w = t < sc.tiles_main ? 0 : 1;
    const KeySet& ks = a.set[w];
    const int pos0 = (w == 0 ? t : t - sc.tiles_main) * kTileKeys;
    const int32_t* irow = ks.idx + b * ks.idx_sb + s * ks.idx_ss;
    auto slot_of = [&](int key) {
      const int pos = pos0 + key;
      if (pos >= len[w]) return -1;
      const int32_t v = __ldg(irow + static_cast<int64_t>(pos) * ks.idx_sk);
      return (v >= 0 && v < ks.num_slots) ? v : -1;
    };
    if (ks.model1) {
      // 36 data chunks of 16 bytes and one 8-byte scale chunk a key.
      for (int i = tid; i < kTileKeys * 37; i += kThreads) {
        const int key = i / 37, c = i - key * 37;
        const int slot = slot_of(key);
        if (c == 0) s_rvalid[key] = slot >= 0;
        if (slot < 0) continue;
        const int page = slot / ks.page_size, off = slot - page * ks.page_size;
        const uint8_t* pb = ks.data + static_cast<int64_t>(page) * ks.page_bytes;
        if (c < 36) cp_async16(sRaw + key * 576 + c * 16, pb + off * 576 + c * 16);
        else cp_async8(sRaw + kTileKeys * 576 + key * 8, pb + static_cast<int64_t>(ks.page_size) * 576 + off * 8);
      }
      pend_scale = 1.0f;
    } else {
      for (int i = tid; i < kTileKeys * 32; i += kThreads) {
        const int key = i >> 5, c = i & 31;
        const int slot = slot_of(key);
        if (c == 0) s_rvalid[key] = slot >= 0;
        if (slot < 0) continue;
        cp_async16(sRaw + key * 512 + c * 16, ks.data + static_cast<int64_t>(slot) * 512 + c * 16);
      }
      if (tid < kTileKeys) {
        const int slot = slot_of(tid);
        pend_scale = slot >= 0 ? __bfloat162float(__ushort_as_bfloat16(__ldg(ks.scales + slot))) : 0.0f;
      }
    }
  };

  // Raw tile -> bf16 key tile (swizzled rows of 64 chunks), key scales and validity.
  auto dequant = [&](int t) {
    const bool model1 = a.set[t < sc.tiles_main ? 0 : 1].model1;
    if (tid < kTileKeys) {
      s_kvalid[tid] = s_rvalid[tid];
      s_kscale[tid] = pend_scale;
    }
    for (int i = tid; i < kTileKeys * 64; i += kThreads) {
      const int key = i >> 6, c = i & 63;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (s_rvalid[key]) {
        if (model1) {
          if (c < 56) {
            const uint2 codes = *reinterpret_cast<const uint2*>(sRaw + key * 576 + c * 8);
            const uint8_t e = sRaw[kTileKeys * 576 + key * 8 + (c >> 3)];
            // 2^(e - 127) built from bits (exact; e = 0 is the subnormal 2^-127, 0xFF the NaN scale)
            const float scale = e == 0xFF ? __uint_as_float(0x7FC00000u)
                                          : (e == 0 ? __uint_as_float(0x00400000u) : __uint_as_float(uint32_t(e) << 23));
            const float2 f0 = e4m3x2_to_f2(codes.x), f1 = e4m3x2_to_f2(codes.x >> 16);
            const float2 f2 = e4m3x2_to_f2(codes.y), f3 = e4m3x2_to_f2(codes.y >> 16);
            v.x = pack_bf16(f0.x * scale, f0.y * scale);
            v.y = pack_bf16(f1.x * scale, f1.y * scale);
            v.z = pack_bf16(f2.x * scale, f2.y * scale);
            v.w = pack_bf16(f3.x * scale, f3.y * scale);
          } else {
            v = *reinterpret_cast<const uint4*>(sRaw + key * 576 + 448 + (c - 56) * 16);
          }
        } else {
          const uint2 codes = *reinterpret_cast<const uint2*>(sRaw + key * 512 + c * 8);
          const float2 f0 = e4m3x2_to_f2(codes.x), f1 = e4m3x2_to_f2(codes.x >> 16);
          const float2 f2 = e4m3x2_to_f2(codes.y), f3 = e4m3x2_to_f2(codes.y >> 16);
          v = make_uint4(pack_bf16(f0.x, f0.y), pack_bf16(f1.x, f1.y), pack_bf16(f2.x, f2.y), pack_bf16(f3.x, f3.y));
        }
      }
      *reinterpret_cast<uint4*>(sK + swz(key, c, 64)) = v;
    }
  };

  // Softmax state of row (tid / kTpr), identical in the kTpr threads that share the row.
  const int sm_row = tid / kTpr, sm_part = tid % kTpr;
  float m_run = -INFINITY, l_run = 0.0f;

  // O accumulators: warp rows [rg*16, rg*16+16), dims [dg*kDimsPerWarp, +kDimsPerWarp).
  const int rg = warp % RG, dg = warp / RG;
  float acc[kONt][4];
#pragma unroll
  for (int n = 0; n < kONt; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;

  int t = next_live(t_begin);
  if (t < t_end) issue(t);
  cp_async_commit();

  const uint32_t sQa = smem_addr(sQ), sKa = smem_addr(sK), sPa = smem_addr(sP);
  while (t < t_end) {
    cp_async_wait_all();
    __syncthreads();
    dequant(t);
    __syncthreads();
    const int tn = next_live(t + 1);
    if (tn < t_end) issue(tn);
    cp_async_commit();

    // ---- S = Q K^T for rows [rg*16, +16) and keys [kg*kKeysPerWarp, +kKeysPerWarp) ----
    {
      const int kg = warp / RG;
      const int key0 = kg * kKeysPerWarp;
      float sacc[kSNt][4];
#pragma unroll
      for (int n = 0; n < kSNt; ++n) sacc[n][0] = sacc[n][1] = sacc[n][2] = sacc[n][3] = 0.0f;
      const int a_row = rg * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      const int a_chunk = lane >> 4;
#pragma unroll 4
      for (int kk = 0; kk < kDim / 16; ++kk) {
        uint32_t af[4];
        ldsm_x4(sQa + swz(a_row, kk * 2 + a_chunk, 64), af);
        if constexpr (kSNt >= 2) {
#pragma unroll
          for (int np = 0; np < kSNt / 2; ++np) {
            uint32_t bf[4];
            const int key = key0 + np * 16 + (lane & 7) + (lane >> 4) * 8;
            ldsm_x4(sKa + swz(key, kk * 2 + ((lane >> 3) & 1), 64), bf);
            mma_bf16(sacc[2 * np], af, bf[0], bf[1]);
            mma_bf16(sacc[2 * np + 1], af, bf[2], bf[3]);
          }
        } else {
          uint32_t bf[2];
          const int key = key0 + (lane & 7);
          ldsm_x2(sKa + swz(key, kk * 2 + ((lane >> 3) & 1), 64), bf);
          mma_bf16(sacc[0], af, bf[0], bf[1]);
        }
      }
      const int r0 = rg * 16 + (lane >> 2);
#pragma unroll
      for (int n = 0; n < kSNt; ++n) {
        const int k0 = key0 + n * 8 + (lane & 3) * 2;
        const float f0 = a.scale_log2 * s_kscale[k0], f1 = a.scale_log2 * s_kscale[k0 + 1];
        const bool v0 = s_kvalid[k0], v1 = s_kvalid[k0 + 1];
        *reinterpret_cast<float2*>(sS + r0 * kScoreStride + k0) =
            make_float2(v0 ? sacc[n][0] * f0 : -INFINITY, v1 ? sacc[n][1] * f1 : -INFINITY);
        *reinterpret_cast<float2*>(sS + (r0 + 8) * kScoreStride + k0) =
            make_float2(v0 ? sacc[n][2] * f0 : -INFINITY, v1 ? sacc[n][3] * f1 : -INFINITY);
      }
    }
    __syncthreads();

    // ---- online softmax: row sm_row, keys sm_part + kTpr * j ----
    {
      float sv[kKpt];
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < kKpt; ++j) {
        sv[j] = sS[sm_row * kScoreStride + sm_part + kTpr * j];
        mx = fmaxf(mx, sv[j]);
      }
#pragma unroll
      for (int o = kTpr / 2; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_new = fmaxf(m_run, mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // keeps exp2 away from (-inf) - (-inf)
      const float alpha = exp2f(m_run - m_use);
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < kKpt; ++j) {
        const int key = sm_part + kTpr * j;
        const float p = exp2f(sv[j] - m_use);
        sum += p;
        const __nv_bfloat16 pb = __float2bfloat16_rn(p * s_kscale[key]);
        *reinterpret_cast<__nv_bfloat16*>(sP + swz(sm_row, key >> 3, 8) + (key & 7) * 2) = pb;
      }
#pragma unroll
      for (int o = kTpr / 2; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      l_run = l_run * alpha + sum;
      m_run = m_new;
      if (sm_part == 0) s_alpha[sm_row] = alpha;
    }
    __syncthreads();

    // ---- O = alpha * O + P K ----
    {
      const int r0 = rg * 16 + (lane >> 2);
      const float al0 = s_alpha[r0], al1 = s_alpha[r0 + 8];
#pragma unroll
      for (int n = 0; n < kONt; ++n) {
        acc[n][0] *= al0;
        acc[n][1] *= al0;
        acc[n][2] *= al1;
        acc[n][3] *= al1;
      }
      const int a_row = rg * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      const int b_key = (lane & 7) + ((lane >> 3) & 1) * 8;
      const int chunk0 = dg * kDimsPerWarp / 8 + (lane >> 4);
#pragma unroll
      for (int kk = 0; kk < kTileKeys / 16; ++kk) {
        uint32_t af[4];
        ldsm_x4(sPa + swz(a_row, kk * 2 + (lane >> 4), 8), af);
#pragma unroll
        for (int np = 0; np < kONt / 2; ++np) {
          uint32_t bf[4];
          ldsm_x4_trans(sKa + swz(kk * 16 + b_key, chunk0 + np * 2, 64), bf);
          mma_bf16(acc[2 * np], af, bf[0], bf[1]);
          mma_bf16(acc[2 * np + 1], af, bf[2], bf[3]);
        }
      }
    }
    t = tn;
  }
  cp_async_wait_all();  // a Q-only CTA (no live tile) still has its Q copies in flight

  if (sm_part == 0) {
    s_m[sm_row] = m_run;
    s_l[sm_row] = l_run;
  }
  __syncthreads();

  // ---- epilogue: rows r0 and r0 + 8 of this warp, dims of its n-tiles ----
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = rg * 16 + g + half * 8;
    if (r >= nh) continue;
    const int head = head0 + r;
    const int64_t row = tok * a.H + head;
    // Empty means no valid key (m stays -inf); a NaN logit leaves m finite and l NaN, so NaN
    // inputs still surface as NaN outputs instead of passing for an empty row.
    const float l = s_l[r], m = s_m[r];
    const bool empty = m == -INFINITY;
    if (sc.num_splits == 1) {
      float factor = 0.0f, lse_nat = INFINITY;
      if (!empty) {
        const float lse2 = m + log2f(l);
        factor = 1.0f / l;
        if (a.sink) factor *= 1.0f / (1.0f + exp2f(a.sink[head] * 1.4426950408889634f - lse2));
        lse_nat = lse2 * 0.6931471805599453f;
      }
      __nv_bfloat16* orow = a.out + row * kDim + dg * kDimsPerWarp + tq * 2;
#pragma unroll
      for (int n = 0; n < kONt; ++n)
        *reinterpret_cast<uint32_t*>(orow + n * 8) =
            pack_bf16(acc[n][half * 2] * factor, acc[n][half * 2 + 1] * factor);
      if (a.lse && dg == 0 && tq == 0) a.lse[row] = lse_nat;
    } else {
      const int64_t rows_total = sc.tokens * a.H;
      const float inv = empty ? 0.0f : 1.0f / l;
      float* orow = a.ws_o + (split * rows_total + row) * kDim + dg * kDimsPerWarp + tq * 2;
#pragma unroll
      for (int n = 0; n < kONt; ++n)
        *reinterpret_cast<float2*>(orow + n * 8) = make_float2(acc[n][half * 2] * inv, acc[n][half * 2 + 1] * inv);
      if (dg == 0 && tq == 0) a.ws_lse[split * rows_total + row] = empty ? -INFINITY : m + log2f(l);
    }
  }
}

// Merges the split partials of each row: one warp a row, 16 dims a lane.
__global__ void __launch_bounds__(256) sparse_decode_combine(const Args a) {
  const int64_t rows_total = a.sched.tokens * a.H;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 8 + (threadIdx.x >> 5);
  if (row >= rows_total) return;
  const int lane = threadIdx.x & 31;
  const int splits = a.sched.num_splits;
  float mx = -INFINITY;
  bool any = false;  // a NaN partial counts as non-empty so that it propagates
  for (int i = lane; i < splits; i += 32) {
    const float l = a.ws_lse[i * rows_total + row];
    mx = fmaxf(mx, l);
    any |= l != -INFINITY;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  any = __any_sync(0xffffffffu, any);
  const int head = static_cast<int>(row % a.H);
  __nv_bfloat16* orow = a.out + row * kDim;
  if (!any) {  // no valid key in any split
    for (int d = lane * 8; d < kDim; d += 256) *reinterpret_cast<uint4*>(orow + d) = make_uint4(0, 0, 0, 0);
    if (a.lse && lane == 0) a.lse[row] = INFINITY;
    return;
  }
  float sum = 0.0f;
  for (int i = lane; i < splits; i += 32) sum += exp2f(a.ws_lse[i * rows_total + row] - mx);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const float lse2 = mx + log2f(sum);
  float factor = 1.0f;
  if (a.sink) factor = 1.0f / (1.0f + exp2f(a.sink[head] * 1.4426950408889634f - lse2));
  float o[16];
#pragma unroll
  for (int j = 0; j < 16; ++j) o[j] = 0.0f;
  for (int i = 0; i < splits; ++i) {
    const float l = a.ws_lse[i * rows_total + row];
    if (l == -INFINITY) continue;  // an empty split wrote zeros; skipping also skips its work
    const float w = exp2f(l - lse2);
    const float* src = a.ws_o + (i * rows_total + row) * kDim;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float4 v = *reinterpret_cast<const float4*>(src + j * 128 + lane * 4);
      o[j * 4 + 0] += w * v.x;
      o[j * 4 + 1] += w * v.y;
      o[j * 4 + 2] += w * v.z;
      o[j * 4 + 3] += w * v.w;
    }
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    uint2 pk;
    pk.x = pack_bf16(o[j * 4 + 0] * factor, o[j * 4 + 1] * factor);
    pk.y = pack_bf16(o[j * 4 + 2] * factor, o[j * 4 + 3] * factor);
    *reinterpret_cast<uint2*>(orow + j * 128 + lane * 4) = pk;
  }
  if (a.lse && lane == 0) a.lse[row] = lse2 * 0.6931471805599453f;
}

}  // namespace dsv4::cuda::sdec
