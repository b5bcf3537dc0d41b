"""Busy-host A/B: asdx's OpenMP wait policy on a machine shared with other CPU-bound work (issue 20).

On a host where other processes wanted the cores, `asdx run ae --epochs 20` took 309 s with OpenMP's default
wait policy and 50 s with OMP_WAIT_POLICY=PASSIVE: torch's idle OpenMP threads spin before they sleep and take
the CPU from the others and from asdx's own lagging threads. `import asdx` now sets PASSIVE unless the user
set a policy (asdx._threads). This benchmark shows what that changes:

  workload   `asdx run ae --machine fan --epochs E --workers 0 --quiet` on a small synthetic set (made once),
             each run in a fresh Python process, since the policy is fixed when torch's OpenMP library loads;
  conditions quiet, and busy: K (default 2) competing CPU-bound processes, busy loops that also stop by
             themselves after a deadline; started before the run, stopped after it;
  arms       new     asdx as shipped: OMP_WAIT_POLICY unset, so `import asdx` sets PASSIVE before torch loads;
             old     asdx before this change: torch loaded first, i.e. OpenMP's default (spin, then sleep);
             one     the new default with `asdx --threads 1` (the README's advice for a crowded host);
             active  OMP_WAIT_POLICY=ACTIVE (threads never sleep), optional with --arms;
             the others use torch's default thread count (every usable core).

Each (arm, condition) runs --repeats times, interleaved; the table gives the median wall time, the run's
CPU time (user + system, from wait4) and the busy/quiet ratio. Goals: under K = 2 competitors the new
default takes at most 2x its quiet time; on a quiet host it costs nothing against the old one. The host's
CPU model, core count and the load average before each run are recorded, since other work on the host
(not only the K competitors) shares the CPU.

    python benchmarks/busy_host.py [--epochs 5] [--repeats 2] [--competitors 2] [--arms new,old,one] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = ("new", "old", "one", "active")
# The old behaviour: torch's OpenMP library is loaded before asdx could set the policy (asdx then reports it).
OLD_ENTRY = "import torch, runpy; runpy.run_module('asdx', run_name='__main__')"
HOG = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _load() -> str:
    with open("/proc/loadavg") as handle:
        one, five, fifteen, running = handle.read().split()[:4]
    return f"{one}/{five}/{fifteen} ({running.split('/')[0]} running)"


def _child_env(arm: str) -> dict:
    """The run's environment: no inherited thread settings (torch's default count), the arm's wait policy."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS",
                                                            "MKL_NUM_THREADS")}
    if arm == "active":
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    return env


def _asdx(arm: str, *args: str) -> list[str]:
    if arm == "old":
        return [sys.executable, "-c", f"import sys; sys.argv = ['asdx', *{list(args)!r}]; {OLD_ENTRY}"]
    return [sys.executable, "-m", "asdx", *(["--threads", "1"] if arm == "one" else []), *args]


