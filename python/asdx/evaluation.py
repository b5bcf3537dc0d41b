"""Scoring a submission folder against ground truth, as the official DCASE evaluator does.

Reference: the official evaluator (nttcslab/dcase2023_task2_evaluator,
dcase2023_task2_evaluator.py), which reads the per-machine submission CSVs and
computes the metrics of asdx.metrics.

Ground truth comes from the evaluator's CSVs (`ground_truth_data/`,
`ground_truth_domain/`, optional `ground_truth_attributes/`; see
asdx.data.ground_truth) or, for the development set, from the labelled dev test
file names. One deliberate difference: the official evaluator sorts submission
and ground-truth rows by name and pairs them by position, so a misnamed file
silently misaligns scores; here rows are matched by name and any missing or extra
name is an error that lists them.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asdx import metrics
from asdx._atomic import atomic_write_text
from asdx.data import list_machines, machine_clips, parse_name
from asdx.data.ground_truth import MachineTruth, ground_truth_dir, load_ground_truth
from asdx.submission import (decision_file_name, describe_name_difference, read_decisions, read_scores,
                             score_file_name, submission_machines)



def labels_from_name(name: str) -> tuple[int, int]:
    """(label, domain) of a labelled test clip name (forms: asdx.data.names): 1 = anomaly, 1 = target."""
    parsed = parse_name(name)
    if parsed.form != "labelled" or parsed.split == "train":
        raise ValueError(f"{name}: not a labelled test clip name "
                         "(section_00_<source|target>_test_<normal|anomaly>_<NNNN>[_<attributes>].wav).")
    if parsed.section != "00":
        raise ValueError(f"{name}: section {parsed.section}; only section 00 is evaluated.")
    return int(parsed.label == "anomaly"), int(parsed.domain == "target")


def _labelled_dev_truth(root) -> dict[str, MachineTruth]:
    """Dev machines with labelled test clips under `root`, {} when there are none."""
    truth = {}
    for machine in (m for m in list_machines(root) if m.dataset == "dev"):
        clips = sorted(machine_clips(machine, "test"), key=lambda clip: clip.name)
        if not clips:
            continue
        parsed = [labels_from_name(clip.name) for clip in clips]
        labels, domains = (np.array(column, dtype=np.int8) for column in zip(*parsed))
        truth[machine.name] = MachineTruth(tuple(c.name for c in clips), labels, domains, {},
                                           str(clips[0].path.parent))
    return truth


def dev_ground_truth(root) -> dict[str, MachineTruth]:
    """Ground truth of the development set from its labelled test names (asdx.data)."""
    truth = _labelled_dev_truth(root)
    if not truth:
        raise ValueError(f"{root}: no dev_data/raw/<machine>/test/*.wav files.")
    return truth


def _any_set_ground_truth(root) -> dict[str, MachineTruth]:
    """Dev truth from names and eval truth from the evaluator CSVs, whichever exist under `root`."""
    root = Path(root)
    gt_dir = ground_truth_dir(root)
    has_eval = (gt_dir / "ground_truth_data").is_dir()
    try:
        truth = _labelled_dev_truth(root)
    except FileNotFoundError:              # no raw data at all: only the eval ground truth can help
        if not has_eval:
            raise
        truth = {}
    if has_eval:
        for machine, machine_truth in load_ground_truth(gt_dir).items():
            if machine in truth:
                raise ValueError(f"{machine}: ground truth both in {truth[machine].origin} and "
                                 f"{machine_truth.origin}; pass --split dev or --split eval.")
            truth[machine] = machine_truth
    if not truth:
        raise FileNotFoundError(f"{root}: no ground truth: neither labelled dev_data/raw/<machine>/test/*.wav "
                                f"nor {gt_dir}/ground_truth_data/.")
    return truth


def dataset_ground_truth(root, split: str = "dev", machines=None) -> dict[str, MachineTruth]:
    """Ground truth under a dataset root: dev from names, eval from `root/eval_data/ground_truth/`.

    split "all": each machine from whichever set has it, so one call scores a submission
    that mixes dev and eval machines (such as a run of `--machine all`). machines: keep
    only these; a machine without ground truth is an error that says where it was looked for.
    """
    if split == "dev":
        truth = dev_ground_truth(root)
    elif split == "eval":
        truth = load_ground_truth(ground_truth_dir(root))
    elif split == "all":
        truth = _any_set_ground_truth(root)
    else:
        raise ValueError(f"split: must be 'dev', 'eval' or 'all', got {split!r}.")
    if machines is None:
        return truth
    machines = list(machines)
    missing = [m for m in machines if m not in truth]
    if missing:
        where = {"dev": "labelled dev_data/raw/<machine>/test names",
                 "eval": f"{ground_truth_dir(root)}/ground_truth_data/"}
        looked = " or ".join(where[s] for s in (("dev", "eval") if split == "all" else (split,)))
        raise ValueError(f"machines: no ground truth for {', '.join(missing)} under {root} (looked for {looked}); "
                         f"known: {', '.join(sorted(truth))}.")
    return {m: truth[m] for m in machines}


# ----------------------------------------------------------------------------- matching a submission

class SubmissionMismatchError(ValueError):
    """The submission's clip names differ from the ground truth.

    problems: {file path: (missing names, extra names)}, names sorted.
    """

    def __init__(self, problems: dict[str, tuple[list[str], list[str]]]):
        self.problems = problems
        lines = ["submission clip names do not match the ground truth "
                 "(rows are matched by name, never by position):"]
        lines += [f"  {path}: {describe_name_difference(missing, extra)}" for path, (missing, extra) in problems.items()]
        super().__init__("\n".join(lines))


def _aligned(file, truth: MachineTruth, problems: dict) -> np.ndarray | None:
    """The file's values in ground-truth order, or None after recording missing/extra names."""
    values: dict[str, float] = {}
    for name, value in zip(file.names, file.values.tolist()):
        key = truth.renamed.get(name, name)
        if key in values:
            raise ValueError(f"{file.path}: {name!r} and another row both name the clip {key!r}.")
        values[key] = value
    known = set(truth.names)
    extra = sorted(n for n, k in zip(file.names, (truth.renamed.get(n, n) for n in file.names)) if k not in known)
    missing = sorted(n for n in truth.names if n not in values)
    if missing or extra:
        problems[str(file.path)] = (missing, extra)
        return None
    return np.array([values[n] for n in truth.names])


