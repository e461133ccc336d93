// The wgmma sparse-decode kernel: one CTA per (query token, block of up to 64 heads, key split),
// four warpgroups (512 threads) in a producer/consumer pipeline over a ring of two bf16 key buffers.
// Rows past the block's last head are zero Q rows, so blocks of fewer than 64 heads run here too.
//
// Roles (the register split by setmaxnreg: 200 / 152 / 80 / 80 of the 128 a thread at launch):
//   warpgroup 0 (consumer S): S = Q K^T for all 64 keys of a tile (wgmma m64n64k16, Q and the keys
//     read once), the online softmax on the accumulators, P (bf16) into the tile's P buffer, then
//     O[:, 0:256) = alpha O + P V; it issues S of the next tile behind that O, so the tensor cores
//     run the next S while it waits.
//   warpgroup 1 (consumer O): O[:, 256:512) = alpha O + P V, once warpgroup 0 has written P.
//   warpgroups 2 and 3 (producers): gather the raw 584-byte entries of a tile into registers (4
//     threads a key, nine 16-byte chunks each, loaded in two halves that overlap the conversion of
//     the other half), dequantize them into the free key buffer, publish the valid-key bits and
//     (per-token layout) the key scales, and prefetch the next tile's rows to L2.
// Hand-offs are mbarriers, one phase per use of a buffer: full[b] (256 producer arrivals: buffer b
// holds the tile), empty[b] (256 consumer arrivals after their MMAs on buffer b completed), pready[b]
// (128 arrivals of warpgroup 0: P and alpha of the tile in buffer b are written). No CTA-wide
// barrier inside the tile loop: the producers run up to one tile ahead of the consumers, and the
// two consumer warpgroups meet only through pready.
//
// Same numerics as the mma.sync kernel (kernel.cuh): exact bf16 keys for MODEL1 (e4m3 -> bf16 is
// exact, and the ue8m0 scale multiply is one correctly rounded bf16 multiply of the exact product),
// raw e4m3 in the tile plus the token's scale in fp32 for the per-token layout; invalid keys are
// never read (their registers are zeros) and their logits are -inf.
#pragma once
#include "cuda/common/ptx_tma.cuh"
#include "cuda/common/ptx_wgmma.cuh"
#include "cuda/sparse_decode/kernel.cuh"

