"""`asdx run ... --seeds` (asdx.seeds) and `asdx compare` (asdx.compare) on a tiny ae run: 2 machines, 1 epoch."""

import csv
import json
import shutil

import numpy as np
import pytest

from asdx.cli import main
from asdx.seeds import parse_seeds
from asdx.submission import read_decisions


MACHINES = ["fan", "valveEmu"]
KEYS = ("auc_source", "auc_target", "pauc")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from asdx.data import generate

    return generate(tmp_path_factory.mktemp("seeds") / "data", machines=",".join(MACHINES), seconds=1.0,
                    n_source=20, n_target=4, n_test=6, seed=3, progress=False)


def _run(data, out, *flags):
    return ["run", "ae", "--machine", ",".join(MACHINES), "--data", str(data), "--out", str(out), "--epochs", "1",
            "--workers", "0", "--quiet", *flags]


@pytest.fixture(scope="module")
def parent(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(_run(data, out, "--seeds", "2")) == 0
    return out / "ae" / "fan+valveEmu-seeds"


def _done_times(parent):
    return {p: p.stat().st_mtime_ns for p in sorted(parent.glob("seed*/machines/*/done.json"))}


def test_parse_seeds():
    assert parse_seeds("3") == [1, 2, 3]
    assert parse_seeds("4,2, 7") == [4, 2, 7]
    for bad in ("0", "x", "1,,a", "-1", "2,2", ""):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)


def test_every_seed_is_an_ordinary_finished_run_and_the_summary_is_written(parent):
    for seed in (1, 2):
        run_dir = parent / f"seed{seed}"
        assert json.loads((run_dir / "config.json").read_text())["config"]["seed"] == seed
        assert all((run_dir / "machines" / m / "done.json").is_file() for m in MACHINES)
        assert (run_dir / "metrics.json").is_file() and (run_dir / "report.html").is_file()
    for name in ("summary.csv", "summary.json", "summary.html"):
        assert (parent / name).stat().st_size > 100, name
    assert not list(parent.rglob("*.partial"))
    summary = json.loads((parent / "summary.json").read_text())
    assert summary["seeds"] == [1, 2] and summary["overall_machines"] == MACHINES and summary["notes"] == []
    page = (parent / "summary.html").read_text()
    assert "<table>" in page and "http" not in page and "seed1/report.html" in page


def test_summary_equals_numpy_over_the_seeds_metrics(parent):
    per_seed = [json.loads((parent / f"seed{k}" / "metrics.json").read_text()) for k in (1, 2)]
    summary = json.loads((parent / "summary.json").read_text())

    def check(entry, values):
        values = np.array(values)
        assert entry["n"] == len(values)
        assert entry["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert entry["sd"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        assert (entry["min"], entry["max"]) == (pytest.approx(values.min()), pytest.approx(values.max()))

    overall = summary["overall"]
    check(overall["official_score"], [m["official_score"] for m in per_seed])
    for key in KEYS:
        check(overall[key], [m["hmean"][key] for m in per_seed])
    for machine in MACHINES:
        rows = [m["machines"][machine] for m in per_seed]
        for key in KEYS:
            check(summary["machines"][machine][key], [r[key] for r in rows])
        check(summary["machines"][machine]["official_score"], [3 / sum(1 / r[k] for k in KEYS) for r in rows])
        decided_normal = [np.mean(read_decisions(parent / f"seed{k}" / "submission" /
                                                 f"decision_result_{machine}_section_00_test.csv").values == 0)
                          for k in (1, 2)]   # of all test clips, normal and anomalous
        check(summary["machines"][machine]["decided_normal_rate"], decided_normal)
    assert summary["metrics"]["decided_normal_rate"] == "decided-normal rate"
    with open(parent / "summary.csv", newline="") as handle:
        rows = {(r["machine"], r["metric"]): r for r in csv.DictReader(handle)}
    row = rows["overall", "official_score"]
    assert float(row["mean"]) == summary["overall"]["official_score"]["mean"]
    assert float(row["seed2"]) == per_seed[1]["official_score"]


def test_rerun_skips_finished_seeds(parent, data, capsys):
    before = _done_times(parent)
    assert len(before) == 4
    assert main(_run(data, parent.parents[1], "--seeds", "2")) == 0
    out = capsys.readouterr().out
    for seed in (1, 2):
        assert f"seed {seed} ({seed}/2): finished earlier (fan, valveEmu), skipped" in out
    assert "running" not in out and "resuming" not in out
    assert "overall" in out and "summary.html" in out
    assert _done_times(parent) == before


def test_unfinished_seed_is_resumed(parent, data, capsys):
    (parent / "seed2" / "machines" / "valveEmu" / "done.json").unlink()
    before = _done_times(parent)
    assert main(_run(data, parent.parents[1], "--seeds", "2")) == 0
    out = capsys.readouterr().out
    assert "seed 1 (1/2): finished earlier" in out
    assert "seed 2 (2/2): unfinished (fan finished), resuming" in out
    after = _done_times(parent)
    assert (parent / "seed2" / "machines" / "valveEmu" / "done.json") in after
    assert all(after[p] == t for p, t in before.items())  # only valveEmu of seed 2 ran again
    assert json.loads((parent / "summary.json").read_text())["overall"]["official_score"]["n"] == 2


def test_seeds_with_seed_or_a_bad_list_is_refused(data, tmp_path, capsys):
    assert main(_run(data, tmp_path, "--seeds", "2", "--seed", "3")) == 1
    assert "asdx run: error: --seeds and --seed: give one of them" in capsys.readouterr().err
    assert main(_run(data, tmp_path, "--seeds", "1,1")) == 1
    assert "seed 1 given more than once" in capsys.readouterr().err
    assert not (tmp_path / "ae").exists()


def test_compare_names_the_machines_a_run_is_missing(parent, tmp_path, capsys):
    partial = tmp_path / "ae" / "partial"
    shutil.copytree(parent / "seed1", partial)
    (partial / "machines" / "valveEmu" / "done.json").unlink()
    out_dir = tmp_path / "cmp"
    assert main(["compare", str(parent), str(partial), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "ae/partial: missing valveEmu (selected but not finished: valveEmu)" in out
    assert "ae/fan+valveEmu-seeds: missing" not in out
    table = json.loads((out_dir / "compare.json").read_text())
    assert [c["missing"] for c in table["columns"]] == [[], ["valveEmu"]]
    assert table["rows"]["valveEmu"][1] is None and table["overall_machines"] == ["fan"]
    summary = json.loads((parent / "summary.json").read_text())
    seeds_fan, partial_fan = (cell["official_score"] for cell in table["rows"]["fan"])
    assert seeds_fan["mean"] == summary["machines"]["fan"]["official_score"]["mean"]
    assert seeds_fan["sd"] == summary["machines"]["fan"]["official_score"]["sd"]
    assert partial_fan["mean"] == summary["machines"]["fan"]["official_score"]["values"]["1"]
    assert table["rows"]["fan"][1]["official_score_diff"] == pytest.approx(partial_fan["mean"] - seeds_fan["mean"])
    # overall compares like with like: fan only, for both columns
    assert table["rows"]["overall"][1]["official_score"]["mean"] == pytest.approx(partial_fan["mean"])
    assert (out_dir / "compare.csv").read_text().startswith("machine,metric,ae/fan+valveEmu-seeds,")
