"""T_fusion under DistributedDataParallel on CPU (gloo, 2 processes): the fusion._epoch promise and torchrun.

FusionSystem._epoch: a step covers world x accumulation_steps consecutive micro-batches; rank r
takes positions r, r + world, ... (DistributedSampler, padding repeats weighted 0), each summed
loss scaled by world / (clips in the step). So 2 gloo ranks with accumulation a must end with the
weights of 1 process with accumulation 2a, whatever the micro-batch count (odd: a padding repeat)
and batch sizes (length-grouped batches of unequal size in one step). Only rank 0 writes files;
the token cache is shared (rank 1 forwards nothing). Ranks are plain subprocesses that import this
module and run _rank_main with the torchrun environment variables set by hand. Then `torchrun -m asdx
run fusion` end to end, and which systems a worker rank joins (fusion's DDP fit_global, not sera's).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from asdx.data import generate, list_machines, machine_clips
from asdx.data.loader import ClipSet
from asdx.systems._features import split_validation
from asdx.systems.base import SystemContext
from asdx.systems.fusion import MODEL_FILE, MODEL_FORMAT, RESUME_FILE, FusionConfig, FusionSystem

pytestmark = [
    pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                       reason="this torch build has no torch.distributed with the gloo backend"),
]

# Learning rates far above the report's so two epochs move the tiny model's weights visibly.
FAST = dict(beats="random-tiny", epochs=2, patience=5, batch_size=2, lr=0.05, backbone_lr=0.01, device="cpu",
            seed=0)
# Each case: the ranks' accumulation_steps (the single process uses twice as many), its settings, and whether
# early stopping watches dev Ω (rank 0 evaluates, broadcasts) or a validation split of the train clips.
CASES = {
    "validation-loss": dict(accumulation=1, settings=dict(finetune_blocks=1), dev_omega=False),
    "dev-omega": dict(accumulation=2, settings=dict(), dev_omega=True),
}
TOLERANCE = 1e-5  # float32 sums in another order (DDP's all-reduce vs local accumulation)


# ----------------------------------------------------------------------------- helpers shared with the ranks
def clip_sets(roots: list[str], dev_omega: bool) -> tuple[ClipSet, ClipSet | None]:
    """The global train clips of every root (roots of different clip lengths) and, for dev Ω, their test clips."""
    machines = [m for root in roots for m in list_machines(Path(root))]
    train = ClipSet.from_clips([c for m in machines for c in machine_clips(m, "train")], channels=1, seconds=10.0)
    if not dev_omega:
        return train, None
    return train, ClipSet.from_clips([c for m in machines for c in machine_clips(m, "test")], channels=1,
                                     seconds=10.0)


def make_system(settings: dict, accumulation: int, cache: Path) -> FusionSystem:
    config = FusionConfig(**FAST, **settings, accumulation_steps=accumulation)
    return FusionSystem(config, SystemContext(device=torch.device("cpu"), progress=False, cache_dir=Path(cache)))


def _rank_main(spec_file: str) -> None:
    """One rank: joins the group from the torchrun variables and fits every case; saves what the test compares."""
    from asdx import distributed

    torch.set_num_threads(1)
    spec = json.loads(Path(spec_file).read_text())
    world = distributed.init_from_environment("cpu")
    try:
        assert world.size == 2 and world.rank == int(os.environ["RANK"]), world
        for name, case in spec["cases"].items():
            train, validation = clip_sets(spec["roots"], CASES[name]["dev_omega"])
            system = make_system(CASES[name]["settings"], CASES[name]["accumulation"], spec["cache"])
            folder = case["folder"] if world.is_main else case["rank1_folder"]
            system.fit_global(train, Path(folder), validation)
            torch.save({"state": system.net.tuned_state(), "history": system.history, "best_epoch": system.best_epoch,
                        "monitor": system.monitor, "trunk_batches": system.backbone.forward_batches},
                       Path(spec["results"]) / f"{name}.rank{world.rank}.pt")
    finally:
        distributed.shutdown()


# ----------------------------------------------------------------------------- fixtures
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """fan clips of 1 s and bearingEmu clips of 0.6 s: two token lengths, so length-grouped batches of size 2 and 1."""
    base = tmp_path_factory.mktemp("fusion_ddp_data")
    return [str(generate(base / "fan", machines="fan", seconds=1.0, n_source=6, n_target=2, n_test=1, seed=1,
                         progress=False)),
            str(generate(base / "bearing", machines="bearingEmu", seconds=0.6, n_source=4, n_target=1, n_test=1,
                         seed=2, progress=False))]


@pytest.fixture(scope="module")
def ddp_results(roots, tmp_path_factory):
    """Both cases fitted by 2 gloo ranks (one process group); each rank's saved result, and the folders."""
    base = tmp_path_factory.mktemp("fusion_ddp")
    (base / "results").mkdir()
    spec = {"roots": roots, "cache": str(base / "cache"), "results": str(base / "results"),
            "cases": {name: {"folder": str(base / name / "global"), "rank1_folder": str(base / name / "rank1_global")}
                      for name in CASES}}
    (base / "spec.json").write_text(json.dumps(spec))
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import {Path(__file__).stem} as t; "
            f"t._rank_main(sys.argv[1])")
    port = str(free_port())
    ranks = [subprocess.Popen([sys.executable, "-c", code, str(base / "spec.json")], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=subprocess_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(r),
                                                 LOCAL_RANK=str(r), WORLD_SIZE="2"))
             for r in range(2)]
    outputs = []
    try:
        for rank in ranks:
            outputs.append(rank.communicate(timeout=180)[0])
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
                rank.wait()
    for r, (rank, output) in enumerate(zip(ranks, outputs)):
        assert rank.returncode == 0, f"rank {r} exited {rank.returncode}:\n{output[-6000:]}"
    results = {(name, r): torch.load(base / "results" / f"{name}.rank{r}.pt", weights_only=False)
               for name in CASES for r in range(2)}
    return base, spec, results


