"""`asdx evaluate` and asdx.evaluation on ground-truth folders and submissions built here."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from asdx import evaluation, metrics
from asdx.cli import main
from asdx.data.ground_truth import GROUND_TRUTH_KINDS
from asdx.submission import write_submission

CELLS = [(domain, label) for domain in ("source", "target") for label in ("normal", "anomaly")]


def _dev_dataset(root, machines=("fan", "ToyCar"), per_cell=10):
    """Empty WAV files with labelled dev test names (only the names are read); returns {machine: (names, y, d)}."""
    truth = {}
    for machine in machines:
        folder = root / "dev_data" / "raw" / machine / "test"
        folder.mkdir(parents=True)
        names, y, d = [], [], []
        for domain, label in CELLS:
            for i in range(per_cell):
                name = f"section_00_{domain}_test_{label}_{i:04d}_vel_{i}_loc_A.wav"
                (folder / name).write_bytes(b"")
                names.append(name)
                y.append(int(label == "anomaly"))
                d.append(int(domain == "target"))
        truth[machine] = (names, np.array(y), np.array(d))
    return truth


def _eval_ground_truth(folder, machines=("Sander", "ToothBrush"), per_cell=25, seed=0, renamed=False):
    """Evaluator-format CSVs with shuffled anonymised names; returns {machine: (names, y, d)}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for kind in GROUND_TRUTH_KINDS[: 3 if renamed else 2]:
        (folder / f"ground_truth_{kind}").mkdir(parents=True, exist_ok=True)
    for machine in machines:
        n = 4 * per_cell
        y = np.repeat([0, 1, 0, 1], per_cell)
        d = np.repeat([0, 0, 1, 1], per_cell)
        order = rng.permutation(n)
        y, d = y[order], d[order]
        names = [f"section_00_{i:04d}.wav" for i in range(n)]
        stem = f"ground_truth_{machine}_section_00_test.csv"
        (folder / "ground_truth_data" / stem).write_text("".join(f"{a},{b}\n" for a, b in zip(names, y)))
        (folder / "ground_truth_domain" / stem).write_text("".join(f"{a},{b}\n" for a, b in zip(names, d)))
        if renamed:
            rows = [f"{a},{_renamed(a, yy, dd)}\n" for a, yy, dd in zip(names, y, d)]
            (folder / "ground_truth_attributes" / stem).write_text("".join(rows))
        truth[machine] = (names, y, d)
    return truth


def _renamed(anonymised, y, d):
    index = anonymised[len("section_00_"):-len(".wav")]
    return f"section_00_{('source', 'target')[d]}_test_{('normal', 'anomaly')[y]}_{index}_speed_3"


def _submit(folder, truth, scorer, rng=None, names_of=None):
    folder.mkdir(parents=True, exist_ok=True)
    for machine, (names, y, d) in truth.items():
        scores = scorer(y, d, rng)
        write_submission(folder, machine, names_of(names, y, d) if names_of else names, scores,
                         (scores > np.median(scores)).astype(int))


def _oracle(y, d, rng):
    return y + 0.1 * d                       # every anomaly above every normal, both domains


def _random(y, d, rng):
    return rng.standard_normal(y.size)


