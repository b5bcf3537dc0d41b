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
CLIP scores, as the system report says, not on mini-batch losses (§5), so the
decisions are calibrated to what is thresholded; randomness comes from seeded
generators instead of global RNG state.
Speed: features come once from the C++ frontend, and the training matrix is one
tensor batched by index, not a per-row DataLoader.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from asdx._atomic import atomic_write
from asdx.features import logmel_dcase, stack_frames
from asdx.models.ae import AENet
from asdx.scoring.mahalanobis import ae_mahalanobis_scores, stable_precision

SCORES = ("MSE", "MAHALA")


@dataclass
class AEConfig:
    """Hyper-parameters of the official baseline.yaml; every field is a CLI flag / config key."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    validation_split: float = 0.1
    seed: int = 13711
    channel: int = 0  # 0: near microphone (official); 1: far
    score: str = "MAHALA"
    n_mels: int = 128
    n_frames: int = 5
    n_fft: int = 1024
    hop_length: int = 512
    device: str = "cpu"

    def __post_init__(self):
        if self.score not in SCORES:
            raise ValueError(f"score: expected one of {SCORES}, got {self.score!r}.")
        if self.channel not in (0, 1):
            raise ValueError(f"channel: expected 0 (near) or 1 (far), got {self.channel}.")
        if not 0.0 <= self.validation_split < 1.0:
            raise ValueError(f"validation_split: expected [0, 1), got {self.validation_split}.")


def clip_vectors(waveforms: np.ndarray, config: AEConfig) -> torch.Tensor:
    """(clips, channels, samples) audio -> (clips, vectors, n_frames * n_mels) float32 on the CPU."""
    logmel = logmel_dcase(np.ascontiguousarray(waveforms[:, config.channel : config.channel + 1]),
                          n_fft=config.n_fft, hop_length=config.hop_length, n_mels=config.n_mels)
    return torch.from_numpy(stack_frames(logmel[:, 0], config.n_frames))


class AESystem:
    """fit(train waveforms, domains) -> trained AE + covariances; score(waveforms) -> clip scores."""

    name = "ae"

    @property
    def input_channels(self) -> int:
        """Channels the runner must load: the near mic only, unless the far one is used."""
        return self.config.channel + 1

    def __init__(self, config: AEConfig | None = None):
        self.config = config or AEConfig()
        self.device = torch.device(self.config.device)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching global RNG state
            torch.manual_seed(self.config.seed)
            self.model = AENet(self.config.n_frames * self.config.n_mels, n_mels=self.config.n_mels)
        self.model.to(self.device)
        # fused: one kernel for all parameters, the same Adam update at half the step time on CPU
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr, fused=True)
        self.epochs_done = 0
        self.history: list[dict] = []
        # One generator drives every shuffle; its state is checkpointed, so a resumed
        # run continues the same sequence and ends with the same weights.
        self.generator = torch.Generator().manual_seed(self.config.seed)

    # ------------------------------------------------------------------ training
    def fit(self, waveforms: np.ndarray, domains, checkpoint: Path | None = None, progress: bool = True):
        vectors = clip_vectors(waveforms, self.config)
        n_clips, per_clip, dim = vectors.shape
        flat = vectors.reshape(-1, dim).to(self.device)
        is_target = torch.from_numpy(np.repeat(np.asarray(domains) == "target", per_clip)).to(self.device)
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
        self.train_scores_ = self.score_vectors(vectors)
        return self

    def _train_epoch(self, flat, train_idx) -> float:
        self.model.train()
        permuted = train_idx[torch.randperm(len(train_idx), generator=self.generator)]
        total, count = 0.0, 0
        for start in range(0, len(permuted), self.config.batch_size):
            batch = flat[permuted[start : start + self.config.batch_size]]
            if batch.shape[0] <= 1:  # BatchNorm cannot train on one row; the official code skips it
                continue
            self.optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(self.model(batch)[0], batch)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * batch.shape[0]
            count += batch.shape[0]
        return total / max(count, 1)

    @torch.no_grad()
    def _mean_loss(self, flat, idx) -> float:
        if len(idx) == 0:
            return float("nan")
        self.model.eval()
        errors = [((self.model(flat[idx[s : s + 4096]])[0] - flat[idx[s : s + 4096]]) ** 2).mean(1)
                  for s in range(0, len(idx), 4096)]
        return torch.cat(errors).mean().item()

    @torch.no_grad()
    def _fit_covariances(self, flat, is_target, train_idx) -> None:
        """The official "epoch 101" pass (official baseline §3.4), quirks included."""
        self.model.eval()
        n_mels = self.config.n_mels
        scatter = {False: torch.zeros(n_mels, n_mels, dtype=torch.float64, device=self.device),
                   True: torch.zeros(n_mels, n_mels, dtype=torch.float64, device=self.device)}
        counts = {False: 0, True: 0}
        permuted = train_idx[torch.randperm(len(train_idx), generator=self.generator)]
        for start in range(0, len(permuted), self.config.batch_size):
            rows = permuted[start : start + self.config.batch_size]
            if len(rows) <= 1:
                continue
            errors = flat[rows] - self.model(flat[rows])[0]
            for domain in (False, True):
                mask = is_target[rows] == domain
                if not mask.any():
                    continue
                frames = errors[mask].reshape(-1, n_mels).double()
                centred = frames - frames.mean(0, keepdim=True)
                scatter[domain] += centred.T @ centred
                counts[domain] += int(mask.sum())  # counts vectors, not frames: the official ~5x scale
        if counts[False] < 2:
            raise ValueError("waveforms: too few source training vectors to estimate a covariance.")
        cov_source = scatter[False] / (counts[False] - 1)
        cov_target = scatter[True] / (counts[True] - 1) if counts[True] >= 2 else cov_source
        self.model.cov_source.copy_(cov_source.float())
        self.model.cov_target.copy_(cov_target.float())
        self.precisions_ = np.stack([stable_precision(c.cpu().numpy())[0] for c in (cov_source, cov_target)])

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score_vectors(self, vectors: torch.Tensor) -> np.ndarray:
        """(clips, vectors, dim) -> (clips,) float64 scores, higher = more anomalous."""
        self.model.eval()
        n_clips, per_clip, dim = vectors.shape
        if n_clips == 0:
            return np.zeros(0)
        mean_errors, mse = [], []
        for start in range(0, n_clips, 64):
            chunk = vectors[start : start + 64].to(self.device)
            errors = self.model(chunk.reshape(-1, dim))[0].reshape(chunk.shape) - chunk
            mse.append((errors**2).mean(dim=(1, 2)).double().cpu())
            mean_errors.append(errors.reshape(chunk.shape[0], -1, self.config.n_mels).mean(1).double().cpu())
        if self.config.score == "MSE":
            return torch.cat(mse).numpy()
        return np.asarray(ae_mahalanobis_scores(torch.cat(mean_errors).numpy(), self.precisions_), dtype=np.float64)

    def score(self, waveforms: np.ndarray) -> np.ndarray:
        return self.score_vectors(clip_vectors(waveforms, self.config))

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        return {"config": asdict(self.config), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "epochs_done": self.epochs_done, "history": self.history,
                "generator": self.generator.get_state(),
                "precisions": torch.from_numpy(self.precisions_) if hasattr(self, "precisions_") else None}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epochs_done = int(state["epochs_done"])
        self.history = list(state["history"])
        self.generator.set_state(state["generator"])
        if state.get("precisions") is not None:
            self.precisions_ = state["precisions"].numpy()
