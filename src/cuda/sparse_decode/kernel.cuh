// Sparse decode attention on sm_90: one CTA per (query token, block of <= 64 heads, key split).
// This file: the shared definitions, the split combine, and the mma.sync kernel (blocks of at most
// 32 heads, and 64-head blocks when tests force it); kernel_wg.cuh holds the wgmma kernel that
// serves 64-head blocks.
//
// Per 64-key tile: cp.async gathers the raw FP8 rows of the tile's slots into smem (issued two tiles
// ahead, so the gathers overlap the work on the tiles before), the CTA dequantizes them
// once into a bf16 key tile shared by all its heads, then the tensor cores compute S = Q K^T, an online
// softmax in fp32 turns S into P (bf16), and the MMAs accumulate O += P K (K = V) in registers.
//
// Exactness of the key tile: a MODEL1 value is e4m3 * 2^k, which bf16 holds exactly; a per-token
// value e4m3 * bf16 scale does not, so that layout keeps the raw e4m3 in the tile and applies the
// token's scale in fp32: to the logit, and to P before it is rounded to bf16.
//
// Invalid keys (index -1, a slot past the cache, a position past the row's length) are never
// read: their tile rows are zero-filled and their logits set to -inf, so NaN bytes on pages no index
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
#ifdef DSV4_SD_PROFILE
  int prof_var = 0;  // profile build only: variant bits (kernel_wg.cuh, DSV4_SD_VAR)
#endif
};

