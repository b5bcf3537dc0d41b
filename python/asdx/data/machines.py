"""The DCASE 2026 Task 2 machine types (official baseline: datasets/machine_type_2026_dev.yaml).

Each type has one section, ``00``. ToyCar is distributed as revision r2
(``dev_ToyCar_r2.zip``) but the official baseline calls the machine type ToyCar,
so ToyCar is the canonical name and ``ToyCar_r2`` an alias. Machine folders that
are not in the registry still work everywhere; they just have no registry entry.
"""

from __future__ import annotations

from dataclasses import dataclass

DATASETS = ("dev", "eval")


@dataclass(frozen=True)
class MachineType:
    """A registered machine type: canonical name, its dataset and accepted aliases."""

    name: str
    dataset: str  # "dev" or "eval"
    aliases: tuple[str, ...] = ()
    revision: str | None = None  # distribution revision, e.g. "r2" for ToyCar in 2026


MACHINES_2026: tuple[MachineType, ...] = (
    MachineType("ToyCar", "dev", aliases=("ToyCar_r2", "ToyCar-r2"), revision="r2"),
    MachineType("ToyCarEmu", "dev"),
    MachineType("bearingEmu", "dev"),
    MachineType("fan", "dev"),
    MachineType("gearboxEmu", "dev"),
    MachineType("sliderEmu", "dev"),
    MachineType("valveEmu", "dev"),
    MachineType("ToyDrone", "eval", aliases=("Toy-Drone",)),
    MachineType("ToothBrush", "eval"),
    MachineType("SewingMachine", "eval"),
    MachineType("BlowerDustCollector", "eval"),
    MachineType("Sander", "eval"),
)

_BY_KEY = {key.lower(): m for m in MACHINES_2026 for key in (m.name, *m.aliases)}


def machine_type(name: str) -> MachineType | None:
    """The registry entry for a name or alias (case-insensitive), or None if unknown."""
    return _BY_KEY.get(name.lower())


def canonical_name(name: str) -> str:
    """The registry name for a known name or alias; unknown names come back unchanged."""
    entry = machine_type(name)
    return entry.name if entry else name


def registry_names(dataset: str = "all") -> list[str]:
    """Registered machine names of "dev", "eval" or "all", in registry order."""
    if dataset not in (*DATASETS, "all"):
        raise ValueError(f"dataset: expected 'dev', 'eval' or 'all', got {dataset!r}.")
    return [m.name for m in MACHINES_2026 if dataset in ("all", m.dataset)]


def resolve_registry(spec: str | list[str] | tuple[str, ...] | None) -> list[MachineType]:
    """Registry entries for "dev" / "eval" / "all" / names or aliases (a list or comma-separated).

    Used where no data exists yet (the synthetic generator). Unknown names raise a
    ValueError listing the registered types.
    """
    items = _split_spec(spec)
    chosen: list[MachineType] = []
    for item in items:
        if item.lower() in ("all", *DATASETS):
            group = [m for m in MACHINES_2026 if item.lower() in ("all", m.dataset)]
        else:
            entry = machine_type(item)
            if entry is None:
                raise ValueError(
                    f"machines: unknown machine type {item!r}; known: dev, eval, all, "
                    + ", ".join(registry_names()) + "."
                )
            group = [entry]
        chosen.extend(m for m in group if m not in chosen)
    return chosen


def _split_spec(spec) -> list[str]:
    if spec is None:
        return ["all"]
    raw = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [str(s).strip() for s in raw if str(s).strip()]
    if not items:
        raise ValueError("machines: empty selection.")
    return items
