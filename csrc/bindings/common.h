// What every binding file shares: array types, the memory-safety check, and the
// bind_* entry points module.cpp calls. Validation with user-facing messages
// lives in the Python wrappers; the checks in csrc/bindings only guard memory safety.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace asdx::bindings {

namespace py = pybind11;

template <class T>
using ArrayT = py::array_t<T, py::array::c_style | py::array::forcecast>;
using FloatArray = ArrayT<float>;
using DoubleArray = ArrayT<double>;
using Int64Array = ArrayT<int64_t>;

inline void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

// One family each: CPU entry points, then their CUDA twins (device pointers from
// torch tensors, outputs allocated by the caller) when built with nvcc.
void bind_frontend(py::module_& m);
void bind_scoring(py::module_& m);
void bind_gamma(py::module_& m);
void bind_testing(py::module_& m);

}  // namespace asdx::bindings
