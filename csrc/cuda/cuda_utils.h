// Error checking and stream-ordered upload of the host-built tables.
#pragma once

#include <cuda_runtime.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#define ASDX_CUDA_CHECK(expr)                                                                      \
  do {                                                                                             \
    const cudaError_t asdx_status = (expr);                                                        \
    if (asdx_status != cudaSuccess) {                                                              \
      throw std::runtime_error(std::string("asdx CUDA error: ") + cudaGetErrorString(asdx_status) + \
                               " (" #expr ") at " __FILE__ ":" + std::to_string(__LINE__));        \
    }                                                                                              \
  } while (0)

namespace asdx::cuda {

// Small constant tables (twiddles, window, filterbank) gathered into one host
// blob, uploaded with one copy and freed in stream order after the kernels.
class DeviceBlob {
 public:
  explicit DeviceBlob(cudaStream_t stream) : stream_(stream) {}
  DeviceBlob(const DeviceBlob&) = delete;
  DeviceBlob& operator=(const DeviceBlob&) = delete;
  ~DeviceBlob() {
    if (device_ != nullptr) cudaFreeAsync(device_, stream_);
  }

  template <class T>
  size_t add(const std::vector<T>& values) {
    const size_t offset = (host_.size() + 15) / 16 * 16;
    host_.resize(offset + values.size() * sizeof(T));
    if (!values.empty()) std::memcpy(host_.data() + offset, values.data(), values.size() * sizeof(T));
    return offset;
  }

  void upload() {
    const size_t bytes = host_.empty() ? 16 : host_.size();
    ASDX_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&device_), bytes, stream_));
    if (!host_.empty()) {
      // From pageable memory this returns once the bytes are staged, so host_ may die after.
      ASDX_CUDA_CHECK(cudaMemcpyAsync(device_, host_.data(), host_.size(), cudaMemcpyHostToDevice, stream_));
    }
  }

  template <class T>
  const T* at(size_t offset) const {
    return reinterpret_cast<const T*>(device_ + offset);
  }

 private:
  cudaStream_t stream_;
  std::vector<unsigned char> host_;
  unsigned char* device_ = nullptr;
};

// Dynamic shared memory above the default 48 KiB must be opted into per kernel.
template <class Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    ASDX_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
}

}  // namespace asdx::cuda
