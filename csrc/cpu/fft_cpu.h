// In-place complex FFT over split real/imaginary double arrays, for power-of-two n.
// Inputs must already sit in bit-reversed order (the callers scatter them there
// while windowing). The stage loop runs over contiguous twiddles so the compiler
// vectorises it; the schedule is the CUDA kernel's, one radix-2 stage at a time.
#pragma once

#include "asdx/fft.h"
#include "multiversion.h"

namespace asdx::cpu {

// Defined in fft_cpu.cpp, compiled for x86-64-v3 and for baseline x86-64; the
// loader picks one for the running CPU.
void fft_bit_reversed_in_place(double* re, double* im, const fft::Tables& tables);

}  // namespace asdx::cpu
