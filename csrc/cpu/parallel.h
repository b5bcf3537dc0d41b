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
#include <atomic>
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

// Chunks per thread that parallel_for and parallel_for_weighted aim at. With
// one chunk per thread a call lasts as long as its slowest thread, and on a
// shared host a thread that loses its core for a while holds the whole call
// up; several smaller chunks, handed out on demand, let the other threads take
// over its share. Few enough that a body's per-call setup (its scratch
// buffers) stays negligible.
constexpr int64_t kChunksPerThread = 8;

// Runs chunk(c) for every c in [0, chunks) on up to `threads` threads (via
// run_tasks), each thread taking the next chunk not yet taken until none is
// left, so a thread that is held up does not hold the others. Rethrows, on the
// caller, the exception of the lowest-numbered chunk that threw (all chunks
// still run).
template <class Chunk>
void run_chunks(int threads, int64_t chunks, Chunk& chunk) {
  if (chunks <= 0) return;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(chunks));
  std::atomic<int64_t> next{0};
  struct Context {
    Chunk* chunk;
    std::exception_ptr* errors;
    std::atomic<int64_t>* next;
    int64_t chunks;
  } context{&chunk, errors.data(), &next, chunks};
  run_tasks(
      static_cast<int>(std::min<int64_t>(std::max(threads, 1), chunks)),
      [](void* raw, int) {
        auto* c = static_cast<Context*>(raw);
        // run_tasks publishes the context before and joins after the tasks: relaxed suffices.
        for (int64_t i = c->next->fetch_add(1, std::memory_order_relaxed); i < c->chunks;
             i = c->next->fetch_add(1, std::memory_order_relaxed)) {
          try {
            (*c->chunk)(i);
          } catch (...) {
            c->errors[i] = std::current_exception();
          }
        }
      },
      &context);
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// Start of part `part` of [0, n) cut into `parts` contiguous parts whose sizes differ by at most one.
inline int64_t even_boundary(int64_t n, int64_t parts, int64_t part) {
  return part * (n / parts) + std::min(part, n % parts);
}

// Contiguous chunks of [0, n) of about equal weight, item i weighing
// (offsets[i + 1] - offsets[i]) + per_item, for at most `parts` chunks.
// Returns the chunk boundaries b_0 = 0 < b_1 < ... < b_m = n (m <= parts).
// Greedy: each chunk aims at the remaining weight over the remaining chunks
// and ends at whichever item boundary lands closer to that aim, so one heavy
// item gets a chunk of its own and the light ones are shared by the rest.
std::vector<int64_t> weighted_boundaries(const int64_t* offsets, int64_t n, int64_t per_item, int parts);

}  // namespace detail

// Calls body(begin, end) on contiguous chunks of [0, n) that cover it once,
// on up to num_threads() threads, none smaller than min_chunk: about
// kChunksPerThread chunks per thread, handed out on demand (run_chunks), so one
// thread may run several chunks. Rethrows a chunk's exception on the caller.
template <class Body>
void parallel_for(int64_t n, int64_t min_chunk, Body&& body) {
  if (n <= 0) return;
  const int64_t most_chunks = std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk));
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), most_chunks));
  if (threads <= 1) {
    body(int64_t{0}, n);
    return;
  }
  const int64_t chunks = std::min<int64_t>(most_chunks, threads * detail::kChunksPerThread);
  auto run = [&](int64_t c) { body(detail::even_boundary(n, chunks, c), detail::even_boundary(n, chunks, c + 1)); };
  detail::run_chunks(threads, chunks, run);
}

// Like parallel_for over [0, n), but for ragged items given by offsets (n + 1
// nondecreasing entries): item i costs (offsets[i + 1] - offsets[i]) + per_item,
// and the chunks are contiguous with about equal total cost (not equal counts),
// about kChunksPerThread per thread, handed out on demand, none cheaper than
// min_cost (roughly).
template <class Body>
void parallel_for_weighted(const int64_t* offsets, int64_t n, int64_t per_item, int64_t min_cost, Body&& body) {
  if (n <= 0) return;
  const int64_t total = (offsets[n] - offsets[0]) + n * per_item;
  const int64_t most_chunks = std::min<int64_t>(n, std::max<int64_t>(1, total / std::max<int64_t>(1, min_cost)));
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), most_chunks));
  if (threads <= 1) {
    body(int64_t{0}, n);
    return;
  }
  const int parts = static_cast<int>(std::min<int64_t>(most_chunks, threads * detail::kChunksPerThread));
  const std::vector<int64_t> bounds = detail::weighted_boundaries(offsets, n, per_item, parts);
  auto run = [&](int64_t c) { body(bounds[c], bounds[c + 1]); };
  detail::run_chunks(threads, static_cast<int64_t>(bounds.size()) - 1, run);
}

}  // namespace asdx::cpu
