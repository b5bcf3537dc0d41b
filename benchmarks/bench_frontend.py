"""Frontend benchmark: asdx's feature kernels against the FFT floor, torch, torchaudio and the NumPy reference.

For each frontend (logmel_dcase: n_fft 1024, hop 512, 128 mels; kaldi_fbank: 400/160,
512-point FFT; stereo_features) it times, on one batch of deterministic noise (default
64 clips x 10 s at 16 kHz), in float64 and in float32:
  - asdx CPU (asdx.features; precision="float32" for the float32 rows, when the
    installed asdx has that keyword, else the row says 'precision= not available yet'),
  - the FFT floor: numpy.fft.rfft (pocketfft since NumPy 1.17) of the same frames,
    already framed and windowed (the framing is not timed), split over the same number
    of threads as asdx; stereo adds the per-frame irfft of GCC-PHAT,
  - the torch equivalents in the row's precision: asdx.torch_kernels, asdx's own torch
    implementations (unfold + rfft, mel matmul, log),
  - torchaudio, when it is installed (MelSpectrogram; compliance.kaldi.fbank per clip),
    else a 'torchaudio not installed' row,
  - the NumPy float64 reference (asdx.reference.frontend), on a subset scaled to the batch,
The w1 stereo view (asdx.features.stereo_view, float32 as its recipe) gets its own table: asdx CPU against
the FFT floor (a bare float32 rfft of the near and far frames plus an irfft of one residual frame per frame),
torch (asdx.torch_kernels: torch.stft/istft) and the NumPy reference; on a GPU, asdx CUDA against torch and
cuFFT. --only stereo_view times that table alone.
And, when torch sees a GPU and asdx was built with CUDA, asdx CUDA against the torch
equivalents and torch.fft.rfft (cuFFT) on the GPU, in both precisions. A second table
answers "would a header-only pocketfft inside the fused frontend pay?": the most that
replacing asdx's own FFT by a perfect one could save is asdx's time minus the floor.

Times are best-of-N after one warm-up call. Before timing, the torch equivalents are
checked against asdx so that a wrong equivalent is not benchmarked silently (a failed
check prints a warning; the run goes on).

Run from the repository root:
    python benchmarks/bench_frontend.py [--clips 64] [--seconds 10] [--threads 2] [--repeat 5]
    python -m benchmarks frontend [same options]
--quick runs tiny sizes as a smoke test; it and --no-record leave benchmarks/RESULTS.md
alone, otherwise a section with the machine, the tables and footnotes is appended to it.
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import asdx
import asdx.features as features
import asdx.reference as reference
import asdx.reference.stereo_view  # noqa: F401 - reference.stereo_view
import asdx.torch_kernels as torch_kernels

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import machine_lines, publish, timeit_best

try:
    import torchaudio
except ImportError:  # optional: its rows say so
    torchaudio = None

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 1024, 512, 128
KALDI_LENGTH, KALDI_SHIFT, KALDI_PADDED = 400, 160, 512
MAX_LAG = 320
DCASE_FLOOR = 2.220446049250313e-16
REF_CLIPS = 8  # the NumPy reference is timed on this many clips and scaled to the batch
KERNELS = ("logmel_dcase", "kaldi_fbank", "stereo_features")
PRECISIONS = ("float64", "float32")
NUMPY_DTYPE = {"float64": np.float64, "float32": np.float32}
TORCH_DTYPE = {"float64": torch.float64, "float32": torch.float32}
# asdx_ms / floor_ms must stay at or below this (the goal for the whole logmel).
FLOOR_GOALS = {"logmel_dcase": 1.5}
# Speed-up goals: baseline role -> minimum baseline_ms / asdx_ms, same precision.
SPEEDUP_GOALS = {
    "logmel_dcase": {"ref": 20.0, "torch": 2.0},
    "kaldi_fbank": {"torchaudio": 5.0},
    "stereo_features": {"ref": 20.0, "torch": 2.0},
}
NO_PRECISION = "precision= not available yet"
NO_TORCHAUDIO = "torchaudio not installed"


# --------------------------------------------------------------------------- asdx calls


def asdx_call(kernel: str, precision: str) -> Callable:
    """asdx.features.<kernel> at `precision`; float64 is the default, so it is called without the keyword
    (the script then works before and after the keyword exists)."""
    fn = getattr(features, kernel)
    if precision == "float64":
        return fn
    return lambda x: fn(x, precision=precision)


def try_asdx(kernel: str, precision: str, sample) -> tuple[Callable | None, object, str]:
    """(fn, fn(sample), "") when asdx runs `kernel` at `precision`, else (None, None, why)."""
    fn = asdx_call(kernel, precision)
    try:
        return fn, fn(sample), ""
    except TypeError as error:  # an asdx without the keyword (or whose kernel lacks the argument)
        print(f"asdx {kernel} {precision}: {NO_PRECISION} ({error})")
        return None, None, NO_PRECISION


# --------------------------------------------------------------------------- the FFT floor


def _centred_frames(signals: np.ndarray) -> np.ndarray:
    """(..., frames, N_FFT) periodic-Hann windowed frames, centred with zero padding (librosa center=True)."""
    padded = np.pad(signals.astype(np.float64), [(0, 0)] * (signals.ndim - 1) + [(N_FFT // 2, N_FFT // 2)])
    n_frames = 1 + signals.shape[-1] // HOP
    windows = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=-1)[..., ::HOP, :][..., :n_frames, :]
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)
    return windows * hann


def _kaldi_frames(signals: np.ndarray) -> np.ndarray:
    """(..., frames, KALDI_PADDED): scaled, DC-removed, pre-emphasised, Povey-windowed, zero-padded frames."""
    scaled = signals.astype(np.float64) * 32768.0
    n_frames = 0 if scaled.shape[-1] < KALDI_LENGTH else 1 + (scaled.shape[-1] - KALDI_LENGTH) // KALDI_SHIFT
    frames = np.lib.stride_tricks.sliding_window_view(scaled, KALDI_LENGTH, axis=-1)[..., ::KALDI_SHIFT, :]
    frames = frames[..., :n_frames, :]
    frames = frames - frames.mean(axis=-1, keepdims=True)
    frames = frames - 0.97 * np.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
    povey = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(KALDI_LENGTH) / (KALDI_LENGTH - 1))) ** 0.85
    padded = np.zeros(frames.shape[:-1] + (KALDI_PADDED,))
    padded[..., :KALDI_LENGTH] = frames * povey
    return padded


def floor_inputs(kernel: str, x: np.ndarray, precision: str) -> list[tuple[str, np.ndarray]]:
    """The transforms the floor times, as (kind, input) with input (frames, n) contiguous in `precision`:
    "rfft" of real frames, and for stereo_features also "irfft" of one PHAT cross-spectrum per frame."""
    dtype = NUMPY_DTYPE[precision]

    def flat(a):
        return np.ascontiguousarray(a.reshape(-1, a.shape[-1]), dtype=dtype)

    if kernel == "logmel_dcase":
        return [("rfft", flat(_centred_frames(x)))]
    if kernel == "kaldi_fbank":
        return [("rfft", flat(_kaldi_frames(x)))]
    near, far = _centred_frames(x[:, 0]), _centred_frames(x[:, 1])
    cross = np.fft.rfft(near) * np.conj(np.fft.rfft(far))
    phat = np.conj(cross) / (np.abs(cross) + 1e-20)
    complex_dtype = np.complex128 if precision == "float64" else np.complex64
    return [("rfft", flat(near)), ("rfft", flat(far)),
            ("irfft", np.ascontiguousarray(phat.reshape(-1, phat.shape[-1]), dtype=complex_dtype))]


_NUMPY_FFT_OUT = "out" in inspect.signature(np.fft.rfft).parameters  # NumPy >= 2.0


class FftFloor:
    """numpy.fft.rfft / irfft of prepared frames into preallocated outputs, the frames split over `threads`
    Python threads (NumPy's pocketfft releases the GIL, so the chunks run in parallel, like asdx's threads).
    NumPy >= 2 transforms float32 input in float32 (older NumPy upcasts to float64)."""

    def __init__(self, jobs: list[tuple[str, np.ndarray]], threads: int, pool: ThreadPoolExecutor):
        self.pool, self.threads = pool, threads
        self.jobs = []
        for kind, data in jobs:
            if kind == "rfft":
                out_dtype = np.complex64 if data.dtype == np.float32 else np.complex128
                fn, out = (lambda a, **kw: np.fft.rfft(a, axis=-1, **kw)), np.empty(
                    (data.shape[0], data.shape[1] // 2 + 1), out_dtype)
            else:
                out_dtype = np.float32 if data.dtype == np.complex64 else np.float64
                fn, out = (lambda a, **kw: np.fft.irfft(a, n=N_FFT, axis=-1, **kw)), np.empty(
                    (data.shape[0], N_FFT), out_dtype)
            self.jobs.append((fn, data, out))
        self.frames = sum(data.shape[0] for kind, data in jobs if kind == "rfft")

    def _run(self, fn, data, out):
        kwargs = (lambda lo, hi: {"out": out[lo:hi]}) if _NUMPY_FFT_OUT else (lambda lo, hi: {})
        bounds = np.linspace(0, data.shape[0], self.threads + 1).astype(int)
        pieces = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
        if len(pieces) <= 1:
            fn(data, **kwargs(0, data.shape[0]))
            return
        for future in [self.pool.submit(fn, data[lo:hi], **kwargs(lo, hi)) for lo, hi in pieces]:
            future.result()

    def __call__(self):
        for fn, data, out in self.jobs:
            self._run(fn, data, out)


def time_floor(kernel: str, x: np.ndarray, precision: str, args, pool: ThreadPoolExecutor) -> float:
    fft = FftFloor(floor_inputs(kernel, x, precision), args.threads, pool)
    return timeit_best(fft, args.repeat)


# --------------------------------------------------------------------------- torch equivalents


class TorchEquivalents:
    """The three frontends in plain torch ops, at one precision, on one device: asdx's own torch implementations
    (asdx.torch_kernels, the fallback of ASDX_KERNELS=auto/torch). Their constant tables are built once per
    configuration and device (as a torch user would), so only the per-batch work is timed."""

    def __init__(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.float32 = dtype == torch.float32

    def logmel(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, L) -> (B, C, frames, 128) dB, as logmel_dcase."""
        return torch_kernels.logmel_dcase(x, SAMPLE_RATE, N_FFT, HOP, N_MELS, 0.0, SAMPLE_RATE / 2, self.float32)

    def kaldi(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, L) -> (B, C, frames, 128) natural log, as kaldi_fbank (snip_edges, no dither)."""
        return torch_kernels.kaldi_fbank(x, SAMPLE_RATE, KALDI_LENGTH, KALDI_SHIFT, N_MELS, 20.0, 0.0, 0.97, False,
                                         self.float32)

    def stereo(self, x: torch.Tensor):
        """(B, 2, L) -> (bands, ipd, gcc) in the layouts of asdx.features.stereo_features."""
        return torch_kernels.stereo_features(x, SAMPLE_RATE, N_FFT, HOP, N_MELS, 0.0, SAMPLE_RATE / 2, MAX_LAG,
                                             self.float32)

    def for_kernel(self, kernel: str) -> Callable:
        return {"logmel_dcase": self.logmel, "kaldi_fbank": self.kaldi, "stereo_features": self.stereo}[kernel]


class TorchaudioFrontends:
    """The torchaudio calls people use for these features (CPU), in one dtype, when torchaudio is installed."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=2.0,
            norm="slaney", mel_scale="slaney", pad_mode="constant").to(dtype)

    def logmel(self, x: torch.Tensor) -> torch.Tensor:
        mel = self.melspec(x)  # (B, C, 128, frames)
        return (10.0 * torch.log10(mel.clamp(min=DCASE_FLOOR))).transpose(-1, -2)

    def kaldi(self, x: torch.Tensor) -> torch.Tensor:
        """One compliance.kaldi.fbank call per clip and channel, as BEATs does (computes in x's dtype)."""
        batch, channels, n = x.shape
        out = [torchaudio.compliance.kaldi.fbank(clip.unsqueeze(0) * 2**15, num_mel_bins=N_MELS,
                                                 sample_frequency=SAMPLE_RATE, frame_length=25, frame_shift=10)
               for clip in x.reshape(batch * channels, n)]
        return torch.stack(out).reshape(batch, channels, -1, N_MELS)

    def for_kernel(self, kernel: str) -> Callable | None:
        return {"logmel_dcase": self.logmel, "kaldi_fbank": self.kaldi}.get(kernel)


