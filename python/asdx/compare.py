"""`asdx compare RUN_OR_PARENT... [report[:SYSTEM]]`: several runs side by side in one table, one column each.

A column is a run directory (runs/<system>/<name>/) or a parent of seed runs (`asdx run ... --seeds`,
asdx.seeds), which counts as one column with mean ± sample sd over its seeds. Rows per machine and
`overall`: Ω (the official score: a machine's is the harmonic mean of its AUC (source), AUC (target) and
pAUC), its difference to the first column, its min–max over seeds where a column has several, then AUC
(source), AUC (target) and pAUC, then what the decisions do: the evaluator's F1 per domain and the share of
normal and of anomalous test clips flagged per domain (asdx.metrics.MachineMetrics). Every number is
computed from the runs' finished machines (done.json), as asdx.seeds.read_run does. The `overall` rows are
the official aggregation (asdx.metrics.summarize; for F1 the evaluator's per-domain harmonic mean, for the
flag rates the mean over machines) over the machines every run column finished, so that they compare like
with like; a column missing machines that another has is named with them, and the rest is still compared.

The column `report` (or `report:<system>`) holds the system report's published development figures
(asdx.report_tables: Table 1 for ae, Table 2 for proto, the macro Ω of fusion and sera); bare `report`
takes the system of the run columns. Its cells are filled only for machines the runs scored on DCASE data:
a machine of a synthetic set (asdx synth: same names, made-up sounds) is marked `(synthetic)` and its
report cell left blank, as is one whose data root can no longer be found.

Writes compare.csv (machine, metric, then per column `<label>` and `<label> sd`) and compare.json.
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
from asdx.data.synth import MANIFEST
from asdx.rundir import RunDir, is_run_dir
from asdx.seeds import (OVERALL, RunResult, cell, is_seeds_parent, load_summary, read_run, seed_dirs, spread,
                        summarise_results)
from asdx.seeds import stats as seed_stats

COMPARED = {"official_score": "Ω", "auc_source": "AUC (source)", "auc_target": "AUC (target)", "pauc": "pAUC"}
DECISIONS = {"f1_source": "F1 (source)", "f1_target": "F1 (target)", **metrics.FLAG_COLUMNS}
REPORT = "report"
SYNTHETIC, DCASE, UNKNOWN = "synthetic", "dcase", "unknown"


@dataclass
class Column:
    label: str
    path: Path
    kind: str                          # "run" or "seeds"
    results: dict[int, RunResult]      # seed -> run (one entry for a plain run)

    def scored(self) -> list[str]:
        """Machines with metrics in at least one of the column's runs, in run order."""
        found: list[str] = []
        for result in self.results.values():
            found += [m for m in result.machines if m not in found]
        return found

    def complete(self) -> set[str]:
        """Machines with metrics in every one of the column's runs."""
        sets = [set(r.machines) for r in self.results.values()]
        return set.intersection(*sets) if sets else set()

    def system(self) -> str | None:
        systems = {RunDir(r.path).read_config().get("system") for r in self.results.values()}
        return systems.pop() if len(systems) == 1 else None

    def data_roots(self) -> dict[str, str]:
        """{data root: synthetic / dcase / unknown (not found)} of the column's runs (config.json's `data`)."""
        roots = {}
        for result in self.results.values():
            root = RunDir(result.path).read_config().get("data")
            if root is None:
                roots["(not recorded)"] = UNKNOWN
            else:
                roots[root] = UNKNOWN if not Path(root).is_dir() else (
                    SYNTHETIC if (Path(root) / MANIFEST).is_file() else DCASE)
        return roots


def parse_report_column(text) -> tuple[bool, str | None]:
    """(is it the report column, its system or None for "the runs' system") of one RUN_OR_PARENT argument."""
    text = str(text)
    if text == REPORT:
        return True, None
    if text.startswith(REPORT + ":"):
        from asdx.report_tables import published

        system = text.split(":", 1)[1]
        published(system)  # a clear error for an unknown system
        return True, system
    return False, None


