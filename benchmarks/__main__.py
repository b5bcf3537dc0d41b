"""Runs one benchmark by name: `python -m benchmarks frontend [options]` calls
benchmarks/bench_frontend.py's main() with the remaining arguments; `python -m benchmarks gpu
--out DIR` runs the GPU machine check (benchmarks/gpu_check.py)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


COMMANDS = {"gpu": "benchmarks.gpu_check"}  # commands that are not a bench_<name>.py


def available() -> list[str]:
    return sorted([path.stem.removeprefix("bench_") for path in Path(__file__).parent.glob("bench_*.py")]
                  + list(COMMANDS))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m benchmarks {{{','.join(names)}}} [options]   (options: <name> --help)")
        return 0 if argv else 2
    if argv[0] not in names:
        print(f"unknown benchmark {argv[0]!r}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS.get(argv[0], f"benchmarks.bench_{argv[0]}"))
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
