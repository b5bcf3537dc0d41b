// Shared definitions for code that compiles both as C++ and as CUDA.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ASDX_HD __host__ __device__ __forceinline__
#else
#define ASDX_HD inline
#endif

namespace asdx {

constexpr double kPi = 3.14159265358979323846;

}  // namespace asdx
