"""One command that checks a GPU machine: `python -m benchmarks gpu --out DIR` (issue 22, section 3).

GPU time comes rarely and briefly, so this runs everything a GPU machine must show, in
order, in one go (about 8 minutes on one H100), each step timed and with its own time
limit, recorded into DIR as soon as it ends, so a later failure (or the whole command
being stopped) keeps the earlier results:

  0. environment: Python, torch, the GPUs, the driver, nvcc, CMake;
  1. build: the extension built with nvcc for this GPU (cmake into build/gpu-check,
     staged with a copy of python/asdx outside the source tree); the later steps import it;
  2. pytest: the tests marked gpu and the CUDA kernel tests;
  3. bench: GPU benchmark rows, each a ratio against the same work in torch on the same
     GPU in this run (frontends float32/float64, Mahalanobis, GMM, batched gamma, kNN
     FAISS GPU when faiss-gpu imports), from the benchmark modules beside this file;
  4. agreement: every kernel family through asdx.set_kernels("native") against
     asdx.set_kernels("torch") (skipped where this asdx has no kernel selection);
  5. beats: the full-size BEATs (official configuration, random weights) forward in
     float32 and under bf16 autocast: clips/s and their agreement;
  6. runs: `asdx run` sera, fusion (1 epoch), proto (full size, 1 epoch) and ae on a small
     synthetic set with the full-size random BEATs: seconds and clips/s per stage, peak
     GPU memory, and `asdx score` reproducing each run's test scores.

Without a GPU it runs the CPU-side steps (environment; agreement on the CPU), prints
one skip line per GPU step and exits 0 (CI runs it so). `--cpu-smoke` runs every step
on the CPU at tiny sizes instead: a check of this script itself, not of a GPU.

DIR gets at most 8 files: summary.json (every step: status ok / failed / skipped, reason,
seconds, results), report.md (the same as tables, for benchmarks/RESULTS.md), log.txt,
build.txt, pytest.txt and runs.txt (the steps' own output). Working files (the
synthetic data, the runs, the BEATs checkpoint) go to --work (default: a new temporary
folder). The orchestrator imports neither torch nor asdx: each step runs in its own
process, so a crash or a hung kernel costs that step only. Preparing an offline GPU
machine: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / "build" / "gpu-check"
OK, FAILED, SKIPPED = "ok", "failed", "skipped"
NO_SET_KERNELS = "asdx.set_kernels missing (this asdx has no native/torch kernel selection yet)"


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    timeout: float   # seconds; the run's remaining budget can make it shorter
    gpu: bool        # skipped without a GPU (unless --cpu-smoke)
    log: str         # the file in DIR that gets its output


STEPS = (
    Step("environment", "Python, torch, GPUs, driver, nvcc, CMake", 60, False, "log.txt"),
    Step("build", "build the extension with nvcc for this GPU", 300, True, "build.txt"),
    Step("pytest", "pytest: tests marked gpu and the CUDA kernel tests", 150, True, "pytest.txt"),
    Step("bench", "GPU benchmark rows against torch on the same GPU", 120, True, "log.txt"),
    Step("agreement", "native kernels against their torch implementations", 90, False, "log.txt"),
    Step("beats", "full-size random BEATs forward, float32 and bf16 autocast", 90, True, "log.txt"),
    Step("runs", "asdx run + asdx score on a small synthetic set", 300, True, "runs.txt"),
)


# =========================================================================== the orchestrator


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for the (at most 8) result files (required)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for working files (data, runs, checkpoint), kept; default: a temporary "
                             "folder, removed at the end")
    parser.add_argument("--budget", type=float, default=470.0,
                        help="seconds for all steps together (default 470: the command fits 8 minutes)")
    parser.add_argument("--build", choices=("auto", "yes", "no"), default="auto",
                        help="auto: build when a GPU is visible; yes: also without one (a check of the build "
                             "itself); no: use the asdx already importable")
    parser.add_argument("--cuda-arch", default=None,
                        help="CMAKE_CUDA_ARCHITECTURES for the build (default: the project's own choice)")
    parser.add_argument("--steps", default=None, help="comma-separated subset of: "
                        + ", ".join(s.name for s in STEPS))
    parser.add_argument("--step-limit", type=float, default=None,
                        help="cap on every step's own time limit, seconds (default: each step's)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run every step on the CPU at tiny sizes (checks this script, not a GPU)")
    parser.add_argument("--self-test", action="store_true",
                        help="check this script's run.log and score parsing on built-in examples, then exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.self_test:
        return self_test()
    if args.out is None:
        print("python -m benchmarks gpu: --out DIR is required", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("log.txt", "build.txt", "pytest.txt", "runs.txt"):
        (out / name).unlink(missing_ok=True)
    work = (args.work or Path(tempfile.mkdtemp(prefix="asdx-gpu-check-"))).resolve()
    (work / "results").mkdir(parents=True, exist_ok=True)
    wanted = set(args.steps.split(",")) if args.steps else {s.name for s in STEPS}
    unknown = wanted - {s.name for s in STEPS}
    if unknown:
        print(f"unknown step(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    state = {"out": str(out), "work": str(work), "smoke": args.cpu_smoke, "cuda_arch": args.cuda_arch,
             "gpu": False, "stage": None}
    summary = {"command": "python -m benchmarks gpu " + " ".join(sys.argv[1:] if argv is None else argv),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": args.budget, "work": str(work),
               "steps": []}
    deadline = time.monotonic() + args.budget
    say(out, f"gpu check: results in {out}, working files in {work}, budget {args.budget:g} s")
    for step in STEPS:
        record = run_or_skip(step, args, state, wanted, deadline, out, work)
        summary["steps"].append(record)
        if step.name == "environment" and record["status"] == OK:
            state["gpu"] = bool(record["result"].get("gpu"))
        if step.name == "build" and record["status"] == OK:
            state["stage"] = record["result"]["stage"]
        write_text(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
        write_text(out / "report.md", report(summary))
    if args.work is None:  # a temporary folder of this run's own; its results are in out
        shutil.rmtree(work, ignore_errors=True)
    counts = {s: sum(r["status"] == s for r in summary["steps"]) for s in (OK, FAILED, SKIPPED)}
    say(out, f"gpu check done: {counts[OK]} ok, {counts[FAILED]} failed, {counts[SKIPPED]} skipped; "
             f"{out / 'summary.json'}")
    return 1 if counts[FAILED] else 0


def say(out: Path, line: str) -> None:
    print(line, flush=True)
    with open(out / "log.txt", "a") as log:
        log.write(line + "\n")


def write_text(path: Path, text: str) -> None:
    """Atomic (temp file + rename): a reader, or a command stopped midway, never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def skip_reason(step: Step, args, state: dict, wanted: set) -> str | None:
    if step.name not in wanted:
        return "not in --steps"
    if step.name == "build":
        if args.build == "no":
            return "--build no: the asdx already importable is used"
        if shutil.which(os.environ.get("CUDACXX") or "nvcc") is None:
            return "nvcc not found (PATH or CUDACXX): the installed asdx is used"
        if args.build == "yes":
            return None
        if args.cpu_smoke:
            return "--cpu-smoke: the build needs a GPU to be worth its minutes (--build yes builds anyway)"
    if step.gpu and not state["gpu"] and not args.cpu_smoke:
        return "no CUDA GPU visible to torch"
    return None