@dataclass(frozen=True)
class Evaluation:
    """Per-machine metrics, the official score and its CI, for one submission."""

    machines: dict[str, metrics.MachineMetrics]
    summary: metrics.Summary
    ci: metrics.ConfidenceInterval | None   # None when the pooled clips hold < 2 of a class
    counts: dict[str, dict[str, int]]
    max_fpr: float = metrics.MAX_FPR


def evaluate(submission_dir, ground_truth: dict[str, MachineTruth], machines=None,
             max_fpr: float = metrics.MAX_FPR) -> Evaluation:
    """Scores `submission_dir` on every ground-truth machine (or on `machines` only).

    Refuses: a missing score/decision file; score files for machines without
    ground truth (unless `machines` restricts the set); any clip-name mismatch
    (SubmissionMismatchError, listing missing and extra names per file).
    """
    submission_dir = Path(submission_dir)
    submitted = submission_machines(submission_dir)
    if machines is None:
        machines = sorted(ground_truth)
        unknown = sorted(set(submitted) - set(ground_truth))
        if unknown:
            raise ValueError(f"{submission_dir}: score files for machine types without ground truth: "
                             f"{', '.join(unknown)} (known: {', '.join(sorted(ground_truth))}).")
    else:
        machines = list(machines)
        if not machines:
            raise ValueError("machines: is empty.")
        unknown = [m for m in machines if m not in ground_truth]
        if unknown:
            raise ValueError(f"machines: no ground truth for {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(ground_truth))}).")
    absent = [p for m in machines for p in (submission_dir / score_file_name(m), submission_dir / decision_file_name(m))
              if not p.is_file()]
    if absent:
        raise FileNotFoundError(f"{submission_dir}: missing submission files: {', '.join(p.name for p in absent)}.")

    problems: dict[str, tuple[list[str], list[str]]] = {}
    aligned = {}
    for machine in machines:
        truth = ground_truth[machine]
        scores = _aligned(read_scores(submission_dir / score_file_name(machine)), truth, problems)
        decisions = _aligned(read_decisions(submission_dir / decision_file_name(machine)), truth, problems)
        aligned[machine] = (truth, scores, decisions)
    if problems:
        raise SubmissionMismatchError(problems)

    results, counts = {}, {}
    for machine, (truth, scores, decisions) in aligned.items():
        try:
            results[machine] = metrics.machine_metrics(truth.labels, scores, truth.domains,
                                                       decisions.astype(np.int8), max_fpr)
        except ValueError as error:
            raise ValueError(f"{machine} (ground truth {truth.origin}): {error}") from None
        counts[machine] = {
            "clips": len(truth.names),
            "anomalies": int(truth.labels.sum()),
            "source": int(np.sum(truth.domains == 0)),
            "target": int(np.sum(truth.domains == 1)),
        }
    y_pooled = np.concatenate([aligned[m][0].labels for m in machines])
    s_pooled = np.concatenate([aligned[m][1] for m in machines])
    try:
        ci = metrics.official_ci95(y_pooled, s_pooled, max_fpr)
    except ValueError:
        ci = None
    return Evaluation(results, metrics.summarize(results.values()), ci, counts, float(max_fpr))


