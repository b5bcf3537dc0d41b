"""DCASE Task 2 metrics exactly as the official evaluator computes them.

Source: the official NTT evaluators (dcase2023/2024_task2_evaluator.py, function
`output_result`; nttcslab/dcase2023_task2_evaluator and its 2024 successor):

- AUC (source) = source normals + ALL anomalies of the section (both domains);
  AUC (target) likewise; AUC (all) = every clip (informational).
- pAUC = every clip, `roc_auc_score(max_fpr=0.1)`: scikit-learn's
  McClish-standardised partial AUC, not A_p / p.
- precision / recall / F1 per domain from the 0/1 decisions of that domain's
  clips: tp / max(tp+fp, eps), tp / max(tp+fn, eps), 2PR / max(P+R, eps).
- flag rates (not printed by the evaluator; what q = 0.9 promises is checked
  with them): per domain, the share of normal and of anomalous test clips with
  decision 1. The anomaly-flag rate of a domain equals its recall.
- official score = harmonic mean of {AUC_s, AUC_t, pAUC} of every machine,
  each value floored at eps = sys.float_info.epsilon.
- "official score ci95" = mean of the jackknife 95 % half-widths of AUC and
  pAUC over the clips of all machines pooled (evaluator's `jackknife_estimate`).

Labels: 0 = normal, 1 = anomaly. Domains: 0 = source, 1 = target (the
`ground_truth_domain` convention). Higher score = more anomalous.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np
import scipy.stats
from sklearn.metrics import roc_auc_score

from asdx._arrays import prepare, prepare_binary

EPS = sys.float_info.epsilon
MAX_FPR = 0.1
DOMAINS = ("source", "target")


# ----------------------------------------------------------------------------- input checks

def _scores(x, name: str) -> np.ndarray:
    return prepare(x, name, ndim=1, dtype=np.float64).numpy()


def _same_length(reference: np.ndarray, ref_name: str, **others: np.ndarray) -> None:
    for name, array in others.items():
        if array.shape[0] != reference.shape[0]:
            raise ValueError(f"{name}: length {array.shape[0]} does not match {ref_name}'s {reference.shape[0]}.")


def _both_classes(y: np.ndarray, name: str, what: str) -> None:
    n_anomalies = int(y.sum())
    if n_anomalies == 0 or n_anomalies == y.size:
        present = "no clips" if y.size == 0 else ("only anomalies" if n_anomalies else "only normals")
        raise ValueError(f"{name}: {what} is undefined with {present}; it needs normals and anomalies.")


# ----------------------------------------------------------------------------- AUC / pAUC

def auc(y_true, y_score) -> float:
    """ROC AUC (`sklearn.metrics.roc_auc_score`). ValueError when one class is absent."""
    y = prepare_binary(y_true, "y_true")
    s = _scores(y_score, "y_score")
    _same_length(y, "y_true", y_score=s)
    _both_classes(y, "y_true", "AUC")
    return float(roc_auc_score(y, s))


def _check_max_fpr(max_fpr) -> None:
    if isinstance(max_fpr, bool) or not (isinstance(max_fpr, (int, float)) and 0 < max_fpr <= 1):
        raise ValueError(f"max_fpr: must be in (0, 1], got {max_fpr!r}.")


def pauc(y_true, y_score, max_fpr: float = MAX_FPR) -> float:
    """McClish-standardised partial AUC over FPR in [0, max_fpr], as `roc_auc_score(max_fpr=...)`.

    0.5 for a random scorer, 1 for a perfect one (as in the official evaluator: not A_p / max_fpr).
    """
    _check_max_fpr(max_fpr)
    y = prepare_binary(y_true, "y_true")
    s = _scores(y_score, "y_score")
    _same_length(y, "y_true", y_score=s)
    _both_classes(y, "y_true", "pAUC")
    return float(roc_auc_score(y, s, max_fpr=float(max_fpr)))


def _domain_index(domain: str) -> int:
    if domain not in DOMAINS:
        raise ValueError(f"domain: must be 'source' or 'target', got {domain!r}.")
    return DOMAINS.index(domain)


def domain_auc(y_true, y_score, domains, domain: str) -> float:
    """AUC of one domain as the evaluator defines it: that domain's normals + ALL anomalies.

    Anomalies of the other domain are included on purpose (as in the official evaluator), so a
    detector must rank every anomaly above this domain's normals.
    """
    index = _domain_index(domain)
    y = prepare_binary(y_true, "y_true")
    s = _scores(y_score, "y_score")
    d = prepare_binary(domains, "domains")
    _same_length(y, "y_true", y_score=s, domains=d)
    keep = (d == index) | (y == 1)
    _both_classes(y[keep], "y_true", f"AUC ({domain}: {domain} normals + all anomalies)")
    return float(roc_auc_score(y[keep], s[keep]))


def precision_recall_f1(y_true, decisions) -> tuple[float, float, float]:
    """Precision, recall and F1 with the evaluator's zero-division guard (denominators floored at eps).

    The counts come from the full 2x2 confusion matrix, so a set with one class
    only is defined: no true positives gives precision = recall = F1 = 0. (The
    evaluator's unlabelled `confusion_matrix(...).ravel()` crashes in the case
    where truth and decisions hold the same single value; elsewhere it agrees.)
    """
    y = prepare_binary(y_true, "y_true")
    dec = prepare_binary(decisions, "decisions")
    _same_length(y, "y_true", decisions=dec)
    tp = int(np.sum((y == 1) & (dec == 1)))
    fp = int(np.sum((y == 0) & (dec == 1)))
    fn = int(np.sum((y == 1) & (dec == 0)))
    precision = tp / max(tp + fp, EPS)
    recall = tp / max(tp + fn, EPS)
    f1 = 2.0 * precision * recall / max(precision + recall, EPS)
    return float(precision), float(recall), float(f1)


# ----------------------------------------------------------------------------- one machine type

def flag_rate(decisions) -> float:
    """Share of clips with decision 1; NaN for no clips (the rate is undefined, not 0)."""
    dec = prepare_binary(decisions, "decisions")
    return float(dec.mean()) if dec.size else float("nan")


@dataclass(frozen=True)
class MachineMetrics:
    """The evaluator's per-section row (`AUC (all)` … `F1 score (target)`), then the flag rates.

    normal_flag_<domain>: share of that domain's normal test clips decided anomalous (the
    decisions' false-positive rate; a gamma threshold at q = 0.9 aims at 0.10).
    anomaly_flag_<domain>: share of its anomalous clips decided anomalous (= recall_<domain>).
    NaN where the domain has no clip of that label.
    """

    auc_all: float
    auc_source: float
    auc_target: float
    pauc: float
    precision_source: float
    precision_target: float
    recall_source: float
    recall_target: float
    f1_source: float
    f1_target: float
    normal_flag_source: float = float("nan")
    normal_flag_target: float = float("nan")
    anomaly_flag_source: float = float("nan")
    anomaly_flag_target: float = float("nan")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# Column titles of the evaluator's result file, in its order.
EVALUATOR_COLUMNS = {
    "auc_all": "AUC (all)",
    "auc_source": "AUC (source)",
    "auc_target": "AUC (target)",
    "pauc": "pAUC",
    "precision_source": "precision (source)",
    "precision_target": "precision (target)",
    "recall_source": "recall (source)",
    "recall_target": "recall (target)",
    "f1_source": "F1 score (source)",
    "f1_target": "F1 score (target)",
}

# What the decisions do, per domain (asdx's additions; the evaluator's CSV has no such columns).
FLAG_COLUMNS = {
    "normal_flag_source": "normals flagged (source)",
    "normal_flag_target": "normals flagged (target)",
    "anomaly_flag_source": "anomalies flagged (source)",
    "anomaly_flag_target": "anomalies flagged (target)",
}


def machine_metrics(y_true, y_score, domains, decisions, max_fpr: float = MAX_FPR) -> MachineMetrics:
    """All evaluator metrics of one machine type / section."""
    y = prepare_binary(y_true, "y_true")
    s = _scores(y_score, "y_score")
    d = prepare_binary(domains, "domains")
    dec = prepare_binary(decisions, "decisions")
    _same_length(y, "y_true", y_score=s, domains=d, decisions=dec)
    per_domain, flags = {}, {}
    for name in DOMAINS:
        mask = d == _domain_index(name)
        per_domain[name] = precision_recall_f1(y[mask], dec[mask])
        flags[f"normal_flag_{name}"] = flag_rate(dec[mask & (y == 0)])
        flags[f"anomaly_flag_{name}"] = flag_rate(dec[mask & (y == 1)])
    return MachineMetrics(
        auc_all=auc(y, s),
        auc_source=domain_auc(y, s, d, "source"),
        auc_target=domain_auc(y, s, d, "target"),
        pauc=pauc(y, s, max_fpr),
        precision_source=per_domain["source"][0],
        precision_target=per_domain["target"][0],
        recall_source=per_domain["source"][1],
        recall_target=per_domain["target"][1],
        f1_source=per_domain["source"][2],
        f1_target=per_domain["target"][2],
        **flags,
    )


# ----------------------------------------------------------------------------- means and the official score

def harmonic_mean(values) -> float:
    """scipy.stats.hmean of the values floored at eps, as the evaluator does for every h-mean it writes."""
    v = prepare(values, "values", ndim=1, dtype=np.float64, allow_empty=False).numpy()
    return float(scipy.stats.hmean(np.maximum(v, EPS)))


def arithmetic_mean(values) -> float:
    v = prepare(values, "values", ndim=1, dtype=np.float64, allow_empty=False).numpy()
    return float(np.mean(v))


def official_score(machines) -> float:
    """Ω = hmean(max(S, eps)) over S = {AUC_s, AUC_t, pAUC} of every machine (official evaluator).

    machines: an iterable of MachineMetrics (one per machine type and section).
    """
    return harmonic_mean(_official_values(machines))


def _official_values(machines) -> np.ndarray:
    machines = list(machines)
    if not machines:
        raise ValueError("machines: needs at least one machine's metrics.")
    return np.array([m.auc_source for m in machines] + [m.auc_target for m in machines] + [m.pauc for m in machines])


@dataclass(frozen=True)
class Summary:
    """The aggregate numbers the evaluator writes or publishes (paper table and TOTAL)."""

    official_score: float          # h-mean of all AUC_s, AUC_t and pAUC, floored at eps
    arithmetic_mean: float         # a-mean of the same set ("TOTAL a-mean")
    hmean: dict[str, float]        # per metric over machines: auc_source, auc_target, pauc
    amean: dict[str, float]


def summarize(machines) -> Summary:
    """Official score and the per-metric h-mean / a-mean over machine types (paper-table rows)."""
    machines = list(machines)
    values = _official_values(machines)
    per_metric = {key: [getattr(m, key) for m in machines] for key in ("auc_source", "auc_target", "pauc")}
    return Summary(
        official_score=harmonic_mean(values),
        arithmetic_mean=arithmetic_mean(values),
        hmean={key: harmonic_mean(v) for key, v in per_metric.items()},
        amean={key: arithmetic_mean(v) for key, v in per_metric.items()},
    )


def decision_summary(machines) -> dict[str, float | None]:
    """The decisions over machines: the evaluator's F1 harmonic means and the mean flag rates.

    f1: h-mean (floored at eps) of every machine's F1 (source) and F1 (target), the F1 of the
    evaluator's "harmonic mean over all machine types, sections, and domains" row; f1_source /
    f1_target: its "source / target harmonic mean" rows; f1_amean: its "arithmetic mean" row. Flag
    rates: the arithmetic mean over the machines that have such clips (= the pooled rate when each
    machine has as many, as in DCASE); None where no machine has any.
    """
    machines = list(machines)
    if not machines:
        raise ValueError("machines: needs at least one machine's metrics.")
    f1 = [m.f1_source for m in machines] + [m.f1_target for m in machines]
    out: dict[str, float | None] = {
        "f1": harmonic_mean(f1),
        "f1_amean": arithmetic_mean(f1),
        "f1_source": harmonic_mean([m.f1_source for m in machines]),
        "f1_target": harmonic_mean([m.f1_target for m in machines])}
    for key in FLAG_COLUMNS:
        values = np.array([getattr(m, key) for m in machines], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[key] = float(values.mean()) if values.size else None
    return out


# ----------------------------------------------------------------------------- jackknife CI95

def jackknife(fn, *arrays, confidence: float = 0.95) -> tuple[float, float]:
    """Leave-one-out jackknife (estimate, half-width) exactly as the evaluator's `jackknife_estimate`.

    The evaluator cites Mesaros et al., TASLP 2019, §IV, but computes the
    standard error from the leave-one-out values θ_i themselves,
    σ = sqrt(Σ (θ_i − mean θ_i)² / (N (N − 1))), not from the pseudo-values
    N θ − (N − 1) θ_i. Its half-width is therefore (N − 1) times smaller than
    the textbook jackknife; we reproduce it as published. Half-width = |t_{(1−c)/2, N−1}| σ.
    """
    columns = [np.asarray(a) for a in arrays]
    if not columns:
        raise ValueError("arrays: needs at least one array.")
    n = columns[0].shape[0]
    for i, c in enumerate(columns[1:], start=1):
        if c.shape[0] != n:
            raise ValueError(f"arrays[{i}]: length {c.shape[0]} does not match arrays[0]'s {n}.")
    if n < 2:
        raise ValueError(f"arrays: the jackknife needs at least 2 items, got {n}.")
    theta = float(fn(*columns))
    keep = np.ones(n, dtype=bool)
    leave_one_out = np.empty(n)
    for i in range(n):
        keep[i] = False
        leave_one_out[i] = fn(*(c[keep] for c in columns))
        keep[i] = True
    return _jackknife_from_values(theta, leave_one_out, confidence)


def _jackknife_from_values(theta: float, leave_one_out: np.ndarray, confidence: float) -> tuple[float, float]:
    n = leave_one_out.size
    estimate = float(np.mean(n * theta - (n - 1) * leave_one_out))
    sigma = np.sqrt(np.sum((leave_one_out - leave_one_out.mean()) ** 2) / (n * (n - 1)))
    t_crit = abs(scipy.stats.t.ppf((1.0 - confidence) / 2.0, n - 1))
    return estimate, float(t_crit * sigma)


@dataclass(frozen=True)
class ConfidenceInterval:
    """The evaluator's "official score ci95" and the two jackknife estimates behind it."""

    ci95: float        # mean of the two half-widths: what the evaluator prints
    auc: float         # jackknife AUC estimate over the pooled clips
    auc_ci95: float
    pauc: float        # jackknife pAUC estimate over the pooled clips
    pauc_ci95: float