def run_or_skip(step: Step, args, state: dict, wanted: set, deadline: float, out: Path, work: Path) -> dict:
    record = {"step": step.name, "title": step.title, "status": SKIPPED, "reason": "", "seconds": 0.0,
              "result": {}}
    why = skip_reason(step, args, state, wanted)
    left = deadline - time.monotonic()
    if why is None and left < 10:
        why = f"out of the time budget ({args.budget:g} s)"
    if why is not None:
        record["reason"] = why
        say(out, f"[{step.name}] skipped: {why}")
        return record
    timeout = min(step.timeout, left, args.step_limit or math.inf)
    say(out, f"[{step.name}] {step.title} (limit {timeout:.0f} s) ...")
    state_file = work / "state.json"
    write_text(state_file, json.dumps(state))
    result_file = work / "results" / f"{step.name}.json"
    result_file.unlink(missing_ok=True)
    env = child_environment(state)
    start = time.monotonic()
    with open(out / step.log, "a") as log:
        log.write(f"\n===== step {step.name}: {step.title}\n")
        log.flush()
        child = subprocess.Popen([sys.executable, "-m", "benchmarks.gpu_check", "--child", step.name, str(state_file)],
                                 cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = child.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the step's process group: it and what it started
            code, timed_out = child.wait(), True
    record["seconds"] = round(time.monotonic() - start, 2)
    saved = read_json(result_file)
    record["result"] = saved.get("result", {})
    if timed_out:
        record.update(status=FAILED, reason=f"timed out after {timeout:.0f} s (partial results kept)")
    elif saved.get("status") in (OK, FAILED, SKIPPED) and (code == 0 or saved["status"] == FAILED):
        record.update(status=saved["status"], reason=saved.get("reason", ""))
    else:
        record.update(status=FAILED, reason=f"exited with status {code} before recording a result; see {step.log}")
    say(out, f"[{step.name}] {record['status']}{': ' + record['reason'] if record['reason'] else ''} "
             f"({record['seconds']:.1f} s)")
    return record


def child_environment(state: dict) -> dict:
    """The steps import the staged build first (when the build step made one), and this repository's
    `benchmarks`; the GPU steps ask for the native kernels so a silent fallback cannot pass for them."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    paths = [p for p in (state["stage"], str(ROOT)) if p] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# =========================================================================== the report


def report(summary: dict) -> str:
    """summary.json as Markdown: the steps, then each step's rows."""
    lines = [f"## gpu check — {summary['started']}", "", f"`{summary['command']}`", ""]
    env = next((s["result"] for s in summary["steps"] if s["step"] == "environment"), {})
    if env:
        lines += [f"- {key}: {env[key]}" for key in ("device", "driver", "torch", "nvcc", "cmake", "python")
                  if env.get(key)] + [""]
    lines += ["| step | status | seconds | reason |", "|---|---|---:|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.1f} | {s['reason']} |" for s in summary["steps"]]
    by_name = {s["step"]: s["result"] for s in summary["steps"]}
    if by_name.get("build", {}).get("info"):
        info = by_name["build"]["info"]
        lines += ["", "Build: " + ", ".join(f"{k} {info.get(k)}" for k in (
            "cuda_kernels_compiled", "cuda_architectures", "cuda_build_version") if k in info)]
    if by_name.get("pytest", {}).get("counts"):
        lines += ["", "pytest: " + ", ".join(f"{v} {k}" for k, v in by_name["pytest"]["counts"].items())]
    rows = by_name.get("bench", {}).get("rows", [])
    if rows:
        lines += ["", "| kernel | input | asdx ms | torch (same device) | torch ms | torch ÷ asdx | note |",
                  "|---|---|---:|---|---:|---:|---|"]
        lines += [f"| {r['kernel']} | {r['input']} | {_num(r.get('asdx_ms'))} | {r.get('reference', '')} | "
                  f"{_num(r.get('reference_ms'))} | {_ratio(r)} | {r.get('note', '')} |" for r in rows]
    for problem in by_name.get("bench", {}).get("problems", []):
        lines.append(f"- {problem}")
    checks = by_name.get("agreement", {}).get("checks", [])
    if checks:
        lines += ["", "| kernel | case | native vs torch | limit | ok |", "|---|---|---:|---:|---|"]
        lines += [f"| {c['kernel']} | {c['case']} | {c['value']:.3g} | {c['limit']:g} | {'yes' if c['ok'] else 'NO'} |"
                  for c in checks]
    beats = by_name.get("beats", {})
    if beats.get("rows"):
        lines += ["", f"BEATs {beats.get('model', '')}, batch {beats.get('clips')} × {beats.get('seconds')} s:", "",
                  "| precision | fbank + forward clips/s |", "|---|---:|"]
        lines += [f"| {r['precision']} | {r['clips_per_s']:.1f} |" for r in beats["rows"]]
        if beats.get("agreement"):
            lines += ["", "bf16 vs float32 last-layer tokens: " + ", ".join(
                f"{k} {v:.4g}" for k, v in beats["agreement"].items())]
    runs = by_name.get("runs", {}).get("runs", [])
    if runs:
        lines += ["", "| system | status | wall s | peak GPU MiB | Ω | score reproduces | stages (s, clips/s) |",
                  "|---|---|---:|---:|---:|---|---|"]
        for r in runs:
            stages = "; ".join(f"{s['stage']}: {s.get('seconds', 0):.1f} s"
                               + (f", {s['clips_per_s']:.1f} clips/s" if s.get("clips_per_s") else "")
                               for s in r.get("stages", []) if s.get("seconds", 0) >= 0.05)  # the rest: summary.json
            peak = r.get("peak_gpu_bytes")
            lines.append(f"| {r['system']} | {r['status']} | {_num(r.get('seconds'))} | "
                         f"{_num(peak / 2**20 if peak else None)} | {_num(r.get('omega'), 4)} | "
                         f"{r.get('score_check', '')} | {stages} |")
    return "\n".join(lines) + "\n"


def _num(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _ratio(row: dict) -> str:
    a, t = row.get("asdx_ms"), row.get("reference_ms")
    return f"{t / a:.2f}×" if a and t else ""


# =========================================================================== the steps (child processes)


class Recorder:
    """A step's result file, rewritten after every part so a step stopped at its limit keeps what it did."""

    def __init__(self, path: Path):
        self.path, self.result, self.status, self.reason = path, {}, FAILED, "did not finish"

    def save(self) -> None:
        write_text(self.path, json.dumps({"status": self.status, "reason": self.reason, "result": self.result},
                                         default=str, indent=1))

    def finish(self, status: str, reason: str = "") -> None:
        self.status, self.reason = status, reason
        self.save()


def run_child(name: str, state_file: str) -> int:
    state = json.loads(Path(state_file).read_text())
    recorder = Recorder(Path(state["work"]) / "results" / f"{name}.json")
    recorder.save()
    try:
        CHILD_STEPS[name](state, recorder)
    except Exception as error:  # the step's failure, with its cause, in the summary
        import traceback

        traceback.print_exc()
        recorder.finish(FAILED, f"{type(error).__name__}: {error}")
    return 0


def _command_output(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout or done.stderr).strip() or None


def step_environment(state: dict, rec: Recorder) -> None:
    import platform

    import torch

    nvcc = _command_output([os.environ.get("CUDACXX") or "nvcc", "--version"])
    smi = _command_output(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    devices = [f"{torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))}, "
               f"{torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
               for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    rec.result.update(
        python=f"{platform.python_version()} ({sys.executable})", platform=platform.platform(),
        torch=f"{torch.__version__} (CUDA {torch.version.cuda})", gpu=torch.cuda.is_available(),
        device=", ".join(devices) or "no CUDA device visible to torch",
        driver=smi.splitlines()[0].split(",")[1].strip() if smi and "," in smi else smi,
        nvidia_smi=smi, nvcc=nvcc.splitlines()[-1] if nvcc else "not found",
        cmake=(_command_output(["cmake", "--version"]) or "not found").splitlines()[0],
        ninja=_command_output(["ninja", "--version"]) or "not found", cpu_cores=os.cpu_count())
    for key in ("python", "torch", "device", "driver", "nvcc", "cmake"):
        print(f"{key}: {rec.result[key]}")
    rec.finish(OK)


def _project_version() -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    return match.group(1) if match else "0.0.0"


def _run_logged(command: list[str], stdout_to_null: bool = False) -> None:
    """Runs command with its output in this step's log (its stdout dropped if asked); raises on failure."""
    print("$ " + " ".join(map(str, command)), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL if stdout_to_null else sys.stdout,
                   stderr=sys.stdout)


def step_build(state: dict, rec: Recorder) -> None:
    """cmake + ninja into build/gpu-check (kept: a second run rebuilds only what changed), then a copy of
    python/asdx with the new _C beside it, in the work folder: the source tree is left as it is."""
    pybind11_dir = subprocess.run([sys.executable, "-m", "pybind11", "--cmakedir"], capture_output=True,
                                  text=True, check=True).stdout.strip()
    configure = ["cmake", "-S", str(ROOT), "-B", str(BUILD_DIR), "-DASDX_CUDA=ON", "-DCMAKE_BUILD_TYPE=Release",
                 f"-DSKBUILD_PROJECT_VERSION={_project_version()}", f"-Dpybind11_DIR={pybind11_dir}",
                 f"-DPython_EXECUTABLE={sys.executable}"]
    if shutil.which("ninja") and not (BUILD_DIR / "CMakeCache.txt").exists():
        configure += ["-G", "Ninja"]
    if state["cuda_arch"]:
        configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={state['cuda_arch']}")
    rec.result["configure"] = configure
    start = time.monotonic()
    _run_logged(configure)
    rec.result["configure_s"] = round(time.monotonic() - start, 1)
    rec.save()
    start = time.monotonic()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    _run_logged(["cmake", "--build", str(BUILD_DIR), "-j", str(cores)])
    rec.result["build_s"] = round(time.monotonic() - start, 1)
    built = sorted(BUILD_DIR.glob("_C*.so"), key=lambda p: p.stat().st_mtime)
    if not built:
        rec.finish(FAILED, f"no _C*.so in {BUILD_DIR}")
        return
    stage = Path(state["work"]) / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(ROOT / "python" / "asdx", stage / "asdx", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy2(built[-1], stage / "asdx" / built[-1].name)
    rec.result["stage"] = str(stage)
    probe = subprocess.run([sys.executable, "-c", "import asdx, json; print(json.dumps(asdx.info(), default=str))"],
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(stage)))
    if probe.returncode:
        print(probe.stderr)
        rec.finish(FAILED, f"the staged build does not import: {probe.stderr.strip().splitlines()[-1:]}")
        return
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    rec.result["info"] = info
    print(json.dumps(info, indent=1))
    if not info.get("cuda_kernels_compiled"):
        rec.finish(FAILED, "built, but without CUDA kernels (see build.txt)")
        return
    rec.finish(OK)


def _gpu_test_files() -> list[str]:
    """The test files holding GPU tests: those that mark tests gpu or use conftest's requires_cuda."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if re.search(r"mark\.gpu|requires_cuda", p.read_text()))


def step_pytest(state: dict, rec: Recorder) -> None:
    """-k "gpu or cuda" selects the tests marked gpu (markers are keywords) and those named for CUDA, such as
    test_gamma's requires_cuda ones; ASDX_KERNELS=native: a kernel that falls back to torch fails, not passes."""
    files = _gpu_test_files()
    junit = Path(state["work"]) / "pytest.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "gpu or cuda",
               f"--junitxml={junit}", *files]
    rec.result["command"] = command
    env = dict(os.environ, ASDX_KERNELS="native")
    if state["smoke"]:
        env.pop("ASDX_KERNELS")
    print("$ " + " ".join(command), flush=True)
    code = subprocess.run(command, cwd=ROOT, env=env, stdout=sys.stdout, stderr=subprocess.STDOUT).returncode
    counts = _junit_counts(junit)
    rec.result.update(exit_status=code, counts=counts, files=files)
    if code not in (0, 5) or counts.get("failed") or counts.get("errors"):
        rec.finish(FAILED, f"pytest exit status {code}: {counts}")
    elif not counts.get("passed"):
        rec.finish(FAILED if state["gpu"] else OK, f"no GPU test passed: {counts}")
    else:
        rec.finish(OK, ", ".join(f"{v} {k}" for k, v in counts.items()))


def _junit_counts(path: Path) -> dict:
    try:
        import xml.etree.ElementTree as ET

        suite = ET.parse(path).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        tests, failed, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    except Exception:
        return {}
    return {"passed": tests - failed - errors - skipped, "failed": failed, "errors": errors, "skipped": skipped}


def _device(state: dict):
    import torch

    return torch.device("cpu" if state["smoke"] else "cuda")


def step_bench(state: dict, rec: Recorder) -> None:
    """Each row: asdx on the device against the same work in torch on the same device, in this run."""
    import numpy as np
    import torch
    from types import SimpleNamespace

    from benchmarks import _scoring_gamma, _scoring_maha_gmm, bench_frontend, bench_scoring

    device, smoke = _device(state), state["smoke"]
    if not smoke:  # the asdx rows must time the native kernels: a fallback to torch is an error here, not a row
        os.environ["ASDX_KERNELS"] = "native"
    rows, problems = rec.result.setdefault("rows", []), rec.result.setdefault("problems", [])
    repeat = 1 if smoke else 5
    clips, seconds = (2, 1.0) if smoke else (32, 10.0)

    def frontends():
        stereo = bench_frontend.make_input(clips, seconds)
        label = {k: f"{clips} × {seconds:g} s {'stereo' if k == 'stereo_features' else 'mono'}"
                 for k in bench_frontend.KERNELS}
        warnings: list[str] = []
        with torch.inference_mode():
            found = bench_frontend.run_gpu(stereo, SimpleNamespace(clips=clips, repeat=repeat), label, warnings, device)
        problems.extend(w for w in warnings if w)
        return [{"kernel": f"{r.kernel} {r.precision}", "input": r.input, "asdx_ms": r.asdx_ms,
                 "reference": f"torch equivalent ({device.type})", "reference_ms": r.torch_ms,
                 "note": f"floor (torch.fft) {r.floor_ms:.2f} ms" + (f"; {r.note}" if r.note else "")} for r in found]

    def knn():
        from asdx.index import faiss_gpu_available

        try:
            available = faiss_gpu_available()
        except Exception as error:  # faiss missing altogether
            available, why = False, f"faiss does not import ({error})"
        else:
            why = "faiss has no GPU support here (faiss-cpu, or faiss-gpu without a GPU)"
        if smoke or not available:
            raise NotImplementedError(why if not smoke else "--cpu-smoke: FAISS GPU needs a GPU")
        rng = np.random.default_rng(0)
        bank = rng.standard_normal((10_000, 768)).astype(np.float32)
        queries = rng.standard_normal((2_000, 768)).astype(np.float32)
        return [bench_scoring.knn_gpu_row(bank, queries, repeat)]

    small = dict(n=2000, d=64) if smoke else {}
    families = [
        ("frontends", frontends),
        ("mahalanobis", lambda: _scoring_maha_gmm.mahalanobis_torch_rows(repeat, device, **small)),
        ("gmm", lambda: _scoring_maha_gmm.gmm_torch_rows(repeat, device, **small)),
        ("knn", knn),
        # last: the torch gamma fit iterates per set and may be slow; a step stopped at its limit keeps the rest
        ("gamma", lambda: _scoring_gamma.gamma_torch_rows(min(repeat, 2), device,
                                                          **(dict(n_sets=5, n_scores=200) if smoke else {}))),
    ]
    failed = []
    for family, run in families:
        try:
            found = run()
        except NotImplementedError as why:
            problems.append(f"{family}: skipped: {why}")
        except Exception as error:
            import traceback

            traceback.print_exc()
            failed.append(family)
            problems.append(f"{family}: failed: {type(error).__name__}: {error}")
        else:
            rows.extend(found)
            for r in found:
                print(f"{r['kernel']:28s} {r['input']:26s} asdx {r['asdx_ms'] or float('nan'):9.3f} ms | torch "
                      f"{r['reference_ms']:9.3f} ms | {_ratio(r)} | {r.get('note', '')}", flush=True)
        rec.save()
    for line in problems:
        print(line)
    rec.finish(FAILED if failed else OK, f"failed: {', '.join(failed)}" if failed else "")


def _agreement_cases(device, smoke: bool):
    """(kernel, case, call) for every kernel family; call() gives the output under the kernels selected now."""
    import numpy as np
    import torch

    import asdx.features as features
    from asdx.scoring.gamma import fit_gamma_batch
    from asdx.scoring.gmm import gmm_diag_loglik
    from asdx.scoring.mahalanobis import mahalanobis
    from benchmarks import bench_frontend

    rng = np.random.default_rng(0)
    stereo = torch.from_numpy(bench_frontend.make_input(2 if smoke else 8, 1.0 if smoke else 4.0)).to(device)
    cases = []
    for kernel in bench_frontend.KERNELS:
        x = stereo if kernel == "stereo_features" else stereo[:, :1].contiguous()
        for precision in ("float64", "float32"):
            cases.append((kernel, precision, lambda x=x, k=kernel, p=precision: getattr(features, k)(x, precision=p)))
    n, d, k = (500, 32, 2) if smoke else (20_000, 640, 2)
    q = rng.standard_normal((n, d))
    means = rng.standard_normal((k, d))
    precisions = np.stack([m @ m.T / d + np.eye(d) for m in rng.standard_normal((k, d, d))])
    weights, variances = rng.dirichlet(np.ones(4)), rng.uniform(0.5, 2.0, (4, d))
    gmm_means = rng.standard_normal((4, d))
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).removeprefix("torch.")
        queries = torch.as_tensor(q, dtype=dtype, device=device)
        cases.append(("mahalanobis", name, lambda queries=queries: mahalanobis(queries, means, precisions)))
        cases.append(("gmm_diag_loglik", name,
                      lambda queries=queries: gmm_diag_loglik(queries, weights, gmm_means, variances)))
    n_sets, n_scores = (3, 200) if smoke else (10, 500)
    sets = torch.from_numpy(rng.gamma(rng.uniform(1.5, 12.0, (n_sets, 1)), 1.0, (n_sets, n_scores)) * 2.0 + 5.0)
    sets = sets.to(device)
    cases.append(("fit_gamma_batch", f"{n_sets} sets x {n_scores}, free loc, ppf(0.9)",
                  lambda: np.array([f.ppf(0.9) for f in (fit_gamma_batch(sets)[i] for i in range(n_sets))])))
    return cases


def _agreement(kernel: str, native, fallback) -> tuple[float, float]:
    """(value, limit) of one comparison: the frontends by bench_frontend's dB-aware checks (worst value over
    limit, scaled to the limit), the scores by max relative difference."""
    import numpy as np
    import torch

    from benchmarks import bench_frontend

    if kernel in bench_frontend.KERNELS:
        checks = bench_frontend.compare(kernel, bench_frontend._on_cpu(native), bench_frontend._on_cpu(fallback))
        return max(value / limit for _, value, limit in checks), 1.0
    a = torch.as_tensor(native).double().cpu().numpy()
    b = torch.as_tensor(fallback).double().cpu().numpy()
    limit = {"mahalanobis": 1e-4, "gmm_diag_loglik": 1e-5, "fit_gamma_batch": 1e-3}[kernel]
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1.0))), limit


