"""T_fusion: BEATs with the top blocks fine-tuned, GeM, ArcFace on composite labels; kNN + GMM, rank-min fusion.

The report "Four systems for noise-aware unsupervised anomalous sound detection in DCASE 2026
Task 2", § 2.3 ("Tsz_DCASE_task2_fusion"). fit_global fine-tunes the top `finetune_blocks` BEATs
blocks (the frozen blocks below run once per clip, cached) with GeM and ArcFace on the dev machines'
train clips, keeping the epoch of the best dev Ω; under torchrun every rank runs it (DDP, see
FusionSystem._epoch) and rank 0 alone evaluates and writes. Per machine, FusionScorer ranks a clip's
per-domain kNN distance and GMM negative log-likelihood among the machine's honest train scores and
fuses the ranks by their minimum. Steps, defaults and departures from the report: docs/systems/fusion.md.

Files: fit_global writes `<folder>/fusion_model.pt` and `fusion_model.resume.pt` after every epoch until
it finishes; fit_machine writes `<folder>/fusion_machine.npz`.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from asdx import distributed
from asdx.data.loader import ClipSet
from asdx.index import faiss_gpu_available
from asdx.metrics import machine_metrics, official_score
from asdx.models.heads import ArcFace, GeMPooling
from asdx.scoring._domains import DOMAINS
from asdx.scoring.fusion import RankMap, exceedance_to_rank
from asdx.scoring.gmm import DiagGMMScorer, gmm_diag_loglik
from asdx.scoring.knn import KNNScorer
from asdx.systems._beats import REPORT, Backbone, cache_root, filled_per_node
from asdx.systems._features import length_batches, split_validation, store_batches
from asdx.systems._files import check_same_config, load_model_file, load_state, save_model_file, save_state
from asdx.systems._stereo import view_channels
from asdx.systems._training import Epoch, Training, distributed_model, rank_batches, summed_over_ranks
from asdx.systems.base import MachineScores, System, SystemContext
from asdx.systems.configs import FUSION_CHECKPOINT_NAME, FusionConfig

MODEL_FILE = "fusion_model.pt"
RESUME_FILE = "fusion_model.resume.pt"
MACHINE_FILE = "fusion_machine.npz"
MODEL_FORMAT = "asdx.fusion.model/2"  # /2: the BEATs record names the trunk's layer as sera's and proto's do
MACHINE_FORMAT = "asdx.fusion.machine/2"
# A diagonal GMM in hundreds of dimensions gets an ever better likelihood from components that collapse onto a
# few clips, and BIC on small banks rewards that (15 clips of 64-d: K = 8, out-of-fold NLLs far above the test
# NLLs). At least this many clips per component, in every fold's fit, keeps K honest; DCASE banks (~1000 clips)
# are not limited by it.
MIN_CLIPS_PER_COMPONENT = 10
SUB_SCORES = ("knn_source_distance", "knn_target_distance", "gmm_nll", "knn_rank", "gmm_rank", "fused_rank")


# ----------------------------------------------------------------------------- labels
def composite_label(clip) -> str:
    """machine | section | domain | visible attributes (the report §2.3); hidden attributes add nothing."""
    parts = [clip.machine, f"section_{clip.section}", str(clip.domain)]
    if not clip.hidden_attributes:
        parts += [f"{key}={value}" for key, value in sorted(clip.attributes.items())]
    return "|".join(parts)


def composite_classes(clips: Sequence) -> list[str]:
    return sorted({composite_label(clip) for clip in clips})


# ----------------------------------------------------------------------------- the network
class FusionNet(nn.Module):
    """Trunk states (B, N, C) after block `start` -> BEATs blocks start+1..N -> GeM -> embedding (B, C).

    forward(trunk, labels) gives the per-clip ArcFace loss (the DDP-wrapped call);
    embed(trunk) the clip embedding. Only the top blocks and ArcFace have gradients.
    """

    def __init__(self, beats, start: int, n_classes: int, gem_p: float, s: float, m: float):
        super().__init__()
        self.beats = beats
        self.start = int(start)
        self.gem = GeMPooling(gem_p)
        self.arcface = ArcFace(beats.cfg.encoder_embed_dim, n_classes, s=s, m=m)

    def embed(self, trunk: torch.Tensor) -> torch.Tensor:
        return self.gem(self.beats.encoder.forward_layers(trunk, self.start))

    def forward(self, trunk: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.arcface.loss(self.embed(trunk).float(), labels, reduction="none")

    def tuned_state(self) -> dict[str, torch.Tensor]:
        """CPU copies of the trained parameters (top blocks, ArcFace): what the model file holds."""
        return {name: p.detach().cpu().clone() for name, p in self.named_parameters() if p.requires_grad}

    def load_tuned_state(self, state: dict[str, torch.Tensor]) -> None:
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(f"fusion model: parameters do not match (missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]}); was it trained with another finetune_blocks or BEATs?")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state[name].to(p.device, p.dtype))


def spec_augment(fbank: torch.Tensor, generator: torch.Generator, masks: int = 2, max_bins: int = 16,
                 max_frames: int = 40) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) on a normalised fbank (B, T, F): masked cells become 0, the mean."""
    out = fbank.clone()
    b, t, f = out.shape
    for row in range(b):
        for _ in range(masks):
            width = int(torch.randint(0, max_bins + 1, (), generator=generator))
            low = int(torch.randint(0, max(f - width, 0) + 1, (), generator=generator))
            out[row, :, low : low + width] = 0.0
            length = int(torch.randint(0, min(max_frames, t) + 1, (), generator=generator))
            first = int(torch.randint(0, max(t - length, 0) + 1, (), generator=generator))
            out[row, first : first + length, :] = 0.0
    return out


