"""The `asdx` command line. Parses arguments and calls library functions; no logic lives here."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    from asdx.info import format_info, info

    report = info()
    print(json.dumps(report, indent=2) if args.json else format_info(report))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asdx.evaluation import dataset_ground_truth, evaluate, format_report, load_ground_truth, result_json, \
        write_results

    try:
        if args.ground_truth is not None:
            if args.split is not None:
                raise ValueError("--split: only applies with --data (a ground-truth folder is one set).")
            truth = load_ground_truth(args.ground_truth)
        else:
            truth = dataset_ground_truth(args.data, args.split or "dev")
        result = evaluate(args.submission, truth, machines=args.machines)
        submission = Path(args.submission).resolve()
        csv_path, json_path = write_results(result, args.out or submission, args.name or submission.name)
    except (ValueError, FileNotFoundError) as error:
        print(f"asdx evaluate: error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result_json(result), indent=2))
    else:
        print(format_report(result))
        print(f"\nwrote {csv_path}\nwrote {json_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asdx", description="Anomalous sound detection (DCASE Task 2) toolkit.")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for asdx kernels (default: all cores)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_info = sub.add_parser("info", help="show versions, the compiled kernels and the visible hardware")
    p_info.add_argument("--json", action="store_true", help="print as JSON")
    p_info.set_defaults(handler=_cmd_info)
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
    p_eval.add_argument("--split", choices=("dev", "eval"), help="with --data: which set (default dev)")
    p_eval.add_argument("--machines", nargs="+", metavar="M", help="only these machine types (default: every "
                                                                   "machine type in the ground truth)")
    p_eval.add_argument("--out", metavar="DIR", help="where to write <name>_result.csv/.json (default: the "
                                                     "submission folder)")
    p_eval.add_argument("--name", help="system name for the output files (default: the submission folder's name)")
    p_eval.add_argument("--json", action="store_true", help="print the JSON results instead of the table")
    p_eval.set_defaults(handler=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.threads is not None:
        import asdx

        asdx.set_num_threads(args.threads)
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
