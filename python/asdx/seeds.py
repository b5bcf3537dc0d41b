"""Multi-seed runs of one system and their summary: `asdx run SYSTEM --seeds 1,2,3` (or `--seeds 3`).

Why: ASD results move a lot with the random seed, so DCASE reports a system as the mean of several
independent trials (the DCASE 2023 Task 2 baseline paper, "Description and discussion on DCASE 2023
challenge task 2", reports results as the mean of several trials), and ASDKit (arXiv:2507.10264) re-evaluates
methods "across multiple datasets and trials" because performance is "highly sensitive to ... random seeds".

Layout (the parent's name defaults to `<machines>-seeds`, e.g. runs/ae/fan-seeds/; `--name` sets it):
  runs/<system>/<name>/seed<k>/          an ordinary run directory (asdx.runner) with config.seed = k
  runs/<system>/<name>/summary.csv       machine,metric,n,mean,sd,min,max,seed<k>...  (one row per machine and
                                         metric, then the `overall` rows)
  runs/<system>/<name>/summary.json      the same numbers, structured, with the seeds and notes
  runs/<system>/<name>/summary.html      a plain table, no external assets
Metrics per machine: AUC (source), AUC (target), pAUC, Ω = their harmonic mean (the official score of that one
machine) and the decided-normal rate (share of all test clips, normal and anomalous, whose decision is 0 =
normal; not the metrics' "normals flagged", the share of normal clips decided 1). `overall`: per seed the
official aggregation of evaluation/metrics.json (asdx.metrics.summarize: Ω = h-mean of every machine's
AUC (source), AUC (target) and pAUC; the AUC/pAUC rows are the per-metric h-means), over the machines every
summarised seed finished; its decided-normal rate pools their test clips. Over seeds: mean, sample sd
(ddof = 1; blank for one seed), min and max.

A seed whose selected machines all have done.json is skipped; an unfinished one is resumed (runner.run with
resume=True). A seed folder that holds another config is refused before anything runs, naming the keys.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from asdx import distributed, metrics
from asdx._atomic import atomic_write_text
from asdx.evaluation import evaluate
from asdx.rundir import RunDir, is_run_dir, run_config

SEED_DIR = re.compile(r"seed(\d+)")
SUMMARY_FILES = ("summary.csv", "summary.json", "summary.html")
# metric key -> title, in table order; "official_score" of a machine is the h-mean of its three values
METRICS = {"official_score": "Ω", "auc_source": "AUC (source)", "auc_target": "AUC (target)", "pauc": "pAUC",
           "decided_normal_rate": "decided-normal rate"}
OVERALL = "overall"


# ---------------------------------------------------------------------- seeds and folders
def parse_seeds(text: str) -> list[int]:
    """`--seeds`: N (>= 1) means seeds 1..N; a comma-separated list (K,K,...) means exactly those."""
    raw = str(text).strip()
    parts = [p.strip() for p in raw.split(",")]
    hint = "expected N (seeds 1..N) or a comma-separated list of seeds such as 1,2,3"
    if not raw or any(not p.isdigit() for p in parts if p) or not any(parts):
        raise ValueError(f"--seeds: {hint}, got {text!r}.")
    if "," not in raw:
        count = int(raw)
        if count < 1:
            raise ValueError(f"--seeds: {hint}, got {text!r} (N must be >= 1).")
        return list(range(1, count + 1))
    seeds = [int(p) for p in parts if p]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"--seeds: seed {', '.join(map(str, repeated))} given more than once in {text!r}.")
    return seeds


def default_parent_name(machines: str) -> str:
    """`<machines>-seeds`, next to the single runs' `<machines>-seed<seed>` (asdx.rundir.RunDir.for_run)."""
    return f"{machines.replace(',', '+')}-seeds"


def parent_dir_for(options) -> Path:
    return Path(options.out) / options.system / (options.name or default_parent_name(options.machines))