# --------------------------------------------------------------------------- equivalence checks


def _db_gap(a: torch.Tensor, b: torch.Tensor, *levels: torch.Tensor, floor_db: float = 60.0) -> float:
    """max |a - b| over bands within floor_db of their frame's maximum (in every level, default a)."""
    mask = torch.ones_like(a, dtype=torch.bool)
    for level in levels or (a,):
        mask &= level >= level.amax(dim=-1, keepdim=True) - floor_db
    return (a - b).abs()[mask].max().item()


def _share(a: torch.Tensor, b: torch.Tensor, tol: float) -> float:
    """Share of elements where |a - b| > tol."""
    return ((a - b).abs() > tol).float().mean().item()


def compare(kernel: str, ours, theirs) -> list[tuple[str, float, float]]:
    """(what, value, limit) checks of another implementation's output against asdx's; ok if value <= limit."""
    if kernel == "logmel_dcase":
        return [("max |Δ| dB", _db_gap(ours, theirs), 0.1)]
    if kernel == "kaldi_fbank":
        to_db = 10.0 / math.log(10.0)
        return [("max |Δ| dB", _db_gap(ours * to_db, theirs * to_db), 0.1)]
    (bands, ipd, gcc), (t_bands, t_ipd, t_gcc) = ours, theirs
    logmels = [0, 1, 5, 6]
    same_lag = gcc[..., 0] == t_gcc[..., 0]
    height_gap = (gcc[..., 1] - t_gcc[..., 1]).abs()[same_lag]
    return [
        ("log-mel max |Δ| dB", _db_gap(bands[:, logmels], t_bands[:, logmels]), 0.1),
        ("ILD max |Δ| dB", _db_gap(bands[:, 2], t_bands[:, 2], bands[:, 0], bands[:, 1]), 0.1),
        ("band IPD share |Δ|>0.01", _share(bands[:, 3:5], t_bands[:, 3:5], 0.01), 1e-3),
        ("bin IPD share |Δ|>0.01", _share(ipd, t_ipd, 0.01), 1e-3),
        ("GCC lag mismatch share", 1.0 - same_lag.float().mean().item(), 0.01),
        ("GCC height max |Δ|", height_gap.max().item() if height_gap.numel() else math.inf, 1e-3),
    ]


