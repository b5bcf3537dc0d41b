// The persistent thread pool behind parallel_for (see parallel.h).
//
// One job at a time runs on the pool: the caller that wins `job_mutex` (a
// try_lock) publishes the job under `mutex`, bumps `generation` and wakes the
// workers; worker i takes part when i < participants, runs task i + 1, and the
// last one to finish wakes the caller, which has meanwhile run task 0. A caller
// that finds the pool busy, and any call from inside a job (a worker's, or the
// job owner's own chunk), runs its tasks inline instead.
//
// fork(): only the forking thread exists in the child, so the parent's pool
// there has no workers and its mutexes may be held by threads that are gone.
// Each pool records the pid that built it; a call in another process leaves
// the old pool alone (leaked: touching it could block forever) and builds a
// fresh one. Pools are never destroyed, and their workers are detached, so
// process exit does not have to join sleeping threads.
#include "parallel.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include <sys/types.h>
#include <unistd.h>

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

namespace detail {
namespace {

// True on pool workers and on a caller while its job runs: parallel_for from
// such a thread runs inline (the pool is taken, by this very job).
thread_local bool t_inside_job = false;

class InsideJob {
 public:
  InsideJob() : previous_(t_inside_job) { t_inside_job = true; }
  ~InsideJob() { t_inside_job = previous_; }
  InsideJob(const InsideJob&) = delete;
  InsideJob& operator=(const InsideJob&) = delete;

 private:
  bool previous_;
};

void run_inline(int tasks, void (*fn)(void*, int), void* ctx) {
  for (int t = 0; t < tasks; ++t) fn(ctx, t);
}

class Pool {
 public:
  explicit Pool(pid_t owner) : owner_(owner) {}
  pid_t owner() const { return owner_; }

  // Runs the job if the pool is free and returns true; false (nothing run) if
  // another caller's job holds it.
  bool try_run(int tasks, void (*fn)(void*, int), void* ctx) {
    std::unique_lock<std::mutex> job(job_mutex_, std::try_to_lock);
    if (!job.owns_lock()) return false;
    InsideJob inside;
    const int helpers = grow(tasks - 1);  // may be fewer than asked if threads cannot be started
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = fn;
      ctx_ = ctx;
      participants_ = helpers;
      remaining_ = helpers;
      ++generation_;
    }
    if (helpers > 0) wake_.notify_all();
    fn(ctx, 0);
    for (int t = helpers + 1; t < tasks; ++t) fn(ctx, t);  // tasks no worker could take
    {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [&] { return remaining_ == 0; });
      fn_ = nullptr;
      ctx_ = nullptr;
      participants_ = 0;
    }
    return true;
  }

 private:
  // Starts workers until there are `wanted` (called by the job owner only).
  // Returns how many exist, which is less than `wanted` if starting one failed.
  int grow(int wanted) {
    std::lock_guard<std::mutex> lock(mutex_);
    while (workers_ < wanted) {
      try {
        std::thread(&Pool::work, this, workers_, generation_).detach();
      } catch (...) {  // std::system_error when the system is out of threads
        break;         // the caller runs the tasks no worker took
      }
      ++workers_;
    }
    return std::min(workers_, wanted);
  }

  void work(int index, uint64_t seen) {
    t_inside_job = true;  // for the whole life of the thread
    for (;;) {
      void (*fn)(void*, int);
      void* ctx;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        // A worker that sits a job out may sleep through later generations;
        // a participant cannot miss its job: the next one waits for it.
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (index >= participants_) continue;
        fn = fn_;
        ctx = ctx_;
      }
      fn(ctx, index + 1);
      bool last;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        last = --remaining_ == 0;
      }
      if (last) done_.notify_one();
    }
  }

  const pid_t owner_;
  std::mutex job_mutex_;  // held by the caller whose job owns the pool
  std::mutex mutex_;      // guards everything below
  std::condition_variable wake_;
  std::condition_variable done_;
  int workers_ = 0;
  uint64_t generation_ = 0;
  void (*fn_)(void*, int) = nullptr;
  void* ctx_ = nullptr;
  int participants_ = 0;
  int remaining_ = 0;
};

std::atomic<Pool*> g_pool{nullptr};

// This process's pool, built on first use and again after a fork().
Pool* pool() {
  const pid_t pid = getpid();
  Pool* current = g_pool.load(std::memory_order_acquire);
  for (;;) {
    if (current != nullptr && current->owner() == pid) return current;
    Pool* fresh = new Pool(pid);
    // On success the previous pool (the parent's, if any) is abandoned on purpose.
    if (g_pool.compare_exchange_strong(current, fresh, std::memory_order_acq_rel)) return fresh;
    delete fresh;  // another thread of this process installed one first; `current` now holds it
  }
}

}  // namespace

void run_tasks(int tasks, void (*fn)(void*, int), void* ctx) {
  if (tasks <= 0) return;
  if (tasks == 1 || t_inside_job || !pool()->try_run(tasks, fn, ctx)) run_inline(tasks, fn, ctx);
}

std::vector<int64_t> weighted_boundaries(const int64_t* offsets, int64_t n, int64_t per_item, int parts) {
  std::vector<int64_t> bounds{0};
  if (n <= 0) return bounds;
  // Weight of items [0, i).
  auto prefix = [&](int64_t i) { return static_cast<double>(offsets[i] - offsets[0]) + static_cast<double>(i) * per_item; };
  const double total = prefix(n);
  int64_t begin = 0;
  for (int left = std::max(parts, 1); left > 1 && begin < n; --left) {
    const double start = prefix(begin);
    const double aim = (total - start) / left;
    // The first end in (begin, n] whose chunk [begin, end) reaches the aim.
    int64_t lo = begin + 1, hi = n;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (prefix(mid) - start >= aim) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    int64_t end = lo;
    // Stop one item short when that lands closer to the aim (the chunk keeps at least one item).
    if (end - 1 > begin && (prefix(end) - start) - aim > aim - (prefix(end - 1) - start)) --end;
    bounds.push_back(end);
    begin = end;
  }
  if (begin < n) bounds.push_back(n);
  return bounds;
}

}  // namespace detail
}  // namespace asdx::cpu
