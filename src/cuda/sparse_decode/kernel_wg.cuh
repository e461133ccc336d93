// The wgmma sparse-decode kernel: one CTA per (query token, block of up to 64 heads, key split),
// four warpgroups (512 threads), software-pipelined so that the key gather and dequantization of
// tile i+1 run under the tensor-core work of tile i. Rows past the block's last head are zero Q
// rows, so blocks of fewer than 64 heads run here too.
//
// Per iteration i (tile i already dequantized in key buffer i % 2, the raw bytes of tile i+1 in
// registers: each pair of warpgroups has 4 threads a key and holds up to five 16-byte chunks a
// thread):
//   1. warpgroups 0 and 1 compute S = Q K^T (32 keys each, wgmma m64n32k16) while warpgroups 2
//      and 3 dequantize chunks 0..19 (FP8) of every key of tile i+1 into the other key buffer and
//      then issue their loads of tile i+2;
//   2. warpgroups 0 and 1 run the online softmax on their S accumulators (exchanging only the row
//      maxima of their two 32-key halves) and write P (bf16);
//   3. all four warpgroups issue O += P K (128 dims each) asynchronously; while the tensor cores
//      work, warpgroups 0 and 1 convert the rest of tile i+1 (FP8 chunks 20..27, the bf16 rope)
//      and issue their loads of tile i+2.
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
  static constexpr int kOffRing = kOffP + kPBytes;    // key ring: int64 data offset [4][64], then
                                                      // int64 scale offset [4][64] (-1: invalid key)
  static constexpr int kOffVec = kOffRing + 2 * 4 * 64 * 8 + 64;  // (ring valid-key masks [4][2] before)
                                                      // kscale[2][64], (unused)[2][64], alpha,
                                                      // m, l, pmax[2][64], lpart[2][64]
  static constexpr int kTotal = kOffVec + 11 * 64 * 4;
  static constexpr int kLaunchBytes = kTotal + 1024;
  static_assert(kOffK % 1024 == 0 && kKBytes % 1024 == 0 && kOffP % 1024 == 0, "1024-byte aligned regions");
  static_assert(kLaunchBytes <= 227 * 1024, "fits the sm_90 smem carve-out");
  static_assert(kOffP >= kMaxRowsPerCta * (kDim * 4 + 32), "the f32 epilogue staging fits in the Q and key buffers");
};

