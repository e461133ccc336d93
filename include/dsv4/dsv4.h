/* dsv4 C ABI: DeepSeek-V4 kernels for Hopper, callable from C, Python (ctypes/cffi), Rust, ...
 *
 * Pure C: no C++ or CUDA headers. Mirrors the C++ API in the headers in include/dsv4/ops one to one; see there
 * for the exact semantics, shapes and numerics of each op. The enum values below equal the C++ ones
 * (checked at compile time in src/capi/dsv4_c.cpp) and never change.
 *
 * Conventions:
 *  - Every op returns a dsv4_status (0 = DSV4_OK). On failure dsv4_last_error() gives a message
 *    that names the op, the argument, what was expected and what was received; nothing was written.
 *    The message is per thread and stays valid until this thread's next dsv4 call.
 *  - Tensors are described by dsv4_tensor. Shapes and strides count elements, never bytes (e2m1
 *    packs two elements a byte). A zero-filled dsv4_tensor is "empty" (an unused optional argument).
 *  - Required tensor arguments must be non-NULL. Optional ones (marked below) may be NULL, meaning
 *    empty. The op runs on the device the tensors live on: all CPU -> reference backend, all on one
 *    CUDA device -> CUDA backend, asynchronously on `stream` (a cudaStream_t, NULL = default stream).
 *  - CUDA ops allocate nothing and never synchronize: they can be captured into CUDA graphs.
 */
#ifndef DSV4_DSV4_H_
#define DSV4_DSV4_H_

#include <stdint.h>

#if defined(_WIN32)
#define DSV4_API
#else
#define DSV4_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define DSV4_MAX_DIMS 6
#define DSV4_VERSION_STRING "0.1.0" /* what dsv4_version() returns for a matching library */

/* dsv4::DType */
typedef enum dsv4_dtype {
  DSV4_DTYPE_F32 = 0,
  DSV4_DTYPE_BF16 = 1,
  DSV4_DTYPE_F16 = 2,
  DSV4_DTYPE_E4M3 = 3,  /* float8_e4m3fn */
  DSV4_DTYPE_E5M2 = 4,  /* float8_e5m2 */
  DSV4_DTYPE_E2M1 = 5,  /* fp4, two a byte, element 0 in the low nibble */
  DSV4_DTYPE_UE8M0 = 6, /* power-of-two scale 2^(e-127), 0xFF = NaN */
  DSV4_DTYPE_I32 = 7,
  DSV4_DTYPE_I64 = 8,
  DSV4_DTYPE_U8 = 9
} dsv4_dtype;

/* dsv4::StatusCode */
typedef enum dsv4_status {
  DSV4_OK = 0,
  DSV4_ERROR_INVALID_ARGUMENT = 1, /* caller error: dtype, shape, stride, alignment, NULL, range */
  DSV4_ERROR_UNSUPPORTED = 2,      /* valid request this build or device cannot serve */
  DSV4_ERROR_CUDA = 3,             /* the CUDA runtime reported an error */
  DSV4_ERROR_INTERNAL = 4          /* a dsv4 bug (or out of host memory) */
} dsv4_status;

/* dsv4::DeviceType */
typedef enum dsv4_device_type { DSV4_DEVICE_CPU = 0, DSV4_DEVICE_CUDA = 1 } dsv4_device_type;

/* dsv4::QuantFormat */
typedef enum dsv4_quant_format {
  DSV4_QUANT_MXFP4 = 0,      /* e2m1, ue8m0 scale per 32 along K */
  DSV4_QUANT_NVFP4 = 1,      /* e2m1, e4m3 scale per 16 along K, f32 global scale */
  DSV4_QUANT_MXFP8 = 2,      /* e4m3, ue8m0 scale per 32 along K */
  DSV4_QUANT_FP8_1X128 = 3,  /* e4m3, scale per row and 128 columns */
  DSV4_QUANT_FP8_128X128 = 4 /* e4m3, scale per 128x128 block */
} dsv4_quant_format;

/* dsv4::KVLayout */
typedef enum dsv4_kv_layout {
  DSV4_KV_MODEL1 = 0,         /* u8 [pages, dsv4_model1_page_bytes(P)] */
  DSV4_KV_PER_TOKEN_SCALE = 1 /* e4m3 [pages, P, 512] + bf16 scales [pages, P] */
} dsv4_kv_layout;

