# ASDX_CUDA = AUTO | ON | OFF (cache variable, or the environment variable of
# the same name, e.g. `ASDX_CUDA=OFF pip install .`).
#   AUTO: build the CUDA kernels when a CUDA compiler is found.
#   ON:   require a CUDA compiler; fail the build without one.
#   OFF:  CPU kernels only.
# The CUDA code links the static CUDA runtime only, so the extension needs no
# toolkit at run time, but it needs a driver at least as new as the nvcc that
# built it (_C.cuda_driver_version() vs build_info()["cuda_toolkit_version"]).
#
# Architectures, first match wins:
#   1. ASDX_CUDA_ARCHITECTURES (cache variable or environment variable), e.g.
#      `ASDX_CUDA_ARCHITECTURES=90 pip install .`; any CMAKE_CUDA_ARCHITECTURES value.
#   2. CMAKE_CUDA_ARCHITECTURES or the environment variable CUDAARCHS (CMake's own).
#   3. The GPUs visible at build time (CMake's `native`, resolved by CMake's
#      compiler check: the list CMAKE_CUDA_ARCHITECTURES_NATIVE, e.g. "86-real"),
#      when every one of them is an architecture this nvcc supports.
#   4. No GPU visible: ASDX_DEFAULT_CUDA_ARCHITECTURES below: SASS for Turing (T4),
#      Ampere (A100, A10/RTX 30), Ada (L4/RTX 40) and Hopper, plus sm_90 PTX that
#      the driver compiles for newer GPUs. nvcc 12 and 13 support all of them
#      (nvcc 13 dropped sm_50-sm_72, so sm_75 is the oldest).
set(ASDX_DEFAULT_CUDA_ARCHITECTURES "75-real;80-real;86-real;89-real;90-real;90-virtual")

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

  # Chosen here, before enable_language(CUDA) would set its own default; `native` is resolved in
  # asdx_enable_cuda, once CMake has run its compiler check (which detects the visible GPUs).
  set(ASDX_CUDA_ARCHITECTURES_FROM_GPU OFF)
  if(ASDX_WITH_CUDA)
    if(DEFINED ENV{ASDX_CUDA_ARCHITECTURES} AND NOT DEFINED ASDX_CUDA_ARCHITECTURES)
      set(ASDX_CUDA_ARCHITECTURES "$ENV{ASDX_CUDA_ARCHITECTURES}" CACHE STRING "CUDA architectures to build")
    endif()
    if(DEFINED ASDX_CUDA_ARCHITECTURES AND NOT ASDX_CUDA_ARCHITECTURES STREQUAL "")
      set(CMAKE_CUDA_ARCHITECTURES "${ASDX_CUDA_ARCHITECTURES}")
    elseif(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
      set(ASDX_CUDA_ARCHITECTURES_FROM_GPU ON)
      set(CMAKE_CUDA_ARCHITECTURES "${ASDX_DEFAULT_CUDA_ARCHITECTURES}")
    endif()
  endif()
endmacro()

# After enable_language(CUDA): the visible GPUs' architectures (CMake >= 3.24 detects them in its
# compiler check; empty without a GPU or a driver) replace the default list when this nvcc supports
# each of them (`nvcc --list-gpu-arch`; CMake's own table of an nvcc's architectures can be stale).
macro(asdx_resolve_native_architectures)
  if(ASDX_CUDA_ARCHITECTURES_FROM_GPU)
    set(asdx_native "${CMAKE_CUDA_ARCHITECTURES_NATIVE}")
    set(asdx_unsupported "")
    if(asdx_native)
      execute_process(COMMAND "${CMAKE_CUDA_COMPILER}" --list-gpu-arch
                      OUTPUT_VARIABLE asdx_nvcc_archs RESULT_VARIABLE asdx_nvcc_result ERROR_QUIET)
      if(asdx_nvcc_result EQUAL 0)
        string(REGEX MATCHALL "compute_[0-9]+" asdx_nvcc_archs "${asdx_nvcc_archs}")
        string(REPLACE "compute_" "" asdx_nvcc_archs "${asdx_nvcc_archs}")
        foreach(asdx_arch IN LISTS asdx_native)
          string(REPLACE "-real" "" asdx_number "${asdx_arch}")
          if(NOT asdx_number IN_LIST asdx_nvcc_archs)
            list(APPEND asdx_unsupported "${asdx_arch}")
          endif()
        endforeach()
      endif()
    endif()
    if(asdx_native AND NOT asdx_unsupported)
      set(CMAKE_CUDA_ARCHITECTURES "${asdx_native}")
      message(STATUS "asdx: building for the visible GPUs (native): ${asdx_native}")
    elseif(asdx_native)
      message(STATUS "asdx: nvcc ${CMAKE_CUDA_COMPILER_VERSION} cannot build for the visible GPUs' "
                     "${asdx_unsupported}; building the default list ${CMAKE_CUDA_ARCHITECTURES} instead (its sm_90 "
                     "PTX runs on newer GPUs; older ones get no kernel)")
    else()
      message(STATUS "asdx: no GPU visible at build time; building ${CMAKE_CUDA_ARCHITECTURES} "
                     "(set ASDX_CUDA_ARCHITECTURES to choose)")
    endif()
  endif()
endmacro()

# A macro, not a function: enable_language must run in the top-level scope.
macro(asdx_enable_cuda target)
  if(ASDX_WITH_CUDA)
  enable_language(CUDA)
  asdx_resolve_native_architectures()
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
  # build_info()["cuda_architectures"]: the list compiled, with CMake's special values resolved.
  set(asdx_arch_list "${CMAKE_CUDA_ARCHITECTURES}")
  if(asdx_arch_list STREQUAL "native")
    set(asdx_arch_list "${CMAKE_CUDA_ARCHITECTURES_NATIVE}")
  elseif(asdx_arch_list STREQUAL "all")
    set(asdx_arch_list "${CMAKE_CUDA_ARCHITECTURES_ALL}")
  elseif(asdx_arch_list STREQUAL "all-major")
    set(asdx_arch_list "${CMAKE_CUDA_ARCHITECTURES_ALL_MAJOR}")
  endif()
  # A generated header, not a -D: the list's semicolons would not survive the compiler command line.
  file(CONFIGURE OUTPUT "${CMAKE_CURRENT_BINARY_DIR}/asdx_generated/asdx_cuda_build.h" CONTENT
       "#define ASDX_CUDA_ARCHITECTURES \"${asdx_arch_list}\"\n#define ASDX_CUDA_VERSION \"${CMAKE_CUDA_COMPILER_VERSION}\"\n")
  target_include_directories(${target} PRIVATE "${CMAKE_CURRENT_BINARY_DIR}/asdx_generated")
  target_compile_definitions(${target} PRIVATE ASDX_WITH_CUDA)
  message(STATUS "asdx: CUDA kernels ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
  endif()
endmacro()
