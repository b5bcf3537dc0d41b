# -O3 for the C++ kernels. No -march=native: a wheel built here must run on any
# x86-64 machine. -ffp-contract=off keeps CPU results independent of whether the
# compiler fuses multiply-adds.
function(asdx_set_compiler_flags target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-O3 -Wall -Wextra -ffp-contract=off>)
  elseif(MSVC)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:/O2>)
  endif()
endfunction()