namespace dsv4::cuda::sdec {

inline constexpr int kWgThreads = 512;

#ifdef DSV4_SD_PROFILE
// Profile build only (-DDSV4_SD_PROFILE): lane 0 of every warp adds the clock64 cycles of each phase
// of its loop to g_sd_prof[spread][role][phase] (role 0 = warpgroup 0, 1 = warpgroup 1, 2 =
// producers; column 14 counts warps started, 15 tiles); launch.cu prints the sums at exit.
inline constexpr int kProfCols = 16;
__device__ unsigned long long g_sd_prof[8][3][kProfCols];
struct SdProf {
  long long last;
  unsigned long long* base;
  __device__ __forceinline__ void begin(int role, long long t0) {
    base = &g_sd_prof[blockIdx.x & 7][role][0];
    last = t0;
    if ((threadIdx.x & 31) == 0) atomicAdd(base + 14, 1ull);
  }
  __device__ __forceinline__ void at(int col) {
    const long long now = clock64();
    if ((threadIdx.x & 31) == 0) atomicAdd(base + col, static_cast<unsigned long long>(now - last));
    last = now;
  }
  __device__ __forceinline__ void tile() {
    if ((threadIdx.x & 31) == 0) atomicAdd(base + 15, 1ull);
  }
};
#define SD_P(...) __VA_ARGS__
#define SD_VAR(bit) ((a.prof_var >> (bit)) & 1)
#else
#define SD_P(...)
#define SD_VAR(bit) false
#endif
// setmaxnreg targets: launched at 65536 / 512 = 128 a thread; the producers give back exactly what
// the consumers take (setmaxnreg.inc waits until the registers are free).
inline constexpr int kRegsS = 192;  // warpgroup 0: acc 128 + S accumulators 32 + softmax state
inline constexpr int kRegsO = 160;  // warpgroup 1: acc 128
inline constexpr int kRegsP = 80;   // warpgroups 2, 3: raw chunks 36 + offsets
static_assert(kRegsS + kRegsO + 2 * kRegsP == 4 * (65536 / kWgThreads), "the register split must balance");

struct SmemWg {
  static constexpr int kQBytes = kMaxRowsPerCta * kDim * 2;
  static constexpr int kKBytes = kTileKeys * kDim * 2;
  static constexpr int kPBytes = kMaxRowsPerCta * kTileKeys * 2;
  static constexpr int kOffK = kQBytes;              // two key buffers, kKBytes apart
  static constexpr int kOffP = kOffK + 2 * kKBytes;  // two P buffers (bf16, K-major 128-byte swizzle)
  static constexpr int kOffVec = kOffP + 2 * kPBytes;
  static constexpr int kOffKScale = kOffVec;          // f32 [2][64]: per-token key scales (1 for MODEL1)
  static constexpr int kOffAlpha = kOffVec + 512;     // f32 [2][64]: the tile's O rescale factors
  static constexpr int kOffM = kOffVec + 1024;        // f32 [64]: final row maxima (log2 domain)
  static constexpr int kOffL = kOffVec + 1280;        // f32 [64]: final row sums
  static constexpr int kOffMask = kOffVec + 1536;     // u8 [2][8]: valid-key bits, byte w = keys 8w..8w+7
  static constexpr int kOffBar = kOffVec + 1552;      // u64 mbarriers: full[2], empty[2], pready[2]
  static constexpr int kOffTouch = kOffBar + 64;      // u32 [256]: the producers' scoreboard-wait stores
  static constexpr int kOffRed = kOffTouch + 256 * 4;  // f32 [2][4][32]: narrow S^T's cross-warp head maxima
  static constexpr int kTotal = kOffRed + 2 * 4 * 32 * 4;
  static constexpr int kLaunchBytes = kTotal + 1024;
  static_assert(kOffK % 1024 == 0 && kKBytes % 1024 == 0 && kOffP % 1024 == 0 && kPBytes % 1024 == 0,
                "1024-byte aligned regions");
  static_assert(kOffBar % 8 == 0, "mbarriers are 8-byte aligned");
  static_assert(kLaunchBytes <= 227 * 1024, "fits the sm_90 smem carve-out");
  static_assert(kOffP >= kMaxRowsPerCta * (kDim * 4 + 32), "the f32 epilogue staging fits in the Q and key buffers");
};

// One producer thread's share of one key's raw bytes: the 16-byte chunks c = q + 4 j (j < 9) of the
// 36 (MODEL1: 28 e4m3 + 8 rope) or 32 (per-token) a key holds, q = the thread's quarter of the key.
struct RawShare {
  uint4 c[9];
  uint2 sc;      // MODEL1: the key's eight ue8m0 scale bytes
  uint2 sc1;     // the same bytes, loaded with the second half (split loads)
  float tscale;  // per-token layout: the key's scale (0 when invalid)
};

// Loads of a key's raw bytes through GENERIC addresses: ptxas cannot prove that they do not alias
// shared memory, so it keeps them between the producers' shared stores around them (the scoreboard
// wait store before, the conversion's stores after). ld.global.nc loads it schedules freely, and
// it sank them below the next half's conversion (register pressure at 80), where their latency
// was exposed again. The bytes are read once, so the read-only path buys nothing here.
__device__ __forceinline__ uint4 ld_generic_v4(const void* p) {
  uint4 v;
  asm volatile("ld.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 ld_generic_v2(const void* p) {
  uint2 v;
  asm volatile("ld.v2.u32 {%0, %1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

// Two e4m3 codes (low byte first) to bf16x2, exactly (every e4m3 value is a bf16).
__device__ __forceinline__ uint32_t e4m3x2_to_bf16x2(uint32_t codes) {
  const float2 f = e4m3x2_to_f2(codes);
  return pack_bf16(f.x, f.y);
}
// bf16x2 product, rounded once (sm_90 mul.rn.bf16x2; subnormals kept).
__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}
// Eight e4m3 codes (low byte first) to eight bf16, each times the bf16x2 `scale2` (a power of two
// in both halves): e4m3 * 2^k rounded once to bf16, as the f32 path would.
__device__ __forceinline__ uint4 e4m3x8_to_bf16_scaled(uint32_t lo, uint32_t hi, uint32_t scale2) {
  return make_uint4(bf16x2_mul(e4m3x2_to_bf16x2(lo), scale2), bf16x2_mul(e4m3x2_to_bf16x2(lo >> 16), scale2),
                    bf16x2_mul(e4m3x2_to_bf16x2(hi), scale2), bf16x2_mul(e4m3x2_to_bf16x2(hi >> 16), scale2));
}
__device__ __forceinline__ uint4 e4m3x8_to_bf16(uint32_t lo, uint32_t hi) {
  return make_uint4(e4m3x2_to_bf16x2(lo), e4m3x2_to_bf16x2(lo >> 16), e4m3x2_to_bf16x2(hi),
                    e4m3x2_to_bf16x2(hi >> 16));
}
// A ue8m0 scale byte as bf16x2 (both halves): 2^(e - 127) exactly; e = 0 is the subnormal 2^-127
// (0x0040), 0xFF the NaN scale.
__device__ __forceinline__ uint32_t ue8m0_bf16x2(uint32_t e) {
  uint32_t h = e << 7;
  h = e == 0 ? 0x0040u : h;
  h = e == 0xFF ? 0x7FC0u : h;
  return h * 0x10001u;
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
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p));
}
__device__ __forceinline__ void wg_wait_1() { asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory"); }
// A wgmma descriptor from its two 32-bit halves (no 64-bit arithmetic: offsets are added to the
// low half, whose 14-bit address field cannot carry for addresses inside the CTA's smem).
__device__ __forceinline__ uint64_t desc_of(uint32_t lo, uint32_t hi) {
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
// Low half of a 128-byte-swizzle descriptor: start address >> 4 and the leading byte offset.
__device__ __forceinline__ uint32_t desc_lo(uint32_t addr, uint32_t lbo) { return (addr >> 4) | ((lbo >> 4) << 16); }
// High half: stride byte offset 1024 (8-row atoms) and the 128-byte swizzle mode.
inline constexpr uint32_t kDescHi = (1024u >> 4) | (1u << 30);
// Descriptor offset (16-byte units) of K slice kk (16 dims) in a 64-row, 512-dim K-major tile (Q or
// a key buffer): 64-dim blocks 8 KB apart, 32 bytes a slice inside a block.
__device__ __forceinline__ uint32_t dim_slice_off(int kk) { return ((kk >> 2) * (64 * 128) + (kk & 3) * 32) >> 4; }

// Head r's output factor (1 / l, times the sink's share of the softmax mass) and lse (natural
// log; +inf and factor 0 when no key was valid or r is a padding row).
__device__ __forceinline__ void epi_factor(const Args& a, int head0, int r, int nh, float l, float m, float& factor,
                                           float& lse_nat) {
  factor = 0.0f, lse_nat = INFINITY;
  if (m != -INFINITY && r < nh) {
    const float lse2 = m + log2f(l);
    factor = 1.0f / l;
    if (a.sink) factor *= 1.0f / (1.0f + exp2f(a.sink[head0 + r] * 1.4426950408889634f - lse2));
    lse_nat = lse2 * 0.6931471805599453f;
  }
}

// Where a CTA's rows go: its first output row (token * H + head0), heads, split.
struct EpiRows {
  int head0, nh, split;
  int64_t row0, rows_total;
};
__device__ __forceinline__ EpiRows epi_rows(const Args& a) {
  const Schedule& sc = a.sched;
  const uint32_t cta = blockIdx.x;
  const int hb = static_cast<int>(cta % static_cast<uint32_t>(sc.head_blocks));
  const uint32_t rest = cta / static_cast<uint32_t>(sc.head_blocks);
  EpiRows e;
  e.split = static_cast<int>(rest % static_cast<uint32_t>(sc.num_splits));
  const int64_t tok = rest / static_cast<uint32_t>(sc.num_splits);
  e.head0 = hb * kMaxRowsPerCta;
  e.nh = min(kMaxRowsPerCta, a.H - e.head0);
  e.row0 = tok * a.H + e.head0;
  e.rows_total = sc.tokens * a.H;
  return e;
}

// Row pitches of the epilogue staging (bf16 out / f32 partials), padded so the stores are
// conflict-free; the copy-out below writes the staged rows as whole 16-byte chunks, a warp 512
// contiguous bytes of a row.
inline constexpr int kEpiPitchB = kDim * 2 + 16, kEpiPitchF = kDim * 4 + 32;
__device__ __forceinline__ void epi_copy_out(const Args& a, const EpiRows& e, uint32_t sQe, int ctid) {
  if (a.sched.num_splits == 1) {
    for (int i = ctid; i < e.nh * 64; i += 256) {
      const int r = i >> 6, c = i & 63;
      const uint4 v = lds128(sQe + r * kEpiPitchB + c * 16);
      stg128(a.out + (e.row0 + r) * kDim + c * 8, v);
    }
  } else {
    float* ws = a.ws_o + (e.split * e.rows_total + e.row0) * kDim;
    for (int i = ctid; i < e.nh * 128; i += 256) {
      const int r = i >> 7, c = i & 127;
      const uint4 v = lds128(sQe + r * kEpiPitchF + c * 16);
      stg128(ws + r * kDim + c * 4, v);
    }
  }
}

// Epilogue of one consumer warpgroup (warpgroup 0: O dims [0, 256), warpgroup 1: [256, 512)):
// rows r0 and r0 + 8 of each warp, staged through the free Q and key buffers (rows padded by 16 /
// 32 bytes: conflict-free) so the global stores are whole 16-byte chunks, a warp writing 512
// contiguous bytes of a row. The two consumer warpgroups (256 threads) meet at named barrier 1;
// the producers have left. The caller has passed one barrier 1 after its last MMA completed, so
// the key buffers and Q are free.
// It keeps its own inline copies of epi_factor / epi_copy_out: written through those helpers the
// wide kernels compiled differently and measured 1-3% slower from graphs on Pro / HCA (round 11
// of docs/notes/sparse_decode.md); as it stands their SASS is the seventh session's.
__device__ __forceinline__ void wg_epilogue(const Args& a, const float (&acc0)[16][4], const float (&acc1)[16][4],
                                            int qd0, uint32_t sQe, const float* s_m, const float* s_l, int ctid,
                                            int r0) {
  constexpr int kPitchB = kDim * 2 + 16, kPitchF = kDim * 4 + 32;
  const Schedule& sc = a.sched;
  const int tq = ctid & 3;
  const uint32_t cta = blockIdx.x;
  const int hb = static_cast<int>(cta % static_cast<uint32_t>(sc.head_blocks));
  const uint32_t rest = cta / static_cast<uint32_t>(sc.head_blocks);
  const int split = static_cast<int>(rest % static_cast<uint32_t>(sc.num_splits));
  const int64_t tok = rest / static_cast<uint32_t>(sc.num_splits);
  const int head0 = hb * kMaxRowsPerCta;
  const int nh = min(kMaxRowsPerCta, a.H - head0);
  const int64_t row0 = tok * a.H + head0;
  if (sc.num_splits == 1) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = r0 + half * 8;
      const float l = s_l[r], m = s_m[r];
      float factor = 0.0f, lse_nat = INFINITY;
      if (m != -INFINITY && r < nh) {
        const float lse2 = m + log2f(l);
        factor = 1.0f / l;
        if (a.sink) factor *= 1.0f / (1.0f + exp2f(a.sink[head0 + r] * 1.4426950408889634f - lse2));
        lse_nat = lse2 * 0.6931471805599453f;
      }
      const uint32_t rowa = sQe + r * kPitchB + qd0 * 256 + tq * 4;
#pragma unroll
      for (int n = 0; n < 16; ++n) {
        sts32(rowa + n * 16, pack_bf16(acc0[n][half * 2] * factor, acc0[n][half * 2 + 1] * factor));
        sts32(rowa + 256 + n * 16, pack_bf16(acc1[n][half * 2] * factor, acc1[n][half * 2 + 1] * factor));
      }
      if (a.lse && qd0 == 0 && tq == 0 && r < nh) a.lse[row0 + r] = lse_nat;
    }
    ptx::named_barrier_sync(1, 256);
    for (int i = ctid; i < nh * 64; i += 256) {
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
      const uint32_t rowa = sQe + r * kPitchF + qd0 * 512 + tq * 8;
#pragma unroll
      for (int n = 0; n < 16; ++n) {
        sts64(rowa + n * 32, acc0[n][half * 2] * inv, acc0[n][half * 2 + 1] * inv);
        sts64(rowa + 512 + n * 32, acc1[n][half * 2] * inv, acc1[n][half * 2 + 1] * inv);
      }
      if (qd0 == 0 && tq == 0 && r < nh) a.ws_lse[split * rows_total + row0 + r] = empty ? -INFINITY : m + log2f(l);
    }
    ptx::named_barrier_sync(1, 256);
    float* ws = a.ws_o + (split * rows_total + row0) * kDim;
    for (int i = ctid; i < nh * 128; i += 256) {
      const int r = i >> 7, c = i & 127;
      const uint4 v = lds128(sQe + r * kPitchF + c * 16);
      stg128(ws + r * kDim + c * 4, v);
    }
  }
}

// The same for the transposed O^T of the narrow instance (kNO = 16 heads): this thread holds,
// for each 64-dim block mb of its warpgroup's 256 dims, dims 16 rg + lane / 4 (+ 8) and heads
// 8 j + 2 (lane % 4) + {0, 1}. Heads are the staging rows, so the stores are 2- / 4-byte ones.
template <int kNO>
__device__ __forceinline__ void wg_epilogue_t(const Args& a, const float (&ot)[4][kNO / 2], int qd0, uint32_t sQe,
                                              const float* s_m, const float* s_l, int ctid, int rg, int lane) {
  const EpiRows e = epi_rows(a);
  const bool one = a.sched.num_splits == 1;
  const int dim0 = qd0 * 128 + rg * 16 + (lane >> 2);
#pragma unroll
  for (int j = 0; j < kNO / 8; ++j) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int r = 8 * j + 2 * (lane & 3) + c;
      const float l = s_l[r], m = s_m[r];
      float factor, lse_nat;
      if (one) epi_factor(a, e.head0, r, e.nh, l, m, factor, lse_nat);
      else factor = m == -INFINITY ? 0.0f : 1.0f / l;
#pragma unroll
      for (int mb = 0; mb < 4; ++mb) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int dim = dim0 + mb * 64 + 8 * h;
          const float v = ot[mb][4 * j + 2 * h + c] * factor;
          if (one) {
            const uint16_t bits = __bfloat16_as_ushort(__float2bfloat16_rn(v));
            asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(sQe + r * kEpiPitchB + dim * 2), "h"(bits) : "memory");
          } else {
            asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(sQe + r * kEpiPitchF + dim * 4), "f"(v) : "memory");
          }
        }
      }
    }
  }
  // lse / the split's log2-sum-exp, one thread a head.
  if (qd0 == 0 && ctid < e.nh) {
    const int r = ctid;
    const float l = s_l[r], m = s_m[r];
    if (one) {
      float factor, lse_nat;
      epi_factor(a, e.head0, r, e.nh, l, m, factor, lse_nat);
      if (a.lse) a.lse[e.row0 + r] = lse_nat;
    } else {
      a.ws_lse[e.split * e.rows_total + e.row0 + r] = m == -INFINITY ? -INFINITY : m + log2f(l);
    }
  }
  ptx::named_barrier_sync(1, 256);
  epi_copy_out(a, e, sQe, ctid);
}

