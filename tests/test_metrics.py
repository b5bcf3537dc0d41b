"""asdx.metrics against the golden fixtures, scikit-learn and the evaluator's formulas written out by hand."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix, roc_auc_score

from asdx import metrics
from conftest import fixture_path

FIXTURE_SETS = ("balanced", "imbalanced", "ties", "perfect")


@pytest.mark.parametrize("name", FIXTURE_SETS)
def test_auc_and_pauc_match_the_fixtures(name):
    data = np.load(fixture_path("auc.npz"))
    y, s = data[f"{name}/y"], data[f"{name}/score"]
    assert metrics.auc(y, s) == pytest.approx(float(data[f"{name}/auc"]), abs=1e-12)
    assert metrics.pauc(y, s) == pytest.approx(float(data[f"{name}/pauc_sklearn_maxfpr01"]), abs=1e-12)


@st.composite
def labelled_scores(draw, min_size=2, max_size=60):
    """Random labels with both classes and scores drawn from a few values, so ties are frequent."""
    n = draw(st.integers(min_size, max_size))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    y[0], y[-1] = 0, 1
    levels = draw(st.integers(1, 8))
    s = np.array(draw(st.lists(st.integers(0, levels), min_size=n, max_size=n)), dtype=np.float64) / levels
    return y, s


@settings(max_examples=60, deadline=None)
@given(labelled_scores())
def test_auc_and_pauc_equal_sklearn_with_ties(data):
    y, s = data
    assert metrics.auc(y, s) == roc_auc_score(y, s)
    assert metrics.pauc(y, s) == roc_auc_score(y, s, max_fpr=0.1)


def test_pauc_is_mcclish_standardised_not_raw_area():
    # A perfect ranking: raw partial area 0.1 (0.1 / 0.1 = 1) and McClish 1; a reversed ranking: area 0 -> 0.5*(1-0.005/0.095).
    y = np.array([0, 0, 0, 1, 1, 1])
    assert metrics.pauc(y, [0, 1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert metrics.pauc(y, [5, 4, 3, 2, 1, 0]) == pytest.approx(0.5 * (1 - 0.005 / 0.095))


@st.composite
def machine_data(draw):
    """Labels, scores, domains and decisions for one machine with normals in both domains and some anomaly."""
    n = draw(st.integers(4, 50))
    ints = st.lists(st.integers(0, 1), min_size=n, max_size=n)
    y, d, dec = (np.array(draw(ints)) for _ in range(3))
    d[:2] = [0, 1]
    y[:2] = 0
    y[-1] = 1
    s = np.array(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)), dtype=np.float64)
    return y, s, d, dec


def _by_hand(y, s, d, dec):
    """The evaluator's per-domain computations written out with sklearn directly."""
    eps = sys.float_info.epsilon
    out = {"auc_all": roc_auc_score(y, s), "pauc": roc_auc_score(y, s, max_fpr=0.1)}
    for index, domain in enumerate(("source", "target")):
        keep = (d == index) | (y != 0)
        out[f"auc_{domain}"] = roc_auc_score(y[keep], s[keep])
        tn, fp, fn, tp = confusion_matrix(y[d == index], dec[d == index], labels=[0, 1]).ravel()
        p = tp / max(tp + fp, eps)
        r = tp / max(tp + fn, eps)
        out[f"precision_{domain}"], out[f"recall_{domain}"] = p, r
        out[f"f1_{domain}"] = 2 * p * r / max(p + r, eps)
        # flag rates: the share of this domain's normals / anomalies with decision 1 (NaN: no such clip)
        for label, name in ((0, "normal"), (1, "anomaly")):
            chosen = dec[(d == index) & (y == label)]
            out[f"{name}_flag_{domain}"] = chosen.sum() / chosen.size if chosen.size else np.nan
    return out


@settings(max_examples=40, deadline=None)
@given(machine_data())
def test_machine_metrics_follow_the_evaluator_definitions(data):
    result = metrics.machine_metrics(*data).as_dict()
    expected = _by_hand(*data)
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-15, nan_ok=True), key