def _timed(command: list[str], env: dict, timeout: float) -> tuple[float, float, bool]:
    """(wall s, CPU s of the process and its children, finished) of one command."""
    errors = tempfile.TemporaryFile()
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            return time.perf_counter() - start, usage.ru_utime + usage.ru_stime, False
        time.sleep(0.05)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        errors.seek(0)
        raise RuntimeError(f"{' '.join(command[:6])}... failed: {errors.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, True


class Competitors:
    """K CPU-bound processes for the busy condition; each also stops by itself after `seconds`."""

    def __init__(self, count: int, seconds: float):
        self.count, self.seconds, self.processes = count, seconds, []

    def __enter__(self):
        self.processes = [subprocess.Popen([sys.executable, "-c", HOG.format(seconds=self.seconds)])
                          for _ in range(self.count)]
        time.sleep(0.5)  # let them start spinning
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="AE epochs of the workload (default 5)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per arm and condition (default 2)")
    parser.add_argument("--competitors", type=int, default=2, help="CPU-bound processes when busy (default 2)")
    parser.add_argument("--arms", default="new,old,one", help=f"comma-separated, from {', '.join(ARMS)}")
    parser.add_argument("--timeout", type=float, default=300.0, help="longest run, seconds (then stopped)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    unknown = set(arms) - set(ARMS)
    if unknown:
        parser.error(f"--arms: unknown {sorted(unknown)}; choose from {', '.join(ARMS)}")

    folder = Path(tempfile.mkdtemp(prefix="asdx-busy-"))
    try:
        data = folder / "data"
        subprocess.run([sys.executable, "-m", "asdx", "synth", "--out", str(data), "--machines", "fan",
                        "--seconds", "4", "--n-source", "60", "--n-target", "6", "--n-test", "20", "--quiet"],
                       check=True, stdout=subprocess.DEVNULL, env=_child_env("new"))
        results: dict[tuple[str, str], list[tuple[float, float, bool, str]]] = {}
        started = time.perf_counter()
        for repeat in range(args.repeats):
            for condition in ("quiet", "busy"):
                for arm in arms:
                    name = f"{arm}-{condition}-{repeat}"
                    command = _asdx(arm, "run", "ae", "--machine", "fan", "--data", str(data), "--out",
                                    str(folder / "runs"), "--name", name, "--epochs", str(args.epochs),
                                    "--workers", "0", "--quiet")
                    load = _load()
                    if condition == "busy":
                        with Competitors(args.competitors, args.timeout + 30):
                            wall, cpu, finished = _timed(command, _child_env(arm), args.timeout)
                    else:
                        wall, cpu, finished = _timed(command, _child_env(arm), args.timeout)
                    results.setdefault((arm, condition), []).append((wall, cpu, finished, load))
                    print(f"{name:18s} wall {wall:7.1f} s{'' if finished else ' (stopped)'}  CPU {cpu:7.1f} s  "
                          f"load before {load}", flush=True)
        total = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    def median(arm, condition, index):
        return statistics.median(r[index] for r in results[(arm, condition)])

    def shown(arm, condition):
        values = ", ".join(f"{r[0]:.1f}{'' if r[2] else '+'}" for r in results[(arm, condition)])
        return f"{median(arm, condition, 0):.1f} ({values})"

    lines = [
        f"## Busy host: OpenMP wait policy A/B (`asdx run ae`, {args.epochs} epochs) — "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        "",
        f"- machine: {_cpu_model()}, {platform.machine()}, {_usable_cores()} usable cores; Python "
        f"{platform.python_version()}; torch's default thread count except in arm `one`",
        f"- workload: `asdx run ae --machine fan --epochs {args.epochs} --workers 0 --quiet` on a synthetic fan "
        "(60 + 6 train clips, 80 test clips of 4 s), a fresh process per run (import, features, training, "
        "scoring, report)",
        f"- busy: {args.competitors} competing CPU-bound Python processes; {args.repeats} runs per cell, "
        f"interleaved; wall medians (each run in brackets, + = stopped at {args.timeout:.0f} s); "
        f"{total / 60:.1f} min in all",
        "- arms: new = `import asdx` sets OMP_WAIT_POLICY=PASSIVE; old = torch loaded before asdx "
        "(OpenMP's default spin-then-sleep); one = new with `--threads 1`; active = OMP_WAIT_POLICY=ACTIVE",
        "",
        "| arm | quiet wall (s) | busy wall (s) | busy / quiet | quiet CPU (s) | busy CPU (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for arm in arms:
        ratio = median(arm, "busy", 0) / median(arm, "quiet", 0)
        lines.append(f"| {arm} | {shown(arm, 'quiet')} | {shown(arm, 'busy')} | {ratio:.2f}× | "
                     f"{median(arm, 'quiet', 1):.1f} | {median(arm, 'busy', 1):.1f} |")
    lines.append("")
    if "new" in arms:
        ratio = median("new", "busy", 0) / median("new", "quiet", 0)
        verdict = "met" if ratio <= 2 else "NOT met"
        lines.append(f"Goal, busy ≤ 2× quiet for the new default: {ratio:.2f}× — {verdict}.")
        if "old" in arms:
            quiet = median("new", "quiet", 0) / median("old", "quiet", 0)
            busy = median("old", "busy", 0) / median("new", "busy", 0)
            lines.append(f"Quiet host, new / old wall: {quiet:.2f} (goal: no cost, ≈ 1). Busy host, old / new wall: "
                         f"{busy:.2f}×.")
    lines.append("Load average (1/5/15 min, running tasks) before each run: "
                 + "; ".join(f"{arm} {condition}: {', '.join(r[3] for r in runs)}"
                             for (arm, condition), runs in results.items()) + ".")
    print("\n" + "\n".join(lines))
    if not args.no_record:
        from benchmarks._common import record

        record(lines)
        print("\nappended to benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
