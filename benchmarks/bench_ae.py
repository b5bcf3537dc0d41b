"""AE_baseline wall time on one machine of synthetic data at DCASE size (990 + 10 train clips of 10 s,
200 test clips), against an official-style pipeline measured in the same run.

asdx: features for all clips in one call of the C++ frontend, training batches indexed out of
one tensor, clip scores from the Mahalanobis kernel. Official style (emulated here, the way the
official code does it): librosa melspectrogram per clip, and a per-row torch DataLoader over the
same vectors. Epochs are configurable; per-epoch times are reported so that 100 epochs can be
extrapolated.

    python benchmarks/bench_ae.py [--machine fan] [--epochs 3] [--data DIR] [--no-record]
    python -m benchmarks ae [same options]
"""

from __future__ import annotations

import argparse
import sys
import time
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

    librosa.feature.melspectrogram(y=waveforms[0, 0], sr=16000)  # warm-up: numba compiles on the first call
    start = time.perf_counter()
    for wave in waveforms[:clips, 0]:
        mel = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=1024, hop_length=512, n_mels=128, power=2.0)
        10.0 * np.log10(np.maximum(mel, 2.220446049250313e-16))
    return (time.perf_counter() - start) / clips


def official_style_epoch(vectors: torch.Tensor) -> float:
    """One epoch as the official training loop runs it (networks/dcase2023t2_ae/dcase2023t2_ae.py): a shuffled per-row
    DataLoader (batch 256), with autograd anomaly detection on (the official code switches it on
    every epoch; it slows autograd and changes no number); seconds."""
    config = AEConfig(epochs=1)
    system = AESystem(config)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(vectors), batch_size=256, shuffle=True)
    system.model.train()
    start = time.perf_counter()
    with torch.autograd.set_detect_anomaly(True):
        for (batch,) in loader:
            if batch.shape[0] <= 1:
                continue
            system.optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(system.model(batch)[0], batch)
            loss.backward()
            system.optimizer.step()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", default="fan")
    parser.add_argument("--epochs", type=int, default=3)
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

    config = AEConfig(epochs=args.epochs)
    features_s, vectors = seconds(lambda: clip_vectors(train_wave, config))
    system = AESystem(config)
    fit_s, _ = seconds(lambda: system.fit(train_wave, domains, progress=False))
    score_s, _ = seconds(lambda: system.score(test_wave))
    per_clip_librosa = official_style_features(train_wave, 50)
    official_epoch_s = official_style_epoch(vectors.reshape(-1, vectors.shape[-1]))
    asdx_epoch_s = (fit_s - features_s) / args.epochs  # fit includes features, covariances, train scores

    official_features_s = per_clip_librosa * len(train)
    official_100 = official_features_s + 100 * official_epoch_s
    asdx_100 = features_s + 100 * asdx_epoch_s
    rows = [
        ("features (train clips)", f"{features_s:.2f} s", f"{official_features_s:.2f} s",
         f"{official_features_s / features_s:.1f}×"),
        ("one training epoch", f"{asdx_epoch_s:.2f} s", f"{official_epoch_s:.2f} s",
         f"{official_epoch_s / asdx_epoch_s:.1f}×"),
        ("features + 100 epochs (extrapolated)", f"{asdx_100 / 60:.1f} min", f"{official_100 / 60:.1f} min",
         f"{official_100 / asdx_100:.1f}×"),
        (f"fit, {args.epochs} epochs (features, covariances, train scores)", f"{fit_s:.2f} s", "", ""),
        (f"score {len(test)} test clips", f"{score_s:.2f} s", "", ""),
    ]
    section = [f"## bench_ae — {datetime.now().astimezone().isoformat(timespec='seconds')}", "",
               *machine_lines(args.threads, None), "",
               f"Machine `{args.machine}`, synthetic DCASE size: {len(train)} train clips "
               f"({int((domains == 'target').sum())} target), {len(test)} test clips, 10 s; "
               f"{vectors.shape[0] * vectors.shape[1]:,} training vectors. Loading the WAVs took {load_s:.1f} s "
               f"(synthesis {synth_s:.0f} s, not counted).", "",
               "| step | asdx | official style | speed-up |", "|---|---:|---:|---:|",
               *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows], "",
               "Official style = librosa melspectrogram per clip (timed on 50 clips after a warm-up, scaled) and a "
               "shuffled per-row DataLoader epoch with autograd anomaly detection on, over the same vectors, "
               "emulated in this script; the official repository itself is not run here (it also saves a "
               "checkpoint every epoch, not counted).", "GPU rows skipped: this benchmark runs on the CPU."]
    publish(section, record_it=not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