def load_column(path) -> Column:
    path = Path(path)
    if is_run_dir(path):
        result = read_run(path)
        seed = RunDir(path).read_config().get("config", {}).get("seed", 0)
        return Column(str(path), path, "run", {int(seed) if isinstance(seed, int) else 0: result})
    if is_seeds_parent(path):
        present = {k: p for k, p in seed_dirs(path).items() if RunDir(p).machines_dir.is_dir()}
        wanted = sorted(present)
        if (path / "summary.json").exists():  # the seeds the summary was made over, when they are all still there
            listed = load_summary(path).get("seeds", [])
            if listed and all(s in present for s in listed):
                wanted = listed
        if not wanted:
            raise FileNotFoundError(f"{path}: a parent of seed runs without any seed<k>/ run folder.")
        return Column(str(path), path, "seeds", {k: read_run(present[k]) for k in wanted})
    raise FileNotFoundError(f"{path}: neither a run directory (with machines/) nor a parent of seed runs "
                            "(with seed<k>/ folders).")


def _labels(paths: list[Path]) -> list[str]:
    """<system>/<name> (the last two folders), or the path as given where that is ambiguous."""
    short = ["/".join(p.resolve().parts[-2:]) for p in paths]
    return [s if short.count(s) == 1 else str(p) for s, p in zip(short, paths)]


def _decision_values(result: RunResult, machines: list[str]) -> dict[str, float] | None:
    """One machine's (or, for several, the overall) F1 and flag rates of one run; None if one is unscored."""
    if not machines or not all(m in result.machines for m in machines):
        return None
    if len(machines) == 1:
        values = result.machines[machines[0]].as_dict()
        return {k: values[k] for k in DECISIONS}
    return metrics.decision_summary(result.machines[m] for m in machines)


def _decision_stats(column: Column, machines: list[str]) -> dict[str, dict]:
    per_seed = {seed: _decision_values(r, machines) for seed, r in column.results.items()}
    out = {}
    for key in DECISIONS:
        values = {seed: v[key] for seed, v in per_seed.items()
                  if v is not None and v[key] is not None and np.isfinite(v[key])}
        if values:
            out[key] = seed_stats(values)
    return out


def _fixed(values: dict[str, float] | None) -> dict | None:
    """Published values in the cells' form (one value: no sd, no spread)."""
    if not values:
        return None
    return {k: {"n": 1, "mean": float(v), "sd": None, "min": float(v), "max": float(v), "values": {}}
            for k, v in values.items()}


def _report_system(wanted: str | None, columns: list[Column]) -> str:
    if wanted is not None:
        return wanted
    systems = sorted({c.system() or "?" for c in columns})
    if len(systems) != 1 or systems == ["?"]:
        raise ValueError(f"report: the run columns are runs of {', '.join(systems)}; name the system whose "
                         "published figures to show: report:ae, report:proto, report:fusion or report:sera.")
    return systems[0]


def _data_of_machines(columns: list[Column], machines: list[str]) -> tuple[dict[str, str], list[str]]:
    """Per machine: synthetic if a run that scored it ran on a synthetic set, else unknown if a data root of
    such a run is gone, else dcase."""
    seen: dict[str, set[str]] = {m: set() for m in machines}
    notes = []
    for column in columns:
        roots = column.data_roots()
        notes += [f"{column.label}: data root {root} not found: cannot tell DCASE from synthetic data; the report "
                  "column is left blank for its machines" for root, kind in roots.items() if kind == UNKNOWN]
        for machine in column.scored():
            seen[machine] |= set(roots.values())
    kinds = {m: next((k for k in (SYNTHETIC, UNKNOWN) if k in found), DCASE) for m, found in seen.items()}
    return kinds, notes


