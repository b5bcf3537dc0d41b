"""asdx.rundir: the one home of the run directory's files (names, reading, writing, finished machines, ground truth).

The run folders here are written through RunDir itself, without running a system; test_runner*.py and
test_seeds.py cover the files a real run writes.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from asdx.options import RunOptions
from asdx.rundir import RunDir, differing_keys, is_run_dir, read_scores_csv, run_config
from asdx.submission import write_submission
from asdx.systems.base import MachineScores
from asdx.systems.configs import AEConfig

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "asdx"
FILE_NAMES = ("config.json", "environment.json", "run.log", "notes.json", "metrics.json", "metrics.csv", "report.html",
              "done.json", "threshold.json", "threshold_scores.csv", "train_scores.csv", "test_scores.csv")


def _machine(run_dir: RunDir, machine: str, labels, domains, finished: bool = True, seed: int = 0) -> np.ndarray:
    """A machine's test files as the runner writes them (rows not sorted by name), done.json last; returns the
    decisions written."""
    rng = np.random.default_rng(seed)
    names = [f"section_00_{d or 'x'}_test_{i:04d}.wav" for i, d in enumerate(domains)][::-1]
    scores = MachineScores(rng.gamma(2.0, 1.0, len(names)), {"part": rng.normal(size=len(names))})
    decisions = (scores.scores > 2).astype(int)
    run_dir.machine_dir(machine).mkdir(parents=True, exist_ok=True)
    run_dir.write_scores(machine, "test", names, scores, labels[::-1], domains[::-1])
    write_submission(run_dir.submission_dir, machine, names, scores.scores, decisions)
    if finished:
        run_dir.finish_machine(machine, 2.0)
    return decisions


def test_score_files_read_back_exactly(tmp_path):
    run_dir = RunDir(tmp_path / "ae" / "r")
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=5) * 1e-300, [np.pi, -0.0, 1e300]])   # repr keeps every bit
    scores = MachineScores(values, {"near": values * 3, "far": -values})
    run_dir.machine_dir("fan").mkdir(parents=True)
    names = [f"c{i}.wav" for i in range(len(values))]
    run_dir.write_scores("fan", "train", names, scores)
    train = run_dir.read_scores("fan", "train")
    assert train["sub_scores"] == ["near", "far"] and list(train["name"]) == names
    # exact bits are right here: a CSV written and read back on one host (repr/float round trip), no arithmetic
    for column, expected in (("score", values), ("near", values * 3), ("far", -values)):
        assert train[column].tobytes() == np.asarray(expected, dtype=np.float64).tobytes()
    assert (train["label"] == -1).all() and (train["domain"] == "").all()
    labels = ["normal", "anomaly", None, "normal", "anomaly", "normal", "normal", "normal"]
    domains = ["source", "target", "source", None, "source", "target", "source", "source"]
    run_dir.write_scores("fan", "test", names, scores, labels, domains)
    test = read_scores_csv(run_dir.scores_file("fan", "test"))
    assert test["label"].tolist() == [0, 1, -1, 0, 1, 0, 0, 0]
    assert test["domain"].tolist() == ["source", "target", "source", "", "source", "target", "source", "source"]
    with pytest.raises(ValueError, match="split: expected one of"):
        run_dir.scores_file("fan", "validation")


def test_ground_truth_is_the_finished_fully_labelled_machines_sorted_by_name(tmp_path):
    run_dir = RunDir(tmp_path / "r")
    decisions = _machine(run_dir, "fan", ["normal", "anomaly", "normal", "anomaly"],
                         ["source", "source", "target", "target"])
    _machine(run_dir, "pump", ["normal", None, "anomaly", "normal"], ["source", "source", "target", "target"])
    _machine(run_dir, "valve", ["normal", "anomaly", "normal", "anomaly"], ["source", "target", None, "target"])
    _machine(run_dir, "slider", ["normal", "anomaly"], ["source", "target"], finished=False)
    assert run_dir.finished() == ["fan", "pump", "valve"] and not run_dir.is_finished("slider")
    truth = run_dir.ground_truth()
    assert list(truth) == ["fan"]          # pump lacks a label, valve a domain, slider did not finish
    fan = truth["fan"]
    assert list(fan.names) == sorted(fan.names)
    by_name = dict(zip(fan.names, zip(fan.labels.tolist(), fan.domains.tolist())))
    assert by_name == {"section_00_source_test_0000.wav": (0, 0), "section_00_source_test_0001.wav": (1, 0),
                       "section_00_target_test_0002.wav": (0, 1), "section_00_target_test_0003.wav": (1, 1)}
    assert fan.labels.dtype == np.int8 and fan.domains.dtype == np.int8
    assert fan.origin == str(run_dir.scores_file("fan", "test"))
    assert run_dir.decisions("fan").tolist() == decisions.tolist() and 0 < decisions.sum() < len(decisions)


def test_config_notes_metrics_and_a_restart(tmp_path):
    run_dir = RunDir(tmp_path / "r")
    assert run_dir.read_config() == {} and run_dir.read_notes() == [] and run_dir.read_metrics() is None
    assert not is_run_dir(run_dir.path)
    run_dir.path.mkdir()
    stored = run_config(RunOptions(system="ae", seconds=4.0), AEConfig(epochs=2))
    run_dir.write_config(stored)
    assert is_run_dir(run_dir.path) and run_dir.read_config() == stored
    assert stored == {"system": "ae", "config": json.loads(json.dumps(stored["config"])), "seconds": 4.0,
                      "threshold_q": 0.9} and stored["config"]["epochs"] == 2 and stored["config"]["device"] == "auto"
    wanted = run_config(RunOptions(system="ae", seconds=5.0), AEConfig(epochs=3))
    assert run_dir.config_differences(wanted) == ["epochs (2 -> 3)", "seconds (4.0 -> 5.0)"]
    assert differing_keys({**stored, "machines": ["fan"]}, {**stored, "machines": ["pump"]}) == []  # not compared

    run_dir.save_notes(["a", "b", "a"])
    assert run_dir.read_notes() == ["a", "b"]
    written = run_dir.notes_file.stat().st_mtime_ns
    run_dir.save_notes(["a", "b"])
    assert run_dir.notes_file.stat().st_mtime_ns == written     # unchanged notes are not rewritten
    run_dir.write_metrics({"official_score": 0.5}, "csv\n")
    assert run_dir.read_metrics() == {"official_score": 0.5} and run_dir.metrics_csv.read_text() == "csv\n"

    _machine(run_dir, "fan", ["normal", "anomaly"], ["source", "target"], finished=False)
    run_dir.global_dir.mkdir()
    assert run_dir.global_key() is None
    run_dir.finish_global({"key": "abc", "machines": ["fan"]})
    run_dir.report_dir.mkdir()
    run_dir.report_html.write_text("<html>")
    run_dir.clear_unfinished()
    assert sorted(p.name for p in run_dir.path.iterdir()) == ["config.json", "global"]   # the global stage stays
    assert run_dir.global_key() == "abc"
    (run_dir.global_dir / "done.json").write_text("[1, 2]")                           # not a key record
    assert run_dir.global_key() is None


def test_bad_files_are_named(tmp_path):
    run_dir = RunDir(tmp_path / "r")
    run_dir.machine_dir("fan").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"fan/threshold.json: missing; rerun the machine"):
        run_dir.read_threshold("fan")
    run_dir.config_file.write_text("{not json")
    with pytest.raises(ValueError, match=r"r/config.json: unreadable .*the run directory is incomplete"):
        run_dir.read_config()
    with pytest.raises(FileNotFoundError, match=r"environment.json: missing"):
        run_dir.read_environment()


def test_the_run_name_and_threshold_files(tmp_path):
    options = RunOptions(system="ae", machines="fan,valveEmu", out=tmp_path)
    assert RunDir.for_run(options, AEConfig(seed=7)) == RunDir(tmp_path / "ae" / "fan+valveEmu-seed7")
    named = RunOptions(system="ae", name="mine", out=tmp_path)
    assert RunDir.for_run(named, AEConfig()).path == tmp_path / "ae" / "mine"
    run_dir = RunDir(tmp_path / "r")
    run_dir.machine_dir("fan").mkdir(parents=True)
    assert run_dir.read_threshold_scores("fan") is None
    run_dir.write_threshold_scores("fan", [0.1, 1 / 3])
    assert run_dir.read_threshold_scores("fan").tolist() == [0.1, 1 / 3]
    run_dir.write_threshold("fan", {"threshold": 1.5, "q": 0.9})
    assert run_dir.read_threshold("fan") == {"threshold": 1.5, "q": 0.9}
    run_dir.finish_machine("fan", 1.5)
    assert json.loads((run_dir.machine_dir("fan") / "done.json").read_text()) == {"machine": "fan", "threshold": 1.5}
    assert run_dir.finished_at("fan") == (run_dir.machine_dir("fan") / "done.json").stat().st_mtime


def _spelled_file_names(path: Path) -> list[tuple[int, str]]:
    """String constants (docstrings aside) that name a run-directory file: the name itself or a path ending in it."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and any(node.value == name or node.value.endswith("/" + name) for name in FILE_NAMES)]


def test_the_run_directory_files_are_named_in_rundir_only():
    """Messages may mention a file; code that opens one goes through asdx.rundir (before: 55 spellings in 7
    modules, the finished machines computed three times)."""
    spelled = {str(path.relative_to(PACKAGE)): found for path in sorted(PACKAGE.rglob("*.py"))
               if path.name != "rundir.py" and (found := _spelled_file_names(path))}
    assert spelled == {}
    assert {"config.json", "done.json", "threshold.json"} <= {v for _, v in _spelled_file_names(PACKAGE / "rundir.py")}
