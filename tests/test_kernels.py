"""Kernel selection (asdx.kernels): ASDX_KERNELS / set_kernels, every fallback reason of "auto" and the note it
writes once, simulated on the CPU (build facts, driver version, compute capability and a failing native launch
are replaced), and that every public kernel goes through the selection."""

from __future__ import annotations

import importlib
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import asdx
from asdx import kernels
from asdx.kernels import BuildFacts, runs_on_capability

info_module = importlib.import_module("asdx.info")   # `asdx.info` is the function asdx.info()
runner = importlib.import_module("asdx.runner")
CUDA0 = torch.device("cuda:0")
GOOD = BuildFacts(cuda_compiled=True, toolkit_version=12040, architectures="75-real;80-real;90-real;90-virtual",
                  driver_version=12080)


@pytest.fixture(autouse=True)
def clean_selection(monkeypatch):
    """Each test starts from the default (no ASDX_KERNELS, no set_kernels), with nothing said yet."""
    monkeypatch.delenv("ASDX_KERNELS", raising=False)
    previous = kernels._choice
    kernels.set_kernels(None)
    kernels.reset_state()
    yield
    kernels.set_kernels(previous)
    kernels.reset_state()


def simulate(monkeypatch, facts: BuildFacts = GOOD, capability=(8, 0)):
    monkeypatch.setattr(kernels, "build_facts", lambda: facts)
    monkeypatch.setattr(kernels, "device_capability", lambda device: capability)


class Calls:
    """Stand-ins for the three implementations of one kernel call; records which ran."""

    def __init__(self, cuda_error: BaseException | None = None):
        self.ran: list[str] = []
        self.cuda_error = cuda_error

    def native_cpu(self):
        self.ran.append("native_cpu")
        return "native_cpu"

    def native_cuda(self):
        self.ran.append("native_cuda")
        if self.cuda_error is not None:
            raise self.cuda_error
        return "native_cuda"

    def torch(self):
        self.ran.append("torch")
        return "torch"

    def run(self, family: str = "mahalanobis", device=CUDA0):
        return kernels.dispatch(family, device, self.native_cpu, self.native_cuda, self.torch)


# ----------------------------------------------------------------------------- the choice


def test_default_is_auto_and_the_environment_and_set_kernels_choose(monkeypatch):
    assert asdx.get_kernels() == "auto"
    monkeypatch.setenv("ASDX_KERNELS", "torch")
    assert asdx.get_kernels() == "torch"
    monkeypatch.setenv("ASDX_KERNELS", " Native ")
    assert asdx.get_kernels() == "native"
    asdx.set_kernels("auto")  # wins over the environment
    assert asdx.get_kernels() == "auto"
    asdx.set_kernels(None)
    assert asdx.get_kernels() == "native"


def test_a_bad_choice_is_refused_naming_where_it_came_from(monkeypatch):
    monkeypatch.setenv("ASDX_KERNELS", "cuda")
    with pytest.raises(ValueError, match=r"ASDX_KERNELS .*'native', 'torch', 'auto'.*'cuda'"):
        asdx.get_kernels()
    with pytest.raises(ValueError, match="ASDX_KERNELS"):
        Calls().run()
    with pytest.raises(ValueError, match="set_kernels"):
        asdx.set_kernels("gpu")
    with pytest.raises(ValueError, match="family"):
        kernels.dispatch("fft", None, int, int, int)


def test_auto_runs_native_on_the_cpu_and_torch_runs_torch_everywhere(monkeypatch):
    simulate(monkeypatch)
    calls = Calls()
    assert calls.run(device=None) == "native_cpu"
    assert calls.run(device=torch.device("cpu")) == "native_cpu"
    assert calls.run() == "native_cuda"
    asdx.set_kernels("torch")
    assert calls.run(device=None) == "torch" and calls.run() == "torch"
    assert kernels.fallback_notes() == []  # a choice, not a fallback


def test_native_forces_native_and_its_errors_propagate(monkeypatch):
    simulate(monkeypatch, BuildFacts(False, 0, "", 0))
    asdx.set_kernels("native")
    calls = Calls(cuda_error=RuntimeError("CUDA error: no kernel image is available for execution on the device"))
    with pytest.raises(RuntimeError, match="no kernel image"):
        calls.run()
    assert calls.ran == ["native_cuda"] and kernels.fallback_notes() == []