// ---- small PTX wrappers ----
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src));
}
// With `valid` false nothing is read and the destination is zero-filled (src-size 0).
__device__ __forceinline__ void cp_async16_zfill(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async8_zfill(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 8 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_1() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }

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
// 2^x by the SFU (relative error about 2^-22); 2^-inf = 0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Byte offset of 16-byte chunk `c` of row `r` in a tile whose rows are `chunks` chunks long: the
// chunk index is XORed with the row's low bits so the 8 rows an ldmatrix reads hit 8 bank groups.
__device__ __forceinline__ uint32_t swz(int r, int c, int chunks) { return r * chunks * 16 + ((c ^ (r & 7)) * 16); }

// The 64-row Q and key tiles. The mma.sync path keeps a row's 64 chunks together (swz). The wgmma
// path needs the canonical 128-byte-swizzle K-major layout: the 512 dims in 8 blocks of 64
// (128 bytes), each block a [64 rows][128 B] region of 8-row, 1024-byte swizzle atoms in which
// chunk c of row r sits at (c ^ (r % 8)). The same bytes read as N-major atoms (64 dims x 8 keys)
// serve as the B operand of P K, so K and V share one tile.
template <bool kWgmma>
__device__ __forceinline__ uint32_t tile_off(int r, int c) {
  if constexpr (kWgmma) return (c >> 3) * (64 * 128) + r * 128 + (((c & 7) ^ (r & 7)) << 4);
  else return swz(r, c, 64);
}

// wgmma shared-memory descriptor, 128-byte swizzle: start address, leading and stride byte offsets
// (PTX "matrix descriptor": bits 0-13 addr >> 4, 16-29 LBO >> 4, 32-45 SBO >> 4, 62-63 mode 1).
// K-major: SBO = 1024 between 8-row atoms, LBO unused. N-major: LBO = stride between 64-element
// blocks along N, SBO = 1024 between 8-row groups along K.
__device__ __forceinline__ uint64_t wg_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32) | (static_cast<uint64_t>(1) << 62);
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Generic-proxy smem writes (st.shared, cp.async) become visible to wgmma (async proxy) reads.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Pins accumulator registers so the compiler cannot move their use across the async wgmma.
template <int N>
__device__ __forceinline__ void pin(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Regions start on 1024-byte boundaries (the wgmma swizzle atoms); the launcher adds 1024 bytes so
// the kernel can align the dynamic smem base itself.
struct Smem {
  static constexpr int kQBytes = kMaxRowsPerCta * kDim * 2;
  static constexpr int kKBytes = kTileKeys * kDim * 2;
  static constexpr int kSBytes = kMaxRowsPerCta * kScoreStride * 4;
  static constexpr int kPBytes = kMaxRowsPerCta * kTileKeys * 2;
  static constexpr int kRawStride = (kRawBytes + 1023) / 1024 * 1024;
  static constexpr int kOffK = kQBytes;
  static constexpr int kOffRaw = kOffK + kKBytes;     // two raw tiles: two gathers in flight
  static constexpr int kOffS = kOffRaw + 2 * kRawStride;
  static constexpr int kOffP = kOffS;                 // P overwrites S once S is in registers
  static constexpr int kOffVec = kOffS + kSBytes;     // eight float/int arrays of 64
  static constexpr int kTotal = kOffVec + 8 * 64 * 4;
  static constexpr int kLaunchBytes = kTotal + 1024;
  static_assert(kPBytes <= kSBytes, "P fits in the score tile it replaces");
  static_assert(kOffK % 1024 == 0 && kOffRaw % 1024 == 0 && kOffS % 1024 == 0 && kRawStride % 1024 == 0,
                "1024-byte aligned regions");
  static_assert(kLaunchBytes <= 227 * 1024, "fits the sm_90 smem carve-out");
};

// mma.sync with 16-row warp tiles and 256 threads.
template <int RG>
__global__ void __launch_bounds__(kThreads, 1) sparse_decode_kernel(const Args a) {
  static_assert(RG == 1 || RG == 2 || RG == 4, "16, 32 or 64 rows a CTA");
  constexpr int kRows = 16 * RG;
  constexpr int kNT = kThreads;
  constexpr int kNW = kNT / 32;
  // Warp w owns rows [16 (w % RG), +16); the other factor of the warp index splits the keys of
  // S = Q K^T and the dims of O.
  constexpr int kSWarps = kNW;  // warps that compute S
  constexpr int kSNt = RG;      // 8-key n-tiles per S warp
  constexpr int kKeysPerWarp = 8 * kSNt;
  constexpr int kDimsPerWarp = kDim * RG / kNW;
  static_assert(kKeysPerWarp * (kSWarps / RG) == kTileKeys, "the S warps cover the key tile");
  constexpr int kONt = kDimsPerWarp / 8;
  constexpr int kTpr = kNT / kRows;        // softmax threads per row
  constexpr int kKpt = kTileKeys / kTpr;   // softmax keys per thread

  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* sQ = smem;
  uint8_t* sK = smem + Smem::kOffK;
  uint8_t* sRaw0 = smem + Smem::kOffRaw;
  float* sS = reinterpret_cast<float*>(smem + Smem::kOffS);
  uint8_t* sP = smem + Smem::kOffP;
  float* s_kscale = reinterpret_cast<float*>(smem + Smem::kOffVec);
  int* s_kvalid = reinterpret_cast<int*>(s_kscale + 64);
  int* s_slot = s_kvalid + 64;  // [3][64]
  float* s_alpha = reinterpret_cast<float*>(s_slot + 192);
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
    for (int i = tid; i < kRows * 64; i += kNT) {
      const int r = i >> 6, c = i & 63;
      uint8_t* dst = sQ + tile_off<false>(r, c);
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

  // Per-token layout: the scales of key `tid` of the two tiles in flight (older first).
  float pend_scale = 1.0f, pend_scale_next = 1.0f;

  // Slot of key `tid` (< 64) of tile t, -1 when invalid. A plain global load whose result is only
  // needed a phase later, so its latency hides behind the work in between.
  auto load_slot = [&](int t) {
    const int w = t < sc.tiles_main ? 0 : 1;
    const KeySet& ks = a.set[w];
    const int pos = (w == 0 ? t : t - sc.tiles_main) * kTileKeys + tid;
    if (pos >= len[w]) return -1;
    const int32_t v = __ldg(ks.idx + b * ks.idx_sb + s * ks.idx_ss + static_cast<int64_t>(pos) * ks.idx_sk);
    return (v >= 0 && v < ks.num_slots) ? v : -1;
  };

  // Gathers the raw bytes of tile t (cp.async) from the slots in `slots` (smem, -1 = invalid):
  // kTpk threads a key, so the slot -> address arithmetic runs once a thread. An invalid key's
  // bytes are zero-filled without a read (src-size 0), so the dequantization needs no validity
  // test and decodes it to zeros.
  auto issue = [&](int t, const int* slots, uint8_t* sRaw) {
    const KeySet& ks = a.set[t < sc.tiles_main ? 0 : 1];
    constexpr int kTpk = kNT / kTileKeys;
    const int key = tid / kTpk, sub = tid % kTpk;
    const int slot = slots[key];
    const bool valid = slot >= 0;
    const int s0 = valid ? slot : 0;
    if (ks.model1) {
      // 36 data chunks of 16 bytes and one 8-byte scale chunk a key.
      const int page = s0 / ks.page_size, off = s0 - page * ks.page_size;
      const uint8_t* pb = ks.data + static_cast<int64_t>(page) * ks.page_bytes;
      const uint8_t* src = pb + off * 576;
      uint8_t* dst = sRaw + key * 576;
#pragma unroll
      for (int j = 0; j < (36 + kTpk - 1) / kTpk; ++j) {
        const int c = sub + j * kTpk;
        if (c < 36) cp_async16_zfill(dst + c * 16, src + c * 16, valid);
      }
      if (sub == kTpk - 1)
        cp_async8_zfill(sRaw + kTileKeys * 576 + key * 8, pb + static_cast<int64_t>(ks.page_size) * 576 + off * 8,
                        valid);
      pend_scale_next = 1.0f;
    } else {
      const uint8_t* src = ks.data + static_cast<int64_t>(s0) * 512;
#pragma unroll
      for (int j = 0; j < 32 / kTpk; ++j) {
        const int c = sub + j * kTpk;
        cp_async16_zfill(sRaw + key * 512 + c * 16, src + c * 16, valid);
      }
      if (tid < kTileKeys) {
        const int sl = slots[tid];
        pend_scale_next = sl >= 0 ? __bfloat162float(__ushort_as_bfloat16(__ldg(ks.scales + sl))) : 0.0f;
      }
    }
  };

  // Raw tile -> bf16 key tile (swizzled rows of 64 chunks), key scales and validity.
  auto dequant = [&](int t, const int* slots, const uint8_t* sRaw) {
    const bool model1 = a.set[t < sc.tiles_main ? 0 : 1].model1;
    if (tid < kTileKeys) {
      s_kvalid[tid] = slots[tid] >= 0;
      s_kscale[tid] = pend_scale;
    }
#pragma unroll 4
    for (int j = 0; j < kTileKeys * 64 / kNT; ++j) {
      const int i = tid + j * kNT;
      const int key = i >> 6, c = i & 63;
      uint4 v;
      {  // invalid keys arrive as zero bytes (issue) and decode to zeros
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
      *reinterpret_cast<uint4*>(sK + tile_off<false>(key, c)) = v;
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

  // Pipeline over the live tiles T_0, T_1, ... of this split: iteration i dequantizes T_i from raw
  // buffer i % 2 while the gathers of T_(i+1) and (issued now) T_(i+2) are in flight; the slots of
  // a tile are loaded a whole iteration before its gather (ring of three slot rows, i % 3).
  int t = next_live(t_begin);
  int t1 = t < t_end ? next_live(t + 1) : t_end;
  if (tid < kTileKeys) {
    s_slot[tid] = t < t_end ? load_slot(t) : -1;
    s_slot[64 + tid] = t1 < t_end ? load_slot(t1) : -1;
  }
  __syncthreads();
  if (t < t_end) issue(t, s_slot, sRaw0);
  cp_async_commit();
  pend_scale = pend_scale_next;
  if (t1 < t_end) issue(t1, s_slot + 64, sRaw0 + Smem::kRawStride);
  cp_async_commit();
  int t2 = t1 < t_end ? next_live(t1 + 1) : t_end;
  int nslot = (t2 < t_end && tid < kTileKeys) ? load_slot(t2) : -1;

  const uint32_t sQa = smem_addr(sQ), sKa = smem_addr(sK), sPa = smem_addr(sP);
  int it = 0;
  while (t < t_end) {
    cp_async_wait_1();  // T_i has landed; T_(i+1) may still be in flight
    __syncthreads();
    const int ring = it % 3;
    uint8_t* raw = sRaw0 + (it & 1) * Smem::kRawStride;
    dequant(t, s_slot + ring * 64, raw);
    if (tid < kTileKeys) s_slot[((ring + 2) % 3) * 64 + tid] = nslot;
    __syncthreads();
    pend_scale = pend_scale_next;
    if (t2 < t_end) issue(t2, s_slot + ((ring + 2) % 3) * 64, raw);
    cp_async_commit();
    const int t3 = t2 < t_end ? next_live(t2 + 1) : t_end;
    nslot = (t3 < t_end && tid < kTileKeys) ? load_slot(t3) : -1;

    // ---- S = Q K^T for rows [rg*16, +16) and keys [kg*kKeysPerWarp, +kKeysPerWarp) ----
    if (warp < kSWarps) {
      const int kg = warp / RG;
      const int key0 = kg * kKeysPerWarp;
      float sacc[kSNt][4];
#pragma unroll
      for (int n = 0; n < kSNt; ++n) sacc[n][0] = sacc[n][1] = sacc[n][2] = sacc[n][3] = 0.0f;
      {
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
      __syncthreads();  // every score is in registers: P may now overwrite the score tile
#pragma unroll
      for (int o = kTpr / 2; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_new = fmaxf(m_run, mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // keeps exp2 away from (-inf) - (-inf)
      const float alpha = fast_exp2(m_run - m_use);
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < kKpt; ++j) {
        const int key = sm_part + kTpr * j;
        const float p = fast_exp2(sv[j] - m_use);
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
      {
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
    }
    t = t1;
    t1 = t2;
    t2 = t3;
    ++it;
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

// Merges the split partials of each row: four warps a row, one 128-dim quarter each, 4 dims a
// lane. The split weights are computed once a lane (split `lane` of each group of 32) and handed
// out by shuffles, so the partial-row loads do not depend on each other and eight splits' loads
// are in flight at once (a loop that loaded each split's lse and then its row was one dependent
// L2 round trip after another: most of a small batch's time).
__global__ void __launch_bounds__(256) sparse_decode_combine(const Args a) {
  // Launched as a programmatic dependent of the main kernel (launch.cu): its CTAs may start
  // before the partials are written; this waits until that grid has completed and its writes
  // are visible. A no-op when launched without the attribute.
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  const int64_t rows_total = a.sched.tokens * a.H;
  const int64_t gw = static_cast<int64_t>(blockIdx.x) * 8 + (threadIdx.x >> 5);
  const int64_t row = gw >> 2;
  if (row >= rows_total) return;
  const int quarter = static_cast<int>(gw & 3);
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
  const int dim0 = quarter * 128 + lane * 4;
  __nv_bfloat16* orow = a.out + row * kDim;
  if (!any) {  // no valid key in any split
    *reinterpret_cast<uint2*>(orow + dim0) = make_uint2(0, 0);
    if (a.lse && quarter == 0 && lane == 0) a.lse[row] = INFINITY;
    return;
  }
  float sum = 0.0f;
  for (int i = lane; i < splits; i += 32) sum += exp2f(a.ws_lse[i * rows_total + row] - mx);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const float lse2 = mx + log2f(sum);
  float factor = 1.0f;
  if (a.sink) factor = 1.0f / (1.0f + exp2f(a.sink[head] * 1.4426950408889634f - lse2));
  float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int base = 0; base < splits; base += 32) {
    const int n = min(32, splits - base);
    float wl = 0.0f;  // weight of split base + lane; 0 past the last split and for empty splits
    if (lane < n) {
      const float l = a.ws_lse[(base + lane) * rows_total + row];
      wl = l == -INFINITY ? 0.0f : exp2f(l - lse2);
    }
    for (int j0 = 0; j0 < n; j0 += 8) {
      float w[8];
      float4 v[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        w[j] = __shfl_sync(0xffffffffu, wl, (j0 + j) & 31);
        // An empty split (weight 0) wrote zeros; its row is not read. A NaN weight is read.
        v[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (j0 + j < n && w[j] != 0.0f)
          v[j] = *reinterpret_cast<const float4*>(a.ws_o + ((base + j0 + j) * rows_total + row) * kDim + dim0);
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        if (j0 + j < n && w[j] != 0.0f) {
          o.x += w[j] * v[j].x;
          o.y += w[j] * v[j].y;
          o.z += w[j] * v[j].z;
          o.w += w[j] * v[j].w;
        }
      }
    }
  }
  uint2 pk;
  pk.x = pack_bf16(o.x * factor, o.y * factor);
  pk.y = pack_bf16(o.z * factor, o.w * factor);
  *reinterpret_cast<uint2*>(orow + dim0) = pk;
  if (a.lse && quarter == 0 && lane == 0) a.lse[row] = lse2 * 0.6931471805599453f;
}

}  // namespace dsv4::cuda::sdec
