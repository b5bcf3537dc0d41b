"""The resumable training loop of the BEATs systems: sera's head, fusion's global model, proto's machine models.

A system supplies one epoch (its steps and its validation) as a function; `Training` owns
the rest: a checkpoint after every epoch, keyed on everything that decides the result (a
run of other settings starts over) and removed once the model file is written; early
stopping with the best epoch's weights restored; the progress bar and the log line.
Under torchrun (DDP) every rank runs the loop: rank 0 alone reads the checkpoint (then
broadcast), decides early stopping (broadcast) and writes files, and `rank_batches`
gives each rank its share of an epoch's batches, as torch's DistributedSampler does.

A job sized for a GPU says so before it runs for hours on a CPU (issue 22 §1): `CpuEstimate`
times a few units of work after the first (warm-up) one, the training's optimiser steps
or the frozen BEATs's forward batches, and when the whole would take longer than
CPU_WARNING_SECONDS it writes one warning line with the estimate and what to do instead,
to the console and the run's notes, once per run, and carries on.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from asdx import distributed
from asdx._atomic import atomic_write
from asdx.systems.base import SystemContext

RESUME_FORMAT = "asdx.resume/1"
CPU_WARNING_SECONDS = 20 * 60  # a CPU job estimated longer than this is told it is sized for a GPU
GPU_HINT = ("for a quick run on the CPU use a smaller job (fewer --epochs or machines; proto --size tiny; "
            "--beats random-tiny for a smoke test only), or run on a GPU (--device cuda)")
clock = time.perf_counter  # module attribute: tests replace it


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


class CpuEstimate:
    """Times `probe` units of work after the first (warm-up) one on a CPU device; when units x that time exceeds
    CPU_WARNING_SECONDS, warns once per run (context) with the estimate, then stays quiet.

    units: the whole job's count of units (None: unknown yet; set it before the probe ends, else nothing is
    said). Off on other devices, on non-main ranks and once the context has had its warning.
    """

    def __init__(self, context: SystemContext, what: str, units: int | None, unit: str = "unit", breakdown: str = "",
                 hint: str = GPU_HINT, probe: int = 2, is_main: bool = True):
        self.context, self.what, self.hint, self.probe = context, what, hint, probe
        self.units, self.unit, self.breakdown = units, unit, breakdown
        self.active = (is_main and torch.device(context.device).type == "cpu"
                       and not getattr(context, "_cpu_estimate_given", False))
        self.times: list[float] = []

    def start(self) -> None:
        """Marks the start of the first unit (the warm-up's time is left out when more units follow)."""
        if self.active and not self.times:
            self.times.append(clock())

    def tick(self) -> None:
        """One unit done."""
        if not self.active:
            return
        self.times.append(clock())
        if len(self.times) >= self.probe + 2 and self.units is not None:
            self.done((self.times[-1] - self.times[1]) / (len(self.times) - 2))

    def done(self, per_unit: float) -> None:
        """Warns if units x per_unit is over the threshold; the estimate is made once either way."""
        self.active = False
        if self.units is None:
            return
        total = per_unit * self.units
        if total <= CPU_WARNING_SECONDS:
            return
        self.context._cpu_estimate_given = True
        text = (f"{self.what} on the CPU: about {_duration(total)} estimated ({per_unit:.1f} s per {self.unit} x "
                f"{self.units}{': ' + self.breakdown if self.breakdown else ''}); this job is sized for a GPU: "
                f"{self.hint}.")
        self.context.note(text)
        print(f"asdx: warning: {text}", file=sys.stderr, flush=True)

    def wrap(self, fn):
        """fn with a tick after each call (a forward per batch), the first call's start marked."""
        def timed(*args, **kwargs):
            self.start()
            out = fn(*args, **kwargs)
            self.tick()
            return out
        return timed


@dataclass
class Epoch:
    """What a system's epoch function reports."""

    record: dict                    # the history entry: losses, validation values
    shown: str                      # progress bar and log text, e.g. "loss 1.234, val 0.567"
    monitored: float | None = None  # early stopping watches it, lower is better; rank 0's value counts


@dataclass
class Outcome:
    epochs: int         # epochs trained in all (a resumed run counts the checkpoint's)
    epochs_run: int     # epochs run by this call
    history: list[dict]
    best_epoch: int     # the epoch whose weights the model now holds (the last one without early stopping)
    best: float         # its monitored value (inf without early stopping)


class Training:
    """One resumable training: run(epoch) trains, finish(save) writes the model and removes the checkpoint.

    weights() gives the state the checkpoint and the best epoch keep (tensors, nested dicts);
    restore(state) loads it. patience None: no early stopping, the last epoch's weights are kept.
    On a CPU device the first optimiser steps are timed (CpuEstimate): steps_per_epoch (this
    process's; given here, or by the epoch function through steps_in_epoch) x the epochs left x
    fits (trainings like this one still to come in the run, e.g. fold networks, where the system
    knows them) gives the estimate; without steps_per_epoch it is made from the first epoch's time.
    """

    def __init__(self, path: Path, key: Mapping, weights: Callable[[], dict], restore: Callable[[dict], None],
                 optimizer: torch.optim.Optimizer, *, epochs: int, patience: int | None, context: SystemContext,
                 label: str, world: distributed.World = distributed.World(), steps_per_epoch: int | None = None,
                 fits: int = 1):
        self.path, self.key = Path(path), digest(key)
        self.weights, self.restore, self.optimizer = weights, restore, optimizer
        self.epochs, self.patience = int(epochs), patience
        self.context, self.label, self.world = context, label, world
        self.steps_per_epoch, self.fits = steps_per_epoch, max(1, int(fits))
        self._first_epoch, self._cpu_estimate = 0, None

    def steps_in_epoch(self, steps: int) -> None:
        """The epoch function's count of this process's optimiser steps in an epoch, when it knows it only then."""
        if self.steps_per_epoch is None and self._cpu_estimate is not None and self._cpu_estimate.active:
            self.steps_per_epoch = int(steps)
            self._cpu_estimate.unit, self._cpu_estimate.units, self._cpu_estimate.breakdown = \
                self._per_step(self._first_epoch)

    def _per_epoch(self, first_epoch: int) -> tuple[int, str]:
        """(units, breakdown) of an estimate in epochs: the epochs left x fits."""
        epochs = self.epochs - first_epoch
        return epochs * self.fits, f"{epochs} epochs" + (f" x {self.fits} trainings" if self.fits > 1 else "")

    def _per_step(self, first_epoch: int) -> tuple[str, int, str]:
        """(unit, units, breakdown) of an estimate in optimiser steps."""
        units, breakdown = self._per_epoch(first_epoch)
        return "step", units * self.steps_per_epoch, f"{self.steps_per_epoch} steps per epoch x {breakdown}"

    def _estimate(self, first_epoch: int) -> tuple[CpuEstimate, Callable[[], None]]:
        """The CPU estimate of the epochs left, ticked by the optimiser's steps (it waits for the steps per
        epoch when they are not known yet); and how to stop ticking."""
        unit, units, breakdown = self._per_step(first_epoch) if self.steps_per_epoch else ("step", None, "")
        estimate = CpuEstimate(self.context, f"{self.label}: training", units, unit, breakdown,
                               is_main=self.world.is_main)
        self._first_epoch, self._cpu_estimate = first_epoch, estimate
        if not estimate.active:
            return estimate, lambda: None
        handle = self.optimizer.register_step_post_hook(lambda *_: estimate.tick())
        return estimate, handle.remove

    def _resume(self) -> dict:
        saved = read_resume(self.path) if self.world.is_main else None
        if self.world.size > 1:
            saved = distributed.broadcast_object(saved)
        if saved is None or saved.get("key") != self.key:
            return {"epoch": 0, "history": [], "best": math.inf, "best_epoch": 0, "bad_epochs": 0,
                    "best_weights": None}
        self.restore(saved["weights"])
        self.optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        self.context.note(f"{self.label}: resumed the training after epoch {state['epoch']}.")
        if saved["world"] != self.world.size:
            self.context.note(f"{self.label}: the checkpoint was written by {saved['world']} process(es), this run "
                              f"has {self.world.size}: the remaining epochs share their batches out differently.")
        return state

    def run(self, epoch: Callable[[int], Epoch]) -> Outcome:
        """epoch(n) for n = the first epoch not in the checkpoint .. epochs - 1, until patience runs out."""
        state = self._resume()
        stopping = self.patience is not None
        bar = tqdm(range(state["epoch"], self.epochs), desc=f"{self.label} epochs", initial=state["epoch"],
                   total=self.epochs, disable=not (self.context.progress and self.world.is_main), leave=False)
        ran = 0
        estimate, stop_ticking = self._estimate(state["epoch"])
        estimate.start()
        for n in bar:
            if stopping and state["bad_epochs"] >= self.patience:
                break
            epoch_start = clock()
            result = epoch(n)
            if ran == 0:
                stop_ticking()
                if estimate.active:  # no steps_per_epoch, or fewer steps than the probe: from the epoch's time
                    estimate.unit = "epoch"
                    estimate.units, estimate.breakdown = self._per_epoch(n)
                    estimate.done(clock() - epoch_start)
            ran += 1
            state["epoch"] = n + 1
            state["history"].append({"epoch": n + 1, **result.record})
            if stopping:
                monitored = result.monitored
                if self.world.size > 1:
                    monitored = distributed.broadcast_object(monitored if self.world.is_main else None)
                if monitored < state["best"]:
                    state.update(best=monitored, best_epoch=n + 1, bad_epochs=0, best_weights=cpu_copy(self.weights()))
                else:
                    state["bad_epochs"] += 1
            bar.set_postfix_str(result.shown)
            if self.world.is_main:
                self.context.log.info("%s epoch %d: %s", self.label, n + 1, result.shown)
                checkpoint = {"format": RESUME_FORMAT, "key": self.key, "world": self.world.size,
                              "weights": self.weights(), "optimizer": self.optimizer.state_dict(), "state": state}
                atomic_write(self.path, lambda tmp: torch.save(checkpoint, tmp))
        bar.close()
        if state["best_weights"] is not None:
            self.restore(state["best_weights"])
        best_epoch = state["best_epoch"] if stopping else state["epoch"]
        return Outcome(state["epoch"], ran, list(state["history"]), int(best_epoch), state["best"])

    def finish(self, save: Callable[[], object]) -> None:
        """Rank 0 writes the model (save()) and then removes the checkpoint; the other ranks wait for it."""
        if self.world.is_main:
            save()
            self.path.unlink(missing_ok=True)
        if self.world.size > 1:
            distributed.barrier()


def digest(value) -> str:
    """SHA-256 of a JSON-able description: the key a resume checkpoint must match."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def read_resume(path: Path) -> dict | None:
    """The per-epoch checkpoint, or None (absent, unreadable or another format: the training starts over)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged checkpoint only costs the epochs it held
        return None
    return saved if isinstance(saved, dict) and saved.get("format") == RESUME_FORMAT else None


def cpu_copy(state):
    """A detached CPU copy of a state dict (nested dicts of tensors): the best epoch's weights."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu().clone()
    return {name: cpu_copy(value) for name, value in state.items()}


def summed_over_ranks(tensor: torch.Tensor, world: distributed.World) -> torch.Tensor:
    """tensor summed over the ranks, in place (left as it is in one process)."""
    if world.size > 1:
        torch.distributed.all_reduce(tensor)
    return tensor


def distributed_model(module: nn.Module, device: torch.device, world: distributed.World) -> nn.Module:
    """module itself in one process; under torchrun wrapped in DistributedDataParallel (gradients averaged)."""
    if world.size == 1:
        return module
    ids = [device.index] if device.type == "cuda" and device.index is not None else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def rank_batches(batches: list[np.ndarray], world: distributed.World) -> tuple[list[int], list[np.ndarray]]:
    """This rank's positions in the epoch's batch list and their batches, as torch's DistributedSampler splits
    them: r, r + world, ... up to its padded total; a position >= len(batches) is a padding repeat (give it
    weight 0: it runs only to keep the ranks' steps in step)."""
    sampler = torch.utils.data.DistributedSampler(range(len(batches)), num_replicas=world.size, rank=world.rank,
                                                  shuffle=False, drop_last=False)
    positions = list(range(world.rank, sampler.total_size, world.size))
    return positions, [batches[q % len(batches)] for q in positions]


__all__ = ["CPU_WARNING_SECONDS", "CpuEstimate", "Epoch", "Outcome", "RESUME_FORMAT", "Training", "cpu_copy", "digest", "distributed_model",
           "rank_batches", "read_resume", "summed_over_ranks"]
