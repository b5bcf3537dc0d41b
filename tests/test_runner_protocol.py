"""The runner's system protocol: global stage reuse, resume checks, streaming by length, fail-early checks."""

import csv
import json
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf

from asdx.data import generate
from asdx.data.loader import ClipSet, check_headers
from asdx.runner import RunOptions, run
from asdx.systems import SYSTEMS, SystemEntry
from asdx.systems.base import MachineScores, System

MACHINES = "fan,valveEmu,Sander"


@dataclass
class CountingConfig:
    seed: int = 0
    gain: float = 1.0
    device: str = "cpu"


class CountingSystem(System):
    """A global stage that learns the mean log-energy of all machines; per machine, distance to its train mean."""

    name = "counting"
    uses_global_stage = True
    per_machine_config_fields = frozenset({"device"})
    global_fits = 0
    machine_fits = 0
    fail_on: str | None = None
    batch_lengths: list = []

    def global_machines(self, available):
        return [m for m in available if m.dataset == "dev"]

    def _energies(self, clips: ClipSet) -> np.ndarray:
        out = np.zeros(len(clips))
        for indices, audio in clips.batches(self.input_channels, batch_size=4):
            CountingSystem.batch_lengths.append(audio.shape[-1])
            out[indices] = np.log(np.mean(audio.numpy() ** 2, axis=(1, 2)) + 1e-12)
        return out

    def fit_global(self, train, folder, validation=None):
        CountingSystem.global_fits += 1
        (folder / "global.json").write_text(json.dumps({"mean": float(self._energies(train).mean())}))

    def load_global(self, folder):
        self.global_mean = json.loads((folder / "global.json").read_text())["mean"]

    def fit_machine(self, machine, train, folder):
        CountingSystem.machine_fits += 1
        if machine == CountingSystem.fail_on:
            (folder / "checkpoint.txt").write_text("half-trained")
            raise ValueError(f"planned failure on {machine}")
        energies = self._energies(train)
        self.mean = energies.mean()
        distance = np.abs(energies - self.mean) * self.config.gain
        # leave-one-out: each clip's distance to the mean of the others
        n = len(energies)
        loo = np.abs(energies - (energies.sum() - energies) / (n - 1)) * self.config.gain
        (folder / "mean.json").write_text(json.dumps({"mean": float(self.mean)}))
        return MachineScores(loo, {"distance": distance, "global_offset": energies - self.global_mean})

    def load_machine(self, folder):
        self.mean = json.loads((folder / "mean.json").read_text())["mean"]

    def score_machine(self, test):
        energies = self._energies(test)
        distance = np.abs(energies - self.mean) * self.config.gain
        return MachineScores(distance, {"distance": distance, "global_offset": energies - self.global_mean})


@pytest.fixture
def counting(monkeypatch):
    monkeypatch.setitem(SYSTEMS, "counting", SystemEntry(CountingConfig, CountingSystem, "test system"))
    CountingSystem.global_fits = CountingSystem.machine_fits = 0
    CountingSystem.fail_on = None
    CountingSystem.batch_lengths = []
    return CountingSystem


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("proto") / "data", machines=MACHINES, seconds=1.0, n_source=8,
                    n_target=3, n_test=4, seed=1, progress=False)


def options(data, out, machines, **kwargs):
    return RunOptions(system="counting", machines=machines, data=data, out=out, progress=False, **kwargs)


def test_global_stage_runs_once_and_is_reused_by_another_run(counting, data, tmp_path):
    run_dir, evaluation = run(options(data, tmp_path, "fan"), CountingConfig())
    assert counting.global_fits == 1 and counting.machine_fits == 1
    done = json.loads((run_dir / "global" / "done.json").read_text())
    assert done["machines"] == ["fan", "valveEmu"]  # dev machines only, whatever --machine says
    run_dir2, _ = run(options(data, tmp_path, "valveEmu,Sander"), CountingConfig(device="cpu"))
    assert counting.global_fits == 1, "the second run must reuse the global stage"
    assert counting.machine_fits == 3
    assert "reused the model of" in (run_dir2 / "run.log").read_text()
    assert json.loads((run_dir2 / "config.json").read_text())["global_stage"]["reused_from"] == str(
        run_dir / "global")
    assert (run_dir2 / "global" / "global.json").is_file()  # a run directory is self-contained
    # a config key that changes the global model trains a new one
    run(options(data, tmp_path, "Sander", name="other"), CountingConfig(gain=2.0))
    assert counting.global_fits == 2