/* dsv4::TensorView: a non-owning view of host or device memory. Fields are int32_t rather than
 * the enums above so the struct layout does not depend on the compiler's enum size. */
typedef struct dsv4_tensor {
  void* data;
  int32_t dtype;                   /* dsv4_dtype */
  int32_t ndim;                    /* 0 (empty) .. DSV4_MAX_DIMS */
  int64_t shape[DSV4_MAX_DIMS];    /* elements */
  int64_t strides[DSV4_MAX_DIMS];  /* elements */
  int32_t device_type;             /* dsv4_device_type */
  int32_t device_index;
} dsv4_tensor;

/* dsv4::KVCacheView */
typedef struct dsv4_kv_cache {
  int32_t layout;      /* dsv4_kv_layout */
  int32_t reserved;    /* must be 0 */
  int64_t page_size;   /* tokens a page */
  dsv4_tensor data;
  dsv4_tensor scales;  /* DSV4_KV_PER_TOKEN_SCALE only; zero-filled for MODEL1 */
} dsv4_kv_cache;

/* The library's version, e.g. "0.1.0"; compare with DSV4_VERSION_STRING to catch a header/library mismatch. */
DSV4_API const char* dsv4_version(void);

/* The message of this thread's last failed dsv4 call, "" after a successful one. Never NULL. */
DSV4_API const char* dsv4_last_error(void);

/* Readable name of a status code ("ok", "invalid argument", ...). Never NULL. */
DSV4_API const char* dsv4_status_name(int status);

/* 1 when the library was built with CUDA and an sm_90 GPU is present, else 0. */
DSV4_API int dsv4_cuda_available(void);

/* quantize: x [M, K] bf16/f32 -> q [M, K] (e2m1 or e4m3) + scales; see dsv4::quantize.
 * global_scale: NVFP4 only (f32 [1]), else NULL. compute_global_scale: 0 or 1 (NVFP4 only). */
DSV4_API int dsv4_quantize(int32_t format, const dsv4_tensor* x, const dsv4_tensor* q, const dsv4_tensor* scales,
                           const dsv4_tensor* global_scale /* optional */, int32_t compute_global_scale,
                           void* stream);

/* dequantize: q + scales (+ NVFP4 global_scale) -> out [M, K] bf16/f32; see dsv4::dequantize. */
DSV4_API int dsv4_dequantize(int32_t format, const dsv4_tensor* q, const dsv4_tensor* scales,
                             const dsv4_tensor* global_scale /* optional */, const dsv4_tensor* out, void* stream);

/* Elements of the 128x4-swizzled form of a [rows, cols] scale matrix; -1 if rows or cols < 0. */
DSV4_API int64_t dsv4_swizzled_scales_size(int64_t rows, int64_t cols);
DSV4_API int dsv4_swizzle_scales_128x4(const dsv4_tensor* src, const dsv4_tensor* dst, void* stream);
DSV4_API int dsv4_unswizzle_scales_128x4(const dsv4_tensor* src, const dsv4_tensor* dst, void* stream);

/* Bytes a MODEL1 cache page of page_size tokens occupies; -1 if page_size < 1. */
DSV4_API int64_t dsv4_model1_page_bytes(int64_t page_size);

/* kv [T, 512] bf16 -> cache slots slot_mapping[t] (i32/i64 [T], -1 = skip); see dsv4::kv_cache_insert. */
DSV4_API int dsv4_kv_cache_insert(const dsv4_tensor* kv, const dsv4_tensor* slot_mapping, const dsv4_kv_cache* cache,
                                  void* stream);

/* out [N, 512] bf16/f32 <- dequantized slots indices[n] (i32 [N], -1 = zeros); see dsv4::kv_cache_gather. */
DSV4_API int dsv4_kv_cache_gather(const dsv4_kv_cache* cache, const dsv4_tensor* indices, const dsv4_tensor* out,
                                  void* stream);

/* dsv4::GemmFormat (include/dsv4/ops/gemm.h) */
typedef enum dsv4_gemm_format {
  DSV4_GEMM_FP8_BLOCK = 0,    /* A e4m3 + [M, K/128] scales, B e4m3 + [N/128, K/128] scales */
  DSV4_GEMM_W4A16_MXFP4 = 1,  /* A bf16, B e2m1 + ue8m0 [N, K/32] */
  DSV4_GEMM_W4A16_NVFP4 = 2,  /* A bf16, B e2m1 + e4m3 [N, K/16] + f32 global [1] */
  DSV4_GEMM_W4A8_MXFP4 = 3    /* A e4m3 + [M, K/128] or MXFP8 [M, K/32] scales, B e2m1 + ue8m0 [N, K/32] */
} dsv4_gemm_format;

