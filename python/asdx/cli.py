"""The `asdx` command line. Parses arguments and calls library functions; no logic lives here.

Errors the user can fix (bad paths, unknown machines, bad config keys, mismatched
submissions) print one line `asdx <command>: error: ...` and exit with status 1.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import warnings
from pathlib import Path

from asdx.options import MACHINES_HELP, RunOptions

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def _machine_names(values, flag: str) -> list[str]:
    """--machine/--machines values: names given comma- or space-separated (`a,b`, `a b`, `a, b`), in order."""
    names = [name for value in ([values] if isinstance(values, str) else values)
             for name in value.replace(",", " ").split()]
    if not names:
        raise ValueError(f"{flag}: no machine type given.")
    return names


def _cmd_info(args: argparse.Namespace) -> int:
    from asdx.info import format_info, info

    report = info()
    print(json.dumps(report, indent=2) if args.json else format_info(report))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from asdx.data.synth import generate

    root = generate(args.out, machines=_machine_names(args.machines, "--machines"), seconds=args.seconds,
                    n_source=args.n_source, n_target=args.n_target, n_test=args.n_test, seed=args.seed,
                    full=args.full, progress=not args.quiet, background=args.background,
                    preview=args.preview)
    print(f"synthetic DCASE 2026 Task 2 data in {root}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from asdx.evaluation import dataset_ground_truth, evaluate, format_report, load_ground_truth, result_json, \
        write_results
    from asdx.submission import submission_machines

    submission = Path(args.submission)
    machines = _machine_names(args.machines, "--machines") if args.machines is not None else None
    if args.ground_truth is not None:
        if args.split is not None:
            raise ValueError("--split: only applies with --data (a ground-truth folder is one set).")
        truth = load_ground_truth(args.ground_truth)
    elif args.split is not None:
        truth = dataset_ground_truth(args.data, args.split)
    else:  # the machines of the submission, each from the set (dev or eval) that has its ground truth
        machines = machines or submission_machines(submission)
        if not machines:
            raise FileNotFoundError(f"{submission}: no anomaly_score_<machine>_section_00_test.csv files.")
        truth = dataset_ground_truth(args.data, "all", machines=machines)
    result = evaluate(submission, truth, machines=machines)
    resolved = submission.resolve()
    # Next to the submission, never inside it: the folder holds exactly what is submitted.
    out = Path(args.out) if args.out else resolved.parent
    csv_path, json_path = write_results(result, out, args.name or resolved.name)
    if args.json:
        print(json.dumps(result_json(result), indent=2))
        print(f"wrote {csv_path}\nwrote {json_path}", file=sys.stderr)
    else:
        print(format_report(result))
        print(f"\nwrote {csv_path}\nwrote {json_path}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from asdx.config import build_config, read_config_file
    from asdx.systems import SYSTEMS

    # Everything the user gave is checked, and every problem reported, before the runner makes a folder
    # (whether torch can use the device is the runner's first check, also before any folder).
    problems = []
    given = {**vars(args), "progress": not args.quiet}
    if args.machines is not None:
        try:
            given["machines"] = ",".join(_machine_names(args.machines, "--machine"))
        except ValueError as error:
            problems.append(str(error))
            given["machines"] = None
    try:
        options = build_config(RunOptions, {}, given)
    except ValueError as error:
        problems.append(str(error))
    try:
        file_values = read_config_file(args.config, args.system, SYSTEMS) if args.config else {}
        config = build_config(SYSTEMS[args.system].config, file_values, vars(args), source=str(args.config))
    except ValueError as error:
        problems.append(str(error))
    seeds = None
    if args.seeds is not None:
        from asdx.seeds import parse_seeds

        if getattr(args, "seed", None) is not None:
            problems.append("--seeds and --seed: give one of them (--seeds runs each listed seed, --seed one run).")
        try:
            seeds = parse_seeds(args.seeds)
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise ValueError("\n".join(problems))

    from asdx import distributed
    from asdx.evaluation import format_report
    from asdx.rundir import RunDir
    from asdx.runner import run

    if seeds is not None:  # one ordinary run per seed under one parent, then its summary (asdx.seeds)
        from asdx.seeds import format_summary, load_summary, run_seeds

        try:
            parent = run_seeds(options, config, seeds)
        finally:
            distributed.shutdown()
        if parent is None:  # a torchrun rank other than 0
            return 0
        print(format_summary(load_summary(parent)))
        print(f"\nseeds directory: {parent}\nsummary: {parent / 'summary.html'} (also summary.csv, summary.json)")
        return 0
    try:
        run_dir, evaluation = run(options, config)
    finally:
        distributed.shutdown()
    if run_dir is None:  # a torchrun rank other than 0: rank 0 writes and reports
        return 0
    if evaluation is not None:
        print(format_report(evaluation))
    print(f"\nrun directory: {run_dir}\nreport: {RunDir(run_dir).report_html}")
    return 0


def _score_rows(detector, paths, failures: list) -> list[tuple[str, float, int]]:
    """(path, score, decision) per scored file; the path as given (a folder's files: folder/name), so that
    files of the same name in two folders stay apart."""
    result = detector.score_files(paths)
    failures.extend(result.failures)
    failed = {path for path, _ in result.failures}
    scored = [str(path) for path in paths if str(path) not in failed]   # score_files keeps the input order
    if len(scored) != len(result):  # pragma: no cover - a path listed twice with one copy failing
        scored = list(result.names)
    decisions = detector.decide(result.scores) if len(result) else []
    return [(path, float(score), int(d)) for path, score, d in zip(scored, result.scores, decisions)]


def _cmd_score(args: argparse.Namespace) -> int:
    from asdx._atomic import atomic_write_text
    from asdx.detector import expand_inputs, load_detector

    if not args.inputs and args.watch is None:
        raise ValueError("give FILE_OR_DIR arguments to score, or --watch DIR.")
    rows: list[tuple[str, float, int]] = []
    failures: list[tuple[str, str]] = []

    def emit(new_rows) -> None:
        rows.extend(new_rows)
        for path, score, decision in new_rows:
            print(f"{path}\t{score!r}\t{decision}", flush=True)
        if args.out:  # rewritten whole, atomically: a reader never sees a half-written CSV
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerows([("path", "score", "decision"), *((p, repr(s), d) for p, s, d in rows)])
            atomic_write_text(Path(args.out), buffer.getvalue())

    with load_detector(args.run, args.machine, device=args.device, workers=args.workers,
                       progress=not args.quiet) as detector:
        paths = expand_inputs(args.inputs)
        if paths:
            emit(_score_rows(detector, paths, failures))
        if args.watch is not None:
            from asdx.watch import watch

            print(f"watching {args.watch} (Ctrl-C to stop)", file=sys.stderr, flush=True)
            watch(Path(args.watch), lambda ready: emit(_score_rows(detector, ready, failures)), args.interval)
    if failures:
        print(f"{len(failures)} file(s) not scored:", file=sys.stderr)
        for path, why in failures:
            print(f"  {why if why.startswith(path) else f'{path}: {why}'}", file=sys.stderr)
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from asdx.report import write_report

    print(write_report(args.run_dir))
    return 0


def _cmd_beats(args: argparse.Namespace) -> int:
    import torch

    from asdx.data import load_clip
    from asdx.models.beats_checkpoint import load_beats

    model = load_beats(args.beats)
    n_parameters = sum(p.numel() for p in model.parameters())
    print(f"BEATs: {model.cfg.encoder_layers} layers x {model.cfg.encoder_embed_dim} dims, {n_parameters:,} parameters, "
          f"fingerprint {model.fingerprint()[:16]}")
    for wav in args.wav or []:
        waveform = torch.from_numpy(load_clip(wav, channels=1, seconds=None))
        with torch.no_grad():
            tokens = model.extract(waveform).tokens
        print(f"{wav}: tokens {tuple(tokens.shape)}, mean {tokens.mean().item():.4f}, std {tokens.std().item():.4f}")
    for note in model.notes:
        print(f"NOTE: {note}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from asdx.demo import demo

    demo(out=args.out, progress=not args.quiet)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from asdx.compare import compare, format_compare, write_compare

    table = compare(args.runs)
    print(format_compare(table))
    csv_path, json_path = write_compare(table, args.out)
    print(f"\nwrote {csv_path}\nwrote {json_path}")
    return 0


def _add_run_parser(sub) -> None:
    from asdx.config import add_config_arguments
    from asdx.systems import SYSTEMS

    p_run = sub.add_parser("run", help="train and score a system per machine, threshold, write and evaluate",
                           description="Runs a system on DCASE-layout data; see `asdx run <system> --help`.")
    systems = p_run.add_subparsers(dest="system", metavar="SYSTEM", required=True)
    for name, entry in SYSTEMS.items():
        p = systems.add_parser(name, help=entry.summary, description=f"{name}: {entry.summary}")
        add_config_arguments(p, RunOptions, title="run options (every system)")
        p.add_argument("--seeds", default=None, metavar="N|K,K,...",
                       help="several runs, one per seed: N = seeds 1..N, or a comma-separated list; each into "
                            "<out>/<system>/<name>/seed<k>/, then summary.csv/.json/.html (mean ± sd over seeds) "
                            "in <name>/; finished seeds are skipped, unfinished ones resumed; not with --seed")
        p.add_argument("--config", default=None, help="TOML or YAML file whose keys mirror the flags of the "
                                                      f"{entry.config.__name__} group, at the top level or "
                                                      f"under [{name}] (YAML needs PyYAML: pip install "
                                                      "'asdx[yaml]')")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        add_config_arguments(p, entry.config)
        p.set_defaults(handler=_cmd_run)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line. Building it imports neither torch nor scikit-learn (the system configs come
    from the light asdx.systems.configs), so `--help` and argument errors answer at once on a busy machine."""
    parser = argparse.ArgumentParser(prog="asdx", description="Anomalous sound detection (DCASE Task 2) toolkit.")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for asdx kernels and torch, >= 1 (default: torch's, i.e. every core "
                             "asdx may use; idle threads sleep rather than spin, see OMP_WAIT_POLICY in the README)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_demo = sub.add_parser("demo", help="the main job on a built-in default: synthesise data, run all four "
                                         "systems, evaluate, report",
                            description="Synthesises a small stereo dataset (fan, valveEmu, ToyDrone, Sander), runs "
                                        "ae, sera, fusion and proto on it (the BEATs systems with the small random "
                                        "random-tiny BEATs, few epochs), evaluates each with the official metric "
                                        "and writes its HTML report. Re-running resumes. The scores show that "
                                        "everything runs end to end, not how the systems compare on DCASE data.")
    p_demo.add_argument("--out", default=None, help="folder for the data and runs (default: ~/.cache/asdx/demo)")
    p_demo.add_argument("--quiet", action="store_true", help="no progress bars")
    p_demo.set_defaults(handler=_cmd_demo)

    _add_run_parser(sub)

    p_eval = sub.add_parser("evaluate", help="score a submission folder with the official DCASE metrics",
                            description="Scores anomaly_score_/decision_result_<machine>_section_00_test.csv files "
                                        "like the official evaluator (AUC per domain, pAUC, harmonic-mean official "
                                        "score), but matches rows by clip name and refuses any mismatch.")
    p_eval.add_argument("--submission", required=True, metavar="DIR", help="folder with the submission CSVs")
    source = p_eval.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="ROOT", help="dataset root: dev labels from dev_data/raw/<machine>/test "
                                                       "names, eval labels from eval_data/ground_truth/")
    source.add_argument("--ground-truth", metavar="DIR", help="folder holding the evaluator's ground_truth_data/, "
                                                              "ground_truth_domain/ (and ground_truth_attributes/)")
    p_eval.add_argument("--split", choices=("dev", "eval"), help="with --data: only this set (default: each "
                                                                 "machine of the submission from the set that has "
                                                                 "its ground truth)")
    p_eval.add_argument("--machines", "--machine", dest="machines", nargs="+", metavar="M",
                        help="only these machine types, comma- or space-separated (default: every machine type of "
                             "the submission; with --split or --ground-truth, every one there)")
    p_eval.add_argument("--out", metavar="DIR", help="where to write <name>_result.csv/.json (default: the "
                                                     "folder that holds the submission folder)")
    p_eval.add_argument("--name", help="system name for the output files (default: the submission folder's name)")
    p_eval.add_argument("--json", action="store_true", help="print the JSON results instead of the table")
    p_eval.set_defaults(handler=_cmd_evaluate)

    p_score = sub.add_parser("score", help="score WAV files with a finished run (no retraining)",
                             description="Scores clips with the model, banks and threshold of one finished machine "
                                         "of a run directory; prints name, score and decision (1 = anomaly) per "
                                         "clip. Bad files are listed at the end (exit status 1); the rest are "
                                         "scored.")
    p_score.add_argument("--run", required=True, metavar="RUN_DIR", help="runs/<system>/<name>")
    p_score.add_argument("--machine", required=True, help="a machine that finished in that run")
    p_score.add_argument("inputs", nargs="*", metavar="FILE_OR_DIR", help="WAV files, or folders of *.wav")
    p_score.add_argument("--out", metavar="CSV", help="also write name,score,decision to this CSV")
    p_score.add_argument("--watch", metavar="DIR", help="then score new WAV files appearing in DIR until Ctrl-C "
                                                         "(a file is taken once its size is stable and its header "
                                                         "complete)")
    p_score.add_argument("--interval", type=float, default=1.0, help="--watch polling interval, seconds")
    p_score.add_argument("--device", default=None, help="override the run's device (e.g. cpu)")
    p_score.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding audio (default 0)")
    p_score.add_argument("--quiet", action="store_true", help="no progress bars")
    p_score.set_defaults(handler=_cmd_score)

    p_report = sub.add_parser("report", help="regenerate report.html of a run directory",
                              description="Rewrites report.html (and its plots under report/) of a run directory "
                                          "from the files the run wrote; nothing is retrained or rescored.")
    p_report.add_argument("run_dir", help="runs/<system>/<name>")
    p_report.set_defaults(handler=_cmd_report)

    p_compare = sub.add_parser("compare", help="several runs side by side: Ω, AUCs and pAUC per machine and overall",
                               description="One table, one column per run directory or parent of seed runs "
                                           "(`asdx run ... --seeds`: mean ± sd over its seeds); rows per machine "
                                           "and overall: Ω, its difference to the first column, its spread over "
                                           "seeds, AUC (source), AUC (target), pAUC, F1 and the share of normal "
                                           "and anomalous clips flagged per domain. The column `report` (the run "
                                           "columns' system) or `report:ae|proto|fusion|sera` adds the system "
                                           "report's published dev figures (Table 1 for ae, Table 2 for proto, "
                                           "the macro Ω of fusion and sera), filled only for machines run on "
                                           "DCASE data (synthetic machines are marked and left blank). Writes "
                                           "compare.csv and compare.json.")
    p_compare.add_argument("runs", nargs="+", metavar="RUN_OR_PARENT",
                           help="runs/<system>/<name> folders, or `report[:SYSTEM]` for the published figures "
                                "(a folder named report: write ./report); the first is the reference")
    p_compare.add_argument("--out", default=".", metavar="DIR",
                           help="where to write compare.csv and compare.json (default: the current folder)")
    p_compare.set_defaults(handler=_cmd_compare)

    p_beats = sub.add_parser("beats", help="load a BEATs checkpoint strictly and describe it (optionally embed WAVs)",
                             description="Loads a BEATs checkpoint of the official format strictly (every key and "
                                         "shape must match the model built from its own cfg) and prints its size, "
                                         "parameter count and fingerprint; with --wav, the token shape and "
                                         "statistics of each clip. asdx ships no BEATs weights: get them from the "
                                         "BEATs authors' release (github.com/microsoft/unilm, folder beats).")
    p_beats.add_argument("--beats", default=None, help="checkpoint path, or random-tiny (tests/demo only); "
                                                       "default $ASDX_BEATS")
    p_beats.add_argument("--wav", nargs="*", help="clips to run through the encoder (near channel)")
    p_beats.set_defaults(handler=_cmd_beats)

    p_synth = sub.add_parser("synth", help="write a synthetic DCASE 2026 Task 2 stereo dataset (resumable)",
                             description="Writes a synthetic stand-in for DCASE 2026 Task 2 (not real recordings) "
                                         "in the DCASE layout: parametric machine sounds per machine type, source and "
                                         "target domains, a near and a far channel, four kinds of anomaly, a noisy hall around them, and "
                                         "a preview picture per machine (preview/<machine>.png). Small by "
                                         "default, DCASE sizes with --full; deterministic per seed; re-running "
                                         "completes an interrupted set.")
    p_synth.add_argument("--out", required=True, help="dataset root to create (or to complete)")
    p_synth.add_argument("--machines", "--machine", dest="machines", nargs="+", default=["all"], metavar="M",
                         help=MACHINES_HELP + " (default all)")
    p_synth.add_argument("--seconds", type=float, default=None, help="clip length (default 2, --full: 10)")
    p_synth.add_argument("--n-source", type=int, default=None, help="source train clips (default 30, --full: 990)")
    p_synth.add_argument("--n-target", type=int, default=None, help="target train clips (default 6, --full: 10)")
    p_synth.add_argument("--n-test", type=int, default=None,
                         help="test clips per domain x label cell (default 12, --full: 50)")
    p_synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p_synth.add_argument("--full", action="store_true", help="DCASE sizes: 10 s, 990/10 train, 50 per test cell")
    p_synth.add_argument("--background", choices=("scene", "diffuse"), default="scene",
                         help="scene (default): point-like interferers (other machines, impacts, a fan, voices) "
                              "reach both microphones coherently, louder at the far one, over a diffuse floor; "
                              "diffuse: the earlier set, noise drawn independently per microphone")
    p_synth.add_argument("--no-preview", dest="preview", action="store_false",
                         help="skip the preview pictures (preview/<machine>.png)")
    p_synth.add_argument("--quiet", action="store_true", help="no progress bar")
    p_synth.set_defaults(handler=_cmd_synth)

    p_info = sub.add_parser("info", help="show versions, the compiled kernels and the visible hardware",
                            description="Versions of asdx, Python, torch, numpy and FAISS; whether the CUDA kernels "
                                        "were compiled and for which architectures; the GPUs asdx and torch see; CPU "
                                        "threads and the OpenMP wait policy. Warns about broken pairings: faiss-cpu "
                                        "beside faiss-gpu, and a faiss-gpu built for another CUDA than torch.")
    p_info.add_argument("--json", action="store_true", help="print as JSON")
    p_info.set_defaults(handler=_cmd_info)
    return parser


