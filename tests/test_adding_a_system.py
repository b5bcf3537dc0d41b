"""DEVELOPERS.md "Adding a system", followed step by step for a small test-only system.

If a step of that section stops being enough (a new file the runner needs, a hook a system must call),
this test fails; fix the section and this test together.
"""

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
from pydantic import Field

import asdx
from asdx.cli import main
from asdx.config import validate_fields
from asdx.data import generate
from asdx.systems import SYSTEMS, SystemEntry
from asdx.systems.base import MachineScores, System


# Step 1: the config dataclass, following asdx.config's convention.
@dataclass
class LoudnessConfig:
    """Distance of a clip's log energy to the train clips' mean log energy."""

    gain: Annotated[float, Field(gt=0)] = field(default=1.0, metadata={"help": "score multiplier"})
    seed: int = field(default=0, metadata={"help": "unused; every system has one"})
    device: str = field(default="cpu", metadata={"help": "torch device"})

    def __post_init__(self):
        validate_fields(self)


# Step 2: the system.
class LoudnessSystem(System):
    name = "loudness"

    def _log_energies(self, clips) -> np.ndarray:
        out = np.zeros(len(clips))
        for indices, audio in clips.batches(self.input_channels, batch_size=8):
            out[indices] = np.log(np.mean(audio.numpy().astype(np.float64) ** 2, axis=(1, 2)) + 1e-12)
        return out

    def fit_machine(self, machine, train, folder):
        energies = self._log_energies(train)
        self.mean = float(energies.mean())
        (Path(folder) / "loudness.json").write_text(json.dumps({"mean": self.mean}))
        n = len(energies)
        held_out_means = (energies.sum() - energies) / (n - 1)  # honest: each clip left out of its own mean
        return MachineScores(self.config.gain * np.abs(energies - held_out_means))

    def load_machine(self, folder):
        self.mean = json.loads((Path(folder) / "loudness.json").read_text())["mean"]

    def score_machine(self, test):
        energies = self._log_energies(test)
        distance = self.config.gain * np.abs(energies - self.mean)
        return MachineScores(distance, {"log_energy": energies})


@pytest.fixture
def loudness(monkeypatch):
    # Step 3: registration (a test registers the class itself; a package entry names "module:Class").
    monkeypatch.setitem(SYSTEMS, "loudness", SystemEntry(LoudnessConfig, LoudnessSystem, "log-energy distance"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("adding") / "data", machines="fan,Sander", seconds=1.0, n_source=8,
                    n_target=3, n_test=4, seed=5, progress=False)


def clip_folder(data, machine) -> Path:
    (folder,) = Path(data).glob(f"*/raw/{machine}/test")
    return folder


def test_the_cli_gives_the_new_system_its_flags_and_checks_them(loudness, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "loudness", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--gain" in out and "score multiplier" in out and "--machine" in out
    assert main(["run", "loudness", "--gain", "0"]) != 0
    assert "gain: must be > 0, got 0 (from --gain)" in capsys.readouterr().err


def test_step_4_run_score_and_compare_need_no_other_change(loudness, data, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["run", "loudness", "--data", str(data), "--machine", "fan,Sander", "--out", str(runs),
                 "--name", "first", "--quiet"]) == 0
    run_dir = runs / "loudness" / "first"
    for machine in ("fan", "Sander"):
        folder = run_dir / "machines" / machine
        assert (folder / "loudness.json").is_file()
        with open(folder / "test_scores.csv") as handle:
            rows = list(csv.DictReader(handle))
        n_test = len(list(clip_folder(data, machine).glob("*.wav")))
        assert len(rows) == n_test > 0 and "log_energy" in rows[0]
        threshold = json.loads((folder / "threshold.json").read_text())
        assert np.isfinite(threshold["threshold"])
        for kind in ("anomaly_score", "decision_result"):
            submitted = run_dir / "submission" / f"{kind}_{machine}_section_00_test.csv"
            assert len(submitted.read_text().splitlines()) == n_test
    assert json.loads((run_dir / "config.json").read_text())["system"] == "loudness"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["machines"]) == {"fan", "Sander"} and 0 <= metrics["official_score"] <= 1
    assert (run_dir / "report.html").is_file()

    # reuse: the detector restores the machine from its folder alone and reproduces the run's test scores
    test_files = sorted(clip_folder(data, "fan").glob("*.wav"))
    detector = asdx.load_detector(run_dir, "fan")
    scored = detector.score_files(test_files)
    with open(run_dir / "machines" / "fan" / "test_scores.csv") as handle:
        by_name = {row["name"]: float(row["score"]) for row in csv.DictReader(handle)}
    np.testing.assert_allclose(scored.scores, [by_name[p.name] for p in test_files], rtol=1e-12)
    capsys.readouterr()
    assert main(["score", "--run", str(run_dir), "--machine", "Sander", "--quiet",
                 str(clip_folder(data, "Sander"))]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) >= 8

    assert main(["compare", str(run_dir), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "compare.csv").is_file()