# ----------------------------------------------------------------------------- each fallback reason


@pytest.mark.parametrize("facts, capability, reason", [
    (BuildFacts(False, 0, "", 0), (8, 0), "asdx was built without CUDA kernels"),
    (BuildFacts(True, 13000, "75-real;80-real;90", 12040), (9, 0),
     "the NVIDIA driver supports CUDA 12.4, older than the CUDA 13.0 toolkit asdx was built with"),
    (BuildFacts(True, 12040, "80-real;90", 12080), (7, 5), "no kernel for compute capability 7.5 (built for 80-real;90"),
])
def test_each_unavailability_falls_back_to_torch_and_says_why_once(monkeypatch, caplog, facts, capability, reason):
    simulate(monkeypatch, facts, capability)
    calls = Calls()
    with caplog.at_level(logging.WARNING, logger="asdx.kernels"):
        results = [calls.run(family) for family in ("mahalanobis", "gmm", "gamma", "frontend", "gmm")]
    assert results == ["torch"] * 5 and "native_cuda" not in calls.ran
    notes = kernels.fallback_notes()
    assert len(notes) == 1 and reason in notes[0] and "cuda:0" in notes[0] and "torch" in notes[0]
    assert [r.getMessage() for r in caplog.records] == notes  # logged once too
    assert calls.run(device=None) == "native_cpu"  # the CPU is unaffected


def test_a_launch_error_on_first_use_falls_back_for_that_family_only(monkeypatch, caplog):
    simulate(monkeypatch)
    failing = Calls(cuda_error=RuntimeError("CUDA error: no kernel image is available for execution on the device"))
    with caplog.at_level(logging.WARNING, logger="asdx.kernels"):
        assert failing.run("gmm") == "torch"
        assert failing.run("gmm") == "torch"
    assert failing.ran == ["native_cuda", "torch", "torch"]  # not retried once marked unusable
    notes = kernels.fallback_notes()
    assert len(notes) == 1 and len(caplog.records) == 1
    assert "gmm" in notes[0] and "first use" in notes[0] and "no kernel image" in notes[0]
    assert Calls().run("mahalanobis") == "native_cuda"  # the other families still run natively
    assert Calls().run("gmm", torch.device("cuda:1")) == "native_cuda"  # and so does the family on another device


def test_an_error_after_a_working_first_launch_is_not_hidden(monkeypatch):
    simulate(monkeypatch)
    assert Calls().run("gamma") == "native_cuda"
    with pytest.raises(RuntimeError, match="illegal memory access"):
        Calls(cuda_error=RuntimeError("CUDA error: an illegal memory access was encountered")).run("gamma")
    assert kernels.fallback_notes() == []


@pytest.mark.parametrize("error", [ValueError("n_fft must be a power of two"),
                                   torch.cuda.OutOfMemoryError("CUDA out of memory")])
def test_bad_arguments_and_out_of_memory_are_no_launch_errors(monkeypatch, error):
    simulate(monkeypatch)
    with pytest.raises(type(error)):
        Calls(cuda_error=error).run("frontend")
    assert kernels.fallback_notes() == []


def test_the_fallback_notes_reach_the_run_notes(monkeypatch):
    simulate(monkeypatch, BuildFacts(False, 0, "", 0))
    Calls().run()
    notes, saved = [], []
    system = SimpleNamespace(context=SimpleNamespace(notes=notes, note=lambda text: notes.append(text)))
    run_dir = SimpleNamespace(save_notes=lambda given: saved.append(list(given)))
    runner._save_notes(run_dir, system)
    assert saved == [kernels.fallback_notes()] and "without CUDA kernels" in saved[0][0]


# ----------------------------------------------------------------------------- the build facts


@pytest.mark.parametrize("architectures, capability, expected", [
    ("75-real;80-real;90-real;90-virtual", (7, 5), True),
    ("75-real;80-real;90-real;90-virtual", (8, 6), True),    # sm_80 machine code runs on 8.x, x >= 0
    ("75-real;80-real;90-real;90-virtual", (12, 0), True),   # the PTX of 9.0, compiled by the driver
    ("80-real;90", (7, 5), False),                           # a T4 under the old default list
    ("80-real;90-real", (10, 0), False),                     # no PTX: nothing for a newer major
    ("80-real;90", (10, 0), True),
    ("86-real", (8, 0), False),
    ("90a-real", (9, 0), True),
    ("90a-real;90a-virtual", (10, 0), False),                # architecture-specific code: that one only
    ("sm_75", (7, 5), True),
    ("", (8, 0), None),
    ("native", (8, 0), None),
    ("all;80-real", (8, 0), True),
])
def test_which_architectures_run_on_a_capability(architectures, capability, expected):
    assert runs_on_capability(capability, architectures) is expected