// kM1: every key set is MODEL1 (the model's layout), so the per-token branches and the per-key
// scale factors compile away; the general instance serves any mix of layouts.
// kV (variant bits; round 8 of docs/notes/sparse_decode.md): 2 = the softmax folds the scale into
// the exponent FFMA (MODEL1, scale > 0), 4 = with 2, the
// masking selects are skipped on all-valid tiles, 8 = the fold decided at compile time (the host
// launches this instance only for MODEL1 with scale > 0: no fallback code in the softmax).
// kNO (the narrow instance, blocks of at most kNO = 16 heads): S and O are computed transposed on
// wgmma m64 x kNO, S^T = K Q^T (keys as M, Q's first kNO rows as B) with the softmax down the
// columns, and O^T = V^T P^T (the key tile as the M-major A operand in place, P's first kNO rows
// as B), so the padded rows of the wide kernel's M = 64 are never read.
template <bool kM1, int kV = 0, int kNO = 0>
__global__ void __launch_bounds__(kWgThreads, 1) sparse_decode_wg_kernel(const Args a) {
  constexpr int kONt = 16;  // 128 dims per O accumulator in 8-dim n-tiles
  constexpr int kSNt = 8;   // 64 keys of S in 8-key n-tiles
  constexpr bool kT = kNO > 0;
  constexpr int kNOT = kT ? kNO / 2 : 1;  // f32 accumulators a thread of one m64 x kNO block of O^T
  static_assert(kNO == 0 || kNO == 16, "narrow instance: 16 heads (an n32 version was slower than the wide kernel)");

  SD_P(const long long prof_t0 = clock64(); SdProf pf;)
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  // One aligned base for the whole kernel: every smem access below is base + a constant or a
  // per-thread offset computed once.
  const uint32_t raw_addr = smem_addr(smem_raw);
  const uint32_t sbase = (raw_addr + 1023u) & ~1023u;
  uint8_t* smem = smem_raw + (sbase - raw_addr);
  const uint32_t sQa = sbase, sK0a = sbase + SmemWg::kOffK, sP0a = sbase + SmemWg::kOffP;
  float* s_kscale = reinterpret_cast<float*>(smem + SmemWg::kOffKScale);  // [2][64]
  float* s_alpha = reinterpret_cast<float*>(smem + SmemWg::kOffAlpha);    // [2][64]
  float* s_m = reinterpret_cast<float*>(smem + SmemWg::kOffM);
  float* s_l = reinterpret_cast<float*>(smem + SmemWg::kOffL);
  uint8_t* s_vmask = smem + SmemWg::kOffMask;                             // [2][8]
  uint64_t* bar_full = reinterpret_cast<uint64_t*>(smem + SmemWg::kOffBar);
  uint64_t* bar_empty = bar_full + 2;
  uint64_t* bar_pready = bar_full + 4;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int dg = ptx::warp_uniform(tid >> 7);  // descriptor arithmetic in uniform registers
  // The split combine is launched as a programmatic dependent (launch.cu): let its CTAs launch
  // now, onto the SMs this grid leaves free, so that they wait at griddepcontrol.wait instead of
  // behind a launch gap. Nothing here depends on it; a no-op without a dependent.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  const Schedule& sc = a.sched;
  // Profile: when the first kernel parameter is in a register (constant-bank latency at launch).
  SD_P(long long pq_par; asm volatile("mov.u64 %0, %%clock64;" : "=l"(pq_par) : "r"(sc.head_blocks));)
  int64_t cta = blockIdx.x;
  const int hb = static_cast<int>(cta % sc.head_blocks);
  cta /= sc.head_blocks;
  const int split = static_cast<int>(cta % sc.num_splits);
  const int64_t tok = cta / sc.num_splits;  // b * S + s
  const int64_t b = tok / a.S;
  const int s = static_cast<int>(tok % a.S);
  const int head0 = hb * kMaxRowsPerCta;
  const int nh = min(kMaxRowsPerCta, a.H - head0);

  // Effective lengths, as two scalars (an array indexed by the set would live in local memory).
  auto eff_len = [&](const KeySet& ks) {
    int n = ks.K;
    if (ks.len) n = max(0, min(n, ks.len[b * ks.len_sb + s * ks.len_ss]));
    return n;
  };
  // Uniform lengths: the tile indices derived from them live in uniform registers.
  const int len0 = ptx::warp_uniform(eff_len(a.set[0]));
  const int len1 = ptx::warp_uniform(eff_len(a.set[1]));
  const int t_begin = split * sc.tiles_per_split;
  const int t_end = min(t_begin + sc.tiles_per_split, sc.tiles_main + sc.tiles_extra);
  // The first tile at or after t that holds a key below its set's length (t_end when none): every
  // role walks the same sequence.
  auto next_live = [&](int t) {
    if (t < sc.tiles_main) {
      if (t * kTileKeys < len0) return min(t, t_end);
      t = sc.tiles_main;
    }
    if (t >= t_end) return t_end;
    return ((t - sc.tiles_main) * kTileKeys < len1) ? t : t_end;
  };

  // ======================= producer state (warpgroups 2, 3) =======================
  // Defined before the Q load: the producers issue the first tiles' index loads before their share
  // of Q, and the first half-tile of key bytes before the barrier, so the index -> key-load chain of
  // the first tile overlaps the Q load instead of following it.
  const int pt = tid - 256, key = pt >> 2, q = pt & 3;
  // Raw index of this thread's key of tile t (-1 past the length).
  auto load_index = [&](int t) -> int32_t {
    const bool main = t < sc.tiles_main;
    const KeySet& ks = a.set[main ? 0 : 1];
    const int pos = (main ? t : t - sc.tiles_main) * kTileKeys + key;
    if (pos >= (main ? len0 : len1)) return -1;
    return __ldg(ks.idx + b * ks.idx_sb + s * ks.idx_ss + static_cast<int64_t>(pos) * ks.idx_sk);
  };
  // Byte offsets of the key's data and scale(s) in its set's cache, -1 when the index is invalid.
  auto offsets = [&](int t, int32_t v, int64_t& d, int64_t& e) {
    const KeySet& ks = a.set[t < sc.tiles_main ? 0 : 1];
    d = -1;
    e = -1;
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
  };
  // The key's 576-byte row (and its scale bytes) into L2, a tile ahead of the loads.
  auto prefetch = [&](int t, int64_t d, int64_t e) {
    if (d < 0) return;
    const KeySet& ks = a.set[t < sc.tiles_main ? 0 : 1];
    const uint8_t* row = ks.data + d;
    prefetch_l2(row + 128 * q);
    if (kM1 || ks.model1) {
      if (q == 0) prefetch_l2(row + 512);
      else if (q == 1) prefetch_l2(row + 575);
      else if (q == 2) prefetch_l2(ks.data + e);
    }
  };
  // FP8 chunk c = q + 4 j goes to 16-byte columns 2c, 2c + 1 of row `key`, i.e.
  // tile_off(key, 2c) = 8192 j + kdst0 and that ^ 16; MODEL1 rope chunk c (j = 7, 8) goes to
  // column c + 28 = 56 + q + 4 (j - 7).
  const uint32_t kdst0 = tile_off<true>(key, 2 * q);
  // Split loads: half A = slots j < kB0 (+ the scale bytes), half B = j >= kB0 (+ the scale bytes
  // again, or the per-token scale). Half A of tile t+1 is loaded while half B of tile t converts,
  // half B of tile t while half A of tile t converts, so each load has half a tile's conversion
  // to land in (the registers do not allow a whole second tile in flight). MODEL1: 4 e4m3 slots in
  // A, 3 e4m3 + the 2 rope slots (copied, not converted) in B, about equal conversion work.
  constexpr int kB0 = 4;
  auto load_half = [&](int t, int64_t d, int64_t e, RawShare& r, bool hb) {
    const KeySet& ks = a.set[t < sc.tiles_main ? 0 : 1];
    const bool m1 = kM1 || ks.model1;
#pragma unroll
    for (int j = 0; j < 9; ++j)
      if ((j >= kB0) == hb) r.c[j] = make_uint4(0, 0, 0, 0);
    if (hb) {
      r.sc1 = make_uint2(0, 0);
      r.tscale = 0.0f;
    } else {
      r.sc = make_uint2(0, 0);
    }
    if (d >= 0) {
      const uint4* src = reinterpret_cast<const uint4*>(ks.data + d) + q;
#pragma unroll
      for (int j = 0; j < 9; ++j)
        if ((j >= kB0) == hb && (m1 || j < 8)) r.c[j] = ld_generic_v4(src + 4 * j);
      if (m1) {
        const uint2 v = ld_generic_v2(ks.data + e);
        if (hb) r.sc1 = v;
        else r.sc = v;
      } else if (hb && q == 0) {
        r.tscale = __bfloat162float(__ushort_as_bfloat16(__ldg(ks.scales + e)));
      }
    }
  };
  auto store_half = [&](int t, const RawShare& r, int buf, bool hb) {
    const bool model1 = kM1 || a.set[t < sc.tiles_main ? 0 : 1].model1;
    const uint32_t dst = sK0a + buf * SmemWg::kKBytes;
#pragma unroll
    for (int j = 0; j < 9; ++j) {
      if ((j >= kB0) != hb) continue;
      if (model1) {
        if (j < 7) {
          const uint2 scb = hb ? r.sc1 : r.sc;
          const uint32_t s2 = ue8m0_bf16x2(((j < 4 ? scb.x : scb.y) >> (8 * (j & 3))) & 0xFF);
          const uint32_t o = dst + 8192 * j + kdst0;
          sts128(o, e4m3x8_to_bf16_scaled(r.c[j].x, r.c[j].y, s2));
          sts128(o ^ 16, e4m3x8_to_bf16_scaled(r.c[j].z, r.c[j].w, s2));
        } else {
          sts128(dst + tile_off<true>(key, 56 + q + 4 * (j - 7)), r.c[j]);
        }
      } else if (j < 8) {
        const uint32_t o = dst + 8192 * j + kdst0;
        sts128(o, e4m3x8_to_bf16(r.c[j].x, r.c[j].y));
        sts128(o ^ 16, e4m3x8_to_bf16(r.c[j].z, r.c[j].w));
      }
    }
    if (!kM1 && hb && q == 0) s_kscale[buf * 64 + key] = model1 ? 1.0f : r.tscale;
  };

  // The first read of a loaded register waits for EVERY global load in flight (ptxas puts all of
  // them on one scoreboard: the SASS of da9bc76..2ef9598 waits on SB5 at the first conversion of
  // half B, right after issuing half A of the next tile, so each tile exposed a whole load latency;
  // ncu put 19% of the producers' stall samples on that one instruction). So each half is read
  // once, into a scratch word, just BEFORE the next half's loads are issued: the wait then covers
  // only loads that have had half a tile to land, and the conversion after it reads registers
  // already known complete.
  const uint32_t touch_addr = sbase + SmemWg::kOffTouch + 4 * pt;
  // One register of the half is enough (every load is on that one scoreboard). A shared store, not
  // an ALU op: ptxas keeps it in order with the shared stores and barrier waits around it, so the
  // wait stays where it is written (an XOR of the registers got hoisted above an mbarrier wait).
  auto touch_half = [&](const RawShare& r, bool hb) {
    asm volatile("st.shared.b32 [%0], %1;" ::"r"(touch_addr), "r"(hb ? r.c[kB0].x : r.c[0].x) : "memory");
  };

  int t_p = t_end, tn_p = t_end;
  int64_t d_p = -1, e_p = -1;
  int32_t v_p = -1, vn_p = -1;
  RawShare raw;
  SD_P(long long pq_addr = 0;)
  if (dg >= 2) {
    t_p = next_live(t_begin);
    // Profile: when the first index load's inputs are ready (after the CTA decomposition).
    SD_P(asm volatile("mov.u64 %0, %%clock64;" : "=l"(pq_addr) : "r"(t_p), "l"(b), "r"(s));)
    if (t_p < t_end) v_p = load_index(t_p);
    tn_p = t_p < t_end ? next_live(t_p + 1) : t_end;
    vn_p = tn_p < t_end ? load_index(tn_p) : -1;
  }

  // ---- Q rows into smem (zeros past the last head), barriers initialised ----
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
  if (tid == 0) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      ptx::mbar_init(bar_full + i, 256);
      ptx::mbar_init(bar_empty + i, 256);
      ptx::mbar_init(bar_pready + i, 128);
    }
  }

  SD_P(long long pq_idx = prof_t0, pq_q = 0, pq_sync = 0;)
  if (dg >= 2 && t_p < t_end) {
    offsets(t_p, v_p, d_p, e_p);
    // Profile: the clock read takes d_p as an input, so it follows the index load's arrival.
    SD_P(asm volatile("mov.u64 %0, %%clock64;" : "=l"(pq_idx) : "l"(d_p));)
    if (!SD_VAR(1)) load_half(t_p, d_p, e_p, raw, false);
  }
  cp_async_wait_all();
  SD_P(pq_q = clock64();)
  fence_proxy_async();
  __syncthreads();  // Q and the barriers are ready; the last CTA-wide barrier
  SD_P(pq_sync = clock64();)

  if (dg >= 2) {
    // ======================= producers: gather + dequantize =======================
    ptx::setmaxnreg_dec<kRegsP>();
    SD_P(pf.begin(2, prof_t0);)
    // Profile: the prologue's parts, per warp: kernel start -> first parameter in a register (11)
    // -> first index load's inputs ready (12); kernel start -> first index landed (6) -> Q landed
    // (7) -> the CTA barrier passed (8) -> the first key half landed (9, in the loop below).
    SD_P(if (lane == 0) {
      atomicAdd(pf.base + 11, static_cast<unsigned long long>(pq_par - prof_t0));
      atomicAdd(pf.base + 12, static_cast<unsigned long long>(pq_addr - pq_par));
      atomicAdd(pf.base + 6, static_cast<unsigned long long>(pq_idx - prof_t0));
      atomicAdd(pf.base + 7, static_cast<unsigned long long>(max(pq_q - pq_idx, 0ll)));
      atomicAdd(pf.base + 8, static_cast<unsigned long long>(pq_sync - max(pq_q, pq_idx)));
    })
    int t = t_p, tn = tn_p;
    int64_t d = d_p, e = e_p;
    int32_t vn = vn_p;
    SD_P(pf.at(0);)
    for (int it = 0; t < t_end; ++it) {
      const int buf = it & 1;
      SD_P(pf.tile();)
      if (!SD_VAR(1)) {
        touch_half(raw, false);  // half A of tile t landed (issued before the previous half B converted)
        SD_P({
          long long now;
          asm volatile("mov.u64 %0, %%clock64;" : "=l"(now) : "r"(raw.c[0].x) : "memory");
          if (it == 0 && lane == 0) atomicAdd(pf.base + 9, static_cast<unsigned long long>(now - pq_sync));
          // Column 13 (per tile): from the phase start to half A's arrival, the wait inside column 1.
          if (lane == 0) atomicAdd(pf.base + 13, static_cast<unsigned long long>(now - pf.last));
        })
        load_half(t, d, e, raw, true);
      }
      // Issued with half B: the next scoreboard wait (touch_half of half B) covers it too.
      const int tnn = tn < t_end ? next_live(tn + 1) : t_end;
      const int32_t vnn = tnn < t_end ? load_index(tnn) : -1;
      int64_t dn = -1, en = -1;
      if (tn < t_end) {
        offsets(tn, vn, dn, en);
        prefetch(tn, dn, en);
      }
      SD_P(pf.at(1);)
      // Buffer `buf` was last used by tile it - 2: wait until both consumers' MMAs on it completed.
      if (it >= 2) ptx::mbar_wait(bar_empty + buf, ((it >> 1) - 1) & 1);
      SD_P(pf.at(2);)
      if (!SD_VAR(1)) {
        store_half(t, raw, buf, false);
        touch_half(raw, true);  // half B of tile t landed (issued before half A converted)
        if (tn < t_end) load_half(tn, dn, en, raw, false);
      }
      SD_P(pf.at(3);)
      if (!SD_VAR(1)) store_half(t, raw, buf, true);
      SD_P(pf.at(4);)
      // Valid-key bits: lanes 4k .. 4k + 3 of this warp hold key 8 w + k.
      const uint32_t bal = __ballot_sync(0xffffffffu, d >= 0);
      if (lane == 0) {
        uint32_t m8 = 0;
#pragma unroll
        for (int k = 0; k < 8; ++k) m8 |= ((bal >> (4 * k)) & 1u) << k;
        s_vmask[buf * 8 + (pt >> 5)] = static_cast<uint8_t>(m8);
      }
      fence_proxy_async();
      ptx::mbar_arrive(bar_full + buf);
      t = tn;
      d = dn;
      e = en;
      tn = tnn;
      vn = vnn;
      SD_P(pf.at(5);)
    }
    SD_P(pf.at(10);)
    return;
  }

  // ======================= consumers =======================
  const int rg = warp & 3;                  // rows [16 rg, +16) of the warpgroup's tiles
  const int r0 = rg * 16 + (lane >> 2);     // this thread's rows r0 and r0 + 8
  const int ctid = tid;                     // 0..255 over both consumer warpgroups
  constexpr uint32_t kKBufDesc = SmemWg::kKBytes >> 4, kPBufDesc = SmemWg::kPBytes >> 4;
  // O reads P (K-major) and 128-dim quarters of the key tile as an N-major operand (LBO: the
  // 8 KB between 64-dim blocks); warpgroup dg owns quarters 2 dg and 2 dg + 1.
  const uint32_t dp_lo = desc_lo(sP0a, 16);
  const uint32_t dko_lo = desc_lo(sK0a + dg * 4 * (64 * 128), 64 * 128);
  constexpr uint32_t kQuarterDesc = (2 * 64 * 128) >> 4;
  // The accumulators are declared in each role's branch, after its setmaxnreg.inc: live across the
  // increase they would have to fit the 128 registers of the launch.
  auto zero_o = [&](auto& acc0, auto& acc1) {
#pragma unroll
    for (int n = 0; n < kONt; ++n) {
      acc0[n][0] = acc0[n][1] = acc0[n][2] = acc0[n][3] = 0.0f;
      acc1[n][0] = acc1[n][1] = acc1[n][2] = acc1[n][3] = 0.0f;
    }
  };
  // O = alpha O + P V for this warpgroup's 256 dims, from P buffer and key buffer `buf`.
  auto rescale = [&](auto& acc0, auto& acc1, float al0, float al1) {
    // Once the running maxima settle most tiles leave them unchanged (alpha == 1 on every row of
    // the warp): skip the 128 multiplies then.
    if (__any_sync(0xffffffffu, al0 != 1.0f || al1 != 1.0f)) {
#pragma unroll
      for (int n = 0; n < kONt; ++n) {
        acc0[n][0] *= al0;
        acc0[n][1] *= al0;
        acc0[n][2] *= al1;
        acc0[n][3] *= al1;
        acc1[n][0] *= al0;
        acc1[n][1] *= al0;
        acc1[n][2] *= al1;
        acc1[n][3] *= al1;
      }
    }
  };
  auto issue_o = [&](auto& acc0, auto& acc1, int buf) {
    float(&d0)[kONt * 4] = reinterpret_cast<float(&)[kONt * 4]>(acc0);
    float(&d1)[kONt * 4] = reinterpret_cast<float(&)[kONt * 4]>(acc1);
    const uint32_t dp = dp_lo + buf * kPBufDesc;
    const uint32_t dk = dko_lo + buf * kKBufDesc;
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < kTileKeys / 16; ++kk) {
      ptx::wgmma_m64n128k16_bf16_tb(d0, desc_of(dp + kk * 2, kDescHi), desc_of(dk + kk * (16 * 128 >> 4), kDescHi));
      ptx::wgmma_m64n128k16_bf16_tb(d1, desc_of(dp + kk * 2, kDescHi),
                               desc_of(dk + kQuarterDesc + kk * (16 * 128 >> 4), kDescHi));
    }
    wg_commit();
  };
  auto pin_o = [&](auto& acc0, auto& acc1) {
    pin(reinterpret_cast<float(&)[kONt * 4]>(acc0));
    pin(reinterpret_cast<float(&)[kONt * 4]>(acc1));
  };
  // Narrow instances: O^T for this warpgroup's four 64-dim blocks (A = the key tile's block 4 dg + mb,
  // M-major, 16 keys = 2 KB a k-step; B = P rows 0..kNO-1, K-major, as warpgroup 0's S reads Q).
  // alpha is per column (head) here: from s_alpha, which warpgroup 0 wrote before bar 2 / pready.
  const uint32_t dkt_lo = desc_lo(sK0a + dg * 4 * (64 * 128), 64 * 128);
  auto zero_t = [&](float(&ot)[4][kNOT]) {
#pragma unroll
    for (int mb = 0; mb < 4; ++mb)
#pragma unroll
      for (int i = 0; i < kNOT; ++i) ot[mb][i] = 0.0f;
  };
  auto rescale_t = [&](float(&ot)[4][kNOT], int buf) {
    float al[kNO / 8 > 0 ? kNO / 8 : 1][2];
    bool any = false;
#pragma unroll
    for (int j = 0; j < kNO / 8; ++j) {
      const float2 v = *reinterpret_cast<const float2*>(s_alpha + buf * 64 + 8 * j + 2 * (lane & 3));
      al[j][0] = v.x, al[j][1] = v.y;
      any |= v.x != 1.0f || v.y != 1.0f;
    }
    if (__any_sync(0xffffffffu, any)) {
#pragma unroll
      for (int mb = 0; mb < 4; ++mb)
#pragma unroll
        for (int j = 0; j < kNO / 8; ++j) {
          ot[mb][4 * j + 0] *= al[j][0];
          ot[mb][4 * j + 1] *= al[j][1];
          ot[mb][4 * j + 2] *= al[j][0];
          ot[mb][4 * j + 3] *= al[j][1];
        }
    }
  };
  auto issue_t = [&](float(&ot)[4][kNOT], int buf) {
    const uint32_t dp = dp_lo + buf * kPBufDesc;
    const uint32_t dk = dkt_lo + buf * kKBufDesc;
    wg_fence();
#pragma unroll
    for (int mb = 0; mb < 4; ++mb)
#pragma unroll
      for (int kk = 0; kk < kTileKeys / 16; ++kk) {
        const uint64_t da = desc_of(dk + mb * (64 * 128 >> 4) + kk * (16 * 128 >> 4), kDescHi);
        const uint64_t db = desc_of(dp + kk * 2, kDescHi);
        if constexpr (kNO == 16) ptx::wgmma_m64n16k16_bf16_ta(reinterpret_cast<float(&)[8]>(ot[mb]), da, db);
      }
    wg_commit();
  };
  auto pin_t = [&](float(&ot)[4][kNOT]) {
#pragma unroll
    for (int mb = 0; mb < 4; ++mb) pin(ot[mb]);
  };

  if constexpr (kT) {
    if (dg == 0) {
      // ------- warpgroup 0, narrow: S^T = K Q^T (keys as M), softmax down the columns, O^T dims [0, 256) -------
      // The key tile is A (as the wide S reads it as B) and Q's first kNO rows are B: the padded
      // Q rows are not read, which is most of the wide S's shared-memory traffic at few heads. A
      // thread holds keys kA = 16 rg + lane / 4 and kA + 8, heads 8 j + 2 (lane % 4) + {0, 1}; a
      // head's maximum over the tile's 64 keys takes shuffles over lane / 4 and the four warps'
      // values through s_red (double-buffered by tile parity, so one barrier a tile suffices).
      ptx::setmaxnreg_inc<kRegsS>();
      SD_P(pf.begin(0, prof_t0);)
      constexpr int kHJ = kNO / 8;
      float ot[4][kNOT];
      zero_t(ot);
      float st[kNOT];
      float m_run[kHJ][2], l_run[kHJ][2];
#pragma unroll
      for (int j = 0; j < kHJ; ++j) m_run[j][0] = m_run[j][1] = -INFINITY, l_run[j][0] = l_run[j][1] = 0.0f;
      float* s_red = reinterpret_cast<float*>(smem + SmemWg::kOffRed);
      const uint32_t dq_lo = desc_lo(sQa, 16);
      const uint32_t dks_lo = desc_lo(sK0a, 16);
      const int kA = rg * 16 + (lane >> 2);
      const int hl = 2 * (lane & 3);  // this thread's first head column in each 8-head group
      auto issue_st = [&](int buf) {
        const uint32_t dk = dks_lo + buf * kKBufDesc;
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < kDim / 16; ++kk) {
          const uint32_t koff = dim_slice_off(kk);
          ptx::wgmma_m64n16k16_bf16(reinterpret_cast<float(&)[8]>(st), desc_of(dk + koff, kDescHi), desc_of(dq_lo + koff, kDescHi), kk > 0);
        }
        wg_commit();
      };
      const float sl = a.scale_log2;  // MODEL1, scale > 0 (the host's condition for these instances)
      int t = next_live(t_begin);
      if (t < t_end) {
        ptx::mbar_wait(bar_full + 0, 0);
        issue_st(0);
      }
      SD_P(pf.at(0);)
      for (int it = 0; t < t_end; ++it) {
        const int buf = it & 1;
        SD_P(pf.tile();)
        const int t1 = next_live(t + 1);
        wg_wait_all();  // S^T of tile it
        pin(st);
        SD_P(pf.at(1);)
        const uint2 vm = *reinterpret_cast<const uint2*>(s_vmask + buf * 8);
        if ((vm.x & vm.y) != 0xFFFFFFFFu) {
          const bool va = ((kA < 32 ? vm.x : vm.y) >> (kA & 31)) & 1, vb = ((kA + 8 < 32 ? vm.x : vm.y) >> ((kA + 8) & 31)) & 1;
#pragma unroll
          for (int j = 0; j < kHJ; ++j) {
            st[4 * j + 0] = va ? st[4 * j + 0] : -INFINITY;
            st[4 * j + 1] = va ? st[4 * j + 1] : -INFINITY;
            st[4 * j + 2] = vb ? st[4 * j + 2] : -INFINITY;
            st[4 * j + 3] = vb ? st[4 * j + 3] : -INFINITY;
          }
        }
        float mx[kHJ][2];
#pragma unroll
        for (int j = 0; j < kHJ; ++j)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            float v = fmaxf(st[4 * j + c], st[4 * j + 2 + c]);
            v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
            v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 8));
            v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 16));
            mx[j][c] = v;
          }
        float* red = s_red + buf * 128;
        if (lane < 4) {
#pragma unroll
          for (int j = 0; j < kHJ; ++j) *reinterpret_cast<float2*>(red + rg * 32 + 8 * j + hl) = make_float2(mx[j][0], mx[j][1]);
        }
        ptx::named_barrier_sync(2, 128);
        const uint32_t pbase = sP0a + buf * SmemWg::kPBytes;
