"""A GPU-sized job on the CPU says so before it runs for hours (issue 22 §1): asdx.systems._training.CpuEstimate.

The clock is replaced by a fake one that each step advances: what is tested is the arithmetic of the
estimate and when the warning is given, never a real duration.
"""

from __future__ import annotations

import pytest
import torch

from asdx.systems import _training
from asdx.systems._training import CPU_WARNING_SECONDS, CpuEstimate, Epoch, Training
from asdx.systems.base import SystemContext


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(_training, "clock", clock)
    return clock


def _training_run(tmp_path, context, clock, *, seconds_per_step, steps, epochs, steps_per_epoch, fits=1, name="a",
                  announced=None):
    """A Training of one parameter whose epochs take `steps` optimiser steps of `seconds_per_step` each."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    training = Training(tmp_path / f"{name}.pt", {"k": name}, lambda: {"w": weight.detach()},
                        lambda state: weight.data.copy_(state["w"]), optimizer, epochs=epochs, patience=None,
                        context=context, label=f"test {name}", steps_per_epoch=steps_per_epoch, fits=fits)
    seen_notes = []

    def epoch(n):
        if announced is not None:  # the epoch function knows its steps only now (proto)
            training.steps_in_epoch(announced)
        for _ in range(steps):
            clock.now += seconds_per_step
            optimizer.zero_grad()
            (weight - 1.0).square().sum().backward()
            optimizer.step()
            seen_notes.append(len(context.notes))
        return Epoch({}, "ok")

    training.run(epoch)
    return seen_notes


def test_a_long_cpu_training_warns_after_its_third_step_with_the_estimate(tmp_path, fake_clock, capsys):
    context = SystemContext(torch.device("cpu"), progress=False)
    # 4 s per step x 100 steps x 2 epochs x 3 trainings = 2400 s > 20 min
    seen = _training_run(tmp_path, context, fake_clock, seconds_per_step=4.0, steps=5, epochs=2,
                         steps_per_epoch=100, fits=3)
    assert seen[:3] == [0, 0, 1]  # said after the warm-up step and two timed ones: long before the end
    (note,) = context.notes
    assert "test a: training on the CPU: about 40 min estimated (4.0 s per step x 600: 100 steps per epoch x 2 " \
           "epochs x 3 trainings)" in note
    assert "--size tiny" in note and "--device cuda" in note
    assert note in capsys.readouterr().err


def test_a_short_cpu_training_says_nothing(tmp_path, fake_clock):
    context = SystemContext(torch.device("cpu"), progress=False)
    _training_run(tmp_path, context, fake_clock, seconds_per_step=1.0, steps=5, epochs=2, steps_per_epoch=100)
    assert CPU_WARNING_SECONDS > 1.0 * 100 * 2 and context.notes == []


def test_the_warning_is_given_once_per_run(tmp_path, fake_clock):
    context = SystemContext(torch.device("cpu"), progress=False)
    for name in ("a", "b"):
        _training_run(tmp_path, context, fake_clock, seconds_per_step=10.0, steps=4, epochs=3, steps_per_epoch=100,
                      name=name)
    assert len(context.notes) == 1 and "test a" in context.notes[0]


def test_without_steps_per_epoch_the_first_epoch_gives_the_estimate(tmp_path, fake_clock):
    context = SystemContext(torch.device("cpu"), progress=False)
    # 2 steps x 300 s = 600 s per epoch x 3 epochs = 30 min
    _training_run(tmp_path, context, fake_clock, seconds_per_step=300.0, steps=2, epochs=3, steps_per_epoch=None)
    (note,) = context.notes
    assert "about 30 min estimated (600.0 s per epoch x 3: 3 epochs)" in note


def test_steps_announced_by_the_epoch_function(tmp_path, fake_clock):
    context = SystemContext(torch.device("cpu"), progress=False)
    seen = _training_run(tmp_path, context, fake_clock, seconds_per_step=8.0, steps=4, epochs=2, steps_per_epoch=None,
                         announced=100)
    assert seen[:3] == [0, 0, 1]
    assert "about 27 min estimated (8.0 s per step x 200: 100 steps per epoch x 2 epochs)" in context.notes[0]


def test_not_on_a_gpu_device():
    context = SystemContext(torch.device("cuda"), progress=False)  # nothing runs on it
    assert not CpuEstimate(context, "x", 10**9).active


def test_wrap_times_a_forward_per_batch(fake_clock):
    context = SystemContext(torch.device("cpu"), progress=False)
    estimate = CpuEstimate(context, "BEATs embedding", units=2000, unit="batch of 16 clips")

    def forward(batch):
        fake_clock.now += 5.0 if batch else 60.0  # the first call is a slow warm-up: left out
        return batch

    timed = estimate.wrap(forward)
    for batch in (0, 1, 2):
        assert timed(batch) == batch
    (note,) = context.notes
    assert "about 2.8 h estimated (5.0 s per batch of 16 clips x 2000)" in note
