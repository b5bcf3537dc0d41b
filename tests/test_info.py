"""`asdx info` finds the two broken FAISS setups: faiss-cpu beside faiss-gpu, and a faiss-gpu on another CUDA."""

from __future__ import annotations

import importlib

import pytest

from asdx.info import faiss_cuda_major, faiss_problems, format_info

info_module = importlib.import_module("asdx.info")   # `asdx.info` is the function asdx.info()

FAISS_GPU_CU12 = ("1.15.1", ["numpy<3.0,>=1.25.0", "nvidia-cuda-runtime-cu12>=12.1.105",
                             "nvidia-cublas-cu12>=12.1.3.1"])


@pytest.mark.parametrize("name, requires, major", [
    ("faiss-gpu", FAISS_GPU_CU12[1], 12),
    ("faiss-gpu-cu11", ["numpy"], 11),
    ("faiss-gpu-cu12-cuvs", ["numpy", "nvidia-cuda-runtime-cu12"], 12),
    ("faiss-gpu", ["numpy", "packaging"], None),                 # says nothing: no guess
    ("faiss-gpu", ['nvidia-cuda-runtime-cu12; extra == "fix-cuda"'], 12),
])
def test_the_cuda_major_of_a_faiss_gpu(name, requires, major):
    assert faiss_cuda_major(name, requires) == major


def test_a_sound_setup_has_no_problem():
    assert faiss_problems({"faiss-cpu": ("1.15.1", ["numpy"])}, "13.0") == []
    assert faiss_problems({"faiss-cpu": ("1.15.1", ["numpy"])}, None) == []
    assert faiss_problems({"faiss-gpu": FAISS_GPU_CU12}, "12.8") == []
    assert faiss_problems({"faiss-gpu": FAISS_GPU_CU12}, None) == []    # CPU torch: no second CUDA runtime of torch's
    assert faiss_problems({}, "13.0") == []


def test_faiss_cpu_beside_faiss_gpu_is_reported():
    problems = faiss_problems({"faiss-cpu": ("1.15.1", ["numpy"]), "faiss-gpu": FAISS_GPU_CU12}, "12.8")
    assert len(problems) == 1
    assert "faiss-cpu and faiss-gpu are both installed" in problems[0] and "exactly one" in problems[0]


def test_a_faiss_gpu_for_another_cuda_than_torch_is_reported():
    problems = faiss_problems({"faiss-gpu": FAISS_GPU_CU12}, "13.0")
    assert problems == ["faiss-gpu is built for CUDA 12 but torch for CUDA 13.0: two CUDA stacks are installed side by "
                        "side. Pair it with a CUDA 12 build of torch, or use faiss-cpu (pip install '.[cpu]'); see the "
                        "README, Installing."]
    both = faiss_problems({"faiss-cpu": ("1.15.1", []), "faiss-gpu-cu11": ("1.14.1", [])}, "12.4")
    assert len(both) == 2


def test_info_and_its_text_show_the_problems(monkeypatch):
    monkeypatch.setattr(info_module, "_installed_faiss", lambda: {"faiss-cpu": ("1.15.1", ["numpy"]),
                                                               "faiss-gpu": FAISS_GPU_CU12})
    monkeypatch.setattr("torch.version.cuda", "13.0")
    report = info_module.info()
    assert report["faiss_conflict"] is True and report["faiss_gpu_cuda"] == 12 and report["torch_cuda"] == "13.0"
    assert report["faiss_distributions"] == ["faiss-cpu==1.15.1", "faiss-gpu==1.15.1"]
    text = format_info(report)
    warnings = [line for line in text.splitlines() if line.startswith("WARNING: ")]
    assert len(warnings) == 2 and "both installed" in warnings[0] and "CUDA 12 but torch for CUDA 13.0" in warnings[1]
    assert "faiss_problems" not in text


def test_info_reports_the_wait_policy_and_threads():
    report = info_module.info()
    assert report["omp_wait_policy"].startswith(("PASSIVE", "OpenMP's default", "ACTIVE", "passive", "active"))
    assert report["cpu_threads"] >= 1
