"""report.html and its plots on hand-made run folders: what the page says, and that the plots are readable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats

from asdx import evaluation, metrics
from asdx.report import _plot_roc, _plot_scores, _sub_score_table, write_report
from asdx.rundir import read_scores_csv
from asdx.scoring.threshold import GammaThreshold
from asdx.submission import write_submission

MACHINES = ("ToyCar", "bearingEmu", "fan")  # case-sensitive order; case-insensitive: bearingEmu, fan, ToyCar


@pytest.fixture
def axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def _test_set(rng, n=10):
    labels = np.repeat([0, 1, 0, 1], n)
    domains = np.repeat(["source", "source", "target", "target"], n)
    scores = rng.gamma(4.0, 1.0, 4 * n) + 3.0 * labels
    return labels, domains, scores


def make_run(run_dir, notes=(), threshold_extra=None):
    """A finished run: fan's gamma fitted on 4 separate threshold scores (as the AE's held-out clips), the others
    on their 36 train scores; test clips labelled; metrics.json as the runner writes it."""
    rng = np.random.default_rng(0)
    (run_dir / "machines").mkdir(parents=True)
    config = {"system": "ae", "config": {"seed": 0, "epochs": 1}, "seconds": 10.0, "threshold_q": 0.9,
              "machines": list(MACHINES), "data": "/data/dcase2026", "notes": []}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "notes.json").write_text(json.dumps(list(notes)))
    truth = {}
    for machine in MACHINES:
        folder = run_dir / "machines" / machine
        folder.mkdir()
        train = rng.gamma(4.0, 1.0, 36)
        (folder / "train_scores.csv").write_text(
            "name,score,nearest_group,distance[a]\n"
            + "".join(f"t{i}.wav,{float(s)!r},{i % 3}.0,{float(s)!r}\n" for i, s in enumerate(train)))
        fitted = train
        if machine == "fan":
            fitted = rng.gamma(4.0, 1.0, 4) + 1.0
            (folder / "threshold_scores.csv").write_text("score\n" + "".join(f"{float(s)!r}\n" for s in fitted))
        threshold = GammaThreshold(0.9).fit(fitted)
        state = {k: v for k, v in threshold.to_dict().items() if k not in ("method", "fallback_reason")}  # as before
        (folder / "threshold.json").write_text(json.dumps({**state, **(threshold_extra or {})}))
        labels, domains, scores = _test_set(rng)
        names = [f"c{i:03d}.wav" for i in range(len(scores))]
        (folder / "test_scores.csv").write_text(
            "name,score,nearest_group,distance[a],label,domain\n"
            + "".join(f"{n},{float(s)!r},{i % 3}.0,{float(s)!r},{y},{d}\n"
                      for i, (n, s, y, d) in enumerate(zip(names, scores, labels, domains))))
        write_submission(run_dir / "submission", machine, names, scores, threshold.decide(scores))
        truth[machine] = evaluation.MachineTruth(tuple(names), labels.astype(np.int8),
                                                 (domains == "target").astype(np.int8), {}, str(folder))
        (folder / "done.json").write_text("{}")
    result = evaluation.evaluate(run_dir / "submission", truth)
    (run_dir / "metrics.json").write_text(json.dumps(evaluation.result_json(result)))
    return run_dir


def test_the_page_says_which_run_it_is_in_case_insensitive_order(tmp_path):
    page = write_report(make_run(tmp_path / "runs" / "ae" / "dev-seed0")).read_text()
    for text in ("dev-seed0", "/data/dcase2026", "last machine finished", "&quot;epochs&quot;: 1", "threshold q"):
        assert text in page, text
    sections = [page.index(f"<h2>{m}</h2>") for m in ("bearingEmu", "fan", "ToyCar")]
    rows = [page.index(f"<tr><td>{m}</td>") for m in ("bearingEmu", "fan", "ToyCar")]
    assert sections == sorted(sections) and rows == sorted(rows)
    assert "<ul></ul>" not in page and "Notes" not in page  # no notes: no empty list
    noted = write_report(make_run(tmp_path / "noted", notes=["BEATs random-tiny: tests only"])).read_text()
    assert "<h2>Notes</h2><ul><li>BEATs random-tiny: tests only</li></ul>" in noted


def test_the_page_names_the_scores_the_gamma_used_and_its_decisions(tmp_path):
    run_dir = make_run(tmp_path / "run", threshold_extra={"method": "mps", "fallback_reason": "too few scores"})
    page = write_report(run_dir).read_text()
    fan = page[page.index("<h2>fan</h2>"):page.index("<h2>ToyCar</h2>")]
    assert "gamma fitted on the system&#x27;s 4 threshold scores (threshold_scores.csv), not on the 36" in fan
    assert "method: mps" in fan and "fallback: too few scores" in fan
    assert "gamma fitted on the 36 train-normal scores" in page[page.index("<h2>ToyCar</h2>"):]
    stored = json.loads((run_dir / "metrics.json").read_text())
    assert f"{stored['machines']['fan']['normal_flag_target']:.4f}" in page
    assert "normals flagged (source)" in page and "jackknife" in page
    # threshold.json without method/fallback (older runs): the page is still written, without them
    assert "method:" not in write_report(make_run(tmp_path / "plain")).read_text()


def test_an_older_run_says_its_threshold_scores_were_not_stored(tmp_path):
    run_dir = make_run(tmp_path / "old")
    (run_dir / "machines" / "fan" / "threshold_scores.csv").unlink()
    page = write_report(run_dir).read_text()
    assert "gamma fitted on 4 scores that this run did not store" in page


def test_the_score_panel_shows_the_fitted_scores_under_the_gammas_probability_per_bin(axes):
    rng = np.random.default_rng(1)
    fitted = rng.gamma(3.0, 1.0, 4) + 1.0
    test = {"score": rng.gamma(3.0, 1.0, 40) + 1.0, "label": np.repeat([0, 1], 20)}
    threshold = GammaThreshold(0.9).fit(rng.gamma(3.0, 1.0, 200) + 1.0).to_dict()
    drawn = _plot_scores(axes, fitted, test, threshold)
    labels = [t.get_text() for t in axes.get_legend().get_texts()]
    assert "threshold scores (n = 4)" in labels
    assert drawn["heights"]["threshold scores (n = 4)"].sum() == pytest.approx(1.0)  # fractions of the 4 clips
    grid, curve = drawn["curve"]
    edges = drawn["edges"]
    width = edges[1] - edges[0]
    shape, loc, scale = threshold["shape"], threshold["loc_fitted"], threshold["scale"]
    expected = (scipy.stats.gamma.cdf(grid + width / 2, shape, loc, scale)
                - scipy.stats.gamma.cdf(grid - width / 2, shape, loc, scale))
    np.testing.assert_allclose(curve, expected, atol=1e-12)
    assert curve.max() <= axes.get_ylim()[1]


def test_a_j_shaped_gamma_stays_inside_the_plot_without_flattening_the_bars(axes):
    rng = np.random.default_rng(0)
    fitted = rng.gamma(0.4, 1.0, 40)
    test = {"score": rng.gamma(0.4, 1.0, 20) + 0.5, "label": np.array([0, 1] * 10)}
    # shape 0.4 with loc just below the smallest score: its density is unbounded there
    threshold = {"shape": 0.4, "loc_fitted": float(fitted.min()) - 1e-9, "scale": 1.0, "threshold": 2.0, "q": 0.9}
    drawn = _plot_scores(axes, fitted, test, threshold)
    top = axes.get_ylim()[1]
    assert drawn["curve"][1].max() <= top
    assert max(h.max() for h in drawn["heights"].values()) >= 0.25 * top


def test_heavy_tailed_scores_get_logarithmic_bins(axes):
    rng = np.random.default_rng(2)
    normal = rng.gamma(4.0, 0.3, 30) + 0.2
    test = {"score": np.concatenate([normal, [70.0, 55.0, 1.5, 2.0]]), "label": np.array([0] * 30 + [1] * 4)}
    threshold = GammaThreshold(0.9).fit(normal).to_dict()
    drawn = _plot_scores(axes, normal[:10], test, threshold)
    assert drawn["log"] and axes.get_xscale() == "log"
    # on a linear axis up to 70 every normal would fall in the first bar or two
    assert drawn["heights"]["test normal (n = 30)"].max() < 0.5


def test_the_roc_legend_gives_each_domains_auc_and_names_the_fpr_line(axes):
    rng = np.random.default_rng(3)
    labels, domains, scores = _test_set(rng)
    _plot_roc(axes, {"label": labels, "domain": domains, "score": scores})
    texts = [t.get_text() for t in axes.get_legend().get_texts()]
    d = (domains == "target").astype(int)
    for domain in ("source", "target"):
        auc = metrics.domain_auc(labels, scores, d, domain)
        assert f"{domain} normals + all anomalies (AUC {auc:.4f})" in texts
    assert any(t.startswith("FPR = 0.1") for t in texts)
    assert f"pAUC {metrics.pauc(labels, scores):.4f}" in axes.get_title()


def test_an_index_column_gets_no_auc(tmp_path):
    run_dir = make_run(tmp_path / "run")
    folder = run_dir / "machines" / "fan"
    table = _sub_score_table(read_scores_csv(folder / "train_scores.csv"), read_scores_csv(folder / "test_scores.csv"))
    assert "<td>distance[a]</td>" in table and "<td>nearest_group</td>" not in table
    assert "Not scores, so not tabled: nearest_group" in table