#pragma unroll
        for (int j = 0; j < kHJ; ++j)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const int h = 8 * j + hl + c;
            float v = fmaxf(fmaxf(red[h], red[32 + h]), fmaxf(red[64 + h], red[96 + h]));
            v *= sl;  // -inf stays -inf (sl > 0)
            // The exact running maximum, as in the wide path (the largest weight is exactly 1).
            const float mn = fmaxf(m_run[j][c], v);
            const float mu = mn == -INFINITY ? 0.0f : mn;
            const float al = fast_exp2(m_run[j][c] - mu);
            const float pa = fast_exp2(fmaf(st[4 * j + c], sl, -mu)), pb = fast_exp2(fmaf(st[4 * j + 2 + c], sl, -mu));
            l_run[j][c] = l_run[j][c] * al + (pa + pb);
            m_run[j][c] = mn;
            if (warp == 0 && lane < 4) s_alpha[buf * 64 + h] = al;
            // P[h][key] in the K-major swizzled P tile (row h, 16-byte chunk key / 8 ^ h % 8).
            const uint32_t prow = pbase + h * 128;
            const uint16_t ba = __bfloat16_as_ushort(__float2bfloat16_rn(pa)), bb = __bfloat16_as_ushort(__float2bfloat16_rn(pb));
            asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(prow + ((((kA >> 3) ^ (h & 7)) << 4) + (kA & 7) * 2)), "h"(ba) : "memory");
            asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(prow + (((((kA + 8) >> 3) ^ (h & 7)) << 4) + (kA & 7) * 2)), "h"(bb) : "memory");
          }
        SD_P(pf.at(2);)
        fence_proxy_async();
        ptx::mbar_arrive(bar_pready + buf);
        SD_P(pf.at(3);)
        ptx::named_barrier_sync(2, 128);  // P rows and alpha written by all four warps
        SD_P(pf.at(4);)
        rescale_t(ot, buf);
        issue_t(ot, buf);
        SD_P(pf.at(5);)
        if (t1 < t_end) {
          ptx::mbar_wait(bar_full + (buf ^ 1), ((it + 1) >> 1) & 1);
          SD_P(pf.at(6);)
          issue_st(buf ^ 1);
          SD_P(pf.at(7);)
          wg_wait_1();
        } else {
          wg_wait_all();
        }
        SD_P(pf.at(8);)
        pin_t(ot);
        ptx::mbar_arrive(bar_empty + buf);
        t = t1;
        SD_P(pf.at(9);)
      }
      // Row sums: over lane / 4, then the four warps (s_red, free after the last tile's barrier).
