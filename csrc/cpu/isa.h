// Which instruction-set path the CPU kernels run: baseline x86-64, avx2 (x86-64-v3: AVX2, FMA) or
// avx512 (x86-64-v4: AVX-512 F/BW/CD/DQ/VL). The hot routines are compiled once per path with
// ASDX_TARGET_V3 / ASDX_TARGET_V4 (no -march flag: a wheel built here must run on any x86-64 CPU),
// and each kernel call picks one with active_isa().
//
// The path in use is the environment variable ASDX_ISA (auto | avx512 | avx2 | baseline; unset or
// empty = auto = the best this CPU supports), read at every kernel call, so tests and benchmarks
// can switch paths within one process. An unknown value, or a path this CPU (or its OS, which must
// save the AVX/AVX-512 registers) lacks, throws std::invalid_argument (ValueError in Python) naming
// ASDX_ISA: a kernel never runs instructions the CPU lacks (no SIGILL).
//
// The targets are GCC's function attributes: only GCC >= 12 (the first whose __builtin_cpu_supports
// knows "x86-64-v3"/"x86-64-v4") on x86-64 gets the avx2/avx512 paths. Other compilers and
// architectures build the baseline path only; ASDX_ISA=avx2/avx512 then errors.
#pragma once

#include <string>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__)
#define ASDX_HAVE_ISA_PATHS 1
#define ASDX_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#define ASDX_TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#else
#define ASDX_HAVE_ISA_PATHS 0
#define ASDX_TARGET_V3
#define ASDX_TARGET_V4
#endif

namespace asdx::cpu {

enum class Isa { baseline = 0, avx2 = 1, avx512 = 2 };

// "baseline", "avx2", "avx512".
const char* isa_name(Isa isa);

// The best path this CPU and OS can run, in this build.
Isa best_isa();

// Every path this CPU can run, best first ("avx512", "avx2", "baseline" on an x86-64-v4 CPU).
std::vector<Isa> supported_isas();

// The path an ASDX_ISA value selects on a CPU whose best path is `best`; value nullptr or "" = auto.
// Throws std::invalid_argument naming ASDX_ISA for an unknown value or a path above `best`.
// Pure (no environment, no CPU query): tests call it to pretend a smaller CPU.
Isa resolve_isa(const char* value, Isa best);

// resolve_isa(getenv("ASDX_ISA"), best_isa()): the path a kernel call runs now.
Isa active_isa();

}  // namespace asdx::cpu
