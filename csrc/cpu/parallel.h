// parallel_for over a persistent pool of std::threads. We avoid OpenMP so that
// our threads never fight torch's bundled OpenMP runtime in the same process.
//
// The pool (parallel.cpp) is created on first use and grown to the largest
// thread count asked for; its workers sleep on a condition variable between
// jobs. It is rebuilt in a forked child (threads do not survive fork(), and a
// torch DataLoader forks its workers). A call made while another caller's job
// holds the pool, or from inside a running job (nesting), runs its chunks
// inline on the calling thread, one after the other: it never waits for the
// pool and never deadlocks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <vector>

namespace asdx::cpu {

int num_threads();
void set_num_threads(int threads);
int available_cores();

namespace detail {

// Calls fn(ctx, t) exactly once for every t in [0, tasks) and returns when all
// calls have returned: task 0 on the calling thread, the others on pool
// workers (or all inline, in order, see above). fn must not throw.
void run_tasks(int tasks, void (*fn)(void*, int), void* ctx);

// Runs chunk(t) for t in [0, tasks) via run_tasks and rethrows, on the caller,
// the exception of the lowest-numbered chunk that threw (all chunks still run).
template <class Chunk>
void run_chunks(int tasks, Chunk& chunk) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(tasks));
  struct Context {
    Chunk* chunk;
    std::exception_ptr* errors;
  } context{&chunk, errors.data()};
  run_tasks(
      tasks,
      [](void* raw, int t) {
        auto* c = static_cast<Context*>(raw);
        try {
          (*c->chunk)(t);
        } catch (...) {
          c->errors[t] = std::current_exception();
        }
      },
      &context);
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// Contiguous chunks of [0, n) of about equal weight, item i weighing
// (offsets[i + 1] - offsets[i]) + per_item, for at most `parts` chunks.
// Returns the chunk boundaries b_0 = 0 < b_1 < ... < b_m = n (m <= parts).
// Greedy: each chunk aims at the remaining weight over the remaining chunks
// and ends at whichever item boundary lands closer to that aim, so one heavy
// item gets a chunk of its own and the light ones are shared by the rest.
std::vector<int64_t> weighted_boundaries(const int64_t* offsets, int64_t n, int64_t per_item, int parts);

}  // namespace detail

// Calls body(begin, end) on contiguous chunks of [0, n), at most one chunk per
// thread and none smaller than min_chunk. Rethrows a chunk's exception on the caller.
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
  auto run = [&](int w) {
    const int64_t begin = w * chunk;
    const int64_t end = std::min(n, begin + chunk);
    if (begin < end) body(begin, end);
  };
  detail::run_chunks(workers, run);
}

// Like parallel_for over [0, n), but for ragged items given by offsets (n + 1
// nondecreasing entries): item i costs (offsets[i + 1] - offsets[i]) + per_item,
// and the chunks are contiguous with about equal total cost (not equal counts),
// at most one per thread and none cheaper than min_cost (roughly).
template <class Body>
void parallel_for_weighted(const int64_t* offsets, int64_t n, int64_t per_item, int64_t min_cost, Body&& body) {
  if (n <= 0) return;
  const int64_t total = (offsets[n] - offsets[0]) + n * per_item;
  const int64_t max_workers = std::min<int64_t>(n, std::max<int64_t>(1, total / std::max<int64_t>(1, min_cost)));
  const int workers = static_cast<int>(std::min<int64_t>(num_threads(), max_workers));
  if (workers <= 1) {
    body(int64_t{0}, n);
    return;
  }
  const std::vector<int64_t> bounds = detail::weighted_boundaries(offsets, n, per_item, workers);
  auto run = [&](int w) { body(bounds[w], bounds[w + 1]); };
  detail::run_chunks(static_cast<int>(bounds.size()) - 1, run);
}

}  // namespace asdx::cpu