def test_oracle_dev_submission_scores_one(tmp_path, capsys):
    truth = _dev_dataset(tmp_path / "data")
    _submit(tmp_path / "sub", truth, _oracle)
    assert main(["evaluate", "--submission", str(tmp_path / "sub"), "--data", str(tmp_path / "data"),
                 "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "Ω = 1.000" in printed and "ToyCar" in printed and "fan" in printed
    result = json.loads((tmp_path / "out" / "sub_result.json").read_text())
    assert result["official_score"] == 1.0
    assert result["machines"]["fan"]["auc_target"] == 1.0
    assert result["machines"]["fan"]["counts"] == {"clips": 40, "anomalies": 20, "source": 20, "target": 20}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sub_result.csv", "sub_result.json"]


def test_random_eval_submission_scores_about_one_half(tmp_path):
    truth = _eval_ground_truth(tmp_path / "data" / "eval_data" / "ground_truth",
                               machines=("A", "B", "C", "D"), per_cell=100)
    _submit(tmp_path / "sub", truth, _random, np.random.default_rng(7))
    ground_truth = evaluation.dataset_ground_truth(tmp_path / "data", "eval")
    result = evaluation.evaluate(tmp_path / "sub", ground_truth)
    assert abs(result.summary.official_score - 0.5) < 0.06
    assert abs(result.summary.arithmetic_mean - 0.5) < 0.06
    assert 0 < result.ci.ci95 < 0.01       # evaluator's jackknife half-width over 1600 pooled clips


def test_result_equals_the_metrics_recomputed_from_the_rows(tmp_path):
    truth = _eval_ground_truth(tmp_path / "gt", seed=3)
    rng = np.random.default_rng(1)
    _submit(tmp_path / "sub", truth, lambda y, d, r: y * r.uniform(0, 2, y.size) + r.standard_normal(y.size), rng)
    result = evaluation.evaluate(tmp_path / "sub", evaluation.load_ground_truth(tmp_path / "gt"))
    pooled_y, pooled_s = [], []
    for machine, (names, y, d) in truth.items():
        scores = np.loadtxt(tmp_path / "sub" / f"anomaly_score_{machine}_section_00_test.csv", delimiter=",",
                            usecols=1)
        order = np.argsort(names)                      # the file is in our order; compare by name
        expected = metrics.machine_metrics(y, scores, d, scores > np.median(scores))
        assert result.machines[machine] == expected
        pooled_y.append(y[order])
        pooled_s.append(scores[order])
    assert result.summary == metrics.summarize(result.machines.values())
    assert result.ci == metrics.official_ci95(np.concatenate(pooled_y), np.concatenate(pooled_s))


def test_result_csv_has_the_evaluator_layout(tmp_path):
    truth = _eval_ground_truth(tmp_path / "gt")
    _submit(tmp_path / "team", truth, _random, np.random.default_rng(2))
    result = evaluation.evaluate(tmp_path / "team", evaluation.load_ground_truth(tmp_path / "gt"))
    csv_path, json_path = evaluation.write_results(result, tmp_path / "out", "team")
    rows = list(csv.reader(csv_path.open()))
    data = json.loads(json_path.read_text())
    assert rows[0] == ["Sander"]
    assert rows[1] == ["section"] + list(metrics.EVALUATOR_COLUMNS.values())
    assert rows[2][0] == "00"
    assert [float(v) for v in rows[2][1:]] == [data["machines"]["Sander"][k] for k in metrics.EVALUATOR_COLUMNS]
    assert rows[3] == ["", "", "AUC", "pAUC", "precision", "recall", "F1 score"]
    assert [r[0] for r in rows[4:8]] == ["arithmetic mean", "harmonic mean", "source harmonic mean",
                                         "target harmonic mean"]
    m = result.machines["Sander"]
    assert float(rows[4][2]) == pytest.approx((m.auc_source + m.auc_target) / 2)
    assert float(rows[6][2]) == pytest.approx(m.auc_source) and float(rows[7][4]) == pytest.approx(m.precision_target)
    assert rows[8] == [] and rows[9] == ["ToothBrush"]
    labels = [r[0] for r in rows if r]
    assert "harmonic mean over all machine types, sections, and domains" in labels
    official = next(r for r in rows if r and r[0] == "official score")
    assert float(official[2]) == data["official_score"] == result.summary.official_score
    ci = next(r for r in rows if r and r[0] == "official score ci95")
    assert float(ci[2]) == pytest.approx(data["official_score_ci95"])
    over_all = next(r for r in rows if r and r[0].startswith("harmonic mean over all"))
    aucs = [x.auc_source for x in result.machines.values()] + [x.auc_target for x in result.machines.values()]
    assert float(over_all[2]) == pytest.approx(metrics.harmonic_mean(aucs))


def test_renamed_names_map_back_through_ground_truth_attributes(tmp_path):
    truth = _eval_ground_truth(tmp_path / "gt", renamed=True)
    _submit(tmp_path / "sub", truth, _oracle,
            names_of=lambda names, y, d: [_renamed(n, a, b) + ".wav" for n, a, b in zip(names, y, d)])
    result = evaluation.evaluate(tmp_path / "sub", evaluation.load_ground_truth(tmp_path / "gt"))
    assert result.summary.official_score == 1.0


def test_misaligned_submission_is_refused_with_the_names(tmp_path, capsys):
    truth = _eval_ground_truth(tmp_path / "gt")
    names, y, d = truth["Sander"]
    shifted = {"Sander": (names[1:] + ["section_00_9999.wav"], y, d), "ToothBrush": truth["ToothBrush"]}
    _submit(tmp_path / "sub", shifted, _oracle)
    with pytest.raises(evaluation.SubmissionMismatchError) as caught:
        evaluation.evaluate(tmp_path / "sub", evaluation.load_ground_truth(tmp_path / "gt"))
    problems = caught.value.problems
    score_file = str(tmp_path / "sub" / "anomaly_score_Sander_section_00_test.csv")
    assert problems[score_file] == (["section_00_0000.wav"], ["section_00_9999.wav"])
    assert len(problems) == 2                     # the decision file of Sander too; ToothBrush is fine
    assert main(["evaluate", "--submission", str(tmp_path / "sub"), "--ground-truth", str(tmp_path / "gt")]) == 1
    err = capsys.readouterr().err
    assert "1 missing: section_00_0000.wav; 1 extra: section_00_9999.wav" in err
    assert not list((tmp_path / "sub").glob("*_result.*"))


def test_long_name_lists_are_shortened_in_the_message(tmp_path):
    truth = _eval_ground_truth(tmp_path / "gt", machines=("Sander",))
    names, y, d = truth["Sander"]
    _submit(tmp_path / "sub", {"Sander": ([n.replace("section", "sec") for n in names], y, d)}, _oracle)
    with pytest.raises(evaluation.SubmissionMismatchError, match=r"100 missing: .*\(\+80 more\); 100 extra") as caught:
        evaluation.evaluate(tmp_path / "sub", evaluation.load_ground_truth(tmp_path / "gt"))
    missing, extra = next(iter(caught.value.problems.values()))
    assert len(missing) == len(extra) == 100       # the exception keeps the full lists


def test_missing_and_unknown_machine_files(tmp_path):
    truth = _eval_ground_truth(tmp_path / "gt")
    gt = evaluation.load_ground_truth(tmp_path / "gt")
    _submit(tmp_path / "sub", {"Sander": truth["Sander"]}, _oracle)
    with pytest.raises(FileNotFoundError, match="anomaly_score_ToothBrush_section_00_test.csv"):
        evaluation.evaluate(tmp_path / "sub", gt)
    assert evaluation.evaluate(tmp_path / "sub", gt, machines=["Sander"]).summary.official_score == 1.0
    _submit(tmp_path / "sub", {"ToothBrush": truth["ToothBrush"], "Drill": truth["Sander"]}, _oracle)
    with pytest.raises(ValueError, match="without ground truth: Drill"):
        evaluation.evaluate(tmp_path / "sub", gt)
    with pytest.raises(ValueError, match="machines: no ground truth for Drill"):
        evaluation.evaluate(tmp_path / "sub", gt, machines=["Drill"])
    (tmp_path / "sub" / "decision_result_Sander_section_00_test.csv").unlink()
    with pytest.raises(FileNotFoundError, match="decision_result_Sander"):
        evaluation.evaluate(tmp_path / "sub", gt, machines=["Sander"])


def test_inconsistent_or_malformed_ground_truth(tmp_path):
    _eval_ground_truth(tmp_path / "gt", machines=("Sander",))
    domain_file = tmp_path / "gt" / "ground_truth_domain" / "ground_truth_Sander_section_00_test.csv"
    lines = domain_file.read_text().splitlines()
    domain_file.write_text("\n".join(lines[1:] + ["section_00_0500.wav,1"]) + "\n")
    with pytest.raises(ValueError, match="clip names differ .* 1 missing: section_00_0000.wav; 1 extra"):
        evaluation.load_ground_truth(tmp_path / "gt")
    domain_file.write_text("\n".join(lines[:5] + ["section_00_0005.wav,2"] + lines[6:]) + "\n")
    with pytest.raises(ValueError, match="line 6: the domain '2' is not 0 or 1"):
        evaluation.load_ground_truth(tmp_path / "gt")
    with pytest.raises(FileNotFoundError, match="ground_truth_data"):
        evaluation.load_ground_truth(tmp_path)


def test_a_domain_without_normals_is_a_clear_error(tmp_path):
    gt = tmp_path / "gt"
    for kind in ("ground_truth_data", "ground_truth_domain"):
        (gt / kind).mkdir(parents=True)
    names = [f"section_00_{i:04d}.wav" for i in range(6)]
    (gt / "ground_truth_data" / "ground_truth_fan_section_00_test.csv").write_text(
        "".join(f"{n},{y}\n" for n, y in zip(names, [0, 0, 1, 1, 1, 1])))
    (gt / "ground_truth_domain" / "ground_truth_fan_section_00_test.csv").write_text(
        "".join(f"{n},{d}\n" for n, d in zip(names, [0, 0, 0, 1, 1, 1])))
    (tmp_path / "sub").mkdir()
    write_submission(tmp_path / "sub", "fan", names, np.arange(6.0), [0, 0, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="fan .*AUC \\(target: target normals \\+ all anomalies\\) is undefined"):
        evaluation.evaluate(tmp_path / "sub", evaluation.load_ground_truth(gt))


@pytest.mark.parametrize("name, expected", [
    ("section_00_source_test_normal_0000_pro_A_vel_12_loc_B.wav", (0, 0)),
    ("section_00_target_test_anomaly_0050_noAttribute.wav", (1, 1)),
    ("section_00_source_test_anomaly_0001_.wav", (1, 0)),
    ("section_00_target_normal_0035_weight15_BckgF.wav", (0, 1)),      # 2024 RoboticArm: no `_test_`
    ("section_00_source_test_normal_0007.wav", (0, 0)),
])
def test_labels_from_dev_names(name, expected):
    assert evaluation.labels_from_name(name) == expected


@pytest.mark.parametrize("name", ["section_00_0001.wav", "section_01_source_test_normal_0000_a_1.wav",
                                  "section_00_source_train_normal_0000_a_1.wav"])
def test_unlabelled_names_are_refused(name):
    with pytest.raises(ValueError, match="section"):
        evaluation.labels_from_name(name)


def test_cli_module_entry_point_and_argument_errors(tmp_path, capsys):
    truth = _dev_dataset(tmp_path / "data", machines=("fan",))
    _submit(tmp_path / "sub", truth, _oracle)
    done = subprocess.run([sys.executable, "-m", "asdx", "evaluate", "--submission", str(tmp_path / "sub"),
                           "--data", str(tmp_path / "data"), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["official_score"] == 1.0
    assert (tmp_path / "sub_result.csv").is_file() and not (tmp_path / "sub" / "sub_result.csv").exists()
    with pytest.raises(SystemExit) as caught:
        main(["evaluate", "--submission", "x", "--data", "y", "--ground-truth", "z"])
    assert caught.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert main(["evaluate", "--submission", str(tmp_path / "sub"), "--ground-truth", str(tmp_path),
                 "--split", "eval"]) == 1
    assert main(["evaluate", "--submission", str(tmp_path / "sub"), "--data", str(tmp_path / "data"),
                 "--split", "eval"]) == 1      # no eval_data/ground_truth under the root