def step_agreement(state: dict, rec: Recorder) -> None:
    import asdx

    if not hasattr(asdx, "set_kernels"):
        rec.finish(SKIPPED, NO_SET_KERNELS)
        return
    from benchmarks._scoring_gamma import kernels_mode_restorer

    set_kernels, restore = kernels_mode_restorer()
    device = _device(state) if state["gpu"] or state["smoke"] else __import__("torch").device("cpu")
    rec.result["device"] = str(device)
    checks = rec.result.setdefault("checks", [])
    try:
        for kernel, case, call in _agreement_cases(device, state["smoke"] or not state["gpu"]):
            outputs = {}
            for mode in ("native", "torch"):
                set_kernels(mode)
                outputs[mode] = call()
            value, limit = _agreement(kernel, outputs["native"], outputs["torch"])
            checks.append({"kernel": kernel, "case": case, "value": value, "limit": limit, "ok": value <= limit})
            print(f"{kernel:18s} {case:26s} native vs torch {value:.3g} (limit {limit:g})", flush=True)
            rec.save()
    finally:
        restore()
    bad = [f"{c['kernel']} {c['case']}" for c in checks if not c["ok"]]
    rec.finish(FAILED if bad else OK, f"disagree: {', '.join(bad)}" if bad else f"{len(checks)} checks on {device}")