def _print_error(command: str | None, error: BaseException) -> None:
    """`asdx <command>: error: ...` on stderr; indented continuation lines (name lists) are kept as they are."""
    prefix = f"asdx {command}: error: " if command else "asdx: error: "
    text = str(error)
    if isinstance(error, OSError) and error.filename is not None and error.strerror:   # not "[Errno 17] ..."
        text = f"{error.filename}: {error.strerror.lower()}."
    for line in text.splitlines() or [type(error).__name__]:
        print(line if line[:1].isspace() else prefix + line, file=sys.stderr)


def _show_warning_on_one_line(command: str):
    """A warnings.showwarning for the CLI: `asdx <command>: warning: <message>` on one line of stderr, written
    with tqdm.write so that it lands above a progress bar instead of inside it, and without the Python source
    line that the default format adds."""
    def show(message, category, filename, lineno, file=None, line=None):
        from tqdm import tqdm

        tqdm.write(f"asdx {command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    with warnings.catch_warnings():  # restores the caller's warning display when main returns (tests, scripts)
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    warnings.showwarning = _show_warning_on_one_line(args.command)
    if args.threads is not None:
        if args.threads < 1:
            _print_error(None, ValueError(f"--threads: must be >= 1, got {args.threads}"))
            return 2
        import asdx

        asdx.set_num_threads(args.threads)
    try:
        return int(args.handler(args) or 0)
    except USER_ERRORS as error:
        _print_error(args.command, error)
        return 1
    except KeyboardInterrupt:
        print(f"asdx {args.command}: interrupted; finished files and checkpoints are kept (rerun with --resume).",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