# ----------------------------------------------------------------------------- reporting

_PERFORMANCE = (("AUC", "auc"), ("pAUC", "pauc"), ("precision", "precision"), ("recall", "recall"),
                ("F1 score", "f1"))


def _number(value: float) -> str:
    return repr(float(value))


def _performance(machines: list[metrics.MachineMetrics]) -> np.ndarray:
    """The evaluator's 5 x 2n table: per metric, every source value then every target value (pAUC twice)."""
    rows = []
    for _, key in _PERFORMANCE:
        if key == "pauc":
            rows.append([m.pauc for m in machines] * 2)
        else:
            rows.append([getattr(m, f"{key}_source") for m in machines] + [getattr(m, f"{key}_target") for m in machines])
    return np.array(rows, dtype=np.float64)


def _mean_rows(performance: np.ndarray, suffix: str) -> list[list[str]]:
    half = performance.shape[1] // 2
    rows = [["arithmetic mean" + suffix, ""] + [_number(np.mean(r)) for r in performance]]
    for label, part in (("harmonic mean", performance), ("source harmonic mean", performance[:, :half]),
                        ("target harmonic mean", performance[:, half:])):
        rows.append([label + suffix, ""] + [_number(metrics.harmonic_mean(r)) for r in part])
    return rows


def result_csv_rows(evaluation: Evaluation) -> list[list[str]]:
    """Rows of the official evaluator's `teams_result/<system>_result.csv`, floats in full repr."""
    rows: list[list[str]] = []
    header = [""] * 2 + [title for title, _ in _PERFORMANCE]
    for machine, m in evaluation.machines.items():
        rows.append([machine])
        rows.append(["section"] + list(metrics.EVALUATOR_COLUMNS.values()))
        values = m.as_dict()
        rows.append(["00"] + [_number(values[key]) for key in metrics.EVALUATOR_COLUMNS])
        rows.append(header)
        rows += _mean_rows(_performance([m]), "")
        rows.append([])
    rows.append(header)
    rows += _mean_rows(_performance(list(evaluation.machines.values())),
                       " over all machine types, sections, and domains")
    rows.append([])
    rows.append(["official score", "", _number(evaluation.summary.official_score)])
    rows.append(["official score ci95", "", _number(evaluation.ci.ci95) if evaluation.ci else "nan"])
    rows.append([])
    return rows


def result_csv_text(evaluation: Evaluation) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(result_csv_rows(evaluation))
    return buffer.getvalue()


def _json_number(value: float) -> float | None:
    """JSON has no NaN: an undefined rate is written as null."""
    return float(value) if np.isfinite(value) else None


def result_json(evaluation: Evaluation) -> dict:
    """Machine-readable results; the same numbers as the CSV plus the per-metric means, clip counts and
    what the decisions do (per machine: the flag rates per domain; `decisions`: metrics.decision_summary)."""
    s = evaluation.summary
    ci = evaluation.ci
    return {
        "official_score": s.official_score,
        "official_score_ci95": ci.ci95 if ci else None,
        "arithmetic_mean": s.arithmetic_mean,
        "hmean": dict(s.hmean),
        "amean": dict(s.amean),
        "jackknife": None if ci is None else {"auc": ci.auc, "auc_ci95": ci.auc_ci95,
                                              "pauc": ci.pauc, "pauc_ci95": ci.pauc_ci95},
        "decisions": metrics.decision_summary(evaluation.machines.values()),
        "machines": {name: {**{k: _json_number(v) for k, v in m.as_dict().items()}, "counts": evaluation.counts[name]}
                     for name, m in evaluation.machines.items()},
        "eps": metrics.EPS,
        "max_fpr": evaluation.max_fpr,
    }


