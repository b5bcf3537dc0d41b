"""Benchmark scripts for asdx; run one with `python -m benchmarks <name>` (e.g. `frontend`)."""
