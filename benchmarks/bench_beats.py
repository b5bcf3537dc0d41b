"""BEATs benchmark: forward time per 10 s clip and fbank + forward throughput (CPU; GPU fp32/bf16 when present).

The model is the full-size configuration (90.3 M parameters) with random
weights: speed does not depend on the weight values, so no checkpoint is
needed. Rows:
  - CPU forward only (normalised fbank already computed), ms per clip;
  - CPU fbank + forward (asdx.features.kaldi_fbank + BEATs), clips per second;
  - with a CUDA GPU and asdx built with CUDA: fbank (CUDA kernel) + forward, clips per
    second in fp32 and in bf16 autocast.
Times are best-of-N after one warm-up call, in torch.inference_mode().

Run from the repository root:
    python benchmarks/bench_beats.py [--clips 4] [--seconds 10] [--threads 2] [--repeat 3] [--gpu-clips 32]
    python -m benchmarks beats [same options]
--quick uses the tiny configuration as a smoke test; it and --no-record leave
benchmarks/RESULTS.md alone, otherwise a section is appended to it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

import asdx

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asdx.models.beats import BEATs, BEATsConfig, tiny_config
from benchmarks._common import machine_lines, publish, timeit_best


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=4, help="CPU batch size")
    parser.add_argument("--gpu-clips", type=int, default=32, help="GPU batch size")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes, not recorded")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.clips, args.gpu_clips, args.seconds, args.repeat, args.no_record = 2, 4, 2.0, 1, True
    return args


def make_model(args) -> BEATs:
    torch.manual_seed(0)
    return BEATs(tiny_config() if args.quick else BEATsConfig()).eval()


def audio(clips: int, seconds: float) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.uniform(-0.5, 0.5, (clips, int(seconds * 16000))).astype(np.float32))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    asdx.set_num_threads(args.threads)
    model = make_model(args)
    label = "tiny (quick)" if args.quick else "full size, 90.3 M parameters"
    rows = []
    with torch.inference_mode():
        wave = audio(args.clips, args.seconds)
        fbank = model.preprocess(wave)
        tokens = model.encode(fbank).tokens.shape[1]
        forward_ms = timeit_best(lambda: model.encode(fbank), args.repeat)
        total_ms = timeit_best(lambda: model.extract(wave), args.repeat)
        fbank_ms = timeit_best(lambda: model.preprocess(wave), args.repeat)
        rows.append(("CPU fp32", args.clips, forward_ms / args.clips, fbank_ms / args.clips,
                     args.clips / (total_ms / 1e3)))
        gpu_name, gpu_note = None, "GPU rows skipped: torch sees no CUDA device."
        if torch.cuda.is_available() and not asdx.info()["cuda_kernels_compiled"]:
            gpu_note = "GPU rows skipped: this asdx build has no CUDA kernels."
        elif torch.cuda.is_available():
            gpu_name = torch.cuda.get_device_name()
            gpu_note = f"GPU rows: audio already on {gpu_name}; torch.cuda.synchronize() after each call."
            model = model.cuda()
            wave = audio(args.gpu_clips, args.seconds).cuda()
            fbank = model.preprocess(wave)
            for name, dtype in (("GPU fp32", None), ("GPU bf16 autocast", torch.bfloat16)):
                def forward(run_fbank=False):
                    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                        return model.extract(wave) if run_fbank else model.encode(fbank)

                f_ms = timeit_best(forward, args.repeat, torch.cuda.synchronize)
                t_ms = timeit_best(lambda: forward(True), args.repeat, torch.cuda.synchronize)
                b_ms = timeit_best(lambda: model.preprocess(wave), args.repeat, torch.cuda.synchronize)
                rows.append((name, args.gpu_clips, f_ms / args.gpu_clips, b_ms / args.gpu_clips,
                             args.gpu_clips / (t_ms / 1e3)))

    section = [f"## bench_beats — {datetime.now().astimezone().isoformat(timespec='seconds')}", "",
               *machine_lines(args.threads, gpu_name), "",
               f"BEATs {label}, random weights; {args.seconds:g} s clips at 16 kHz ({tokens} tokens).", "",
               "| device / precision | batch | forward ms/clip | fbank ms/clip | fbank + forward clips/s |",
               "|---|---:|---:|---:|---:|",
               *[f"| {name} | {batch} | {fwd:.1f} | {fb:.2f} | {cps:.2f} |" for name, batch, fwd, fb, cps in rows],
               "", f"Best of {args.repeat} after one warm-up call, torch.inference_mode(); SDPA attention.", gpu_note]
    print()
    publish(section, record_it=not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