def _on_cpu(out):
    """An output (array, tensor or tuple of them) as float32 CPU tensors."""
    if isinstance(out, tuple):
        return tuple(_on_cpu(item) for item in out)
    return torch.as_tensor(out).float().cpu()


def check(kernel: str, label: str, ours, theirs) -> str | None:
    """Prints the checks of `label` against asdx; returns a warning line if any fails."""
    try:
        results = compare(kernel, _on_cpu(ours), _on_cpu(theirs))
    except Exception as error:  # e.g. a shape mismatch: report it, keep benchmarking
        print(f"check {kernel}, {label} vs asdx: could not compare ({error})")
        return f"WARNING: {label} of {kernel} could not be compared with asdx ({error})."
    text = "; ".join(f"{what} {value:.3g} (≤ {limit:g}{'' if value <= limit else ' FAILED'})"
                     for what, value, limit in results)
    print(f"check {kernel}, {label} vs asdx: {text}")
    if all(value <= limit for _, value, limit in results):
        return None
    return f"WARNING: {label} of {kernel} disagrees with asdx ({text}); its timing may not be comparable."


# --------------------------------------------------------------------------- rows and report


@dataclass
class Row:
    """One implementation of one frontend at one precision. role: floor, asdx, torch, torchaudio or ref."""

    kernel: str
    precision: str
    role: str
    what: str
    ms: float | None
    note: str = ""  # why ms is None (shown in its place)


