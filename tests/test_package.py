"""The installed package: build report, CLI, thread control, README/CI consistency."""

import json
import subprocess
import sys

import numpy as np
import pytest

import asdx
from conftest import ROOT


def test_info_reports_the_build():
    report = asdx.info()
    for key in ("asdx", "torch", "numpy", "faiss", "cuda_kernels_compiled", "cuda_architectures",
                "gpu_visible_to_asdx", "cpu_threads"):
        assert key in report
    assert report["asdx"] == asdx.__version__
    assert isinstance(report["cuda_kernels_compiled"], bool)
    if report["cuda_kernels_compiled"]:
        assert report["cuda_architectures"]  # the list compiled (native, the default list or ASDX_CUDA_ARCHITECTURES)
    assert report["cpu_threads"] >= 1


def test_cli_info_json_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "asdx", "info", "--json"], check=True, capture_output=True, text=True)
    assert json.loads(out.stdout)["asdx"] == asdx.__version__
    help_text = subprocess.run([sys.executable, "-m", "asdx", "--help"], capture_output=True, text=True).stdout
    assert "info" in help_text


def test_thread_count_is_settable():
    before = asdx.get_num_threads()
    try:
        asdx.set_num_threads(3)
        assert asdx.get_num_threads() == 3
        with pytest.raises(ValueError, match="threads"):
            asdx.set_num_threads(0)
    finally:
        asdx.set_num_threads(before)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    marker = "# test:"
    command = next(line for line in readme.splitlines() if line.startswith("pip install") and "test" in line)
    assert command in ci, f"the README test command {command!r} is not what .ci/run runs"
    assert marker not in command


def test_import_asdx_exposes_the_subpackages_lazily():
    code = ("import sys, asdx; assert 'asdx.scoring' not in sys.modules; "
            "assert asdx.scoring.KNNScorer and asdx.features.kaldi_fbank and asdx.systems.SYSTEMS; "
            "assert 'scoring' in dir(asdx)")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        asdx.nope


def test_features_refuse_autograd_input_instead_of_dropping_the_graph():
    import torch

    wave = torch.zeros(1, 1, 4000, requires_grad=True)
    with pytest.raises(ValueError, match="not differentiable.*detach"):
        asdx.features.kaldi_fbank(wave)
    with torch.no_grad():  # no graph is being built: fine
        assert asdx.features.kaldi_fbank(wave).shape[0] == 1
    assert asdx.features.kaldi_fbank(wave.detach()).requires_grad is False


def test_kernel_threads_follow_torch_and_set_num_threads_sets_both():
    import torch

    from asdx._native import _C

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert asdx.get_num_threads() == 1
        asdx.set_num_threads(2)
        assert torch.get_num_threads() == 2 and _C.num_threads() == 2
        torch.set_num_threads(1)  # a training loop changes torch's pool: the next native kernel call follows
        asdx.set_kernels("native")  # (a torch kernel runs in torch's pool and leaves the native one alone)
        asdx.features.logmel_dcase(np.zeros((1, 1, 4096), dtype=np.float32) + 0.01)
        assert _C.num_threads() == 1
        with pytest.raises(ValueError, match="threads"):
            asdx.set_num_threads(0)
    finally:
        asdx.set_kernels(None)
        asdx.set_num_threads(before)


def test_yaml_configs_have_an_extra_that_installs_pyyaml():
    """The README advertises YAML config files: the package must offer a way to install their reader."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.lower().startswith("pyyaml") for req in extras["yaml"])
    readme = (ROOT / "README.md").read_text()
    assert 'pip install ".[yaml]"' in readme


def test_the_readme_says_how_to_get_the_cpu_wheel_anywhere():
    readme = (ROOT / "README.md").read_text()
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in readme
