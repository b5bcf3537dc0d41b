"""benchmarks/gpu_check.py (`python -m benchmarks gpu`), run as a program, as a benchmark is tested here.

On a machine without a GPU the check must exit 0 with one skip line per GPU step (CI runs it so); a
step that overruns its limit, or one that the budget leaves no time for, must be recorded with the
reason, not lose the summary; its run.log and score parsing is checked by its own --self-test. The
GPU steps themselves run only where a GPU is (benchmarks/README.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GPU_STEPS = ("build", "pytest", "bench", "beats", "runs")
ALL_STEPS = ("environment", "build", "pytest", "bench", "agreement", "beats", "runs")


def gpu_check(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    return subprocess.run([sys.executable, "-m", "benchmarks", "gpu", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def statuses(out: Path) -> dict[str, dict]:
    return {s["step"]: s for s in json.loads((out / "summary.json").read_text())["steps"]}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_without_a_gpu_it_skips_each_gpu_step_in_one_line_and_exits_0(tmp_path):
    out = tmp_path / "out"
    done = gpu_check("--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ALL_STEPS:
        lines = [line for line in done.stdout.splitlines() if line.startswith(f"[{step}] skipped: no CUDA GPU")]
        assert len(lines) == (step in GPU_STEPS), (step, done.stdout)
    steps = statuses(out)
    assert list(steps) == list(ALL_STEPS)
    assert steps["environment"]["status"] == "ok" and steps["environment"]["result"]["gpu"] is False
    assert steps["agreement"]["status"] in ("ok", "skipped")  # skipped while asdx has no set_kernels
    assert all(steps[name]["status"] == "skipped" for name in GPU_STEPS)
    assert "| build | skipped |" in (out / "report.md").read_text()
    assert len(list(out.iterdir())) <= 8


def test_a_step_that_overruns_its_limit_is_failed_with_the_reason(tmp_path):
    out = tmp_path / "out"
    done = gpu_check("--out", str(out), "--steps", "environment", "--step-limit", "0.05")  # no Python starts so fast
    assert done.returncode == 1, done.stdout + done.stderr
    environment = statuses(out)["environment"]
    assert environment["status"] == "failed" and environment["reason"].startswith("timed out after")
    assert statuses(out)["build"]["reason"] == "not in --steps"


def test_steps_the_budget_leaves_no_time_for_are_skipped_with_the_reason(tmp_path):
    out = tmp_path / "out"
    done = gpu_check("--out", str(out), "--budget", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    steps = statuses(out)
    assert all(s["status"] == "skipped" for s in steps.values())
    assert "time budget" in steps["environment"]["reason"] and "time budget" in steps["agreement"]["reason"]


def test_its_parsing_of_run_logs_and_score_files():
    done = gpu_check("--self-test")
    assert done.returncode == 0 and "FAILED" not in done.stdout, done.stdout + done.stderr
    assert done.stdout.count("ok: ") == 10