def test_domain_auc_includes_the_anomalies_of_both_domains():
    # Source normals score 0; the target anomaly scores below them, so it must lower AUC (source).
    y = np.array([0, 0, 1, 0, 1])
    d = np.array([0, 0, 0, 1, 1])
    s = np.array([0.5, 0.5, 0.9, 0.1, 0.2])
    assert metrics.domain_auc(y, s, d, "source") == pytest.approx(0.5)  # 1 of 2 anomalies above both normals
    assert metrics.domain_auc(y, s, d, "target") == pytest.approx(1.0)


def test_one_class_per_domain_is_defined():
    # Source holds only normals, target only anomalies.
    y = np.array([0, 0, 0, 1, 1, 1])
    d = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    dec = np.array([0, 1, 0, 1, 1, 0])
    assert metrics.domain_auc(y, s, d, "source") == 1.0     # source normals + all anomalies: both classes
    with pytest.raises(ValueError, match="target normals .* only anomalies"):
        metrics.domain_auc(y, s, d, "target")             # no target normal: undefined, said so
    # Source has no anomaly: tp = 0 so precision = recall = F1 = 0 (eps guard), not a crash or NaN.
    assert metrics.precision_recall_f1(y[:3], dec[:3]) == (0.0, 0.0, 0.0)
    assert metrics.precision_recall_f1(y[:3], np.zeros(3)) == (0.0, 0.0, 0.0)
    assert metrics.precision_recall_f1(y[3:], dec[3:]) == pytest.approx((1.0, 2 / 3, 0.8))
    with pytest.raises(ValueError, match="y_true: AUC is undefined with only normals"):
        metrics.auc([0, 0], [1, 2])


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.auc([0, 1, 2], [0.1, 0.2, 0.3]), "y_true: values must be 0 or 1"),
    (lambda: metrics.auc([0, 1], [0.1, np.nan]), "y_score: contains NaN"),
    (lambda: metrics.auc([0, 1], [0.1]), "y_score: length 1 does not match"),
    (lambda: metrics.pauc([0, 1], [0, 1], max_fpr=0), "max_fpr"),
    (lambda: metrics.domain_auc([0, 1], [0, 1], [0, 1], "both"), "domain"),
    (lambda: metrics.precision_recall_f1([0, 1], [0, 0.5]), "decisions: values must be 0 or 1"),
    (lambda: metrics.harmonic_mean([]), "values: is empty"),
])
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_flag_rates_per_domain_on_a_hand_made_machine():
    # source: 4 normals (1 flagged), 2 anomalies (2 flagged); target: 2 normals (2 flagged), 2 anomalies (0 flagged)
    y = np.array([0, 0, 0, 0, 1, 1, 0, 0, 1, 1])
    d = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    dec = np.array([0, 1, 0, 0, 1, 1, 1, 1, 0, 0])
    m = metrics.machine_metrics(y, np.arange(10.0), d, dec)
    assert (m.normal_flag_source, m.normal_flag_target) == (0.25, 1.0)
    assert (m.anomaly_flag_source, m.anomaly_flag_target) == (1.0, 0.0)
    assert (m.anomaly_flag_source, m.anomaly_flag_target) == (m.recall_source, m.recall_target)
    other = metrics.machine_metrics(y, np.arange(10.0), d, np.zeros(10))
    summary = metrics.decision_summary([m, other])
    assert summary["normal_flag_source"] == pytest.approx(0.125) and summary["anomaly_flag_source"] == 0.5
    # the evaluator's F1 h-means: eps-floored, so a machine with F1 = 0 pulls them to ~0
    assert summary["f1_source"] == pytest.approx(metrics.harmonic_mean([m.f1_source, 0.0]))
    assert summary["f1"] == pytest.approx(metrics.harmonic_mean([m.f1_source, 0.0, m.f1_target, 0.0]))
    assert summary["f1_amean"] == pytest.approx((m.f1_source + m.f1_target) / 4)
    assert metrics.flag_rate(np.zeros(0)) != metrics.flag_rate(np.zeros(0))  # NaN: no clips, no rate


def _m(auc_source, auc_target, pauc):
    return metrics.MachineMetrics(0.5, auc_source, auc_target, pauc, *([0.5] * 6))


