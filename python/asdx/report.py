"""report.html for a run directory: per machine, ROC curves, score histograms with the
fitted gamma and its threshold, and the metrics table with the official score.

Reads only the run directory's files (see asdx.runner for the layout), so
`asdx report RUN_DIR` can regenerate it at any time.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import numpy as np

from asdx._atomic import atomic_write, atomic_write_text


TRUTH_COLUMNS = ("label", "domain")


def read_scores_csv(path: Path) -> dict[str, np.ndarray]:
    """name,score,<sub-scores...>[,label,domain] rows -> columns (label -1 and domain "" where unknown).

    The sub-score column names are in the result's "sub_scores" entry, in file order.
    """
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        header = reader.fieldnames or []
    sub_names = [c for c in header if c not in ("name", "score", *TRUTH_COLUMNS)]
    out = {"name": np.array([row["name"] for row in rows]),
           "score": np.array([float(row["score"]) for row in rows]),
           "label": np.array([int(row["label"]) if row.get("label") not in (None, "") else -1 for row in rows],
                             dtype=int),
           "domain": np.array([row.get("domain") or "" for row in rows])}
    for name in sub_names:
        out[name] = np.array([float(row[name]) if row[name] != "" else np.nan for row in rows])
    out["sub_scores"] = sub_names
    return out


def _sub_score_table(train: dict, test: dict) -> str:
    """Per score column: train-normal mean, and with labels the AUC of source and target normals vs anomalies."""
    from sklearn.metrics import roc_auc_score

    columns = ["score", *[c for c in test["sub_scores"] if c in train]]
    if len(columns) == 1:
        return ""
    labelled = (test["label"] >= 0).all() and (test["label"] == 1).any()
    rows = ["<tr><th>score column</th><th>train mean</th><th>test mean</th>"
            + ("<th>AUC (source)</th><th>AUC (target)</th>" if labelled else "") + "</tr>"]
    for column in columns:
        cells = f"<td>{np.nanmean(train[column]):.4g}</td><td>{np.nanmean(test[column]):.4g}</td>"
        if labelled:
            for domain in ("source", "target"):
                keep = (test["label"] == 1) | ((test["label"] == 0) & (test["domain"] == domain))
                ok = len(set(test["label"][keep])) == 2 and np.isfinite(test[column][keep]).all()
                auc = roc_auc_score(test["label"][keep], test[column][keep]) if ok else float("nan")
                cells += f"<td>{auc:.4f}</td>"
        rows.append(f"<tr><td>{html.escape(column)}</td>{cells}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _plot_roc(ax, test: dict) -> None:
    from sklearn.metrics import roc_curve

    anomalies = test["label"] == 1
    for domain, style in (("source", "-"), ("target", "--")):
        keep = anomalies | ((test["label"] == 0) & (test["domain"] == domain))
        if (test["label"][keep] == 0).any() and anomalies.any():
            fpr, tpr, _ = roc_curve(test["label"][keep], test["score"][keep])
            ax.plot(fpr, tpr, style, label=f"{domain} normals + all anomalies")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.axvline(0.1, color="grey", lw=0.5)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(fontsize=7, loc="lower right")


def _plot_scores(ax, train: dict, test: dict, threshold: dict) -> None:
    from scipy import stats

    everything = np.concatenate([train["score"], test["score"]])
    bins = np.linspace(everything.min(), everything.max(), 40)
    heights = [ax.hist(train["score"], bins=bins, density=True, alpha=0.4, label="train normal")[0]]
    if (test["label"] >= 0).any():
        for label, name in ((0, "test normal"), (1, "test anomaly")):
            heights.append(ax.hist(test["score"][test["label"] == label], bins=bins, density=True,
                                   histtype="step", label=name)[0])
    else:
        heights.append(ax.hist(test["score"], bins=bins, density=True, histtype="step", label="test")[0])
    shape, loc, scale = (threshold.get(k) for k in ("shape", "loc_fitted", "scale"))  # GammaThreshold.to_dict()
    if all(v is not None and np.isfinite(v) for v in (shape, loc, scale)):
        grid = np.linspace(bins[0], bins[-1], 400)
        ax.plot(grid, stats.gamma.pdf(grid, shape, loc, scale), "k-", lw=1, label="gamma fit (train)")
    tallest = max(float(np.max(h)) if np.size(h) else 0.0 for h in heights)
    if tallest > 0:  # a J-shaped gamma (shape < 1) spikes at its loc: keep the histograms readable
        ax.set_ylim(0, 1.3 * tallest)
    ax.axvline(threshold["threshold"], color="red", lw=1, label=f"threshold (q = {threshold.get('q', 0.9):g})")
    ax.set(xlabel="anomaly score", ylabel="density", title="scores")
    ax.legend(fontsize=7)


def _machine_figure(path: Path, machine: str, train: dict, test: dict, threshold: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_labels = (test["label"] >= 0).any()
    fig, axes = plt.subplots(1, 2 if has_labels else 1, figsize=(10 if has_labels else 5, 3.6), squeeze=False)
    _plot_scores(axes[0, -1], train, test, threshold)
    if has_labels:
        _plot_roc(axes[0, 0], test)
    fig.suptitle(machine)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def _metrics_table(metrics: dict) -> str:
    columns = [("auc_source", "AUC (source)"), ("auc_target", "AUC (target)"), ("pauc", "pAUC"),
               ("f1_source", "F1 (source)"), ("f1_target", "F1 (target)")]
    rows = ["<tr><th>machine</th>" + "".join(f"<th>{t}</th>" for _, t in columns) + "</tr>"]
    for machine, values in metrics["machines"].items():
        cells = "".join(f"<td>{values.get(key, float('nan')):.4f}</td>" for key, _ in columns)
        rows.append(f"<tr><td>{html.escape(machine)}</td>{cells}</tr>")
    return "<table>" + "".join(rows) + "</table>" + (
        f"<p><b>Official score Ω = {metrics['official_score']:.4f}</b> (harmonic mean of AUC source, AUC target "
        f"and pAUC over machines; arithmetic mean {metrics['arithmetic_mean']:.4f})</p>")


def write_report(run_dir) -> Path:
    """Writes run_dir/report.html and run_dir/report/<machine>.png; returns the HTML path."""
    run_dir = Path(run_dir)
    machines_dir = run_dir / "machines"
    if not machines_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no machines/ folder); run `asdx run` first.")
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    figures = run_dir / "report"
    figures.mkdir(exist_ok=True)
    sections = []
    for machine_dir in sorted(p for p in machines_dir.iterdir() if (p / "done.json").exists()):
        machine = machine_dir.name
        train = read_scores_csv(machine_dir / "train_scores.csv")
        test = read_scores_csv(machine_dir / "test_scores.csv")
        threshold = json.loads((machine_dir / "threshold.json").read_text())
        _machine_figure(figures / f"{machine}.png", machine, train, test, threshold)
        sections.append(f"<h2>{html.escape(machine)}</h2><img src='report/{html.escape(machine)}.png'>"
                        f"<p>threshold {threshold['threshold']:.6g} (q = {threshold.get('q', 0.9):g}); "
                        f"{len(train['score'])} train, {len(test['score'])} test clips</p>"
                        + _sub_score_table(train, test))
    metrics_path = run_dir / "metrics.json"
    table = _metrics_table(json.loads(metrics_path.read_text())) if metrics_path.exists() else (
        "<p>No ground truth for these machines: no metrics.</p>")
    notes_path = run_dir / "notes.json"
    all_notes = [*config.get("notes", []), *(json.loads(notes_path.read_text()) if notes_path.exists() else [])]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in dict.fromkeys(all_notes))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>asdx {html.escape(config.get('system', ''))}"
            f"</title><style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:right}}"
            f"</style></head><body><h1>asdx run: {html.escape(config.get('system', '?'))}</h1>"
            f"<ul>{notes}</ul>{table}{''.join(sections)}</body></html>")
    return atomic_write_text(run_dir / "report.html", page)
