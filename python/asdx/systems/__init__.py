"""The systems, one module each, and their registry: the four of the DCASE 2026 Task 2 report and beam.

The system protocol (asdx.systems.base.System; asdx.runner drives it)
---------------------------------------------------------------------
A system is a class with one config dataclass (its fields are the CLI flags and
config keys) and two stages. The runner owns the files; a system reads audio
only through the ClipSets it is handed and writes only inside the folder it is given.

Clip records.  Systems receive asdx.data.Clip records, not bare arrays: path,
machine, dataset, split, section, domain, label where known, and the attributes
from the file name and attributes_00.csv (``hidden_attributes`` marks machines
whose attributes are withheld). A ClipSet holds the records of one split with
their header lengths and streams (indices, audio) batches through a torch
DataLoader whose workers decode WAVs; clips are cropped to 10 s (report §1) and
batched by length, never zero-padded.

Global stage (``uses_global_stage = True``; sera, fusion).  Trained once per run
on the train splits of ``global_machines(available)`` (sera: every machine under
the data root, 12 classes on DCASE 2026; fusion: the dev machines):
``fit_global(train, folder, validation)`` writes into ``<run>/global/``, and the runner adds
``done.json`` with a key over (system, ``global_config()``, crop length, the
list of training files). A run whose key matches a finished global stage of
any run of the same system under the same runs folder copies and loads it
(``load_global``) instead of training, and logs that it was reused. After
training, too, the runner calls ``load_global``: the per-machine stage always
starts from what is on disk.

Per-machine stage (every system).  ``fit_machine(machine, train, folder)``
fits the machine's model (ae, proto) or embeds it and builds its banks (sera,
fusion), and returns MachineScores for the train clips. These must be honest
(held out: leave-one-out for banks, out-of-fold or held-out clips for trained
models), because the gamma threshold (q = 0.9) is fitted on them.
``score_machine(test)`` returns MachineScores for the test clips. MachineScores
carries the final score and named sub-scores (sera: the source and target
distances); all of them go into train_scores.csv / test_scores.csv and the report.

Notes.  ``context.note(text)`` records a caveat (e.g. the random-tiny BEATs
warning); notes reach run.log, notes.json, metrics.json and the report.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from asdx.systems.configs import AEConfig, BeamConfig, FusionConfig, ProtoConfig, SeraConfig


class SystemEntry(NamedTuple):
    """A registered system. Its config class is light (asdx.systems.configs); the system class may be given as
    "module:ClassName" and is then imported on first use of `.system`, so the command line builds every
    system's flags without importing torch."""

    config: type
    target: type | str
    summary: str

    @property
    def system(self) -> type:
        if isinstance(self.target, str):
            module, name = self.target.split(":")
            return getattr(importlib.import_module(module), name)
        return self.target


SYSTEMS = {
    "ae": SystemEntry(AEConfig, "asdx.systems.ae:AESystem", "official DCASE autoencoder baseline (MSE / MAHALA)"),
    "sera": SystemEntry(SeraConfig, "asdx.systems.sera:SeraSystem", "sera_ft1: frozen BEATs + ASP + multi-task "
                        "ArcFace, min z-scored distance to source/target banks"),
    "fusion": SystemEntry(FusionConfig, "asdx.systems.fusion:FusionSystem", "T_fusion: BEATs with the top blocks "
                          "fine-tuned, GeM + ArcFace; kNN and GMM scores rank-normalised, min-fused"),
    "proto": SystemEntry(ProtoConfig, "asdx.systems.proto:ProtoSystem", "P_proto: stereo CNN + frozen BEATs, "
                         "SGFF, FiLM + Conformer, min distance to normal prototypes"),
    "beam": SystemEntry(BeamConfig, "asdx.systems.beam:BeamSystem", "training-free: frozen BEATs, RDP pooling per "
                        "frequency band, band-wise memory (BEAM) with VarMin rescaling"),
}


def make_system(name: str, config, context=None):
    """The system `name` of SYSTEMS with its config and context (an asdx.systems.base.SystemContext; None: the
    config's device and defaults, for library use)."""
    if name not in SYSTEMS:
        raise ValueError(f"system: unknown {name!r}; available: {', '.join(sorted(SYSTEMS))}.")
    return SYSTEMS[name].system(config, context)