#pragma unroll
      for (int j = 0; j < kHJ; ++j)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          float v = l_run[j][c];
          v += __shfl_xor_sync(0xffffffffu, v, 4);
          v += __shfl_xor_sync(0xffffffffu, v, 8);
          v += __shfl_xor_sync(0xffffffffu, v, 16);
          l_run[j][c] = v;
        }
      ptx::named_barrier_sync(2, 128);  // every warp is past its last read of s_red
      if (lane < 4) {
#pragma unroll
        for (int j = 0; j < kHJ; ++j) *reinterpret_cast<float2*>(s_red + rg * 32 + 8 * j + hl) = make_float2(l_run[j][0], l_run[j][1]);
      }
      ptx::named_barrier_sync(2, 128);
      if (warp == 0 && lane < 4) {
#pragma unroll
        for (int j = 0; j < kHJ; ++j)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const int h = 8 * j + hl + c;
            s_l[h] = (s_red[h] + s_red[32 + h]) + (s_red[64 + h] + s_red[96 + h]);
            s_m[h] = m_run[j][c];
          }
      }
      ptx::named_barrier_sync(1, 256);
      wg_epilogue_t<kNO>(a, ot, 0, sQa, s_m, s_l, ctid, rg, lane);
      SD_P(pf.at(10);)
      return;
    }
  }
  if (dg == 0) {
    // ---------------- warpgroup 0: S, softmax, O dims [0, 256) ----------------
    ptx::setmaxnreg_inc<kRegsS>();
    SD_P(pf.begin(0, prof_t0);)
    float acc0[kONt][4], acc1[kONt][4];
    zero_o(acc0, acc1);
    const uint32_t dq_lo = desc_lo(sQa, 16);
    const uint32_t dks_lo = desc_lo(sK0a, 16);
    const uint32_t p_row0 = sP0a + r0 * 128;  // row r0 of P buffer 0; row r0 + 8 is 1024 bytes further
    float m_run = -INFINITY, l_run = 0.0f, m_run1 = -INFINITY, l_run1 = 0.0f;
    float sacc[kSNt][4];
    float(&sd)[kSNt * 4] = reinterpret_cast<float(&)[kSNt * 4]>(sacc);
#pragma unroll
    for (int n = 0; n < kSNt; ++n) sacc[n][0] = sacc[n][1] = sacc[n][2] = sacc[n][3] = 0.0f;
    auto issue_s = [&](int buf) {
      const uint32_t dk = dks_lo + buf * kKBufDesc;
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < kDim / 16; ++kk) {
        const uint32_t koff = dim_slice_off(kk);
        ptx::wgmma_m64n64k16_bf16(sd, desc_of(dq_lo + koff, kDescHi), desc_of(dk + koff, kDescHi), kk > 0);
      }
      wg_commit();
    };
    int t = next_live(t_begin);
    if (t < t_end) {
      ptx::mbar_wait(bar_full + 0, 0);
      if (!SD_VAR(3)) issue_s(0);
    }
    SD_P(pf.at(0);)
    for (int it = 0; t < t_end; ++it) {
      const int buf = it & 1;
      SD_P(pf.tile();)
      if (SD_VAR(3)) {  // profile: the producers alone (consumers only hand the buffers back; wide path)
        ptx::mbar_wait(bar_full + buf, (it >> 1) & 1);
        ptx::mbar_arrive(bar_pready + buf);
        ptx::mbar_arrive(bar_empty + buf);
        t = next_live(t + 1);
        continue;
      }
      const int t1 = next_live(t + 1);
      const bool model1 = kM1 || a.set[t < sc.tiles_main ? 0 : 1].model1;
      const float* kscale = s_kscale + buf * 64;
      wg_wait_all();  // S of tile it
      pin(sd);
      SD_P(pf.at(1);)
      // Valid-key bits of the tile, shifted to this lane's key pairs 8 n + 2 (lane % 4) + {0, 1}.
      const uint2 vm = *reinterpret_cast<const uint2*>(s_vmask + buf * 8);
      const uint32_t vlo = vm.x >> ((lane & 3) * 2), vhi = vm.y >> ((lane & 3) * 2);
      // kV & 2: MODEL1 with a positive scale (the usual case): the scale goes into the exponent's
      // FFMA, exp2(s * scale - m), instead of a multiply of every logit first; the maximum of the
      // raw logits times the scale is the maximum of the scaled ones (rounding is monotone), so m
      // and the row's largest weight (exactly 1 in bf16) are unchanged.
      const bool fold = (kV & 8) ? true : ((kV & 2) && model1 && a.scale_log2 > 0.0f);
      const float sl = fold ? a.scale_log2 : 1.0f;
      float mx0 = -INFINITY, mx1 = -INFINITY;
      if (fold) {
        if (!(kV & 4) || (vm.x & vm.y) != 0xFFFFFFFFu) {
#pragma unroll
          for (int n = 0; n < kSNt; ++n) {
            const uint32_t vw = n < 4 ? vlo : vhi;
            const bool v0 = (vw >> ((n & 3) * 8)) & 1, v1 = (vw >> ((n & 3) * 8 + 1)) & 1;
            sacc[n][0] = v0 ? sacc[n][0] : -INFINITY;
            sacc[n][1] = v1 ? sacc[n][1] : -INFINITY;
            sacc[n][2] = v0 ? sacc[n][2] : -INFINITY;
            sacc[n][3] = v1 ? sacc[n][3] : -INFINITY;
          }
        }
#pragma unroll
        for (int n = 0; n < kSNt; ++n) {
          mx0 = fmaxf(mx0, fmaxf(sacc[n][0], sacc[n][1]));
          mx1 = fmaxf(mx1, fmaxf(sacc[n][2], sacc[n][3]));
        }
      } else {
#pragma unroll
        for (int n = 0; n < kSNt; ++n) {
          const int k0 = n * 8 + (lane & 3) * 2;
          const uint32_t vw = n < 4 ? vlo : vhi;
          const bool v0 = (vw >> ((n & 3) * 8)) & 1, v1 = (vw >> ((n & 3) * 8 + 1)) & 1;
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
      }
#pragma unroll
      for (int o = 1; o <= 2; o <<= 1) {
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, o));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, o));
      }
      if (kV & 10) {
        mx0 *= sl;  // -inf stays -inf (sl > 0)
        mx1 *= sl;
      }
      // The exact running maximum (no lazy rescaling): the largest weight of a row is then exactly
      // 1 in bf16, which the output tolerance relies on for rows dominated by one key.
      const float mn0 = fmaxf(m_run, mx0), mn1 = fmaxf(m_run1, mx1);
      const float mu0 = mn0 == -INFINITY ? 0.0f : mn0, mu1 = mn1 == -INFINITY ? 0.0f : mn1;
      const float al0 = fast_exp2(m_run - mu0), al1 = fast_exp2(m_run1 - mu1);
      float sum0 = 0.0f, sum1 = 0.0f;
      const uint32_t prow = p_row0 + buf * SmemWg::kPBytes;
