// Block-scaled GEMMs (issue 5): D[M, N] bf16 = A[M, K] x B[N, K]^T (+ bias) (+ residual).
//
// B is K-major ([N, K], row n holds output column n), the way checkpoints store weights. Scales
// follow ops/quant.h, so the output of dsv4::quantize feeds these ops directly:
//
//   format          A                         a_scales                    B      b_scales             b_global_scale
//   kFP8Block       e4m3 [M, K]               [M, K/128] ue8m0|f32        e4m3   [N/128, K/128] ue8m0|f32  -
//   kW4A16MXFP4     bf16 [M, K]               -                           e2m1   [N, K/32] ue8m0          -
//   kW4A16NVFP4     bf16 [M, K]               -                           e2m1   [N, K/16] e4m3           f32 [1]
//   kW4A8MXFP4      e4m3 [M, K]               [M, K/128] ue8m0|f32 (1x128) e2m1  [N, K/32] ue8m0          -
//                                             or [M, K/32] ue8m0 (MXFP8)
//
// Math: every operand is dequantized exactly (value * scale [* global]), the products are summed
// in f32 (the CPU reference in f64), bias and residual are added, and the sum is rounded once to
// bf16. Scales are applied to f32 partial sums every 128 (or 32, for MXFP8 activations) along K.
// W4A8 with 1x128 activations folds B's four per-32 exponents of a 128-block into the e4m3
// re-encoding (e2m1 * 2^(s_i - s_max + 6)): exact while s_max - s_i <= 14 inside the block; past
// that the small sub-blocks round to nearest e4m3 (their weight is below 2^-14 of the block's).
// With MXFP8 activations the re-encoding is always exact (promotion every 32).
//
// Shapes: M >= 0 (M = 0 is a no-op), N and K positive multiples of 128. Element rows of a, b, d
// and residual must be contiguous (innermost stride 1), 16-byte aligned, with row strides a
// multiple of 16 bytes (TMA). Scale tensors may have any strides. residual may be d itself (an
// in-place add); otherwise outputs must not overlap inputs.
//
// CUDA: asynchronous on `stream`, no allocation, no host synchronisation (CUDA-graph capturable).
// Small-M problems split K across CTAs so every SM streams weights; the partial sums need the
// caller's `workspace` of gemm_workspace_size() bytes. Large-M problems with FP4 weights (W4A8 and
// W4A16-NVFP4 at M >= 257, W4A16-MXFP4 at M >= 512) expand B once into the workspace (W4A8: e4m3 plus an f32 scale a row and 128-K block, N*K*33/32
// bytes; W4A16: bf16, 2*N*K bytes) before the GEMM kernel runs on it, instead of re-expanding each
// B tile in every M tile; same bits either way. W4A8 with MXFP8 activations keeps the in-kernel
// expansion (the workspace size is reported for the 1x128 case and then goes unused). With a
// smaller (or no) workspace the op still runs, with less (or no) split-K and B expanded inside.
//
// Grouped GEMMs (MoE) reuse the same kernels: the device mainloop walks a list of contiguous row
// groups whose weights are stacked as B [G * N, K] (backend entry cuda::gemm_grouped_contiguous in
// src/backend/gemm.h, GPU-tested); the public grouped entry and its validation belong to the MoE issue.
#pragma once
#include <cstdint>

#include "dsv4/status.h"
#include "dsv4/tensor.h"

namespace dsv4 {

// Values are part of the C ABI: never renumber.
enum class GemmFormat : int32_t {
  kFP8Block = 0,     // A e4m3 per-token 1x128 scales, B e4m3 128x128 block scales; fp8 wgmma
  kW4A16MXFP4 = 1,   // A bf16, B MXFP4; B expanded to bf16 in shared memory, bf16 wgmma
  kW4A16NVFP4 = 2,   // A bf16, B NVFP4 (e4m3 per 16 + f32 global); bf16 wgmma
  kW4A8MXFP4 = 3,    // A e4m3 (1x128 or MXFP8 per-32 scales), B MXFP4 re-encoded to e4m3; fp8 wgmma
};
const char* gemm_format_name(GemmFormat f);

struct GemmParams {
  GemmFormat format = GemmFormat::kFP8Block;
  TensorView a;               // [M, K] e4m3 or bf16 (see table), K-major
  TensorView a_scales;        // see table; undefined for W4A16
  TensorView b;               // [N, K] e4m3 or e2m1, K-major
  TensorView b_scales;        // see table
  TensorView b_global_scale;  // NVFP4 only: f32 [1]
  TensorView bias;            // optional: bf16 [N], contiguous
  TensorView residual;        // optional: bf16 [M, N]; may be d itself
  TensorView d;               // [M, N] bf16
  TensorView workspace;       // optional: u8 [>= gemm_workspace_size(...)], contiguous, 16-byte aligned
};

Status gemm(const GemmParams& p, Stream stream = nullptr);

// Bytes of scratch the CUDA backend wants for this problem on `device` (its split-K partial sums,
// or the expanded FP4 weights); 0 when it needs none, and always 0 on the CPU.
int64_t gemm_workspace_size(GemmFormat format, int64_t M, int64_t N, int64_t K, Device device = Device::cuda());

}  // namespace dsv4
