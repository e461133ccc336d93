// The two backends behind every op. Core code validates, then calls exactly one of these; the
// backends may assume their arguments are valid. Without a CUDA build the cuda:: entries return
// kUnsupported (src/backend/cuda_stub.cpp).
#pragma once
#include "dsv4/ops/kv_cache.h"
#include "dsv4/ops/quant.h"

namespace dsv4::cpu {
Status quantize(const QuantizeParams& p);
Status dequantize(const DequantizeParams& p);
Status swizzle_scales_128x4(const TensorView& src, const TensorView& dst);
Status unswizzle_scales_128x4(const TensorView& src, const TensorView& dst);
Status kv_cache_insert(const KVInsertParams& p);
Status kv_cache_gather(const KVGatherParams& p);
}  // namespace dsv4::cpu

namespace dsv4::cuda {
bool available();  // built with CUDA and an sm_90 device is present
Status quantize(const QuantizeParams& p, Stream stream);
Status dequantize(const DequantizeParams& p, Stream stream);
Status swizzle_scales_128x4(const TensorView& src, const TensorView& dst, Stream stream);
Status unswizzle_scales_128x4(const TensorView& src, const TensorView& dst, Stream stream);
Status kv_cache_insert(const KVInsertParams& p, Stream stream);
Status kv_cache_gather(const KVGatherParams& p, Stream stream);
}  // namespace dsv4::cuda