def official_ci95(y_true, y_score, max_fpr: float = MAX_FPR) -> ConfidenceInterval:
    """Jackknife CI95 of AUC and pAUC over the clips of ALL machines pooled (raw scores, no normalisation).

    Same numbers as running `jackknife` with sklearn's roc_auc_score, but the N
    leave-one-out ROC curves come from one sort (exact, O(N · distinct scores)).
    """
    _check_max_fpr(max_fpr)
    y = prepare_binary(y_true, "y_true")
    s = _scores(y_score, "y_score")
    _same_length(y, "y_true", y_score=s)
    n_pos = int(y.sum())
    if min(n_pos, y.size - n_pos) < 2:
        raise ValueError("y_true: the jackknife needs at least 2 normals and 2 anomalies (each leave-one-out set "
                         "must still hold both classes).")
    auc_full, auc_loo = _leave_one_out_roc(y, s, None)
    pauc_full, pauc_loo = _leave_one_out_roc(y, s, max_fpr)
    auc_est, auc_half = _jackknife_from_values(auc_full, auc_loo, 0.95)
    pauc_est, pauc_half = _jackknife_from_values(pauc_full, pauc_loo, 0.95)
    return ConfidenceInterval(ci95=float(np.mean([auc_half, pauc_half])), auc=auc_est, auc_ci95=auc_half,
                              pauc=pauc_est, pauc_ci95=pauc_half)


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)


