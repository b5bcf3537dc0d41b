"""sera_ft1: frozen BEATs tokens, an ASP head trained with multi-task ArcFace, per-domain nearest-neighbour scores.

The report "Four systems for noise-aware unsupervised anomalous sound detection in DCASE 2026
Task 2", § 2.4 ("Tsz_DCASE_task2_sera"). Global stage: fit_global trains one head (attentive
statistics pooling, BatchNorm, a linear embedding) on the cached tokens of every machine's train
clips, with an ArcFace head over the machine types and one per visible (machine, attribute key),
stopping early on a seeded, domain-stratified validation split. Per machine: fit_machine keeps
the normalised embeddings of its source and of its target train clips as two banks; a clip's
score is the smaller of its two z-scored nearest-neighbour distances (leave-one-out for the train
clips, which the gamma threshold is fitted on). Each step, default and departure from the report
is in docs/systems/sera.md.

Files: fit_global writes `<folder>/sera_head.pt` (and `sera_head.resume.pt` after every epoch until
it finishes); fit_machine writes `<folder>/sera_machine.npz`. Tokens go to the FeatureCache under
`context.cache_dir` (else `<global folder>/token_cache`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from asdx.data.loader import ClipSet
from asdx.models.heads import IGNORE_INDEX, AttentiveStatsPooling, MultiTaskArcFace
from asdx.scoring._domains import DOMAINS
from asdx.scoring.knn import KNNScorer
from asdx.systems._beats import REPORT, Backbone, cache_root
from asdx.systems._features import FeatureStore, length_batches, split_validation, store_batches
from asdx.systems._files import check_same_config, load_model_file, load_state, save_model_file, save_state
from asdx.systems._training import Epoch, Training
from asdx.systems.base import MachineScores, System, SystemContext
from asdx.systems.configs import DISTANCE_NORMS, EMBEDDING_NORMS, SERA_CHECKPOINT_NAME, SeraConfig

MAIN_TASK = "machine"
HEAD_FILE = "sera_head.pt"
RESUME_FILE = "sera_head.resume.pt"
MACHINE_FILE = "sera_machine.npz"
HEAD_FORMAT = "asdx.sera.head/1"
MACHINE_FORMAT = "asdx.sera.machine/1"


# ----------------------------------------------------------------------------- labels
def _head_name(machine: str, key: str) -> str:
    return f"{machine}/{key}".replace(".", "_")  # torch module names cannot contain "."


@dataclass
class TaskLabels:
    """The ArcFace tasks of the global head: machine type, and one head per visible (machine, attribute key)."""

    machines: list[str]
    attributes: dict[str, tuple[str, str, list[str]]]  # head name -> (machine, key, sorted values)

    @classmethod
    def from_clips(cls, clips: Sequence) -> "TaskLabels":
        machines = sorted({clip.machine for clip in clips})
        seen: dict[tuple[str, str], set[str]] = {}
        for clip in clips:
            if clip.hidden_attributes:
                continue
            for key, value in clip.attributes.items():
                seen.setdefault((clip.machine, key), set()).add(str(value))
        attributes: dict[str, tuple[str, str, list[str]]] = {}
        for (machine, key), values in sorted(seen.items()):
            if len(values) < 2:  # one class: constant zero loss, nothing to learn
                continue
            name = _head_name(machine, key)
            if name in attributes:
                raise ValueError(f"attributes: keys {attributes[name][1]!r} and {key!r} of {machine} give the same "
                                 f"head name {name!r}.")
            attributes[name] = (machine, key, sorted(values))
        return cls(machines, attributes)

    def tasks(self) -> dict[str, int]:
        return {MAIN_TASK: len(self.machines), **{name: len(v[2]) for name, v in self.attributes.items()}}

    def encode(self, clips: Sequence) -> dict[str, np.ndarray]:
        """{task: (N,) int64 class indices}, IGNORE_INDEX where a clip has no visible label for that head."""
        machine_index = {name: i for i, name in enumerate(self.machines)}
        out = {MAIN_TASK: np.array([machine_index.get(c.machine, IGNORE_INDEX) for c in clips], dtype=np.int64)}
        for name, (machine, key, values) in self.attributes.items():
            index = {value: i for i, value in enumerate(values)}
            out[name] = np.array([index.get(str(c.attributes.get(key)), IGNORE_INDEX)
                                  if c.machine == machine and not c.hidden_attributes else IGNORE_INDEX
                                  for c in clips], dtype=np.int64)
        return out

    def check_trainable(self) -> None:
        if len(self.machines) < 2 and not self.attributes:
            raise ValueError(f"train: sera's head learns to tell machine types and attribute values apart, but the "
                             f"global train clips hold one machine ({', '.join(self.machines) or 'none'}) and no "
                             "visible attribute with two values; give it more machines.")

    def to_dict(self) -> dict:
        return {"machines": list(self.machines),
                "attributes": {name: [m, k, list(v)] for name, (m, k, v) in self.attributes.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> "TaskLabels":
        return cls(list(data["machines"]), {name: (m, k, list(v)) for name, (m, k, v) in data["attributes"].items()})


# ----------------------------------------------------------------------------- head
class SeraHead(nn.Module):
    """Tokens (B, T, C) -> embedding (B, D): ASP [mu; sigma] -> BatchNorm1d(2C) -> Linear(2C, D) (the report §2.4)."""

    def __init__(self, channels: int, embedding_dim: int = 256, attention_dim: int = 128):
        super().__init__()
        self.pool = AttentiveStatsPooling(channels, attention_dim)
        self.norm = nn.BatchNorm1d(2 * channels)
        self.fc = nn.Linear(2 * channels, embedding_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.pool(tokens)))


# ----------------------------------------------------------------------------- scoring
def normalise_embeddings(x: np.ndarray, mode: str, mean: np.ndarray | None = None,
                         std: np.ndarray | None = None) -> np.ndarray:
    """Embedding z-score: "per-clip" over each row's own dimensions, "per-dimension" with (mean, std), or "none"."""
    x = np.asarray(x, dtype=np.float64)
    if mode == "none":
        return x
    if mode == "per-clip":
        centred = x - x.mean(axis=1, keepdims=True)
        return centred / _safe_std(x.std(axis=1, keepdims=True))
    if mode == "per-dimension":
        if mean is None or std is None:
            raise ValueError("per-dimension: needs the bank's mean and std.")
        return (x - mean) / _safe_std(std)
    raise ValueError(f"embedding_norm: expected one of {EMBEDDING_NORMS}, got {mode!r}.")