def seed_dirs(parent) -> dict[int, Path]:
    """{k: parent/seed<k>} for every seed folder present, by seed."""
    parent = Path(parent)
    found = {}
    if parent.is_dir():
        for path in parent.iterdir():
            match = SEED_DIR.fullmatch(path.name)
            if match and path.is_dir():
                found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def is_seeds_parent(path) -> bool:
    path = Path(path)
    return not is_run_dir(path) and ((path / "summary.json").is_file() or bool(seed_dirs(path)))


# ---------------------------------------------------------------------- running the seeds
@dataclass
class _SeedStep:
    seed: int
    action: str                      # "run" (new folder), "resume" or "skip"
    finished: list[str] = field(default_factory=list)


def _plan_seeds(options, config, seeds: list[int], parent: Path) -> list[_SeedStep]:
    """Decides per seed run/resume/skip and checks every existing seed folder's config before anything runs."""
    from asdx.data import resolve_machines

    if is_run_dir(parent):
        raise FileExistsError(f"{parent}: is an ordinary run directory, not a parent of seed runs; pass another "
                              "--name for the seeds.")
    selected = [m.name for m in resolve_machines(options.data, options.machines)]
    steps = []
    for seed in seeds:
        run_dir = RunDir(parent / f"seed{seed}")
        if not run_dir.config_file.exists():
            steps.append(_SeedStep(seed, "run"))
            continue
        differing = run_dir.config_differences(run_config(options, dataclasses.replace(config, seed=seed)))
        if differing:
            raise ValueError(f"{run_dir.path}: holds a run with a different config than this one; differing keys: "
                             f"{', '.join(differing)}. Use --name for a new set of seeds.")
        finished = run_dir.finished()
        steps.append(_SeedStep(seed, "skip" if set(selected) <= set(finished) else "resume", finished))
    return steps


def run_seeds(options, config, seeds, say: Callable[[str], None] = print) -> Path | None:
    """Runs `config` once per seed into parent/seed<k>/ (ordinary runs), then writes the parent's summary.

    options: asdx.options.RunOptions; options.name names the parent (default `<machines>-seeds`) and
    options.resume is ignored (finished seeds are skipped, unfinished ones resumed). Returns the parent
    folder, or None on a torchrun rank other than 0 (every rank loops over the same seeds, so the ranks
    join each seed's training as in runner.run; rank 0 decides what to skip and writes the summary).
    """
    from asdx.runner import run

    seeds = list(seeds)
    if not seeds:
        raise ValueError("--seeds: no seeds.")
    if not hasattr(config, "seed"):
        raise ValueError(f"{type(config).__name__}: has no seed field; --seeds needs one.")
    me = distributed.init_from_environment(getattr(config, "device", "auto"))
    parent = parent_dir_for(options)
    plan, error = None, None
    if me.is_main:
        try:
            plan = _plan_seeds(options, config, seeds, parent)
        except Exception as caught:  # the other ranks must not wait for a plan that never comes
            error = caught
    payload = [dataclasses.astuple(s) for s in plan] if plan is not None else None  # only rank 0's counts
    shared = distributed.broadcast_object(payload)
    if error is not None:
        raise error
    if shared is None:
        raise ValueError(f"{parent}: rank 0 could not plan the seeds (its error is in its output).")
    plan = [_SeedStep(*values) for values in shared]
    tell = say if me.is_main else (lambda text: None)
    for k, step in enumerate(plan, start=1):
        run_dir = parent / f"seed{step.seed}"
        head = f"seed {step.seed} ({k}/{len(plan)})"
        if step.action == "skip":
            tell(f"{head}: finished earlier ({', '.join(step.finished)}), skipped: {run_dir}")
            continue
        if step.action == "resume":
            done = f"{', '.join(step.finished)} finished" if step.finished else "no machine finished"
            tell(f"{head}: unfinished ({done}), resuming: {run_dir}")
        else:
            tell(f"{head}: running: {run_dir}")
        seed_options = dataclasses.replace(options, name=str(Path(parent.name, run_dir.name)),
                                           resume=step.action == "resume")
        _, evaluation = run(seed_options, dataclasses.replace(config, seed=step.seed))
        if evaluation is not None:
            tell(f"{head}: official score Ω = {evaluation.summary.official_score:.4f}")
    if not me.is_main:
        return None
    summarise(parent, seeds=[s.seed for s in plan])
    return parent


