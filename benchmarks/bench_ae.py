"""AE_baseline wall time on one machine of synthetic data at DCASE size (990 + 10 train clips of 10 s,
200 test clips), against an official-style pipeline measured in the same run.

asdx: features for all clips in one call of the C++ frontend, training batches indexed out of
one tensor, Adam over one flat weight tensor, clip scores from the Mahalanobis kernel. Official
style (emulated here, the way nttcslab/dcase2023_task2_baseline_ae's networks/dcase2023t2_ae does
it): librosa melspectrogram per clip; a shuffled per-row DataLoader over the same training vectors,
autograd anomaly detection on, torch's default Adam, the loss reduced as the official code does.

Rows: features; ONE epoch of ONE model (both timed directly on the same 90 % of the vectors, best
of --epoch-runs); 100 epochs extrapolated; the whole fit of one model (threshold_scores=in-sample:
features, --epochs epochs, covariances, train scores); the whole fit with the default
threshold_scores=kfold, which also trains `folds` (3) fold models (3.1-3.3x the training of one
model, see asdx.systems.ae), labelled as such; scoring the test clips.

    python benchmarks/bench_ae.py [--machine fan] [--epochs 1] [--epoch-runs 2] [--data DIR] [--no-record]
    python -m benchmarks ae [same options]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import machine_lines, publish

import asdx
from asdx.data import generate, load_clips, machine_clips, resolve_machines
from asdx.systems.ae import AEConfig, AESystem, clip_vectors


def seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def official_style_features(waveforms: np.ndarray, clips: int) -> float:
    """librosa per clip (the official frontend), timed on `clips` clips; seconds per clip."""
    import librosa

    def one(wave):
        mel = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=1024, hop_length=512, n_mels=128, power=2.0)
        return 10.0 * np.log10(np.maximum(mel, 2.220446049250313e-16))

    for wave in waveforms[:2, 0]:  # warm-up with the timed call itself: numba compiles on the first call
        one(wave)
    start = time.perf_counter()
    for wave in waveforms[:clips, 0]:
        one(wave)
    return (time.perf_counter() - start) / clips


def official_style_epoch(vectors: torch.Tensor) -> float:
    """One epoch as the official training loop runs it (networks/dcase2023t2_ae/dcase2023t2_ae.py): a shuffled
    per-row DataLoader (batch 256), autograd anomaly detection on (the official code switches it on every epoch;
    it slows autograd and changes no number), torch's default Adam (the official `optim.Adam(params, lr)`), the
    loss as F.mse_loss(reduction="none") -> mean over dims -> sum / n, read out with float() per batch; seconds."""
    config = AEConfig(epochs=1)
    model = AESystem(config).model
    optimizer = torch.optim.Adam([{"params": model.parameters()}], lr=config.lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(vectors), batch_size=256, shuffle=True)
    model.train()
    start = time.perf_counter()
    with torch.autograd.set_detect_anomaly(True), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")  # float(loss), as theirs
        train_loss = 0.0
        for (batch,) in loader:
            if batch.shape[0] <= 1:
                continue
            optimizer.zero_grad()
            reconstruction, _ = model(batch)
            score = torch.nn.functional.mse_loss(reconstruction, batch, reduction="none").mean(dim=1)
            loss = torch.sum(score) / len(score)
            loss.backward()
            optimizer.step()
            train_loss += float(loss)
    return time.perf_counter() - start


def asdx_epoch(flat: torch.Tensor, train_idx: torch.Tensor, config: AEConfig) -> float:
    """One epoch of one model as AESystem.fit trains it (its _train_epoch: the shuffle, index_select batches,
    fused Adam over the flat weights), on the given training rows; seconds."""
    system = AESystem(config)
    system.optimizer  # made before the clock starts, as the official style's is
    start = time.perf_counter()
    system._train_epoch(flat, train_idx)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", default="fan")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the two whole-fit rows")
    parser.add_argument("--epoch-runs", type=int, default=2, help="timed single epochs per side (best is kept)")
    parser.add_argument("--data", default=None, help="DCASE-size synthetic root (default: generated in a cache)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    asdx.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    root = Path(args.data) if args.data else Path.home() / ".cache" / "asdx" / "bench-ae-full"
    synth_s, _ = seconds(lambda: generate(root, machines=args.machine, full=True, progress=False))
    machine = resolve_machines(root, args.machine)[0]
    train, test = machine_clips(machine, "train"), machine_clips(machine, "test")
    load_s, train_wave = seconds(lambda: load_clips(train, channels=1, seconds=10.0))
    test_wave = load_clips(test, channels=1, seconds=10.0)
    domains = np.array([c.domain for c in train])

    one_model = AEConfig(epochs=args.epochs, threshold_scores="in-sample")
    kfold = AEConfig(epochs=args.epochs)  # the default threshold_scores: kfold, with its fold models
    features_s, vectors = seconds(lambda: clip_vectors(train_wave, one_model))
    flat = vectors.reshape(-1, vectors.shape[-1])
    # the training rows of fit's vector-level split (the same draw: 90 % train, 10 % validation)
    order = np.random.default_rng(one_model.seed).permutation(flat.shape[0])
    train_idx = torch.from_numpy(order[math.ceil(one_model.validation_split * flat.shape[0]):])
    train_rows = flat[train_idx]
    official_epoch_s = min(official_style_epoch(train_rows) for _ in range(args.epoch_runs))
    asdx_epoch_s = min(asdx_epoch(flat, train_idx, one_model) for _ in range(args.epoch_runs))
    del train_rows
    fit_one_s, system = seconds(lambda: AESystem(one_model).fit(train_wave, domains, progress=False))
    score_s, _ = seconds(lambda: system.score(test_wave))
    fit_kfold_s, _ = seconds(lambda: AESystem(kfold).fit(train_wave, domains, progress=False))
    per_clip_librosa = official_style_features(train_wave, 50)

    official_features_s = per_clip_librosa * len(train)
    official_100 = official_features_s + 100 * official_epoch_s
    asdx_100 = features_s + 100 * asdx_epoch_s
    official_fit = official_features_s + args.epochs * official_epoch_s
    rows = [
        ("features (train clips)", f"{features_s:.2f} s", f"{official_features_s:.2f} s",
         f"{official_features_s / features_s:.1f}×"),
        (f"one training epoch of one model ({len(train_idx):,} vectors, best of {args.epoch_runs})",
         f"{asdx_epoch_s:.2f} s", f"{official_epoch_s:.2f} s", f"{official_epoch_s / asdx_epoch_s:.1f}×"),
        ("features + 100 epochs, one model (extrapolated)", f"{asdx_100 / 60:.1f} min", f"{official_100 / 60:.1f} min",
         f"{official_100 / asdx_100:.1f}×"),
        (f"whole fit, one model, {args.epochs} epoch(s), in-sample (features, training, covariances, train scores;"
         " official: features + epochs only)", f"{fit_one_s:.2f} s", f"≥ {official_fit:.2f} s",
         f"≥ {official_fit / fit_one_s:.1f}×"),
        (f"whole fit, default kfold: final model + {kfold.folds} fold models, {args.epochs} epoch(s) each "
         "(official trains one)", f"{fit_kfold_s:.2f} s", f"≥ {official_fit:.2f} s",
         f"≥ {official_fit / fit_kfold_s:.1f}×"),
        (f"score {len(test)} test clips", f"{score_s:.2f} s", "", ""),
    ]
    section = [f"## bench_ae — {datetime.now().astimezone().isoformat(timespec='seconds')}", "",
               *machine_lines(args.threads, None), "",
               f"Machine `{args.machine}`, synthetic DCASE size: {len(train)} train clips "
               f"({int((domains == 'target').sum())} target), {len(test)} test clips, 10 s; "
               f"{flat.shape[0]:,} vectors, {len(train_idx):,} of them trained on. Loading the WAVs took "
               f"{load_s:.1f} s (synthesis {synth_s:.0f} s, not counted).", "",
               "| step | asdx | official style | speed-up |", "|---|---:|---:|---:|",
               *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows], "",
               "Official style = librosa melspectrogram per clip (timed on 50 clips after a warm-up, scaled) and a "
               "shuffled per-row DataLoader epoch with autograd anomaly detection on and torch's default Adam, over "
               "the same training vectors, emulated in this script; the official repository itself is not run "
               "here. Its whole fit is given as a lower bound (features + epochs): its covariance epoch, its "
               "per-epoch validation, gamma fits, plots and checkpoints are not counted.",
               "GPU rows skipped: this benchmark runs on the CPU."]
    publish(section, record_it=not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
