// Launch hygiene shared by every CUDA kernel file.
//
// asdx does not link libtorch: callers (the Python wrappers) allocate every
// output, scratch buffer and constant table as torch tensors, so all device
// memory comes from torch's caching allocator, and pass raw pointers plus the
// current torch stream. What is left here is checking.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>

#define ASDX_CUDA_CHECK(expr)                                                                      \
  do {                                                                                             \
    const cudaError_t asdx_status = (expr);                                                        \
    if (asdx_status != cudaSuccess) {                                                              \
      throw std::runtime_error(std::string("asdx CUDA error: ") + cudaGetErrorString(asdx_status) + \
                               " (" #expr ") at " __FILE__ ":" + std::to_string(__LINE__));        \
    }                                                                                              \
  } while (0)

namespace asdx::cuda {

// Call right before a launch. An error left by earlier work on this thread (a
// torch kernel, say) is reported as such and NOT cleared, so that the
// cudaGetLastError after our launch can only see our own launch's error.
inline void check_before_launch(const char* kernel) {
  const cudaError_t pending = cudaPeekAtLastError();
  if (pending != cudaSuccess) {
    throw std::runtime_error(std::string("asdx: a CUDA error from earlier work was pending before launching ") +
                             kernel + ": " + cudaGetErrorString(pending));
  }
}

// Call right after a launch: configuration errors (grid, shared memory) surface here.
inline void check_after_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("asdx: launching ") + kernel + " failed: " + cudaGetErrorString(status));
  }
}

// Dynamic shared memory a block may use on the current device (opt-in maximum).
inline size_t max_shared_memory_per_block() {
  int device = 0;
  ASDX_CUDA_CHECK(cudaGetDevice(&device));
  int bytes = 0;
  ASDX_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<size_t>(bytes);
}

// Throws std::invalid_argument (ValueError in Python) naming the limit when
// `bytes` exceed it; otherwise opts the kernel into that much if above 48 KiB.
template <class Kernel>
void reserve_shared_memory(Kernel kernel, size_t bytes, const std::string& what) {
  const size_t limit = max_shared_memory_per_block();
  if (bytes > limit) {
    throw std::invalid_argument(what + " needs " + std::to_string(bytes) +
                                " bytes of shared memory per block; this GPU allows at most " + std::to_string(limit) +
                                " (cudaDevAttrMaxSharedMemoryPerBlockOptin). Use a smaller n_fft or "
                                "precision='float32' (half the bytes), or run on the CPU.");
  }
  if (bytes > 48 * 1024) {
    ASDX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
}

}  // namespace asdx::cuda
