"""Fusion's ranks at both ends and across domains (issue 19, item 3): the scoring before and after, measured.

T_fusion (asdx.systems.fusion) maps a kNN distance and a GMM NLL onto ranks among honest train scores,
takes the minimum and submits -log(1 - rank). Before issue 19 the ranks were step functions against one
pooled source + target reference: test clips below every train score got 0, those above it one capped
value, and target clips, which sit closer together, ranked under the source clips. This study runs
`asdx run fusion` (random-tiny BEATs, a few epochs) on synthetic data, embeds each machine's clips with the
run's model, and scores the same embeddings with every variant:

  old        pooled kNN bank and references, step mid-ranks, -log(1 - min(rank, 1 - 1/(2n))) (before)
  tails      the RankMap (interpolated ranks, exponential / hyperbolic tails), pooled references
  domains    per-domain kNN banks and references (min over domains), step mid-ranks
  new        per-domain kNN + RankMap: what asdx ships (checked equal to the run's test_scores.csv)
  gmm-dom    `new`, but the GMM NLL also ranked per domain with the min over domains (not shipped)
  mean       `new`, fused by the mean of the two exceedances instead of the report's minimum (not shipped)

Columns, over all machines x seeds: AUC (source), AUC (target), pAUC (means), the machines' mean
h-mean of the three (Ω per machine); `tied`: test clips sharing their final score with another test clip
(`!raw`: of those, clips whose raw sub-scores differ); `at 0`: test clips scoring exactly 0; `fused-best`:
mean of fused AUC (source) minus the better of the two sub-scores' AUC (source), and in how many runs it is
below; `flag src / tgt`: normal test clips above the 0.9 quantile of the machine's train scores (the
empirical quantile: the calibration of the scores themselves, without the gamma fit of issue 19 item 1).
A second table scores planted embeddings (Gaussian clusters; the target domain tighter than the source, the
mechanism the issue names) with the same variants, no BEATs involved.

    python benchmarks/fusion_ranks_study.py [--seeds 3] [--machines fan,...] [--epochs 3] [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asdx.cli import main as asdx_main
from asdx.data import generate, machine_clips, resolve_machines
from asdx.data.loader import ClipSet
from asdx.metrics import machine_metrics
from asdx.scoring.fusion import RankMap, rank_normalize
from asdx.scoring._domains import DOMAINS
from asdx.systems.base import SystemContext
from asdx.systems.fusion import FusionScorer, FusionConfig, FusionSystem

MACHINES = "fan,gearboxEmu,ToyCar,valveEmu,bearingEmu"
SIZES = {"n_source": 40, "n_target": 6, "n_test": 12, "seconds": 2.0}
VARIANTS = ("old", "tails", "domains", "new", "gmm-dom", "mean")
Q = 0.9


@dataclass
class Case:
    """One machine's raw sub-scores (from FusionScorer: per-domain kNN distances, the GMM) and test truth."""

    name: str
    train_domain: np.ndarray     # (N,)
    knn_train: np.ndarray        # (N, 2) distance to the source / target bank, leave-one-out in the own bank
    gmm_train: np.ndarray        # (N,) out-of-fold NLL
    knn_test: np.ndarray         # (M, 2)
    gmm_test: np.ndarray         # (M,)
    anomalous: np.ndarray        # (M,) bool
    target: np.ndarray           # (M,) bool
    shipped_train: np.ndarray    # FusionScorer' own scores, to check the `new` variant against
    shipped_test: np.ndarray


def case_from(name, train_emb, train_domains, test_emb, anomalous, target, config) -> Case:
    banks, train, _ = FusionScorer.fit(name, train_emb, train_domains, config, config.seed)
    test = banks.score(test_emb)
    knn_test = np.stack([test.sub_scores["knn_source_distance"], test.sub_scores["knn_target_distance"]], axis=1)
    return Case(name, np.asarray(train_domains), banks.knn_train, banks.gmm_train, knn_test,
                test.sub_scores["gmm_nll"], np.asarray(anomalous, bool), np.asarray(target, bool),
                train.scores, test.scores)


def step_score(rank: np.ndarray, n: int) -> np.ndarray:
    return -np.log1p(-np.minimum(rank, 1.0 - 0.5 / n))