def reference(roots, name: str, folder: Path):
    """The same fit by one process that accumulates twice as many micro-batches per step (no process group)."""
    case = CASES[name]
    train, validation = clip_sets(roots, case["dev_omega"])
    system = make_system(case["settings"], 2 * case["accumulation"], folder / "cache")
    system.fit_global(train, folder / "global", validation)
    return system, train


def max_difference(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# ----------------------------------------------------------------------------- DDP == one process accumulating
@pytest.mark.parametrize("name", list(CASES))
def test_two_gloo_ranks_match_one_process_accumulating_the_same_micro_batches(name, roots, ddp_results, tmp_path):
    base, spec, results = ddp_results
    single, train = reference(roots, name, tmp_path)
    assert single.monitor == ("dev-omega" if CASES[name]["dev_omega"] else "validation-loss")

    # the case exercises what it should: an odd micro-batch count (rank 1 gets a padding repeat), clips of two
    # cropped lengths, and steps whose micro-batches hold different numbers of clips
    if single.monitor == "validation-loss":
        train_idx, _ = split_validation(train.clips, single.config.validation_fraction, single.config.seed)
    else:
        train_idx = np.arange(len(train))
    assert len(set(train.cropped_lengths[train_idx].tolist())) == 2
    per_step = 2 * CASES[name]["accumulation"]
    unequal = False
    for epoch in range(FAST["epochs"]):
        batches = single._micro_batches(train, train_idx, epoch)
        assert len(batches) % 2 == 1, len(batches)
        steps = [batches[s : s + per_step] for s in range(0, len(batches), per_step)]
        unequal |= any(len({len(b) for b in step}) > 1 for step in steps)
    assert unequal

    rank0, rank1 = results[name, 0], results[name, 1]
    assert rank0["monitor"] == rank1["monitor"] == single.monitor
    assert max_difference(rank0["state"], rank1["state"]) == 0.0  # DDP keeps the replicas identical
    difference = max_difference(rank0["state"], single.net.tuned_state())
    noise = max_difference(rank0["state"], single.net.tuned_state())
    moved = max_difference(rank0["state"], initial_state(single))
    print(f"{name}: max |w_ddp - w_single| = {difference:.3g} ({noise:.3g} with the key biases), "
          f"weights moved up to {moved:.3g}")
    assert moved > 1e-2, "the weights barely moved: the comparison would say nothing"
    assert difference < TOLERANCE

    # the same epochs, losses (all-reduced over the ranks, padding left out) and kept epoch
    assert rank0["best_epoch"] == rank1["best_epoch"] == single.best_epoch
    assert len(rank0["history"]) == len(single.history) == FAST["epochs"]
    for ours, theirs, other in zip(rank0["history"], single.history, rank1["history"]):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert other["train_loss"] == ours["train_loss"]
        key = "dev_omega" if single.monitor == "dev-omega" else "validation_loss"
        assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6)


def initial_state(trained: FusionSystem) -> dict:
    fresh = FusionSystem(trained.config, SystemContext(device=torch.device("cpu"), progress=False,
                                                      cache_dir=trained.context.cache_dir))
    fresh.load_backbone()
    fresh._build(len(trained.classes))
    return fresh.net.tuned_state()


@pytest.mark.parametrize("name", list(CASES))
def test_only_rank_0_writes_and_the_token_cache_is_shared(name, ddp_results):
    base, spec, results = ddp_results
    case = spec["cases"][name]
    # rank 1 was given a folder that did not exist: it must still not exist (no model, resume file or cache)
    assert not Path(case["rank1_folder"]).exists()
    folder = Path(case["folder"])
    assert sorted(p.name for p in folder.iterdir()) == [MODEL_FILE]  # resume checkpoint removed at the end
    assert not (folder / RESUME_FILE).exists()
    saved = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
    assert max_difference(saved["weights"], results[name, 0]["state"]) == 0.0
    # rank 0 filled the shared cache; rank 1 waited for it, read it and forwarded nothing
    assert results[name, 0]["trunk_batches"] > 0
    assert results[name, 1]["trunk_batches"] == 0
    assert any(Path(spec["cache"]).rglob("*.npz"))