# ---------------------------------------------------------------------- reading one run
@dataclass
class RunResult:
    """What one run directory finished: official metrics (machines with ground truth) and decisions."""

    path: Path
    machines: dict[str, metrics.MachineMetrics]   # finished machines with ground truth, in run order
    decided_normal: dict[str, tuple[int, int]]     # finished machine -> (test clips decided normal, test clips)
    selected: list[str]                            # config.json's machines (what the run set out to do)

    @property
    def finished(self) -> list[str]:
        return list(self.decided_normal)

    @property
    def unfinished(self) -> list[str]:
        return [m for m in self.selected if m not in self.decided_normal]


def read_run(run_dir) -> RunResult:
    """Scores a run's finished machines (those with done.json) as `asdx run` does for metrics.json.

    Computed from the run's submission and test_scores.csv rather than read from metrics.json, which a
    run writes only at its end and may describe machines that have since been deleted or rerun.
    """
    run_dir = RunDir(run_dir)
    if not run_dir.machines_dir.is_dir():
        raise FileNotFoundError(f"{run_dir.path}: not a run directory (no machines/ folder).")
    selected = list(run_dir.read_config().get("machines", []))
    finished = run_dir.finished()
    order = [m for m in selected if m in finished] + [m for m in finished if m not in selected]
    decided_normal = {}
    for machine in order:
        decisions = run_dir.decisions(machine)
        decided_normal[machine] = (int(np.sum(decisions == 0)), int(decisions.size))
    truth = run_dir.ground_truth()
    truth = {m: truth[m] for m in order if m in truth}
    scored = {}
    if truth:
        evaluation = evaluate(run_dir.submission_dir, truth, machines=list(truth))
        scored = {m: evaluation.machines[m] for m in truth}
    return RunResult(run_dir.path, scored, decided_normal, selected)


# ---------------------------------------------------------------------- statistics over seeds
def stats(values: dict[int, float]) -> dict:
    """n, mean, sample sd (ddof = 1; None for one value), min, max and the values by seed."""
    array = np.array(list(values.values()), dtype=np.float64)
    return {"n": int(array.size), "mean": float(np.mean(array)),
            "sd": float(np.std(array, ddof=1)) if array.size > 1 else None,
            "min": float(np.min(array)), "max": float(np.max(array)),
            "values": {str(seed): float(v) for seed, v in values.items()}}


def _machine_values(result: RunResult, machine: str) -> dict[str, float]:
    values = {}
    if machine in result.machines:
        m = result.machines[machine]
        values.update(official_score=metrics.official_score([m]), auc_source=m.auc_source,
                      auc_target=m.auc_target, pauc=m.pauc)
    if machine in result.decided_normal:
        normal, clips = result.decided_normal[machine]
        values["decided_normal_rate"] = normal / clips
    return values


def _overall_values(result: RunResult, machines: list[str]) -> dict[str, float]:
    values = {}
    scored = [result.machines[m] for m in machines if m in result.machines]
    if scored:
        summary = metrics.summarize(scored)  # the official aggregation, as evaluation.result_json writes it
        values.update(official_score=summary.official_score, **summary.hmean)
    counted = [result.decided_normal[m] for m in machines if m in result.decided_normal]
    if counted:
        values["decided_normal_rate"] = sum(n for n, _ in counted) / sum(c for _, c in counted)
    return values


