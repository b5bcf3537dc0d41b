"""beam: training-free frozen BEATs, relative deviation pooling per frequency band, BEAM memory with VarMin.

Sources (docs/systems/beam.md has every choice they leave open): BEAM, arXiv 2603.13749; VarMin,
Matsumoto et al., DCASE 2025 Workshop; "Anomalous Sound Detection Meets Noise-Aware Self-Supervised
Learning", arXiv 2608.00447. No global stage: per machine, the last-layer BEATs tokens of each clip keep
their (time, frequency) patch grid, are pooled over time per band (asdx.models.rdp_pool), and all train
clips, source and target together, form the memory of an asdx.scoring.BandMemoryScorer. Train scores are
leave-one-out (the gamma threshold is fitted on them); sub-scores: raw, rescaled, band_0..band_{F-1}.

Files: fit_machine writes `<folder>/beam_machine.npz` (memory, densities, alpha, the BEATs it came from);
tokens go to the FeatureCache under `context.cache_dir` (else `<machine folder>/token_cache`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from asdx.data.loader import ClipSet
from asdx.models.heads import rdp_pool
from asdx.scoring.band_memory import BandMemoryScorer
from asdx.systems._beats import Backbone, cache_root
from asdx.systems._features import length_batches, store_batches
from asdx.systems._files import load_state, save_state
from asdx.systems.base import MachineScores, System, SystemContext
from asdx.systems.configs import BEAM_CHECKPOINT_NAME, BeamConfig

MACHINE_FILE = "beam_machine.npz"
MACHINE_FORMAT = "asdx.beam.machine/1"


@dataclass
class BeamMachine:
    """One machine's memory (BandMemoryScorer.state_arrays) and what made it."""

    memory: np.ndarray
    density: np.ndarray
    alpha: np.ndarray
    train_band_scores: np.ndarray
    train_raw_band_scores: np.ndarray
    n_density_neighbors: int
    varmin: bool
    gamma: float
    fingerprint: str
    layer: int
    source: str

    def scorer(self) -> BandMemoryScorer:
        return BandMemoryScorer.from_state_arrays(vars(self), self.n_density_neighbors, self.varmin)


def machine_scores(raw: np.ndarray, rescaled: np.ndarray, varmin: bool) -> MachineScores:
    """(N, F) raw and rescaled band scores -> score (mean of the rescaled, or raw without VarMin) and sub-scores."""
    used = rescaled if varmin else raw
    bands = {f"band_{f}": used[:, f] for f in range(used.shape[1])}
    return MachineScores(used.mean(axis=1), {"raw": raw.mean(axis=1), "rescaled": rescaled.mean(axis=1), **bands})


