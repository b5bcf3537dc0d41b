"""The resumable training loop of the BEATs systems: sera's head, fusion's global model, proto's machine models.

A system supplies one epoch (its steps and its validation) as a function; `Training` owns
the rest: a checkpoint after every epoch, keyed on everything that decides the result (a
run of other settings starts over) and removed once the model file is written; early
stopping with the best epoch's weights restored; the progress bar and the log line.
Under torchrun (DDP) every rank runs the loop: rank 0 alone reads the checkpoint (then
broadcast), decides early stopping (broadcast) and writes files, and `rank_batches`
gives each rank its share of an epoch's batches, as torch's DistributedSampler does.
"""

from __future__ import annotations

import hashlib
import json
import math
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
    """

    def __init__(self, path: Path, key: Mapping, weights: Callable[[], dict], restore: Callable[[dict], None],
                 optimizer: torch.optim.Optimizer, *, epochs: int, patience: int | None, context: SystemContext,
                 label: str, world: distributed.World = distributed.World()):
        self.path, self.key = Path(path), digest(key)
        self.weights, self.restore, self.optimizer = weights, restore, optimizer
        self.epochs, self.patience = int(epochs), patience
        self.context, self.label, self.world = context, label, world

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
        for n in bar:
            if stopping and state["bad_epochs"] >= self.patience:
                break
            result = epoch(n)
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


__all__ = ["Epoch", "Outcome", "RESUME_FORMAT", "Training", "cpu_copy", "digest", "distributed_model",
           "rank_batches", "read_resume", "summed_over_ranks"]