def compare(paths) -> dict:
    """The comparison of the runs / seed parents at `paths` (first = reference), as written to compare.json.

    An entry `report` or `report:<system>` is the system report's published column (module docstring).
    """
    items = list(paths)
    if not items:
        raise ValueError("compare: needs at least one run directory.")
    report_at = [(k, parse_report_column(item)[1]) for k, item in enumerate(items) if parse_report_column(item)[0]]
    if len(report_at) > 1:
        raise ValueError("report: give the report column once.")
    run_paths = [Path(item) for item in items if not parse_report_column(item)[0]]
    if not run_paths:
        raise ValueError("report: needs at least one run directory beside it (the machines to compare).")
    run_columns = [load_column(p) for p in run_paths]
    for column, label in zip(run_columns, _labels(run_paths)):
        column.label = label
    machines: list[str] = []
    for column in run_columns:
        machines += [m for m in column.scored() if m not in machines]
    common = [m for m in machines if all(m in c.complete() for c in run_columns)]
    summaries = [summarise_results(c.results, overall_machines=common) for c in run_columns]

    notes = []
    described = []
    for column, summary in zip(run_columns, summaries):
        scored = column.scored()
        missing = [m for m in machines if m not in scored]
        unfinished = sorted({m for r in column.results.values() for m in r.unfinished})
        if missing:
            why = [m for m in missing if m in unfinished]
            notes.append(f"{column.label}: missing {', '.join(missing)}"
                         + (f" (selected but not finished: {', '.join(why)})" if why else ""))
        if column.kind == "seeds":
            notes += [f"{column.label}: {note}" for note in summary["notes"]]
        described.append({"label": column.label, "path": str(column.path), "kind": column.kind,
                          "seeds": summary["seeds"], "machines": scored, "missing": missing,
                          "unfinished": unfinished})
    if not common:
        notes.append("overall: no machine is scored in every column; no overall row")
    data, data_notes = _data_of_machines(run_columns, machines)
    synthetic = [m for m in machines if data[m] == SYNTHETIC]

    rows = {}
    for machine in [*machines, *([OVERALL] if common else [])]:
        cells = []
        for column, summary in zip(run_columns, summaries):
            table = summary[OVERALL] if machine == OVERALL else summary["machines"].get(machine, {})
            entry = {k: table[k] for k in COMPARED if k in table}
            if entry:
                entry.update(_decision_stats(column, common if machine == OVERALL else [machine]))
            cells.append(entry or None)
        rows[machine] = cells

    if report_at:
        position, wanted = report_at[0]
        report_column, report_notes = _report_column(_report_system(wanted, run_columns), machines, common, data)
        notes += data_notes + report_notes
        described.insert(position, report_column["described"])
        for machine, cells in rows.items():
            cells.insert(position, report_column["cells"].get(machine))
    for machine, cells in rows.items():
        first = (cells[0] or {}).get("official_score")
        for entry in cells:
            if entry and "official_score" in entry:
                entry["official_score_diff"] = None if first is None else (
                    entry["official_score"]["mean"] - first["mean"])
    return {"columns": described, "reference": described[0]["label"], "overall_machines": common,
            "rows": rows, "metrics": {**COMPARED, **DECISIONS}, "notes": notes, "synthetic_machines": synthetic,
            "sd": "sample standard deviation over a column's seeds (ddof = 1); null for one run"}


def _report_column(system: str, machines: list[str], common: list[str], data: dict[str, str]) -> tuple[dict, list]:
    """The published column's cells ({machine: entry or None}) and its notes."""
    from asdx.report_tables import TITLE, published

    source = published(system)
    label = f"{REPORT}:{system}"
    notes = [f"{label}: the published development figures of \"{TITLE}\", {source.where}; filled only beside runs "
             "on DCASE data"]
    cells: dict[str, dict | None] = {}
    shown = []
    for machine in machines:
        values = source.machine(machine) if data[machine] == DCASE else None
        cells[machine] = _fixed(values)
        if values is not None:
            shown.append(machine)
    synthetic = [m for m in machines if data[m] == SYNTHETIC]
    if synthetic:
        notes.append(f"{label}: {', '.join(synthetic)}: synthetic data (asdx synth), not the DCASE recordings; "
                     "left blank")
    absent = [m for m in machines if data[m] == DCASE and source.machines and source.machine(m) is None]
    if absent:
        notes.append(f"{label}: {', '.join(absent)}: not in {source.where}; left blank")
    if not source.machines:
        notes.append(f"{label}: the report gives no per-machine figures for {system}")
    if common:
        overall = source.overall(common) if all(data[m] == DCASE for m in common) else None
        cells[OVERALL] = _fixed(overall)
        if overall is None and all(data[m] == DCASE for m in common):
            notes.append(f"{label}: the published macro Ω is over the seven dev machines; the overall row covers "
                         f"{', '.join(common)}; left blank")
    described = {"label": label, "path": TITLE, "kind": REPORT, "seeds": [], "machines": shown, "missing": [],
                 "unfinished": [], "system": system, "where": source.where}
    return {"cells": cells, "described": described}, notes


