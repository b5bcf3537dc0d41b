// A 64-byte aligned, uninitialised heap array for the CPU kernels' packed operands and scratch:
// numpy arrays are only 16-byte aligned, and a 512-bit load that crosses a cache line costs two.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace asdx::cpu {

template <class T>
struct AlignedBuffer {
  T* ptr = nullptr;
  explicit AlignedBuffer(int64_t count) {
    const size_t bytes = (static_cast<size_t>(std::max<int64_t>(count, 0)) * sizeof(T) + 63) / 64 * 64;
    ptr = static_cast<T*>(std::aligned_alloc(64, std::max<size_t>(bytes, 64)));
    if (ptr == nullptr) throw std::bad_alloc();
  }
  ~AlignedBuffer() { std::free(ptr); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
};

// count rounded up to a whole number of 64-byte lines of T.
template <class T>
constexpr int64_t padded_to_line(int64_t count) {
  constexpr int64_t per_line = 64 / static_cast<int64_t>(sizeof(T));
  return (count + per_line - 1) / per_line * per_line;
}

}  // namespace asdx::cpu