CI95_MEANING = ("the official evaluator's jackknife 95 % half-width over the pooled clips of all machines "
                "(mean of AUC's and pAUC's; its σ uses the leave-one-out values, (N − 1) times narrower than "
                "the textbook jackknife: asdx.metrics.jackknife)")


def format_report(evaluation: Evaluation) -> str:
    """The per-machine table, the per-metric means and the official score, as printed by `asdx evaluate`/`run`."""
    # AUC (all) is informational and left out; the normals flagged per domain are added
    keys = [*list(metrics.EVALUATOR_COLUMNS)[1:], "normal_flag_source", "normal_flag_target"]
    titles = ["AUC(s)", "AUC(t)", "pAUC", "P(s)", "P(t)", "R(s)", "R(t)", "F1(s)", "F1(t)", "NF(s)", "NF(t)"]
    width = max([len("machine")] + [len(m) for m in evaluation.machines])
    lines = [f"{'machine':<{width}}  " + "  ".join(f"{t:>6}" for t in titles)]
    for machine, m in evaluation.machines.items():
        values = m.as_dict()
        lines.append(f"{machine:<{width}}  " + "  ".join(f"{values[k]:6.4f}" for k in keys))
    lines.append("R: anomalies flagged (recall); NF: normals flagged (decision 1; a gamma threshold at quantile q "
                 "aims at 1 − q, 0.10 at the default q = 0.9); s = source, t = target")
    s = evaluation.summary
    decisions = metrics.decision_summary(evaluation.machines.values())
    lines.append("")
    lines.append(f"{'':<14}{'h-mean':>8}{'a-mean':>8}")
    for title, key in (("AUC (source)", "auc_source"), ("AUC (target)", "auc_target"), ("pAUC", "pauc")):
        lines.append(f"{title:<14}{s.hmean[key]:8.4f}{s.amean[key]:8.4f}")
    flagged = "  ".join(f"{title} {'n/a' if decisions[key] is None else f'{decisions[key]:.4f}'}"
                        for title, key in (("normals (source)", "normal_flag_source"),
                                           ("normals (target)", "normal_flag_target"),
                                           ("anomalies (source)", "anomaly_flag_source"),
                                           ("anomalies (target)", "anomaly_flag_target")))
    n_values = 3 * len(evaluation.machines)
    lines.append("")
    lines.append(f"decisions: F1 h-mean {decisions['f1']:.4f}, a-mean {decisions['f1_amean']:.4f} (the evaluator's, "
                 f"over machines and domains; h-mean source {decisions['f1_source']:.4f}, target "
                 f"{decisions['f1_target']:.4f})")
    lines.append(f"flagged, mean over machines: {flagged}")
    lines.append(f"official score Ω = {s.official_score:.4f}  (harmonic mean of {n_values} AUC/pAUC values; "
                 f"arithmetic mean {s.arithmetic_mean:.4f})")
    if evaluation.ci is not None:
        lines.append(f"official score ci95 = {evaluation.ci.ci95:.4f}: {CI95_MEANING}")
    else:
        lines.append("official score ci95: n/a (the jackknife needs at least 2 normals and 2 anomalies)")
    return "\n".join(lines)


def write_results(evaluation: Evaluation, out_dir, system: str) -> tuple[Path, Path]:
    """Writes `<system>_result.csv` (evaluator layout) and `<system>_result.json`, each atomically."""
    if not system or system != Path(system).name or system in (".", ".."):
        raise ValueError(f"system: {system!r} must be a plain file-name stem.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = atomic_write_text(out_dir / f"{system}_result.csv", result_csv_text(evaluation))
    json_path = atomic_write_text(out_dir / f"{system}_result.json",
                                  json.dumps(result_json(evaluation), indent=2) + "\n")
    return csv_path, json_path