def step_beats(state: dict, rec: Recorder) -> None:
    import numpy as np
    import torch

    from asdx.models.beats import BEATs, BEATsConfig, parameter_count, tiny_config
    from benchmarks._common import timeit_best
    from benchmarks.bench_beats import audio

    smoke, device = state["smoke"], _device(state)
    cfg = tiny_config() if smoke else BEATsConfig()
    clips, seconds, repeat = (2, 2.0, 1) if smoke else (32, 10.0, 3)
    model = BEATs(cfg)
    model.reset_parameters(torch.Generator().manual_seed(0))
    model = model.to(device).eval()
    rec.result.update(model=f"{'tiny (smoke)' if smoke else 'official configuration'}, "
                            f"{parameter_count(cfg) / 1e6:.1f} M parameters, random weights",
                      clips=clips, seconds=seconds, rows=[])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    wave = audio(clips, seconds).to(device)
    tokens = {}
    with torch.inference_mode():
        for precision, dtype in (("float32", None), ("bf16 autocast", torch.bfloat16)):
            def forward():
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    return model.extract(wave).tokens

            tokens[precision] = forward().float()
            ms = timeit_best(forward, repeat, sync)
            rec.result["rows"].append({"precision": precision, "ms": ms, "clips_per_s": clips / (ms / 1e3)})
            print(f"BEATs {precision}: {clips / (ms / 1e3):.1f} clips/s (fbank + forward, batch {clips})", flush=True)
            rec.save()
    if device.type == "cuda":
        rec.result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    a, b = tokens["float32"], tokens["bf16 autocast"]
    finite = bool(torch.isfinite(a).all() and torch.isfinite(b).all())
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    agreement = {"mean cosine": float(cosine.mean()), "min cosine": float(cosine.min()),
                 "relative L2": float((a - b).norm() / a.norm())}
    rec.result.update(agreement=agreement, finite=finite, tokens=list(a.shape))
    print("bf16 vs float32: " + ", ".join(f"{k} {v:.4g}" for k, v in agreement.items()))
    if not finite:
        rec.finish(FAILED, "non-finite tokens")
    elif agreement["mean cosine"] < 0.99 or not np.isfinite(agreement["relative L2"]):
        rec.finish(FAILED, f"bf16 autocast disagrees with float32: mean cosine {agreement['mean cosine']:.4f} < 0.99")
    else:
        rec.finish(OK)