def test_build_facts_read_new_and_old_builds(monkeypatch):
    new = SimpleNamespace(build_info=lambda: {"cuda_compiled": True, "cuda_toolkit_version": 13000,
                                              "cuda_architectures": "75-real;90-virtual"},
                          cuda_driver_version=lambda: 12080)
    monkeypatch.setattr(kernels, "_C", new)
    assert kernels.build_facts() == BuildFacts(True, 13000, "75-real;90-virtual", 12080)
    old = SimpleNamespace(build_info=lambda: {"cuda_compiled": True, "cuda_architectures": "80-real;90",
                                              "cuda_runtime_version": "12.4"})
    monkeypatch.setattr(kernels, "_C", old)
    assert kernels.build_facts() == BuildFacts(True, 12040, "80-real;90", 0)  # no driver call: unknown, not checked
    simulate_old = kernels.build_facts()
    monkeypatch.setattr(kernels, "device_capability", lambda device: (8, 0))
    assert simulate_old.driver_version == 0 and kernels.native_cuda_problem(CUDA0) is None


def test_info_shows_the_choice_the_build_and_each_device(monkeypatch):
    simulate(monkeypatch, BuildFacts(True, 13000, "80-real;90", 12040), capability=(7, 5))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Tesla T4")
    monkeypatch.setenv("ASDX_KERNELS", "auto")
    report = info_module.info()
    assert report["kernels"] == "auto" and report["cuda_toolkit"] == "13.0" and report["cuda_driver"] == "12.4"
    [device] = report["cuda_devices"]
    assert device["capability"] == "7.5" and device["native_kernels"] is False and "driver" in device["why_not"]
    text = info_module.format_info(report)
    assert "cuda:0" in text and "Tesla T4 (compute capability 7.5): torch kernels: the NVIDIA driver" in text
    monkeypatch.setattr(kernels, "build_facts", lambda: GOOD)
    assert "native kernels run" in info_module.format_info(info_module.info())
    monkeypatch.setenv("ASDX_KERNELS", "fast")
    assert "ASDX_KERNELS" in info_module.info()["kernels"]  # shown, not raised


# ----------------------------------------------------------------------------- every public kernel selects


class Unavailable:
    """A compiled module with nothing in it: any native call fails."""

    def __getattr__(self, name):
        raise AssertionError(f"native {name} called under ASDX_KERNELS=torch")


def test_every_public_kernel_runs_without_the_native_module_under_torch(monkeypatch):
    from asdx import features
    from asdx.features import _launch, fbank, logmel, stereo

    gamma, gmm, mahalanobis = (importlib.import_module(f"asdx.scoring.{name}") for name in ("gamma", "gmm",
                                                                                              "mahalanobis"))

    for module in (_launch, fbank, logmel, stereo, gamma, gmm, mahalanobis):
        monkeypatch.setattr(module, "_C", Unavailable())
    asdx.set_kernels("torch")
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((1, 2, 3000)).astype(np.float32) * 0.1
    assert features.logmel_dcase(audio).shape == (1, 2, 6, 128)
    assert features.kaldi_fbank(torch.from_numpy(audio)).shape == (1, 2, 17, 128)
    assert features.stereo_features(audio).bands.shape == (1, 7, 6, 128)
    x = rng.standard_normal((5, 3))
    assert mahalanobis.mahalanobis(x, np.zeros(3), np.eye(3)).shape == (5, 1)
    assert gmm.gmm_diag_loglik(x, [1.0], np.zeros((1, 3)), np.ones((1, 3))).shape == (5,)
    assert gamma.fit_gamma(rng.gamma(2.0, size=30)).ok
    assert np.isfinite(gamma.gamma_ppf(0.9, 2.0, 0.0, 1.0))
    asdx.set_kernels("auto")
    with pytest.raises(AssertionError, match="native"):
        mahalanobis.mahalanobis(x, np.zeros(3), np.eye(3))