@dataclass
class Group:
    """The rows of one (kernel, precision), with the floor used for its ratios."""

    kernel: str
    precision: str
    input: str
    rows: list[Row]
    floor_ms: float | None = None

    def ms(self, role: str) -> float | None:
        return next((r.ms for r in self.rows if r.role == role and r.ms is not None), None)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def row_goal(group: Group, row: Row) -> str:
    asdx_ms = group.ms("asdx")
    if row.role == "asdx":
        target = FLOOR_GOALS.get(group.kernel)
        if target is None:
            return ""
        if row.ms is None or group.floor_ms is None:
            return f"≤{target:g}× floor: not measured"
        return f"≤{target:g}× floor: {_verdict(row.ms / group.floor_ms <= target)}"
    target = SPEEDUP_GOALS[group.kernel].get(row.role)
    if target is None:
        return ""
    if row.ms is None or asdx_ms is None:
        return f"asdx ≥{target:g}×: not measured"
    return f"asdx ≥{target:g}×: {_verdict(row.ms / asdx_ms >= target)}"


def cpu_table(groups: list[Group]) -> list[str]:
    lines = ["| kernel | precision | input | implementation | ms | ÷ floor | asdx speed-up | goal |",
             "|---|---|---|---|---:|---:|---:|---|"]
    for g in groups:
        asdx_ms = g.ms("asdx")
        for r in g.rows:
            if r.ms is None:
                lines.append(f"| {g.kernel} | {g.precision} | {g.input} | {r.what} | {r.note or 'n/a'} |  |  "
                             f"| {row_goal(g, r)} |")
                continue
            what, over_floor = r.what, None if g.floor_ms is None else r.ms / g.floor_ms
            if r.role == "floor":
                over_floor = None
                if g.floor_ms is not None and g.floor_ms < r.ms:  # float32: NumPy's float64 transform was faster
                    what += f" (float64's {g.floor_ms:.1f} ms is faster: the floor used)"
            speedup = None if asdx_ms is None or r.role in ("asdx", "floor") else r.ms / asdx_ms
            lines.append(f"| {g.kernel} | {g.precision} | {g.input} | {what} | {_ms(r.ms)} | {_x(over_floor)} "
                         f"| {_x(speedup)} | {row_goal(g, r)} |")
    return lines


