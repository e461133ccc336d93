// Programmatic dependent launch (PDL): `kernel`'s CTAs may start while the kernel before it on
// `stream` is still running (once that one executes griddepcontrol.launch_dependents, or when it
// ends), and must execute griddepcontrol.wait before reading its results. Hides a dependent
// kernel's launch latency under its producer; graph capture keeps it as a programmatic edge.
#pragma once
#include <cuda_runtime.h>

#include <utility>

namespace dsv4::cuda {

template <typename... KernelArgs, typename... Args>
cudaError_t launch_programmatic_smem(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                                     cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t lc = {};
  lc.gridDim = grid;
  lc.blockDim = block;
  lc.dynamicSmemBytes = smem;
  lc.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  lc.attrs = attr;
  lc.numAttrs = 1;
  return cudaLaunchKernelEx(&lc, kernel, std::forward<Args>(args)...);
}

template <typename... KernelArgs, typename... Args>
cudaError_t launch_programmatic(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, cudaStream_t stream,
                                Args&&... args) {
  return launch_programmatic_smem(kernel, grid, block, 0, stream, std::forward<Args>(args)...);
}

}  // namespace dsv4::cuda
