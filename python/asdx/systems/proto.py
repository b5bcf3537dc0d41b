"""P_proto: stereo CNN + frozen BEATs, SGFF fusion, FiLM + Conformer, prototype scoring (proto_min).

fit_machine trains one network per machine (asdx.models.proto_net.ProtoModel) on the cached stereo features
and BEATs tokens of its train clips and fits one prototype per group, (domain, attribute value) or domain;
a clip scores its least distance to a prototype. Under torchrun every rank trains (DDP); rank 0 writes.
Threshold scores: out-of-fold scores of `folds` extra networks (kfold, cross_fit) or the final network's
leave-one-out distances (loo); docs/threshold_scores.md. Files in the machine folder: proto_model.pt
(proto_model.resume.pt until training ends), proto_prototypes.npz, with kfold fold<k>/held_out.npz.
The recipe and its departures from the report (§ 2.2 of "Four systems for noise-aware unsupervised
anomalous sound detection in DCASE 2026 Task 2"): docs/systems/proto.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from asdx import distributed
from asdx.data.loader import ClipSet
from asdx.models.proto_net import ProtoModel, ProtoNetConfig
from asdx.scoring.prototypes import Prototypes
from asdx.systems._beats import Backbone, cache_root, filled_per_node
from asdx.systems._features import length_batches, store_batches
from asdx.systems._files import check_same_config, load_model_file, load_state, save_model_file, save_state
from asdx.systems._stereo import STEREO, StereoFeatures
from asdx.systems._threshold_scores import CrossFit, balance_domains, cross_fit
from asdx.systems._training import Epoch, Training, digest, distributed_model, rank_batches, summed_over_ranks
from asdx.systems.base import MachineScores, System, SystemContext
from asdx.systems.configs import PROTO_CHECKPOINT_NAME, ProtoConfig

MODEL_FILE = "proto_model.pt"
RESUME_FILE = "proto_model.resume.pt"
PROTOTYPES_FILE = "proto_prototypes.npz"
MODEL_FORMAT = "asdx.proto.model/1"
PROTOTYPES_FORMAT = "asdx.proto.prototypes/1"
SPEED_KEYS = ("spd", "speed")


# ----------------------------------------------------------------------------- groups
@dataclass
class Groups:
    """The machine's prototype groups: (domain, attribute value) pairs, or domains only (hidden attributes)."""

    key: str | None           # the attribute the groups split on; None: domain-only groups
    values: list[str]         # its values seen in training (FiLM attribute index = 1 + position; 0 = unknown)
    names: list[str]          # group names, e.g. "source|spd=1000" or "target"
    conditions: list[tuple[int, int]]  # (domain index, attribute index) per group

    @classmethod
    def from_clips(cls, clips: Sequence) -> "Groups":
        key = attribute_key(clips)
        values = sorted({str(c.attributes.get(key)) for c in clips}) if key else []
        names, conditions = [], []
        for domain_index, domain in enumerate(("source", "target")):
            for value in (values or [None]):
                if any(c.domain == domain and (value is None or str(c.attributes.get(key)) == value) for c in clips):
                    names.append(domain if value is None else f"{domain}|{key}={value}")
                    conditions.append((domain_index, 0 if value is None else 1 + values.index(value)))
        return cls(key, values, names, conditions)

    @property
    def visible(self) -> bool:
        return self.key is not None

    def of(self, clip) -> int:
        domain = 0 if clip.domain == "source" else 1
        attribute = 1 + self.values.index(str(clip.attributes.get(self.key))) if self.key else 0
        return self.conditions.index((domain, attribute))

    def to_dict(self) -> dict:
        return {"key": self.key, "values": self.values, "names": self.names,
                "conditions": [list(c) for c in self.conditions]}

    @classmethod
    def from_dict(cls, data) -> "Groups":
        return cls(data["key"], list(data["values"]), list(data["names"]), [tuple(c) for c in data["conditions"]])


def attribute_key(clips: Sequence) -> str | None:
    """The attribute prototypes split on: speed when present, else the first one; None for hidden attributes."""
    if any(c.hidden_attributes for c in clips):
        return None
    keys: list[str] = []
    for clip in clips:
        keys += [k for k in clip.attributes if k not in keys]
    varying = [k for k in keys if len({str(c.attributes.get(k)) for c in clips}) >= 2]
    speed = [k for k in varying if k.lower() in SPEED_KEYS]
    return (speed or varying or [None])[0]


