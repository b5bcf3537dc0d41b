"""Synthetic DCASE 2026 Task 2 dataset: the on-disk layout of asdx.data.dataset, made up.

``generate(out)`` writes, for every selected machine type (sounds in asdx.data.sounds):

* ``<kind>_data/raw/<machine>/train/section_00_<source|target>_train_normal_<NNNN>_<attrs>.wav``
  (0-based indices, as in 2023/2025) and ``attributes_00.csv``;
* dev: ``test/section_00_<domain>_test_<label>_<NNNN>_<attrs>.wav``;
* eval: ``test/section_00_<NNNN>.wav`` (a seeded shuffle of the 4 cells) and the
  evaluator ground truth in ``eval_data/ground_truth/ground_truth_{data,domain,attributes}/``.

``preview/<machine>.png`` shows one source and one target train clip per machine: the near
and far spectrograms and the near/far residual (view "w1", asdx.reference.stereo_view).

Clips are 16-bit stereo 16 kHz WAVs. The background is a scene by default (point-like
interferers that reach both microphones coherently, over a diffuse floor: asdx.data.scene);
``background="diffuse"`` makes the earlier set (independent noise per microphone). Machines with hidden attributes write
``noAttribute`` (bearingEmu, sliderEmu, ToothBrush, BlowerDustCollector). Every clip
is rendered from its own numpy Generator seeded by (seed, machine, split, domain,
label, index): the output depends only on the settings, not on run order.

Resuming: ``<out>/asdx_synth.json`` records the settings. Re-running with the same
settings skips every clip already complete on disk (rewriting CSVs, which are
cheap and deterministic), so an interrupted run resumes and a finished one is a
no-op; other machines may be added. Different settings, or a non-empty folder
without that file, raise ValueError rather than mixing data.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from asdx._atomic import PARTIAL_SUFFIX, atomic_write, atomic_write_text
from asdx.data.audio import check_wav_complete
from asdx.data.dataset import ground_truth_dir, ground_truth_file, raw_dir
from asdx.data.machines import MachineType, registry_names, resolve_registry
from asdx.data.names import anonymised_name, labelled_name
from asdx.data.sounds import ANOMALY_KINDS, BACKGROUNDS, SAMPLE_RATE, SOUNDS, name_code, render

MANIFEST = "asdx_synth.json"
PREVIEW = "preview"
DEFAULT_SIZES = {"seconds": 2.0, "n_source": 30, "n_target": 6, "n_test": 12}
FULL_SIZES = {"seconds": 10.0, "n_source": 990, "n_target": 10, "n_test": 50}  # DCASE sizes per machine
SECTION = "00"
_CODES = {"train": 0, "test": 1, "source": 0, "target": 1, "normal": 0, "anomaly": 1}


@dataclass(frozen=True)
class PlannedClip:
    """One clip to write: where, what it is and (for anomalies) which kind."""

    path: Path
    machine: str
    split: str
    domain: str
    label: str
    index: int  # the index in the labelled name (for eval test: the anonymised index)
    attributes: dict
    anomaly: str | None
    labelled_stem: str  # the labelled (renamed) name without .wav


def plan(out: Path, machine: MachineType, seed: int, sizes: dict) -> list[PlannedClip]:
    """Every clip of one machine, in a fixed order (train source, train target, test cells)."""
    spec = SOUNDS[machine.name]
    base = raw_dir(out, machine.dataset) / machine.name
    planned: list[PlannedClip] = []
    cells = [("train", "source", "normal", sizes["n_source"]), ("train", "target", "normal", sizes["n_target"])]
    cells += [("test", d, lab, sizes["n_test"]) for d in ("source", "target") for lab in ("normal", "anomaly")]
    test_total = 4 * sizes["n_test"]
    order = np.random.default_rng([seed, name_code(machine.name), 3]).permutation(test_total)
    test_position = 0
    for split, domain, label, count in cells:
        for i in range(count):
            codes = [_CODES[split], _CODES[domain], _CODES[label], i]
            rng = np.random.default_rng([seed, name_code(machine.name), 1, *codes])
            attributes = {a.key: str(rng.choice(a.source if domain == "source" else a.target))
                          for a in spec.attributes}
            anomaly = ANOMALY_KINDS[i % len(ANOMALY_KINDS)] if label == "anomaly" else None
            index = i
            if split == "test" and machine.dataset == "eval":
                index = int(order[test_position])
                test_position += 1
            stem = labelled_name(SECTION, domain, split, label, index, attributes, spec.hidden)[:-4]
            file_name = anonymised_name(SECTION, index) if (split == "test" and machine.dataset == "eval") \
                else stem + ".wav"
            planned.append(PlannedClip(base / split / file_name, machine.name, split, domain, label, index,
                                       attributes, anomaly, stem))
    return planned


def _clip_done(path: Path, n_samples: int) -> bool:
    if not path.is_file():
        return False
    try:
        check_wav_complete(path)
        info = sf.info(str(path))
    except (ValueError, RuntimeError, sf.SoundFileError):
        return False
    return (info.frames == n_samples and info.channels == 2 and info.samplerate == SAMPLE_RATE
            and info.subtype == "PCM_16")


def _write_clip(clip: PlannedClip, seed: int, n_samples: int, background: str) -> None:
    codes = [_CODES[clip.split], _CODES[clip.domain], _CODES[clip.label], clip.index]
    rng = np.random.default_rng([seed, name_code(clip.machine), 2, *codes])
    audio = render(clip.machine, clip.attributes, clip.domain, clip.anomaly, n_samples, seed, rng, background)
    pcm = np.clip(np.round(audio.T * 32768.0), -32768, 32767).astype(np.int16)
    clip.path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(clip.path, lambda temp: sf.write(str(temp), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV"))


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def _attributes_csv(machine: MachineType, planned: list[PlannedClip]) -> str:
    """``file_name,d1p,d1v[,...]`` (attributes_00.csv): train rows, and dev test rows; hidden attributes stay empty."""
    spec = SOUNDS[machine.name]
    header = ["file_name"] + [f"d{i}{s}" for i in range(1, len(spec.attributes) + 1) for s in ("p", "v")]
    lines = [",".join(header)]
    for clip in planned:
        if clip.split == "test" and machine.dataset == "eval":
            continue
        cells = [f"{machine.name}/{clip.split}/{clip.path.name}"]
        for key, value in clip.attributes.items():
            cells += ["", ""] if spec.hidden else [key, value]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _write_ground_truth(out: Path, machine: MachineType, planned: list[PlannedClip]) -> None:
    """The evaluator's three headerless ground-truth files, sorted by name."""
    tests = sorted((c for c in planned if c.split == "test"), key=lambda c: c.path.name)
    rows = {
        "data": [f"{c.path.name},{_CODES[c.label]}" for c in tests],
        "domain": [f"{c.path.name},{_CODES[c.domain]}" for c in tests],
        "attributes": [f"{c.path.name},{c.labelled_stem}" for c in tests],
    }
    for kind, lines in rows.items():
        _write_text(ground_truth_file(ground_truth_dir(out), kind, machine.name, SECTION), "\n".join(lines) + "\n")


