"""AE_baseline: the official DCASE Task 2 autoencoder with MSE and Selective Mahalanobis scores.

Follows the official code (official baseline §2–§5; system report §2.1). What
changes scores is kept, including the quirks:
  - the train/validation split is at vector level (validation vectors share clips
    and frames with training vectors);
  - covariances are of per-frame (128-dim) reconstruction errors, centred on each
    batch's own per-domain mean, divided by the number of 640-dim vectors minus one
    (so ~5x a textbook frame covariance; scale only, AUC unchanged);
  - the MAHALA clip score is d̄ᵀ P d̄ of the clip-mean error, no mean subtracted, and
    the minimum over the source and target precisions;
  - batches of one vector are skipped in training.
Deliberate fixes, documented: the covariance inverse is a Cholesky-based inverse
in float64 with a ridge only if a covariance is singular (the official float32
torch.inverse has no fallback); the gamma threshold is fitted on train-normal
CLIP scores (held-out ones by default, see below), as the system report says, not
on mini-batch losses (as the official baseline does), so the
decisions are calibrated to what is thresholded; randomness comes from seeded
generators instead of global RNG state.
Speed: features come once from the C++ frontend, and the training matrix is one
tensor batched by index, not a per-row DataLoader; Adam updates the weights as one
flat tensor. Scoring runs the eval network with each BatchNorm folded into its Linear,
and MAHALA's clip-mean error comes from the mean of the last hidden rows through the
(affine) output layer: the 640-wide reconstructions are never formed (benchmarks/bench_score.py).

Threshold scores (AEConfig.threshold_scores; docs/threshold_scores.md): the train-normal
scores the runner fits the gamma threshold on (q = 0.9: about 10 % of normal test clips
should be flagged). They must be held out (scores of training clips are optimistic), many
enough to fit, and mixed by domain as the test set is (half target; train ~1-13 % target).
  - "kfold" (default): out-of-fold clip scores. The final model is the in-sample one (test
    scores unchanged); `folds` (3) extra models, each trained by the same recipe on the other
    folds' clips (domain-stratified) with its own covariances, score their held-out fold.
    MAHALA's clip-mean error is not centred, so each model has its own offset and pooled raw
    scores sit far above the final model's (they flagged 1 % of normals); each fold model's
    scores are put on the final model's scale by the map between the two models' scores of the
    clips both trained on (align_scores, "log"). Every clip gets an honest score: 46 at 40 + 6
    train clips, 1000 at DCASE size. Costs 3.1-3.3x the training of one model.
  - "holdout": the official 10 % validation split made clip-level: validation_split
    of each domain's clips (at least one target clip when there are two or more)
    is held out of training (at least 3 clips in all); the final model trains on the
    rest and its scores of the held-out clips are the threshold scores
    (MachineScores.threshold_scores; train_scores.csv keeps every clip's score from
    the final model, held_out_clips.txt names the held-out ones). Same training cost
    as in-sample, but only 5 honest scores at 40 + 6 (4 source, 1 target) and 1 target
    score at DCASE size.
  - "in-sample": the training clips scored by the final model (asdx before the
    held-out options; kept bit-identical: same model, same draws, same scores).
  - "official": what the official baseline (nttcslab/dcase2023_task2_baseline_ae) fits its gamma on:
    MSE = the last epoch's per-batch training losses (train-mode BN, before each step)
    and the validation batches' mean losses; MAHALA = one score per mini-batch of
    256 vectors treated as one clip, over the shuffled training batches and then the
    validation batches. Mini-batch scores are not clip scores, so the decisions are
    poorly calibrated; kept for comparison with the official repository.
balance_domains (default on; holdout and kfold): each target clip's honest score is repeated
round(n_source / n_target) times, so the one per-machine threshold is fitted on the domain mix
the test set has. Target normals score far from source normals (either side), so without it
the threshold serves the source domain only (target normals flagged at 0.4-0.8).
Why kfold + balance (benchmarks/calibration_ae.py, 4 synthetic machines; empirical 0.9 quantile
/ scipy gamma fit): normal-flag rate 0.19 / 0.13 at 40 + 6 (3 seeds; holdout 0.28 / 0.38) and
0.06 / 0.04 at DCASE size (holdout 0.50 / 0.53). The per-domain split is in the doc.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from asdx._atomic import atomic_write, atomic_write_text
from asdx.features import logmel_dcase, stack_frames
from asdx.models.ae import AENet
from asdx.scoring.covariance import stable_precision
from asdx.scoring.mahalanobis import ae_mahalanobis_scores
from asdx.splits import holdout
from asdx.systems._stereo import view_audio
from asdx.systems._threshold_scores import balance_domains, cross_fit
from asdx.systems.base import MachineScores, System, SystemContext
from asdx.systems.configs import AEConfig

SCORES = ("MSE", "MAHALA")
THRESHOLD_SCORES = ("in-sample", "holdout", "kfold", "official")
MIN_THRESHOLD_SCORES = 3  # a three-parameter gamma fit needs at least 3 scores (asdx.scoring.gamma)


def clip_logmel(waveforms: np.ndarray, config: AEConfig, check_finite: bool | None = None) -> torch.Tensor:
    """(clips, channels, samples) audio -> the view's log-mel (clips, frames, n_mels) float32 on the CPU.

    check_finite: as logmel_dcase's; False for audio a ClipSet streamed (its loader checked every sample)."""
    logmel = logmel_dcase(np.ascontiguousarray(view_audio(waveforms, config.view)[:, None]),
                          n_fft=config.n_fft, hop_length=config.hop_length, n_mels=config.n_mels,
                          check_finite=check_finite)
    return torch.from_numpy(logmel[:, 0])


