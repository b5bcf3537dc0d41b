#include "parallel.h"

#include <atomic>
#include <stdexcept>
#include <string>

#if defined(__linux__)
#include <sched.h>
#endif

namespace asdx::cpu {

int available_cores() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int count = CPU_COUNT(&set);
    if (count > 0) return count;
  }
#endif
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

namespace {
std::atomic<int> g_threads{0};  // 0: not chosen yet, use available_cores()
}

int num_threads() {
  const int chosen = g_threads.load();
  return chosen > 0 ? chosen : available_cores();
}

void set_num_threads(int threads) {
  if (threads < 1) throw std::invalid_argument("set_num_threads: threads must be >= 1, got " + std::to_string(threads));
  g_threads.store(threads);
}

}  // namespace asdx::cpu