def test_sub_scores_reach_the_csvs_and_the_report(counting, data, tmp_path):
    run_dir, _ = run(options(data, tmp_path, "fan", notes=("a note from the caller",)), CountingConfig())
    with open(run_dir / "machines" / "fan" / "test_scores.csv") as handle:
        header = next(csv.reader(handle))
    assert header == ["name", "score", "distance", "global_offset", "label", "domain"]
    with open(run_dir / "machines" / "fan" / "train_scores.csv") as handle:
        assert next(csv.reader(handle)) == ["name", "score", "distance", "global_offset"]
    page = (run_dir / "report.html").read_text()
    assert "global_offset" in page and "a note from the caller" in page
    notes = json.loads((run_dir / "metrics.json").read_text())["notes"]
    assert notes[0] == "a note from the caller"  # then the system's own (e.g. a gamma fallback on 11 scores)
    assert all(n.startswith("fan: gamma threshold by ") for n in notes[1:])


def test_resume_with_a_changed_key_is_refused(counting, data, tmp_path):
    run(options(data, tmp_path, "fan"), CountingConfig())
    with pytest.raises(FileExistsError, match="--resume"):
        run(options(data, tmp_path, "fan"), CountingConfig())
    with pytest.raises(ValueError, match=r"gain \(1.0 -> 3.0\)"):
        run(options(data, tmp_path, "fan", resume=True), CountingConfig(gain=3.0))
    with pytest.raises(ValueError, match="threshold_q"):
        run(options(data, tmp_path, "fan", resume=True, threshold_q=0.8), CountingConfig())
    fits = counting.machine_fits
    run(options(data, tmp_path, "fan", resume=True), CountingConfig())
    assert counting.machine_fits == fits  # finished machine skipped


def test_a_failed_run_is_logged_and_a_rerun_starts_cleanly(counting, data, tmp_path):
    counting.fail_on = "valveEmu"
    with pytest.raises(ValueError, match="planned failure"):
        run(options(data, tmp_path, "valveEmu"), CountingConfig())
    run_dir = tmp_path / "counting" / "valveEmu-seed0"
    assert "run failed: ValueError: planned failure on valveEmu" in (run_dir / "run.log").read_text()
    assert not list(run_dir.rglob("*.partial"))
    counting.fail_on = None
    run_dir, evaluation = run(options(data, tmp_path, "valveEmu"), CountingConfig())  # no --resume needed
    assert (run_dir / "machines" / "valveEmu" / "done.json").is_file() and evaluation is not None


def copy_data(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    return copy


def test_a_bad_test_clip_fails_before_any_training_or_folder(counting, data, tmp_path):
    copy = copy_data(data, tmp_path)
    bad = sorted((copy / "eval_data" / "raw" / "Sander" / "test").glob("*.wav"))[-1]
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match=bad.name):
        run(options(copy, tmp_path / "runs", "fan,Sander"), CountingConfig())
    assert counting.global_fits == 0 and counting.machine_fits == 0
    assert not (tmp_path / "runs").exists()


def test_an_empty_train_folder_names_the_folder_and_the_machine(counting, data, tmp_path):
    copy = copy_data(data, tmp_path)
    for wav in (copy / "dev_data" / "raw" / "fan" / "train").glob("*.wav"):
        wav.unlink()
    with pytest.raises(ValueError, match=r"fan.train.*no WAV files.*machine fan"):
        run(options(copy, tmp_path / "runs", "fan"), CountingConfig())
    assert not (tmp_path / "runs").exists()