# ----------------------------------------------------------------------------- per-machine scoring
@dataclass
class FusionScorer:
    """One machine's scoring state: the normalised embeddings with their domains, the GMM, the honest train scores.

    Sub-scores: knn_source_distance, knn_target_distance (raw; NaN where the machine has no train
    clip of that domain), gmm_nll (raw), knn_rank, gmm_rank, fused_rank. Each raw score goes through
    a RankMap of its honest references onto e = -log(1 - rank) (the kNN per domain, then the minimum
    over the domains); the score is min(e_knn, e_gmm) = -log(1 - fused_rank).
    """

    machine: str
    knn_k: int
    knn_metric: str
    rank_norm: str
    bank: np.ndarray            # (N, D) L2-normalised train embeddings
    domains: np.ndarray         # (N,) "source" / "target" of each bank row
    gmm_weights: np.ndarray
    gmm_means: np.ndarray
    gmm_variances: np.ndarray
    knn_train: np.ndarray       # (N, 2) distance to the source / target bank, leave-one-out in the clip's own bank
    gmm_train: np.ndarray       # (N,) out-of-fold NLLs

    @classmethod
    def fit(cls, machine: str, embeddings: np.ndarray, domains: Sequence[str], config: FusionConfig,
            seed: int = 0) -> tuple["FusionScorer", MachineScores, dict]:
        bank = normalise(embeddings)
        domains = np.asarray([str(d) for d in domains])
        if len(domains) != len(bank):
            raise ValueError(f"{machine}: {len(domains)} domain labels for {len(bank)} train embeddings.")
        check_domains(machine, domains, config.knn_k)
        n = len(bank)
        # per-domain columns, leave-one-out in a clip's own bank: never a clip's own neighbour
        knn_train = knn_scorer(config.knn_k, config.knn_metric).fit(bank, domain=domains).train_domain_distances_
        folds = min(config.gmm_folds, n)
        largest = max(1, (n - math.ceil(n / folds)) // MIN_CLIPS_PER_COMPONENT)  # fits in every fold's rows
        if config.gmm_components is None:
            components, max_components = "bic", min(config.gmm_max_components, largest)
        else:
            components, max_components = int(config.gmm_components), config.gmm_max_components
            if components > 1 and components * MIN_CLIPS_PER_COMPONENT > n - math.ceil(n / folds):
                raise ValueError(f"{machine}: gmm_components={components} needs {MIN_CLIPS_PER_COMPONENT} train "
                                 f"clips per component in each of the {folds} folds' fits, but the bank has {n} "
                                 f"clips; use fewer components (or leave gmm_components unset for BIC).")
        gmm = DiagGMMScorer(n_components=components, max_components=max_components, random_state=seed,
                            n_splits=folds).fit(bank, domain=domains)  # domain: stratified folds
        gmm_train = gmm.train_scores_  # out-of-fold
        state = cls(machine, config.knn_k, config.knn_metric, config.rank_norm, bank.astype(np.float32), domains,
                    gmm.weights_, gmm.means_, gmm.variances_, knn_train, gmm_train)
        info = {"gmm_components": int(gmm.n_components_), "gmm_bic": {int(k): float(v) for k, v in gmm.bic_.items()}}
        return state, state._fuse(knn_train, gmm_train, train=True), info

    def score(self, embeddings: np.ndarray) -> MachineScores:
        queries = normalise(embeddings)
        if len(queries) == 0:
            return self._fuse(np.full((0, len(DOMAINS)), np.nan), np.zeros(0))
        knn = knn_scorer(self.knn_k, self.knn_metric).fit(self.bank, domain=self.domains).domain_distances(queries)
        gmm_nll = -np.asarray(gmm_diag_loglik(queries, self.gmm_weights, self.gmm_means, self.gmm_variances))
        return self._fuse(knn, gmm_nll)

    def _fuse(self, knn: np.ndarray, gmm: np.ndarray, train: bool = False) -> MachineScores:
        """knn (N, 2) per-domain distances, gmm (N,) NLLs -> the ranks, their minimum and the score."""
        present = [column for column, domain in enumerate(DOMAINS) if (self.domains == domain).any()]
        if len(gmm) == 0:
            knn_e = gmm_e = np.zeros(0)
        elif self.rank_norm == "transductive" and not train:  # within the scored set itself
            knn_e = np.min([RankMap(knn[:, c]).exceedance(knn[:, c]) for c in present], axis=0)
            gmm_e = RankMap(gmm).exceedance(gmm)
        else:  # inductive; for the train clips both forms rank within the honest train scores
            knn_e = np.min([RankMap(self.knn_train[self.domains == DOMAINS[c], c]).exceedance(knn[:, c])
                            for c in present], axis=0)
            gmm_e = RankMap(self.gmm_train).exceedance(gmm)
        fused = np.minimum(knn_e, gmm_e)
        return MachineScores(fused, {"knn_source_distance": knn[:, 0], "knn_target_distance": knn[:, 1],
                                     "gmm_nll": gmm, "knn_rank": exceedance_to_rank(knn_e),
                                     "gmm_rank": exceedance_to_rank(gmm_e), "fused_rank": exceedance_to_rank(fused)})

    def save(self, path: Path) -> Path:
        return save_state(path, MACHINE_FORMAT, self)

    @classmethod
    def load(cls, path: Path) -> "FusionScorer":
        return load_state(cls, path, MACHINE_FORMAT, "fusion machine state", "fit_machine")


def check_domains(machine: str, domains: np.ndarray, knn_k: int) -> None:
    """Every train clip is source or target; a domain present needs more than knn_k clips for leave-one-out."""
    unknown = sorted(set(np.asarray(domains).tolist()) - set(DOMAINS))
    if unknown:
        raise ValueError(f"{machine}: train clips with domain {unknown}; every train clip must be source or target.")
    for domain in DOMAINS:
        count = int(np.sum(np.asarray(domains) == domain))
        if 0 < count <= knn_k:
            raise ValueError(f"{machine}: {count} {domain}-domain train clip(s); fusion ranks each clip against "
                             f"per-domain kNN banks, whose leave-one-out scores need more than knn_k={knn_k} clips "
                             "in each domain present.")


def knn_scorer(k: int, metric: str) -> KNNScorer:
    """The kNN scorer on a FAISS GPU index when faiss-gpu sees a GPU (asdx[gpu]), else on the CPU bank."""
    return KNNScorer(k=k, metric=metric, device="cuda" if faiss_gpu_available() else None)


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Unit-length rows (ArcFace embeddings live on the sphere); a zero row stays zero."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def dev_omega(embed_train: dict[str, np.ndarray], embed_test: dict[str, np.ndarray], test_clips: dict[str, list],
              k: int, metric: str) -> tuple[float, dict[str, float]]:
    """Official score Ω of kNN-scored dev test clips (asdx.metrics), and each machine's own Ω."""
    per_machine, machines = {}, []
    for machine, test in embed_test.items():
        scores = knn_scorer(k, metric).fit(normalise(embed_train[machine])).score_samples(normalise(test))
        clips = test_clips[machine]
        labels = np.array([clip.label == "anomaly" for clip in clips], dtype=np.int8)
        domains = np.array([clip.domain == "target" for clip in clips], dtype=np.int8)
        metrics = machine_metrics(labels, scores, domains, np.zeros(len(clips), dtype=np.int8))
        machines.append(metrics)
        per_machine[machine] = official_score([metrics])
    return official_score(machines), per_machine


