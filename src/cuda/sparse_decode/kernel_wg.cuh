// The wgmma sparse-decode kernel: one CTA per (query token, block of up to 64 heads, key split),
// four warpgroups (512 threads), software-pipelined so that the key gather and dequantization of
// tile i+1 run under the tensor-core work of tile i. Rows past the block's last head are zero Q
// rows, so blocks of fewer than 64 heads run here too.
//
// Per iteration i (tile i already dequantized in key buffer i % 2, the raw bytes of tile i+1 in
// registers: 8 threads a key, up to five 16-byte chunks each):
//   1. warpgroups 0 and 1 compute S = Q K^T (32 keys each, wgmma m64n32k16) while warpgroups 2
//      and 3 dequantize keys 32..63 of tile i+1 into the other key buffer and then issue the loads
//      of their keys of tile i+2;
//   2. warpgroups 0 and 1 run the online softmax on their S accumulators (exchanging only the row
//      maxima of their two 32-key halves) and write P (bf16);
//   3. all four warpgroups issue O += P K (128 dims each) asynchronously; while the tensor cores
//      work, warpgroups 0 and 1 dequantize keys 0..31 of tile i+1 and issue their loads of tile i+2.
// Every load is issued a whole iteration before its bytes are needed, and the dequantization of
// tile i+1 sits under the two MMAs of tile i. The raw bytes need no smem (global -> registers),
// which pays for the second key buffer.
//
// Same numerics as the mma.sync kernel (kernel.cuh): exact bf16 keys for MODEL1, raw e4m3 in the
// tile plus the token's scale in fp32 for the per-token layout; invalid keys are never read (their
// registers are zeros) and their logits are -inf.
#pragma once
#include "cuda/sparse_decode/kernel.cuh"