# --------------------------------------------------------------------------- runs

MACHINE = "fan"
RUN_NAME = "gpu-check"
STAGE_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO (.*)$")
CLIPS = re.compile(r"(?:of|on|:) (\d+) (?:train |test )?clips")
EPOCH = re.compile(r"epoch \d+:")
COUNTED = re.compile(r"^(global stage: )?(loading|embedding|training)[^:]*:")  # "training (fold 1/3): ..." too


def stage_timings(log_text: str) -> list[dict]:
    """Seconds per stage of a run.log: from each progress line to the next one (the per-epoch lines belong to
    the training stage before them). clips_per_s where the stage line names its clips ("embedding: ... of N
    clips", "training: ... on N clips"), a training stage's clips counted once per epoch logged."""
    from datetime import datetime

    stages, last = [], None
    for line in log_text.splitlines():
        match = STAGE_LINE.match(line)
        if not match or match.group(2).startswith("note:"):
            continue
        when, text = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f"), match.group(2)
        if EPOCH.search(text) and stages:
            stages[-1]["epochs"] = stages[-1].get("epochs", 0) + 1
            continue
        if stages:
            stages[-1]["seconds"] = round((when - last).total_seconds(), 2)
        stages.append({"stage": re.sub(r"^machine \d+/\d+: [^:]+: ", "", text)[:90]})
        last = when
    if stages:
        stages.pop()  # the last line ("run finished") starts no stage
    for stage in stages:
        count = CLIPS.search(stage["stage"])
        if count and COUNTED.match(stage["stage"]) and stage.get("seconds"):
            stage["clips_per_s"] = round(int(count.group(1)) * stage.get("epochs", 1) / stage["seconds"], 2)
    return stages


