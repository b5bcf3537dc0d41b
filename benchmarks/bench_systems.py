"""sera_ft1 stage by stage on one synthetic machine at DCASE size: seconds, clips/s and peak resident memory.

One machine (default `Sander`) of `asdx synth --full` data (10 s clips, 990 source +
10 target train clips, 200 test clips), generated once into --data and reused.
Stages, each timed with timeit_best (best of --repeat after one warm-up call):
  - WAV decode: ClipSet streaming alone (DataLoader, the CLI's default worker count
    and 0 workers), and soundfile.read alone as the decoding floor (float32 stereo,
    and int16 with only the near channel converted);
  - fbank: asdx kaldi_fbank (BEATs normalisation) on the pre-loaded 16-clip batches,
    and the NaN/inf check it runs on its input;
  - BEATs forward on pre-loaded fbank tensors (the floor), fbank + forward on
    pre-loaded audio, and the embedding pipeline: SeraSystem.token_store with an
    empty token cache (decode + fbank + forward + float16 tokens written to the
    FeatureCache). These three are timed in turns (interleaved_best), so a drift of
    the machine's speed hits them alike and their ratio (the goal) stays honest;
  - a second token_store run with the same cache folder (no forward pass expected);
  - a head-training epoch (train + validation pass + per-epoch resume checkpoint),
    from fit_global with 1 + E epochs minus fit_global with 1 epoch, divided by E;
  - per-machine stage: embedding the train clips from the cache, the bank build
    (DomainBanks.fit), fit_machine, and score_machine of the test clips (empty and
    warm test cache).
Every timing first waits for other processes to leave the CPU and is retried when
they used it meanwhile (QuietClock; --no-wait turns this off).
BEATs `random-tiny` runs the whole machine; the full-size BEATs (BEATsConfig(),
90.3 M parameters, seeded random weights saved once as a checkpoint next to the
default data folder, loaded through SeraConfig.beats like a real one) runs a
--full-clips sample of the train clips, and its head epoch runs on random 768-d
tokens planted in the token cache for every train clip (the head's speed does not
depend on the values).
Peak resident memory (the child's VmHWM from /proc/self/status; getrusage ru_maxrss
elsewhere) is measured in child processes so that earlier stages do not pollute it:
the tiny and the full-size pipeline, the full-size head stage with tokens held in
RAM and streamed, and a one-machine `asdx.runner.run` of sera with random-tiny;
DataLoader workers' private memory is sampled from /proc. `--machine all` (12
machines) is extrapolated from these with sera's token memory rule (feature_memory_mb).
With a CUDA device, GPU rows (bf16 autocast, as sera runs on CUDA) are added.

    python benchmarks/bench_systems.py [--data DIR] [--machine Sander] [--full-clips 32] [--no-record]
    python -m benchmarks systems [same options]
--quick uses the small synthetic set (2 s clips) and small samples as a smoke test
(under a minute); it and --no-record leave benchmarks/RESULTS.md alone.

--fusion runs the T_fusion benchmark instead (asdx.systems.fusion; goal: a training epoch
from the cached trunk costs at most 40% of an epoch through the whole encoder). On the
same --fusion-clips (8) synthetic 10 s clips of the dev machine `fan`, micro-batch
--fusion-batch (4), the full-size random BEATs loaded twice through FusionConfig.beats,
timed in turns (best of --fusion-repeat after a warm-up), one shuffled batch list for all:
  (a) FusionSystem._epoch on the cached trunk (states after block 8, float16 in the
      FeatureCache), streamed from the cache (feature_memory_mb=0, how the DCASE-size train
      set is read) and held in RAM: cache read + top 4 blocks + GeM + ArcFace + AdamW;
  (b) the reference: FusionSystem._epoch with finetune_blocks=12 and no trunk cache, i.e.
      decode + fbank + all 12 blocks forward and backward + the same head and AdamW;
  (c) the floor: top 4 + GeM + ArcFace forward/backward + AdamW step on float32 states
      already in memory (and the AdamW steps and the cache read alone);
  the no-cache top-4 epoch (cache_trunk=false / spec_augment), (d) filling the trunk cache
  (trunk_store on an empty cache), and the dev-Ω evaluation from the cache (_dev_omega).
Then one resume checkpoint and one real fit_global epoch with dev-Ω early stopping on the
filled cache (trunk forward batches counted: 0 expected), and (e) the disk and RAM
footprint of the trunk at DCASE 2026 size from the measured .npz entries. --fusion --quick
uses a 12-block 64-d tiny BEATs, 4 clips of 2 s, one round: a smoke test in seconds.

    python benchmarks/bench_systems.py --fusion [--fusion-clips 8] [--fusion-batch 4] [--no-record]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import machine_lines, publish, timeit_best

import asdx
from asdx._atomic import atomic_write
from asdx.data import generate, machine_clips, resolve_machines
from asdx.data.loader import ClipSet
from asdx.features import kaldi_fbank
from asdx.models.beats import BEATs, BEATsConfig, tiny_config
from asdx.systems.base import SystemContext
from asdx.systems.fusion import RESUME_FILE, FusionConfig, FusionSystem, composite_classes, composite_label
from asdx.systems.sera import DomainBanks, SeraConfig, SeraSystem

DEFAULT_WORK = Path(tempfile.gettempdir()) / "asdx-bench-systems"
DCASE_MACHINES = 12  # DCASE 2026 Task 2: 7 dev + 5 eval machine types
DCASE_TRAIN_CLIPS = 1000  # per machine: 990 source + 10 target
DCASE_TEST_CLIPS = 200
RSS_GOAL_GB = 4.0
MAX_WORKERS = 4  # asdx run's default worker count is min(4, cores - 1)
RATIO_GOAL = 1.10
RESULT_TAG = "BENCH_SYSTEMS_RESULT "


# ----------------------------------------------------------------------------- helpers
_START = time.perf_counter()


def progress(text: str) -> None:
    """A progress line on stderr (a full run takes several minutes)."""
    print(f"[bench_systems {time.perf_counter() - _START:6.0f} s] {text}", file=sys.stderr, flush=True)


class QuietClock:
    """timeit_best on a shared machine. Before a timing it waits (up to max_wait s) until other processes use
    less than `threshold` cores; it measures their CPU use during the timing (/proc/stat busy time minus this
    process's and its waited-for children's, os.times) and retries up to `tries` times when it was >= threshold.
    `take()` returns the largest share of other processes since the last take (rows note it)."""

    def __init__(self, enabled: bool, threshold: float = 0.1, tries: int = 3, max_wait: float = 900.0):
        self.enabled = enabled and os.path.exists("/proc/stat")
        self.threshold, self.tries, self.max_wait = threshold, tries, max_wait
        self.worst = 0.0

    @staticmethod
    def _mark() -> tuple[float, float, float]:
        with open("/proc/stat") as handle:
            ticks = [int(v) for v in handle.readline().split()[1:]]
        busy = sum(ticks[i] for i in (0, 1, 2, 5, 6, 7) if i < len(ticks)) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system + own.children_user + own.children_system

    @staticmethod
    def _others(start, end) -> float:
        """Cores used by other processes between two marks."""
        return max(0.0, (end[1] - start[1]) - (end[2] - start[2])) / max(end[0] - start[0], 1e-9)

    def wait(self) -> None:
        deadline = time.perf_counter() + self.max_wait
        said = False
        while time.perf_counter() < deadline:
            start = self._mark()
            time.sleep(2.0)
            if self._others(start, self._mark()) < self.threshold:
                return
            if not said:
                progress("other processes are using the CPU; waiting for a quiet machine")
                said = True

    def time(self, fn, repeat: int, sync=lambda: None) -> float:
        """timeit_best(fn, repeat, sync) in ms, guarded."""
        return self._guarded(lambda: timeit_best(fn, repeat, sync))

    def time_interleaved(self, fns: list, repeat: int, sync=lambda: None) -> list[float]:
        """interleaved_best(fns, repeat, sync) in ms, guarded."""
        return self._guarded(lambda: interleaved_best(fns, repeat, sync))

    def _guarded(self, measure):
        if not self.enabled:
            return measure()
        for attempt in range(self.tries):
            self.wait()
            start = self._mark()
            ms = measure()
            share = self._others(start, self._mark())
            if share < self.threshold:
                break
            progress(f"other processes used {share:.2f} cores during a timing; "
                     + ("again" if attempt + 1 < self.tries else "kept, marked"))
        self.worst = max(self.worst, share)
        return ms

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst


CLOCK = QuietClock(enabled=False)


def interleaved_best(fns: list, repeat: int, sync=lambda: None) -> list[float]:
    """Best wall-clock ms of each function, after one warm-up call each, the timed calls taken in turns
    (f1, f2, ..., f1, f2, ...): a slow drift of the machine's speed then hits every function alike, which keeps
    their ratios honest (on this VM identical runs drift by ~5%)."""
    for fn in fns:
        fn()
        sync()
    best = [math.inf] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            sync()
            best[i] = min(best[i], time.perf_counter() - start)
    return [value * 1e3 for value in best]


def default_workers() -> int:
    """The `asdx run` default (asdx.options): min(4, cores - 1)."""
    try:
        from asdx.options import default_workers as run_default

        return run_default()
    except ImportError:  # no asdx.options: the same rule
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(0, min(4, cores - 1))


def gb(n_bytes: float) -> float:
    return n_bytes / 1e9


def peak_rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """getrusage ru_maxrss in bytes (Linux reports KiB, macOS bytes)."""
    value = resource.getrusage(who).ru_maxrss
    return int(value if sys.platform == "darwin" else value * 1024)


def _status_bytes(field: str) -> int | None:
    """A VmRSS / VmHWM line of /proc/self/status in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss_bytes() -> int | None:
    return _status_bytes("VmRSS")


def reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class WorkerMemory(threading.Thread):
    """Samples the private memory (USS: Private_Clean + Private_Dirty of /proc/PID/smaps_rollup) of this
    process's children, the DataLoader workers, every `interval` s: the largest one and the largest sum."""

    def __init__(self, interval: float = 0.25):
        super().__init__(daemon=True)
        self.interval, self.largest, self.total = interval, 0, 0
        self._stop_event = threading.Event()

    @staticmethod
    def _children() -> list[int]:
        me, pids = os.getpid(), []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == me:
                    pids.append(int(entry))
        return pids

    @staticmethod
    def _private(pid: int) -> int:
        total = 0
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
        return total

    def run(self) -> None:
        if not os.path.exists("/proc/self/smaps_rollup"):
            return
        while not self._stop_event.wait(self.interval):
            sizes = [self._private(pid) for pid in self._children()]
            if sizes:
                self.largest, self.total = max(self.largest, max(sizes)), max(self.total, sum(sizes))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def own_peak_rss_bytes() -> int:
    """This process's own peak RSS. VmHWM belongs to the address space made at exec; ru_maxrss does not: Linux
    carries the parent's high-water mark over fork + exec, so a child of a big parent would report the parent's."""
    return _status_bytes("VmHWM") or peak_rss_bytes()


