"""The ISA path of the native CPU kernels: ASDX_ISA, what the CPU supports, and the errors (csrc/cpu/isa.h).

The kernels' results per path are tested in test_mahalanobis.py and test_gmm.py (against the references and
against each other, within the tolerances of docs/kernels.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from asdx._native import _C
from asdx.info import format_info, info
from asdx.kernels import cpu_isa, cpu_isa_supported
from asdx.scoring.gmm import gmm_diag_loglik
from asdx.scoring.mahalanobis import mahalanobis

from conftest import ISA_PATHS, isa_params, native_isa


def test_supported_paths_are_a_prefix_of_the_levels_best_first():
    supported = cpu_isa_supported()
    assert supported == list(ISA_PATHS[ISA_PATHS.index(supported[0]):])  # e.g. ["avx2", "baseline"]
    assert supported[-1] == "baseline"


@pytest.mark.parametrize("value", [None, "", "auto", "  AUTO "])
def test_unset_or_auto_is_the_best_path(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("ASDX_ISA", raising=False)
    else:
        monkeypatch.setenv("ASDX_ISA", value)
    assert cpu_isa() == cpu_isa_supported()[0]


@pytest.mark.parametrize("path", isa_params())
def test_a_supported_path_is_used_when_asked(monkeypatch, path):
    monkeypatch.setenv("ASDX_ISA", path)
    assert cpu_isa() == path
    monkeypatch.setenv("ASDX_ISA", f" {path.upper()}\n")  # trimmed and case-insensitive, as ASDX_KERNELS
    assert cpu_isa() == path


@pytest.mark.parametrize("value", ["sse2", "avx", "x86-64-v3", "avx-512", "native"])
def test_an_unknown_value_is_an_error_naming_asdx_isa(monkeypatch, value):
    monkeypatch.setenv("ASDX_ISA", value)
    message = rf"ASDX_ISA \(environment variable\): must be one of 'auto', 'avx512', 'avx2', 'baseline', got '{value}'"
    with pytest.raises(ValueError, match=message):
        cpu_isa()
    # The kernels read ASDX_ISA at each call and raise the same, before looking at the input (even empty).
    q = np.zeros((0, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        _C.mahalanobis_cpu(q, np.zeros((1, 3), np.float32), np.eye(3, dtype=np.float32)[None])
    with pytest.raises(ValueError, match=message):
        _C.gmm_diag_loglik_cpu(q, np.zeros(1), np.zeros((1, 3), np.float32), np.ones((1, 3), np.float32))
    with native_isa(value), pytest.raises(ValueError, match="ASDX_ISA"):
        mahalanobis(np.zeros((2, 3)), np.zeros(3), np.eye(3))


@pytest.mark.parametrize("value, best", [("avx512", "avx2"), ("avx512", "baseline"), ("avx2", "baseline")])
def test_a_path_the_cpu_lacks_is_a_clear_error(value, best):
    # A CPU with only `best` (resolve_isa is what every kernel call runs, with the real best path).
    # (A build without the avx2/avx512 paths, not by GCC >= 12 for x86-64, says so instead.)
    lacks = r"(this CPU \(or its operating system\) does not support|this build of asdx has no such path)"
    with pytest.raises(ValueError, match=rf"ASDX_ISA={value}: {lacks}.*the paths available here are: {best}"):
        _C.testing.resolve_isa(value, best)


@pytest.mark.parametrize("value, best, path", [
    (None, "avx512", "avx512"), ("auto", "avx2", "avx2"), ("", "baseline", "baseline"),
    ("avx2", "avx512", "avx2"), ("baseline", "avx512", "baseline"), ("baseline", "avx2", "baseline"),
    ("avx2", "avx2", "avx2"), ("avx512", "avx512", "avx512"),
])
def test_resolution_on_a_pretended_cpu(value, best, path):
    assert _C.testing.resolve_isa(value, best) == path


LACKING = [path for path in ISA_PATHS if path not in cpu_isa_supported()]


@pytest.mark.skipif(not LACKING, reason="this CPU has every path; test_a_path_the_cpu_lacks_is_a_clear_error "
                                        "pretends a smaller CPU")
@pytest.mark.parametrize("path", LACKING or ["avx512"])
def test_forcing_a_path_this_cpu_lacks_raises_instead_of_crashing(monkeypatch, path):
    monkeypatch.setenv("ASDX_ISA", path)
    lacks = rf"ASDX_ISA={path}: (this CPU|this build of asdx has no such path)"
    with pytest.raises(ValueError, match=lacks):
        cpu_isa()
    with pytest.raises(ValueError, match=lacks):
        _C.mahalanobis_cpu(np.ones((40, 3)), np.zeros((1, 3)), np.eye(3)[None])
    with pytest.raises(ValueError, match=lacks):
        _C.gmm_diag_loglik_cpu(np.ones((40, 3)), np.zeros(1), np.zeros((1, 3)), np.ones((1, 3)))
    with native_isa(path), pytest.raises(ValueError, match=lacks):
        gmm_diag_loglik(np.ones((40, 3)), np.ones(1), np.zeros((1, 3)), np.ones((1, 3)))


def test_asdx_info_shows_the_path(monkeypatch):
    monkeypatch.delenv("ASDX_ISA", raising=False)
    report = info()
    assert report["cpu_isa"] == cpu_isa_supported()[0]
    assert report["cpu_isa_supported"] == ", ".join(cpu_isa_supported())
    assert f"cpu_isa                  {cpu_isa_supported()[0]}" in format_info(report)
    monkeypatch.setenv("ASDX_ISA", "avx3")
    assert info()["cpu_isa"].startswith("invalid (ASDX_ISA (environment variable): must be one of")