namespace dsv4::cuda::sdec {

inline constexpr int kWgThreads = 512;

struct SmemWg {
  static constexpr int kQBytes = kMaxRowsPerCta * kDim * 2;
  static constexpr int kKBytes = kTileKeys * kDim * 2;
  static constexpr int kPBytes = kMaxRowsPerCta * kTileKeys * 2;
  static constexpr int kOffK = kQBytes;               // two key buffers, kKBytes apart
  static constexpr int kOffP = kOffK + 2 * kKBytes;   // P (bf16), K-major 128-byte swizzle
  static constexpr int kOffVec = kOffP + kPBytes;     // kscale[2][64], kvalid[2][64], slot[4][64],
                                                      // alpha, m, l, pmax[2][64], lpart[2][64]
  static constexpr int kTotal = kOffVec + 15 * 64 * 4;
  static constexpr int kLaunchBytes = kTotal + 1024;
  static_assert(kOffK % 1024 == 0 && kKBytes % 1024 == 0 && kOffP % 1024 == 0, "1024-byte aligned regions");
  static_assert(kLaunchBytes <= 227 * 1024, "fits the sm_90 smem carve-out");
};

// One thread's share of one key's raw bytes: chunks sub, sub + 8, ... (16 bytes each) of the 36
// (MODEL1) or 32 (per-token) a key holds.
struct RawShare {
  uint4 c[5];
  uint2 sc;      // MODEL1: the key's eight ue8m0 scale bytes
  float tscale;  // per-token layout: the key's scale (0 when invalid)
  bool valid;
};

// Eight e4m3 codes (low byte first) to eight bf16, each value times `scale` in fp32, rounded once.
__device__ __forceinline__ uint4 e4m3x8_to_bf16(uint32_t lo, uint32_t hi, float scale) {
  const float2 f0 = e4m3x2_to_f2(lo), f1 = e4m3x2_to_f2(lo >> 16);
  const float2 f2 = e4m3x2_to_f2(hi), f3 = e4m3x2_to_f2(hi >> 16);
  return make_uint4(pack_bf16(f0.x * scale, f0.y * scale), pack_bf16(f1.x * scale, f1.y * scale),
                    pack_bf16(f2.x * scale, f2.y * scale), pack_bf16(f3.x * scale, f3.y * scale));
}
__device__ __forceinline__ uint4 e4m3x8_to_bf16(uint32_t lo, uint32_t hi) {
  const float2 f0 = e4m3x2_to_f2(lo), f1 = e4m3x2_to_f2(lo >> 16);
  const float2 f2 = e4m3x2_to_f2(hi), f3 = e4m3x2_to_f2(hi >> 16);
  return make_uint4(pack_bf16(f0.x, f0.y), pack_bf16(f1.x, f1.y), pack_bf16(f2.x, f2.y), pack_bf16(f3.x, f3.y));
}
// 2^(e - 127) from the bits (exact; e = 0 is the subnormal 2^-127, 0xFF the NaN scale).
__device__ __forceinline__ float ue8m0_scale(uint32_t e) {
  return e == 0xFF ? __uint_as_float(0x7FC00000u) : (e == 0 ? __uint_as_float(0x00400000u) : __uint_as_float(e << 23));
}

__global__ void __launch_bounds__(kWgThreads, 1) sparse_decode_wg_kernel(const Args a) {
  constexpr int kONt = 16;  // 128 dims a warp in 8-dim n-tiles
  constexpr int kSNt = 4;   // 32 keys a warp of warpgroups 0 and 1

  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* sQ = smem;
  uint8_t* sK0 = smem + SmemWg::kOffK;
  uint8_t* sP = smem + SmemWg::kOffP;
  float* s_kscale = reinterpret_cast<float*>(smem + SmemWg::kOffVec);  // [2][64]
  int* s_kvalid = reinterpret_cast<int*>(s_kscale + 128);               // [2][64]
  int* s_slot = s_kvalid + 128;                                         // [4][64]
  float* s_alpha = reinterpret_cast<float*>(s_slot + 256);
  float* s_m = s_alpha + 64;
  float* s_l = s_m + 64;
  float* s_pmax = s_l + 64;  // [2][64]: row maxima of the two S warpgroups
  float* s_lpart = s_pmax + 128;  // [2][64]: their partial row sums, at the end

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
    for (int i = tid; i < kMaxRowsPerCta * 64; i += kWgThreads) {
      const int r = i >> 6, c = i & 63;
      uint8_t* dst = sQ + tile_off<true>(r, c);
      if (r < nh) cp_async16(dst, qrow0 + r * a.q_sh + c * 8);
      else *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
    cp_async_commit();
  }

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
  // Slot of key `tid` (< 64) of tile t, -1 when invalid.
  auto load_slot = [&](int t) {
    const int w = t < sc.tiles_main ? 0 : 1;
    const KeySet& ks = a.set[w];
    const int pos = (w == 0 ? t : t - sc.tiles_main) * kTileKeys + tid;
    if (pos >= len[w]) return -1;
    const int32_t v = __ldg(ks.idx + b * ks.idx_sb + s * ks.idx_ss + static_cast<int64_t>(pos) * ks.idx_sk);
    return (v >= 0 && v < ks.num_slots) ? v : -1;
  };

  // Key `kkey` of a tile is loaded and dequantized by the 8 threads with that kkey.
  const int kkey = tid >> 3, ksub = tid & 7;
  auto load_raw = [&](int t, const int* slots, RawShare& r) {
    const KeySet& ks = a.set[t < sc.tiles_main ? 0 : 1];
    const int slot = slots[kkey];
    r.valid = slot >= 0;
    const int s0 = r.valid ? slot : 0;
#pragma unroll
    for (int j = 0; j < 5; ++j) r.c[j] = make_uint4(0, 0, 0, 0);
    r.sc = make_uint2(0, 0);
    r.tscale = 0.0f;
    if (ks.model1) {
      const int page = s0 / ks.page_size, off = s0 - page * ks.page_size;
      const uint8_t* pb = ks.data + static_cast<int64_t>(page) * ks.page_bytes;
      const uint4* src = reinterpret_cast<const uint4*>(pb + off * 576);
      if (r.valid) {
#pragma unroll
        for (int j = 0; j < 5; ++j) {
          const int c = ksub + 8 * j;
          if (c < 36) r.c[j] = __ldg(src + c);
        }
        r.sc = __ldg(reinterpret_cast<const uint2*>(pb + static_cast<int64_t>(ks.page_size) * 576 + off * 8));
      }
    } else if (r.valid) {
      const uint4* src = reinterpret_cast<const uint4*>(ks.data + static_cast<int64_t>(s0) * 512);
#pragma unroll
      for (int j = 0; j < 4; ++j) r.c[j] = __ldg(src + ksub + 8 * j);
      r.tscale = __bfloat162float(__ushort_as_bfloat16(__ldg(ks.scales + s0)));
    }
  };
  auto store_tile = [&](int t, const RawShare& r, int buf) {
    const bool model1 = a.set[t < sc.tiles_main ? 0 : 1].model1;
    uint8_t* dst = sK0 + buf * SmemWg::kKBytes;
    if (model1) {
#pragma unroll
      for (int j = 0; j < 5; ++j) {
        const int c = ksub + 8 * j;
        if (c < 28) {  // 16 nope codes; their scale is byte c / 4 of the eight
          const uint32_t word = j < 2 ? r.sc.x : r.sc.y;
          const uint32_t e = (word >> (8 * ((ksub >> 2) + 2 * (j & 1)))) & 0xFF;
          const float scale = ue8m0_scale(e);
          *reinterpret_cast<uint4*>(dst + tile_off<true>(kkey, 2 * c)) = e4m3x8_to_bf16(r.c[j].x, r.c[j].y, scale);
          *reinterpret_cast<uint4*>(dst + tile_off<true>(kkey, 2 * c + 1)) = e4m3x8_to_bf16(r.c[j].z, r.c[j].w, scale);
        } else if (c < 36) {  // 8 bf16 rope values, as stored
          *reinterpret_cast<uint4*>(dst + tile_off<true>(kkey, 56 + c - 28)) = r.c[j];
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = ksub + 8 * j;
        *reinterpret_cast<uint4*>(dst + tile_off<true>(kkey, 2 * c)) = e4m3x8_to_bf16(r.c[j].x, r.c[j].y);
        *reinterpret_cast<uint4*>(dst + tile_off<true>(kkey, 2 * c + 1)) = e4m3x8_to_bf16(r.c[j].z, r.c[j].w);
      }
    }
    if (ksub == 0) {
      s_kscale[buf * 64 + kkey] = model1 ? 1.0f : r.tscale;
      s_kvalid[buf * 64 + kkey] = r.valid;
    }
  };

  // Softmax state, in warpgroups 0 and 1: (m_run, l_run) for row 16 rg + lane / 4 and
  // (m_run1, l_run1) for the row 8 below; l is this thread's partial sum over its keys.
  float m_run = -INFINITY, l_run = 0.0f, m_run1 = -INFINITY, l_run1 = 0.0f;
  const int rg = warp & 3, dg = warp >> 2;  // rows [16 rg, +16) of the warpgroup's tiles; warpgroup dg
  float acc[kONt][4];
#pragma unroll
  for (int n = 0; n < kONt; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;

  // Prologue: T_0 loaded and dequantized into buffer 0, all of T_1 loaded into registers. Slot
  // ring (4 rows of 64): T_0, T_1, T_2 now; T_3's slots wait in a register for iteration 0, which
  // stores them and fetches T_4's.
  int t = next_live(t_begin);
  int t1 = t < t_end ? next_live(t + 1) : t_end;
  if (tid < kTileKeys) {
    s_slot[tid] = t < t_end ? load_slot(t) : -1;
    s_slot[64 + tid] = t1 < t_end ? load_slot(t1) : -1;
  }
  __syncthreads();
  RawShare raw;
  if (t < t_end) {
    load_raw(t, s_slot, raw);
    store_tile(t, raw, 0);
  }
  int t2 = t1 < t_end ? next_live(t1 + 1) : t_end;
  if (tid < kTileKeys) s_slot[128 + tid] = t2 < t_end ? load_slot(t2) : -1;
  int t3 = t2 < t_end ? next_live(t2 + 1) : t_end;
  int nslot = (t3 < t_end && tid < kTileKeys) ? load_slot(t3) : -1;
  if (t1 < t_end) load_raw(t1, s_slot + 64, raw);
  cp_async_wait_all();
  fence_proxy_async();
  __syncthreads();

  const uint32_t sQa = smem_addr(sQ), sK0a = smem_addr(sK0), sPa = smem_addr(sP);
  int it = 0;
  while (t < t_end) {
    const int buf = it & 1;
    const uint32_t sKa = sK0a + buf * SmemWg::kKBytes;
    const float* kscale = s_kscale + buf * 64;
    const int* kvalid = s_kvalid + buf * 64;
    if (tid < kTileKeys) s_slot[((it + 3) & 3) * 64 + tid] = nslot;
    const int t4 = t3 < t_end ? next_live(t3 + 1) : t_end;
    nslot = (t4 < t_end && tid < kTileKeys) ? load_slot(t4) : -1;

    // (1) warpgroups 2 and 3: keys 32..63 of T_(i+1) into the other buffer (last read by the MMAs
    // of iteration i-1, which every warpgroup has waited for), then their loads of T_(i+2).
    if (warp >= 8) {
      if (t1 < t_end) {
        store_tile(t1, raw, buf ^ 1);
        fence_proxy_async();
      }
      if (t2 < t_end) load_raw(t2, s_slot + ((it + 2) & 3) * 64, raw);
    }

    // (1, 2) warpgroups 0 and 1: S = Q K^T, warpgroup dg taking keys [32 dg, +32), then softmax.
    if (warp < 8) {
      const int key0 = dg * 32;
      float sacc[kSNt][4];
#pragma unroll
      for (int n = 0; n < kSNt; ++n) sacc[n][0] = sacc[n][1] = sacc[n][2] = sacc[n][3] = 0.0f;
      float(&d)[kSNt * 4] = reinterpret_cast<float(&)[kSNt * 4]>(sacc);
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < kDim / 16; ++kk) {
        const uint32_t koff = (kk >> 2) * (64 * 128) + (kk & 3) * 32;
        wgmma_m64n32k16_bf16(d, wg_desc(sQa + koff, 16, 1024), wg_desc(sKa + koff + key0 * 128, 16, 1024));
      }
      wg_commit();
      wg_wait_all();
      pin(d);
      const int r0 = rg * 16 + (lane >> 2);
      {  // rows r0 and r0 + 8, keys key0 + 8 n + 2 (lane % 4) + {0, 1}
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < kSNt; ++n) {
          const int k0 = key0 + n * 8 + (lane & 3) * 2;
          const float f0 = a.scale_log2 * kscale[k0], f1 = a.scale_log2 * kscale[k0 + 1];
          const bool v0 = kvalid[k0], v1 = kvalid[k0 + 1];
          sacc[n][0] = v0 ? sacc[n][0] * f0 : -INFINITY;
          sacc[n][1] = v1 ? sacc[n][1] * f1 : -INFINITY;
          sacc[n][2] = v0 ? sacc[n][2] * f0 : -INFINITY;
          sacc[n][3] = v1 ? sacc[n][3] * f1 : -INFINITY;
          mx0 = fmaxf(mx0, fmaxf(sacc[n][0], sacc[n][1]));
          mx1 = fmaxf(mx1, fmaxf(sacc[n][2], sacc[n][3]));
        }
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
          mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, o));
          mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, o));
        }
        if ((lane & 3) == 0) {
          s_pmax[dg * 64 + r0] = mx0;
          s_pmax[dg * 64 + r0 + 8] = mx1;
        }
        asm volatile("bar.sync 1, 256;\n" ::: "memory");  // warpgroups 0 and 1 only
        mx0 = fmaxf(mx0, s_pmax[(dg ^ 1) * 64 + r0]);
        mx1 = fmaxf(mx1, s_pmax[(dg ^ 1) * 64 + r0 + 8]);
        const float mn0 = fmaxf(m_run, mx0), mn1 = fmaxf(m_run1, mx1);
        const float mu0 = mn0 == -INFINITY ? 0.0f : mn0, mu1 = mn1 == -INFINITY ? 0.0f : mn1;
        const float al0 = fast_exp2(m_run - mu0), al1 = fast_exp2(m_run1 - mu1);
        float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
        for (int n = 0; n < kSNt; ++n) {
          const int k0 = key0 + n * 8 + (lane & 3) * 2;
          const float p0 = fast_exp2(sacc[n][0] - mu0), p1 = fast_exp2(sacc[n][1] - mu0);
          const float p2 = fast_exp2(sacc[n][2] - mu1), p3 = fast_exp2(sacc[n][3] - mu1);
          sum0 += p0 + p1;
          sum1 += p2 + p3;
          const float c0 = kscale[k0], c1 = kscale[k0 + 1];
          *reinterpret_cast<uint32_t*>(sP + swz(r0, k0 >> 3, 8) + (k0 & 7) * 2) = pack_bf16(p0 * c0, p1 * c1);
          *reinterpret_cast<uint32_t*>(sP + swz(r0 + 8, k0 >> 3, 8) + (k0 & 7) * 2) = pack_bf16(p2 * c0, p3 * c1);
        }
        l_run = l_run * al0 + sum0;
        l_run1 = l_run1 * al1 + sum1;
        m_run = mn0;
        m_run1 = mn1;
        if (dg == 0 && (lane & 3) == 0) {
          s_alpha[r0] = al0;
          s_alpha[r0 + 8] = al1;
        }
        fence_proxy_async();
      }
    }
    __syncthreads();

    // (3) O = alpha O + P K on the tensor cores; meanwhile warpgroups 0 and 1 dequantize keys 0..31
    // of T_(i+1) and issue their loads of T_(i+2).
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
      float(&d)[kONt * 4] = reinterpret_cast<float(&)[kONt * 4]>(acc);
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < kTileKeys / 16; ++kk)
        wgmma_m64n128k16_bf16_tb(d, wg_desc(sPa + kk * 32, 16, 1024),
                                 wg_desc(sKa + dg * 2 * (64 * 128) + kk * 16 * 128, 64 * 128, 1024));
      wg_commit();
      if (warp < 8) {
        if (t1 < t_end) {
          store_tile(t1, raw, buf ^ 1);
          fence_proxy_async();
        }
        if (t2 < t_end) load_raw(t2, s_slot + ((it + 2) & 3) * 64, raw);
      }
      wg_wait_all();
      pin(d);
    }
    __syncthreads();
    t = t1;
    t1 = t2;
    t2 = t3;
    t3 = t4;
    ++it;
  }

  // Row sums: the four threads of a row in each S warpgroup, then the two warpgroups.
  {
    if (warp < 8) {
#pragma unroll
      for (int o = 1; o <= 2; o <<= 1) {
        l_run += __shfl_xor_sync(0xffffffffu, l_run, o);
        l_run1 += __shfl_xor_sync(0xffffffffu, l_run1, o);
      }
      const int r0 = rg * 16 + (lane >> 2);
      if ((lane & 3) == 0) {
        s_lpart[dg * 64 + r0] = l_run;
        s_lpart[dg * 64 + r0 + 8] = l_run1;
        if (dg == 0) {
          s_m[r0] = m_run;
          s_m[r0 + 8] = m_run1;
        }
      }
    }
    __syncthreads();
    if (tid < 64) s_l[tid] = s_lpart[tid] + s_lpart[64 + tid];
  }
  __syncthreads();

  // ---- epilogue: rows r0 and r0 + 8 of this warp, dims [128 dg, +128) ----
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = rg * 16 + g + half * 8;
    if (r >= nh) continue;
    const int head = head0 + r;
    const int64_t row = tok * a.H + head;
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
      __nv_bfloat16* orow = a.out + row * kDim + dg * 128 + tq * 2;
#pragma unroll
      for (int n = 0; n < kONt; ++n)
        *reinterpret_cast<uint32_t*>(orow + n * 8) =
            pack_bf16(acc[n][half * 2] * factor, acc[n][half * 2 + 1] * factor);
      if (a.lse && dg == 0 && tq == 0) a.lse[row] = lse_nat;
    } else {
      const int64_t rows_total = sc.tokens * a.H;
      const float inv = empty ? 0.0f : 1.0f / l;
      float* orow = a.ws_o + (split * rows_total + row) * kDim + dg * 128 + tq * 2;
#pragma unroll
      for (int n = 0; n < kONt; ++n)
        *reinterpret_cast<float2*>(orow + n * 8) = make_float2(acc[n][half * 2] * inv, acc[n][half * 2 + 1] * inv);
      if (dg == 0 && tq == 0) a.ws_lse[split * rows_total + row] = empty ? -INFINITY : m + log2f(l);
    }
  }
}

}  // namespace dsv4::cuda::sdec
