"""`asdx score` throughput: clips per second scored by a finished run, end to end from WAV.

Per system: train a run once on one synthetic machine (small settings: scoring
cost does not depend on how long a model trained), then time
Detector.score_files over N 10 s stereo test clips: WAV decoding, features
(and BEATs for the systems built on it), the model, the banks, the threshold.
The goal of the issue is >= 200 clips/s for the AE on 2 CPU cores. Each system
is timed --repeat times after a warm-up (best and median given: on a shared host
single timings swing). For the AE the `asdx score` command is also timed as a
user runs it, process start to exit (imports, loading the run, scoring, output).
The BEATs-based systems run with the random *tiny* BEATs here (no real weights on
this machine), so their rows are a lower bound on real cost, labelled as such.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

import asdx
from asdx.cli import main as asdx_main
from asdx.data import generate
from asdx.detector import load_detector
from benchmarks._common import machine_lines, publish

SETTINGS = {
    "ae": ["--epochs", "1"],
    "sera": ["--beats", "random-tiny", "--epochs", "1"],
    "fusion": ["--beats", "random-tiny", "--epochs", "1"],
    "proto": ["--beats", "random-tiny", "--size", "tiny", "--epochs", "1", "--batch-size", "8"],
    "beam": ["--beats", "random-tiny"],
}
BEATS_SYSTEMS = ("sera", "fusion", "proto", "beam")
GOAL_AE_CLIPS_PER_S = 200.0


def bare_beats_forward(paths, batch: int = 16) -> float:
    """Seconds of the floor every BEATs system pays: the random-tiny BEATs forward (fbank + encoder, last layer) of
    the near channels of `paths`, decoded beforehand (decoding is not part of the floor)."""
    import soundfile as sf

    from asdx.models import load_beats

    model = load_beats("random-tiny").eval()
    audio = [torch.from_numpy(sf.read(str(p), dtype="float32")[0][:, 0].copy()) for p in paths]
    batches = [torch.stack(audio[i:i + batch]) for i in range(0, len(audio), batch)]
    layer = model.cfg.encoder_layers
    with torch.no_grad():
        model.encode(model.preprocess(batches[0][:2]), layers=[layer], upto=layer)  # warm-up
        start = time.perf_counter()
        for waves in batches:
            model.encode(model.preprocess(waves), layers=[layer], upto=layer)
        return time.perf_counter() - start


def cli_seconds(run_dir: Path, test_dir: Path, threads: int) -> float:
    """Wall seconds of `asdx score --run RUN --machine fan TEST_DIR` in a fresh process (its own imports)."""
    command = [sys.executable, "-m", "asdx", "--threads", str(threads), "score", "--run", str(run_dir), "--machine",
               "fan", str(test_dir)]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="ae,sera,fusion,proto,beam")
    parser.add_argument("--clips", type=int, default=400, help="test clips scored (10 s each)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers decoding WAVs")
    parser.add_argument("--repeat", type=int, default=3, help="timed score_files calls per system")
    parser.add_argument("--work", default=None, help="folder for data and runs (default ~/.cache/asdx/bench-score)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    asdx.set_num_threads(args.threads)
    work = Path(args.work) if args.work else Path.home() / ".cache" / "asdx" / "bench-score"
    per_cell = max(1, args.clips // 4)  # 4 test cells: source/target x normal/anomaly
    data = generate(work / "data", machines="fan", seconds=10.0, n_source=40, n_target=4, n_test=per_cell,
                    seed=1, progress=False)
    test_dir = data / "dev_data" / "raw" / "fan" / "test"
    paths = sorted(test_dir.glob("*.wav"))
    rows = []
    beats_seconds = None
    for system in args.systems.split(","):
        run_dir = work / "runs" / system / "bench"
        if not (run_dir / "machines" / "fan" / "done.json").exists():
            code = asdx_main(["run", system, "--machine", "fan", "--data", str(data), "--out", str(work / "runs"),
                              "--name", "bench", "--quiet", "--workers", "0", *SETTINGS[system]])
            if code != 0:
                raise SystemExit(f"training {system} for the benchmark failed")
        times = []
        with load_detector(run_dir, "fan", device="cpu", workers=args.workers) as detector:
            detector.score_files(paths[:8])  # warm-up: imports, first allocations
            for _ in range(args.repeat):
                start = time.perf_counter()
                result = detector.score_files(paths)
                times.append(time.perf_counter() - start)
                assert len(result) == len(paths) and not result.failures
        elapsed, median = min(times), statistics.median(times)
        rate = len(paths) / elapsed
        if system == "ae":
            goal = f"goal >= {GOAL_AE_CLIPS_PER_S:.0f}: {'met' if rate >= GOAL_AE_CLIPS_PER_S else 'NOT met'}"
        else:
            beats_seconds = beats_seconds or bare_beats_forward(paths)
            goal = (f"tiny random BEATs: lower bound on real cost; {elapsed / beats_seconds:.2f}x the bare "
                    f"BEATs forward of the same clips ({beats_seconds:.2f} s)")
        rows.append(f"| {system} | {len(paths)} | {elapsed:.2f} s (median {median:.2f} s) | {rate:.1f} "
                    f"(median {len(paths) / median:.1f}) | {goal} |")
        print(rows[-1], flush=True)
        if system == "ae":
            cli = cli_seconds(run_dir, test_dir, args.threads)
            rows.append(f"| ae, `asdx score` command | {len(paths)} | {cli:.2f} s | {len(paths) / cli:.1f} | process "
                        "start to exit: imports, loading the run, scoring, writing the table |")
            print(rows[-1], flush=True)
    section = [f"## bench_score — {datetime.now().astimezone().isoformat(timespec='seconds')}", "",
               *machine_lines(args.threads, None), "",
               f"`Detector.score_files` on {len(paths)} synthetic 10 s stereo clips of `fan` (16 kHz PCM WAV), end "
               f"to end from the files, {args.workers} DataLoader worker(s), CPU, torch threads {torch.get_num_threads()}.",
               "", f"| system | clips | time (best of {args.repeat}) | clips/s | note |", "|---|---:|---:|---:|---|",
               *rows, "",
               "GPU rows: not run (no GPU on this machine)."]
    publish(section, record_it=not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
