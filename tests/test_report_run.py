"""What `asdx run` writes and prints for the report side: the threshold scores, the flag rates, the notes."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from asdx.data import generate
from asdx.evaluation import format_report
from asdx.runner import RunOptions, run
from asdx.systems import SYSTEMS, SystemEntry
from asdx.systems.base import MachineScores, System

CAVEAT = "BEATs random-tiny: a small randomly initialised BEATs (tests and the demo only)"


@dataclass
class HeldOutConfig:
    seed: int = 0
    device: str = "cpu"


class HeldOutSystem(System):
    """Scores a clip by its log-energy's distance to the train mean; like the AE's holdout, the threshold is
    fitted on a few separate scores (here: every third clip's, shifted), and it notes a caveat."""

    name = "heldout"

    def _energies(self, clips) -> np.ndarray:
        out = np.zeros(len(clips))
        for indices, audio in clips.batches(self.input_channels, batch_size=8):
            out[indices] = np.log(np.mean(audio.numpy() ** 2, axis=(1, 2)) + 1e-12)
        return out

    def fit_machine(self, machine, train, folder):
        self.context.note(CAVEAT)
        energies = self._energies(train)
        self.mean = float(energies.mean())
        scores = np.abs(energies - self.mean)
        return MachineScores(scores, threshold_scores=scores[::3] + 0.01)

    def load_machine(self, folder):
        raise NotImplementedError

    def score_machine(self, test):
        return MachineScores(np.abs(self._energies(test) - self.mean))


@pytest.fixture
def heldout(monkeypatch):
    monkeypatch.setitem(SYSTEMS, "heldout", SystemEntry(HeldOutConfig, HeldOutSystem, "test system"))


def test_a_run_stores_its_threshold_scores_prints_its_notes_and_reports_flag_rates(heldout, tmp_path, capsys):
    data = generate(tmp_path / "data", machines="fan", seconds=0.5, n_source=8, n_target=3, n_test=4, seed=1,
                    progress=False)
    options = RunOptions(system="heldout", machines="fan", data=data, out=tmp_path / "runs", progress=False)
    run_dir, evaluation = run(options, HeldOutConfig())
    assert f"asdx: note: {CAVEAT}" in capsys.readouterr().err  # on the console, not only in notes.json
    folder = run_dir / "machines" / "fan"
    stored = np.loadtxt(folder / "threshold_scores.csv", skiprows=1)
    threshold = json.loads((folder / "threshold.json").read_text())
    assert threshold["n_train"] == len(stored) == 4  # the 11 train clips' every third: what the gamma saw
    page = (run_dir / "report.html").read_text()
    assert "gamma fitted on the system&#x27;s 4 threshold scores (threshold_scores.csv), not on the 11" in page
    assert CAVEAT in page
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = np.genfromtxt(folder / "test_scores.csv", delimiter=",", names=True, dtype=None, encoding=None)
    decisions = (test["score"] > threshold["threshold"]).astype(int)
    for domain in ("source", "target"):
        normals = (test["label"] == 0) & (test["domain"] == domain)
        assert metrics["machines"]["fan"][f"normal_flag_{domain}"] == pytest.approx(decisions[normals].mean())
    assert set(metrics["decisions"]) >= {"f1", "normal_flag_source", "anomaly_flag_target"}
    text = format_report(evaluation)
    assert "NF(s)" in text and "official score ci95 = " in text and "jackknife 95 % half-width" in text
