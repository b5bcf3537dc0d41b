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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asdx", description="Anomalous sound detection (DCASE Task 2) toolkit.")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for asdx kernels (default: all cores)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_info = sub.add_parser("info", help="show versions, the compiled kernels and the visible hardware")
    p_info.add_argument("--json", action="store_true", help="print as JSON")
    p_info.set_defaults(handler=_cmd_info)
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
