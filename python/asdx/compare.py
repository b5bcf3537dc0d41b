"""`asdx compare RUN_OR_PARENT...`: several runs side by side in one table, one column each.

A column is a run directory (runs/<system>/<name>/) or a parent of seed runs (`asdx run ... --seeds`,
asdx.seeds), which counts as one column with mean ± sample sd over its seeds. Rows per machine and
`overall`: Ω (the official score: a machine's is the harmonic mean of its AUC (source), AUC (target) and
pAUC), its difference to the first column, its min–max over seeds where a column has several, then AUC
(source), AUC (target) and pAUC. Every number is computed from the runs' finished machines (done.json),
as asdx.seeds.read_run does. The `overall` rows are the official aggregation (asdx.metrics.summarize) over
the machines every column finished, so that they compare like with like; a column missing machines that
another has is named with them, and the rest is still compared.

Writes compare.csv (machine, metric, then per column `<label>` and `<label> sd`) and compare.json.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from asdx._atomic import atomic_write_text
from asdx.seeds import (OVERALL, RunResult, cell, is_run_dir, is_seeds_parent, read_run, seed_dirs, spread,
                        summarise_results)

COMPARED = {"official_score": "Ω", "auc_source": "AUC (source)", "auc_target": "AUC (target)", "pauc": "pAUC"}


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


def load_column(path) -> Column:
    path = Path(path)
    if is_run_dir(path):
        result = read_run(path)
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
        seed = config.get("config", {}).get("seed", 0)
        return Column(str(path), path, "run", {int(seed) if isinstance(seed, int) else 0: result})
    if is_seeds_parent(path):
        present = {k: p for k, p in seed_dirs(path).items() if (p / "machines").is_dir()}
        wanted = sorted(present)
        summary = path / "summary.json"
        if summary.exists():  # the seeds the summary was made over, when they are all still there
            listed = json.loads(summary.read_text()).get("seeds", [])
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


def compare(paths) -> dict:
    """The comparison of the runs / seed parents at `paths` (first = reference), as written to compare.json."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("compare: needs at least one run directory.")
    columns = [load_column(p) for p in paths]
    for column, label in zip(columns, _labels(paths)):
        column.label = label
    machines: list[str] = []
    for column in columns:
        machines += [m for m in column.scored() if m not in machines]
    common = [m for m in machines if all(m in c.complete() for c in columns)]
    summaries = [summarise_results(c.results, overall_machines=common) for c in columns]

    notes = []
    described = []
    for column, summary in zip(columns, summaries):
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

    rows = {}
    for machine in [*machines, *([OVERALL] if common else [])]:
        cells = []
        for summary in summaries:
            table = summary[OVERALL] if machine == OVERALL else summary["machines"].get(machine, {})
            entry = {k: table[k] for k in COMPARED if k in table}
            cells.append(entry or None)
        first = (cells[0] or {}).get("official_score")
        for entry in cells:
            if entry and "official_score" in entry:
                entry["official_score_diff"] = None if first is None else (
                    entry["official_score"]["mean"] - first["mean"])
        rows[machine] = cells
    return {"columns": described, "reference": described[0]["label"], "overall_machines": common,
            "rows": rows, "metrics": dict(COMPARED), "notes": notes,
            "sd": "sample standard deviation over a column's seeds (ddof = 1); null for one run"}


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


def format_compare(table: dict) -> str:
    head = ["machine", "metric", *(c["label"] + (f" ({len(c['seeds'])} seeds)" if c["kind"] == "seeds" else "")
                                   for c in table["columns"])]
    body = [[machine, metric, *texts] for machine, metric, texts in _lines(table)]
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
                "auc_source": [], "auc_target": [], "pauc": []}
        for entry in cells:
            entry = entry or {}
            for key in COMPARED:
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


__all__ = ["COMPARED", "Column", "compare", "compare_csv_text", "format_compare", "load_column", "write_compare"]