def pocketfft_table(groups: list[Group]) -> list[str]:
    """(b): the most a perfect FFT inside asdx could save is asdx's time minus the bare FFT's."""
    lines = ["| kernel | precision | asdx ms | FFT floor ms | asdx − floor ms | most a perfect FFT swap could save |",
             "|---|---|---:|---:|---:|---|"]
    for g in groups:
        asdx_ms = g.ms("asdx")
        if asdx_ms is None or g.floor_ms is None:
            lines.append(f"| {g.kernel} | {g.precision} | {_ms(asdx_ms)} | {_ms(g.floor_ms)} |  | not measured |")
            continue
        gap = asdx_ms - g.floor_ms
        saving = (f"{gap / asdx_ms:.0%} of asdx's time (upper bound)" if gap > 0 else
                  "nothing: asdx's whole frontend is faster than the bare FFT")
        lines.append(f"| {g.kernel} | {g.precision} | {asdx_ms:.1f} | {g.floor_ms:.1f} | {gap:+.1f} | {saving} |")
    return lines


@dataclass
class GpuRow:
    kernel: str
    precision: str
    input: str
    clips: int
    asdx_ms: float | None
    torch_ms: float
    floor_ms: float
    note: str = ""


def gpu_table(rows: list[GpuRow]) -> list[str]:
    lines = ["| kernel | precision | input | asdx CUDA ms | torch CUDA ms² | cuFFT floor ms⁴ | asdx ÷ floor "
             "| torch/asdx | asdx clips/s | torch clips/s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.asdx_ms is None:
            lines.append(f"| {r.kernel} | {r.precision} | {r.input} | {r.note} | {r.torch_ms:.2f} | {r.floor_ms:.2f} "
                         f"|  |  |  | {r.clips / r.torch_ms * 1e3:,.0f} |")
            continue
        lines.append(f"| {r.kernel} | {r.precision} | {r.input} | {r.asdx_ms:.2f} | {r.torch_ms:.2f} "
                     f"| {r.floor_ms:.2f} | {r.asdx_ms / r.floor_ms:.2f}× | {r.torch_ms / r.asdx_ms:.1f}× "
                     f"| {r.clips / r.asdx_ms * 1e3:,.0f} | {r.clips / r.torch_ms * 1e3:,.0f} |")
    return lines


# --------------------------------------------------------------------------- main


def make_input(clips: int, seconds: float) -> np.ndarray:
    """(clips, 2, samples) float32 noise: near is white noise, far a delayed, quieter copy plus its own noise
    (so GCC-PHAT has a real peak to find); seeded, so every run times the same data."""
    rng = np.random.default_rng(0)
    samples = int(round(seconds * SAMPLE_RATE))
    near = 0.1 * rng.standard_normal((clips, samples))
    far = 0.6 * np.roll(near, 7, axis=-1) + 0.03 * rng.standard_normal((clips, samples))
    return np.stack([near, far], axis=1).astype(np.float32)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_frontend", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64, help="clips per batch (default 64)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per clip at 16 kHz (default 10)")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for asdx, torch and the FFT floor (default 2)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs after one warm-up; best is kept (default 5)")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    parser.add_argument("--only", choices=("all", "stereo_view"), default="all",
                        help="all frontends (default) or the w1 stereo view's table alone")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2 clips x 1 s, 1 repeat; implies --no-record")
    args = parser.parse_args(argv)
    if args.quick:
        args.clips, args.seconds, args.repeat, args.no_record = 2, 1.0, 1, True
    if args.clips < 1 or args.seconds <= 0 or args.threads < 1 or args.repeat < 1:
        parser.error("--clips, --seconds, --threads and --repeat must be positive")
    return args


def _kernel_input(kernel: str, stereo: np.ndarray) -> np.ndarray:
    return stereo if kernel == "stereo_features" else np.ascontiguousarray(stereo[:, :1])


