"""Where the BEATs weights come from, for the CLI and the API: `--beats PATH`, `ASDX_BEATS`, or `random-tiny`.

asdx does not ship or download BEATs weights. The systems expect the authors'
pre-trained iter3+ (AS2M) checkpoint; `random-tiny` is a small random BEATs for
tests and the demo, and every result made with it carries RANDOM_TINY_NOTE.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from asdx.models.beats import BEATs, tiny_config

ENV_VAR = "ASDX_BEATS"
RANDOM_TINY = "random-tiny"
DEFAULT_CHECKPOINT_NAME = "BEATs_iter3_plus_AS2M.pt"
RANDOM_TINY_NOTE = ("BEATs random-tiny: a small randomly initialised BEATs (tests and the demo only); "
                    "these results say nothing about real BEATs performance.")
RELEASE = "the BEATs authors' release, github.com/microsoft/unilm, folder beats (README table of checkpoints)"
# What the systems expect, when the caller does not say (`asdx beats`); each system names its own.
EXPECTED = (f"the systems use {DEFAULT_CHECKPOINT_NAME}, the pre-trained BEATs iter3+ AS2M, and sera_ft1 its AS2M "
            "fine-tuned version")


def missing_message(expected: str = EXPECTED) -> str:
    """No --beats and no $ASDX_BEATS: which file to get, where, and how to pass it."""
    return (f"No BEATs checkpoint given: {expected}. Download it from {RELEASE}, then pass it with --beats PATH "
            f"or set the environment variable {ENV_VAR}=PATH. (--beats {RANDOM_TINY} builds a small random model "
            "for tests and the demo only.)")


def resolve_beats_checkpoint(beats: str | os.PathLike | None = None, environ=None,
                             expected: str = EXPECTED) -> str | Path:
    """Explicit value first, then $ASDX_BEATS; returns RANDOM_TINY or an existing file's Path.

    Raises FileNotFoundError with missing_message(expected) when neither is set, and one
    naming the path (and where it came from) when the file does not exist. expected: which
    checkpoint the caller needs, in words ("sera_ft1 uses <file>, system report §2.4").
    """
    environ = os.environ if environ is None else environ
    origin = "--beats"
    if beats is None or str(beats) == "":
        beats, origin = environ.get(ENV_VAR) or None, ENV_VAR
    if beats is None:
        raise FileNotFoundError(missing_message(expected))
    if str(beats) == RANDOM_TINY:
        return RANDOM_TINY
    path = Path(beats).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{origin}: BEATs checkpoint {path} does not exist ({expected}; download it from "
                                f"{RELEASE}).")
    return path


def random_tiny_beats(seed: int = 0, **overrides) -> BEATs:
    """The `random-tiny` model: tiny_config() with seeded random weights, marked with RANDOM_TINY_NOTE."""
    generator = torch.Generator().manual_seed(seed)
    model = BEATs(tiny_config(**overrides))
    model.reset_parameters(generator)
    model.notes = (RANDOM_TINY_NOTE,)
    model.source = RANDOM_TINY
    return model.eval()


def is_random_tiny(model: BEATs) -> bool:
    return RANDOM_TINY_NOTE in getattr(model, "notes", ())


def load_beats(beats: str | os.PathLike | None = None, device: str | torch.device = "cpu", environ=None,
               expected: str = EXPECTED) -> BEATs:
    """The function the CLI calls: resolve (see resolve_beats_checkpoint), load, move to device, eval mode.

    Callers must add `model.notes` to the notes of every result they write. A file that is not a
    BEATs checkpoint is a one-line ValueError (BEATs.from_checkpoint).
    """
    resolved = resolve_beats_checkpoint(beats, environ, expected)
    model = random_tiny_beats() if resolved == RANDOM_TINY else BEATs.from_checkpoint(resolved)
    return model.to(device).eval()