/* gemm: d [M, N] bf16 = a [M, K] x b [N, K]^T (+ bias [N]) (+ residual [M, N], may be d itself);
 * see dsv4::gemm. a_scales: NULL for W4A16. b_global_scale: NVFP4 only. workspace: u8, at least
 * dsv4_gemm_workspace_size() bytes (optional): split-K for small M, and FP4 weights expanded once
 * (instead of in every M tile) for M >= 257 (W4A8, W4A16-NVFP4) or 512 (W4A16-MXFP4). */
DSV4_API int dsv4_gemm(int32_t format, const dsv4_tensor* a, const dsv4_tensor* a_scales /* optional */,
                       const dsv4_tensor* b, const dsv4_tensor* b_scales,
                       const dsv4_tensor* b_global_scale /* optional */, const dsv4_tensor* bias /* optional */,
                       const dsv4_tensor* residual /* optional */, const dsv4_tensor* d,
                       const dsv4_tensor* workspace /* optional */, void* stream);

/* Workspace bytes dsv4_gemm wants on device (device_type, device_index); 0 on the CPU or when it
 * needs none; -1 on an unknown format or device_type. */
DSV4_API int64_t dsv4_gemm_workspace_size(int32_t format, int64_t M, int64_t N, int64_t K, int32_t device_type,
                                          int32_t device_index);

/* Sparse decode attention (dsv4::sparse_decode, include/dsv4/ops/sparse_decode.h): per query row
 * and head, softmax over the keys named by main_indices [B, s_q, K_main] (i32 slots, -1 = unused)
 * and, optionally, extra_indices [B, s_q, K_extra] into a second cache, with an optional attention
 * sink [H] f32. q [B, s_q, H, 512] bf16 (1 <= s_q <= 4, 1 <= H <= 128); out [B, s_q, H, 512] bf16;
 * lse [B, s_q, H] f32 (optional; +inf where no key is valid). Lengths: optional [B] or [B, s_q] i32.
 * extra_cache NULL (with extra_indices and extra_lengths NULL) attends over main only. workspace: u8,
 * at least dsv4_sparse_decode_workspace_size() bytes on the CUDA device (NULL when that is 0). */
#define DSV4_SPARSE_DECODE_DEFAULT_SCALE 0.044194173824159216f /* 512^-0.5 */
DSV4_API int dsv4_sparse_decode(const dsv4_tensor* q, const dsv4_kv_cache* main_cache, const dsv4_tensor* main_indices,
                                const dsv4_tensor* main_lengths /* optional */,
                                const dsv4_kv_cache* extra_cache /* optional */,
                                const dsv4_tensor* extra_indices /* optional */,
                                const dsv4_tensor* extra_lengths /* optional */,
                                const dsv4_tensor* attn_sink /* optional */, float softmax_scale,
                                const dsv4_tensor* out, const dsv4_tensor* lse /* optional */,
                                const dsv4_tensor* workspace /* optional */, void* stream);

/* Workspace bytes dsv4_sparse_decode needs for these shapes on (device_type, device_index); 0 on
 * the CPU or when the keys are not split; -1 on an unknown device_type or a negative extent. */
DSV4_API int64_t dsv4_sparse_decode_workspace_size(int64_t batch, int64_t s_q, int64_t heads, int64_t k_main,
                                                   int64_t k_extra, int32_t device_type, int32_t device_index);

/* The prototype's SWA-only decode (dsv4::swa_decode): q [T, H, 512] bf16, the per-token-scale cache,
 * swa_indices [T, 128] i32 slots (-1 = unused), swa_lens [T] i32, out [T, H, 512] bf16, lse [T, H]
 * f32 (optional). No sink. workspace as for dsv4_sparse_decode with batch T, s_q 1, k_main 128. */
DSV4_API int dsv4_swa_decode(const dsv4_tensor* q, const dsv4_kv_cache* cache, const dsv4_tensor* swa_indices,
                             const dsv4_tensor* swa_lens, float softmax_scale, const dsv4_tensor* out,
                             const dsv4_tensor* lse /* optional */, const dsv4_tensor* workspace /* optional */,
                             void* stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DSV4_DSV4_H_ */