#pragma unroll
      for (int n = 0; n < kSNt; ++n) {
        const int k0 = n * 8 + (lane & 3) * 2;
        float p0, p1, p2, p3;
        if (kV & 10) {
          p0 = fast_exp2(fmaf(sacc[n][0], sl, -mu0));
          p1 = fast_exp2(fmaf(sacc[n][1], sl, -mu0));
          p2 = fast_exp2(fmaf(sacc[n][2], sl, -mu1));
          p3 = fast_exp2(fmaf(sacc[n][3], sl, -mu1));
        } else {
          p0 = fast_exp2(sacc[n][0] - mu0);
          p1 = fast_exp2(sacc[n][1] - mu0);
          p2 = fast_exp2(sacc[n][2] - mu1);
          p3 = fast_exp2(sacc[n][3] - mu1);
        }
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
        sts32(prow + col, pack_bf16(p0, p1));
        sts32(prow + col + 1024, pack_bf16(p2, p3));
      }
      l_run = l_run * al0 + sum0;
      l_run1 = l_run1 * al1 + sum1;
      m_run = mn0;
      m_run1 = mn1;
      if ((lane & 3) == 0) {
        s_alpha[buf * 64 + r0] = al0;
        s_alpha[buf * 64 + r0 + 8] = al1;
      }
      SD_P(pf.at(2);)
      fence_proxy_async();
      if (!SD_VAR(0)) ptx::mbar_arrive(bar_pready + buf);
      SD_P(pf.at(3);)
      // This warpgroup's O reads P rows written by its other warps: a warpgroup barrier (id 2).
      ptx::named_barrier_sync(2, 128);
      SD_P(pf.at(4);)
      rescale(acc0, acc1, al0, al1);
      issue_o(acc0, acc1, buf);
      SD_P(pf.at(5);)
      if (t1 < t_end) {
        // S of the next tile queues behind this O on the tensor cores.
        ptx::mbar_wait(bar_full + (buf ^ 1), ((it + 1) >> 1) & 1);
        SD_P(pf.at(6);)
        issue_s(buf ^ 1);
        if (SD_VAR(0)) ptx::mbar_arrive(bar_pready + buf);
        SD_P(pf.at(7);)
        wg_wait_1();  // this tile's O (the older group)
      } else {
        if (SD_VAR(0)) ptx::mbar_arrive(bar_pready + buf);
        wg_wait_all();
      }
      SD_P(pf.at(8);)
      pin_o(acc0, acc1);
      ptx::mbar_arrive(bar_empty + buf);
      t = t1;
      SD_P(pf.at(9);)
    }
    // Row sums over the four threads of a row; the final maxima and sums for both warpgroups.