// One thread's share of one key's raw bytes: up to six 16-byte chunks of the 36 (MODEL1) or 32
// (per-token) a key holds (the split is in the kernel).
struct RawShare {
  uint4 c[5];
  uint2 sc;      // MODEL1: the key's eight ue8m0 scale bytes
  float tscale;  // per-token layout: the key's scale (0 when invalid)
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
// 2^(e - 127) from the bits (exact; e = 0 is the subnormal 2^-127, 0xFF the NaN scale). Selects,
// no branches.
__device__ __forceinline__ float ue8m0_scale(uint32_t e) {
  uint32_t bits = e << 23;
  bits = e == 0 ? 0x00400000u : bits;
  bits = e == 0xFF ? 0x7FC00000u : bits;
  return __uint_as_float(bits);
}

// Explicit shared-memory accesses by 32-bit shared address (STS/LDS, never generic ST/LD).
__device__ __forceinline__ void sts128(uint32_t addr, uint4 v) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}
__device__ __forceinline__ void sts64(uint32_t addr, float x, float y) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(x), "f"(y) : "memory");
}
__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr) : "memory");
  return v;
}
// 16-byte global store (the compiler split a uint4 store through a float* into four 4-byte ones).
__device__ __forceinline__ void stg128(void* p, uint4 v) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}
__device__ __forceinline__ void sts32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
// A wgmma descriptor from its two 32-bit halves (no 64-bit arithmetic: offsets are added to the
// low half, whose 14-bit address field cannot carry for addresses inside the CTA's smem).
__device__ __forceinline__ uint64_t desc_of(uint32_t lo, uint32_t hi) {
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
// Low half of a 128-byte-swizzle descriptor: start address >> 4 and the leading byte offset.
__device__ __forceinline__ uint32_t desc_lo(uint32_t addr, uint32_t lbo) { return (addr >> 4) | ((lbo >> 4) << 16); }
// High half: stride byte offset 1024 (8-row atoms) and the 128-byte swizzle mode.
inline constexpr uint32_t kDescHi = (1024u >> 4) | (1u << 30);

// kM1: every key set is MODEL1 (the model's layout), so the per-token branches and the per-key
// scale factors compile away; the general instance serves any mix of layouts.
template <bool kM1>
__global__ void __launch_bounds__(kWgThreads, 1) sparse_decode_wg_kernel(const Args a) {
  constexpr int kONt = 16;  // 128 dims a warp in 8-dim n-tiles
  constexpr int kSNt = 4;   // 32 keys a warp of warpgroups 0 and 1

  extern __shared__ __align__(1024) uint8_t smem_raw[];
  // One aligned base for the whole kernel: every smem access below is base + a constant or a
  // per-thread offset computed once.
  const uint32_t raw_addr = smem_addr(smem_raw);
  const uint32_t sbase = (raw_addr + 1023u) & ~1023u;
  uint8_t* smem = smem_raw + (sbase - raw_addr);
  const uint32_t sQa = sbase, sK0a = sbase + SmemWg::kOffK, sPa = sbase + SmemWg::kOffP;
  int64_t* s_ring_d = reinterpret_cast<int64_t*>(smem + SmemWg::kOffRing);  // [4][64]
  int64_t* s_ring_s = s_ring_d + 256;                                        // [4][64]
  uint32_t* s_vmask = reinterpret_cast<uint32_t*>(s_ring_s + 256);           // [4][2]: valid-key bits
  float* s_kscale = reinterpret_cast<float*>(smem + SmemWg::kOffVec);        // [2][64]
  float* s_alpha = s_kscale + 256;
  float* s_m = s_alpha + 64;
  float* s_l = s_m + 64;
  float* s_pmax = s_l + 64;       // [2][64]: row maxima of the two S warpgroups
  float* s_lpart = s_pmax + 128;  // [2][64]: their partial row sums, at the end

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // The warpgroup index through a shuffle: the compiler then knows it is warp-uniform and keeps
  // the descriptor arithmetic that depends on it in uniform registers.
  const int dg = __shfl_sync(0xffffffffu, tid >> 7, 0);
  // The split combine is launched as a programmatic dependent (launch.cu): let its CTAs launch
  // now, onto the SMs this grid leaves free, so that they wait at griddepcontrol.wait instead of
  // behind a launch gap. Nothing here depends on it; a no-op without a dependent.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  const int rg = warp & 3;  // rows [16 rg, +16) of the warpgroup's tiles
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
      uint8_t* dst = smem + tile_off<true>(r, c);
      if (r < nh) cp_async16(dst, qrow0 + r * a.q_sh + c * 8);
      else sts128(sQa + tile_off<true>(r, c), make_uint4(0, 0, 0, 0));
    }
    cp_async_commit();
  }

  // Effective lengths, as two scalars (an array indexed by the set would live in local memory).
  auto eff_len = [&](const KeySet& ks) {
    int n = ks.K;
    if (ks.len) n = max(0, min(n, ks.len[b * ks.len_sb + s * ks.len_ss]));
    return n;
  };
  // Broadcast from lane 0: the compiler then treats the lengths, and the tile indices derived from
  // them, as warp-uniform (uniform registers, not per-thread ones).
  const int len0 = __shfl_sync(0xffffffffu, eff_len(a.set[0]), 0);
  const int len1 = __shfl_sync(0xffffffffu, eff_len(a.set[1]), 0);
  const int t_begin = split * sc.tiles_per_split;
  const int t_end = min(t_begin + sc.tiles_per_split, sc.tiles_main + sc.tiles_extra);
  auto next_live = [&](int t) {
    if (t < sc.tiles_main) {
      if (t * kTileKeys < len0) return min(t, t_end);
      t = sc.tiles_main;
    }
    if (t >= t_end) return t_end;
    return ((t - sc.tiles_main) * kTileKeys < len1) ? t : t_end;
  };
  // Raw index of key `tid` (< 64) of tile t (-1 past the length). Only loaded here; it is checked
  // and turned into byte offsets when it enters the ring an iteration later (enter_ring), so no
  // thread waits on the index fetch.
  auto load_index = [&](int t) -> int32_t {
    const bool main = t < sc.tiles_main;
    const KeySet& ks = a.set[main ? 0 : 1];
    const int pos = (main ? t : t - sc.tiles_main) * kTileKeys + tid;
    if (pos >= (main ? len0 : len1)) return -1;
    return __ldg(ks.idx + b * ks.idx_sb + s * ks.idx_ss + static_cast<int64_t>(pos) * ks.idx_sk);
  };
  // Ring row `row` <- key `tid` of tile t: byte offsets of its data and scale(s), -1 when invalid.
  // The page arithmetic (a division by the page size) runs once a key here, not once a thread.
  auto enter_ring = [&](int row, int t, int32_t v) {
    const KeySet& ks = a.set[t < sc.tiles_main ? 0 : 1];
    int64_t d = -1, e = -1;
    if (v >= 0 && v < ks.num_slots) {
      if (kM1 || ks.model1) {
        const int page = v / ks.page_size, off = v - page * ks.page_size;
        const int64_t pb = static_cast<int64_t>(page) * ks.page_bytes;
        d = pb + off * 576;
        e = pb + static_cast<int64_t>(ks.page_size) * 576 + off * 8;
      } else {
        d = static_cast<int64_t>(v) * 512;
        e = v;
      }
    }
    s_ring_d[row * 64 + tid] = d;
    s_ring_s[row * 64 + tid] = e;
    // Valid-key bits of the row (warp 0: keys 0..31, warp 1: keys 32..63) for the softmax: one
    // word to load instead of a validity entry per key.
    const uint32_t bits = __ballot_sync(0xffffffffu, d >= 0);
    if (lane == 0) s_vmask[row * 2 + (tid >> 5)] = bits;
  };

  // Work split of a tile's dequantization. Each pair of warpgroups has 4 threads a key (key T / 4,
  // T = tid % 256, q = T % 4) and takes the 16-byte chunks c = q + 4 j of it: warpgroups 2 and 3
  // slots j < kHi (FP8 chunks, converted under S), warpgroups 0 and 1 the slots j >= kHi (MODEL1:
  // the remaining FP8 chunks up to 27 and the bf16 rope chunks 28..35; per-token: up to chunk
  // 31), converted under O. Warpgroups 0 and 1 also run S and the softmax, hence the smaller share.
  constexpr int kHi = 5;                      // slots of warpgroups 2 and 3 (register bound: 128)
  constexpr int kLo = 9 - kHi;                // MODEL1 slots of warpgroups 0 and 1
  static_assert(kHi >= kLo && kHi <= 7, "RawShare holds kHi chunks");
  const int kkey = (tid & 255) >> 2, kq = tid & 3;
  const bool dq_hi = dg >= 2;                 // warpgroups 2 and 3
  const int kj0 = dq_hi ? 0 : kHi;            // first slot j of this thread
  auto load_raw = [&](int t, int row, RawShare& r) {
    const KeySet& ks = a.set[t < sc.tiles_main ? 0 : 1];
    const int64_t d = s_ring_d[row * 64 + kkey];
    const int64_t e = s_ring_s[row * 64 + kkey];
#pragma unroll
    for (int j = 0; j < kHi; ++j) r.c[j] = make_uint4(0, 0, 0, 0);
    r.sc = make_uint2(0, 0);
    r.tscale = 0.0f;
    if (d >= 0) {
      const uint4* src = reinterpret_cast<const uint4*>(ks.data + d) + kq;
      const bool m1 = kM1 || ks.model1;
      if (dq_hi) {
#pragma unroll
        for (int j = 0; j < kHi; ++j) r.c[j] = __ldg(src + 4 * j);
      } else {
#pragma unroll
        for (int j = 0; j < kLo; ++j)
          if (m1 || j < kLo - 1) r.c[j] = __ldg(src + 4 * (kHi + j));  // per-token: chunks < 32
      }
      if (m1) r.sc = __ldg(reinterpret_cast<const uint2*>(ks.data + e));
      else if (dq_hi) r.tscale = __bfloat162float(__ushort_as_bfloat16(__ldg(ks.scales + e)));
    }
  };
  // Smem offsets: FP8 chunk c = q + 4 j goes to 16-byte columns 2c, 2c + 1 of row kkey, i.e.
  // tile_off(kkey, 2c) = 8192 j + kdst0 and that ^ 16; MODEL1 rope chunk c (slots 7, 8) goes to
  // column c + 28 = 56 + q + 4 (j - 7).
  const uint32_t kdst0 = tile_off<true>(kkey, 2 * kq);
  auto store_tile = [&](int t, const RawShare& r, int buf) {
    const bool model1 = kM1 || a.set[t < sc.tiles_main ? 0 : 1].model1;
    const uint32_t dst = sK0a + buf * SmemWg::kKBytes;
    auto nope = [&](int j, const uint4& v) {  // 16 codes of 64-dim block j: scale byte j
      const float scale = ue8m0_scale(((j < 4 ? r.sc.x : r.sc.y) >> (8 * (j & 3))) & 0xFF);
      const uint32_t o = dst + 8192 * j + kdst0;
      sts128(o, e4m3x8_to_bf16(v.x, v.y, scale));
      sts128(o ^ 16, e4m3x8_to_bf16(v.z, v.w, scale));
    };
    if (model1) {
      if (dq_hi) {
#pragma unroll
        for (int j = 0; j < kHi; ++j) nope(j, r.c[j]);
      } else {
#pragma unroll
        for (int jj = 0; jj < kLo; ++jj) {
          const int j = kHi + jj;
          if (j <= 6) nope(j, r.c[jj]);
          else sts128(dst + tile_off<true>(kkey, 56 + kq + 4 * (j - 7)), r.c[jj]);
        }
      }
    } else {
      const int n = dq_hi ? kHi : kLo - 1;
#pragma unroll
      for (int j = 0; j < kHi; ++j) {
        if (j < n) {
          const uint32_t o = dst + 8192 * (j + kj0) + kdst0;
          sts128(o, e4m3x8_to_bf16(r.c[j].x, r.c[j].y));
          sts128(o ^ 16, e4m3x8_to_bf16(r.c[j].z, r.c[j].w));
        }
      }
    }
    if (!kM1 && dq_hi && kq == 0) s_kscale[buf * 64 + kkey] = model1 ? 1.0f : r.tscale;
  };

  // Softmax state, in warpgroups 0 and 1: (m_run, l_run) for row 16 rg + lane / 4 and
  // (m_run1, l_run1) for the row 8 below; l is this thread's partial sum over its keys.
  float m_run = -INFINITY, l_run = 0.0f, m_run1 = -INFINITY, l_run1 = 0.0f;
  float acc[kONt][4];
