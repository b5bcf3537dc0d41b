// Function multiversioning: the hottest CPU loops are compiled for x86-64-v3
// (AVX2, FMA) and for baseline x86-64, and the dynamic loader picks the best one
// for the CPU it runs on. We cannot use -march=native: a wheel built here must
// run on any x86-64 machine. Elsewhere the macro expands to nothing.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define ASDX_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ASDX_MULTIVERSION
#endif
