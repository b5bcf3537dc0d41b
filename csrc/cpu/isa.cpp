// The CPU's best ISA path and the ASDX_ISA override (see isa.h).
//
// __builtin_cpu_supports("x86-64-v3"/"x86-64-v4") (GCC >= 12) reads libgcc's cpuid table, which
// also checks the OS state: libgcc's get_available_features (gcc/common/config/i386/cpuinfo.h) sets
// the AVX/AVX2/FMA bits only when XCR0 enables the SSE and YMM states, and the AVX-512 bits only
// when it also enables the opmask and both ZMM states; the x86-64-v3/v4 bits are built from those.
#include "cpu/isa.h"

#include <cctype>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace asdx::cpu {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512:
      return "avx512";
    case Isa::avx2:
      return "avx2";
    case Isa::baseline:
      break;
  }
  return "baseline";
}

Isa best_isa() {
#if ASDX_HAVE_ISA_PATHS
  static const Isa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return Isa::avx512;
    if (__builtin_cpu_supports("x86-64-v3")) return Isa::avx2;
    return Isa::baseline;
  }();
  return best;
#else
  return Isa::baseline;
#endif
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> paths;
  for (int level = static_cast<int>(best_isa()); level >= 0; --level) paths.push_back(static_cast<Isa>(level));
  return paths;
}

namespace {

std::string supported_list(Isa best) {
  std::string list;
  for (int level = static_cast<int>(best); level >= 0; --level) {
    if (!list.empty()) list += ", ";
    list += isa_name(static_cast<Isa>(level));
  }
  return list;
}

const char* level_name(Isa isa) {
  return isa == Isa::avx512 ? "x86-64-v4: AVX-512 F/BW/CD/DQ/VL" : "x86-64-v3: AVX2 and FMA";
}

// Trimmed and lower-cased, as asdx.kernels reads ASDX_KERNELS.
std::string trimmed_lower(const std::string& raw) {
  const char* space = " \t\n\r\f\v";
  const size_t first = raw.find_first_not_of(space);
  if (first == std::string::npos) return std::string();
  std::string text = raw.substr(first, raw.find_last_not_of(space) - first + 1);
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

}  // namespace

Isa resolve_isa(const char* value, Isa best) {
  const std::string raw = value == nullptr ? std::string() : std::string(value);
  const std::string text = trimmed_lower(raw);
  if (text.empty() || text == "auto") return best;
  Isa wanted;
  if (text == "avx512") {
    wanted = Isa::avx512;
  } else if (text == "avx2") {
    wanted = Isa::avx2;
  } else if (text == "baseline") {
    wanted = Isa::baseline;
  } else {
    throw std::invalid_argument("ASDX_ISA (environment variable): must be one of 'auto', 'avx512', 'avx2', "
                                "'baseline', got '" + raw + "'.");
  }
  if (static_cast<int>(wanted) > static_cast<int>(best)) {
    const std::string why = ASDX_HAVE_ISA_PATHS ? std::string("this CPU (or its operating system) does not support ") +
                                                      level_name(wanted)
                                                : std::string("this build of asdx has no such path (built without "
                                                              "GCC >= 12 for x86-64)");
    throw std::invalid_argument("ASDX_ISA=" + text + ": " + why + "; the paths available here are: " +
                                supported_list(best) + " (unset ASDX_ISA or set it to auto for the best).");
  }
  return wanted;
}

Isa active_isa() { return resolve_isa(std::getenv("ASDX_ISA"), best_isa()); }

}  // namespace asdx::cpu
