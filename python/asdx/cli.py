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


def _cmd_synth(args: argparse.Namespace) -> int:
    from asdx.data.synth import generate

    try:
        root = generate(args.out, machines=args.machines, seconds=args.seconds, n_source=args.n_source,
                        n_target=args.n_target, n_test=args.n_test, seed=args.seed, full=args.full,
                        progress=not args.quiet)
    except (ValueError, FileNotFoundError) as error:
        print(f"asdx synth: error: {error}", file=sys.stderr)
        return 2
    print(f"synthetic DCASE 2026 Task 2 data in {root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asdx", description="Anomalous sound detection (DCASE Task 2) toolkit.")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for asdx kernels (default: all cores)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_info = sub.add_parser("info", help="show versions, the compiled kernels and the visible hardware")
    p_info.add_argument("--json", action="store_true", help="print as JSON")
    p_info.set_defaults(handler=_cmd_info)
    p_synth = sub.add_parser("synth", help="write a synthetic DCASE 2026 Task 2 stereo dataset (resumable)")
    p_synth.add_argument("--out", required=True, help="dataset root to create (or to complete)")
    p_synth.add_argument("--machines", default="all", help="all, dev, eval or comma-separated machine types")
    p_synth.add_argument("--seconds", type=float, default=None, help="clip length (default 2, --full: 10)")
    p_synth.add_argument("--n-source", type=int, default=None, help="source train clips (default 30, --full: 990)")
    p_synth.add_argument("--n-target", type=int, default=None, help="target train clips (default 6, --full: 10)")
    p_synth.add_argument("--n-test", type=int, default=None,
                         help="test clips per domain x label cell (default 12, --full: 50)")
    p_synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p_synth.add_argument("--full", action="store_true", help="DCASE sizes: 10 s, 990/10 train, 50 per test cell")
    p_synth.add_argument("--quiet", action="store_true", help="no progress bar")
    p_synth.set_defaults(handler=_cmd_synth)
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