def logmel_vectors(logmel: torch.Tensor, config: AEConfig) -> torch.Tensor:
    """(clips, frames, n_mels) log-mel -> (clips, vectors, n_frames * n_mels): n_frames consecutive frames each."""
    return torch.from_numpy(stack_frames(logmel.numpy(), config.n_frames))


def clip_vectors(waveforms: np.ndarray, config: AEConfig, check_finite: bool | None = None) -> torch.Tensor:
    """(clips, channels, samples) audio -> (clips, vectors, n_frames * n_mels) float32 on the CPU (see clip_logmel)."""
    return logmel_vectors(clip_logmel(waveforms, config, check_finite), config)


def holdout_clips(domains, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the clips held out of training: ceil(fraction * n) of each domain's n clips, chosen at
    random, always leaving one clip of the domain for training (so one target clip of two or more is held out).
    Small sets: more clips of the largest domain are held out until there are MIN_THRESHOLD_SCORES (3)."""
    domains = np.asarray(domains)
    held = np.zeros(len(domains), dtype=bool)
    held[holdout(domains, fraction, seed, rounding="up", minimum=MIN_THRESHOLD_SCORES)[1]] = True
    if held.sum() < MIN_THRESHOLD_SCORES:
        raise ValueError(f"threshold_scores=holdout: {int(held.sum())} of {len(domains)} clips held out with "
                         f"validation_split={fraction}; the gamma fit needs at least {MIN_THRESHOLD_SCORES}. "
                         "Raise validation_split or use threshold_scores=kfold.")
    return held


def _as_clip_list(vectors) -> list[torch.Tensor]:
    """A (clips, vectors, dim) tensor or a list of (vectors, dim) tensors -> list (clips may differ in length)."""
    return list(vectors.unbind(0)) if isinstance(vectors, torch.Tensor) else list(vectors)


def _flat_parameters(model: torch.nn.Module) -> torch.nn.Parameter:
    """The model's trainable weights moved into one flat Parameter, each weight (and its gradient) a view of
    it (of its gradient), in parameters() order: an optimizer over the flat one updates the model's weights.

    The gradient views are set before any backward, so autograd accumulates into them in place: zero the
    flat gradient before each backward (the model's own zero_grad would detach the views).
    """
    weights = [w for w in model.parameters() if w.requires_grad]
    flat = torch.nn.Parameter(torch.cat([w.detach().reshape(-1) for w in weights]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for weight in weights:
        n = weight.numel()
        weight.data = flat.data[offset : offset + n].view_as(weight)
        weight.grad = flat.grad[offset : offset + n].view_as(weight)
        offset += n
    return flat


def _flat_adam_state(state: dict) -> dict:
    """An Adam state_dict for the flat weights (_flat_parameters): a per-weight one (asdx before the flat
    weights, over model.parameters()) has its moments concatenated in parameter order, the same numbers; the
    covariance parameters (no gradient) have no state there. A flat one is returned as is."""
    params = state["param_groups"][0]["params"]
    if len(state["param_groups"]) != 1 or len(params) == 1:
        return state
    group = {**state["param_groups"][0], "params": [0]}
    if not state["state"]:
        return {"state": {}, "param_groups": [group]}
    per_weight = [state["state"][i] for i in params if i in state["state"]]
    merged = {"step": per_weight[0]["step"].clone()}
    for key in ("exp_avg", "exp_avg_sq"):
        merged[key] = torch.cat([entry[key].reshape(-1) for entry in per_weight])
    return {"state": {0: merged}, "param_groups": [group]}


def _equal_length_chunks(vectors, size: int):
    """(positions, (clips, vectors, dim) tensor) of up to `size` clips each, from a (clips, vectors, dim) tensor
    or a list of per-clip (vectors, dim) tensors; a list's clips are grouped by length and stacked a chunk at
    a time (never all at once: at DCASE size the training vectors are ~0.8 GB)."""
    if isinstance(vectors, torch.Tensor):
        for start in range(0, len(vectors), size):
            yield slice(start, start + size), vectors[start : start + size]
        return
    vectors = _as_clip_list(vectors)
    for length in sorted({len(v) for v in vectors}):
        members = [i for i, v in enumerate(vectors) if len(v) == length]
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            yield chunk, torch.stack([vectors[i] for i in chunk])


MODEL_FILE = "model.pt"


class AESystem(System):
    """Per-machine stage only: fit_machine trains the AE and its covariances; score_machine scores clips.

    Library use without the runner: fit(train waveforms, domains) and score(waveforms).
    """

    name = "ae"

    def __init__(self, config: AEConfig | None = None, context: SystemContext | None = None):
        super().__init__(config or AEConfig(), context)
        self.device = self.context.device
        self.reset()

    def reset(self) -> None:
        """A fresh seeded model, optimiser and shuffle generator: each machine trains its own AE."""
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching global RNG state
            torch.manual_seed(self.config.seed)
            self.model = AENet(self.config.n_frames * self.config.n_mels, n_mels=self.config.n_mels)
        self.model.to(self.device)
        self._optimizer, self._optimizer_state, self._flat = None, None, None  # made on first use (optimizer)
        self.epochs_done = 0
        self.history: list[dict] = []
        self.last_epoch_batch_losses_: list[float] = []
        # One generator drives every shuffle; its state is checkpointed, so a resumed
        # run continues the same sequence and ends with the same weights.
        self.generator = torch.Generator().manual_seed(self.config.seed)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """Adam over the model's weights, made when training first needs it (with the state a loaded checkpoint
        holds): building one imports torch._dynamo (~1.2 s), which scoring a finished run never needs.

        The weights live in one flat tensor (_flat_parameters), so Adam updates one tensor a step: the same
        elementwise update bit for bit (Adam has no cross-parameter term), without the per-parameter
        bookkeeping that cost ~0.4 ms of a ~5 ms step. fused: one kernel, half the step time on CPU.
        """
        if self._optimizer is None:
            self._flat = _flat_parameters(self.model)
            self._optimizer = torch.optim.Adam([self._flat], lr=self.config.lr, fused=True)
            if self._optimizer_state is not None:
                self._optimizer.load_state_dict(_flat_adam_state(self._optimizer_state))
                self._optimizer_state = None
        return self._optimizer

    # ------------------------------------------------------------------ the runner's protocol
    def stream_vectors(self, clips) -> list[torch.Tensor]:
        """Per-clip (vectors, dim) tensors of a ClipSet, computed batch by batch while workers decode."""
        out: list = [None] * len(clips)
        for indices, audio in clips.batches(self.input_channels, batch_size=64):
            for i, vectors in zip(indices, clip_vectors(audio.numpy(), self.config, check_finite=False)):
                out[i] = vectors
        return out

    def fit_machine(self, machine: str, train, folder: Path) -> MachineScores:
        self.reset()
        domains = np.array([clip.domain or "source" for clip in train.clips])
        self.context.stage(f"loading: log-mel vectors of {len(train)} train clips")
        vectors = self.stream_vectors(train)
        self.context.stage(f"training: {self.config.epochs} epochs, threshold scores {self.config.threshold_scores}")
        self.fit_vectors(vectors, domains, checkpoint=Path(folder) / "checkpoint.pt", progress=self.context.progress)
        if self.config.threshold_scores == "holdout":  # which rows of train_scores.csv the threshold comes from
            names = [clip.name for clip, held in zip(train.clips, self.held_out_) if held]
            atomic_write_text(Path(folder) / "held_out_clips.txt", "".join(f"{name}\n" for name in names))
        # the final model with its covariances' precisions: what load_machine restores
        atomic_write(Path(folder) / MODEL_FILE, lambda tmp: torch.save(self.state_dict(), tmp))
        return self.machine_train_scores()

    def load_machine(self, folder: Path) -> None:
        """Restores the trained AE and its precisions from fit_machine's model file."""
        path = Path(folder) / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; the machine was trained by an older asdx or did not finish.")
        self.reset()
        state = torch.load(path, weights_only=True, map_location="cpu")
        if state.get("precisions") is None and self.config.score != "MSE":
            raise ValueError(f"{path}: holds no covariance precisions; train the machine again.")
        self.load_state_dict(state)

    def machine_train_scores(self) -> MachineScores:
        """The train scores for the runner, by config.threshold_scores (see the module docstring)."""
        mode = self.config.threshold_scores
        if mode == "kfold":  # every clip has an honest score (train_scores.csv): the threshold is fitted on all
            return MachineScores(self.out_of_fold_scores_, threshold_scores=self.threshold_scores_)
        if mode in ("holdout", "official"):
            return MachineScores(self.train_scores_, threshold_scores=self.threshold_scores_)
        return MachineScores(self.train_scores_)

    def score_machine(self, test) -> MachineScores:
        """Scores batch by batch as they arrive; the DataLoader workers (if any) compute the log-mel while
        this process stacks it into vectors and runs the AE, so no split's vectors are held at once (and the
        workers pass on the log-mel, 5x smaller than the vectors)."""
        scores = np.zeros(len(test))
        for indices, logmel in test.batches(self.input_channels, batch_size=64, transform=self._logmel_of):
            scores[indices] = self.score_vectors(logmel_vectors(logmel, self.config))
        return MachineScores(scores)

    def _logmel_of(self, audio: torch.Tensor) -> torch.Tensor:
        return clip_logmel(audio.numpy(), self.config, check_finite=False)  # the loader checked the samples

    # ------------------------------------------------------------------ training
    def fit(self, waveforms: np.ndarray, domains, checkpoint: Path | None = None, progress: bool = True):
        return self.fit_vectors(clip_vectors(waveforms, self.config), domains, checkpoint, progress)

    def fit_vectors(self, vectors, domains, checkpoint: Path | None = None, progress: bool = True):
        """vectors: (clips, vectors, dim) or a list of per-clip (vectors, dim) tensors (clip lengths may differ)."""
        # the training matrix: a (clips, vectors, dim) tensor's own rows (no copy of ~0.8 GB at DCASE size)
        flat = vectors.reshape(-1, vectors.shape[-1]) if isinstance(vectors, torch.Tensor) else None
        vectors = _as_clip_list(vectors)
        domains = np.asarray(domains)
        if len(domains) != len(vectors):
            raise ValueError(f"domains: {len(domains)} for {len(vectors)} clips.")
        mode = self.config.threshold_scores
        per_clip = np.array([len(v) for v in vectors])
        flat = (torch.cat(vectors) if flat is None else flat).to(self.device)
        is_target = torch.from_numpy(np.repeat(domains == "target", per_clip)).to(self.device)
        if mode == "holdout":  # clip-level validation: whole clips out of training, domain-stratified
            self.held_out_ = holdout_clips(domains, self.config.validation_split, self.config.seed)
            in_validation = np.repeat(self.held_out_, per_clip)
            train_idx = torch.from_numpy(np.flatnonzero(~in_validation))
            val_idx = torch.from_numpy(np.flatnonzero(in_validation))
        else:  # the official vector-level split; these draws are the in-sample path's, unchanged
            rng = np.random.default_rng(self.config.seed)
            order = rng.permutation(flat.shape[0])
            n_val = math.ceil(self.config.validation_split * flat.shape[0])
            train_idx, val_idx = torch.from_numpy(order[n_val:]), torch.from_numpy(order[:n_val])
        if checkpoint is not None and Path(checkpoint).exists():  # resume where the last run stopped
            self.load_state_dict(torch.load(checkpoint, weights_only=True))
        epochs = tqdm(range(self.epochs_done, self.config.epochs), desc="AE epochs", disable=not progress,
                      initial=self.epochs_done, total=self.config.epochs)
        for epoch in epochs:
            train_loss = self._train_epoch(flat, train_idx)
            val_loss = self._mean_loss(flat, val_idx)
            self.history.append({"epoch": epoch + 1, "loss": train_loss, "val_loss": val_loss})
            self.epochs_done = epoch + 1
            epochs.set_postfix(loss=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
            if checkpoint is not None:
                atomic_write(checkpoint, lambda tmp: torch.save(self.state_dict(), tmp))
        self._fit_covariances(flat, is_target, train_idx)
        self.train_scores_ = self.score_vectors(vectors)  # every clip by the final model
        self.threshold_scores_ = self.train_scores_
        if mode == "holdout":
            self.threshold_scores_ = self._balanced(self.train_scores_[self.held_out_], domains[self.held_out_])
        elif mode == "official":
            self.threshold_scores_ = self._official_threshold_scores(flat, train_idx, val_idx)
        elif mode == "kfold":
            self.out_of_fold_scores_ = self._out_of_fold_scores(vectors, domains, checkpoint, progress)
            self.threshold_scores_ = self._balanced(self.out_of_fold_scores_, domains)
        return self

    def _balanced(self, scores: np.ndarray, domains: np.ndarray) -> np.ndarray:
        """The honest scores as the gamma fit gets them: domains weighed alike when balance_domains is set."""
        return balance_domains(scores, domains == "target") if self.config.balance_domains else scores

    def fit_fold_model(self, vectors: list, domains: np.ndarray, kept: np.ndarray, checkpoint=None) -> "AESystem":
        """This recipe (same config and seed, in-sample mode) trained on the clips `kept` (indices) only, with
        its own covariances: the fold model of threshold_scores=kfold."""
        fold_config = replace(self.config, threshold_scores="in-sample")
        model = AESystem(fold_config, SystemContext(device=self.device, progress=False, log=self.context.log))
        return model.fit_vectors([vectors[i] for i in kept], np.asarray(domains)[kept], checkpoint=checkpoint,
                                 progress=False)

    def _out_of_fold_scores(self, vectors: list, domains: np.ndarray, checkpoint, progress: bool) -> np.ndarray:
        """Each clip scored by a model that did not train on it (k-fold cross-fitting, clip-level), then put on
        the final model's scale (cross_fit, align_scores; the raw scores stay in out_of_fold_raw_).

        Fold model k (fit_fold_model) trains on the clips outside fold k and scores every clip: its scores of
        fold k are the held-out ones; its scores of its own training clips, beside the final model's scores of
        the same clips, give the map between the two scales. Each fold model checkpoints next to the final
        model's checkpoint (checkpoint_fold<k>.pt), so they resume too.
        """
        def fit_and_score(k: int, held: np.ndarray, kept: np.ndarray):
            fold_checkpoint = None if checkpoint is None else \
                Path(checkpoint).with_name(f"{Path(checkpoint).stem}_fold{k}{Path(checkpoint).suffix}")
            model = self.fit_fold_model(vectors, domains, kept, fold_checkpoint)
            return model.score_vectors([vectors[i] for i in held]), model.train_scores_

        folds = cross_fit(domains, self.config.folds, self.config.seed, fit_and_score,
                          desc="AE fold models" if progress else None)
        self.folds_ = folds.fold_of
        aligned, self.out_of_fold_raw_ = folds.pooled(self.train_scores_)
        return aligned

    @torch.no_grad()
    def _official_threshold_scores(self, flat, train_idx, val_idx) -> np.ndarray:
        """The scores the official baseline fits its gamma on: mini-batch scores."""
        size = self.config.batch_size
        if self.config.score == "MSE":
            # the last epoch's training-batch losses (train-mode BN, before each step), then each validation
            # batch's mean loss (the v2.0.1 fix: each validation batch, not the last training loss)
            self.model.eval()
            val = [((self.model(flat[val_idx[s : s + size]])[0] - flat[val_idx[s : s + size]]) ** 2).mean().item()
                   for s in range(0, len(val_idx), size)]
            return np.asarray(list(self.last_epoch_batch_losses_) + val, dtype=np.float64)
        # MAHALA: after the covariances, the shuffled training batches then the validation batches, each batch
        # of 256 vectors scored as one "clip" (its mean per-frame error, min over the two precisions); batches of
        # one vector are not skipped here, as in the official code
        self.model.eval()
        permuted = train_idx[torch.randperm(len(train_idx), generator=self.generator)]
        batches = [permuted[s : s + size] for s in range(0, len(permuted), size)]
        batches += [val_idx[s : s + size] for s in range(0, len(val_idx), size)]
        mean_errors = []
        for rows in batches:
            errors = self.model(flat[rows])[0] - flat[rows]
            mean_errors.append(errors.reshape(-1, self.config.n_mels).mean(0).double().cpu())
        return np.asarray(ae_mahalanobis_scores(torch.stack(mean_errors).numpy(), self.precisions_),
                          dtype=np.float64)

    def _train_epoch(self, flat, train_idx) -> float:
        """One epoch of the official loop: shuffled batches of batch_size vectors, MSE, one Adam step each.
        Batches are gathered by index_select out of the one training tensor (2x faster than flat[rows]);
        the gradients accumulate into the zeroed flat gradient (0 + g: what a fresh gradient holds)."""
        optimizer = self.optimizer
        self.model.train()
        permuted = train_idx[torch.randperm(len(train_idx), generator=self.generator)].to(flat.device)
        losses, sizes = [], []
        for rows in permuted.split(self.config.batch_size):
            if len(rows) <= 1:  # BatchNorm cannot train on one row; the official code skips it
                continue
            batch = flat.index_select(0, rows)
            self._flat.grad.zero_()
            loss = torch.nn.functional.mse_loss(self.model(batch)[0], batch)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            sizes.append(len(rows))
        # the official MSE gamma fit uses the last epoch's batch losses
        self.last_epoch_batch_losses_ = torch.stack(losses).tolist() if losses else []
        total = sum(value * size for value, size in zip(self.last_epoch_batch_losses_, sizes))
        return total / max(sum(sizes), 1)

    def _mean_loss(self, flat, idx) -> float:
        """The validation loss: the mean squared error over the vectors idx (eval mode)."""
        if len(idx) == 0:
            return float("nan")
        self.model.eval()
        folded, total = self.model.folded(), 0.0
        with torch.inference_mode():
            for rows in idx.split(4096):
                chunk = flat.index_select(0, rows.to(flat.device))
                total += float(self._chunk_mse(chunk[None], folded)[0]) * len(rows)
        return total / len(idx)

    @torch.inference_mode()
    def _fit_covariances(self, flat, is_target, train_idx) -> None:
        """The official "epoch 101" covariance pass (networks/dcase2023t2_ae/dcase2023t2_ae.py), quirks included.
        Eval mode, so the folded network (one affine map per layer) gives the same errors."""
        self.model.eval()
        folded, n_mels = self.model.folded(), self.config.n_mels
        weight_t, bias = folded[-1]
        scatter = {False: torch.zeros(n_mels, n_mels, dtype=torch.float64, device=self.device),
                   True: torch.zeros(n_mels, n_mels, dtype=torch.float64, device=self.device)}
        counts = {False: 0, True: 0}
        permuted = train_idx[torch.randperm(len(train_idx), generator=self.generator)].to(flat.device)
        for rows in permuted.split(self.config.batch_size):
            if len(rows) <= 1:
                continue
            batch = flat.index_select(0, rows)
            reconstruction = torch.addmm(bias, AENet.hidden_codes(batch, folded), weight_t)
            errors = torch.sub(batch, reconstruction, out=reconstruction)
            target = is_target[rows]
            for domain in (False, True):
                mask = target == domain
                n_domain = int(mask.sum())
                if n_domain == 0:
                    continue
                frames = (errors if n_domain == len(rows) else errors[mask]).reshape(-1, n_mels).double()
                centred = frames - frames.mean(0, keepdim=True)
                scatter[domain] += centred.T @ centred
                counts[domain] += n_domain  # counts vectors, not frames: the official ~5x scale
        if counts[False] < 2:
            raise ValueError("waveforms: too few source training vectors to estimate a covariance.")
        cov_source = scatter[False] / (counts[False] - 1)
        cov_target = scatter[True] / (counts[True] - 1) if counts[True] >= 2 else cov_source
        self.model.cov_source.copy_(cov_source.float())
        self.model.cov_target.copy_(cov_target.float())
        self.precisions_ = np.stack([stable_precision(c.cpu().numpy())[0] for c in (cov_source, cov_target)])

    # ------------------------------------------------------------------ scoring
    def clip_errors(self, vectors) -> tuple[np.ndarray, np.ndarray]:
        """(clips, vectors, dim) or a list of per-clip (vectors, dim) -> (MSE (clips,), clip-mean per-frame
        errors (clips, n_mels)), float64: what both scores are computed from (clip_mse, clip_mean_errors)."""
        return self.clip_mse(vectors), self.clip_mean_errors(vectors)

    def clip_mse(self, vectors) -> np.ndarray:
        """(clips,) float64: each clip's mean squared reconstruction error over its vectors and dims (MSE)."""
        return self._per_clip(vectors, self._chunk_mse, ())

    def clip_mean_errors(self, vectors) -> np.ndarray:
        """(clips, n_mels) float64: each clip's mean per-frame reconstruction error d̄, MAHALA's input."""
        return self._per_clip(vectors, self._chunk_mean_errors, (self.config.n_mels,))

    def _per_clip(self, vectors, chunk_fn, shape: tuple) -> np.ndarray:
        """chunk_fn over chunks of up to 64 equal-length clips ((clips, vectors, dim) -> (clips, *shape) float64)."""
        n_clips = len(vectors) if isinstance(vectors, torch.Tensor) else len(_as_clip_list(vectors))
        out = np.zeros((n_clips, *shape))
        self.model.eval()
        folded = self.model.folded()
        with torch.inference_mode():
            for where, chunk in _equal_length_chunks(vectors, 64):
                out[where] = chunk_fn(chunk.to(self.device), folded)
        return out

    def _chunk_mse(self, chunk: torch.Tensor, folded) -> np.ndarray:
        """The reconstruction minus the input in place, then one pass for each clip's sum of squares."""
        n_clips, per_clip, dim = chunk.shape
        weight_t, bias = folded[-1]
        errors = torch.addmm(bias, AENet.hidden_codes(chunk.reshape(-1, dim), folded), weight_t)
        errors.sub_(chunk.reshape(-1, dim))
        squares = torch.linalg.vector_norm(errors.reshape(n_clips, -1), dim=1).double() ** 2
        return (squares / (per_clip * dim)).cpu().numpy()

    def _chunk_mean_errors(self, chunk: torch.Tensor, folded) -> np.ndarray:
        """d̄ without the reconstructions: the output layer is affine, so a clip's mean reconstruction is
        mean(h) W^T + b, h its last hidden rows; minus its mean input, averaged over the n_frames frames of
        the vector. Skips the output layer's GEMM and the (vectors, 640) error array: 2.5-3x faster to score."""
        n_clips, per_clip, dim = chunk.shape
        weight_t, bias = (t.double() for t in folded[-1])
        hidden = AENet.hidden_codes(chunk.reshape(-1, dim), folded).reshape(n_clips, per_clip, -1)
        mean_error = hidden.mean(1).double() @ weight_t + bias - chunk.mean(1).double()  # (clips, dim)
        return mean_error.reshape(n_clips, -1, self.config.n_mels).mean(1).cpu().numpy()

    def domain_distances(self, vectors) -> np.ndarray:
        """(clips, 2) float64: d̄ᵀ P d̄ under the source and the target precision; MAHALA is the row minimum."""
        mean_errors = self.clip_mean_errors(vectors)
        return np.stack([np.asarray(ae_mahalanobis_scores(mean_errors, self.precisions_[k : k + 1]), dtype=np.float64)
                         for k in range(2)], axis=1)

    def score_vectors(self, vectors) -> np.ndarray:
        """(clips, vectors, dim) or a list of per-clip (vectors, dim) -> (clips,) float64, higher = more anomalous."""
        if self.config.score == "MSE":
            return self.clip_mse(vectors)
        mean_errors = self.clip_mean_errors(vectors)
        if len(mean_errors) == 0:
            return np.zeros(0)
        return np.asarray(ae_mahalanobis_scores(mean_errors, self.precisions_), dtype=np.float64)

    def score(self, waveforms: np.ndarray) -> np.ndarray:
        return self.score_vectors(clip_vectors(waveforms, self.config))

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        return {"config": asdict(self.config), "model": self.model.state_dict(),
                "optimizer": self._optimizer_state if self._optimizer is None and self._optimizer_state is not None
                else self.optimizer.state_dict(), "epochs_done": self.epochs_done, "history": self.history,
                "generator": self.generator.get_state(),
                "last_epoch_batch_losses": list(getattr(self, "last_epoch_batch_losses_", [])),
                "precisions": torch.from_numpy(self.precisions_) if hasattr(self, "precisions_") else None}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self._optimizer is None:  # applied when training needs the optimizer (scoring never does)
            self._optimizer_state = state["optimizer"]
        else:
            self._optimizer.load_state_dict(_flat_adam_state(state["optimizer"]))
        self.epochs_done = int(state["epochs_done"])
        self.history = list(state["history"])
        self.generator.set_state(state["generator"])
        self.last_epoch_batch_losses_ = list(state.get("last_epoch_batch_losses", []))
        if state.get("precisions") is not None:
            self.precisions_ = state["precisions"].numpy()