#pragma unroll
  for (int n = 0; n < kONt; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;

  // Prologue: T_0 loaded and dequantized into buffer 0, all of T_1 loaded into registers. Ring
  // (4 rows of 64 keys): T_0, T_1, T_2 now; T_3's raw indices wait in a register for iteration 0,
  // which enters them and fetches T_4's.
  int t = next_live(t_begin);
  int t1 = t < t_end ? next_live(t + 1) : t_end;
  if (tid < kTileKeys) {
    const int32_t v0 = t < t_end ? load_index(t) : -1;
    const int32_t v1 = t1 < t_end ? load_index(t1) : -1;
    enter_ring(0, t < t_end ? t : 0, v0);
    enter_ring(1, t1 < t_end ? t1 : 0, v1);
  }
  __syncthreads();
  RawShare raw;
  if (t < t_end) {
    load_raw(t, 0, raw);
    store_tile(t, raw, 0);
  }
  int t2 = t1 < t_end ? next_live(t1 + 1) : t_end;
  if (tid < kTileKeys) enter_ring(2, t2 < t_end ? t2 : 0, t2 < t_end ? load_index(t2) : -1);
  int t3 = t2 < t_end ? next_live(t2 + 1) : t_end;
  int nidx = (t3 < t_end && tid < kTileKeys) ? load_index(t3) : -1;  // raw indices of T_3
  if (t1 < t_end) load_raw(t1, 1, raw);
  cp_async_wait_all();
  fence_proxy_async();
  __syncthreads();

  // Descriptor low halves (uniform): S reads Q and keys [32 dg, +32) of the key tile, both
  // K-major; O reads P (K-major) and dims [128 dg, +128) of the key tile as an N-major operand.
  const uint32_t dq_lo = desc_lo(sQa, 16);
  const uint32_t dks_lo = desc_lo(sK0a + (dg & 1) * 32 * 128, 16);
  const uint32_t dp_lo = desc_lo(sPa, 16);
  const uint32_t dko_lo = desc_lo(sK0a + dg * 2 * (64 * 128), 64 * 128);
  constexpr uint32_t kKBufDesc = SmemWg::kKBytes >> 4;

  // Per-thread softmax smem addresses (warpgroups 0 and 1): rows r0, r0 + 8 of P.
  const int r0 = rg * 16 + (lane >> 2);
  const uint32_t p_row0 = sPa + r0 * 128;  // row r0 + 8 is 1024 bytes further

  int it = 0;
  while (t < t_end) {
    const int buf = it & 1;
    const float* kscale = s_kscale + buf * 64;
    if (tid < kTileKeys) enter_ring((it + 3) & 3, t3 < t_end ? t3 : 0, nidx);
    const int t4 = t3 < t_end ? next_live(t3 + 1) : t_end;
    nidx = (t4 < t_end && tid < kTileKeys) ? load_index(t4) : -1;

    // (1) warpgroups 2 and 3: their chunks of T_(i+1) into the other buffer (last read by the MMAs
    // of iteration i-1, which every warpgroup has waited for), then their loads of T_(i+2).
    if (dg >= 2) {
      if (t1 < t_end) {
        store_tile(t1, raw, buf ^ 1);
        fence_proxy_async();
      }
      if (t2 < t_end) load_raw(t2, (it + 2) & 3, raw);
    }

    // (1, 2) warpgroups 0 and 1: S = Q K^T, warpgroup dg taking keys [32 dg, +32), then softmax.
    if (dg < 2) {
      const int key0 = dg * 32;
      float sacc[kSNt][4];
#pragma unroll
      for (int n = 0; n < kSNt; ++n) sacc[n][0] = sacc[n][1] = sacc[n][2] = sacc[n][3] = 0.0f;
      float(&d)[kSNt * 4] = reinterpret_cast<float(&)[kSNt * 4]>(sacc);
      const uint32_t dk = dks_lo + buf * kKBufDesc;
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < kDim / 16; ++kk) {
        const uint32_t koff = ((kk >> 2) * (64 * 128) + (kk & 3) * 32) >> 4;
        wgmma_m64n32k16_bf16(d, desc_of(dq_lo + koff, kDescHi), desc_of(dk + koff, kDescHi));
      }
      wg_commit();
      const bool model1 = kM1 || a.set[t < sc.tiles_main ? 0 : 1].model1;
      wg_wait_all();
      pin(d);
      // Valid-key bits of this warpgroup's 32 keys of T_i (ring row i % 4, rewritten only in
      // iteration i + 1), shifted to this lane's key pairs.
      const uint32_t vmask = s_vmask[(it & 3) * 2 + dg] >> ((lane & 3) * 2);
      {  // rows r0 and r0 + 8, keys key0 + 8 n + 2 (lane % 4) + {0, 1}
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < kSNt; ++n) {
          const int k0 = key0 + n * 8 + (lane & 3) * 2;
          const bool v0 = (vmask >> (n * 8)) & 1, v1 = (vmask >> (n * 8 + 1)) & 1;
          float f0 = a.scale_log2, f1 = a.scale_log2;
          if (!model1) {
            const float2 c = *reinterpret_cast<const float2*>(kscale + k0);
            f0 *= c.x;
            f1 *= c.y;
          }
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
        // The exact running maximum (no lazy rescaling): the largest weight of a row is then exactly
        // 1 in bf16, which the output tolerance relies on for rows dominated by one key.
        const float mn0 = fmaxf(m_run, mx0), mn1 = fmaxf(m_run1, mx1);
        const float mu0 = mn0 == -INFINITY ? 0.0f : mn0, mu1 = mn1 == -INFINITY ? 0.0f : mn1;
        const float al0 = fast_exp2(m_run - mu0), al1 = fast_exp2(m_run1 - mu1);
        float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
        for (int n = 0; n < kSNt; ++n) {
          const int k0 = key0 + n * 8 + (lane & 3) * 2;
          float p0 = fast_exp2(sacc[n][0] - mu0), p1 = fast_exp2(sacc[n][1] - mu0);
          float p2 = fast_exp2(sacc[n][2] - mu1), p3 = fast_exp2(sacc[n][3] - mu1);
          sum0 += p0 + p1;
          sum1 += p2 + p3;
          if (!model1) {
            const float2 c = *reinterpret_cast<const float2*>(kscale + k0);
            p0 *= c.x;
            p1 *= c.y;
            p2 *= c.x;
            p3 *= c.y;
          }
          // Column k0 of rows r0 / r0 + 8 in the swizzled P tile (chunk k0 / 8, row % 8 == lane / 4 % 8).
          const uint32_t col = (((k0 >> 3) ^ (r0 & 7)) << 4) + (k0 & 7) * 2;
          sts32(p_row0 + col, pack_bf16(p0, p1));
          sts32(p_row0 + col + 1024, pack_bf16(p2, p3));
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

    // (3) O = alpha O + P K on the tensor cores; meanwhile warpgroups 0 and 1 convert their chunks
    // of T_(i+1) and issue their loads of T_(i+2).
    {
      const float al0 = s_alpha[r0], al1 = s_alpha[r0 + 8];
      // Once the running maxima settle most tiles leave them unchanged (alpha == 1 on every row
      // of the warp): skip the 64 multiplies then.
      if (__any_sync(0xffffffffu, al0 != 1.0f || al1 != 1.0f)) {
#pragma unroll
        for (int n = 0; n < kONt; ++n) {
          acc[n][0] *= al0;
          acc[n][1] *= al0;
          acc[n][2] *= al1;
          acc[n][3] *= al1;
        }
      }
      float(&d)[kONt * 4] = reinterpret_cast<float(&)[kONt * 4]>(acc);
      const uint32_t dk = dko_lo + buf * kKBufDesc;
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < kTileKeys / 16; ++kk)
        wgmma_m64n128k16_bf16_tb(d, desc_of(dp_lo + kk * 2, kDescHi), desc_of(dk + kk * (16 * 128 >> 4), kDescHi));
      wg_commit();
      if (dg < 2) {
        if (t1 < t_end) {
          store_tile(t1, raw, buf ^ 1);
          fence_proxy_async();
        }
        if (t2 < t_end) load_raw(t2, (it + 2) & 3, raw);
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
    if (dg < 2) {
#pragma unroll
      for (int o = 1; o <= 2; o <<= 1) {
        l_run += __shfl_xor_sync(0xffffffffu, l_run, o);
        l_run1 += __shfl_xor_sync(0xffffffffu, l_run1, o);
      }
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

  // ---- epilogue: rows r0 and r0 + 8 of this warp, dims [128 dg, +128), staged through the free
  // Q and key buffers (rows padded by 16 / 32 bytes: conflict-free) so the global stores are
  // whole 16-byte chunks, a warp writing 512 contiguous bytes of a row. ----
  constexpr int kPitchB = kDim * 2 + 16, kPitchF = kDim * 4 + 32;
  const int tq = lane & 3;
  // The row index and the smem base again from the special registers: keeping them live across
  // the main loop would cost registers it needs.
  uint32_t cta_e, raw_e;
  asm volatile("mov.u32 %0, %%ctaid.x;\n" : "=r"(cta_e));
  asm volatile("{\n .reg .u64 t;\n cvta.to.shared.u64 t, %1;\n cvt.u32.u64 %0, t;\n}\n" : "=r"(raw_e) : "l"(smem_raw));
  const uint32_t sQe = (raw_e + 1023u) & ~1023u;
  const int hb_e = static_cast<int>(cta_e % static_cast<uint32_t>(sc.head_blocks));
  const uint32_t rest_e = cta_e / static_cast<uint32_t>(sc.head_blocks);
  const int split_e = static_cast<int>(rest_e % static_cast<uint32_t>(sc.num_splits));
  const int64_t tok_e = rest_e / static_cast<uint32_t>(sc.num_splits);
  const int head0_e = hb_e * kMaxRowsPerCta;
  const int nh_e = min(kMaxRowsPerCta, a.H - head0_e);
  const int64_t row0 = tok_e * a.H + head0_e;
  if (sc.num_splits == 1) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = r0 + half * 8;
      const float l = s_l[r], m = s_m[r];
      float factor = 0.0f, lse_nat = INFINITY;
      if (m != -INFINITY && r < nh_e) {
        const float lse2 = m + log2f(l);
        factor = 1.0f / l;
        if (a.sink) factor *= 1.0f / (1.0f + exp2f(a.sink[head0_e + r] * 1.4426950408889634f - lse2));
        lse_nat = lse2 * 0.6931471805599453f;
      }
      const uint32_t rowa = sQe + r * kPitchB + dg * 256 + tq * 4;
#pragma unroll
      for (int n = 0; n < kONt; ++n)
        sts32(rowa + n * 16, pack_bf16(acc[n][half * 2] * factor, acc[n][half * 2 + 1] * factor));
      if (a.lse && dg == 0 && tq == 0 && r < nh_e) a.lse[row0 + r] = lse_nat;
    }
    __syncthreads();
    for (int i = tid; i < nh_e * 64; i += kWgThreads) {
      const int r = i >> 6, c = i & 63;
      const uint4 v = lds128(sQe + r * kPitchB + c * 16);
      stg128(a.out + (row0 + r) * kDim + c * 8, v);
    }
  } else {
    const int64_t rows_total = sc.tokens * a.H;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = r0 + half * 8;
      const float l = s_l[r], m = s_m[r];
      const bool empty = m == -INFINITY;
      const float inv = empty ? 0.0f : 1.0f / l;
      const uint32_t rowa = sQe + r * kPitchF + dg * 512 + tq * 8;
#pragma unroll
      for (int n = 0; n < kONt; ++n) sts64(rowa + n * 32, acc[n][half * 2] * inv, acc[n][half * 2 + 1] * inv);
      if (dg == 0 && tq == 0 && r < nh_e) a.ws_lse[split_e * rows_total + row0 + r] = empty ? -INFINITY : m + log2f(l);
    }
    __syncthreads();
    float* ws = a.ws_o + (split_e * rows_total + row0) * kDim;
    for (int i = tid; i < nh_e * 128; i += kWgThreads) {
      const int r = i >> 7, c = i & 127;
      const uint4 v = lds128(sQe + r * kPitchF + c * 16);
      stg128(ws + r * kDim + c * 4, v);
    }
  }
}

}  // namespace dsv4::cuda::sdec