def _area(tp: np.ndarray, fp: np.ndarray, n_pos: int, n_neg: int, max_fpr: float | None) -> float:
    """(p)AUC of the ROC through (0, 0) and the cumulative counts (tp, fp), as scikit-learn integrates it.

    Repeated points (a threshold whose clips were all left out) add no area and
    do not move the interpolated point at max_fpr.
    """
    fpr = np.concatenate(([0.0], fp / n_neg))
    tpr = np.concatenate(([0.0], tp / n_pos))
    if max_fpr is None or max_fpr == 1:
        return float(_trapezoid(fpr, tpr))
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))
    y_at = np.interp(max_fpr, fpr[stop - 1:stop + 1], tpr[stop - 1:stop + 1])
    area = float(_trapezoid(np.append(fpr[:stop], max_fpr), np.append(tpr[:stop], y_at)))
    min_area = 0.5 * max_fpr ** 2
    return 0.5 * (1.0 + (area - min_area) / (max_fpr - min_area))


def _leave_one_out_roc(y: np.ndarray, s: np.ndarray, max_fpr: float | None) -> tuple[float, np.ndarray]:
    """Full-set value and the value with each clip left out; clips with the same (score, label) share one."""
    order = np.argsort(-s, kind="stable")
    distinct, group_of_sorted = np.unique(-s[order], return_inverse=True)  # ascending -s = descending s
    group = np.empty(s.size, dtype=np.int64)
    group[order] = group_of_sorted
    n_groups = distinct.size
    pos = np.bincount(group, weights=y, minlength=n_groups)
    neg = np.bincount(group, weights=1 - y, minlength=n_groups)
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    n_pos, n_neg = int(tp[-1]), int(fp[-1])
    full = _area(tp, fp, n_pos, n_neg, max_fpr)
    step = np.arange(n_groups)
    values = np.empty(s.size)
    cache: dict[tuple[int, int], float] = {}
    for i in range(s.size):
        key = (int(group[i]), int(y[i]))
        if key not in cache:
            after = (step >= key[0]).astype(np.float64)
            if key[1] == 1:
                cache[key] = _area(tp - after, fp, n_pos - 1, n_neg, max_fpr)
            else:
                cache[key] = _area(tp, fp - after, n_pos, n_neg - 1, max_fpr)
        values[i] = cache[key]
    return full, values
