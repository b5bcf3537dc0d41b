// A minimal parallel_for over std::thread. We avoid OpenMP so that our threads
// never fight torch's bundled OpenMP runtime in the same process.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace asdx::cpu {

int num_threads();
void set_num_threads(int threads);
int available_cores();

// Calls body(begin, end) on contiguous chunks of [0, n), at most one chunk per
// thread and none smaller than min_chunk. Rethrows the first worker exception.
template <class Body>
void parallel_for(int64_t n, int64_t min_chunk, Body&& body) {
  if (n <= 0) return;
  const int64_t max_workers = std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk));
  const int workers = static_cast<int>(std::min<int64_t>(num_threads(), max_workers));
  if (workers <= 1) {
    body(int64_t{0}, n);
    return;
  }
  const int64_t chunk = (n + workers - 1) / workers;
  std::vector<std::exception_ptr> errors(workers);
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  auto run = [&](int w) {
    const int64_t begin = w * chunk;
    const int64_t end = std::min(n, begin + chunk);
    if (begin >= end) return;
    try {
      body(begin, end);
    } catch (...) {
      errors[w] = std::current_exception();
    }
  };
  for (int w = 1; w < workers; ++w) pool.emplace_back(run, w);
  run(0);
  for (auto& t : pool) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace asdx::cpu
