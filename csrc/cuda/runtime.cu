#include <cuda_runtime.h>

namespace asdx::cuda {

// 0 when there is no driver or no device, instead of an error.
int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

}  // namespace asdx::cuda