def _peak_wrapper(peak_file: str, argv: list[str]) -> int:
    """`asdx ARGV` in this process, then its peak GPU memory (torch.cuda.max_memory_allocated) into peak_file."""
    import torch

    from asdx.cli import main as asdx_main

    code = 1
    try:
        code = asdx_main(argv)
    finally:
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else None
        write_text(Path(peak_file), json.dumps({"peak_gpu_bytes": peak, "exit_status": code}))
    return code


def _read_scores(path: Path) -> dict[str, float]:
    import csv

    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    start = 1 if rows and rows[0][1:2] == ["score"] else 0  # run: name,score,...; asdx score: path,score,...
    return {Path(r[0]).name: float(r[1]) for r in rows[start:] if len(r) >= 2}


def compare_scores(run_scores: dict[str, float], scored: dict[str, float]) -> tuple[bool, str]:
    """`asdx score` against the run's test_scores.csv: the same clips, and |Δ| ≤ 1e-3 of the largest |score|.

    Float32 reruns agree far closer; bf16 autocast on a GPU may batch the clips differently from the run
    (a few 1e-3 relative per value at most); a different model, bank or normalisation differs by the
    scores' own size. The gap is recorded either way, also relative to the scores' range."""
    import numpy as np

    if set(run_scores) != set(scored):
        return False, f"clip sets differ ({len(run_scores)} in the run, {len(scored)} scored)"
    names = sorted(run_scores)
    a = np.array([run_scores[n] for n in names])
    b = np.array([scored[n] for n in names])
    gap = float(np.max(np.abs(a - b)))
    size, spread = max(float(np.max(np.abs(a))), 1e-12), max(float(np.ptp(a)), 1e-12)
    return gap <= 1e-3 * size, (f"max |Δ| = {gap:.2g} ({gap / size:.2g} of the largest |score|, {gap / spread:.2g} "
                                f"of their range) over {len(names)} clips")