def variant_scores(case: Case, variant: str) -> dict[str, np.ndarray]:
    """Train and test scores and the two sub-scores (as ranks or exceedances: only their order matters)."""
    own = {d: case.knn_train[case.train_domain == d, c] for c, d in enumerate(DOMAINS)
           if (case.train_domain == d).any()}
    columns = [c for c, d in enumerate(DOMAINS) if d in own]
    # k = 1: the nearest clip of one pooled bank is the nearer of the per-domain nearest clips
    pooled_train, pooled_test = np.nanmin(case.knn_train, axis=1), np.nanmin(case.knn_test, axis=1)
    n = len(case.gmm_train)
    out = {}
    for part, knn, gmm in (("train", case.knn_train, case.gmm_train), ("test", case.knn_test, case.gmm_test)):
        pooled = pooled_train if part == "train" else pooled_test
        if variant == "old":
            k, g = rank_normalize(pooled, pooled_train), rank_normalize(gmm, case.gmm_train)
            score = step_score(np.minimum(k, g), n)
        elif variant == "tails":
            k, g = RankMap(pooled_train).exceedance(pooled), RankMap(case.gmm_train).exceedance(gmm)
            score = np.minimum(k, g)
        elif variant == "domains":
            k = np.min([rank_normalize(knn[:, c], own[DOMAINS[c]]) for c in columns], axis=0)
            g = rank_normalize(gmm, case.gmm_train)
            score = step_score(np.minimum(k, g), n)
        else:
            k = np.min([RankMap(own[DOMAINS[c]]).exceedance(knn[:, c]) for c in columns], axis=0)
            if variant == "gmm-dom":
                g = np.min([RankMap(case.gmm_train[case.train_domain == DOMAINS[c]]).exceedance(gmm)
                            for c in columns], axis=0)
            else:
                g = RankMap(case.gmm_train).exceedance(gmm)
            score = (k + g) / 2 if variant == "mean" else np.minimum(k, g)
        out[part], out[f"{part}_knn"], out[f"{part}_gmm"] = score, k, g
    if variant == "new":  # what asdx ships: the same numbers as FusionScorer
        np.testing.assert_allclose(out["train"], case.shipped_train, rtol=1e-12, atol=0)
        np.testing.assert_allclose(out["test"], case.shipped_test, rtol=1e-12, atol=0)
    return out


def auc_triple(case: Case, score: np.ndarray) -> tuple[float, float, float]:
    m = machine_metrics(case.anomalous.astype(int), score, case.target.astype(int),
                        np.zeros(len(score), dtype=int))
    return m.auc_source, m.auc_target, m.pauc


def measure(case: Case, variant: str) -> dict[str, float]:
    s = variant_scores(case, variant)
    score = s["test"]
    auc_s, auc_t, pauc = auc_triple(case, score)
    best_sub = max(auc_triple(case, s["test_knn"])[0], auc_triple(case, s["test_gmm"])[0])
    values, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    tied = counts[inverse] > 1
    raw = np.column_stack([np.nan_to_num(case.knn_test, nan=-1.0), case.gmm_test])
    raw_differs = np.zeros(len(score), dtype=bool)
    for group in np.flatnonzero(counts > 1):
        members = np.flatnonzero(inverse == group)
        raw_differs[members] = len({tuple(row) for row in raw[members]}) > 1
    threshold = np.quantile(s["train"], Q)
    normal = ~case.anomalous
    return {"auc_s": auc_s, "auc_t": auc_t, "pauc": pauc, "omega": 3 / (1 / auc_s + 1 / auc_t + 1 / pauc),
            "tied": int(tied.sum()), "tied_raw_differ": int(raw_differs.sum()), "zeros": int(np.sum(score == 0)),
            "fused_minus_best": auc_s - best_sub, "fused_below_best": float(auc_s < best_sub - 1e-12),
            "flag_s": float(np.mean(score[normal & ~case.target] > threshold)),
            "flag_t": float(np.mean(score[normal & case.target] > threshold))}


