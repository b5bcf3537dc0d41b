// Queries that must answer on machines without a driver or a GPU: they return 0
// instead of raising, so `import asdx` and `asdx info` work everywhere.
#include <cuda_runtime.h>

namespace asdx::cuda {

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

// cudaDriverGetVersion reports 0 when no driver is installed; an error is reported as 0 too.
int driver_version() {
  int version = 0;
  if (cudaDriverGetVersion(&version) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return version;
}

int toolkit_version() { return CUDART_VERSION; }

}  // namespace asdx::cuda