def _safe_std(std):
    """A zero spread (constant values) divides by 1 instead: the centred values are 0 then anyway."""
    std = np.asarray(std, dtype=np.float64)
    return np.where(std > 0, std, 1.0)


def _stats(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return np.array([values.mean(), float(_safe_std(values.std()))])


@dataclass
class DomainBanks:
    """One machine's scoring state: normalised source/target banks and the distance statistics.

    fit() gives the honest train scores (leave-one-out within a clip's own bank);
    score() the test scores. Sub-scores: source_distance / target_distance (raw
    Euclidean nearest-neighbour distances) and source_z / target_z (after
    distance_norm); score = min(source_z, target_z).
    """

    machine: str
    embedding_norm: str
    distance_norm: str
    embedding_mean: np.ndarray  # per-dimension statistics (zeros/ones for the other modes)
    embedding_std: np.ndarray
    source: np.ndarray  # normalised bank vectors
    target: np.ndarray
    source_stats: np.ndarray  # (mean, std) of the source bank's leave-one-out train distances
    target_stats: np.ndarray

    @classmethod
    def fit(cls, machine: str, embeddings: np.ndarray, domains: Sequence[str], embedding_norm: str = "per-clip",
            distance_norm: str = "leave-one-out") -> tuple["DomainBanks", MachineScores]:
        if distance_norm not in DISTANCE_NORMS:
            raise ValueError(f"distance_norm: expected one of {DISTANCE_NORMS}, got {distance_norm!r}.")
        embeddings = np.asarray(embeddings, dtype=np.float64)
        domains = np.asarray(domains)
        check_domains(machine, domains)
        if embedding_norm == "per-dimension":
            mean, std = embeddings.mean(axis=0), _safe_std(embeddings.std(axis=0))
        else:
            mean, std = np.zeros(embeddings.shape[1]), np.ones(embeddings.shape[1])
        vectors = normalise_embeddings(embeddings, embedding_norm, mean, std)
        is_target = domains == "target"
        knn = KNNScorer(k=1, metric="l2").fit(vectors, domain=domains)  # leave-one-out in a clip's own bank
        columns = knn.train_domain_distances_
        state = cls(machine, embedding_norm, distance_norm, mean, std, vectors[~is_target], vectors[is_target],
                    _stats(columns[~is_target, 0]), _stats(columns[is_target, 1]))
        return state, state._fuse(columns[:, 0], columns[:, 1])

    def score(self, embeddings: np.ndarray) -> MachineScores:
        vectors = normalise_embeddings(embeddings, self.embedding_norm, self.embedding_mean, self.embedding_std)
        if len(vectors) == 0:
            return self._fuse(np.zeros(0), np.zeros(0))
        domains = ["source"] * len(self.source) + ["target"] * len(self.target)
        knn = KNNScorer(k=1, metric="l2").fit(np.concatenate([self.source, self.target]), domain=domains)
        distances = knn.domain_distances(vectors)
        return self._fuse(distances[:, 0], distances[:, 1])

    def _fuse(self, source_distance: np.ndarray, target_distance: np.ndarray) -> MachineScores:
        if self.distance_norm == "leave-one-out":
            stats = (self.source_stats, self.target_stats)
        elif self.distance_norm == "transductive":  # over the clips being scored (GenRep)
            stats = tuple(_stats(d) if len(d) else np.array([0.0, 1.0]) for d in (source_distance, target_distance))
        else:
            stats = (np.array([0.0, 1.0]),) * 2
        source_z = (source_distance - stats[0][0]) / stats[0][1]
        target_z = (target_distance - stats[1][0]) / stats[1][1]
        return MachineScores(np.minimum(source_z, target_z),
                             {"source_distance": source_distance, "target_distance": target_distance,
                              "source_z": source_z, "target_z": target_z})

    def save(self, path: Path) -> Path:
        return save_state(path, MACHINE_FORMAT, self)

    @classmethod
    def load(cls, path: Path) -> "DomainBanks":
        return load_state(cls, path, MACHINE_FORMAT, "sera machine state", "fit_machine")


def check_domains(machine: str, domains: np.ndarray) -> None:
    """Both banks need >= 2 train clips: leave-one-out needs another member to be nearest to."""
    unknown = sorted({str(d) for d in domains} - set(DOMAINS))
    if unknown:
        raise ValueError(f"{machine}: train clips with domain {unknown}; every train clip must be source or target.")
    for domain in DOMAINS:
        count = int(np.sum(domains == domain))
        if count < 2:
            raise ValueError(f"{machine}: {count} {domain}-domain train clip(s); sera scores against separate source "
                             f"and target banks (the report §2.4) and needs at least 2 of each for the "
                             f"leave-one-out train scores.")


# ----------------------------------------------------------------------------- the system
class SeraSystem(System):
    """sera_ft1 (the report §2.4): fit_global trains the head; fit_machine / score_machine score per machine.

    After load_backbone: backbone (asdx.systems._beats.Backbone; backbone.forward_batches counts the
    BEATs forward passes), layer. epochs_run: head-training epochs run by this object. After
    fit_global / load_global: labels (TaskLabels), history (per-epoch losses), best_epoch.
    """

    name = "sera"
    uses_global_stage = True
    per_machine_config_fields = frozenset({"embedding_norm", "distance_norm", "device", "embed_batch_size",
                                           "feature_memory_mb"})

    def __init__(self, config: SeraConfig | None = None, context: SystemContext | None = None):
        super().__init__(config or SeraConfig(), context)
        self.device = torch.device(self.context.device)
        self.backbone: Backbone | None = None
        self.layer: int | None = None
        self.epochs_run = 0
        self.head: SeraHead | None = None
        self.arcface: MultiTaskArcFace | None = None
        self.labels: TaskLabels | None = None
        self.history: list[dict] = []
        self.best_epoch: int | None = None
        self.banks: DomainBanks | None = None
        self._cache_root: Path | None = None

    def global_machines(self, available):
        """Every machine found (dev and eval): the main head has one class per machine type."""
        return list(available)

    def prepare(self) -> None:
        """The checkpoint is loaded and checked before the runner makes any folder."""
        self.load_backbone()

    def check_training_clips(self, machine: str, clips) -> None:
        check_domains(machine, np.array([str(clip.domain) for clip in clips]))

    # ------------------------------------------------------------------ backbone and tokens
    def load_backbone(self) -> Backbone:
        """Loads the frozen BEATs once and notes what it is."""
        if self.backbone is None:
            backbone = Backbone.load(self.config.beats, self.device, self.context,
                                     f"sera_ft1 uses {SERA_CHECKPOINT_NAME}, § 2.4 of {REPORT}", "sera",
                                     wanted="fine-tuned", name=SERA_CHECKPOINT_NAME, view=self.config.view)
            self.layer = backbone.resolve_layer(self.config.layer)
            self.backbone = backbone
            self.context.note(f"sera: BEATs {backbone.described()}, layer {self.layer}, frozen, {self.config.view} view.")
        return self.backbone

    def token_store(self, clips: ClipSet, desc: str = "BEATs tokens") -> FeatureStore:
        """Makes sure every clip's tokens are cached (forwarding only the missing clips) and returns their store."""
        return self.load_backbone().store(clips, self._cache_root, self.layer, self.config.feature_memory_mb * 2**20,
                                          self.config.embed_batch_size, self.context.stage, desc)

    # ------------------------------------------------------------------ global stage
    def _build_head(self, labels: TaskLabels) -> None:
        cfg = self.config
        weights = {name: (cfg.main_weight if name == MAIN_TASK else cfg.aux_weight) for name in labels.tasks()}
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG state untouched
            torch.manual_seed(cfg.seed)
            self.head = SeraHead(self.backbone.cfg.encoder_embed_dim, cfg.embedding_dim, cfg.attention_dim)
            self.arcface = MultiTaskArcFace(cfg.embedding_dim, labels.tasks(), MAIN_TASK, weights,
                                            s=cfg.arcface_s, m=cfg.arcface_m)
        self.head.to(self.device)
        self.arcface.to(self.device)
        self.labels = labels

    def _weights(self) -> dict:
        return {"head": self.head.state_dict(), "arcface": self.arcface.state_dict()}

    def _restore(self, weights: Mapping) -> None:
        self.head.load_state_dict(weights["head"])
        self.arcface.load_state_dict(weights["arcface"])

    def _pass(self, store, batches, targets: dict[str, np.ndarray], optimizer=None) -> dict[str, float]:
        """One epoch over the batches; trains when an optimizer is given. Returns clip-weighted mean losses."""
        training = optimizer is not None
        self.head.train(training)
        self.arcface.train(training)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for indices, tokens in store_batches(store, batches, self.context.workers):
            if training and len(indices) < 2:  # BatchNorm cannot train on one clip
                continue
            x = tokens.to(self.device, non_blocking=True).float()
            labels = {name: torch.from_numpy(values[indices]).to(self.device) for name, values in targets.items()}
            with torch.set_grad_enabled(training):
                total, parts = self.arcface.loss(self.head(x), labels)
            if training:
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
            for name, value in (("loss", total), *parts.items()):  # summed on the device: no sync per batch
                sums[name] = sums.get(name, 0.0) + value.detach().float() * len(indices)
            count += len(indices)
        return {name: float(value) / max(count, 1) for name, value in sums.items()}

    def fit_global(self, train: ClipSet, folder: Path, validation: ClipSet | None = None) -> None:
        """Trains the head on the train clips of every machine; writes folder/sera_head.pt.

        validation is not used: the head stops early on a split of the train clips (validation_fraction).
        """
        cfg = self.config
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._cache_root = cache_root(self.context, folder, "token_cache")
        if len(train) == 0:
            raise ValueError("train: no clips for the global stage.")
        backbone = self.load_backbone()
        labels = TaskLabels.from_clips(train.clips)
        labels.check_trainable()
        store = self.token_store(train, desc="BEATs tokens (global train clips)")
        train_idx, val_idx = split_validation(train.clips, cfg.validation_fraction, cfg.seed)
        if len(train_idx) < 2:
            raise ValueError(f"train: {len(train)} clip(s) for the global stage; the head needs at least 2 to train.")
        lengths = train.cropped_lengths
        targets = labels.encode(train.clips)
        self.context.stage(f"training: ASP head on {len(train_idx)} clips, {len(val_idx)} for validation, "
                           f"{len(labels.tasks())} ArcFace heads")
        self._build_head(labels)
        optimizer = torch.optim.AdamW([*self.head.parameters(), *self.arcface.parameters()], lr=cfg.lr,
                                      weight_decay=cfg.weight_decay)
        key = {"config": dict(self.global_config()), "beats": backbone.fingerprint, "layer": self.layer,
               "labels": labels.to_dict(), "train": train_idx.tolist(), "validation": val_idx.tolist(),
               "clips": [str(c.path) for c in train.clips]}
        training = Training(folder / RESUME_FILE, key, self._weights, self._restore, optimizer, epochs=cfg.epochs,
                            patience=cfg.patience, context=self.context, label="sera",
                            steps_per_epoch=len(length_batches(train_idx, lengths, cfg.batch_size)))
        if len(val_idx) == 0:
            self.context.note("sera: no validation clips (validation_fraction or groups too small); early "
                              "stopping watches the training loss.")
        val_batches = length_batches(val_idx, lengths, cfg.batch_size)

        def epoch(n: int) -> Epoch:
            rng = np.random.default_rng([cfg.seed, n])  # per-epoch order: a resumed run sees the same batches
            losses = self._pass(store, length_batches(train_idx, lengths, cfg.batch_size, rng), targets, optimizer)
            with torch.no_grad():
                val = self._pass(store, val_batches, targets) if len(val_idx) else {}
            monitored = val.get("loss", losses.get("loss", math.inf))
            return Epoch({**{f"train_{k}": v for k, v in losses.items()}, **{f"val_{k}": v for k, v in val.items()}},
                         f"loss {losses.get('loss', math.nan):.3f}, val {monitored:.3f}", monitored)

        outcome = training.run(epoch)
        self.epochs_run += outcome.epochs_run
        self.history, self.best_epoch = outcome.history, outcome.best_epoch
        self.context.note(f"sera: head trained {outcome.epochs} epoch(s) on {len(train_idx)} clips "
                          f"({len(val_idx)} validation), best epoch {self.best_epoch} "
                          f"(loss {outcome.best:.4f}); {len(labels.machines)} machine classes, "
                          f"{len(labels.attributes)} attribute heads.")
        training.finish(lambda: self._save_head(folder))

    def _save_head(self, folder: Path) -> Path:
        beats = {**self.backbone.describe(self.layer), "kind": self.backbone.kind,
                 "channels": self.backbone.cfg.encoder_embed_dim}
        return save_model_file(Path(folder) / HEAD_FILE, HEAD_FORMAT,
                               {"config": dict(self.global_config()), "beats": beats, "labels": self.labels.to_dict(),
                                **self._weights(), "best_epoch": self.best_epoch, "history": self.history})

    def load_global(self, folder: Path) -> None:
        """Restores the head written by fit_global (checks it was made from this BEATs and config)."""
        path = Path(folder) / HEAD_FILE
        payload = load_model_file(path, HEAD_FORMAT, "sera head", "fit_global")
        self._cache_root = cache_root(self.context, folder, "token_cache")
        self.load_backbone().check_trained_on(path, payload["beats"], self.layer, "head")
        check_same_config(path, payload["config"], self.global_config(), "head")
        self._build_head(TaskLabels.from_dict(payload["labels"]))
        self._restore(payload)
        self.best_epoch, self.history = payload["best_epoch"], list(payload["history"])
        self.context.note(f"sera: head loaded from {path} (best epoch {self.best_epoch} of {len(self.history)}).")

    # ------------------------------------------------------------------ per-machine stage
    @torch.no_grad()
    def embed(self, clips: ClipSet) -> np.ndarray:
        """(N, embedding_dim) float32 embeddings (tokens from the cache; missing ones forwarded and cached)."""
        if self.head is None:
            raise RuntimeError("sera: no head yet; call fit_global(train, folder) or load_global(folder) first.")
        out = np.zeros((len(clips), self.config.embedding_dim), dtype=np.float32)
        if len(clips) == 0:
            return out
        store = self.token_store(clips, desc=f"BEATs tokens ({clips.label})")
        self.head.eval()
        batches = length_batches(np.arange(len(clips)), clips.cropped_lengths, self.config.embed_batch_size)
        for indices, tokens in store_batches(store, batches, self.context.workers):
            out[indices] = self.head(tokens.to(self.device).float()).float().cpu().numpy()
        return out

    def fit_machine(self, machine: str, train: ClipSet, folder: Path) -> MachineScores:
        """Source/target banks of the machine's train embeddings; honest (leave-one-out) train scores."""
        self.check_training_clips(machine, train.clips)
        if self.config.distance_norm == "transductive":
            self.context.note("sera: distance_norm=transductive standardises the test distances over the test set "
                              "itself (GenRep's form): each test score depends on the other test clips.")
        domains = [clip.domain for clip in train.clips]
        self.banks, scores = DomainBanks.fit(machine, self.embed(train), domains, self.config.embedding_norm,
                                             self.config.distance_norm)
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.banks.save(Path(folder) / MACHINE_FILE)
        return scores

    def load_machine(self, folder: Path) -> DomainBanks:
        """Restores the per-machine state fit_machine wrote (the head must be loaded too, for score_machine)."""
        self.banks = DomainBanks.load(Path(folder) / MACHINE_FILE)
        return self.banks

    def score_machine(self, test: ClipSet) -> MachineScores:
        if self.banks is None:
            raise RuntimeError("sera: no machine banks yet; call fit_machine (or load_machine) first.")
        return self.banks.score(self.embed(test))


__all__ = ["DomainBanks", "SeraConfig", "SeraHead", "SeraSystem", "TaskLabels", "length_batches",
           "normalise_embeddings", "split_validation"]
