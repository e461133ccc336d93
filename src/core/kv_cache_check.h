// The KV-cache view check shared by the ops that read the cache (defined in src/core/kv_cache.cpp).
#pragma once
#include "dsv4/ops/kv_cache.h"

namespace dsv4::core {
// Layout, dtype, shape, contiguity and alignment of a KVCacheView; errors name `op`.
Status check_kv_cache(const char* op, const KVCacheView& c);
}  // namespace dsv4::core
