// The module _C: build facts, CPU threads, CUDA device and driver queries, and
// one bind_* call per kernel family (csrc/bindings/<family>.cpp).
#include "bindings/common.h"
#include "cpu/isa.h"
#include "cpu/parallel.h"

#ifdef ASDX_WITH_CUDA
#include "asdx_cuda_build.h"  // ASDX_CUDA_ARCHITECTURES, ASDX_CUDA_VERSION (written by cmake/AsdxCuda.cmake)

namespace asdx::cuda {
int device_count();     // csrc/cuda/runtime.cu
int driver_version();   // 0 without a driver, instead of an error
int toolkit_version();  // CUDART_VERSION of the nvcc that built the kernels
}  // namespace asdx::cuda
#endif

namespace asdx::bindings {
namespace {

// cuda_runtime_version: nvcc's version string ("13.0.88"); cuda_toolkit_version: CUDART_VERSION
// as an int (13000), comparable with cuda_driver_version(); cuda_architectures: the CMake list
// compiled, semicolon-separated ("75-real;...;90-virtual"), resolved when CMake chose `native`.
py::dict build_info() {
  py::dict info;
#ifdef ASDX_WITH_CUDA
  info["cuda_compiled"] = true;
  info["cuda_architectures"] = std::string(ASDX_CUDA_ARCHITECTURES);
  info["cuda_runtime_version"] = std::string(ASDX_CUDA_VERSION);
  info["cuda_toolkit_version"] = asdx::cuda::toolkit_version();
#else
  info["cuda_compiled"] = false;
  info["cuda_architectures"] = std::string();
  info["cuda_runtime_version"] = std::string();
  info["cuda_toolkit_version"] = 0;
#endif
  info["compiler"] = std::string(ASDX_CXX_COMPILER);
  info["build_type"] = std::string(ASDX_BUILD_TYPE);
  return info;
}

}  // namespace
}  // namespace asdx::bindings

PYBIND11_MODULE(_C, m) {
  namespace py = pybind11;
  using namespace asdx::bindings;
  m.doc() = "asdx compiled kernels (CPU, and CUDA when built with nvcc)";
  m.def("build_info", &build_info);
  m.def("num_threads", &asdx::cpu::num_threads);
  m.def("set_num_threads", &asdx::cpu::set_num_threads, py::arg("threads"));
  m.def("available_cores", &asdx::cpu::available_cores);
  // The ISA path the CPU kernels run now: ASDX_ISA, or the best this CPU supports (csrc/cpu/isa.h).
  // ValueError naming ASDX_ISA for an unknown value or a path this CPU lacks.
  m.def("cpu_isa", []() { return std::string(asdx::cpu::isa_name(asdx::cpu::active_isa())); });
  m.def("cpu_isa_supported", []() {
    std::vector<std::string> names;
    for (const asdx::cpu::Isa isa : asdx::cpu::supported_isas()) names.emplace_back(asdx::cpu::isa_name(isa));
    return names;
  });
  m.def("cuda_device_count", []() {
#ifdef ASDX_WITH_CUDA
    return asdx::cuda::device_count();
#else
    return 0;
#endif
  });
  // The CUDA version the installed driver supports (12080 for 12.8); 0 without a driver or
  // without CUDA kernels. The kernels need it >= build_info()["cuda_toolkit_version"]: the
  // static CUDA runtime linked into _C refuses older drivers.
  m.def("cuda_driver_version", []() {
#ifdef ASDX_WITH_CUDA
    return asdx::cuda::driver_version();
#else
    return 0;
#endif
  });

  bind_frontend(m);
  bind_scoring(m);
  bind_gamma(m);
  bind_testing(m);
}