def scorable_for_omega(clips: Sequence) -> bool:
    """Both labels in each domain: the official AUCs and pAUC are defined."""
    seen = {(clip.domain, clip.label) for clip in clips}
    return all((domain, label) in seen for domain in ("source", "target") for label in ("normal", "anomaly"))


# ----------------------------------------------------------------------------- the system
class FusionSystem(System):
    """T_fusion (the report §2.3): fit_global fine-tunes the top blocks; per machine kNN + GMM, rank-min fused.

    After load_backbone: backbone (asdx.systems._beats.Backbone; backbone.forward_batches counts the
    frozen-trunk forward passes), start (the trunk's last block). epochs_run: training epochs run by
    this object. After fit_global / load_global: classes, history, best_epoch, monitor ("dev-omega"
    or "validation-loss").
    """

    name = "fusion"
    uses_global_stage = True
    wants_global_validation = True
    distributed_stage = "global"  # under torchrun every rank runs fit_global (DDP); see asdx.runner._run_as_worker
    per_machine_config_fields = frozenset({"gmm_components", "gmm_max_components", "gmm_folds", "rank_norm",
                                           "device", "embed_batch_size", "feature_memory_mb"})

    def __init__(self, config: FusionConfig | None = None, context: SystemContext | None = None):
        super().__init__(config or FusionConfig(), context)
        self.device = torch.device(self.context.device)
        self.backbone: Backbone | None = None
        self.start: int | None = None
        self.epochs_run = 0
        self.net: FusionNet | None = None
        self.classes: list[str] = []
        self.history: list[dict] = []
        self.best_epoch: int | None = None
        self.monitor: str | None = None
        self.scorer: FusionScorer | None = None
        self._cache_root: Path | None = None
        self._world = distributed.World()  # the process group, inside fit_global only (rank 0 scores alone)

    def global_machines(self, available):
        """The development machines (report: "fine-tuned on all seven development machine types")."""
        dev = [m for m in available if m.dataset == "dev"]
        if not dev:
            self.context.note("fusion: no development machines found; the global model trains on every machine.")
            return list(available)
        return dev

    def prepare(self) -> None:
        self.load_backbone()

    def check_training_clips(self, machine: str, clips) -> None:
        if len(clips) < 2:
            raise ValueError(f"{machine}: {len(clips)} train clip(s); the kNN bank needs 2 for leave-one-out scores.")
        check_domains(machine, np.array([str(clip.domain) for clip in clips]), self.config.knn_k)

    # ------------------------------------------------------------------ backbone and trunk cache
    def load_backbone(self) -> Backbone:
        """Loads BEATs once; freezes all but the top finetune_blocks blocks."""
        if self.backbone is None:
            backbone = Backbone.load(self.config.beats, self.device, self.context,
                                     f"T_fusion uses {FUSION_CHECKPOINT_NAME}, § 2.3 of {REPORT}", "fusion",
                                     wanted="pre-trained", name=FUSION_CHECKPOINT_NAME, view=self.config.view)
            depth, k = backbone.cfg.encoder_layers, int(self.config.finetune_blocks)
            if k > depth:
                self.context.note(f"fusion: finetune_blocks={k}, but this BEATs has {depth} blocks; all {depth} are "
                                  "fine-tuned.")
                k = depth
            backbone.model.unfreeze_top(k).eval()
            for layer in backbone.model.encoder.layers:
                # a key bias adds one constant to every attention score of a query, which softmax ignores: its
                # gradient is 0 and AdamW would only move it by rounding noise, so it stays as loaded
                if layer.self_attn.k_proj.bias is not None:
                    layer.self_attn.k_proj.bias.requires_grad_(False)
            self.backbone, self.start = backbone, depth - k
            self.context.note(f"fusion: BEATs {backbone.source}, top {k} of {depth} blocks fine-tuned, trunk = output "
                              f"of block {self.start}, {self.config.view} view.")
        return self.backbone

    def trunk_store(self, clips: ClipSet, desc: str = "BEATs trunk"):
        """Every clip's trunk states cached (missing ones forwarded); under DDP each node's first rank fills it."""
        stage = self.context.stage if self._world.is_main else (lambda text: None)
        return filled_per_node(lambda: self.backbone.store(clips, self._cache_root, self.start,
                                                           self.config.feature_memory_mb * 2**20,
                                                           self.config.embed_batch_size, stage, desc), self._world)

    # ------------------------------------------------------------------ training
    def _build(self, n_classes: int) -> None:
        cfg = self.config
        with torch.random.fork_rng(devices=[]):  # seeded ArcFace initialisation, global RNG untouched
            torch.manual_seed(cfg.seed)
            self.net = FusionNet(self.backbone.model, self.start, n_classes, cfg.gem_p, cfg.arcface_s, cfg.arcface_m)
        self.net.to(self.device)

    def _micro_batches(self, clips: ClipSet, indices: np.ndarray, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.config.seed, epoch])  # a resumed run sees the same batches
        return length_batches(indices, clips.cropped_lengths, self.config.batch_size, rng)

    def _batches(self, clips: ClipSet, store, batches: list[np.ndarray], augment=None):
        """(indices, trunk states) per batch: from the cache, or from audio through the frozen trunk."""
        if store is not None:
            for indices, tokens in store_batches(store, batches, self.context.workers):
                yield indices, tokens.to(self.device, non_blocking=True).float()
            return
        channels = view_channels(self.config.view)
        for indices, audio in clips.batches(channels, plan=[b.tolist() for b in batches], desc="fusion: audio"):
            yield indices, self.backbone.states(audio, self.start, augment)

    def _epoch(self, model, optimizer, clips: ClipSet, store, batches: list[np.ndarray], targets: np.ndarray,
               epoch: int) -> float:
        """One epoch of optimiser steps; returns the mean per-clip loss over every rank's clips.

        A step covers world x accumulation_steps consecutive micro-batches of the epoch's list; rank r takes
        positions r, r + world, ... (torch's DistributedSampler; its padding repeats get weight 0). Each
        micro-batch's summed loss is scaled by world / (clips in the step), so DDP's gradient average gives
        the mean over the step's clips: the same update as one process accumulating those micro-batches.
        """
        world = self._world
        accumulation = self.config.accumulation_steps
        positions, local = rank_batches(batches, world)
        per_step = world.size * accumulation
        augment = None
        if self.config.spec_augment:
            generator = torch.Generator().manual_seed(int(self.config.seed) * 1_000_003 + epoch * 101 + world.rank)
            augment = lambda fbank: spec_augment(fbank, generator)  # noqa: E731
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        model.train(False)  # eval mode throughout: no dropout or layer drop (docs/systems/fusion.md)
        optimizer.zero_grad(set_to_none=True)
        for p, (indices, trunk) in enumerate(self._batches(clips, store, local, augment)):
            step = positions[p] // per_step
            in_step = [len(b) for b in batches[step * per_step : (step + 1) * per_step]]
            weight = 0.0 if positions[p] >= len(batches) else world.size / sum(in_step)
            last_of_step = (p + 1) % accumulation == 0 or p + 1 == len(local)
            labels = torch.from_numpy(targets[indices]).to(self.device)
            sync = nullcontext() if last_of_step or world.size == 1 else model.no_sync()
            with sync:
                with self.backbone.autocast():
                    per_clip = model(trunk, labels)
                (per_clip.float().sum() * weight).backward()
            if weight:
                loss_sum += per_clip.detach().double().sum()
            if last_of_step:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        summed_over_ranks(loss_sum, world)
        total = sum(len(b) for b in batches)
        return float(loss_sum) / max(total, 1)

    @torch.no_grad()
    def _embed_from(self, clips: ClipSet, store) -> np.ndarray:
        out = np.zeros((len(clips), self.backbone.cfg.encoder_embed_dim), dtype=np.float32)
        batches = length_batches(np.arange(len(clips)), clips.cropped_lengths, self.config.embed_batch_size)
        for indices, trunk in self._batches(clips, store, batches):
            with self.backbone.autocast():
                out[indices] = self.net.embed(trunk).float().cpu().numpy()
        return out

    @torch.no_grad()
    def _validation_loss(self, clips: ClipSet, store, indices: np.ndarray, targets: np.ndarray) -> float:
        total, count = 0.0, 0
        for batch, trunk in self._batches(clips, store, length_batches(indices, clips.cropped_lengths,
                                                                       self.config.embed_batch_size)):
            with self.backbone.autocast():
                total += float(self.net(trunk, torch.from_numpy(targets[batch]).to(self.device)).float().sum())
            count += len(batch)
        return total / max(count, 1)

    def _early_stopping_plan(self, validation: ClipSet | None) -> tuple[str, dict[str, list[int]]]:
        """'dev-omega' with the scorable machines' test-clip indices, or 'validation-loss'."""
        mode = self.config.early_stopping
        groups: dict[str, list[int]] = {}
        if validation is not None:
            for i, clip in enumerate(validation.clips):
                groups.setdefault(clip.machine, []).append(i)
            groups = {m: idx for m, idx in groups.items() if scorable_for_omega([validation.clips[i] for i in idx])}
        if mode == "dev-omega" and not groups:
            raise ValueError("early_stopping=dev-omega: no development machine has labelled test clips of both "
                             "classes in both domains; use early_stopping=validation-loss.")
        if mode == "validation-loss" or not groups:
            if mode == "auto":
                self.context.note("fusion: no development ground truth; early stopping watches the ArcFace loss of "
                                  "a validation split instead of dev Ω.")
            return "validation-loss", {}
        return "dev-omega", groups

    def fit_global(self, train: ClipSet, folder: Path, validation: ClipSet | None = None) -> None:
        """Fine-tunes the top blocks + ArcFace on the dev machines' train clips; writes folder/fusion_model.pt.

        Under torchrun every rank calls this with the same clips; validation holds the dev machines' labelled
        test clips for early stopping on dev Ω (None: validation loss).
        """
        cfg, folder = self.config, Path(folder)
        world = self._world = distributed.world()  # reset at the end: rank 0 alone runs the per-machine stage
        if world.is_main:
            folder.mkdir(parents=True, exist_ok=True)
        self._cache_root = cache_root(self.context, folder, "token_cache")
        if len(train) < 2:
            raise ValueError(f"train: {len(train)} clip(s) for the global stage; ArcFace needs at least 2.")
        backbone = self.load_backbone()
        self.classes = composite_classes(train.clips)
        if len(self.classes) < 2:
            raise ValueError(f"train: one composite class ({self.classes[0]}); ArcFace needs two or more.")
        class_index = {name: i for i, name in enumerate(self.classes)}
        targets = np.array([class_index[composite_label(c)] for c in train.clips], dtype=np.int64)
        self.monitor, omega_groups = self._early_stopping_plan(validation)
        if self.monitor == "dev-omega":
            train_idx, val_idx = np.arange(len(train)), np.zeros(0, dtype=np.int64)
            omega_clips = validation.subset([i for idx in omega_groups.values() for i in idx])
        else:
            train_idx, val_idx = split_validation(train.clips, cfg.validation_fraction, cfg.seed)
            omega_clips = None
            if len(val_idx) == 0:
                self.context.note("fusion: the validation split is empty (every machine/domain group is too small "
                                  "for validation_fraction); early stopping watches the training loss.")
        cached = cfg.cache_trunk and not cfg.spec_augment
        if not cached:
            why = "spec_augment changes the trunk input every epoch" if cfg.spec_augment else "cache_trunk=false"
            self.context.note(f"fusion: {why}; the frozen trunk is recomputed from audio every epoch.")
        store = self.trunk_store(train, "BEATs trunk (global train clips)") if cached else None
        omega_store = self.trunk_store(omega_clips, "BEATs trunk (dev test clips)") \
            if cached and omega_clips is not None else None
        self._build(len(self.classes))
        model = distributed_model(self.net, self.device, world)
        trained = [p for p in self.net.beats.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW([{"params": trained, "lr": cfg.backbone_lr},
                                       {"params": list(self.net.arcface.parameters()), "lr": cfg.lr}],
                                      weight_decay=cfg.weight_decay)
        if world.is_main:
            self.context.stage(f"training: top {backbone.cfg.encoder_layers - self.start} BEATs blocks + ArcFace "
                               f"({len(self.classes)} composite classes) on {len(train_idx)} clips, "
                               f"{world.size} process(es), early stopping on {self.monitor}")
        key = {"config": dict(self.global_config()), "beats": backbone.fingerprint, "start": self.start,
               "classes": self.classes, "clips": [str(c.path) for c in train.clips],
               "validation": [str(c.path) for c in omega_clips.clips] if omega_clips else []}
        training = Training(folder / RESUME_FILE, key, self.net.tuned_state, self.net.load_tuned_state, optimizer,
                            epochs=cfg.epochs, patience=cfg.patience, context=self.context, label="fusion",
                            world=world, steps_per_epoch=-(-len(self._micro_batches(train, train_idx, 0))
                                                           // (world.size * cfg.accumulation_steps)))

        def epoch(n: int) -> Epoch:
            loss = self._epoch(model, optimizer, train, store, self._micro_batches(train, train_idx, n), targets, n)
            record, monitored, shown = {"train_loss": loss}, loss, f"loss {loss:.4f}"
            if world.is_main and self.monitor == "dev-omega":  # rank 0 decides; Training broadcasts it
                omega, per_machine = self._dev_omega(train, store, omega_clips, omega_store)
                record.update(dev_omega=omega, dev_omega_per_machine=per_machine)
                monitored, shown = -omega, f"{shown}, Ω {omega:.4f}"
            elif world.is_main and len(val_idx):
                monitored = record["validation_loss"] = self._validation_loss(train, store, val_idx, targets)
                shown = f"{shown}, validation loss {monitored:.4f}"
            return Epoch(record, shown, monitored)

        outcome = training.run(epoch)
        self.epochs_run += outcome.epochs_run
        self.history, self.best_epoch = outcome.history, outcome.best_epoch
        best = -outcome.best if self.monitor == "dev-omega" else outcome.best
        self.context.note(f"fusion: trained {outcome.epochs} epoch(s) on {len(train_idx)} clips, "
                          f"{len(self.classes)} composite classes, best epoch {self.best_epoch} "
                          f"({self.monitor} {best:.4f}).")
        training.finish(lambda: self._save_model(folder))
        self._world = distributed.World()

    def _dev_omega(self, train: ClipSet, store, omega_clips: ClipSet, omega_store) -> tuple[float, dict]:
        train_embeddings = self._embed_from(train, store)
        test_embeddings = self._embed_from(omega_clips, omega_store)
        machines = sorted({clip.machine for clip in omega_clips.clips})
        bank = {m: train_embeddings[[i for i, c in enumerate(train.clips) if c.machine == m]] for m in machines}
        test_rows = {m: [i for i, c in enumerate(omega_clips.clips) if c.machine == m] for m in machines}
        return dev_omega(bank, {m: test_embeddings[rows] for m, rows in test_rows.items()},
                         {m: [omega_clips.clips[i] for i in rows] for m, rows in test_rows.items()},
                         self.config.knn_k, self.config.knn_metric)

    # ------------------------------------------------------------------ the model file
    def _save_model(self, folder: Path) -> Path:
        return save_model_file(Path(folder) / MODEL_FILE, MODEL_FORMAT,
                               {"config": dict(self.global_config()), "beats": self.backbone.describe(self.start),
                                "classes": list(self.classes), "weights": self.net.tuned_state(),
                                "best_epoch": self.best_epoch, "monitor": self.monitor, "history": self.history})

    def load_global(self, folder: Path) -> None:
        """Restores the model fit_global wrote (checks it was made from this BEATs and config)."""
        path = Path(folder) / MODEL_FILE
        payload = load_model_file(path, MODEL_FORMAT, "fusion model", "fit_global")
        self._cache_root = cache_root(self.context, folder, "token_cache")
        self.load_backbone().check_trained_on(path, payload["beats"], self.start, "model")
        check_same_config(path, payload["config"], self.global_config(), "model")
        self.classes = list(payload["classes"])
        self._build(len(self.classes))
        self.net.load_tuned_state(payload["weights"])
        self.best_epoch, self.monitor = payload["best_epoch"], payload["monitor"]
        self.history = list(payload["history"])
        self.context.note(f"fusion: model loaded from {path} (best epoch {self.best_epoch} of {len(self.history)}, "
                          f"{self.monitor}).")
        if self.monitor == "dev-omega":  # the report's recipe; its dev Ω saw the labels it is computed from
            self.context.note("fusion: early stopping chose the epoch by Ω on the dev machines' labelled test clips "
                              "(the report's recipe), so Ω on those dev machines is optimistic.")

    # ------------------------------------------------------------------ per-machine stage
    def embed(self, clips: ClipSet) -> np.ndarray:
        """(N, C) float32 GeM embeddings of the fine-tuned model (trunk states from the cache)."""
        if self.net is None:
            raise RuntimeError("fusion: no model yet; call fit_global(train, folder) or load_global(folder) first.")
        if len(clips) == 0:
            return np.zeros((0, self.backbone.cfg.encoder_embed_dim), dtype=np.float32)
        return self._embed_from(clips, self.trunk_store(clips, f"BEATs trunk ({clips.label})"))

    def fit_machine(self, machine: str, train: ClipSet, folder: Path) -> MachineScores:
        """The machine's per-domain kNN banks and GMM; honest train scores (leave-one-out kNN, out-of-fold GMM)."""
        self.check_training_clips(machine, train.clips)
        if self.config.rank_norm == "transductive":
            self.context.note("fusion: rank_norm=transductive ranks each test score within the test set itself: "
                              "test scores depend on each other.")
        domains = [str(clip.domain) for clip in train.clips]
        self.scorer, scores, info = FusionScorer.fit(machine, self.embed(train), domains, self.config,
                                                     self.config.seed)
        self.context.stage(f"GMM with {info['gmm_components']} component(s)"
                           + (" (BIC)" if self.config.gmm_components is None else ""))
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.scorer.save(Path(folder) / MACHINE_FILE)
        return scores

    def load_machine(self, folder: Path) -> FusionScorer:
        self.scorer = FusionScorer.load(Path(folder) / MACHINE_FILE)
        return self.scorer

    def score_machine(self, test: ClipSet) -> MachineScores:
        if self.scorer is None:
            raise RuntimeError("fusion: no machine state yet; call fit_machine (or load_machine) first.")
        return self.scorer.score(self.embed(test))


__all__ = ["FusionConfig", "FusionNet", "FusionScorer", "FusionSystem", "check_domains", "composite_classes",
           "composite_label", "dev_omega", "normalise", "spec_augment"]