def step_runs(state: dict, rec: Recorder) -> None:
    smoke = state["smoke"]
    work = Path(state["work"]) / "runs-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data, runs_dir = work / "data", work / "runs"
    device = "cpu" if smoke else "cuda"
    seconds = "2" if smoke else "10"
    python = [sys.executable, "-m", "asdx"]
    sizes = ["--n-source", "8", "--n-target", "2", "--n-test", "3"] if smoke else []
    start = time.monotonic()
    _run_logged([*python, "synth", "--out", str(data), "--machines", MACHINE, "--seconds", seconds, "--quiet",
                 *sizes])
    rec.result["synth_s"] = round(time.monotonic() - start, 1)
    if smoke:
        beats = "random-tiny"
    else:
        import torch

        from asdx.models.beats import BEATs, BEATsConfig

        model = BEATs(BEATsConfig())  # the official configuration, random weights
        model.reset_parameters(torch.Generator().manual_seed(0))
        beats = str(model.save_checkpoint(work / "beats-random-full.pt"))
    rec.result["beats"] = beats if smoke else "official configuration, random weights (a checkpoint file)"
    common = ["--machine", MACHINE, "--data", str(data), "--out", str(runs_dir), "--name", RUN_NAME,
              "--device", device, "--seconds", seconds, "--quiet", *(["--workers", "0"] if smoke else [])]
    plans = [("sera", ["--beats", beats, "--epochs", "2" if smoke else "10"]),
             ("fusion", ["--beats", beats, "--epochs", "1"]),
             ("proto", ["--beats", beats, "--size", "tiny" if smoke else "full", "--epochs", "1"]),
             ("ae", ["--epochs", "2" if smoke else "20"])]
    runs = rec.result.setdefault("runs", [])
    test_dir = data / "dev_data" / "raw" / MACHINE / "test"
    for system, options in plans:
        entry = {"system": system, "status": FAILED, "options": options}
        runs.append(entry)
        peak_file = work / f"peak-{system}.json"
        start = time.monotonic()
        try:
            _run_logged([sys.executable, "-m", "benchmarks.gpu_check", "--peak", str(peak_file), "--",
                         "run", system, *common, *options])
        except subprocess.CalledProcessError as error:
            entry["error"] = f"asdx run exited with status {error.returncode}"
        entry["seconds"] = round(time.monotonic() - start, 1)
        entry.update(read_json(peak_file))
        run_dir = runs_dir / system / RUN_NAME
        if (run_dir / "run.log").exists():
            entry["stages"] = stage_timings((run_dir / "run.log").read_text())
        metrics = read_json(run_dir / "metrics.json")
        entry["omega"] = metrics.get("official_score")
        notes = read_json(run_dir / "notes.json")  # a kernel fallback on this GPU would be said here
        entry["notes"] = notes.get("notes", notes) if isinstance(notes, dict) else notes
        built = read_json(run_dir / "environment.json")  # which asdx the run imported: the staged build's facts
        entry["kernels"] = {k: built.get(k) for k in ("cuda_kernels_compiled", "cuda_architectures",
                                                       "cuda_build_version") if k in built}
        test_scores = run_dir / "machines" / MACHINE / "test_scores.csv"
        if "error" not in entry and test_scores.exists():
            scored_csv = work / f"scored-{system}.csv"
            try:
                _run_logged([*python, "score", "--run", str(run_dir), "--machine", MACHINE, "--out", str(scored_csv),
                             "--device", device, "--quiet", str(test_dir)], stdout_to_null=True)
                same, text = compare_scores(_read_scores(test_scores), _read_scores(scored_csv))
            except subprocess.CalledProcessError as error:
                same, text = False, f"asdx score exited with status {error.returncode}"
            entry["score_check"] = ("yes: " if same else "NO: ") + text
            entry["status"] = OK if same else FAILED
        elif "error" not in entry:
            entry["error"] = f"{test_scores} missing"
        print(f"[runs] {system}: {entry['status']} in {entry['seconds']} s; {entry.get('score_check', entry.get('error'))}",
              flush=True)
        rec.save()
    bad = [r["system"] for r in runs if r["status"] != OK]
    rec.finish(FAILED if bad else OK, f"failed: {', '.join(bad)}" if bad else "")