# ----------------------------------------------------------------------------- torchrun end to end
def test_torchrun_two_processes_run_fusion_end_to_end(tmp_path):
    data = generate(tmp_path / "data", machines="fan,ToyDrone", seconds=1.0, n_source=10, n_target=3, n_test=3,
                    seed=4, progress=False)
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "-m", "asdx", "run", "fusion", "--machine", "fan,ToyDrone",
               "--data", str(data), "--out", str(out), "--beats", "random-tiny", "--epochs", "1", "--quiet",
               "--workers", "0", "--device", "cpu"]
    done = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"torchrun exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    # the results are printed once (by rank 0)
    assert done.stdout.count("run directory:") == 1, done.stdout
    assert done.stdout.count("official score Ω") == 1, done.stdout

    runs = sorted((out / "fusion").iterdir())
    assert [r.name for r in runs] == ["fan+ToyDrone-seed0"]
    run_dir = runs[0]
    for name in ("report.html", "metrics.json", "config.json", "global/done.json", f"global/{MODEL_FILE}",
                 "machines/fan/done.json", "machines/ToyDrone/done.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "global" / RESUME_FILE).exists()
    # the model rank 0 wrote is whole: this format, the run's config, one epoch of history, finite weights
    saved = torch.load(run_dir / "global" / MODEL_FILE, map_location="cpu", weights_only=True)
    assert saved["format"] == MODEL_FORMAT and saved["config"]["epochs"] == 1 and len(saved["history"]) == 1
    assert saved["classes"] and saved["weights"]
    assert all(bool(torch.isfinite(w).all()) for w in saved["weights"].values())
    assert sorted(p.parent.name for p in (run_dir / "machines").glob("*/done.json")) == ["ToyDrone", "fan"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert np.isfinite(metrics["official_score"]) and sorted(metrics["machines"]) == ["ToyDrone", "fan"]
    log = (run_dir / "run.log").read_text()
    assert "2 process(es)" in log and "run finished" in log
    assert log.count("fusion epoch 1:") == 1  # rank 1 logs nothing


# ----------------------------------------------------------------------------- which systems the other ranks join
@pytest.mark.parametrize("system, joins", [("fusion", True), ("sera", False)])
def test_worker_rank_joins_only_a_distributed_global_stage(system, joins, roots, tmp_path, monkeypatch):
    """Rank 1 receives rank 0's {"train": True}; it trains only with a system whose fit_global runs DDP.

    sera's fit_global knows nothing of ranks: a second rank would train a duplicate model and write its
    files and resume checkpoint into rank 0's global folder.
    """
    from asdx import distributed, runner
    from asdx.rundir import RunDir
    from asdx.systems import SYSTEMS

    received, fitted = [], []
    monkeypatch.setattr(distributed, "broadcast_object", lambda value=None, source=0: received.append(value)
                        or {"train": True})
    cls = SYSTEMS[system].system
    monkeypatch.setattr(cls, "fit_global", lambda self, train, folder, *rest: fitted.append(Path(folder)))
    config = SYSTEMS[system].config(beats="random-tiny", device="cpu")
    options = runner.RunOptions(system=system, machines="fan", data=Path(roots[0]), out=tmp_path / "runs",
                                progress=False)
    assert runner._run_as_worker(options, config) == (None, None)
    assert received == [None]  # the one broadcast rank 0 makes per global stage is matched either way
    assert fitted == ([RunDir.for_run(options, config).global_dir] if joins else [])
    assert not (tmp_path / "runs").exists()


def test_torchrun_two_processes_train_each_proto_machine(tmp_path):
    """P_proto's distributed stage is the per-machine one: rank 1 joins every machine's training, rank 0 scores."""
    data = generate(tmp_path / "data", machines="fan,bearingEmu", seconds=1.0, n_source=8, n_target=2, n_test=2,
                    seed=4, progress=False)
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "-m", "asdx", "run", "proto", "--machine", "fan,bearingEmu",
               "--data", str(data), "--out", str(out), "--beats", "random-tiny", "--size", "tiny", "--epochs", "2",
               "--batch-size", "4", "--quiet", "--workers", "0", "--device", "cpu"]
    done = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"torchrun exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    assert done.stdout.count("run directory:") == 1, done.stdout
    run_dir = out / "proto" / "fan+bearingEmu-seed0"
    for machine in ("fan", "bearingEmu"):
        for name in ("proto_model.pt", "proto_prototypes.npz", "test_scores.csv", "done.json"):
            assert (run_dir / "machines" / machine / name).is_file(), (machine, name)
        assert not (run_dir / "machines" / machine / "proto_model.resume.pt").exists()
    log = (run_dir / "run.log").read_text()
    # one training line per network, rank 0's: per machine 3 fold networks (threshold_scores=kfold) + the final one
    assert log.count("2 process(es)") == 2 * 4 and "run finished" in log