def test_official_score_on_a_hand_made_example():
    machines = [_m(0.8, 0.5, 0.5), _m(1.0, 0.4, 0.5)]
    # 1/0.8 + 1/1.0 + 1/0.5 + 1/0.4 + 1/0.5 + 1/0.5 = 1.25 + 1 + 2 + 2.5 + 2 + 2 = 10.75
    by_hand = 6 / 10.75
    assert metrics.official_score(machines) == pytest.approx(by_hand, rel=1e-15)
    summary = metrics.summarize(machines)
    assert summary.official_score == pytest.approx(by_hand, rel=1e-15)
    assert summary.arithmetic_mean == pytest.approx(3.7 / 6)
    assert summary.hmean["auc_source"] == pytest.approx(2 / (1 / 0.8 + 1))
    assert summary.amean["auc_target"] == pytest.approx(0.45)
    assert summary.hmean["pauc"] == pytest.approx(0.5)


def test_official_score_floors_at_float_eps():
    # A zero AUC is floored at sys.float_info.epsilon, so Ω collapses to about n * eps instead of failing.
    eps = sys.float_info.epsilon
    machines = [_m(0.0, 1.0, 1.0)]
    expected = 3 / (1 / eps + 2)
    assert metrics.official_score(machines) == pytest.approx(expected, rel=1e-12)
    assert metrics.official_score(machines) == pytest.approx(scipy.stats.hmean([eps, 1.0, 1.0]), rel=1e-12)


def _evaluator_jackknife(fn, y, s):
    """The evaluator's jackknife_estimate spelled out independently (leave-one-out values in σ)."""
    n = len(y)
    theta = fn(y, s)
    loo = np.array([fn(np.delete(y, i), np.delete(s, i)) for i in range(n)])
    estimate = np.mean(n * theta - (n - 1) * loo)
    sigma = np.sqrt(np.sum((loo - loo.mean()) ** 2) / (n * (n - 1)))
    return estimate, abs(scipy.stats.t.ppf(0.025, n - 1)) * sigma


@settings(max_examples=20, deadline=None)
@given(labelled_scores(min_size=4, max_size=25))
def test_official_ci95_matches_the_evaluator_jackknife(data):
    y, s = data
    y[1], y[-2] = 0, 1   # at least two of each class
    auc = _evaluator_jackknife(roc_auc_score, y, s)
    pauc = _evaluator_jackknife(lambda a, b: roc_auc_score(a, b, max_fpr=0.1), y, s)
    ci = metrics.official_ci95(y, s)
    assert ci.auc == pytest.approx(auc[0], abs=1e-9)
    assert ci.pauc == pytest.approx(pauc[0], abs=1e-9)
    assert ci.auc_ci95 == pytest.approx(auc[1], rel=1e-9, abs=1e-13)
    assert ci.pauc_ci95 == pytest.approx(pauc[1], rel=1e-9, abs=1e-13)
    assert ci.ci95 == pytest.approx((auc[1] + pauc[1]) / 2, rel=1e-9, abs=1e-13)
    generic = metrics.jackknife(roc_auc_score, y, s)
    assert generic[0] == pytest.approx(auc[0], abs=1e-9) and generic[1] == pytest.approx(auc[1], rel=1e-9, abs=1e-13)


def test_official_ci95_on_the_fixtures():
    data = np.load(fixture_path("auc.npz"))
    y, s = data["ties/y"], data["ties/score"]
    expected = _evaluator_jackknife(lambda a, b: roc_auc_score(a, b, max_fpr=0.1), y, s)
    ci = metrics.official_ci95(y, s)
    assert ci.pauc_ci95 == pytest.approx(expected[1], rel=1e-9)
    # Independently of the jackknife: the evaluator's σ divides by n(n - 1) where the textbook jackknife
    # standard error has (n - 1) / n, so (n - 1) times its half-width is a real 95 % half-width, which a
    # bootstrap of the pAUC (400 resamples) estimates too: measured ratio 1.20-1.29 over bootstrap seeds 0-3.
    n, rng = len(y), np.random.default_rng(0)
    boot = [roc_auc_score(y[i], s[i], max_fpr=0.1) for i in (rng.integers(0, n, n) for _ in range(400))]
    bootstrap_half_width = abs(scipy.stats.t.ppf(0.025, n - 1)) * np.std(boot, ddof=1)
    assert ci.pauc_ci95 * (n - 1) == pytest.approx(bootstrap_half_width, rel=0.5)


def test_official_ci95_needs_two_of_each_class():
    with pytest.raises(ValueError, match="at least 2 normals and 2 anomalies"):
        metrics.official_ci95([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4])
