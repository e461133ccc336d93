/* Compiled as C (see tests/CMakeLists.txt): proves dsv4.h is valid C and usable from C. */
#include "dsv4/dsv4.h"

#include <stddef.h>
#include <string.h>

/* 0 when a C caller sees the documented behaviour, else the number of the failed check. */
int dsv4_c_compile_check(void) {
  dsv4_tensor x;
  dsv4_kv_cache cache;
  int rc;
  memset(&x, 0, sizeof x);
  memset(&cache, 0, sizeof cache);
  if (strcmp(dsv4_version(), DSV4_VERSION_STRING) != 0) return 1;
  if (dsv4_model1_page_bytes(64) != 37440) return 2; /* 64 * 584 rounded up to a multiple of 576 */
  if (dsv4_swizzled_scales_size(1, 1) != 128 * 4) return 3;
  rc = dsv4_quantize(DSV4_QUANT_MXFP4, &x, NULL, NULL, NULL, 0, NULL);
  if (rc != DSV4_ERROR_INVALID_ARGUMENT) return 4;
  if (dsv4_last_error()[0] == '\0') return 5;
  cache.layout = DSV4_KV_MODEL1;
  cache.page_size = 64;
  if (dsv4_kv_cache_gather(&cache, NULL, &x, NULL) != DSV4_ERROR_INVALID_ARGUMENT) return 6;
  if (sizeof(dsv4_tensor) != 8 + 4 + 4 + 6 * 8 * 2 + 4 + 4) return 7; /* no hidden padding */
  return 0;
}