def run_cpu(stereo: np.ndarray, args, label: dict[str, str], warnings: list[str]) -> list[Group]:
    equivalents = {p: TorchEquivalents("cpu", TORCH_DTYPE[p]) for p in PRECISIONS}
    audio = {p: TorchaudioFrontends(TORCH_DTYPE[p]) for p in PRECISIONS} if torchaudio is not None else {}
    n_ref = min(args.clips, REF_CLIPS)
    groups: list[Group] = []
    with ThreadPoolExecutor(args.threads) as pool:
        for kernel in KERNELS:
            x = _kernel_input(kernel, stereo)
            subset = x[:n_ref]
            floor64 = None
            for precision in PRECISIONS:
                rows: list[Row] = []
                group = Group(kernel, precision, label[kernel], rows)
                # asdx, checked for availability on the subset first
                ours, ours_subset, why = try_asdx(kernel, precision, subset)
                # floor: the bare FFTs of the same frames, framing excluded
                floor_ms = time_floor(kernel, x, precision, args, pool)
                what = f"FFT floor: numpy.fft.rfft, {precision} frames¹"
                if kernel == "stereo_features":
                    what = f"FFT floor: numpy.fft.rfft (near, far) + irfft (GCC), {precision}¹"
                rows.append(Row(kernel, precision, "floor", what, floor_ms))
                if precision == "float64":
                    floor64 = group.floor_ms = floor_ms
                else:  # a floor is the least the FFTs cost: NumPy's float32 path can be the slower one
                    group.floor_ms = min(floor_ms, floor64) if floor64 is not None else floor_ms
                asdx_ms = timeit_best(lambda: ours(x), args.repeat) if ours is not None else None
                rows.append(Row(kernel, precision, "asdx", f"asdx CPU ({precision} FFT)", asdx_ms, why))

                # torch in the same precision; checked against asdx of that precision (float64 asdx if none)
                reference_out = ours_subset if ours_subset is not None else getattr(features, kernel)(subset)
                torch_fn = equivalents[precision].for_kernel(kernel)
                x_torch = torch.from_numpy(x).to(TORCH_DTYPE[precision])
                warnings.append(check(kernel, f"torch CPU equivalent {precision}", reference_out,
                                      torch_fn(x_torch[:n_ref])))
                rows.append(Row(kernel, precision, "torch", f"torch CPU equivalent ({precision})²",
                                timeit_best(lambda: torch_fn(x_torch), args.repeat)))
                if kernel == "stereo_features":
                    pass  # torchaudio has no counterpart: no row
                elif torchaudio is None:
                    rows.append(Row(kernel, precision, "torchaudio", f"torchaudio ({precision})³", None, NO_TORCHAUDIO))
                else:
                    audio_fn = audio[precision].for_kernel(kernel)
                    warnings.append(check(kernel, f"torchaudio {precision}", reference_out, audio_fn(x_torch[:n_ref])))
                    rows.append(Row(kernel, precision, "torchaudio", f"torchaudio ({precision})³",
                                    timeit_best(lambda: audio_fn(x_torch), args.repeat)))
                if precision == "float64":
                    ref = getattr(reference, kernel)
                    rows.append(Row(kernel, precision, "ref", "NumPy reference (asdx.reference, float64)⁵",
                                    timeit_best(lambda: ref(subset), args.repeat) * args.clips / n_ref))
                groups.append(group)
                print(f"timed {kernel} {precision}: " + ", ".join(
                    f"{r.role} {_ms(r.ms)}" + (" ms" if r.ms is not None else f" ({r.note})") for r in rows),
                      flush=True)
    return groups