def _table(per_seed: dict[int, dict[str, float]]) -> dict[str, dict]:
    return {key: stats({seed: v[key] for seed, v in per_seed.items() if key in v})
            for key in METRICS if any(key in v for v in per_seed.values())}


def summarise_results(results: dict[int, RunResult], overall_machines: list[str] | None = None) -> dict:
    """Mean/sd/min/max over seeds per machine and overall, from each seed's RunResult.

    overall_machines: the machines of the `overall` rows (default: those every seed finished).
    """
    if not results:
        raise ValueError("no seed runs to summarise.")
    machines: list[str] = []
    for result in results.values():
        machines += [m for m in result.finished if m not in machines]
    common = [m for m in machines if all(m in r.finished for r in results.values())]
    overall_machines = common if overall_machines is None else list(overall_machines)
    notes = [f"seed {seed}: missing {', '.join(missing)} (not finished)"
             for seed, r in results.items() if (missing := [m for m in machines if m not in r.finished])]
    rows = {m: _table({s: _machine_values(r, m) for s, r in results.items() if m in r.finished}) for m in machines}
    overall = _table({s: _overall_values(r, overall_machines) for s, r in results.items()
                      if all(m in r.finished for m in overall_machines)}) if overall_machines else {}
    return {"seeds": sorted(results), "machines": rows, OVERALL: overall, "overall_machines": overall_machines,
            "notes": notes}


# ---------------------------------------------------------------------- the parent's summary files
def summarise(parent, seeds=None) -> dict:
    """Writes parent/summary.csv, summary.json and summary.html over `seeds` (default: every seed<k>/ folder)."""
    parent = Path(parent)
    present = seed_dirs(parent)
    seeds = sorted(present) if seeds is None else list(seeds)
    absent = [s for s in seeds if s not in present]
    if absent or not seeds:
        raise FileNotFoundError(f"{parent}: no seed folder for seed {', '.join(map(str, absent))}." if absent else
                                f"{parent}: no seed<k>/ run folders to summarise.")
    results = {seed: read_run(present[seed]) for seed in seeds}
    system = RunDir(present[seeds[0]]).read_config().get("system")
    summary = {"system": system, "parent": str(parent), **summarise_results(results),
               "seed_dirs": {str(s): present[s].name for s in seeds}, "metrics": dict(METRICS),
               "sd": "sample standard deviation over seeds (ddof = 1); null for one seed"}
    atomic_write_text(parent / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(parent / "summary.csv", summary_csv_text(summary))
    atomic_write_text(parent / "summary.html", summary_html(summary))
    return summary


def load_summary(parent) -> dict:
    return json.loads((Path(parent) / "summary.json").read_text())


def _number(value) -> str:
    return "" if value is None else repr(float(value))


def _rows(summary: dict):
    """(machine, metric key, stats) in table order, the overall rows last."""
    for machine, table in [*summary["machines"].items(), (OVERALL, summary[OVERALL])]:
        for key, entry in table.items():
            yield machine, key, entry


def summary_csv_text(summary: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    seeds = [str(s) for s in summary["seeds"]]
    writer.writerow(["machine", "metric", "n", "mean", "sd", "min", "max", *(f"seed{s}" for s in seeds)])
    for machine, key, entry in _rows(summary):
        writer.writerow([machine, key, entry["n"], *(_number(entry[k]) for k in ("mean", "sd", "min", "max")),
                         *(_number(entry["values"].get(s)) for s in seeds)])
    return buffer.getvalue()


def cell(entry: dict | None, digits: int = 4) -> str:
    """`mean ± sd` (just the mean for one value), "" for no value."""
    if not entry:
        return ""
    text = f"{entry['mean']:.{digits}f}"
    return text if entry.get("sd") is None else f"{text} ± {entry['sd']:.{digits}f}"


def spread(entry: dict | None, digits: int = 4) -> str:
    return "" if not entry or entry["n"] < 2 else f"{entry['min']:.{digits}f}–{entry['max']:.{digits}f}"


def format_summary(summary: dict) -> str:
    """The summary as a text table: mean ± sd per machine and overall, and Ω's min–max over seeds."""
    seeds = summary["seeds"]
    titles = ["n", *METRICS.values(), "Ω min–max"]
    lines_in = []
    for machine, table in [*summary["machines"].items(), (OVERALL, summary[OVERALL])]:
        if not table:
            continue
        n = max(entry["n"] for entry in table.values())
        lines_in.append([machine, str(n), *(cell(table.get(k)) for k in METRICS),
                         spread(table.get("official_score"))])
    widths = [max(len(row[i]) for row in [["machine", *titles], *lines_in]) for i in range(len(titles) + 1)]
    lines = [f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))}); mean ± sample sd "
             "over seeds"]
    for row in [["machine", *titles], *lines_in]:
        lines.append("  ".join([row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:])]))
    if summary["overall_machines"]:
        lines.append(f"overall: the official aggregation over {', '.join(summary['overall_machines'])}")
    lines += summary["notes"]
    return "\n".join(lines)


