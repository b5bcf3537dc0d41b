"""benchmarks/gpu_check.py (`python -m benchmarks gpu`) on a machine without a GPU, and its bookkeeping.

On such a machine the check must exit 0 with one skip line per GPU step (CI runs it so); a step
that crashes or overruns its limit must be recorded as failed with the reason, not lose the
summary. The GPU steps themselves can only be run where a GPU is (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.gpu_check import STEPS, Step, compare_scores, run_or_skip, stage_timings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_without_a_gpu_it_skips_each_gpu_step_in_one_line_and_exits_0(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    done = subprocess.run([sys.executable, "-m", "benchmarks", "gpu", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for step in STEPS:
        lines = [line for line in done.stdout.splitlines() if line.startswith(f"[{step.name}] skipped: no CUDA GPU")]
        assert len(lines) == (1 if step.gpu else 0), (step.name, done.stdout)
    summary = json.loads((out / "summary.json").read_text())
    status = {s["step"]: s["status"] for s in summary["steps"]}
    assert status["environment"] == "ok" and status["agreement"] in ("ok", "skipped")
    assert all(status[s.name] == "skipped" for s in STEPS if s.gpu)
    assert summary["steps"][0]["result"]["gpu"] is False
    assert "| build | skipped |" in (out / "report.md").read_text()
    assert len(list(out.iterdir())) <= 8


def _args(**kw):
    return argparse.Namespace(build="auto", cpu_smoke=False, budget=100.0, **kw)


def test_a_step_that_overruns_its_limit_is_failed_with_the_reason(tmp_path):
    (tmp_path / "results").mkdir()
    step = Step("environment", "slow", 0.01, False, "log.txt")  # no Python starts in 10 ms
    record = run_or_skip(step, _args(), {"stage": None, "work": str(tmp_path), "smoke": False},
                         {"environment"}, time.monotonic() + 100, tmp_path, tmp_path)
    assert record["status"] == "failed" and record["reason"].startswith("timed out after")


def test_a_step_that_crashes_is_failed_and_points_to_its_log(tmp_path):
    (tmp_path / "results").mkdir()
    step = Step("environment", "crash", 60, False, "log.txt")
    record = run_or_skip(step, _args(), {"stage": None}, {"environment"}, time.monotonic() + 100, tmp_path,
                         tmp_path)  # the child finds no "work" in its state: a KeyError before any result
    assert record["status"] == "failed" and "before recording a result" in record["reason"]
    assert "KeyError" in (tmp_path / "log.txt").read_text()


def test_steps_out_of_the_budget_are_skipped_with_the_reason(tmp_path):
    step = Step("environment", "any", 60, False, "log.txt")
    record = run_or_skip(step, _args(), {"stage": None}, {"environment"}, time.monotonic() + 1, tmp_path, tmp_path)
    assert record["status"] == "skipped" and "time budget" in record["reason"]


LOG = """\
2026-01-01 10:00:00,000 INFO run runs/sera/x (new): sera on fan
2026-01-01 10:00:00,500 INFO global stage: training on 36 train clips of 1 machines (fan)
2026-01-01 10:00:01,000 INFO global stage: embedding: BEATs tokens (global train clips) of 36 clips (0 cached)
2026-01-01 10:00:03,000 INFO global stage: training: ASP head on 30 clips, 6 for validation, 3 ArcFace heads
2026-01-01 10:00:04,000 INFO sera epoch 1: loss 3.0, val 3.1
2026-01-01 10:00:05,000 INFO note: fan: something
2026-01-01 10:00:06,000 INFO sera epoch 2: loss 2.0, val 2.1
2026-01-01 10:00:07,000 INFO machine 1/1: fan: scoring
2026-01-01 10:00:07,250 INFO machine 1/1: fan: done (threshold 1.0, 2 of 48 test clips flagged)
2026-01-01 10:00:08,000 INFO run finished
"""


def test_stage_timings_of_a_run_log():
    stages = {s["stage"]: s for s in stage_timings(LOG)}
    assert list(stages)[-1].startswith("done") and "run finished" not in stages
    embedding = stages["global stage: embedding: BEATs tokens (global train clips) of 36 clips (0 cached)"]
    assert embedding["seconds"] == 2.0 and embedding["clips_per_s"] == 18.0
    training = stages["global stage: training: ASP head on 30 clips, 6 for validation, 3 ArcFace heads"]
    assert training["epochs"] == 2 and training["seconds"] == 4.0 and training["clips_per_s"] == 15.0
    assert "clips_per_s" not in stages["global stage: training on 36 train clips of 1 machines (fan)"]
    assert stages["scoring"]["seconds"] == 0.25


def test_compare_scores():
    run = {"a.wav": 1.0, "b.wav": 3.0}
    assert compare_scores(run, {"a.wav": 1.0, "b.wav": 3.0 + 1e-6})[0]
    assert not compare_scores(run, {"a.wav": 1.0, "b.wav": 3.01})[0]
    assert not compare_scores(run, {"a.wav": 1.0})[0]


def test_the_gpu_test_files_are_found():
    files = gpu_check._gpu_test_files()
    assert "tests/test_cuda_kernels.py" in files and "tests/test_gamma.py" in files
    assert "tests/test_gpu_check.py" not in files