def run_gpu(stereo: np.ndarray, args, label: dict[str, str], warnings: list[str],
            device: torch.device | str = "cuda") -> list[GpuRow]:
    """asdx CUDA vs the torch equivalents and a cuFFT floor on `device`, both precisions (data already there)."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x = torch.from_numpy(stereo).to(device)
    rows = []
    for kernel in KERNELS:
        data = x if kernel == "stereo_features" else x[:, :1].contiguous()
        host = _kernel_input(kernel, stereo)
        for precision in PRECISIONS:
            dtype = TORCH_DTYPE[precision]
            torch_fn = TorchEquivalents(device, dtype).for_kernel(kernel)
            typed = data.to(dtype)
            ours, ours_subset, why = try_asdx(kernel, precision, data[:REF_CLIPS])
            reference_out = ours_subset if ours_subset is not None else getattr(features, kernel)(data[:REF_CLIPS])
            warnings.append(check(kernel, f"torch {device.type} equivalent {precision}", reference_out,
                                  torch_fn(typed[:REF_CLIPS])))
            # cuFFT floor: torch.fft.rfft / irfft of the same prepared frames, already on the device
            jobs = [(kind, torch.from_numpy(a).to(device)) for kind, a in floor_inputs(kernel, host, precision)]

            def floor():
                for kind, a in jobs:
                    torch.fft.rfft(a, dim=-1) if kind == "rfft" else torch.fft.irfft(a, n=N_FFT, dim=-1)

            floor_ms = timeit_best(floor, args.repeat, sync)
            asdx_ms = timeit_best(lambda: ours(data), args.repeat, sync) if ours is not None else None
            torch_ms = timeit_best(lambda: torch_fn(typed), args.repeat, sync)
            rows.append(GpuRow(kernel, precision, label[kernel], args.clips, asdx_ms, torch_ms, floor_ms, why))
    return rows


# --------------------------------------------------------------------------- the w1 stereo view


def _reflect_frames(signals: np.ndarray) -> np.ndarray:
    """(..., frames, N_FFT) float32 periodic-Hann frames, centred with reflect padding (the w1 recipe)."""
    padded = np.pad(signals, [(0, 0)] * (signals.ndim - 1) + [(N_FFT // 2, N_FFT // 2)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=-1)[..., ::HOP, :]
    return (windows * (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT))).astype(np.float32)


def run_stereo_view(stereo: np.ndarray, args, pool: ThreadPoolExecutor, warnings: list[str]) -> list[str]:
    """The w1 view's table: asdx CPU vs its FFT floor, torch and the reference; asdx CUDA vs torch and cuFFT."""
    near, far = _reflect_frames(stereo[:, 0]), _reflect_frames(stereo[:, 1])
    residual = np.fft.rfft(near).astype(np.complex64)  # any spectrum of the right shape: only the time counts
    jobs = [("rfft", near.reshape(-1, N_FFT)), ("rfft", far.reshape(-1, N_FFT)),
            ("irfft", residual.reshape(-1, residual.shape[-1]))]
    floor_ms = timeit_best(FftFloor(jobs, args.threads, pool), args.repeat)
    n_ref = min(args.clips, REF_CLIPS)
    expected = reference.stereo_view.w1_residual(stereo[:n_ref])
    x_torch = torch.from_numpy(stereo)
    peak = float(np.abs(stereo[:n_ref]).max())
    for name, out in (("asdx CPU", features.stereo_view(stereo[:n_ref])),
                      ("torch CPU", torch_kernels.stereo_view_w1(x_torch[:n_ref]).numpy())):
        error = float(np.abs(out[:, :-64] - expected[:, :-64]).max()) / peak
        if error > 1e-5:
            warnings.append(f"WARNING: stereo_view w1 {name} differs from the reference by {error:.2g} of the peak")
    rows = [("FFT floor: numpy.fft rfft (near, far) + irfft, float32¹", floor_ms),
            ("asdx CPU (float32)", timeit_best(lambda: features.stereo_view(stereo), args.repeat)),
            ("torch CPU: torch.stft/istft (asdx.torch_kernels)", timeit_best(
                lambda: torch_kernels.stereo_view_w1(x_torch), args.repeat)),
            ("NumPy reference (float64)⁵", timeit_best(lambda: reference.stereo_view.w1_residual(stereo[:n_ref]),
                                                       args.repeat) * args.clips / n_ref)]
    if torch.cuda.is_available() and asdx.info()["cuda_kernels_compiled"]:
        x_gpu = x_torch.cuda()
        sync = torch.cuda.synchronize
        gpu_jobs = [(kind, torch.from_numpy(np.ascontiguousarray(a)).cuda()) for kind, a in jobs]

        def cufft():
            for kind, a in gpu_jobs:
                torch.fft.rfft(a, dim=-1) if kind == "rfft" else torch.fft.irfft(a, n=N_FFT, dim=-1)

        rows += [("cuFFT floor: torch.fft rfft (near, far) + irfft, float32⁴", timeit_best(cufft, args.repeat, sync)),
                 ("asdx CUDA (float32)", timeit_best(lambda: features.stereo_view(x_gpu), args.repeat, sync)),
                 ("torch CUDA: torch.stft/istft", timeit_best(lambda: torch_kernels.stereo_view_w1(x_gpu),
                                                             args.repeat, sync))]
    gpu_floor = next((ms for what, ms in rows if what.startswith("cuFFT")), None)
    lines = [f"stereo_view (w1), {args.clips} × {args.seconds:g} s stereo → one channel:", "",
             "| implementation | ms | ÷ floor |", "|---|---:|---:|"]
    for what, ms in rows:
        base = gpu_floor if ("CUDA" in what or "cuFFT" in what) else floor_ms
        lines.append(f"| {what} | {ms:.1f} | {ms / base:.2f} |")
    print("\n".join(lines), flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    asdx.set_num_threads(args.threads)
    stereo = make_input(args.clips, args.seconds)
    size = f"{args.clips} × {args.seconds:g} s"
    label = {"logmel_dcase": f"{size} mono", "kaldi_fbank": f"{size} mono", "stereo_features": f"{size} stereo"}
    warnings: list[str] = []

    if args.only == "stereo_view":
        with torch.inference_mode(), ThreadPoolExecutor(args.threads) as pool:
            table = run_stereo_view(stereo, args, pool, warnings)
        gpu_name = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        section = [f"## bench_frontend --only stereo_view — {datetime.now().astimezone().isoformat(timespec='seconds')}",
                   "", *machine_lines(args.threads, gpu_name), "", *table, "",
                   f"Best of {args.repeat} after one warm-up call, the same seeded noise as bench_frontend. "
                   "¹ the floor: only the transforms of the w1 recipe (two 1024-point rffts and one irfft per "
                   f"frame), frames prepared before timing, over {args.threads} Python threads. ⁴ the same on the "
                   f"GPU. ⁵ timed on {min(args.clips, REF_CLIPS)} clips, scaled to {args.clips}. asdx CPU runs one "
                   "clip per thread (H needs the whole clip).", *[w for w in warnings if w]]
        print()
        publish(section, record_it=not args.no_record)
        return 0
    with torch.inference_mode():
        groups = run_cpu(stereo, args, label, warnings)
        with ThreadPoolExecutor(args.threads) as pool:
            view_table = run_stereo_view(stereo, args, pool, warnings)
        gpu_rows, gpu_name = [], None
        if not torch.cuda.is_available():
            gpu_note = "GPU rows skipped: torch sees no CUDA device."
        elif not asdx.info()["cuda_kernels_compiled"]:
            gpu_note = "GPU rows skipped: this asdx build has no CUDA kernels."
        else:
            gpu_name = torch.cuda.get_device_name()
            gpu_rows = run_gpu(stereo, args, label, warnings)
            gpu_note = (f"GPU rows: data already on {gpu_name}; torch.cuda.synchronize() after each call; asdx float64 "
                        "vs torch float64 and asdx precision=\"float32\" vs torch float32.")
    warnings = [w for w in warnings if w]

    n_ref = min(args.clips, REF_CLIPS)
    missing_precision = any(r.note == NO_PRECISION for g in groups for r in g.rows)
    section = [f"## bench_frontend — {datetime.now().astimezone().isoformat(timespec='seconds')}", "",
               *machine_lines(args.threads, gpu_name), "", *cpu_table(groups), ""]
    if gpu_rows:
        section += [*gpu_table(gpu_rows), ""]
    section += [*view_table, ""]
    section += [
        "Would a header-only pocketfft inside the fused frontend pay? Replacing asdx's own FFT by a perfect one "
        "saves at most asdx's time minus the floor (the bound assumes the FFT were all of asdx's time; the mel "
        "sums, logs and framing that asdx also does only lower it):",
        "",
        *pocketfft_table(groups),
        "",
        f"Times are for the whole batch, best of {args.repeat} after one warm-up call; input is seeded noise "
        "(16 kHz; far channel = quieter 7-sample-delayed copy of near plus its own noise). asdx always takes "
        "float32 audio; its precision is the FFT's. Each row's ÷ floor is its time over the floor of its precision; "
        "asdx speed-up is its time over asdx's of the same precision.",
        f"¹ The FFT floor: numpy.fft.rfft (pocketfft since NumPy 1.17) of the frames {'into preallocated outputs ' if _NUMPY_FFT_OUT else ''}"
        f"over {args.threads} Python threads (NumPy releases the GIL), i.e. only the transforms: framing, windowing "
        "(and Kaldi's DC removal, pre-emphasis and zero padding to 512) are done before timing and are excluded. "
        "logmel_dcase: one 1024-point rfft per frame; kaldi_fbank: one 512-point rfft per frame; stereo_features: "
        "an rfft of the near and of the far frame plus a 1024-point irfft (GCC-PHAT) per frame. The float32 ratios "
        "use the faster of NumPy's float32 and float64 transforms as the floor (NumPy ≥ 2 computes float32 in "
        "float32, not always faster).",
        "² torch equivalents: asdx.torch_kernels (asdx's torch fallback) computing in the row's dtype (unfold + "
        "rfft, matmul with the same filterbanks, log; GCC-PHAT via irfft), checked against asdx of the same "
        "precision before timing; the float64 rows get float64 input (conversion not timed).",
        "³ torchaudio: MelSpectrogram(norm/mel_scale 'slaney') + 10·log10 for logmel_dcase; one "
        "compliance.kaldi.fbank call per clip for kaldi_fbank; no torchaudio counterpart of stereo_features. "
        + ("" if torchaudio is not None else f"{NO_TORCHAUDIO} here, so its rows read so."),
        *(["⁴ cuFFT floor: torch.fft.rfft / irfft of the same prepared frames on the GPU, in the row's precision."]
          if gpu_rows else []),
        f"⁵ asdx.reference (NumPy, float64) timed on {n_ref} of {args.clips} clips and scaled linearly "
        f"(× {args.clips / n_ref:g}).",
        "",
        "Goals: logmel_dcase within 1.5× of the FFT floor; logmel_dcase and stereo_features ≥20× the NumPy "
        "reference and ≥2× torch CPU in the same precision; kaldi_fbank ≥5× torchaudio CPU "
        "(compliance.kaldi.fbank) in the same precision.",
        *([f"asdx float32 rows: {NO_PRECISION} in this asdx build."] if missing_precision else []),
        gpu_note,
        *warnings,
    ]
    print()
    publish(section, record_it=not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
