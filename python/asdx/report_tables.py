"""The development-set figures of the system report, for `asdx compare ... report`.

Source: the technical report "Four systems for noise-aware unsupervised anomalous sound detection
in DCASE 2026 Task 2", §3.1: Table 1 (Tsz_DCASE_task2_baseline = our `ae`; AUC source, AUC target
and pAUC per dev machine, %, "Macro Ω: 58.17"), Table 2 (Tsz_DCASE_task2.1 = `proto`, proto_min;
no macro Ω printed) and, in the text, the macro official scores of T_fusion (61.46 %) and sera_ft1
(56.47 %) over the seven development machines, without a per-machine table.

Copied as printed (two decimals, in %); stored here as fractions, asdx's unit. Ω of a machine is
the harmonic mean of its three values, as asdx.metrics computes it; the macro Ω over all seven
machines from Table 1 is 58.17 %, the printed figure.
"""

from __future__ import annotations

from dataclasses import dataclass

from asdx import metrics
from asdx.data.machines import canonical_name

TITLE = "Four systems for noise-aware unsupervised anomalous sound detection in DCASE 2026 Task 2"
DEV_MACHINES = ("fan", "ToyCarEmu", "gearboxEmu", "bearingEmu", "sliderEmu", "valveEmu", "ToyCar")  # report order
KEYS = ("auc_source", "auc_target", "pauc")

# machine: (AUC source, AUC target, pAUC) in %, as printed
_TABLE_1 = {
    "fan": (60.22, 45.80, 52.89),
    "ToyCarEmu": (69.48, 71.44, 53.16),
    "gearboxEmu": (75.68, 52.36, 53.16),
    "bearingEmu": (68.10, 61.92, 60.47),
    "sliderEmu": (66.54, 49.64, 51.16),
    "valveEmu": (58.54, 57.08, 50.68),
    "ToyCar": (76.64, 53.96, 57.74),
}
_TABLE_2 = {
    "fan": (54.52, 61.24, 59.89),
    "ToyCarEmu": (57.58, 52.02, 49.74),
    "gearboxEmu": (70.60, 53.18, 53.63),
    "bearingEmu": (62.82, 58.14, 53.05),
    "sliderEmu": (55.00, 47.62, 48.63),
    "valveEmu": (49.94, 44.88, 48.95),
    "ToyCar": (51.22, 61.46, 51.37),
}


@dataclass(frozen=True)
class Published:
    """One system's published dev figures, as fractions."""

    system: str
    where: str                                   # where in the report
    machines: dict[str, dict[str, float]]        # machine -> {auc_source, auc_target, pauc}; {} if none printed
    macro_omega: float | None                    # the printed macro Ω over DEV_MACHINES, if any

    def machine(self, name: str) -> dict[str, float] | None:
        """The machine's published values with its Ω, or None (not in the table; aliases accepted)."""
        values = self.machines.get(canonical_name(name))
        if values is None:
            return None
        return {**values, "official_score": metrics.harmonic_mean([values[k] for k in KEYS])}

    def overall(self, machines) -> dict[str, float] | None:
        """Ω and the per-metric h-means over `machines`, as asdx.metrics.summarize aggregates a run.

        From the table when it has every one of them; otherwise the printed macro Ω, and only when
        `machines` are exactly the seven dev machines it was computed over; else None.
        """
        names = [canonical_name(m) for m in machines]
        if names and self.machines and all(m in self.machines for m in names):
            rows = [self.machines[m] for m in names]
            out = {k: metrics.harmonic_mean([r[k] for r in rows]) for k in KEYS}
            out["official_score"] = metrics.harmonic_mean([r[k] for r in rows for k in KEYS])
            return out
        if self.macro_omega is not None and sorted(names) == sorted(DEV_MACHINES):
            return {"official_score": self.macro_omega}
        return None


def _fractions(table: dict[str, tuple[float, float, float]]) -> dict[str, dict[str, float]]:
    return {m: {k: v / 100.0 for k, v in zip(KEYS, values)} for m, values in table.items()}


PUBLISHED = {
    "ae": Published("ae", "Table 1 (Tsz_DCASE_task2_baseline)", _fractions(_TABLE_1), 0.5817),
    "proto": Published("proto", "Table 2 (Tsz_DCASE_task2.1, proto_min)", _fractions(_TABLE_2), None),
    "fusion": Published("fusion", "§3.1 text (T_fusion): macro Ω only", {}, 0.6146),
    "sera": Published("sera", "§3.1 text (sera_ft1): macro Ω only", {}, 0.5647),
}


def published(system: str) -> Published:
    if system not in PUBLISHED:
        raise ValueError(f"report: no published figures for system {system!r}; known: {', '.join(PUBLISHED)}.")
    return PUBLISHED[system]


__all__ = ["DEV_MACHINES", "PUBLISHED", "Published", "TITLE", "published"]