SAMPLE_LOG = """\
2026-01-01 10:00:00,000 INFO run runs/sera/x (new): sera on fan
2026-01-01 10:00:00,500 INFO global stage: training on 36 train clips of 1 machines (fan)
2026-01-01 10:00:01,000 INFO global stage: embedding: BEATs tokens (global train clips) of 36 clips (0 cached)
2026-01-01 10:00:03,000 INFO global stage: training: ASP head on 30 clips, 6 for validation, 3 ArcFace heads
2026-01-01 10:00:04,000 INFO sera epoch 1: loss 3.0, val 3.1
2026-01-01 10:00:05,000 INFO note: fan: something
2026-01-01 10:00:06,000 INFO sera epoch 2: loss 2.0, val 2.1
2026-01-01 10:00:07,000 INFO machine 1/1: fan: training fold 1/3: 6 clips, 3 groups, 1 epochs
2026-01-01 10:00:07,500 INFO machine 1/1: fan: scoring
2026-01-01 10:00:07,750 INFO machine 1/1: fan: done (threshold 1.0, 2 of 48 test clips flagged)
2026-01-01 10:00:08,000 INFO run finished
"""


def self_test() -> int:
    """The parsing this script relies on, on built-in examples (tests/test_gpu_check.py runs it): stage
    timings of a run.log, both score CSV layouts, and the score comparison."""
    import tempfile

    stages = {s["stage"]: s for s in stage_timings(SAMPLE_LOG)}
    checks = {
        "the last line starts no stage": list(stages)[-1].startswith("done") and "run finished" not in stages,
        "embedding: 36 clips in 2 s": stages["global stage: embedding: BEATs tokens (global train clips) of 36 "
                                             "clips (0 cached)"].get("clips_per_s") == 18.0,
        "training: 30 clips x 2 epochs in 4 s": stages["global stage: training: ASP head on 30 clips, 6 for "
                                                       "validation, 3 ArcFace heads"] == {
            "stage": "global stage: training: ASP head on 30 clips, 6 for validation, 3 ArcFace heads",
            "epochs": 2, "seconds": 4.0, "clips_per_s": 15.0},
        "a header line gets no rate": "clips_per_s" not in stages["global stage: training on 36 train clips of 1 "
                                                                  "machines (fan)"],
        "a fold's clips": stages["training fold 1/3: 6 clips, 3 groups, 1 epochs"].get("clips_per_s") == 12.0,
        "the machine prefix goes": stages["scoring"]["seconds"] == 0.25,
        "same scores agree": compare_scores({"a": 1.0, "b": 3.0}, {"a": 1.0, "b": 3.0 + 1e-6})[0],
        "other scores differ": not compare_scores({"a": 1.0, "b": 3.0}, {"a": 1.0, "b": 3.01})[0],
        "other clips differ": not compare_scores({"a": 1.0, "b": 3.0}, {"a": 1.0})[0],
    }
    with tempfile.TemporaryDirectory() as folder:
        run_csv, scored_csv = Path(folder) / "run.csv", Path(folder) / "scored.csv"
        run_csv.write_text("name,score,label,domain\nx.wav,1.5,0,source\n")
        scored_csv.write_text("path,score,decision\n/data/test/x.wav,1.5,0\n")
        checks["both CSV layouts"] = _read_scores(run_csv) == _read_scores(scored_csv) == {"x.wav": 1.5}
    for what, ok in checks.items():
        print(f"{'ok' if ok else 'FAILED'}: {what}")
    return 0 if all(checks.values()) else 1


CHILD_STEPS = {"environment": step_environment, "build": step_build, "pytest": step_pytest, "bench": step_bench,
               "agreement": step_agreement, "beats": step_beats, "runs": step_runs}


def entry(argv: list[str]) -> int:
    """`python -m benchmarks.gpu_check`: the orchestrator, or (internal) one step or the peak-memory wrapper."""
    if argv[:1] == ["--child"]:
        return run_child(argv[1], argv[2])
    if argv[:1] == ["--peak"]:
        return _peak_wrapper(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
    return main(argv)


if __name__ == "__main__":
    sys.exit(entry(sys.argv[1:]))