def token_count(seconds: float, cfg: BEATsConfig) -> int:
    """BEATs tokens of one clip of `seconds` (the framing asdx.systems._beats.Backbone.token_bytes uses)."""
    samples = int(round(seconds * 16000))
    frames = max(1 + (samples - 400) // 160, 0)
    return (frames // cfg.input_patch_size) * (128 // cfg.input_patch_size)


def sera_config(beats: str, **overrides) -> SeraConfig:
    return SeraConfig(beats=beats, device=overrides.pop("device", "cpu"), **overrides)


def sera_system(config: SeraConfig, cache: Path, workers: int, device: str = "cpu") -> SeraSystem:
    context = SystemContext(device=torch.device(device), progress=False, workers=workers, cache_dir=Path(cache))
    system = SeraSystem(config, context)
    system.load_backbone()
    return system


def use_cache(system: SeraSystem, cache: Path) -> None:
    """Points the system's token cache at `cache`. token_store needs the cache root that fit_global/load_global
    set from context.cache_dir; the benchmark calls token_store directly, so it sets both the same way."""
    system.context.cache_dir = Path(cache)
    system._cache_root = Path(cache)


def full_checkpoint(path: Path) -> Path:
    """The full-size BEATs (BEATsConfig(), seed 0 random weights) as an official-format checkpoint, written once."""
    if not path.is_file():
        torch.manual_seed(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        BEATs(BEATsConfig()).save_checkpoint(path)
    return path


def child(kind: str, spec: dict, threads: int) -> dict:
    """Runs one measurement in a fresh interpreter (its peak RSS is its own); returns its result dict."""
    payload = json.dumps({"kind": kind, "threads": threads, **spec})
    progress(f"child process: {kind} {spec.get('beats', '')}".rstrip())
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", payload],
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {kind} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def run_child(spec: dict) -> dict:
    """The --child side: one pipeline / head / runner measurement; prints RESULT_TAG + JSON."""
    torch.set_num_threads(spec["threads"])
    asdx.set_num_threads(spec["threads"])
    machine = resolve_machines(spec["data"], spec["machine"])[0]
    out: dict = {"kind": spec["kind"]}
    workers_memory = WorkerMemory()
    workers_memory.start()
    if spec["kind"] == "runner":
        from asdx.runner import RunOptions, run

        options = RunOptions(system="sera", machines=machine.name, data=Path(spec["data"]), out=Path(spec["out"]),
                             name="bench", progress=False, workers=spec["workers"],
                             cache_dir=Path(spec["out"]) / "cache")
        start = time.perf_counter()
        run(options, sera_config("random-tiny", epochs=spec["epochs"]))
        out["seconds"] = time.perf_counter() - start
    else:
        train = ClipSet.from_clips(machine_clips(machine, "train"), channels=1, seconds=10.0,
                                   workers=spec["workers"])
        if spec.get("clips"):
            train = train.subset(np.arange(min(spec["clips"], len(train))))
        config = sera_config(spec["beats"], epochs=1, feature_memory_mb=spec.get("feature_memory_mb", 2048))
        system = sera_system(config, Path(spec["cache"]), spec["workers"])
        out["rss_after_load"] = current_rss_bytes()
        out["load_peak_rss"] = own_peak_rss_bytes()  # loading a checkpoint briefly holds the weights twice
        out["stage_peak_reset"] = reset_peak_rss()
        start = time.perf_counter()
        if spec["kind"] == "pipeline":
            use_cache(system, Path(spec["cache"]))
            system.token_store(train)
        else:  # head: the global stage on tokens already in the cache
            system.fit_global(train, Path(spec["folder"]))
        out["seconds"] = time.perf_counter() - start
        out["forward_batches"] = system.backbone.forward_batches
        out["clips"] = len(train)
    workers_memory.stop()
    out["worker_private"], out["workers_private"] = workers_memory.largest, workers_memory.total
    out["peak_rss"] = max(own_peak_rss_bytes(), out.get("load_peak_rss", 0))
    out["stage_peak_rss"] = own_peak_rss_bytes() if out.get("stage_peak_reset") else None
    out["children_peak_rss"] = peak_rss_bytes(resource.RUSAGE_CHILDREN)
    return out


# ----------------------------------------------------------------------------- the measurement
@dataclasses.dataclass
class Row:
    stage: str
    beats: str
    clips: int
    workers: str
    ms: float
    note: str = ""
    shared: float | None = None  # cores other processes used during its timings (CLOCK.take() when not given)

    def __post_init__(self):
        if self.shared is None:
            self.shared = CLOCK.take()

    def cells(self) -> str:
        per_s = self.clips / (self.ms / 1e3) if self.ms > 0 and self.clips else float("nan")
        rate = f"{per_s:,.1f}" if per_s == per_s else ""
        note = self.note
        if self.shared >= CLOCK.threshold:
            note = (note + "; " if note else "") + f"† other processes used {self.shared:.2f} cores"
        return (f"| {self.stage} | {self.beats} | {self.clips} | {self.workers} | {self.ms / 1e3:.2f} | {rate} "
                f"| {note} |")


def stream(clips: ClipSet, batch: int) -> int:
    seen = 0
    for indices, _ in clips.batches(1, batch):
        seen += len(indices)
    return seen


def soundfile_floor(clips: ClipSet) -> None:
    for clip in clips.clips:
        sf.read(str(clip.path), dtype="float32", always_2d=True)


def soundfile_int16_near(clips: ClipSet) -> None:
    """What a channel-0 loader needs at least: int16 samples, only the near channel converted to float32."""
    for clip in clips.clips:
        data, _ = sf.read(str(clip.path), dtype="int16", always_2d=True)
        np.multiply(data[:, 0], 1.0 / 32768, dtype=np.float32)


def finite_checks(audio: list[torch.Tensor]) -> None:
    """The per-item NaN/inf check asdx's feature kernels run on their input (asdx._arrays.prepare_waveform)."""
    for a in audio:
        torch.isfinite(a).reshape(a.shape[0], -1).all(dim=1).numpy()


def preload(clips: ClipSet, batch: int) -> list[torch.Tensor]:
    """The clips' near-channel audio as (batch, 1, samples) tensors, in the batch plan's order."""
    return [audio for _, audio in ClipSet(clips.clips, clips.lengths, clips.seconds, 0).batches(1, batch)]


def fresh_cache(work: Path, counter=[0]) -> Path:  # noqa: B006 - a deliberate call counter
    counter[0] += 1
    return work / f"cache-{counter[0]:03d}"


def pipeline_call(system: SeraSystem, clips: ClipSet, work: Path, state: dict):
    """A call of token_store on a new, empty cache folder; state gets the last folder and its forward batches."""

    def once():
        state["cache"] = fresh_cache(work)
        use_cache(system, state["cache"])
        before = system.backbone.forward_batches
        system.token_store(clips)
        state["batches"] = system.backbone.forward_batches - before

    return once


def time_cached(system: SeraSystem, clips: ClipSet, cache: Path, repeat: int) -> tuple[float, int]:
    """The second run: token_store with the cache the pipeline filled; returns (best ms, forward batches in all)."""
    use_cache(system, cache)
    before = system.backbone.forward_batches
    ms = CLOCK.time(lambda: system.token_store(clips), repeat)
    return ms, system.backbone.forward_batches - before


def time_epochs(system: SeraSystem, clips: ClipSet, cache: Path, work: Path, extra: int,
                repeat: int) -> tuple[float, float]:
    """(fit_global with 1 epoch in ms, one epoch in ms = (fit_global(1 + extra) - fit_global(1)) / extra);
    each fit_global timed with timeit_best, in a new folder every call, tokens from `cache`."""
    base = system.config
    use_cache(system, cache)
    times = []
    for epochs in (1, 1 + extra):
        system.config = dataclasses.replace(base, epochs=epochs, patience=epochs + 1)

        def fit(epochs=epochs):
            before_batches, before_epochs = system.backbone.forward_batches, system.epochs_run
            system.fit_global(clips, fresh_cache(work).with_name(f"global-{time.monotonic_ns()}"))
            if system.backbone.forward_batches != before_batches:
                raise RuntimeError("head epoch timing: fit_global ran BEATs; the token cache was not used.")
            if system.epochs_run - before_epochs != epochs:
                raise RuntimeError(f"head epoch timing: {system.epochs_run - before_epochs} epochs, not {epochs}.")

        times.append(CLOCK.time(fit, repeat))
    system.config = base
    return times[0], (times[1] - times[0]) / extra


def plant_tokens(system: SeraSystem, clips: ClipSet, cache: Path, seed: int = 0) -> int:
    """Random float16 tokens of the right shape for every clip, written with sera's own cache key; returns bytes."""
    use_cache(system, cache)
    store = system.backbone.cache(system._cache_root, system.layer, clips.seconds)
    rng = np.random.default_rng(seed)
    dim = system.backbone.cfg.encoder_embed_dim
    pool: dict[int, list[np.ndarray]] = {}
    total = 0
    for i, (clip, length) in enumerate(zip(clips.clips, clips.cropped_lengths)):
        n = token_count(length / 16000, system.backbone.cfg)
        arrays = pool.setdefault(n, [rng.standard_normal((n, dim), dtype=np.float32).astype(np.float16)
                                     for _ in range(8)])
        if not store.contains(clip):
            store.put(clip, arrays[i % 8])
        total += arrays[0].nbytes
    return total


def measure(args) -> dict:
    global CLOCK
    CLOCK = QuietClock(enabled=not args.no_wait)
    torch.set_num_threads(args.threads)
    asdx.set_num_threads(args.threads)
    data = Path(args.data)
    start = time.perf_counter()
    if args.quick:
        generate(data, machines=args.machine, seed=0, progress=False)
    else:
        generate(data, machines=args.machine, full=True, seed=0, progress=False)
    synth_s = time.perf_counter() - start
    machine = resolve_machines(data, args.machine)[0]
    workers = args.workers
    train_records, test_records = machine_clips(machine, "train"), machine_clips(machine, "test")
    train = ClipSet.from_clips(train_records, channels=1, seconds=10.0, workers=workers, label="train")
    train0 = dataclasses.replace(train, workers=0)
    test = ClipSet.from_clips(test_records, channels=1, seconds=10.0, workers=workers, label="test")
    seconds = float(train.cropped_lengths.max()) / 16000
    bs = args.batch
    work = Path(tempfile.mkdtemp(prefix="run-", dir=data.parent))
    rows: list[Row] = []
    result = {"machine": machine.name, "train": len(train), "test": len(test), "seconds": seconds,
              "targets": sum(c.domain == "target" for c in train_records), "synth_s": synth_s, "rows": rows,
              "workers": workers}
    n = len(train)
    R = args.repeat
    try:
        # ---------------------------------------------------------------- decode and fbank
        progress(f"decode and fbank, {n} clips")
        rows.append(Row("WAV decode: ClipSet streaming", "-", n, str(workers), CLOCK.time(lambda: stream(train, bs), R),
                        "DataLoader, batches of 16, near channel"))
        rows.append(Row("WAV decode: ClipSet streaming", "-", n, "0", CLOCK.time(lambda: stream(train0, bs), R),
                        "in the main process"))
        rows.append(Row("WAV decode floor: soundfile.read alone", "-", n, "0",
                        CLOCK.time(lambda: soundfile_floor(train0), R), "both channels, float32, no checks"))
        rows.append(Row("WAV decode floor: soundfile.read int16, near channel", "-", n, "0",
                        CLOCK.time(lambda: soundfile_int16_near(train0), R), "only channel 0 converted to float32"))
        audio = preload(train0, bs)
        rows.append(Row("fbank: kaldi_fbank on pre-loaded batches", "-", n, "-",
                        CLOCK.time(lambda: [kaldi_fbank(a, normalise=True) for a in audio], R),
                        f"{args.threads} asdx threads"))
        rows.append(Row("of which: kaldi_fbank's input NaN/inf check", "-", n, "-",
                        CLOCK.time(lambda: finite_checks(audio), R), "torch.isfinite(...).all per item"))

        # ---------------------------------------------------------------- random-tiny, whole machine
        progress("random-tiny BEATs: forward, pipeline, head, banks, scoring")
        tiny = sera_system(sera_config("random-tiny", embed_batch_size=bs), work / "unused", workers)
        model, layer = tiny.backbone.model, tiny.layer
        fbanks = [model.preprocess(a) for a in audio]
        label = "random-tiny"
        state, state0 = {}, {}
        with torch.no_grad():  # the four timed in turns (interleaved_best): their ratios are what the goal needs
            floor_tiny, extract_tiny, pipe_tiny, pipe_tiny0 = CLOCK.time_interleaved(
                [lambda: [model.encode(f, layers=[layer]) for f in fbanks],
                 lambda: [model.extract(a, layers=[layer]) for a in audio],
                 pipeline_call(tiny, train, work, state), pipeline_call(tiny, train0, work, state0)], R)
        shared = CLOCK.take()
        del fbanks
        tiny_cache = state["cache"]
        rows.append(Row("BEATs forward on pre-loaded fbank (floor)", label, n, "-", floor_tiny, "encode, no_grad",
                        shared))
        rows.append(Row("BEATs fbank + forward on pre-loaded audio", label, n, "-", extract_tiny, "extract", shared))
        rows.append(Row("pipeline: token_store, empty cache", label, n, str(workers), pipe_tiny,
                        f"{state['batches']} forward batches; decode + fbank + forward + cache write", shared))
        rows.append(Row("pipeline: token_store, empty cache", label, n, "0", pipe_tiny0, "", shared))
        cached_tiny, cached_batches_tiny = time_cached(tiny, train, tiny_cache, R)
        rows.append(Row("second run: token_store, same cache", label, n, str(workers), cached_tiny,
                        f"forward batches {cached_batches_tiny}"))
        fit1, epoch = time_epochs(tiny, train, tiny_cache, work, args.epochs, R)
        shared = CLOCK.take()
        rows.append(Row("fit_global, 1 epoch (tokens cached)", label, n, str(workers), fit1,
                        "token read + labels + epoch + head file", shared))
        rows.append(Row("head epoch (train + validation pass)", label, n, str(workers), epoch,
                        f"(fit_global {1 + args.epochs} epochs - 1 epoch) / {args.epochs}", shared))
        use_cache(tiny, tiny_cache)
        embed_ms = CLOCK.time(lambda: tiny.embed(train), R)
        rows.append(Row("embed train clips (cached tokens + head)", label, n, str(workers), embed_ms, ""))
        embeddings = tiny.embed(train)
        domains = [c.domain for c in train.clips]
        bank_ms = CLOCK.time(lambda: DomainBanks.fit(machine.name, embeddings, domains), R)
        rows.append(Row("bank build: DomainBanks.fit", label, n, "-", bank_ms,
                        "per-clip z-score, leave-one-out train distances"))
        folder = work / "machine"
        fit_machine_ms = CLOCK.time(lambda: tiny.fit_machine(machine.name, train, folder), R)
        rows.append(Row("fit_machine (cached tokens)", label, n, str(workers), fit_machine_ms, "embed + banks + save"))

        def score_cold():
            use_cache(tiny, fresh_cache(work))
            tiny.score_machine(test)

        rows.append(Row("score_machine, empty test cache", label, len(test), str(workers),
                        CLOCK.time(score_cold, R), "decode + forward + head + nearest neighbours"))
        use_cache(tiny, tiny_cache)
        tiny.score_machine(test)  # fills the test tokens
        rows.append(Row("score_machine, cached test tokens", label, len(test), str(workers),
                        CLOCK.time(lambda: tiny.score_machine(test), R), ""))
        test_embeddings = tiny.embed(test)
        rows.append(Row("scoring alone: DomainBanks.score", label, len(test), "-",
                        CLOCK.time(lambda: tiny.banks.score(test_embeddings), R), "two banks, k = 1"))
        result.update(floor_tiny=floor_tiny, extract_tiny=extract_tiny, pipe_tiny=pipe_tiny,
                      cached_tiny=cached_tiny,
                      cached_batches_tiny=cached_batches_tiny, tiny_tokens=token_count(seconds, model.cfg),
                      tiny_dim=model.cfg.encoder_embed_dim)
        del tiny, model

        # ---------------------------------------------------------------- full-size BEATs, a sample
        progress(f"full-size BEATs on {min(args.full_clips, n)} clips")
        checkpoint = full_checkpoint(Path(args.checkpoint))
        k = min(args.full_clips, n)
        sample = train.subset(np.arange(k))
        full = sera_system(sera_config(str(checkpoint), embed_batch_size=bs), work / "unused", workers)
        model, layer = full.backbone.model, full.layer
        label = f"full size ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M)"
        sample_audio = preload(sample, bs)
        fbanks = [model.preprocess(a) for a in sample_audio]
        state = {}
        with torch.no_grad():
            floor_full, extract_full, pipe_full = CLOCK.time_interleaved(
                [lambda: [model.encode(f, layers=[layer]) for f in fbanks],
                 lambda: [model.extract(a, layers=[layer]) for a in sample_audio],
                 pipeline_call(full, sample, work, state)], R)
        shared = CLOCK.take()
        del fbanks
        full_cache = state["cache"]
        rows.append(Row("BEATs forward on pre-loaded fbank (floor)", label, k, "-", floor_full, "encode, no_grad",
                        shared))
        rows.append(Row("BEATs fbank + forward on pre-loaded audio", label, k, "-", extract_full, "extract", shared))
        rows.append(Row("pipeline: token_store, empty cache", label, k, str(workers), pipe_full,
                        f"{state['batches']} forward batches", shared))
        cached_full, cached_batches_full = time_cached(full, sample, full_cache, R)
        rows.append(Row("second run: token_store, same cache", label, k, str(workers), cached_full,
                        f"forward batches {cached_batches_full}"))
        progress(f"full-size head epochs on planted tokens for {n} clips")
        planted = work / "planted"
        plant_start = time.perf_counter()
        planted_bytes = plant_tokens(full, train, planted)
        plant_s = time.perf_counter() - plant_start
        fit1_full, epoch_full = time_epochs(full, train, planted, work, args.epochs, R)
        shared = CLOCK.take()
        rows.append(Row("fit_global, 1 epoch (tokens cached)", label, n, str(workers), fit1_full,
                        f"random 768-d tokens planted in the cache ({gb(planted_bytes):.2f} GB)", shared))
        rows.append(Row("head epoch (train + validation pass)", label, n, str(workers), epoch_full,
                        f"(fit_global {1 + args.epochs} epochs - 1 epoch) / {args.epochs}", shared))
        result.update(floor_full=floor_full, pipe_full=pipe_full, extract_full=extract_full, cached_full=cached_full,
                      cached_batches_full=cached_batches_full, full_clips=k, full_label=label, plant_s=plant_s,
                      full_tokens=token_count(seconds, model.cfg), full_dim=model.cfg.encoder_embed_dim,
                      full_params=sum(p.numel() for p in model.parameters()), epoch_full=epoch_full)
        del full, model

        # ---------------------------------------------------------------- GPU (bf16 autocast), when present
        result["gpu_name"] = None
        if torch.cuda.is_available():
            result["gpu_name"] = torch.cuda.get_device_name()
            gk = min(args.gpu_clips, n)
            gsample = train.subset(np.arange(gk))
            gpu = sera_system(sera_config(str(checkpoint), device="cuda", embed_batch_size=args.gpu_batch),
                              work / "unused", workers, device="cuda")
            model, layer = gpu.backbone.model, gpu.layer
            gaudio = [a.cuda() for a in preload(gsample, args.gpu_batch)]
            gfbanks = [model.preprocess(a) for a in gaudio]

            def gpu_floor():
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                    for f in gfbanks:
                        model.encode(f, layers=[layer])

            state = {}
            floor_gpu, pipe_gpu = CLOCK.time_interleaved(
                [gpu_floor, pipeline_call(gpu, gsample, work, state)], R, torch.cuda.synchronize)
            shared = CLOCK.take()
            glabel = f"full size, {result['gpu_name']} bf16 autocast"
            rows.append(Row("BEATs forward on pre-loaded fbank (floor)", glabel, gk, "-", floor_gpu,
                            f"batch {args.gpu_batch}, audio already on the GPU", shared))
            rows.append(Row("pipeline: token_store, empty cache", glabel, gk, str(workers), pipe_gpu,
                            f"batch {args.gpu_batch}; {state['batches']} forward batches", shared))
            result.update(floor_gpu=floor_gpu, pipe_gpu=pipe_gpu)
            del gpu, model, gaudio, gfbanks
            torch.cuda.empty_cache()

        # ---------------------------------------------------------------- peak RSS in child processes
        common = {"data": str(data), "machine": machine.name, "workers": workers}
        mem = {}
        mem["pipe_tiny"] = child("pipeline", {**common, "beats": "random-tiny", "cache": str(fresh_cache(work))},
                                 args.threads)
        mem["pipe_full"] = child("pipeline", {**common, "beats": str(checkpoint), "clips": k,
                                              "cache": str(fresh_cache(work))}, args.threads)
        mem["head_held"] = child("head", {**common, "beats": str(checkpoint), "cache": str(planted),
                                          "folder": str(fresh_cache(work))}, args.threads)
        mem["head_streamed"] = child("head", {**common, "beats": str(checkpoint), "cache": str(planted),
                                              "feature_memory_mb": 0, "folder": str(fresh_cache(work))}, args.threads)
        mem["runner_tiny"] = child("runner", {**common, "out": str(fresh_cache(work)), "epochs": args.run_epochs},
                                   args.threads)
        for name in ("head_held", "head_streamed"):
            if mem[name]["forward_batches"]:
                raise RuntimeError(f"{name}: BEATs ran in the child; the planted token cache was not used.")
        result["mem"] = mem
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


# ----------------------------------------------------------------------------- the report
def _stage_peak(m: dict) -> int:
    """The peak after the model was loaded (the whole peak where VmHWM could not be reset)."""
    return m.get("stage_peak_rss") or m["peak_rss"]


def memory_model(result: dict, budget_mb: int) -> tuple[list[str], float]:
    """Extrapolates `--machine all` at DCASE size from the measured peaks; returns (lines, predicted peak bytes)."""
    mem = result["mem"]
    per_clip = result["full_tokens"] * result["full_dim"] * 2  # float16 tokens of one clip
    budget = budget_mb * 2**20
    global_tokens = DCASE_MACHINES * DCASE_TRAIN_CLIPS * per_clip
    machine_tokens = DCASE_TRAIN_CLIPS * per_clip
    k = result["full_clips"]
    load_peak = max(mem[name].get("load_peak_rss") or 0 for name in ("pipe_full", "head_held", "head_streamed"))
    pipe = _stage_peak(mem["pipe_full"])
    forward_overhead = pipe - k * per_clip  # loaded BEATs + activations of one batch, without held tokens
    streamed = _stage_peak(mem["head_streamed"])
    held = _stage_peak(mem["head_held"])
    held_clips = mem["head_held"]["clips"]
    if global_tokens > budget:
        global_peak = max(forward_overhead, streamed)
    else:  # held while BEATs runs, then while the head trains
        global_peak = max(forward_overhead + global_tokens, held + (global_tokens - held_clips * per_clip))
    machine_peak = forward_overhead + (machine_tokens if machine_tokens <= budget else 0)
    worst = forward_overhead + budget
    predicted = max(load_peak, global_peak, machine_peak)
    worker = max(mem[name].get("worker_private") or 0 for name in mem)
    with_workers = predicted + MAX_WORKERS * worker
    lines = [
        f"- token memory (sera's rule, float16, {result['full_tokens']} tokens x {result['full_dim']} per "
        f"{result['seconds']:g} s clip = {per_clip / 2**20:.3f} MiB): `--machine all` global stage "
        f"{DCASE_MACHINES} x {DCASE_TRAIN_CLIPS} train clips = {gb(global_tokens):.2f} GB "
        + ("> " if global_tokens > budget else "<= ")
        + f"the feature_memory_mb budget ({budget_mb} MiB = {gb(budget):.2f} GB), so "
        + ("streamed from the cache" if global_tokens > budget else "held in RAM")
        + f"; per-machine stage {DCASE_TRAIN_CLIPS} train clips = {gb(machine_tokens):.2f} GB, "
        + ("held in RAM." if machine_tokens <= budget else "streamed."),
        f"- measured (full-size BEATs, child processes): loading the checkpoint peaks at {gb(load_peak):.2f} GB "
        f"(weights briefly held twice: the file's state dict and the model); the pipeline on {k} clips peaks at "
        f"{gb(pipe):.2f} GB after loading ({gb(k * per_clip):.3f} GB of it held tokens) -> BEATs + forward "
        f"overhead {gb(forward_overhead):.2f} GB; fit_global on {held_clips} clips of planted tokens peaks at "
        f"{gb(held):.2f} GB held and {gb(streamed):.2f} GB streamed (feature_memory_mb=0); the one-machine "
        f"`asdx.runner.run` with random-tiny peaks at {gb(mem['runner_tiny']['peak_rss']):.2f} GB.",
        f"- extrapolated (not measured) for `--machine all`, full-size BEATs: global stage "
        + (f"max(forward overhead, streamed head) = {gb(global_peak):.2f} GB"
           if global_tokens > budget else f"forward overhead + held tokens = {gb(global_peak):.2f} GB")
        + f"; per-machine stage forward overhead + one machine's held train tokens = {gb(machine_peak):.2f} GB; "
        f"checkpoint load {gb(load_peak):.2f} GB; main process peak = {gb(predicted):.2f} GB; with the most "
        f"DataLoader workers `asdx run` starts ({MAX_WORKERS}, on machines with 5+ cores) at the largest measured "
        f"private size ({gb(worker):.2f} GB each): {gb(with_workers):.2f} GB. Worst case of the budget rule (a "
        f"token set just under {budget_mb} MiB held while BEATs runs): {gb(worst):.2f} GB "
        f"+ workers = {gb(worst + MAX_WORKERS * worker):.2f} GB.",
    ]
    return lines, with_workers


def report(args, result: dict) -> list[str]:
    rows: list[Row] = result["rows"]
    mem = result["mem"]
    ratio_tiny = result["pipe_tiny"] / result["floor_tiny"]
    ratio_full = result["pipe_full"] / result["floor_full"]
    mem_lines, predicted = memory_model(result, SeraConfig().feature_memory_mb)
    full_rate = result["full_clips"] / (result["pipe_full"] / 1e3)
    per_machine_min = (DCASE_TRAIN_CLIPS + DCASE_TEST_CLIPS) / full_rate / 60
    gpu_name = result.get("gpu_name")
    section = [
        f"## bench_systems — {datetime.now().astimezone().isoformat(timespec='seconds')}", "",
        *machine_lines(args.threads, gpu_name), "",
        f"sera_ft1 on machine `{result['machine']}`, synthetic "
        + ("small set (--quick)" if args.quick else "DCASE size")
        + f": {result['train']} train clips ({result['targets']} target), {result['test']} test clips, "
        f"{result['seconds']:g} s; near channel; embed batch {args.batch}; DataLoader workers: "
        f"{result['workers']} (asdx run's default here, min(4, cores - 1)) unless the row says 0. "
        f"Synthesis {result['synth_s']:.0f} s (not counted; 0 when the data was already there).", "",
        "| stage | BEATs | clips | workers | seconds | clips/s | note |",
        "|---|---|---:|---:|---:|---:|---|",
        *[row.cells() for row in rows], "",
        f"Best of {args.repeat} after one warm-up call; the BEATs floor, fbank + forward and pipeline rows of one "
        "model were timed in turns (floor, extract, pipeline, floor, ...) so that a drift of this VM's speed hits "
        "them alike; "
        "torch.no_grad(); 'pipeline' = SeraSystem.token_store on an empty token cache (decode in the DataLoader, "
        "fbank + forward + float16 tokens + FeatureCache write in the main process). The full-size BEATs has seeded "
        "random weights saved as a checkpoint and loaded through SeraConfig.beats; its head epoch runs on random "
        "768-d tokens planted in the token cache (values do not change the head's speed).",
        ("Every timing waited for a quiet machine (other processes below 0.1 core for 2 s) and was repeated, up to "
         "3 times, when other processes used 0.1 core or more during it (/proc/stat busy time minus this "
         "process's and its children's); † marks a row where they still did." if CLOCK.enabled else
         "Timed at once (--no-wait or --quick): other processes may have shared the CPU."), "",
        "Peak resident memory, each run in a fresh child process: VmHWM of /proc/self/status; 'after loading' = "
        "VmHWM reset (clear_refs) once BEATs was loaded; DataLoader workers = getrusage RUSAGE_CHILDREN ru_maxrss "
        "of that child:", "",
        "| run | clips | seconds | RSS after loading BEATs GB | peak while loading GB | peak after loading GB "
        "| peak RSS GB | DataLoader worker: peak RSS GB | worker private (USS) GB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"pipe_tiny": "pipeline (token_store), random-tiny",
             "pipe_full": f"pipeline (token_store), {result['full_label']}",
             "head_held": f"fit_global 1 epoch, {result['full_label']}, planted tokens held in RAM",
             "head_streamed": f"fit_global 1 epoch, {result['full_label']}, planted tokens streamed "
                              "(feature_memory_mb=0)",
             "runner_tiny": f"asdx.runner.run sera, random-tiny, {args.run_epochs} epochs, one machine"}

    def cell(value):
        return f"{gb(value):.2f}" if value else ""

    for key, name in names.items():
        m = mem[key]
        clips = m.get("clips", result["train"] + result["test"])
        section.append(f"| {name} | {clips} | {m['seconds']:.1f} | {cell(m.get('rss_after_load'))} | "
                       f"{cell(m.get('load_peak_rss'))} | {cell(m.get('stage_peak_rss'))} | {cell(m['peak_rss'])} | "
                       f"{cell(m['children_peak_rss'])} | {cell(m.get('worker_private'))} |")
    section += [
        "", "A worker's peak RSS counts the pages it shares copy-on-write with the main process (it is forked after "
        "BEATs is loaded); its private memory (USS: Private_Clean + Private_Dirty of /proc/PID/smaps_rollup, "
        "sampled every 0.25 s) is what each extra worker costs.",
        "", "Goals:",
        f"- embedding throughput of the full pipeline within 10% of the bare BEATs forward on pre-loaded tensors "
        f"(pipeline / floor <= {RATIO_GOAL:.2f}): full-size BEATs {ratio_full:.3f} -> "
        f"{'met' if ratio_full <= RATIO_GOAL else 'NOT met'} (the meaningful row; against fbank + forward on "
        f"pre-loaded audio: {result['pipe_full'] / result['extract_full']:.3f}); random-tiny {ratio_tiny:.2f} -> "
        f"{'met' if ratio_tiny <= RATIO_GOAL else 'NOT met'}: the tiny forward ({result['floor_tiny'] / 1e3:.2f} s) "
        "is so cheap that the fbank, which runs in the main process (fbank + forward - forward = "
        f"{(result['extract_tiny'] - result['floor_tiny']) / 1e3:.2f} s), and the WAV decoding cannot hide "
        "behind it.",
        f"- a cached second run does no forward pass: random-tiny {result['cached_batches_tiny']} forward batches in "
        f"{result['cached_tiny'] / 1e3:.2f} s for {result['train']} clips, full size {result['cached_batches_full']} "
        f"in {result['cached_full'] / 1e3:.2f} s for {result['full_clips']} clips -> "
        f"{'met' if result['cached_batches_tiny'] == 0 and result['cached_batches_full'] == 0 else 'NOT met'}.",
        f"- peak RSS under {RSS_GOAL_GB:g} GB for `--machine all` at DCASE size: "
        f"{'met' if predicted < RSS_GOAL_GB * 1e9 else 'NOT met'} by extrapolation ({gb(predicted):.2f} GB predicted, "
        f"main process + {MAX_WORKERS} DataLoader workers); "
        "not run on 12 machines here (synthesising 12 x 1200 10 s clips and forwarding 14,400 clips through the "
        "full-size BEATs on this CPU take hours).",
        *mem_lines,
        f"- full-size BEATs throughput here: {full_rate:.2f} clips/s -> about {per_machine_min:.0f} min of BEATs per "
        f"machine ({DCASE_TRAIN_CLIPS} + {DCASE_TEST_CLIPS} clips) and {DCASE_MACHINES * per_machine_min / 60:.1f} h "
        f"for `--machine all` on this CPU (extrapolated); a head epoch on {result['train']} clips of 768-d tokens "
        f"takes {result['epoch_full'] / 1e3:.1f} s.",
    ]
    if gpu_name:
        ratio_gpu = result["pipe_gpu"] / result["floor_gpu"]
        section.append(f"- GPU ({gpu_name}, bf16 autocast): pipeline / floor = {ratio_gpu:.3f} -> "
                       f"{'met' if ratio_gpu <= RATIO_GOAL else 'NOT met'}.")
    else:
        section.append("GPU rows skipped: torch sees no CUDA device.")
    return section


# ============================================================================= T_fusion: cached trunk vs whole encoder
FUSION_GOAL = 0.40  # a cached-trunk training epoch costs at most 40% of an epoch through the whole encoder
FUSION_MACHINE = "fan"  # a development machine type: its synthetic test clips carry labels (dev Ω)
DCASE_DEV_MACHINES, DCASE_EVAL_MACHINES = 7, 5


def fusion_checkpoint(path: Path, quick: bool) -> Path:
    """The BEATs loaded through FusionConfig.beats: the full-size random checkpoint the sera rows use, or with
    --quick a 12-block tiny one (tiny_config(encoder_layers=12), 64-d, seed 0), written once: same depth, so
    finetune_blocks=4 still splits it 8 + 4."""
    if not quick:
        return full_checkpoint(path)
    tiny = path.with_name("beats-tiny12-random.pt")
    if not tiny.is_file():
        torch.manual_seed(0)
        tiny.parent.mkdir(parents=True, exist_ok=True)
        BEATs(tiny_config(encoder_layers=12)).save_checkpoint(tiny)
    return tiny


def fusion_data(root: Path, n: int, workers: int, seconds: float = 10.0) -> tuple[ClipSet, ClipSet, float]:
    """n train clips (n - n//4 source, n//4 >= 1 target) and 8 test clips (2 per domain x label) of the dev machine
    FUSION_MACHINE, `asdx synth` audio written once under root; returns (train, test, synthesis seconds)."""
    n_target = max(1, n // 4)
    start = time.perf_counter()
    generate(root, machines=FUSION_MACHINE, seconds=seconds, n_source=n - n_target, n_target=n_target, n_test=2,
             seed=0, progress=False)
    synth_s = time.perf_counter() - start
    machine = resolve_machines(root, FUSION_MACHINE)[0]
    train = ClipSet.from_clips(machine_clips(machine, "train"), channels=1, seconds=10.0, workers=workers,
                               label="train")
    test = ClipSet.from_clips(machine_clips(machine, "test"), channels=1, seconds=10.0, workers=workers,
                              label="dev test")
    return train, test, synth_s


def fusion_system(checkpoint: Path, k: int, cache: Path, workers: int, batch: int, device: str,
                  feature_memory_mb: int = 2048) -> FusionSystem:
    """A FusionSystem with BEATs loaded (top k blocks trainable), its trunk cache under `cache`."""
    config = FusionConfig(beats=str(checkpoint), finetune_blocks=k, batch_size=batch, embed_batch_size=batch,
                          device=device, feature_memory_mb=feature_memory_mb)
    context = SystemContext(device=torch.device(device), progress=False, workers=workers, cache_dir=Path(cache))
    system = FusionSystem(config, context)
    system.load_backbone()
    system._cache_root = Path(cache)  # fit_global sets it from context.cache_dir; trunk_store is called directly
    return system


def fusion_training(system: FusionSystem, train: ClipSet) -> tuple[np.ndarray, torch.optim.Optimizer]:
    """What FusionSystem._fit_global sets up before its epoch loop (the same lines): composite classes and their
    targets, the FusionNet (seeded ArcFace), AdamW with the backbone_lr and lr parameter groups."""
    cfg = system.config
    system.classes = composite_classes(train.clips)
    index = {name: i for i, name in enumerate(system.classes)}
    targets = np.array([index[composite_label(c)] for c in train.clips], dtype=np.int64)
    system._build(len(system.classes))
    trained = [p for p in system.net.beats.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": trained, "lr": cfg.backbone_lr},
                                   {"params": list(system.net.arcface.parameters()), "lr": cfg.lr}],
                                  weight_decay=cfg.weight_decay)
    return targets, optimizer


def fusion_with_memory(system: FusionSystem, feature_memory_mb: int) -> None:
    system.config = dataclasses.replace(system.config, feature_memory_mb=feature_memory_mb)


def measure_fusion(args) -> dict:
    """Times T_fusion's training epoch from the cached trunk against an epoch through the whole encoder."""
    global CLOCK
    # one wait for a quiet machine per timing, no retries: a retry would repeat minutes of interleaved epochs
    CLOCK = QuietClock(enabled=not args.no_wait, tries=1, max_wait=args.fusion_max_wait)
    torch.set_num_threads(args.threads)
    asdx.set_num_threads(args.threads)
    device = args.fusion_device
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    n, bs, workers = args.fusion_clips, args.fusion_batch, args.workers
    if n < 2:
        raise SystemExit("--fusion-clips: at least 2 (ArcFace needs two composite classes).")
    seconds = 2.0 if args.quick else 10.0
    data_root = Path(args.fusion_data or DEFAULT_WORK / f"data-fusion-{n}x{seconds:g}s")
    progress(f"fusion: data ({n} train clips of {FUSION_MACHINE}, {seconds:g} s) under {data_root}")
    train, test, synth_s = fusion_data(data_root, n, workers, seconds)
    checkpoint = fusion_checkpoint(Path(args.checkpoint), args.quick)
    work = Path(tempfile.mkdtemp(prefix="fusion-", dir=DEFAULT_WORK))
    result: dict = {"clips": len(train), "test_clips": len(test), "batch": bs, "workers": workers, "synth_s": synth_s,
                    "seconds": seconds,
                    "device": device, "gpu_name": torch.cuda.get_device_name() if device.startswith("cuda") else None}
    try:
        progress("fusion: loading BEATs twice (top 4 and all 12 blocks trainable)")
        cache = work / "trunk-cache"
        top = fusion_system(checkpoint, 4, cache, workers, bs, device, feature_memory_mb=0)
        whole = fusion_system(checkpoint, 12, work / "unused", workers, bs, device)
        cfg = top.backbone.cfg
        result.update(layers=cfg.encoder_layers, start=top.start, dim=cfg.encoder_embed_dim,
                      tokens_10s=token_count(10.0, cfg),
                      params=sum(p.numel() for p in top.backbone.model.parameters()),
                      trained_top=sum(p.numel() for p in top.backbone.model.parameters() if p.requires_grad),
                      trained_whole=sum(p.numel() for p in whole.backbone.model.parameters() if p.requires_grad),
                      label="full size" if not args.quick else "tiny, 12 blocks x 64-d (--quick)")
        if whole.start != 0 or top.start != cfg.encoder_layers - 4:
            raise RuntimeError(f"fusion: unexpected trunk split (top {top.start}, whole {whole.start}).")

        # the stores, as _fit_global makes them: train streamed (feature_memory_mb=0, as at DCASE size), or held
        progress("fusion: filling the trunk cache (train and dev test clips)")
        before = top.backbone.forward_batches
        streamed = top.trunk_store(train, "trunk (train)")
        fusion_with_memory(top, 2048)
        test_store = top.trunk_store(test, "trunk (dev test)")  # held, as the DCASE-size dev test set would be
        fill_batches = top.backbone.forward_batches - before
        held = top.trunk_store(train, "trunk (train, held)")
        if streamed.held is not None or held.held is None:
            raise RuntimeError("fusion: expected a streamed (feature_memory_mb=0) and a held store.")
        files = sorted(cache.rglob("*.npz"))
        result.update(npz_bytes=[f.stat().st_size for f in files], fill_batches=fill_batches,
                      tokens=int(held.held[0].shape[0]), token_dtype=str(held.held[0].dtype))

        targets_top, opt_top = fusion_training(top, train)
        targets_whole, opt_whole = fusion_training(whole, train)
        result["classes"] = len(top.classes)
        batches = top._micro_batches(train, np.arange(len(train)), 0)  # epoch 0's shuffled batches, used by all
        if [b.tolist() for b in whole._micro_batches(train, np.arange(len(train)), 0)] != \
                [b.tolist() for b in batches]:
            raise RuntimeError("fusion: the two systems would train on different batches.")
        trunks = [held[b][1].to(device).float() for b in batches]  # the floor's in-memory float32 states
        labels = [torch.from_numpy(targets_top[b]).to(device) for b in batches]
        trained = [p for group in opt_top.param_groups for p in group["params"]]
        grads = [torch.randn_like(p) * 1e-3 for p in trained]
        losses: dict = {}

        def epoch(system, optimizer, store, targets, key):
            def once():
                losses[key] = system._epoch(system.net, optimizer, train, store, batches, targets, 0)
            return once

        def floor():
            net = top.net
            net.train(False)
            opt_top.zero_grad(set_to_none=True)
            for trunk, y in zip(trunks, labels):
                with top.backbone.autocast():
                    per_clip = net(trunk, y)
                (per_clip.float().sum() / len(y)).backward()
                opt_top.step()
                opt_top.zero_grad(set_to_none=True)

        def adamw():
            for p, g in zip(trained, grads):
                p.grad = g
            for _ in batches:
                opt_top.step()
            opt_top.zero_grad(set_to_none=True)

        def read():
            for _ in top._batches(train, streamed, batches, None):
                pass

        fills = {}

        def fill():
            top._cache_root = fresh_cache(work)
            before = top.backbone.forward_batches
            top.trunk_store(train, "trunk fill")
            fills["batches"] = top.backbone.forward_batches - before
            top._cache_root = cache

        omega: dict = {}

        def dev_omega():
            before = top.backbone.forward_batches
            omega["value"], _ = top._dev_omega(train, held, test, test_store)
            omega["batches"] = top.backbone.forward_batches - before

        names = ["reference", "cached_streamed", "cached_held", "floor", "adamw", "read", "no_cache", "fill", "omega"]
        fns = [epoch(whole, opt_whole, None, targets_whole, "reference"),
               epoch(top, opt_top, streamed, targets_top, "cached_streamed"),
               epoch(top, opt_top, held, targets_top, "cached_held"),
               floor, adamw, read,
               epoch(top, opt_top, None, targets_top, "no_cache"),
               fill, dev_omega]
        progress(f"fusion: {len(fns)} measurements in turns, best of {args.fusion_repeat} after a warm-up "
                 f"(one round is several epochs of the full-size model on this CPU)")
        trunk_before = {"top": top.backbone.forward_batches, "whole": whole.backbone.forward_batches}
        times = CLOCK.time_interleaved(fns, args.fusion_repeat, sync)
        shared = CLOCK.take()
        rounds = args.fusion_repeat + 1
        n_batches = len(batches)
        # trunk forward batches per round: no_cache + fill on `top`, reference on `whole`; none for the cached epochs,
        # the floor, the read and the dev-Ω evaluation
        expected_top = rounds * (n_batches + math.ceil(len(train) / bs))
        top_batches = top.backbone.forward_batches - trunk_before["top"]
        if top_batches != expected_top or fills["batches"] != math.ceil(len(train) / bs):
            raise RuntimeError(f"fusion: {top_batches} trunk batches on the top-4 system, "
                               f"expected {expected_top}: a cached path ran the frozen blocks.")
        if whole.backbone.forward_batches - trunk_before["whole"] != rounds * n_batches:
            raise RuntimeError("fusion: the reference epoch did not run from audio.")
        if omega["batches"]:
            raise RuntimeError(f"fusion: the dev-Ω evaluation ran {omega['batches']} trunk batches.")
        if not all(math.isfinite(v) for v in losses.values()):
            raise RuntimeError(f"fusion: non-finite epoch loss {losses}.")
        result.update(dict(zip(names, times)), shared=shared, batches=n_batches, losses=losses,
                      omega_value=omega["value"])

        # the resume checkpoint fit_global writes after every epoch (weights, AdamW state, best weights)
        checkpoint_path = work / RESUME_FILE

        def resume_checkpoint():
            payload = {"weights": top.net.tuned_state(), "optimizer": opt_top.state_dict(),
                       "state": {"weights": top.net.tuned_state()}}
            atomic_write(checkpoint_path, lambda tmp: torch.save(payload, tmp))

        result["resume_ms"] = CLOCK.time(resume_checkpoint, 1)
        result["resume_bytes"] = checkpoint_path.stat().st_size
        result["resume_shared"] = CLOCK.take()

        # the real fit_global, 1 epoch with dev-Ω early stopping, on the filled cache: the trunk is not recomputed
        progress("fusion: fit_global, 1 epoch, dev-Ω early stopping, warm trunk cache")
        top.config = dataclasses.replace(top.config, epochs=1, early_stopping="dev-omega")
        top.context.cache_dir = cache
        before = top.backbone.forward_batches
        if CLOCK.enabled:
            CLOCK.wait()
        start = time.perf_counter()
        top.fit_global(train, work / "global", validation=test)
        result["fit_global_ms"] = (time.perf_counter() - start) * 1e3
        result["fit_global_batches"] = top.backbone.forward_batches - before
        result["fit_global_monitor"] = top.monitor
        if result["fit_global_batches"]:
            raise RuntimeError(f"fusion: fit_global ran {result['fit_global_batches']} trunk batches on a warm cache.")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def duration(ms: float) -> str:
    """Hours from 1 h up, else minutes."""
    return f"{ms / 3.6e6:.1f} h" if ms >= 3.6e6 else f"{ms / 6e4:.0f} min"


def report_fusion(args, r: dict) -> list[str]:
    n, ref = r["clips"], r["reference"]
    k, start, layers = r["layers"] - r["start"], r["start"], r["layers"]
    overhead = float(np.mean(r["npz_bytes"])) - r["tokens"] * r["dim"] * 2  # npz header + the key metadata
    raw_bytes = r["tokens_10s"] * r["dim"] * 2  # one 10 s clip's trunk, float16
    per_clip_bytes = raw_bytes + overhead

    def row(name, ms, note="", ratio=True, clips=n):
        vs = f"{ms / ref:.3f}" if ratio else ""
        return f"| {name} | {clips} | {ms / 1e3:.2f} | {ms / clips:,.0f} | {vs} | {note} |"

    ratio_a, ratio_held, ratio_c = r["cached_streamed"] / ref, r["cached_held"] / ref, r["floor"] / ref
    steps = r["batches"]
    dev_train = DCASE_DEV_MACHINES * DCASE_TRAIN_CLIPS
    dev_test = DCASE_DEV_MACHINES * DCASE_TEST_CLIPS
    eval_all = DCASE_EVAL_MACHINES * (DCASE_TRAIN_CLIPS + DCASE_TEST_CLIPS)
    total_clips = dev_train + dev_test + eval_all
    budget = FusionConfig().feature_memory_mb * 2**20
    train_ram = dev_train * raw_bytes
    test_ram = dev_test * raw_bytes
    device_words = f"GPU {r['gpu_name']}, bf16 autocast" if r["gpu_name"] else "CPU, float32"
    omega_ms = (dev_train + dev_test) * r["omega"] / (n + r["test_clips"])  # one dev-Ω evaluation at DCASE size
    section = [
        f"## bench_systems --fusion — {datetime.now().astimezone().isoformat(timespec='seconds')}", "",
        *machine_lines(args.threads, r["gpu_name"]), "",
        f"T_fusion (asdx.systems.fusion) training epoch, BEATs {r['label']} ({r['params'] / 1e6:.1f} M parameters, "
        f"seeded random weights loaded through FusionConfig.beats), {layers} blocks: the top {k} trained "
        f"({r['trained_top'] / 1e6:.1f} M parameters), the trunk = states after block {start}, {r['tokens']} tokens x "
        f"{r['dim']} per {r['seconds']:g} s clip. {n} train clips of the synthetic dev machine "
        f"`{FUSION_MACHINE}` ({r['seconds']:g} s, "
        f"{r['classes']} composite classes), micro-batch {r['batch']} ({steps} AdamW steps per epoch), every row on "
        f"the same shuffled batches (epoch 0's); {device_words}; DataLoader workers {r['workers']} (asdx run's "
        f"default here). Synthesis {r['synth_s']:.0f} s, not counted. Command: `python benchmarks/bench_systems.py "
        f"{' '.join(getattr(args, 'argv', None) or ['--fusion'])}`.", "",
        "| step | clips | seconds | ms per clip | vs reference | note |",
        "|---|---:|---:|---:|---:|---|",
        row("(b) reference: whole encoder forward + backward from audio", ref,
            f"FusionSystem._epoch with finetune_blocks=12, no trunk cache: decode + fbank + all {layers} blocks "
            f"trainable ({r['trained_whole'] / 1e6:.1f} M parameters) + GeM + ArcFace + AdamW"),
        row("(a) cached epoch, trunk streamed from the cache", r["cached_streamed"],
            f"FusionSystem._epoch on trunk_store with feature_memory_mb=0 (how the DCASE-size train set is read): "
            f"float16 .npz read (DataLoader, {r['workers']} worker(s)) + top {k} blocks + GeM + ArcFace + AdamW"),
        row("(a') cached epoch, trunk held in RAM", r["cached_held"],
            "the same with the store held in RAM (feature_memory_mb 2048: sets up to 2 GiB)"),
        row(f"(c) floor: top {k} blocks + GeM + ArcFace forward/backward + AdamW step", r["floor"],
            "on float32 states already in memory: no cache read, no loop bookkeeping"),
        row("of which: AdamW steps alone", r["adamw"],
            f"{steps} steps over the {r['trained_top'] / 1e6:.1f} M trained parameters + ArcFace"),
        row("of which in (a): cache read alone", r["read"],
            "the streamed store's batches, float16 -> float32, nothing else"),
        row("no trunk cache (cache_trunk=false or spec_augment)", r["no_cache"],
            f"FusionSystem._epoch, top {k} trainable, store None: decode + fbank + {start} frozen blocks (no grad) "
            f"every epoch + top {k} forward/backward"),
        row("(d) filling the trunk cache (once per clip)", r["fill"],
            f"trunk_store on an empty cache: decode + fbank + {start} frozen blocks + float16 .npz written (fsync)"),
        row("dev-Ω evaluation from the cache", r["omega"],
            f"FusionSystem._dev_omega: top {k} + GeM (no grad) of {n} train + {r['test_clips']} test clips, kNN, "
            f"official Ω; trunk forward batches 0", ratio=False, clips=n + r["test_clips"]),
        "",
        f"Best of {args.fusion_repeat} after one warm-up call, all nine measured in turns (reference, (a), (a'), "
        "(c), ...) so that a drift of the machine's speed hits them alike; every epoch row and the floor run the "
        "same batches with the same AdamW groups (backbone_lr / lr, weight decay) that _fit_global builds (its "
        "setup lines are repeated in the benchmark; the epochs themselves are FusionSystem._epoch). "
        + (f"The timings in turns first waited (at most {args.fusion_max_wait:.0f} s) for other processes to use "
           f"under 0.1 core; they used {r['shared']:.2f} cores on average while the rows were timed "
           "(/proc/stat; this CPU has 2)." if CLOCK.enabled else "Timed at once (--no-wait or --quick)."),
        f"Trunk forward batches counted: 0 in the cached epochs, the floor and the dev-Ω evaluation; "
        f"fit_global (1 epoch, early stopping on dev Ω, on the filled cache) ran "
        f"{r['fit_global_batches']} trunk batches and took {r['fit_global_ms'] / 1e3:.1f} s (one run: epoch + "
        f"dev Ω + resume checkpoint + model file). The resume checkpoint it writes after every epoch (tuned "
        f"weights, AdamW state, best weights) is {r['resume_bytes'] / 1e6:.0f} MB, {r['resume_ms'] / 1e3:.2f} s "
        "here.", "",
        "Goals:",
        f"- one training epoch from the cached trunk at most {FUSION_GOAL:.0%} of an epoch through the whole encoder: "
        f"(a)/(b) = {ratio_a:.3f} streamed ({ratio_held:.3f} held) -> "
        f"{'met' if ratio_a <= FUSION_GOAL else 'NOT met'}; the floor (c)/(b) = {ratio_c:.3f}, so the cached "
        f"epoch is {r['cached_streamed'] / r['floor']:.2f}x its floor; without the cache (same top-{k} training) "
        f"{r['no_cache'] / ref:.3f}.",
        f"- the dev-Ω evaluation reuses the cached trunk of the test clips: "
        f"{'met' if r['fit_global_batches'] == 0 else 'NOT met'} (0 trunk batches in _dev_omega and in the "
        f"fit_global run above, after the cache was filled once with {r['fill_batches']} batches for "
        f"{n} + {r['test_clips']} clips).",
        f"- disk: {r['tokens_10s']} tokens x {r['dim']} x 2 bytes = {raw_bytes:,} bytes per 10 s clip, "
        f"{per_clip_bytes:,.0f} bytes per .npz entry ({overhead:,.0f} bytes of npz header and key metadata, "
        f"measured on the {len(r['npz_bytes'])} entries written here). DCASE 2026 size, clips cropped to 10 s: "
        f"dev {DCASE_DEV_MACHINES} x ({DCASE_TRAIN_CLIPS} train + "
        f"{DCASE_TEST_CLIPS} test) for training and dev Ω = {gb((dev_train + dev_test) * per_clip_bytes):.2f} GB, "
        f"eval {DCASE_EVAL_MACHINES} x ({DCASE_TRAIN_CLIPS} + {DCASE_TEST_CLIPS}) for scoring = "
        f"{gb(eval_all * per_clip_bytes):.2f} GB; {total_clips:,} clips = {gb(total_clips * per_clip_bytes):.2f} GB "
        f"(one precision: the CPU (float32) and CUDA (bf16 autocast) trunks have different cache keys).",
        f"- RAM: the training set's trunk ({dev_train:,} clips) is {gb(train_ram):.2f} GB float16 "
        + (f"> the default feature_memory_mb 2048 MiB ({gb(budget):.2f} GB), so it is streamed from the cache every "
           f"epoch (row (a)); holding it would need feature_memory_mb >= {math.ceil(train_ram / 2**20):,}"
           if train_ram > budget else
           f"<= the default feature_memory_mb 2048 MiB ({gb(budget):.2f} GB): held in RAM (row (a'))")
        + f". The dev test clips' trunk ({dev_test:,} clips, {gb(test_ram):.2f} GB) is "
        f"{'held' if test_ram <= budget else 'streamed'}; per machine, one machine's {DCASE_TRAIN_CLIPS} train "
        f"clips = {gb(DCASE_TRAIN_CLIPS * raw_bytes):.2f} GB, "
        f"{'held' if DCASE_TRAIN_CLIPS * raw_bytes <= budget else 'streamed'}.",
        f"- at DCASE size on this {device_words} (extrapolated per clip): a cached epoch over {dev_train:,} clips "
        f"{duration(dev_train * r['cached_streamed'] / n)} vs {duration(dev_train * ref / n)} through the whole "
        f"encoder; the one-off trunk fill of {total_clips:,} clips {duration(total_clips * r['fill'] / n)}; each "
        f"epoch's dev-Ω evaluation (top {k} forward of {dev_train:,} + {dev_test:,} clips) "
        f"{duration(omega_ms)}, so a cached epoch with its evaluation costs "
        f"{(dev_train * r['cached_streamed'] / n + omega_ms) / (dev_train * ref / n):.3f} of the reference epoch "
        "alone.",
    ]
    if not r["gpu_name"]:
        section.append("GPU rows pending: torch sees no CUDA device here; `--fusion --fusion-device cuda` measures "
                       "the same rows with bf16 autocast.")
    return section


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help=f"synthetic data root (default {DEFAULT_WORK}/data, reused)")
    parser.add_argument("--checkpoint", default=None,
                        help=f"full-size random BEATs checkpoint (default {DEFAULT_WORK}/beats-full-random.pt, "
                             "written once)")
    parser.add_argument("--machine", default="Sander")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: asdx run's)")
    parser.add_argument("--batch", type=int, default=16, help="embed batch size (SeraConfig.embed_batch_size)")
    parser.add_argument("--full-clips", type=int, default=32, help="train clips through the full-size BEATs")
    parser.add_argument("--gpu-clips", type=int, default=512)
    parser.add_argument("--gpu-batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="extra head epochs for the per-epoch time")
    parser.add_argument("--run-epochs", type=int, default=5, help="epochs of the one-machine runner run")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls after the warm-up (best is kept)")
    parser.add_argument("--quick", action="store_true", help="small data and samples, not recorded")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--no-wait", action="store_true",
                        help="time at once, without waiting for (or retrying around) other busy processes")
    parser.add_argument("--fusion", action="store_true",
                        help="run the T_fusion benchmark instead (cached-trunk epoch vs the whole encoder)")
    parser.add_argument("--fusion-clips", type=int, default=8, help="train clips of the fusion epochs")
    parser.add_argument("--fusion-batch", type=int, default=4, help="fusion micro-batch (FusionConfig.batch_size)")
    parser.add_argument("--fusion-repeat", type=int, default=2,
                        help="timed rounds of the fusion measurements after the warm-up (best is kept)")
    parser.add_argument("--fusion-data", default=None,
                        help=f"fusion data root (default {DEFAULT_WORK}/data-fusion-<clips>x<seconds>s, written once)")
    parser.add_argument("--fusion-device", default="cpu", help="torch device of the fusion rows (cpu, cuda)")
    parser.add_argument("--fusion-max-wait", type=float, default=60.0,
                        help="seconds a fusion timing waits at most for a quiet machine")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = default_workers()
    if args.checkpoint is None:
        args.checkpoint = str(DEFAULT_WORK / "beats-full-random.pt")
    if args.quick:
        args.data = args.data or str(DEFAULT_WORK / "data-quick")
        args.full_clips, args.gpu_clips, args.epochs, args.run_epochs, args.repeat = 4, 8, 1, 1, 1
        args.fusion_repeat, args.fusion_clips, args.fusion_batch = 1, 4, 2
        args.no_record = args.no_wait = True
    args.data = args.data or str(DEFAULT_WORK / "data")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.argv = argv
    if args.child is not None:
        print(RESULT_TAG + json.dumps(run_child(json.loads(args.child))), flush=True)
        return 0
    if args.fusion:
        section = report_fusion(args, measure_fusion(args))
    else:
        section = report(args, measure(args))
    print()
    publish(section, record_it=not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
