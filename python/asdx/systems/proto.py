"""P_proto: stereo CNN + frozen BEATs, SGFF fusion, FiLM + Conformer, prototype scoring (proto_min).

The report "Four systems for noise-aware unsupervised anomalous sound detection in DCASE 2026
Task 2", § 2.2 ("Tsz_DCASE_task2.1"), the only system that listens to both microphones. fit_machine
trains one network per machine (asdx.models.proto_net.ProtoNet) on the cached stereo features and
BEATs tokens of its train clips, then fits one prototype per group, (domain, attribute value) or
domain. A clip is embedded under each group's FiLM condition; its score is the smallest distance
to a prototype, with a train clip left out of its own group's. Under torchrun every rank trains
(DDP) and rank 0 alone writes files. Steps, defaults and departures from the report:
docs/systems/proto.md.

Threshold scores (threshold_scores, docs/threshold_scores.md): by default ("kfold") `folds` extra
networks, each trained without one domain-stratified fold, score their fold against their own clips'
prototypes; the scores are put on the final network's scale and the target ones repeated to weigh as
the source ones. "loo" takes the final network's leave-one-out distances (optimistic).

Files: fit_machine writes `<folder>/proto_model.pt` (and `proto_model.resume.pt` after each epoch until
it finishes), `<folder>/proto_prototypes.npz` and, with kfold, `<folder>/fold<k>/held_out.npz` (a fold
network's scores; a rerun skips finished folds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asdx import distributed
from asdx.data.loader import ClipSet
from asdx.models.heads import ArcFace, CenterLoss
from asdx.models.proto_net import ProtoNet, ProtoNetConfig
from asdx.systems._beats import Backbone, cache_root, filled_per_node
from asdx.systems._features import FeatureStore, length_batches, store_batches
from asdx.systems._files import check_same_config, load_arrays, load_model_file, save_arrays, save_model_file
from asdx.systems._stereo import STEREO, StereoFeatures
from asdx.systems._threshold_scores import align_scores, balance_domains, stratified_folds
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


# ----------------------------------------------------------------------------- losses
def supervised_contrastive(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Khosla et al. 2020 (SupCon, L_out): pull same-label clips together on the sphere, push the others away."""
    z = F.normalize(embeddings, dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, -1e9)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    counts = positives.sum(1)
    has = counts > 0
    if not has.any():
        return embeddings.sum() * 0.0
    mean_log_prob = (log_prob * positives).sum(1)[has] / counts[has]
    return -mean_log_prob.mean()


class ProtoModel(nn.Module):
    """ProtoNet and the training heads of the machine's loss family; forward gives the per-clip loss.

    The loss is computed inside forward so that DistributedDataParallel, which wraps this module,
    averages the heads' gradients along with the network's.
    """

    def __init__(self, net_config: ProtoNetConfig, groups: Groups, config: ProtoConfig):
        super().__init__()
        self.net = ProtoNet(net_config)
        self.visible = groups.visible
        self.center_weight, self.temperature, self.domain_weight = (config.center_weight, config.temperature,
                                                                    config.domain_weight)
        dim = net_config.embedding_dim
        if groups.visible:
            self.arcface = ArcFace(dim, len(groups.names), s=config.arcface_s, m=config.arcface_m)
            self.center = CenterLoss(len(groups.names), dim)
        else:
            self.domain_head = nn.Linear(dim, 2)

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """Per-clip loss (B,) of the machine's family (a batch-level term is spread over the clips)."""
        if self.visible:
            centre = self.center(F.normalize(embeddings, dim=1), labels)
            return self.arcface.loss(embeddings, labels, reduction="none") + self.center_weight * centre
        contrastive = supervised_contrastive(embeddings, domains, self.temperature)
        cross_entropy = F.cross_entropy(self.domain_head(embeddings), domains, reduction="none")
        return contrastive + self.domain_weight * cross_entropy

    def forward(self, bands, gcc, tokens, conditions, labels, domains, perm=None, lam: float = 1.0,
                autocast: bool = False) -> torch.Tensor:
        with torch.autocast(device_type=bands.device.type, dtype=torch.bfloat16, enabled=autocast):
            embeddings = self.net(bands, gcc, tokens, conditions[:, 0], conditions[:, 1]).float()
        loss = self.loss(embeddings, labels, domains)
        if perm is not None:  # mixup: the losses of both sources, weighted by lambda
            loss = lam * loss + (1 - lam) * self.loss(embeddings, labels[perm], domains[perm])
        return loss


