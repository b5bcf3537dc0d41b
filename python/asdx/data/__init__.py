"""DCASE Task 2 data: clip names, the machine registry, discovery, audio loading and a synthetic set.

The layout and naming follow the official baseline (nttcslab/dcase2023_task2_baseline_ae);
asdx.data.ground_truth reads the evaluator's ground-truth CSVs.
"""

from asdx.data.audio import AudioWarning, DEFAULT_SECONDS, SAMPLE_RATE, load_clip, load_clips, read_audio
from asdx.data.dataset import (
    Clip,
    MachineDir,
    clips,
    list_machines,
    machine_clips,
    read_attributes_csv,
    read_ground_truth,
    resolve_machines,
    split_dir,
)
from asdx.data.ground_truth import MachineTruth, ground_truth_dir, ground_truth_file, load_ground_truth
from asdx.data.machines import MACHINES_2026, MachineType, canonical_name, machine_type, registry_names
from asdx.data.names import ClipName, anonymised_name, labelled_name, parse_name


def __getattr__(name: str):
    """`generate` (the synthetic set) loads on first use: its sound models import scipy.signal (~1 s), which
    loading and scoring clips never need."""
    if name == "generate":
        from asdx.data.synth import generate

        return generate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AudioWarning", "Clip", "ClipName", "DEFAULT_SECONDS", "MACHINES_2026", "MachineDir", "MachineTruth", "MachineType",
    "SAMPLE_RATE", "anonymised_name", "canonical_name", "clips", "generate", "ground_truth_dir",
    "ground_truth_file", "labelled_name", "list_machines", "load_clip", "load_clips", "load_ground_truth", "machine_clips",
    "machine_type", "parse_name", "read_attributes_csv", "read_audio", "read_ground_truth", "registry_names",
    "resolve_machines", "split_dir",
]
