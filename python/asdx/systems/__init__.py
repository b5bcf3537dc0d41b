"""The systems of the DCASE 2026 Task 2 report, one module each, and their registry."""

from __future__ import annotations

from typing import NamedTuple


class SystemEntry(NamedTuple):
    config: type
    system: type
    summary: str


def _registry() -> dict[str, SystemEntry]:
    from asdx.systems.ae import AEConfig, AESystem

    return {"ae": SystemEntry(AEConfig, AESystem, "official DCASE autoencoder baseline (MSE / MAHALA)")}


SYSTEMS = _registry()
