# ASDX_CUDA = AUTO | ON | OFF (cache variable, or the environment variable of
# the same name, e.g. `ASDX_CUDA=OFF pip install .`).
#   AUTO: build the CUDA kernels when a CUDA compiler is found.
#   ON:   require a CUDA compiler; fail the build without one.
#   OFF:  CPU kernels only.
# The CUDA code links the static CUDA runtime only, so the extension runs on
# any machine with a recent enough driver and needs no toolkit at run time.

macro(asdx_choose_cuda_mode)
  if(DEFINED ENV{ASDX_CUDA} AND NOT DEFINED ASDX_CUDA)
    set(ASDX_CUDA "$ENV{ASDX_CUDA}" CACHE STRING "Build CUDA kernels: AUTO, ON or OFF")
  endif()
  set(ASDX_CUDA "AUTO" CACHE STRING "Build CUDA kernels: AUTO, ON or OFF")
  string(TOUPPER "${ASDX_CUDA}" ASDX_CUDA)
  if(NOT ASDX_CUDA MATCHES "^(AUTO|ON|OFF)$")
    message(FATAL_ERROR "ASDX_CUDA must be AUTO, ON or OFF, got '${ASDX_CUDA}'")
  endif()

  set(ASDX_WITH_CUDA OFF)
  if(NOT ASDX_CUDA STREQUAL "OFF")
    include(CheckLanguage)
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
      set(ASDX_WITH_CUDA ON)
    elseif(ASDX_CUDA STREQUAL "ON")
      message(FATAL_ERROR "ASDX_CUDA=ON but no CUDA compiler (nvcc) was found. "
                          "Put nvcc on PATH, set CUDACXX, or build with ASDX_CUDA=OFF.")
    else()
      message(STATUS "asdx: no CUDA compiler found, building CPU kernels only")
    endif()
  endif()

  if(ASDX_WITH_CUDA AND NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    # SASS for Ampere (sm_80) and Hopper (sm_90), plus sm_90 PTX for newer GPUs.
    set(CMAKE_CUDA_ARCHITECTURES "80-real;90")
  endif()
endmacro()

# A macro, not a function: enable_language must run in the top-level scope.
macro(asdx_enable_cuda target)
  if(ASDX_WITH_CUDA)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  target_sources(${target} PRIVATE ${ARGN})
  set_target_properties(${target} PROPERTIES
    CUDA_RUNTIME_LIBRARY Static
    CUDA_STANDARD 17
    CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
  target_link_libraries(${target} PRIVATE CUDA::cudart_static)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 --expt-relaxed-constexpr>)
  string(REPLACE ";" "," asdx_arch_list "${CMAKE_CUDA_ARCHITECTURES}")
  target_compile_definitions(${target} PRIVATE
    ASDX_WITH_CUDA
    ASDX_CUDA_ARCHITECTURES="${asdx_arch_list}"
    ASDX_CUDA_VERSION="${CMAKE_CUDA_COMPILER_VERSION}")
  message(STATUS "asdx: CUDA kernels ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
  endif()
endmacro()
