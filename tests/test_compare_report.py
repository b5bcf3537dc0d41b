"""`asdx compare` with the system report's published column and the decision rows, on hand-made run folders.

The run folders hold just what asdx.seeds.read_run reads (config.json, done.json, test_scores.csv and the
submission), so these tests need no training.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from asdx import metrics
from asdx.cli import main
from asdx.compare import compare, compare_csv_text, format_compare
from asdx.data.synth import MANIFEST
from asdx.report_tables import PUBLISHED, TITLE
from asdx.submission import write_submission

N = 8  # clips per domain x label cell


def _machine_data(machine: str, seed: int):
    rng = np.random.default_rng([seed, len(machine)])
    labels = np.repeat([0, 1, 0, 1], N)
    domains = np.repeat(["source", "source", "target", "target"], N)
    scores = rng.normal(size=4 * N) + labels
    decisions = (scores > 0.8).astype(int)
    names = [f"section_00_{d}_test_{'anomaly' if y else 'normal'}_{i:04d}.wav"
             for i, (d, y) in enumerate(zip(domains, labels))]
    return names, labels, domains, scores, decisions


def make_run(run_dir, data_root, system: str, machines, seed: int = 0):
    """A finished run folder of `system` on `data_root` (asdx.runner's layout, only the files compare reads)."""
    (run_dir / "machines").mkdir(parents=True)
    config = {"system": system, "config": {"seed": seed}, "machines": list(machines), "data": str(data_root)}
    (run_dir / "config.json").write_text(json.dumps(config))
    for machine in machines:
        names, labels, domains, scores, decisions = _machine_data(machine, seed)
        folder = run_dir / "machines" / machine
        folder.mkdir()
        rows = ["name,score,label,domain"] + [f"{n},{float(s)!r},{y},{d}"
                                          for n, s, y, d in zip(names, scores, labels, domains)]
        (folder / "test_scores.csv").write_text("\n".join(rows) + "\n")
        write_submission(run_dir / "submission", machine, names, scores, decisions)
        (folder / "done.json").write_text("{}")
    return run_dir


@pytest.fixture
def dcase(tmp_path):
    root = tmp_path / "dcase"
    root.mkdir()
    return root


@pytest.fixture
def synthetic(tmp_path):
    root = tmp_path / "synth"
    root.mkdir()
    (root / MANIFEST).write_text("{}")
    return root


def _value(entry, key):
    return None if entry is None or key not in entry else entry[key]["mean"]


def test_the_report_column_holds_table_1_beside_a_run_on_dcase_data(tmp_path, dcase):
    run = make_run(tmp_path / "runs" / "ae" / "dev", dcase, "ae", ["fan", "ToyCar", "gearboxEmu"])
    table = compare([run, "report"])
    assert [c["label"] for c in table["columns"]] == ["ae/dev", "report:ae"]
    assert table["columns"][1]["path"] == TITLE and table["synthetic_machines"] == []
    published = {"fan": (60.22, 45.80, 52.89), "ToyCar": (76.64, 53.96, 57.74), "gearboxEmu": (75.68, 52.36, 53.16)}
    for machine, values in published.items():
        ours, report = table["rows"][machine]
        for key, value in zip(("auc_source", "auc_target", "pauc"), values):
            assert _value(report, key) == pytest.approx(value / 100, abs=1e-12)
        assert _value(report, "official_score") == pytest.approx(3 / sum(100 / v for v in values))
        assert report["official_score_diff"] == pytest.approx(
            _value(report, "official_score") - _value(ours, "official_score"))
        assert _value(report, "f1_source") is None  # the report publishes no decisions
    overall = table["rows"]["overall"][1]
    every = [v / 100 for values in published.values() for v in values]
    assert _value(overall, "official_score") == pytest.approx(metrics.harmonic_mean(every))
    text = format_compare(table)
    assert "(synthetic)" not in text and "0.6022" in text
    assert "report:ae,report:ae sd" in compare_csv_text(table).splitlines()[0]


def test_all_seven_dev_machines_give_the_printed_macro_omega(tmp_path, dcase):
    run = make_run(tmp_path / "ae" / "all", dcase, "ae", list(PUBLISHED["ae"].machines))
    overall = compare(["report", run])["rows"]["overall"][0]
    assert round(100 * _value(overall, "official_score"), 2) == 58.17   # Table 1's "Macro Ω: 58.17"
    fusion = make_run(tmp_path / "fusion" / "all", dcase, "fusion", list(PUBLISHED["ae"].machines))
    table = compare([fusion, "report"])
    assert _value(table["rows"]["overall"][1], "official_score") == 0.6146
    assert table["rows"]["fan"][1] is None  # fusion: no per-machine figures published


def test_synthetic_machines_are_named_and_left_blank(tmp_path, synthetic):
    run = make_run(tmp_path / "ae" / "synth", synthetic, "ae", ["fan", "valveEmu"])
    table = compare([run, "report:ae"])
    assert table["synthetic_machines"] == ["fan", "valveEmu"]
    assert all(table["rows"][m][1] is None for m in ("fan", "valveEmu", "overall"))
    assert table["rows"]["fan"][0] is not None
    text = format_compare(table)
    assert "fan (synthetic)" in text and "valveEmu (synthetic)" in text
    assert any("synthetic data" in note for note in table["notes"])


def test_a_missing_data_root_leaves_the_report_blank(tmp_path):
    run = make_run(tmp_path / "ae" / "gone", tmp_path / "no-such-root", "ae", ["fan"])
    table = compare([run, "report"])
    assert table["rows"]["fan"][1] is None
    assert any("not found" in note for note in table["notes"])


def test_decision_rows_are_the_runs_flag_rates_and_f1(tmp_path, dcase):
    run = make_run(tmp_path / "ae" / "dev", dcase, "ae", ["fan", "ToyCar"])
    table = compare([run])
    per_machine = {}
    for machine in ("fan", "ToyCar"):
        _, labels, domains, scores, decisions = _machine_data(machine, 0)
        entry = table["rows"][machine][0]
        for domain in ("source", "target"):
            for label, name in ((0, "normal"), (1, "anomaly")):
                chosen = decisions[(domains == domain) & (labels == label)]
                assert _value(entry, f"{name}_flag_{domain}") == pytest.approx(chosen.mean())
        per_machine[machine] = metrics.machine_metrics(labels, scores, (domains == "target").astype(int), decisions)
        assert _value(entry, "f1_source") == pytest.approx(per_machine[machine].f1_source)
    overall = table["rows"]["overall"][0]
    assert _value(overall, "f1_target") == pytest.approx(
        metrics.harmonic_mean([m.f1_target for m in per_machine.values()]))
    assert _value(overall, "normal_flag_source") == pytest.approx(
        np.mean([m.normal_flag_source for m in per_machine.values()]))
    assert "normals flagged (target)" in format_compare(table)


def test_report_needs_one_system_and_a_run(tmp_path, dcase, capsys):
    ae = make_run(tmp_path / "ae" / "a", dcase, "ae", ["fan"])
    sera = make_run(tmp_path / "sera" / "b", dcase, "sera", ["fan"])
    with pytest.raises(ValueError, match="report:ae, report:proto"):
        compare([ae, sera, "report"])
    assert _value(compare([ae, sera, "report:proto"])["rows"]["fan"][2], "pauc") == pytest.approx(0.5989)
    assert main(["compare", "report:nope", str(ae), "--out", str(tmp_path / "cmp")]) == 1
    assert "no published figures for system 'nope'" in capsys.readouterr().err
    assert main(["compare", "report", "--out", str(tmp_path / "cmp")]) == 1
    assert "needs at least one run directory" in capsys.readouterr().err
