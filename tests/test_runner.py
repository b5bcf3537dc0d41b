"""`asdx run ae` end to end on synthetic data, the run directory, the report, the CLI's errors."""

import csv
import json
import warnings

import numpy as np
import pytest

from asdx.cli import main
from asdx.runner import RunOptions, run
from asdx.scoring.gamma import GammaFitWarning
from asdx.scoring.threshold import GammaThreshold
from asdx.submission import read_decisions, read_scores
from asdx.systems.ae import AEConfig

MACHINES = "fan,valveEmu,ToyDrone,Sander"


@pytest.fixture(scope="module")
def ae_data(tmp_path_factory):
    """Two dev and two eval machines, large enough for the AE to learn something (~5 s to write)."""
    from asdx.data import generate

    # diffuse background: the AUC floor checks that the near-channel AE learns (the noisy hall is for the views)
    return generate(tmp_path_factory.mktemp("ae") / "data", machines=MACHINES, seconds=2.0, n_source=40, n_target=6,
                    n_test=12, seed=0, progress=False, background="diffuse")


# holdout: one model per machine (the kfold default trains 3 more; tests/test_ae_threshold_scores.py covers it)
E2E_CONFIG = AEConfig(epochs=40, threshold_scores="holdout")


@pytest.fixture(scope="module")
def ae_run(ae_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    options = RunOptions(system="ae", machines=MACHINES, data=ae_data, out=out, name="e2e", progress=False)
    return run(options, E2E_CONFIG)


def test_every_output_file_exists(ae_run):
    run_dir, evaluation = ae_run
    for name in ("config.json", "environment.json", "run.log", "metrics.json", "metrics.csv", "report.html"):
        assert (run_dir / name).is_file(), name
    for machine in MACHINES.split(","):
        machine_dir = run_dir / "machines" / machine
        for name in ("checkpoint.pt", "train_scores.csv", "test_scores.csv", "threshold.json", "done.json"):
            assert (machine_dir / name).is_file(), f"{machine}/{name}"
        assert (run_dir / "submission" / f"anomaly_score_{machine}_section_00_test.csv").is_file()
        assert (run_dir / "submission" / f"decision_result_{machine}_section_00_test.csv").is_file()
        assert (run_dir / "report" / f"{machine}.png").stat().st_size > 1000
    assert not list(run_dir.rglob("*.partial"))
    assert set(json.loads((run_dir / "metrics.json").read_text())["machines"]) == set(MACHINES.split(","))


def test_threshold_is_the_gamma_fit_of_the_threshold_scores_and_applied_strictly(ae_run):
    """threshold.json's threshold is GammaThreshold(q) refitted here on the scores the run wrote for it
    (threshold_scores.csv, else train_scores.csv), and a test clip is flagged exactly when its score is above it.
    A tolerance, not equality: the gamma fit's kernels are multiversioned."""
    run_dir, _ = ae_run
    q = json.loads((run_dir / "config.json").read_text())["threshold_q"]
    assert q == 0.9
    for machine in MACHINES.split(","):
        machine_dir = run_dir / "machines" / machine
        threshold = json.loads((machine_dir / "threshold.json").read_text())["threshold"]
        source = machine_dir / "threshold_scores.csv"
        if not source.exists():
            source = machine_dir / "train_scores.csv"
        with open(source, newline="") as handle:
            fitted_on = np.array([float(row["score"]) for row in csv.DictReader(handle)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GammaFitWarning)
            refit = GammaThreshold(q=q).fit(fitted_on)
        assert threshold == pytest.approx(refit.threshold_, rel=1e-9), machine
        scores = read_scores(run_dir / "submission" / f"anomaly_score_{machine}_section_00_test.csv")
        decisions = read_decisions(run_dir / "submission" / f"decision_result_{machine}_section_00_test.csv")
        assert list(scores.names) == list(decisions.names)
        np.testing.assert_array_equal(decisions.values, (np.asarray(scores.values) > threshold).astype(int))


def test_auc_is_above_chance(ae_run):
    _, evaluation = ae_run
    # A model that learned nothing scores ~0.5; the synthetic anomalies are audible on channel 0. The target
    # domain (6 training clips here) is, as in DCASE, much harder and not asserted on.
    source_aucs = [m.auc_source for m in evaluation.machines.values()]
    assert np.mean(source_aucs) > 0.65
    assert sum(a > 0.55 for a in source_aucs) >= 3


def test_resume_skips_finished_machines_and_refuses_a_silent_overwrite(ae_run, ae_data):
    run_dir, evaluation = ae_run
    options = RunOptions(system="ae", machines=MACHINES, data=ae_data, out=run_dir.parents[1], name="e2e",
                         progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        run(options, E2E_CONFIG)
    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("machines/*/checkpoint.pt")}
    options.resume = True
    _, again = run(options, E2E_CONFIG)
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("machines/*/checkpoint.pt")} == before
    assert again.summary.official_score == evaluation.summary.official_score


def test_cli_run_report_and_errors(synth_root, tmp_path, capsys):
    assert main(["run", "ae", "--machine", "fan", "--data", str(synth_root), "--out", str(tmp_path),
                 "--epochs", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "official score" in out and "report.html" in out
    run_dir = tmp_path / "ae" / "fan-seed13711"
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0 and (run_dir / "report.html").is_file()

    assert main(["run", "ae", "--machine", "fan", "--data", str(tmp_path / "nowhere")]) == 1
    assert "asdx synth" in capsys.readouterr().err
    assert main(["run", "ae", "--machine", "pump", "--data", str(synth_root), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "pump" in err and "fan" in err and "ToyDrone" in err
    config = tmp_path / "bad.toml"
    config.write_text("epochs = 2\nlearning_rate = 0.1\n")
    assert main(["run", "ae", "--machine", "fan", "--data", str(synth_root), "--out", str(tmp_path),
                 "--name", "bad", "--config", str(config)]) == 1
    assert "learning_rate" in capsys.readouterr().err


def test_config_file_values_and_cli_precedence(synth_root, tmp_path):
    config = tmp_path / "ae.toml"
    config.write_text("epochs = 1\nscore = 'MSE'\n[ae]\nbatch_size = 64\n")
    assert main(["run", "ae", "--machine", "Sander", "--data", str(synth_root), "--out", str(tmp_path),
                 "--config", str(config), "--batch-size", "32", "--quiet"]) == 0
    resolved = json.loads((tmp_path / "ae" / "Sander-seed13711" / "config.json").read_text())["config"]
    assert resolved["epochs"] == 1 and resolved["score"] == "MSE" and resolved["batch_size"] == 32


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("demo", "run", "evaluate", "report", "beats", "synth", "info"):
        assert command in text