def _signed(value) -> str:
    return "" if value is None else f"{value:+.4f}"


def _lines(table: dict):
    """(machine, metric title, [text per column]) in table order."""
    several = len(table["columns"]) > 1
    with_seeds = any(len(c["seeds"]) > 1 for c in table["columns"])
    for machine, cells in table["rows"].items():
        get = lambda entry, key: (entry or {}).get(key)  # noqa: E731
        yield machine, "Ω", [cell(get(e, "official_score")) for e in cells]
        if several:
            yield "", f"Ω − {table['reference']}", ["" if k == 0 else _signed(get(e, "official_score_diff"))
                                                   for k, e in enumerate(cells)]
        if with_seeds:
            yield "", "Ω min–max (seeds)", [spread(get(e, "official_score")) for e in cells]
        for key in ("auc_source", "auc_target", "pauc"):
            yield "", COMPARED[key], [cell(get(e, key)) for e in cells]
        for key, title in DECISIONS.items():
            yield "", title, [cell(get(e, key)) for e in cells]


def format_compare(table: dict) -> str:
    head = ["machine", "metric", *(c["label"] + (f" ({len(c['seeds'])} seeds)" if c["kind"] == "seeds" else "")
                                   for c in table["columns"])]
    synthetic = set(table.get("synthetic_machines", []))
    body = [[f"{machine} ({SYNTHETIC})" if machine in synthetic else machine, metric, *texts]
            for machine, metric, texts in _lines(table)]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    out = [*table["notes"]]
    if out:
        out.append("")
    for row in [head, *body]:
        out.append("  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1])]
                             + [v.rjust(w) for v, w in zip(row[2:], widths[2:])]).rstrip())
    if table["overall_machines"]:
        out.append(f"overall: the official aggregation over the machines every column finished: "
                   f"{', '.join(table['overall_machines'])}")
    out.append("cells: mean ± sample sd over a column's seeds; a single run: its value")
    return "\n".join(out)


def compare_csv_text(table: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["machine", "metric"]
    for column in table["columns"]:
        header += [column["label"], f"{column['label']} sd"]
    writer.writerow(header)

    def number(value) -> str:
        return "" if value is None else repr(float(value))

    for machine, cells in table["rows"].items():
        rows = {"official_score": [], "official_score_diff": [], "official_score_min": [], "official_score_max": [],
                "auc_source": [], "auc_target": [], "pauc": [], **{key: [] for key in DECISIONS}}
        for entry in cells:
            entry = entry or {}
            for key in [*COMPARED, *DECISIONS]:
                stats = entry.get(key)
                rows[key] += [number(stats and stats["mean"]), number(stats and stats["sd"])]
            omega = entry.get("official_score")
            rows["official_score_diff"] += [number(entry.get("official_score_diff")), ""]
            several = bool(omega) and omega["n"] > 1
            rows["official_score_min"] += [number(omega["min"]) if several else "", ""]
            rows["official_score_max"] += [number(omega["max"]) if several else "", ""]
        for key, values in rows.items():
            writer.writerow([machine, key, *values])
    return buffer.getvalue()


def write_compare(table: dict, out_dir=".") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return (atomic_write_text(out_dir / "compare.csv", compare_csv_text(table)),
            atomic_write_text(out_dir / "compare.json", json.dumps(table, indent=2) + "\n"))


__all__ = ["COMPARED", "DECISIONS", "Column", "compare", "compare_csv_text", "format_compare", "load_column",
           "parse_report_column", "write_compare"]
