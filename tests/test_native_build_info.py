"""The build facts asdx._C reports (asdx.kernels and `asdx info` read exactly these names)."""

from asdx._native import _C


def test_build_info_has_the_toolkit_and_the_compiled_architectures():
    info = _C.build_info()
    assert isinstance(info["cuda_compiled"], bool)
    assert type(info["cuda_toolkit_version"]) is int  # CUDART_VERSION, e.g. 13000 for CUDA 13.0
    assert isinstance(info["cuda_architectures"], str)  # the CMake list, e.g. "75-real;80-real;...;90-virtual"
    assert isinstance(info["cuda_runtime_version"], str)  # nvcc's version string, e.g. "13.0.88"
    if info["cuda_compiled"]:
        assert info["cuda_toolkit_version"] >= 11000 and info["cuda_architectures"]
        assert info["cuda_runtime_version"].startswith(str(info["cuda_toolkit_version"] // 1000) + ".")
    else:
        assert info["cuda_toolkit_version"] == 0 and info["cuda_architectures"] == ""


def test_driver_version_is_an_int_and_never_raises():
    """0 without a driver or without CUDA kernels: callers compare it with cuda_toolkit_version."""
    version = _C.cuda_driver_version()
    assert type(version) is int and version >= 0
    if not _C.build_info()["cuda_compiled"]:
        assert version == 0