def test_clips_of_different_lengths_are_batched_by_length_and_cropped(counting, data, tmp_path):
    copy = copy_data(data, tmp_path)
    train = sorted((copy / "dev_data" / "raw" / "fan" / "train").glob("*.wav"))
    for k, wav in enumerate(train[:6]):  # 0.5 s, 0.75 s and 1.25 s clips among the 1 s ones
        audio, rate = sf.read(wav)
        length = [8000, 12000, 20000][k % 3]
        sf.write(wav, np.resize(audio, (length, 2)), rate, subtype="PCM_16")
    run_dir, _ = run(options(copy, tmp_path / "runs", "fan", seconds=1.0), CountingConfig())
    assert set(counting.batch_lengths) >= {8000, 12000, 16000}
    assert max(counting.batch_lengths) == 16000  # the 1.25 s clips are cropped to --seconds, never padded
    with open(run_dir / "machines" / "fan" / "train_scores.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(train)


def test_check_headers_and_the_batch_plan(data):
    from asdx.data import machine_clips, resolve_machines

    clips = machine_clips(resolve_machines(data, "fan")[0], "train")
    lengths = check_headers(clips, channels=2)
    assert (lengths == 16000).all()
    clip_set = ClipSet(clips, np.array([16000, 8000] * (len(clips) // 2) + [16000] * (len(clips) % 2)), seconds=0.75)
    plan = clip_set.batch_plan(batch_size=4)
    assert sorted(i for batch in plan for i in batch) == list(range(len(clips)))
    assert all(len(set(clip_set.cropped_lengths[batch])) == 1 for batch in plan)
    audio = clip_set.load_all(channels=1)
    assert len(audio) == len(clips) and set(clip_set.cropped_lengths.tolist()) == {8000, 12000}
    assert [a.shape for a in audio] == [(1, n) for n in clip_set.cropped_lengths]


def test_clip_records_carry_attributes_from_the_attributes_csv(data):
    from asdx.data import machine_clips, resolve_machines

    clips = machine_clips(resolve_machines(data, "Sander")[0], "train")
    assert all(clip.attributes for clip in clips)
    hidden = machine_clips(resolve_machines(data, "valveEmu")[0], "train")
    assert all(clip.hidden_attributes or clip.attributes for clip in hidden)


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_returns_every_clip_once_in_place(data, workers):
    from asdx.data import load_clip, machine_clips, resolve_machines

    clips = machine_clips(resolve_machines(data, "Sander")[0], "test")
    clip_set = ClipSet.from_clips(clips, channels=2, seconds=10.0, workers=workers)
    audio = clip_set.load_all(channels=2, batch_size=3)
    for clip, loaded in zip(clips, audio):
        np.testing.assert_array_equal(loaded, load_clip(clip, channels=2, seconds=None))


def test_a_decoding_error_in_a_worker_is_one_clear_error(data, tmp_path):
    from asdx.data import machine_clips, resolve_machines

    copy = copy_data(data, tmp_path)
    clips = machine_clips(resolve_machines(copy, "fan")[0], "test")
    clip_set = ClipSet.from_clips(clips, channels=2, workers=2)
    audio, rate = sf.read(clips[2].path)
    audio[100, 0] = np.nan
    sf.write(clips[2].path, audio, rate, subtype="FLOAT")
    with pytest.raises(ValueError, match=rf"{clips[2].name}.*NaN"):
        clip_set.load_all(channels=2)


def test_resume_after_a_failure_keeps_checkpoints_and_a_plain_rerun_clears_them(counting, data, tmp_path):
    counting.fail_on = "fan"
    for _ in range(2):
        with pytest.raises(ValueError, match="planned failure"):
            run(options(data, tmp_path, "fan", resume=True), CountingConfig())
        checkpoint = tmp_path / "counting" / "fan-seed0" / "machines" / "fan" / "checkpoint.txt"
        assert checkpoint.is_file()
        checkpoint.write_text("kept")
    with pytest.raises(ValueError, match="planned failure"):
        run(options(data, tmp_path, "fan", resume=True), CountingConfig())
    counting.fail_on = None
    checkpoint.write_text("kept")
    run(options(data, tmp_path, "fan", resume=True), CountingConfig())
    assert checkpoint.read_text() == "kept"
    counting.fail_on = "fan"
    with pytest.raises(ValueError):
        run(options(data, tmp_path, "fan", name="fresh"), CountingConfig())
    (tmp_path / "counting" / "fresh" / "machines" / "fan" / "checkpoint.txt").write_text("stale")
    counting.fail_on = None
    run(options(data, tmp_path, "fan", name="fresh"), CountingConfig())  # a plain rerun starts afresh
    assert not (tmp_path / "counting" / "fresh" / "machines" / "fan" / "checkpoint.txt").exists()


def _worker_pid_and_energy(audio):
    import os

    return os.getpid(), audio.pow(2).mean(dim=(1, 2))


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_transform_runs_where_batches_are_assembled(data, workers):
    """ClipSet.batches(transform=...): features computed in the DataLoader worker (the AE scores this way)."""
    import os

    from asdx.data import machine_clips, resolve_machines

    clips = machine_clips(resolve_machines(data, "fan")[0], "test")[:6]
    clip_set = ClipSet(clips, check_headers(clips, 1), 10.0, workers)
    plain = np.zeros(len(clips))
    for indices, audio in clip_set.batches(1, batch_size=4):
        plain[indices] = audio.pow(2).mean(dim=(1, 2)).numpy()
    seen = np.zeros(len(clips))
    for indices, (pid, energy) in clip_set.batches(1, batch_size=4, transform=_worker_pid_and_energy):
        assert (pid != os.getpid()) == (workers > 0)
        seen[indices] = energy.numpy()
    np.testing.assert_array_equal(seen, plain)


def test_make_system_needs_a_name_a_config_and_a_context(counting, tmp_path):
    """The system of a registry name; the context resolves the device (asdx.device.Device), once, for every
    caller (runner, detector, library use)."""
    import torch

    from asdx.systems import make_system
    from asdx.systems.base import SystemContext

    system = make_system("counting", CountingConfig(device="CPU"))
    assert isinstance(system, CountingSystem) and system.context.device == torch.device("cpu")
    context = SystemContext(device="cpu", progress=False, cache_dir=tmp_path)
    assert context.device == torch.device("cpu") and make_system("counting", CountingConfig(), context).context is context
    with pytest.raises(ValueError, match="system: unknown 'nope'; available: .*counting"):
        make_system("nope", CountingConfig())
    with pytest.raises(ValueError, match="device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"):
        make_system("counting", CountingConfig(device="gpu"))
