"""report.html for a run directory: what the run was, its metrics and decisions, and per machine the
ROC curves and the score histograms under the fitted gamma and its threshold.

Reads only the run directory's files (asdx.rundir), so `asdx report RUN_DIR` can
regenerate it at any time. The score panel shows the scores the gamma was really fitted on
(threshold_scores.csv where the system gave its own, else train_scores.csv) with their count, and
the fit as its probability per histogram bin, so curve and bars share one scale and a J-shaped fit
cannot leave the plot. Scores spread over decades get logarithmic bins.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np

from asdx._atomic import atomic_write, atomic_write_text
from asdx.options import THRESHOLD_Q
from asdx.rundir import THRESHOLD_SCORES, RunDir

# Sub-score columns that are labels or indices, not anomaly scores (proto's nearest_group: the index of the
# nearest prototype group): no mean and no AUC is computed for them.
NOT_SCORES = ("nearest_group",)
LOG_BINS_RATIO = 30.0  # positive scores spanning more than this factor get logarithmic bins


def threshold_scores(run_dir: RunDir, machine: str, train: dict, threshold: dict) -> tuple[np.ndarray, str]:
    """The scores the gamma was fitted on and a sentence saying what they are."""
    scores = run_dir.read_threshold_scores(machine)
    n_train = len(train["score"])
    if scores is not None:
        return scores, (f"gamma fitted on the system's {len(scores)} threshold scores ({THRESHOLD_SCORES}), "
                        f"not on the {n_train} scores of train_scores.csv, which can be in-sample (the AE's final "
                        "model scores the clips it trained on) and are not plotted")
    fitted = threshold.get("n_train")
    if fitted is not None and int(fitted) != n_train:
        return train["score"], (f"gamma fitted on {fitted} scores that this run did not store (an older asdx); "
                                f"the histogram shows the {n_train} scores of train_scores.csv instead, which "
                                "can be in-sample")
    return train["score"], f"gamma fitted on the {n_train} train-normal scores of train_scores.csv"


def _scored(test: dict) -> bool:
    return bool((test["label"] >= 0).all() and (test["label"] == 1).any() and (test["label"] == 0).any())


def _sub_score_table(train: dict, test: dict) -> str:
    """Per score column: train mean, test mean, and with labels the AUC of source / target normals vs anomalies."""
    from sklearn.metrics import roc_auc_score

    columns = ["score", *[c for c in test["sub_scores"] if c in train and c not in NOT_SCORES]]
    skipped = [c for c in test["sub_scores"] if c in NOT_SCORES]
    if len(columns) == 1:
        return ""
    labelled = _scored(test)
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
    note = (f"<p><small>Not scores, so not tabled: {html.escape(', '.join(skipped))} (an index).</small></p>"
            if skipped else "")
    return "<table>" + "".join(rows) + "</table>" + note


def _plot_roc(ax, test: dict) -> None:
    """Per domain the evaluator's ROC (that domain's normals + all anomalies) with its AUC; the pAUC range."""
    from sklearn.metrics import roc_auc_score, roc_curve

    from asdx.metrics import MAX_FPR, pauc

    anomalies = test["label"] == 1
    for domain, style in (("source", "-"), ("target", "--")):
        keep = anomalies | ((test["label"] == 0) & (test["domain"] == domain))
        if (test["label"][keep] == 0).any() and anomalies.any():
            fpr, tpr, _ = roc_curve(test["label"][keep], test["score"][keep])
            auc = roc_auc_score(test["label"][keep], test["score"][keep])  # = asdx.metrics.domain_auc
            ax.plot(fpr, tpr, style, label=f"{domain} normals + all anomalies (AUC {auc:.4f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.axvline(MAX_FPR, color="grey", lw=0.7, ls="-.", label=f"FPR = {MAX_FPR:g} (pAUC over FPR ≤ {MAX_FPR:g})")
    title = "ROC"
    if _scored(test):
        title += f" (pAUC {pauc(test['label'], test['score']):.4f})"
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(fontsize=7, loc="lower right")


def score_bins(values: np.ndarray, n: int) -> tuple[np.ndarray, bool]:
    """(bin edges, logarithmic?) over all values: logarithmic when positive values span > LOG_BINS_RATIO."""
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        low, high = low - 0.5, high + 0.5
    log = low > 0 and high / low > LOG_BINS_RATIO
    return (np.geomspace(low, high, n + 1) if log else np.linspace(low, high, n + 1)), log


def _gamma_per_bin(grid: np.ndarray, edges: np.ndarray, log: bool, shape: float, loc: float,
                   scale: float) -> np.ndarray:
    """The fitted gamma's probability of a histogram bin centred at each grid point (the bars' scale)."""
    from scipy import stats

    if log:
        half = np.sqrt(edges[1] / edges[0])
        low, high = grid / half, grid * half
    else:
        half = (edges[1] - edges[0]) / 2
        low, high = grid - half, grid + half
    return stats.gamma.cdf(high, shape, loc, scale) - stats.gamma.cdf(low, shape, loc, scale)


def _plot_scores(ax, fitted: np.ndarray, test: dict, threshold: dict) -> dict:
    """Histograms (fraction of each group's clips per bin) of the fitted scores and the test scores, the gamma's
    probability per bin and the threshold. Returns what was drawn: bins, log, bar heights, the curve."""
    groups = [(f"threshold scores (n = {len(fitted)})", fitted, "bar")]
    if (test["label"] >= 0).any():
        groups += [(f"test {name} (n = {int(np.sum(test['label'] == label))})", test["score"][test["label"] == label],
                    "step") for label, name in ((0, "normal"), (1, "anomaly"))]
    else:
        groups.append((f"test (n = {len(test['score'])})", test["score"], "step"))
    everything = np.concatenate([fitted, test["score"], [threshold["threshold"]]])
    n_bins = int(np.clip(1.5 * np.sqrt(max(len(g[1]) for g in groups)), 10, 40))
    edges, log = score_bins(everything, n_bins)
    heights = {}
    for label, values, kind in groups:
        if not len(values):
            continue
        weights = np.full(len(values), 1.0 / len(values))
        heights[label] = ax.hist(values, bins=edges, weights=weights, label=label, histtype=kind,
                                 alpha=0.45 if kind == "bar" else 1.0)[0]
    drawn = {"edges": edges, "log": log, "heights": heights, "curve": None}
    shape, loc, scale = (threshold.get(k) for k in ("shape", "loc_fitted", "scale"))  # GammaThreshold.to_dict()
    if all(v is not None and np.isfinite(v) for v in (shape, loc, scale)):
        grid = np.geomspace(edges[0], edges[-1], 400) if log else np.linspace(edges[0], edges[-1], 400)
        curve = _gamma_per_bin(grid, edges, log, shape, loc, scale)
        ax.plot(grid, curve, "k-", lw=1, label=f"fitted gamma (shape {shape:.3g}), probability per bin")
        drawn["curve"] = (grid, curve)
    tallest = max([float(np.max(h)) for h in heights.values()]
                  + ([float(np.max(drawn["curve"][1]))] if drawn["curve"] is not None else []) + [1e-12])
    ax.set_ylim(0, 1.12 * tallest)  # every bar and the whole curve inside the axes
    if log:
        ax.set_xscale("log")
    ax.axvline(threshold["threshold"], color="red", lw=1, label=f"threshold (q = {threshold.get('q', THRESHOLD_Q):g})")
    ax.set(xlabel="anomaly score" + (" (log scale)" if log else ""), ylabel="fraction of clips per bin",
           title="scores")
    ax.legend(fontsize=7)
    return drawn


def _machine_figure(path: Path, machine: str, fitted: np.ndarray, test: dict, threshold: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_labels = (test["label"] >= 0).any()
    fig, axes = plt.subplots(1, 2 if has_labels else 1, figsize=(11 if has_labels else 5.5, 4), squeeze=False)
    _plot_scores(axes[0, -1], fitted, test, threshold)
    if has_labels:
        _plot_roc(axes[0, 0], test)
    fig.suptitle(machine)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def _number(value) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.4f}"


def _metrics_table(metrics: dict) -> str:
    from asdx.evaluation import CI95_MEANING
    from asdx.metrics import FLAG_COLUMNS

    columns = [("auc_source", "AUC (source)"), ("auc_target", "AUC (target)"), ("pauc", "pAUC"),
               ("f1_source", "F1 (source)"), ("f1_target", "F1 (target)"), *FLAG_COLUMNS.items()]
    rows = ["<tr><th>machine</th>" + "".join(f"<th>{t}</th>" for _, t in columns) + "</tr>"]
    for machine in sorted(metrics["machines"], key=str.lower):
        values = metrics["machines"][machine]
        cells = "".join(f"<td>{_number(values.get(key))}</td>" for key, _ in columns)
        rows.append(f"<tr><td>{html.escape(machine)}</td>{cells}</tr>")
    ci = metrics.get("official_score_ci95")
    decisions = metrics.get("decisions") or {}
    flagged = ", ".join(f"{title} {_number(decisions.get(key)) or 'n/a'}" for key, title in FLAG_COLUMNS.items())
    return ("<table>" + "".join(rows) + "</table>"
            f"<p><b>Official score Ω = {metrics['official_score']:.4f}</b> (harmonic mean of AUC source, AUC target "
            f"and pAUC over machines; arithmetic mean {metrics['arithmetic_mean']:.4f})"
            + (f"; ci95 {ci:.4f}: {html.escape(CI95_MEANING)}" if ci is not None else "") + ".</p>"
            + (f"<p>Decisions: F1 {_number(decisions.get('f1'))} (the evaluator's harmonic mean over machines and "
               f"domains; arithmetic mean {_number(decisions.get('f1_amean'))}); flagged, mean over machines: "
               f"{flagged}. A gamma threshold at quantile q aims at flagging a share 1 − q of the normals.</p>"
               if decisions else ""))


def _threshold_text(threshold: dict, description: str, n_train: int, n_test: int) -> str:
    parts = [f"threshold {threshold['threshold']:.6g} (q = {threshold.get('q', THRESHOLD_Q):g}); {description}"]
    fit = [f"{name} {threshold[key]:.4g}" for name, key in (("shape", "shape"), ("loc", "loc_fitted"),
                                                            ("scale", "scale")) if threshold.get(key) is not None]
    if fit:
        parts.append("fit: " + ", ".join(fit))
    if threshold.get("method"):
        parts.append(f"method: {threshold['method']}")
    if threshold.get("fallback_reason"):
        parts.append(f"fallback: {threshold['fallback_reason']}")
    parts.append(f"{n_train} train clips, {n_test} test clips")
    return "<p>" + html.escape("; ".join(parts)) + ".</p>"


def _run_header(run_dir: RunDir, config: dict, finished: list[str]) -> str:
    """Which run this is: name, folder, data, machines, when its last machine finished, and its config."""
    when = (time.strftime("%Y-%m-%d %H:%M", time.localtime(max(run_dir.finished_at(m) for m in finished)))
            if finished else "no machine finished")
    rows = [("run", run_dir.name), ("folder", str(run_dir.path.resolve())), ("system", config.get("system", "?")),
            ("data", config.get("data", "?")), ("machines", ", ".join(config.get("machines", []))),
            ("last machine finished", when), ("report written", time.strftime("%Y-%m-%d %H:%M")),
            ("crop (s)", config.get("seconds", "")), ("threshold q", config.get("threshold_q", ""))]
    table = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                    f"{html.escape(str(v))}</td></tr>" for k, v in rows)
    settings = json.dumps(config.get("config", {}), indent=2, sort_keys=True)
    return (f"<table>{table}</table><details><summary>config</summary><pre>{html.escape(settings)}</pre>"
            "</details>")


def write_report(run_dir) -> Path:
    """Writes run_dir/report.html and run_dir/report/<machine>.png; returns the HTML path."""
    run_dir = RunDir(run_dir)
    if not run_dir.machines_dir.is_dir():
        raise FileNotFoundError(f"{run_dir.path}: not a run directory (no machines/ folder); run `asdx run` first.")
    config = run_dir.read_config()
    run_dir.report_dir.mkdir(exist_ok=True)
    finished = sorted(run_dir.finished(), key=str.lower)
    sections = []
    for machine in finished:
        train = run_dir.read_scores(machine, "train")
        test = run_dir.read_scores(machine, "test")
        threshold = run_dir.read_threshold(machine)
        fitted, description = threshold_scores(run_dir, machine, train, threshold)
        _machine_figure(run_dir.report_dir / f"{machine}.png", machine, fitted, test, threshold)
        figure = f"{run_dir.report_dir.name}/{html.escape(machine)}.png"
        sections.append(f"<h2>{html.escape(machine)}</h2><img src='{figure}'>"
                        + _threshold_text(threshold, description, len(train["score"]), len(test["score"]))
                        + _sub_score_table(train, test))
    metrics = run_dir.read_metrics()
    table = _metrics_table(metrics) if metrics is not None else "<p>No ground truth for these machines: no metrics.</p>"
    all_notes = [*config.get("notes", []), *run_dir.read_notes()]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in dict.fromkeys(all_notes))
    system = html.escape(config.get("system", "?"))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>asdx {system}: {html.escape(run_dir.name)}"
            f"</title><style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:right}}"
            f"</style></head><body><h1>asdx run: {system}, {html.escape(run_dir.name)}</h1>"
            + _run_header(run_dir, config, finished)
            + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
            + table + "".join(sections) + "</body></html>")
    return atomic_write_text(run_dir.report_html, page)