def table(title: str, cases: list[Case]) -> str:
    rows = {v: [measure(c, v) for c in cases] for v in VARIANTS}
    lines = [f"### {title} ({len(cases)} machine x seed runs, {sum(len(c.gmm_test) for c in cases)} test clips)", "",
             "| variant | AUC src | AUC tgt | pAUC | Ω/machine | tied (!raw) | at 0 | fused-best AUC src (runs below) "
             "| flag src | flag tgt |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for v, results in rows.items():
        mean = {key: float(np.mean([r[key] for r in results])) for key in results[0]}
        total = {key: int(sum(r[key] for r in results)) for key in ("tied", "tied_raw_differ", "zeros")}
        below = int(sum(r["fused_below_best"] for r in results))
        lines.append(f"| {v} | {mean['auc_s']:.3f} | {mean['auc_t']:.3f} | {mean['pauc']:.3f} | {mean['omega']:.3f} "
                     f"| {total['tied']} ({total['tied_raw_differ']}) | {total['zeros']} "
                     f"| {mean['fused_minus_best']:+.3f} ({below}/{len(results)}) "
                     f"| {mean['flag_s']:.3f} | {mean['flag_t']:.3f} |")
    lines.append("")
    for key, label in (("auc_s", "AUC src"), ("auc_t", "AUC tgt"), ("pauc", "pAUC"), ("omega", "Ω/machine")):
        diff = np.array([n[key] - o[key] for n, o in zip(rows["new"], rows["old"])])
        lines.append(f"new - old, {label}: {diff.mean():+.3f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.3f} "
                     f"(mean ± standard error over runs; better in {int(np.sum(diff > 0))}, worse in "
                     f"{int(np.sum(diff < 0))} of {len(diff)})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the BEATs runs
def beats_cases(args, work: Path) -> list[Case]:
    cases = []
    for seed in range(args.seeds):
        root = generate(work / f"data{seed}", machines=args.machines, seed=seed, progress=False, **args.sizes)
        name = f"seed{seed}"
        command = ["run", "fusion", "--machine", args.machines, "--data", str(root), "--out", str(work / "runs"),
                   "--name", name, "--beats", "random-tiny", "--epochs", str(args.epochs), "--seed", str(seed),
                   "--quiet", "--workers", "0", "--device", "cpu"]
        with contextlib.redirect_stdout(io.StringIO()):
            if asdx_main(command) != 0:
                raise SystemExit(f"asdx {' '.join(command)} failed")
        run_dir = work / "runs" / "fusion" / name
        config = FusionConfig(beats="random-tiny", epochs=args.epochs, seed=seed, device="cpu")
        system = FusionSystem(config, SystemContext(device=torch.device("cpu"), progress=False,
                                                    cache_dir=work / "runs" / "cache"))
        system.load_global(run_dir / "global")
        for machine in resolve_machines(root, args.machines):
            train, test = machine_clips(machine, "train"), machine_clips(machine, "test")
            embed = lambda clips: system.embed(ClipSet.from_clips(clips, channels=1, seconds=10.0))  # noqa: E731
            case = case_from(f"{machine.name}/seed{seed}", embed(train), [c.domain for c in train], embed(test),
                             [c.label == "anomaly" for c in test], [c.domain == "target" for c in test], config)
            with open(run_dir / "machines" / machine.name / "test_scores.csv", newline="") as handle:
                written = np.array([float(r["score"]) for r in csv.DictReader(handle)])
            np.testing.assert_allclose(case.shipped_test, written, rtol=1e-12, atol=0)  # the run's own scores
            cases.append(case)
        print(f"  seed {seed}: {len(cases)} machine runs so far", file=sys.stderr)
    return cases


# ----------------------------------------------------------------------------- planted embeddings
def planted_cases(runs: int, anomaly: float = 0.15, dim: int = 32) -> list[Case]:
    """Source normals N(mu, 0.25^2), target normals N(mu + shift, 0.12^2) (tighter), anomalies displaced by
    N(0, anomaly^2) per dimension; 40 + 6 train, 12 test clips per cell, L2-normalised by FusionScorer."""
    cases = []
    config = FusionConfig(beats="random-tiny")
    for seed in range(runs):
        rng = np.random.default_rng(1000 + seed)
        mu, shift = rng.normal(size=dim), 0.6 * rng.normal(size=dim)

        def draw(n, target, anomalous):
            x = mu + (shift if target else 0.0) + (0.12 if target else 0.25) * rng.normal(size=(n, dim))
            return x + (anomaly * rng.normal(size=(n, dim)) if anomalous else 0.0)

        cells = [(False, False), (False, True), (True, False), (True, True)]
        train = np.vstack([draw(40, False, False), draw(6, True, False)])
        test = np.vstack([draw(12, t, a) for t, a in cells])
        cases.append(case_from(f"planted{seed}", train, ["source"] * 40 + ["target"] * 6, test,
                               np.repeat([a for _, a in cells], 12), np.repeat([t for t, _ in cells], 12), config))
    return cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="data (and model) seeds 0..N-1")
    parser.add_argument("--machines", default=MACHINES)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--planted", type=int, default=12, help="planted-embedding draws (0: none)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 machines, 1 epoch, 4 planted draws")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, deleted)")
    args = parser.parse_args(argv)
    args.sizes = dict(SIZES)
    if args.quick:
        args.seeds, args.machines, args.epochs, args.planted = 1, "fan,valveEmu", 1, 4
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    work = args.keep or Path(tempfile.mkdtemp(prefix="fusion_ranks_"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        cases = beats_cases(args, work)
        print(table(f"random-tiny BEATs, {args.epochs} epochs, machines {args.machines}, seeds 0-{args.seeds - 1}, "
                    f"{SIZES['n_source']} + {SIZES['n_target']} train clips", cases))
        if args.planted:
            print()
            print(table("planted embeddings (32-d Gaussian clusters, target tighter; anomaly 0.15)",
                        planted_cases(args.planted)))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nwall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