def proto_min(prototypes: Prototypes, distances: np.ndarray) -> MachineScores:
    """The score (the least distance to a prototype) and, as sub-scores, the nearest group and every distance."""
    nearest = np.argmin(distances, axis=1)
    columns = {"nearest_group": nearest.astype(np.float64)}
    columns.update({f"distance[{name}]": distances[:, g] for g, name in enumerate(prototypes.names)})
    return MachineScores(distances[np.arange(len(distances)), nearest], columns)


# ----------------------------------------------------------------------------- fold networks
FOLD_FILE = "held_out.npz"
FOLD_FORMAT = "asdx.proto.fold/1"


@dataclass
class FoldResult:
    """A finished fold network's scores (its held-out clips' and its kept clips' leave-one-out ones), keyed by
    the digest of its settings and clips."""

    key: str
    raw: np.ndarray
    reference: np.ndarray


def _read_fold(path: Path, key: str) -> FoldResult | None:
    """A finished fold's results, or None (absent, unreadable, or from other settings or clips)."""
    try:
        done = load_state(FoldResult, path, FOLD_FORMAT, "proto fold result", "fit_machine")
    except (OSError, ValueError):
        return None
    return done if done.key == key else None


# ----------------------------------------------------------------------------- the system
class ProtoSystem(System):
    """P_proto (the report §2.2): one model per machine; fit_machine trains it and fits the prototypes.

    feature_batches: stereo-feature and BEATs forward passes run by this object (0 when every feature
    came from the cache); epochs_run: training epochs run. After fit_machine / load_machine: groups,
    history, prototypes.
    """

    name = "proto"
    distributed_stage = "machine"  # under torchrun every rank trains each machine's model (DDP); rank 0 scores
    # the threshold-score settings do not change the final network (its fold networks are extra)
    per_machine_config_fields = frozenset({"device", "embed_batch_size", "feature_memory_mb", "threshold_scores",
                                           "folds", "balance_domains"})

    def __init__(self, config: ProtoConfig | None = None, context: SystemContext | None = None):
        super().__init__(config or ProtoConfig(), context)
        self.device = torch.device(self.context.device)
        self.backbone: Backbone | None = None
        self.layer: int | None = None
        self.stereo = StereoFeatures(self.device)
        self.epochs_run = 0
        self.model: ProtoModel | None = None
        self.groups: Groups | None = None
        self.prototypes: Prototypes | None = None
        self.history: list[dict] = []
        self._folder: Path | None = None  # the machine folder: the feature cache lives there without a cache_dir
        self._world = distributed.World()  # the process group, while fit_machine trains only (rank 0 scores alone)

    @property
    def input_channels(self) -> int:
        return 2

    @property
    def feature_batches(self) -> int:
        return self.stereo.forward_batches + (self.backbone.forward_batches if self.backbone is not None else 0)

    def prepare(self) -> None:
        self.load_backbone()

    def check_training_clips(self, machine: str, clips) -> None:
        domains = {str(c.domain) for c in clips}
        if not {"source", "target"} <= domains:
            raise ValueError(f"{machine}: train clips of domains {sorted(domains)}; P_proto fits source and target "
                             "prototypes and needs train clips of both.")
        n_target = sum(str(c.domain) == "target" for c in clips)
        if self.config.threshold_scores == "kfold" and (n_target < 2 or len(clips) - n_target < 2):
            raise ValueError(f"{machine}: {n_target} target and {len(clips) - n_target} source train clips; "
                             "threshold_scores=kfold needs at least 2 of each (every fold network trains on both "
                             "domains). Use threshold_scores=loo.")

    def load_backbone(self) -> Backbone:
        if self.backbone is None:
            backbone = Backbone.load(self.config.beats, self.device, self.context,
                                     f"P_proto uses {PROTO_CHECKPOINT_NAME} (asdx's choice; the report names none)",
                                     "proto", view=self.config.view)
            self.layer = backbone.resolve_layer(self.config.layer)
            self.backbone = backbone
            cues = "on" if self.config.use_spatial else "OFF"
            self.context.note(f"proto: BEATs {backbone.source}, layer {self.layer}, frozen, {self.config.view} view; stereo CNN "
                              f"({self.config.size} config, spatial cues {cues}).")
        return self.backbone

    def new_model(self) -> ProtoModel:
        """A freshly initialised network and heads for the machine's groups (global torch RNG), on the device."""
        cfg = self.config
        make = ProtoNetConfig.full if cfg.size == "full" else ProtoNetConfig.tiny
        net_config = make(beats_dim=self.backbone.cfg.encoder_embed_dim, n_attributes=1 + len(self.groups.values),
                          use_spatial=cfg.use_spatial, max_lag=float(STEREO["max_lag"]))
        return ProtoModel(net_config, len(self.groups.names) if self.groups.visible else None,
                          arcface_s=cfg.arcface_s, arcface_m=cfg.arcface_m, center_weight=cfg.center_weight,
                          temperature=cfg.temperature, domain_weight=cfg.domain_weight).to(self.device)

    # ------------------------------------------------------------------ cached features
    def feature_stores(self, clips: ClipSet, folder: Path):
        """(stereo store, token store): every clip's features cached, computed only where missing."""
        root = cache_root(self.context, folder, "feature_cache")
        budget = self.config.feature_memory_mb * 2**20 // 2  # half for each
        stereo = self.stereo.store(clips, root, budget, self.config.embed_batch_size, self.context.stage,
                                   f"stereo features ({clips.label})")
        tokens = self.load_backbone().store(clips, root, self.layer, budget, self.config.embed_batch_size,
                                            self.context.stage, f"BEATs tokens ({clips.label})")
        return stereo, tokens

    def _inputs(self, stereo_store, token_store, batches: list[np.ndarray]):
        """(indices, bands (B, 7, T, M), gcc (B, T, 2), tokens (B, N, C)) float32 on the device, per batch."""
        workers = self.context.workers
        for (indices, packed), (_, tokens) in zip(store_batches(stereo_store, batches, workers),
                                                  store_batches(token_store, batches, workers)):
            yield indices, *StereoFeatures.unpack(packed.to(self.device)), tokens.to(self.device).float()

    # ------------------------------------------------------------------ training
    def _epoch_batches(self, train: ClipSet, epoch: int) -> list[np.ndarray]:
        """This epoch's batches: every source clip once, target clips drawn up to target_share (seeded)."""
        rng = np.random.default_rng([self.config.seed, epoch])
        domains = np.array([c.domain for c in train.clips])
        source, target = np.flatnonzero(domains != "target"), np.flatnonzero(domains == "target")
        share = self.config.target_share
        draws = int(round(share / (1 - share) * len(source))) if share > 0 else len(target)
        # target clips already at or above the share: each once (drawing them with replacement would drop some)
        indices = np.concatenate([source, rng.choice(target, size=draws, replace=True)
                                  if share > 0 and draws > len(target) else target])
        return length_batches(indices, train.cropped_lengths, self.config.batch_size, rng)

    def _train_step(self, model, optimizer, bands, gcc, tokens, labels, domains, conditions, mixer,
                    weight: float = 1.0) -> float:
        lam, perm = 1.0, None
        if mixer.random() < self.config.mixup_prob and len(labels) > 1:
            lam = float(mixer.beta(self.config.mixup_alpha, self.config.mixup_alpha))
            lam = max(lam, 1.0 - lam)  # the mixed clip keeps the condition of its larger part
            perm = torch.from_numpy(mixer.permutation(len(labels))).to(self.device)
            bands = lam * bands + (1 - lam) * bands[perm]
            gcc = lam * gcc + (1 - lam) * gcc[perm]
            tokens = lam * tokens + (1 - lam) * tokens[perm]
        loss = model(bands, gcc, tokens, conditions, labels, domains, perm, lam,
                     autocast=self.device.type == "cuda").mean()
        optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()  # weight 0: a DistributedSampler padding repeat, run only to keep ranks in step
        optimizer.step()
        return float(loss.detach())

    def _train(self, machine: str, train: ClipSet, stores, folder: Path, what: str = "") -> None:
        """The machine's training loop; under torchrun each rank takes every world-th batch (DDP).

        Writes the model file and its per-epoch resume file into folder; `what` names a fold network in logs."""
        cfg, world = self.config, self._world
        group_index = np.array([self.groups.of(c) for c in train.clips], dtype=np.int64)
        conditions_of = np.array(self.groups.conditions, dtype=np.int64)[group_index]
        domain_of = conditions_of[:, 0]
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
            torch.manual_seed(cfg.seed)
            self.model = self.new_model()
        model = distributed_model(self.model, self.device, world)
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        key = {"config": dict(self.global_config()), "beats": self.backbone.fingerprint, "layer": self.layer,
               "groups": self.groups.to_dict(), "clips": [str(c.path) for c in train.clips]}
        training = Training(folder / RESUME_FILE, key, self.model.state_dict, self.model.load_state_dict, optimizer,
                            epochs=cfg.epochs, patience=None, context=self.context, label=f"proto: {machine}{what}",
                            world=world, fits=cfg.folds + 1 if what else 1)  # fold networks first, then the final one
        family = "ArcFace + center loss" if self.groups.visible else "contrastive + domain cross-entropy"
        if world.is_main:
            self.context.stage(f"training{what}: {len(train)} clips, {len(self.groups.names)} groups, {family}, "
                               f"{cfg.epochs} epochs, {world.size} process(es)")

        def epoch(n: int) -> Epoch:
            self.model.train()
            mixer = np.random.default_rng([cfg.seed, n, 1, world.rank])
            batches = self._epoch_batches(train, n)
            positions, local = rank_batches(batches, world)
            training.steps_in_epoch(len(local))  # the CPU estimate's steps per epoch (asdx.systems._training)
            total = torch.zeros((2,), dtype=torch.float64, device=self.device)  # loss sum, clips
            for q, (indices, bands, gcc, tokens) in zip(positions, self._inputs(*stores, local)):
                real = q < len(batches)
                loss = self._train_step(model, optimizer, bands, gcc, tokens,
                                        torch.from_numpy(group_index[indices]).to(self.device),
                                        torch.from_numpy(domain_of[indices]).to(self.device),
                                        torch.from_numpy(conditions_of[indices]).to(self.device), mixer,
                                        weight=1.0 if real else 0.0)
                if real:
                    total += torch.tensor([loss * len(indices), len(indices)], dtype=torch.float64,
                                          device=self.device)
            summed_over_ranks(total, world)
            mean_loss = float(total[0] / total[1].clamp(min=1))
            return Epoch({"train_loss": mean_loss}, f"loss {mean_loss:.3f}")

        outcome = training.run(epoch)
        self.epochs_run += outcome.epochs_run
        self.history = outcome.history
        training.finish(lambda: save_model_file(
            folder / MODEL_FILE, MODEL_FORMAT,
            {"machine": machine, "groups": self.groups.to_dict(), "beats": self.backbone.describe(self.layer),
             "config": dict(self.global_config()), "model": self.model.state_dict(), "history": self.history}))

    # ------------------------------------------------------------------ embeddings and scores
    @torch.no_grad()
    def embed_per_group(self, stores, clips: ClipSet) -> np.ndarray:
        """(N, G, 256) normalised embeddings of every clip under every group's FiLM condition."""
        self.model.eval()
        conditions = torch.tensor(self.groups.conditions, dtype=torch.long, device=self.device)
        out = np.zeros((len(clips), len(self.groups.names), self.model.net.config.embedding_dim), dtype=np.float64)
        batches = length_batches(np.arange(len(clips)), clips.cropped_lengths, self.config.embed_batch_size)
        for indices, bands, gcc, tokens in self._inputs(*stores, batches):
            for g in range(len(self.groups.names)):
                domain = conditions[g, 0].expand(len(indices))
                attribute = conditions[g, 1].expand(len(indices))
                with self.backbone.autocast():
                    embedding = self.model.net(bands, gcc, tokens, domain, attribute).float()
                out[indices, g] = F.normalize(embedding, dim=1).cpu().numpy()
        return out

    def fit_machine(self, machine: str, train: ClipSet, folder: Path) -> MachineScores:
        """Trains the machine's model, fits the group prototypes; honest (leave-one-out prototype) train scores.

        Under torchrun every rank trains the model (DDP) and computes the same scores; rank 0 alone writes files.
        """
        self.check_training_clips(machine, train.clips)
        folder = Path(folder)
        world = self._world = distributed.world()  # reset after training: rank 0 alone scores the test clips
        if world.is_main:
            folder.mkdir(parents=True, exist_ok=True)
        self.load_backbone()
        self.groups = Groups.from_clips(train.clips)
        how = (f"groups domain x {self.groups.key} ({len(self.groups.names)})" if self.groups.visible
               else "hidden or single-valued attributes: domain-only groups")
        self.context.note(f"proto: {machine}: {how}.")
        stores = filled_per_node(lambda: self.feature_stores(train, folder), world)
        folds = self._fold_networks(machine, train, stores, folder) if self.config.threshold_scores == "kfold" \
            else None
        self._train(machine, train, stores, folder)
        self._world = distributed.World()
        self.prototypes, distances = self._fit_prototypes(stores, train)
        if world.is_main:
            save_state(folder / PROTOTYPES_FILE, PROTOTYPES_FORMAT, self.prototypes)
        self._folder = folder
        scores = proto_min(self.prototypes, distances)
        honest = scores.scores
        if folds is not None:  # each fold network's held-out scores on the final network's scale
            honest, self.out_of_fold_raw_ = folds.pooled(scores.scores)
            scores.sub_scores["held_out_score"] = honest
        self.held_out_scores_ = honest
        target = np.array([c.domain == "target" for c in train.clips])
        scores.threshold_scores = balance_domains(honest, target) if self.config.balance_domains else honest
        return scores

    def _fold_networks(self, machine: str, train: ClipSet, stores, folder: Path) -> CrossFit:
        """threshold_scores=kfold (cross_fit): fold network k, trained by the same recipe (the final network's
        groups and seed) on the clips outside fold k, scores its fold against the prototypes of its own
        training clips; its leave-one-out scores of those clips are the alignment's reference.

        Each fold trains in <folder>/fold<k> (resumable per epoch, like the final network); once scored, its
        results are kept in fold<k>/held_out.npz (a rerun skips a finished fold) and its model file is deleted.
        Under torchrun every rank trains and scores alike; rank 0 writes.
        """
        world = self._world

        def fit_and_score(k: int, held: np.ndarray, kept: np.ndarray):
            fold_folder = folder / f"fold{k}"
            key = digest({"config": {c: v for c, v in vars(self.config).items()
                                     if c not in self.per_machine_config_fields},
                          "beats": self.backbone.fingerprint, "layer": self.layer, "groups": self.groups.to_dict(),
                          "held": [str(train.clips[i].path) for i in held],
                          "kept": [str(train.clips[i].path) for i in kept]})
            done = distributed.broadcast_object(_read_fold(fold_folder / FOLD_FILE, key) if world.is_main else None)
            if done is None:
                if world.is_main:
                    fold_folder.mkdir(parents=True, exist_ok=True)
                kept_stores = tuple(s.subset(kept) for s in stores)
                self._train(machine, train.subset(kept), kept_stores, fold_folder,
                            what=f" fold {k + 1}/{self.config.folds}")
                done = FoldResult(key, *self._score_fold(train, stores, held, kept))
                if world.is_main:
                    save_state(fold_folder / FOLD_FILE, FOLD_FORMAT, done)
                    (fold_folder / MODEL_FILE).unlink(missing_ok=True)
            return done.raw, done.reference

        return cross_fit([c.domain for c in train.clips], self.config.folds, self.config.seed, fit_and_score)

    def _score_fold(self, train: ClipSet, stores, held: np.ndarray, kept: np.ndarray):
        """The fold network (self.model now): prototypes of its kept clips; (its scores of the held-out clips,
        its leave-one-out scores of the kept ones)."""
        prototypes, reference = self._fit_prototypes(tuple(s.subset(kept) for s in stores), train.subset(kept))
        held_stores = tuple(s.subset(held) for s in stores)
        raw = prototypes.distances(self.embed_per_group(held_stores, train.subset(held))).min(axis=1)
        return raw, reference.min(axis=1)

    def _fit_prototypes(self, stores, clips: ClipSet) -> tuple[Prototypes, np.ndarray]:
        """The current network's prototypes of these clips and their (N, G) distances, leave-one-out."""
        per_group = self.embed_per_group(stores, clips)
        own = np.array([self.groups.of(c) for c in clips.clips], dtype=np.int64)
        prototypes = Prototypes.fit(self.groups.names, per_group[np.arange(len(own)), own], own)
        return prototypes, prototypes.distances(per_group, own)

    def score_machine(self, test: ClipSet) -> MachineScores:
        if self.prototypes is None:
            raise RuntimeError("proto: no prototypes yet; call fit_machine (or load_machine) first.")
        if len(test) == 0:
            return MachineScores(np.zeros(0))
        per_group = self.embed_per_group(self.feature_stores(test, self._folder), test)
        return proto_min(self.prototypes, self.prototypes.distances(per_group))

    def load_machine(self, folder: Path) -> Prototypes:
        """Restores the model and prototypes fit_machine wrote."""
        folder = Path(folder)
        path = folder / MODEL_FILE
        payload = load_model_file(path, MODEL_FORMAT, "proto model", "fit_machine")
        self.load_backbone().check_trained_on(path, payload["beats"], self.layer, "model")
        check_same_config(path, payload["config"], self.global_config(), "model")
        self.groups = Groups.from_dict(payload["groups"])
        with torch.random.fork_rng(devices=[]):  # the weights come from the file; the global RNG stays untouched
            self.model = self.new_model()
        self.model.load_state_dict(payload["model"])
        self.history = list(payload["history"])
        self.prototypes = load_state(Prototypes, folder / PROTOTYPES_FILE, PROTOTYPES_FORMAT, "proto prototypes file",
                                     "fit_machine")
        self._folder = folder
        return self.prototypes


__all__ = ["Groups", "ProtoConfig", "ProtoSystem", "attribute_key", "proto_min"]