# ----------------------------------------------------------------------------- prototypes
@dataclass
class Prototypes:
    """Group means of the normalised train embeddings, with each group's size for the leave-one-out form."""

    names: list[str]
    means: np.ndarray   # (G, D)
    counts: np.ndarray  # (G,)

    @classmethod
    def fit(cls, names: list[str], embeddings: np.ndarray, groups: np.ndarray) -> "Prototypes":
        """A group without clips (a fold network's, when its clips are all held out) has no prototype: its
        mean is NaN and every distance to it inf."""
        counts = np.bincount(groups, minlength=len(names))
        means = np.stack([embeddings[groups == g].mean(axis=0) if counts[g] else
                          np.full(embeddings.shape[1], np.nan) for g in range(len(names))])
        return cls(list(names), means, counts)

    def distances(self, per_group: np.ndarray, own: np.ndarray | None = None) -> np.ndarray:
        """per_group (N, G, D): each clip embedded under each group's condition -> (N, G) L2 distances.

        own (train clips): a clip's own group uses the mean without it, (n p - e) / (n - 1); a
        group of one clip has no such mean, so that entry is inf.
        """
        centres = np.broadcast_to(self.means, per_group.shape).copy()
        if own is not None:
            rows = np.arange(len(own))
            n = self.counts[own].astype(np.float64)[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                centres[rows, own] = (n * self.means[own] - per_group[rows, own]) / (n - 1)
        out = np.linalg.norm(per_group - centres, axis=2)
        if own is not None:
            out[np.arange(len(own)), own] = np.where(self.counts[own] > 1, out[np.arange(len(own)), own], np.inf)
        out[:, self.counts == 0] = np.inf
        return out

    def scores(self, distances: np.ndarray) -> MachineScores:
        nearest = np.argmin(distances, axis=1)
        columns = {"nearest_group": nearest.astype(np.float64)}
        columns.update({f"distance[{name}]": distances[:, g] for g, name in enumerate(self.names)})
        return MachineScores(distances[np.arange(len(distances)), nearest], columns)


# ----------------------------------------------------------------------------- fold networks
FOLD_FILE = "held_out.npz"
FOLD_FORMAT = "asdx.proto.fold/1"


def _store_subset(store: FeatureStore, indices: np.ndarray) -> FeatureStore:
    """The store of some of its clips, in the order of indices (features held in RAM stay shared)."""
    subset = FeatureStore(store.cache, [], None if store.held is None else [store.held[i] for i in indices])
    subset.paths = [store.paths[i] for i in indices]
    return subset


def _read_fold(path: Path, key: str) -> dict | None:
    """A finished fold's results, or None (absent, unreadable, or from other settings or clips)."""
    try:
        data = load_arrays(path, FOLD_FORMAT, "proto fold result", "fit_machine")
    except (OSError, ValueError):
        return None
    if str(data.get("key")) != key:
        return None
    return {"raw": data["raw"], "reference": data["reference"]}


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
                                     "proto")
            self.layer = backbone.resolve_layer(self.config.layer)
            self.backbone = backbone
            cues = "on" if self.config.use_spatial else "OFF"
            self.context.note(f"proto: BEATs {backbone.source}, layer {self.layer}, frozen, near channel; stereo CNN "
                              f"({self.config.size} config, spatial cues {cues}).")
        return self.backbone

    def net_config(self, groups: Groups) -> ProtoNetConfig:
        make = ProtoNetConfig.full if self.config.size == "full" else ProtoNetConfig.tiny
        return make(beats_dim=self.backbone.cfg.encoder_embed_dim, n_attributes=1 + len(groups.values),
                    use_spatial=self.config.use_spatial, max_lag=float(STEREO["max_lag"]))

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
            self.model = ProtoModel(self.net_config(self.groups), self.groups, cfg).to(self.device)
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
        per_group = self.embed_per_group(stores, train)
        own = np.array([self.groups.of(c) for c in train.clips], dtype=np.int64)
        self.prototypes = Prototypes.fit(self.groups.names, per_group[np.arange(len(own)), own], own)
        if world.is_main:
            self._save_prototypes(folder)
        self._folder = folder
        scores = self.prototypes.scores(self.prototypes.distances(per_group, own))
        honest = scores.scores
        if folds is not None:  # each fold network's held-out scores on the final network's scale
            honest = np.full(len(train), np.nan)
            self.out_of_fold_raw_ = np.full(len(train), np.nan)
            for fold in folds:
                honest[fold["held"]] = align_scores(fold["raw"], fold["reference"], scores.scores[fold["kept"]])
                self.out_of_fold_raw_[fold["held"]] = fold["raw"]
            scores.sub_scores["held_out_score"] = honest
        self.held_out_scores_ = honest
        target = np.array([c.domain == "target" for c in train.clips])
        scores.threshold_scores = balance_domains(honest, target) if self.config.balance_domains else honest
        return scores

    def _fold_networks(self, machine: str, train: ClipSet, stores, folder: Path) -> list[dict]:
        """threshold_scores=kfold: for each of `folds` domain-stratified clip folds, a network trained by the same
        recipe on the other folds' clips (the final network's groups and seed) scores its fold against the
        prototypes of its own training clips. Returns per fold the held-out and kept clip indices, the raw
        held-out scores and the reference: the fold network's leave-one-out scores of its kept clips.

        Each fold trains in <folder>/fold<k> (resumable per epoch, like the final network); once scored, its
        results are kept in fold<k>/held_out.npz (a rerun skips a finished fold) and its model file is deleted.
        Under torchrun every rank trains and scores alike; rank 0 writes.
        """
        world = self._world
        domains = np.array([c.domain for c in train.clips])
        fold_of = stratified_folds(domains, self.config.folds, self.config.seed)
        results = []
        for k in range(self.config.folds):
            held, kept = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
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
                kept_stores = tuple(_store_subset(s, kept) for s in stores)
                self._train(machine, train.subset(kept), kept_stores, fold_folder,
                            what=f" fold {k + 1}/{self.config.folds}")
                done = self._score_fold(train, stores, held, kept)
                if world.is_main:
                    save_arrays(fold_folder / FOLD_FILE, FOLD_FORMAT, {"key": np.array(key), **done})
                    (fold_folder / MODEL_FILE).unlink(missing_ok=True)
            results.append({"held": held, "kept": kept, "raw": done["raw"], "reference": done["reference"]})
        return results

    def _score_fold(self, train: ClipSet, stores, held: np.ndarray, kept: np.ndarray) -> dict:
        """The fold network (self.model now): prototypes of its kept clips; its scores of the held-out clips
        and its leave-one-out scores of the kept ones."""
        kept_clips, kept_stores = train.subset(kept), tuple(_store_subset(s, kept) for s in stores)
        held_clips, held_stores = train.subset(held), tuple(_store_subset(s, held) for s in stores)
        per_group = self.embed_per_group(kept_stores, kept_clips)
        own = np.array([self.groups.of(c) for c in kept_clips.clips], dtype=np.int64)
        prototypes = Prototypes.fit(self.groups.names, per_group[np.arange(len(own)), own], own)
        reference = prototypes.distances(per_group, own).min(axis=1)
        raw = prototypes.distances(self.embed_per_group(held_stores, held_clips)).min(axis=1)
        return {"raw": raw, "reference": reference}

    def score_machine(self, test: ClipSet) -> MachineScores:
        if self.prototypes is None:
            raise RuntimeError("proto: no prototypes yet; call fit_machine (or load_machine) first.")
        if len(test) == 0:
            return MachineScores(np.zeros(0))
        per_group = self.embed_per_group(self.feature_stores(test, self._folder), test)
        return self.prototypes.scores(self.prototypes.distances(per_group))

    def _save_prototypes(self, folder: Path) -> Path:
        return save_arrays(Path(folder) / PROTOTYPES_FILE, PROTOTYPES_FORMAT,
                           {"names": np.array(self.prototypes.names), "means": self.prototypes.means,
                            "counts": self.prototypes.counts})

    def load_machine(self, folder: Path) -> Prototypes:
        """Restores the model and prototypes fit_machine wrote."""
        folder = Path(folder)
        path = folder / MODEL_FILE
        payload = load_model_file(path, MODEL_FORMAT, "proto model", "fit_machine")
        self.load_backbone().check_trained_on(path, payload["beats"], self.layer, "model")
        check_same_config(path, payload["config"], self.global_config(), "model")
        self.groups = Groups.from_dict(payload["groups"])
        with torch.random.fork_rng(devices=[]):  # the weights come from the file; the global RNG stays untouched
            self.model = ProtoModel(self.net_config(self.groups), self.groups, self.config).to(self.device)
        self.model.load_state_dict(payload["model"])
        self.history = list(payload["history"])
        arrays = load_arrays(folder / PROTOTYPES_FILE, PROTOTYPES_FORMAT, "proto prototypes file", "fit_machine")
        self.prototypes = Prototypes([str(n) for n in arrays["names"]], arrays["means"], arrays["counts"])
        self._folder = folder
        return self.prototypes


__all__ = ["Groups", "ProtoConfig", "ProtoModel", "ProtoSystem", "Prototypes", "attribute_key",
           "supervised_contrastive"]