def _write_preview(out: Path, machine: str, planned: list[PlannedClip]) -> None:
    """<out>/preview/<machine>.png: near, far and w1-residual spectrograms of the first source and
    target train clips, side by side (what the interferers look like, and what the residual keeps)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from asdx.reference.stereo_view import HOP, N_FFT, stft, w1_residual

    clips = [next(c for c in planned if c.split == "train" and c.domain == domain) for domain in ("source", "target")]
    audio = np.stack([sf.read(str(c.path), dtype="float32", always_2d=True)[0].T for c in clips])
    views = np.stack([audio[:, 0], audio[:, 1], w1_residual(audio)], axis=1)  # (2 clips, 3 views, samples)
    db = 20 * np.log10(np.abs(stft(views.astype(np.float64))) + 1e-6)
    top = float(db.max())
    figure = Figure(figsize=(10.5, 5.5), dpi=80)
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 3, sharex=True, sharey=True)
    extent = (0.0, audio.shape[-1] / SAMPLE_RATE, 0.0, SAMPLE_RATE / 2000)
    for row, clip in enumerate(clips):
        for col, title in enumerate(("near (ch 0)", "far (ch 1)", "w1: near - H far")):
            image = axes[row, col].imshow(db[row, col].T, origin="lower", aspect="auto", extent=extent,
                                          vmin=top - 80, vmax=top, cmap="magma", interpolation="nearest")
            axes[row, col].set_title(f"{clip.domain}: {title}", fontsize=9)
        axes[row, 0].set_ylabel("kHz")
    for col in range(3):
        axes[1, col].set_xlabel("s")
    figure.colorbar(image, ax=axes, label="dB", shrink=0.8)
    figure.suptitle(f"{machine} (STFT {N_FFT}/{HOP})", fontsize=10)
    path = out / PREVIEW / f"{machine}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temp: figure.savefig(temp, format="png"))


def _check_manifest(out: Path, settings: dict, machines: list[str]) -> None:
    manifest = out / MANIFEST
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        if recorded.get("settings") != settings:
            raise ValueError(
                f"out: {out} holds a synthetic set made with {recorded.get('settings')}, not {settings}; "
                f"choose another --out or delete it."
            )
        machines = list(dict.fromkeys([*recorded.get("machines", []), *machines]))
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"out: {out} is not empty and has no {MANIFEST}; choose a new or empty folder.")
    machines = [name for name in registry_names() if name in machines]  # registry order: reproducible
    _write_text(manifest, json.dumps({"generator": "asdx.data.synth", "settings": settings,
                                            "machines": machines}, indent=2) + "\n")


def generate(out: str | Path, machines=None, seconds: float | None = None, n_source: int | None = None,
             n_target: int | None = None, n_test: int | None = None, seed: int = 0, full: bool = False,
             progress: bool = True, background: str = "scene", preview: bool = False) -> Path:
    """Writes (or completes) a synthetic DCASE 2026 Task 2 dataset under `out`; returns the root.

    machines: "dev", "eval", "all" (default) or names/aliases (list or comma-separated).
    Sizes default to a small set (2 s, 30 source + 6 target train clips, 12 test clips per
    domain x label cell); ``full=True`` switches the defaults to DCASE sizes (10 s, 990/10, 50).
    Explicit sizes win over both. background: "scene" (interferers, the default) or "diffuse".
    preview: also write preview/<machine>.png (`asdx synth` and the demo do; off by default because drawing
    takes longer than rendering a small set).
    """
    sizes = dict(FULL_SIZES if full else DEFAULT_SIZES)
    for key, value in (("seconds", seconds), ("n_source", n_source), ("n_target", n_target), ("n_test", n_test)):
        if value is not None:
            sizes[key] = value
    if not sizes["seconds"] > 0 or sizes["seconds"] * SAMPLE_RATE < 1024:
        raise ValueError(f"seconds: must be at least 0.064 (one 1024-sample frame), got {sizes['seconds']!r}.")
    for key in ("n_source", "n_target", "n_test"):
        value = sizes[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{key}: must be a positive integer, got {value!r}.")
        if value > 2500:
            raise ValueError(f"{key}: at most 2500 (4-digit names), got {value!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}.")
    if background not in BACKGROUNDS:
        raise ValueError(f"background: must be one of {BACKGROUNDS}, got {background!r}.")
    chosen = resolve_registry(machines)
    out = Path(out)
    settings = {"seed": int(seed), "seconds": float(sizes["seconds"]), "n_source": int(sizes["n_source"]),
                "n_target": int(sizes["n_target"]), "n_test": int(sizes["n_test"]),
                "background": background}
    _check_manifest(out, settings, [m.name for m in chosen])
    n_samples = int(round(settings["seconds"] * SAMPLE_RATE))

    plans = {m.name: plan(out, m, settings["seed"], settings) for m in chosen}
    for machine in chosen:
        machine_dir = raw_dir(out, machine.dataset) / machine.name
        for stale in [*machine_dir.glob(f"*/.*{PARTIAL_SUFFIX}"), *(out / PREVIEW).glob(f".*{PARTIAL_SUFFIX}")]:
            stale.unlink()
    todo = [c for m in chosen for c in plans[m.name] if not _clip_done(c.path, n_samples)]
    from tqdm.auto import tqdm

    workers = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8))
    # numpy/scipy release the GIL in the heavy array work, so threads overlap clips;
    # each clip has its own Generator, so the output does not depend on scheduling.
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(todo), desc="synthesising clips", unit="clip", disable=not progress) as bar:
        for _ in pool.map(lambda clip: _write_clip(clip, settings["seed"], n_samples, background), todo):
            bar.update(1)
    for machine in chosen:
        _write_text(raw_dir(out, machine.dataset) / machine.name / "attributes_00.csv",
                          _attributes_csv(machine, plans[machine.name]))
        if machine.dataset == "eval":
            _write_ground_truth(out, machine, plans[machine.name])
        if preview and not (out / PREVIEW / f"{machine.name}.png").is_file():  # deterministic: a finished one stays
            _write_preview(out, machine.name, plans[machine.name])
    return out