def summary_html(summary: dict) -> str:
    seeds = summary["seeds"]
    head = "<tr><th>machine</th><th>n</th>" + "".join(f"<th>{html.escape(t)}</th>" for t in METRICS.values()) + "</tr>"
    rows = []
    for machine, table in [*summary["machines"].items(), (OVERALL, summary[OVERALL])]:
        if not table:
            continue
        n = max(entry["n"] for entry in table.values())
        cells = "".join(f"<td>{html.escape(cell(table.get(k)))}<br><small>{html.escape(spread(table.get(k)))}"
                        "</small></td>" for k in METRICS)
        name = f"<b>{OVERALL}</b>" if table is summary[OVERALL] else html.escape(machine)
        rows.append(f"<tr><td>{name}</td><td>{n}</td>{cells}</tr>")
    links = [f"<th><a href='{html.escape(summary['seed_dirs'][str(s)])}/report.html'>seed {s}</a></th>" for s in seeds]
    per_seed_head = "<tr><th>machine</th>" + "".join(links) + "</tr>"
    per_seed = []
    for machine, table in [*summary["machines"].items(), (OVERALL, summary[OVERALL])]:
        values = table.get("official_score", {}).get("values", {})
        per_seed.append(f"<tr><td>{html.escape(machine)}</td>" + "".join(
            f"<td>{values[str(s)]:.4f}</td>" if str(s) in values else "<td></td>" for s in seeds) + "</tr>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary["notes"])
    overall = ", ".join(summary["overall_machines"])
    title = f"asdx {summary.get('system') or ''} over {len(seeds)} seeds"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Seeds {', '.join(map(str, seeds))}. Each cell: mean ± sample "
            "standard deviation over seeds (ddof = 1; none for one seed), below it min–max. Ω of a machine is the "
            "harmonic mean of its AUC (source), AUC (target) and pAUC; <b>overall</b> is the official score "
            f"(harmonic mean over every machine's three values) per seed, over {html.escape(overall) or 'no machine'}"
            "; its AUC and pAUC are the per-metric harmonic means. The decided-normal rate is the share of all test "
            "clips, normal and anomalous, decided normal (decision 0); the share of normal clips flagged is in each "
            f"seed's report.</p><table>{head}{''.join(rows)}</table><ul>{notes}</ul><h2>Ω per seed</h2>"
            f"<table>{per_seed_head}{''.join(per_seed)}</table></body></html>")


__all__ = ["METRICS", "RunResult", "default_parent_name", "format_summary", "is_seeds_parent",
           "load_summary", "parent_dir_for", "parse_seeds", "read_run", "run_seeds", "seed_dirs", "stats",
           "summarise", "summarise_results"]
