"""The parts the BEATs systems share: the state files (_files), the training loop (_training), the backbone
(_beats), and the protocol's signatures, which every registered system keeps."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from asdx import distributed
from asdx.models.beats import BEATs, tiny_config
from asdx.systems import SYSTEMS
from asdx.systems import _beats
from asdx.systems._beats import Backbone, filled_per_node
from asdx.systems._files import load_arrays, load_model_file, load_state, save_arrays, save_model_file, save_state
from asdx.systems._training import RESUME_FORMAT, Epoch, Training, rank_batches
from asdx.systems.base import System, SystemContext


# ----------------------------------------------------------------------------- state files
@dataclass
class State:
    name: str
    k: int
    values: np.ndarray


def test_state_files_round_trip_and_refuse_what_they_did_not_write(tmp_path):
    state = State("fan", 3, np.arange(4.0))
    loaded = load_state(State, save_state(tmp_path / "s.npz", "asdx.test.state/2", state), "asdx.test.state/2",
                        "test state", "the test")
    assert (loaded.name, loaded.k) == ("fan", 3) and isinstance(loaded.name, str) and isinstance(loaded.k, int)
    np.testing.assert_array_equal(loaded.values, state.values)

    with pytest.raises(FileNotFoundError, match="absent.npz: no test state \\(the test writes it\\)"):
        load_arrays(tmp_path / "absent.npz", "asdx.test.state/2", "test state", "the test")
    np.savez(tmp_path / "untagged.npz", name=np.array("fan"))  # e.g. proto's prototypes before the tag
    with pytest.raises(ValueError, match="untagged.npz: not a test state \\(asdx.test.state/2\\)\\.$"):
        load_arrays(tmp_path / "untagged.npz", "asdx.test.state/2", "test state", "the test")
    save_arrays(tmp_path / "old.npz", "asdx.test.state/1", {"name": np.array("fan")})
    with pytest.raises(ValueError, match="it is asdx.test.state/1, from an older asdx: run it again"):
        load_arrays(tmp_path / "old.npz", "asdx.test.state/2", "test state", "the test")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz: unreadable test state"):
        load_arrays(tmp_path / "junk.npz", "asdx.test.state/2", "test state", "the test")
    save_arrays(tmp_path / "part.npz", "asdx.test.state/2", {"name": np.array("fan")})
    with pytest.raises(ValueError, match="part.npz: not a complete test state .*no k, values"):
        load_state(State, tmp_path / "part.npz", "asdx.test.state/2", "test state", "the test")


def test_model_files_carry_their_format(tmp_path):
    path = save_model_file(tmp_path / "m.pt", "asdx.test.model/1", {"weights": {"w": torch.ones(2)}})
    payload = load_model_file(path, "asdx.test.model/1", "test model", "the test")
    assert payload["format"] == "asdx.test.model/1" and torch.equal(payload["weights"]["w"], torch.ones(2))
    with pytest.raises(ValueError, match="not a other model \\(asdx.other.model/1\\)"):
        load_model_file(path, "asdx.other.model/1", "other model", "the test")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a test model"):
        load_model_file(tmp_path / "list.pt", "asdx.test.model/1", "test model", "the test")


# ----------------------------------------------------------------------------- the training loop
class Toy:
    """A linear model whose monitored value per epoch is scripted; each epoch moves its weight by +1."""

    def __init__(self, monitored):
        self.model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.model.weight)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1.0)
        self.monitored, self.epochs = list(monitored), []

    def training(self, path, key="k", patience=2, epochs=6, context=None) -> Training:
        return Training(path, {"key": key}, self.model.state_dict, self.model.load_state_dict, self.optimizer,
                        epochs=epochs, patience=patience, label="toy",
                        context=context or SystemContext(device=torch.device("cpu"), progress=False))

    def epoch(self, n: int) -> Epoch:
        self.epochs.append(n)
        self.optimizer.zero_grad()
        (-self.model.weight.sum()).backward()  # gradient -1: SGD with lr 1 adds 1
        self.optimizer.step()
        return Epoch({"value": self.monitored[n]}, f"value {self.monitored[n]}", self.monitored[n])


def test_early_stopping_keeps_the_best_epochs_weights_and_finish_removes_the_checkpoint(tmp_path):
    toy = Toy([5.0, 3.0, 4.0, 3.0, 1.0, 0.0])  # best at epoch 2; epochs 3 and 4 are no better (a tie is not)
    training = toy.training(tmp_path / "resume.pt")
    outcome = training.run(toy.epoch)
    assert toy.epochs == [0, 1, 2, 3] and outcome.epochs == outcome.epochs_run == 4  # patience 2 ran out
    assert outcome.best_epoch == 2 and outcome.best == 3.0
    assert [h["epoch"] for h in outcome.history] == [1, 2, 3, 4] and outcome.history[1] == {"epoch": 2, "value": 3.0}
    assert float(toy.model.weight.detach()) == 2.0  # the weights after epoch 2, not after epoch 4
    saved = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert saved["format"] == RESUME_FORMAT and saved["state"]["epoch"] == 4
    written = []
    training.finish(lambda: written.append((tmp_path / "resume.pt").exists()))
    assert written == [True] and not (tmp_path / "resume.pt").exists()  # the model first, then the checkpoint goes

    last = Toy([5.0, 3.0, 4.0])
    outcome = last.training(tmp_path / "last.pt", patience=None, epochs=3).run(last.epoch)
    assert outcome.best_epoch == 3 and float(last.model.weight.detach()) == 3.0  # no early stopping: the last epoch


def test_an_interrupted_training_resumes_from_its_checkpoint_only(tmp_path):
    whole = Toy([4.0, 3.0, 2.0, 1.0])
    reference = whole.training(tmp_path / "whole.pt", epochs=4).run(whole.epoch)

    first = Toy([4.0, 3.0, 2.0, 1.0])

    def interrupted(n):
        if n == 2:
            raise KeyboardInterrupt
        return first.epoch(n)

    with pytest.raises(KeyboardInterrupt):
        first.training(tmp_path / "resume.pt", epochs=4).run(interrupted)
    context = SystemContext(device=torch.device("cpu"), progress=False)
    again = Toy([4.0, 3.0, 2.0, 1.0])
    outcome = again.training(tmp_path / "resume.pt", epochs=4, context=context).run(again.epoch)
    assert again.epochs == [2, 3] and outcome.epochs_run == 2 and outcome.epochs == 4
    assert outcome.history == reference.history and float(again.model.weight.detach()) == float(whole.model.weight.detach()) == 4.0
    assert "toy: resumed the training after epoch 2." in context.notes

    # another key (other settings, other clips), or a checkpoint of the right key as asdx wrote it before the
    # format tag: the training starts over
    with pytest.raises(KeyboardInterrupt):
        Toy([4.0, 3.0, 2.0, 1.0]).training(tmp_path / "other.pt", epochs=4).run(interrupted)
    saved = torch.load(tmp_path / "other.pt", weights_only=True)
    torch.save({name: value for name, value in saved.items() if name != "format"}, tmp_path / "untagged.pt")
    for path, key in ((tmp_path / "other.pt", "another key"), (tmp_path / "untagged.pt", "k")):
        fresh = Toy([4.0, 3.0, 2.0, 1.0])
        fresh.training(path, key=key, epochs=4).run(fresh.epoch)
        assert fresh.epochs == [0, 1, 2, 3], path.name


@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 5, 7])
def test_rank_batches_are_the_distributed_samplers_split(size, n):
    batches = [np.array([i]) for i in range(n)]
    seen = []
    for rank in range(size):
        world = distributed.World(rank, size, rank)
        positions, local = rank_batches(batches, world)
        sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=size, rank=rank, shuffle=False)
        assert [int(b[0]) for b in local] == list(sampler)
        assert len(positions) == len(sampler) and all(q % size == rank for q in positions)
        seen += [q for q in positions if q < n]
    assert sorted(seen) == list(range(n))  # every batch once; positions >= n are the padding repeats


# ----------------------------------------------------------------------------- the backbone
def test_backbone_notes_a_checkpoint_of_the_other_kind_and_refuses_non_finite_states(tmp_path, monkeypatch):
    finetuned = BEATs(tiny_config(finetuned_model=True)).save_checkpoint(tmp_path / "finetuned.pt")
    context = SystemContext(device=torch.device("cpu"), progress=False)
    backbone = Backbone.load(str(finetuned), torch.device("cpu"), context, "x", "fusion", wanted="pre-trained",
                             name="BEATs_iter3_plus_AS2M.pt")
    assert backbone.kind == "fine-tuned on AS2M" and not any(p.requires_grad for p in backbone.model.parameters())
    assert any(n.startswith("fusion: BEATs") and "is an AS2M fine-tuned checkpoint" in n
               and "the report uses the pre-trained BEATs_iter3_plus_AS2M.pt" in n for n in context.notes)
    quiet = SystemContext(device=torch.device("cpu"), progress=False)
    Backbone.load(str(finetuned), torch.device("cpu"), quiet, "x", "sera", wanted="fine-tuned", name="cpt1.pt")
    assert quiet.notes == []
    with pytest.raises(ValueError, match="layer: 3, but this BEATs has 2 layers"):
        backbone.resolve_layer(3)
    audio = torch.zeros(2, 1, 8000)
    assert backbone.tokens(audio, 1).dtype == np.float16 and backbone.forward_batches == 1
    monkeypatch.setattr(Backbone, "states", lambda self, audio, layer: torch.full((2, 3, 4), 1e6))  # float16 inf
    with pytest.raises(ValueError, match="BEATs layer 1 states: non-finite values"):
        backbone.tokens(audio, 1)


@pytest.mark.parametrize("local_rank, calls", [(0, ["fill", "barrier", "fill"]), (1, ["barrier", "fill"])])
def test_each_nodes_first_rank_fills_the_cache_before_the_others_read_it(local_rank, calls, monkeypatch):
    seen = []
    monkeypatch.setattr(_beats.distributed, "barrier", lambda: seen.append("barrier"))
    filled_per_node(lambda: seen.append("fill"), distributed.World(local_rank, 2, local_rank))
    assert seen == calls
    seen.clear()
    filled_per_node(lambda: seen.append("fill"), distributed.World())
    assert seen == ["fill"]


# ----------------------------------------------------------------------------- the protocol
@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_every_system_keeps_the_protocols_signatures(name):
    """The runner calls each stage the same way for every system: no system drops or renames a parameter."""
    cls = SYSTEMS[name].system
    for method in ("fit_global", "load_global", "fit_machine", "load_machine", "score_machine"):
        ours, protocol = inspect.signature(getattr(cls, method)), inspect.signature(getattr(System, method))
        assert list(ours.parameters) == list(protocol.parameters), (name, method)
        assert ours.return_annotation in (protocol.return_annotation, inspect.Signature.empty) \
            or method == "load_machine", (name, method)