#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) {
      l_run += __shfl_xor_sync(0xffffffffu, l_run, o);
      l_run1 += __shfl_xor_sync(0xffffffffu, l_run1, o);
    }
    if ((lane & 3) == 0) {
      s_l[r0] = l_run;
      s_l[r0 + 8] = l_run1;
      s_m[r0] = m_run;
      s_m[r0 + 8] = m_run1;
    }
    ptx::named_barrier_sync(1, 256);
    wg_epilogue(a, acc0, acc1, 0, sQa, s_m, s_l, ctid, r0);
    SD_P(pf.at(10);)
  } else {
    // ---------------- warpgroup 1: O dims [256, 512) ----------------
    ptx::setmaxnreg_inc<kRegsO>();
    SD_P(pf.begin(1, prof_t0);)
    [[maybe_unused]] float acc0[kONt][4], acc1[kONt][4];
    [[maybe_unused]] float ot[4][kNOT];
    if constexpr (kT) zero_t(ot);
    else zero_o(acc0, acc1);
    int t = next_live(t_begin);
    SD_P(pf.at(0);)
    for (int it = 0; t < t_end; ++it) {
      const int buf = it & 1;
      const uint32_t par = (it >> 1) & 1;
      SD_P(pf.tile();)
      ptx::mbar_wait(bar_pready + buf, par);
      SD_P(pf.at(1);)
      ptx::mbar_wait(bar_full + buf, par);
      SD_P(pf.at(2);)
      if (!SD_VAR(2) && !SD_VAR(3)) {
        if constexpr (kT) {
          rescale_t(ot, buf);
          issue_t(ot, buf);
        } else {
          rescale(acc0, acc1, s_alpha[buf * 64 + r0], s_alpha[buf * 64 + r0 + 8]);
          issue_o(acc0, acc1, buf);
        }
      }
      SD_P(pf.at(3);)
      wg_wait_all();
      SD_P(pf.at(4);)
      if constexpr (kT) pin_t(ot);
      else pin_o(acc0, acc1);
      ptx::mbar_arrive(bar_empty + buf);
      t = next_live(t + 1);
      SD_P(pf.at(5);)
    }
    ptx::named_barrier_sync(1, 256);
    if constexpr (kT) wg_epilogue_t<kNO>(a, ot, 2, sQa, s_m, s_l, ctid, rg, lane);
    else wg_epilogue(a, acc0, acc1, 2, sQa, s_m, s_l, ctid, r0);
    SD_P(pf.at(10);)
  }
}

}  // namespace dsv4::cuda::sdec
