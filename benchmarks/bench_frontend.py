"""Frontend benchmark: asdx's feature kernels against the NumPy reference, torch and torchaudio.

For each frontend (logmel_dcase, kaldi_fbank, stereo_features) it times, on one
batch of deterministic noise (default 64 clips x 10 s at 16 kHz):
  - asdx CPU (asdx.features),
  - the NumPy reference (asdx.reference), on a subset of clips scaled to the batch,
  - torch CPU equivalents written below (torch.stft / unfold + rfft and matmuls),
  - torchaudio, when it is installed (MelSpectrogram; compliance.kaldi.fbank per clip),
and, when torch sees a GPU and asdx was built with CUDA, asdx CUDA against the
torch equivalents on the GPU. Times are best-of-N after one warm-up call. Before
timing, the torch equivalents are checked against asdx so that a wrong equivalent
is not benchmarked silently (a failed check prints a warning; the run goes on).

Run from the repository root:
    python benchmarks/bench_frontend.py [--clips 64] [--seconds 10] [--threads 2] [--repeat 5]
    python -m benchmarks frontend [same options]
--quick runs tiny sizes as a smoke test; it and --no-record leave benchmarks/RESULTS.md
alone, otherwise a section with the machine, the table and footnotes is appended to it.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

import asdx
import asdx.features as features
import asdx.reference as reference

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import machine_lines, publish, timeit_best

try:
    import torchaudio
except ImportError:  # optional: its columns read n/a
    torchaudio = None

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 1024, 512, 128
KALDI_LENGTH, KALDI_SHIFT, KALDI_PADDED = 400, 160, 512
MAX_LAG = 320
DCASE_FLOOR = 2.220446049250313e-16
KALDI_FLOOR = float(torch.finfo(torch.float32).eps)
REF_CLIPS = 8  # the NumPy reference is timed on this many clips and scaled to the batch
# Speed-up goals: (baseline column, minimum baseline_ms / asdx_ms).
GOALS = {
    "logmel_dcase": [("ref", 20.0), ("torch", 2.0)],
    "kaldi_fbank": [("torchaudio", 5.0)],
    "stereo_features": [("ref", 20.0), ("torch", 2.0)],
}


# --------------------------------------------------------------------------- torch equivalents


class TorchEquivalents:
    """The three frontends written with plain torch ops (float32), on one device.

    These are equivalents for the benchmark, not asdx code: filterbanks and windows
    are built once here, as a torch user would, and only the per-batch work is timed.
    """

    def __init__(self, device: str | torch.device = "cpu"):
        def tensor(array):
            return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=device)

        self.slaney = tensor(reference.slaney_mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS).T)  # (513, 128)
        self.kaldi_bank = tensor(reference.kaldi_mel_filterbank(SAMPLE_RATE, KALDI_PADDED, N_MELS).T)  # (257, 128)
        self.hann = torch.hann_window(N_FFT, periodic=True, device=device)
        self.povey = torch.hann_window(KALDI_LENGTH, periodic=False, device=device).pow(0.85)

    def _stft(self, signals: torch.Tensor) -> torch.Tensor:
        """(..., samples) -> complex (..., frames, bins), centred zero-padded frames."""
        lead, n = signals.shape[:-1], signals.shape[-1]
        spec = torch.stft(signals.reshape(-1, n), n_fft=N_FFT, hop_length=HOP, window=self.hann, center=True,
                          pad_mode="constant", return_complex=True)
        return spec.transpose(-1, -2).reshape(*lead, spec.shape[-1], spec.shape[-2])

    def _db(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10((power @ self.slaney).clamp(min=DCASE_FLOOR))

    def logmel(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, L) -> (B, C, frames, 128) dB, as logmel_dcase."""
        spec = self._stft(x)
        return self._db(spec.real.square() + spec.imag.square())

    def kaldi(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, L) -> (B, C, frames, 128) natural log, as kaldi_fbank (snip_edges, no dither)."""
        frames = (x * 32768.0).unfold(-1, KALDI_LENGTH, KALDI_SHIFT)  # (B, C, frames, 400)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        spec = torch.fft.rfft((frames - 0.97 * previous) * self.povey, n=KALDI_PADDED)
        power = spec.real.square() + spec.imag.square()
        return torch.log((power @ self.kaldi_bank).clamp(min=KALDI_FLOOR))

    @staticmethod
    def _phasor(re: torch.Tensor, im: torch.Tensor, floor: float = 1e-20):
        magnitude = torch.hypot(re, im)
        ok = magnitude > floor
        return torch.where(ok, re / magnitude, 1.0), torch.where(ok, im / magnitude, 0.0)

    def stereo(self, x: torch.Tensor):
        """(B, 2, L) -> (bands, ipd, gcc) in the layouts of asdx.features.stereo_features."""
        spec = self._stft(x)  # (B, 2, frames, 513)
        near, far = spec[:, 0], spec[:, 1]
        both = torch.stack([near, far, near + far, near - far], dim=1)
        power = both.real.square() + both.imag.square()
        power[:, 2:] *= 0.5  # mid and side are (near +- far) / sqrt 2
        mel = power @ self.slaney  # (B, 4, frames, 128)
        logmel = 10.0 * torch.log10(mel.clamp(min=DCASE_FLOOR))
        ild = 10.0 * torch.log10((mel[:, 0] + 1e-10) / (mel[:, 1] + 1e-10))

        cross = near * far.conj()
        band_cos, band_sin = self._phasor(cross.real @ self.slaney, cross.imag @ self.slaney)
        bin_cos, bin_sin = self._phasor(cross.real, cross.imag)
        bands = torch.stack([logmel[:, 0], logmel[:, 1], ild, band_cos, band_sin, logmel[:, 2], logmel[:, 3]], dim=1)
        ipd = torch.stack([bin_cos, bin_sin], dim=1)

        phat = cross.conj() / (cross.abs() + 1e-20)
        correlation = torch.fft.irfft(phat, n=N_FFT)  # (B, frames, 1024), lag k at index k mod 1024
        window = torch.cat([correlation[..., -MAX_LAG:], correlation[..., : MAX_LAG + 1]], dim=-1)
        height, index = window.max(dim=-1)
        gcc = torch.stack([(index - MAX_LAG).to(height.dtype), height], dim=-1)
        return bands, ipd, gcc


class TorchaudioFrontends:
    """The torchaudio calls people use for these features (CPU), when torchaudio is installed."""

    def __init__(self):
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=2.0,
            norm="slaney", mel_scale="slaney", pad_mode="constant")

    def logmel(self, x: torch.Tensor) -> torch.Tensor:
        mel = self.melspec(x)  # (B, C, 128, frames)
        return (10.0 * torch.log10(mel.clamp(min=DCASE_FLOOR))).transpose(-1, -2)

    def kaldi(self, x: torch.Tensor) -> torch.Tensor:
        """One compliance.kaldi.fbank call per clip and channel, as BEATs does."""
        batch, channels, n = x.shape
        out = [torchaudio.compliance.kaldi.fbank(clip.unsqueeze(0) * 2**15, num_mel_bins=N_MELS,
                                                 sample_frequency=SAMPLE_RATE, frame_length=25, frame_shift=10)
               for clip in x.reshape(batch * channels, n)]
        return torch.stack(out).reshape(batch, channels, -1, N_MELS)


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
    kernel: str
    input: str
    asdx_ms: float
    ref_ms: float | None = None
    torch_ms: float | None = None
    torchaudio_ms: float | None = None

    def ratio(self, baseline: str) -> float | None:
        ms = getattr(self, f"{baseline}_ms")
        return None if ms is None else ms / self.asdx_ms

    def goals(self) -> str:
        cells = []
        for baseline, target in GOALS[self.kernel]:
            ratio = self.ratio(baseline)
            verdict = "not measured" if ratio is None else ("met" if ratio >= target else "NOT met")
            cells.append(f"≥{target:g}× {baseline}: {verdict}")
        return "; ".join(cells)


@dataclass
class GpuRow:
    kernel: str
    input: str
    clips: int
    asdx_ms: float
    torch_ms: float


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}×"


def cpu_table(rows: list[Row]) -> list[str]:
    lines = ["| kernel | input | asdx CPU ms | NumPy ref ms¹ | torch CPU ms² | torchaudio ms³ "
             "| ref/asdx | torch/asdx | torchaudio/asdx | goals |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.kernel} | {r.input} | {_ms(r.asdx_ms)} | {_ms(r.ref_ms)} | {_ms(r.torch_ms)} "
                     f"| {_ms(r.torchaudio_ms)} | {_x(r.ratio('ref'))} | {_x(r.ratio('torch'))} "
                     f"| {_x(r.ratio('torchaudio'))} | {r.goals()} |")
    return lines


def gpu_table(rows: list[GpuRow]) -> list[str]:
    lines = ["| kernel | input | asdx CUDA ms | torch CUDA ms² | torch/asdx | asdx clips/s | torch clips/s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.kernel} | {r.input} | {r.asdx_ms:.2f} | {r.torch_ms:.2f} | {r.torch_ms / r.asdx_ms:.1f}× "
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
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for asdx and torch (default 2)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs after one warm-up; best is kept (default 5)")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2 clips x 1 s, 1 repeat; implies --no-record")
    args = parser.parse_args(argv)
    if args.quick:
        args.clips, args.seconds, args.repeat, args.no_record = 2, 1.0, 1, True
    if args.clips < 1 or args.seconds <= 0 or args.threads < 1 or args.repeat < 1:
        parser.error("--clips, --seconds, --threads and --repeat must be positive")
    return args


def run_cpu(stereo: np.ndarray, args, label: dict[str, str], warnings: list[str]) -> list[Row]:
    mono = np.ascontiguousarray(stereo[:, :1])
    inputs = {"logmel_dcase": mono, "kaldi_fbank": mono, "stereo_features": stereo}
    equivalents = TorchEquivalents("cpu")
    torch_fns = {"logmel_dcase": equivalents.logmel, "kaldi_fbank": equivalents.kaldi,
                 "stereo_features": equivalents.stereo}
    audio_fns = {}
    if torchaudio is not None:
        frontends = TorchaudioFrontends()
        audio_fns = {"logmel_dcase": frontends.logmel, "kaldi_fbank": frontends.kaldi}

    n_ref = min(args.clips, REF_CLIPS)
    rows = []
    for kernel, x in inputs.items():
        ours, ref = getattr(features, kernel), getattr(reference, kernel)
        x_torch = torch.from_numpy(x)
        subset = x[:n_ref]
        for name, fn in [("torch CPU equivalent", torch_fns[kernel]), ("torchaudio", audio_fns.get(kernel))]:
            if fn is not None:
                warnings.append(check(kernel, name, ours(subset), fn(torch.from_numpy(subset))))
        row = Row(kernel, label[kernel], timeit_best(lambda: ours(x), args.repeat))
        row.ref_ms = timeit_best(lambda: ref(subset), args.repeat) * args.clips / n_ref
        row.torch_ms = timeit_best(lambda: torch_fns[kernel](x_torch), args.repeat)
        if kernel in audio_fns:
            row.torchaudio_ms = timeit_best(lambda: audio_fns[kernel](x_torch), args.repeat)
        rows.append(row)
        print(f"timed {kernel}: asdx {row.asdx_ms:.1f} ms, ref {row.ref_ms:.1f} ms, torch {row.torch_ms:.1f} ms, "
              f"torchaudio {_ms(row.torchaudio_ms)}{'' if row.torchaudio_ms is None else ' ms'}", flush=True)
    return rows


def run_gpu(stereo: np.ndarray, args, label: dict[str, str], warnings: list[str]) -> list[GpuRow]:
    device = torch.device("cuda")
    x = torch.from_numpy(stereo).to(device)
    mono = x[:, :1].contiguous()
    equivalents = TorchEquivalents(device)
    cases = [("logmel_dcase", mono, equivalents.logmel), ("kaldi_fbank", mono, equivalents.kaldi),
             ("stereo_features", x, equivalents.stereo)]
    rows = []
    for kernel, data, torch_fn in cases:
        ours = getattr(features, kernel)
        warnings.append(check(kernel, "torch CUDA equivalent", ours(data[:REF_CLIPS]), torch_fn(data[:REF_CLIPS])))
        asdx_ms = timeit_best(lambda: ours(data), args.repeat, torch.cuda.synchronize)
        torch_ms = timeit_best(lambda: torch_fn(data), args.repeat, torch.cuda.synchronize)
        rows.append(GpuRow(kernel, label[kernel], args.clips, asdx_ms, torch_ms))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    asdx.set_num_threads(args.threads)
    stereo = make_input(args.clips, args.seconds)
    size = f"{args.clips} × {args.seconds:g} s"
    label = {"logmel_dcase": f"{size} mono", "kaldi_fbank": f"{size} mono", "stereo_features": f"{size} stereo"}
    warnings: list[str] = []

    with torch.inference_mode():
        rows = run_cpu(stereo, args, label, warnings)
        gpu_rows, gpu_name = [], None
        if not torch.cuda.is_available():
            gpu_note = "GPU rows skipped: torch sees no CUDA device."
        elif not asdx.info()["cuda_kernels_compiled"]:
            gpu_note = "GPU rows skipped: this asdx build has no CUDA kernels."
        else:
            gpu_name = torch.cuda.get_device_name()
            gpu_rows = run_gpu(stereo, args, label, warnings)
            gpu_note = f"GPU rows: data already on {gpu_name}; torch.cuda.synchronize() after each call."
    warnings = [w for w in warnings if w]

    n_ref = min(args.clips, REF_CLIPS)
    section = [f"## bench_frontend — {datetime.now().astimezone().isoformat(timespec='seconds')}", "",
               *machine_lines(args.threads, gpu_name), "", *cpu_table(rows), ""]
    if gpu_rows:
        section += [*gpu_table(gpu_rows), ""]
    section += [
        f"Times are for the whole batch, best of {args.repeat} after one warm-up call; input is seeded noise "
        "(16 kHz; far channel = quieter 7-sample-delayed copy of near plus its own noise).",
        f"¹ asdx.reference (NumPy, float64) timed on {n_ref} of {args.clips} clips and scaled linearly "
        f"(× {args.clips / n_ref:g}).",
        "² torch equivalents written in benchmarks/bench_frontend.py (float32: torch.stft or unfold + rfft, "
        "matmul with the same filterbanks; GCC-PHAT via irfft), checked against asdx before timing.",
        "³ torchaudio: MelSpectrogram(norm/mel_scale 'slaney') + 10·log10 for logmel_dcase; one "
        "compliance.kaldi.fbank call per clip for kaldi_fbank; no torchaudio counterpart of stereo_features. "
        + ("" if torchaudio is not None else "torchaudio is not installed here, so its columns read n/a."),
        "",
        "Goals: logmel_dcase and stereo_features ≥20× the NumPy reference and ≥2× torch CPU; "
        "kaldi_fbank ≥5× torchaudio CPU (compliance.kaldi.fbank).",
        gpu_note,
        *warnings,
    ]
    print()
    publish(section, record_it=not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