class BeamSystem(System):
    """beam: per machine, the BandMemoryScorer of the RDP-pooled band tokens of its train clips; no training.

    After load_backbone: backbone (asdx.systems._beats.Backbone, float32), layer. After fit_machine /
    load_machine: state (BeamMachine) and scorer (BandMemoryScorer).
    """

    name = "beam"

    def __init__(self, config: BeamConfig | None = None, context: SystemContext | None = None):
        super().__init__(config or BeamConfig(), context)
        self.device = torch.device(self.context.device)
        self.backbone: Backbone | None = None
        self.layer: int | None = None
        self.state: BeamMachine | None = None
        self.scorer: BandMemoryScorer | None = None
        self._cache_root: Path | None = None

    def prepare(self) -> None:
        """The checkpoint is loaded and checked before the runner makes any folder."""
        self.load_backbone()

    def check_training_clips(self, machine: str, clips: Sequence) -> None:
        if len(clips) < 2:
            raise ValueError(f"{machine}: {len(clips)} train clip(s); beam's leave-one-out train scores need at "
                             "least 2.")

    def load_backbone(self) -> Backbone:
        if self.backbone is None:
            backbone = Backbone.load(self.config.beats, self.device, self.context,
                                     f"beam uses {BEAM_CHECKPOINT_NAME} (pre-trained BEATs iter3, no AS2M "
                                     "fine-tuning)", "beam", wanted="pre-trained", name=BEAM_CHECKPOINT_NAME,
                                     float32=True, view=self.config.view)
            self.layer = backbone.resolve_layer(self.config.layer)
            self.backbone = backbone
            self.context.note(f"beam: BEATs {backbone.described()}, layer {self.layer}, frozen, float32, "
                              f"{backbone.frequency_patches} frequency bands, {self.config.view} view.")
        return self.backbone

    @torch.no_grad()
    def pooled(self, clips: ClipSet) -> torch.Tensor:
        """(N, F_p, D) float32 on the device: each clip's tokens on their (time, frequency) grid, RDP-pooled
        over time."""
        backbone = self.load_backbone()
        dim = backbone.cfg.encoder_embed_dim
        out = torch.zeros(len(clips), backbone.frequency_patches, dim, device=self.device)
        if len(clips) == 0:
            return out
        store = backbone.store(clips, self._cache_root, self.layer, self.config.feature_memory_mb * 2**20,
                               self.config.embed_batch_size, self.context.stage, f"BEATs tokens ({clips.label})")
        batches = length_batches(np.arange(len(clips)), clips.cropped_lengths, self.config.embed_batch_size)
        for indices, tokens in store_batches(store, batches, self.context.workers):
            grid = backbone.grid(tokens.to(self.device).float())
            out[torch.as_tensor(indices, device=self.device)] = rdp_pool(grid, self.config.gamma)
        return out

    def fit_machine(self, machine: str, train: ClipSet, folder: Path) -> MachineScores:
        """The memory of every train clip (source and target together); leave-one-out train scores."""
        self.check_training_clips(machine, train.clips)
        folder = Path(folder)
        self._cache_root = cache_root(self.context, folder, "token_cache")
        cfg = self.config
        self.context.stage(f"memory: {len(train)} train clips, RDP(gamma={cfg.gamma:g}), "
                           f"VarMin {'on' if cfg.varmin else 'off'} (K = {cfg.n_density_neighbors})")
        scorer = BandMemoryScorer(cfg.n_density_neighbors, cfg.varmin).fit(self.pooled(train))
        backbone = self.backbone
        self.state = BeamMachine(**scorer.state_arrays(), n_density_neighbors=cfg.n_density_neighbors,
                                 varmin=cfg.varmin, gamma=float(cfg.gamma), fingerprint=backbone.fingerprint,
                                 layer=self.layer, source=backbone.source)
        self.scorer = scorer
        folder.mkdir(parents=True, exist_ok=True)
        save_state(folder / MACHINE_FILE, MACHINE_FORMAT, self.state)
        return machine_scores(scorer.train_raw_band_scores_, scorer.train_band_scores_, cfg.varmin)

    def load_machine(self, folder: Path) -> BeamMachine:
        """Restores the memory fit_machine wrote; it must come from this BEATs, layer and settings."""
        path = Path(folder) / MACHINE_FILE
        state = load_state(BeamMachine, path, MACHINE_FORMAT, "beam machine state", "fit_machine")
        self._cache_root = cache_root(self.context, folder, "token_cache")
        self.load_backbone().check_trained_on(path, {"fingerprint": state.fingerprint, "layer": state.layer,
                                                     "source": state.source}, self.layer, "memory")
        cfg = self.config
        saved = (state.gamma, state.n_density_neighbors, bool(state.varmin))
        if saved != (float(cfg.gamma), cfg.n_density_neighbors, cfg.varmin):
            raise ValueError(f"{path}: the memory was built with gamma={saved[0]:g}, n_density_neighbors={saved[1]}, "
                             f"varmin={saved[2]}, not gamma={cfg.gamma:g}, n_density_neighbors="
                             f"{cfg.n_density_neighbors}, varmin={cfg.varmin}; run it again.")
        self.state, self.scorer = state, state.scorer()
        return state

    def score_machine(self, test: ClipSet) -> MachineScores:
        if self.scorer is None:
            raise RuntimeError("beam: no memory yet; call fit_machine (or load_machine) first.")
        if len(test) == 0:
            empty = np.zeros((0, self.scorer.n_bands_))
            return machine_scores(empty, empty, self.config.varmin)
        raw, rescaled = self.scorer.band_scores(self.pooled(test))
        return machine_scores(raw, rescaled, self.config.varmin)


__all__ = ["BeamConfig", "BeamMachine", "BeamSystem", "machine_scores"]
