"""The AE's threshold scores (AEConfig.threshold_scores): held-out scores come from models that did not
see those clips, "in-sample" is the code before them (to a tolerance), and the runner fits the gamma on
them. The calibration study that compares the schemes is benchmarks/calibration_ae.py: running it is its test."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import asdx
from asdx.data import generate
from asdx.runner import RunOptions, run
from asdx.scoring.threshold import GammaThreshold
from asdx.splits import stratified_folds
from asdx.systems._threshold_scores import balance_domains
from asdx.systems.ae import AEConfig, AESystem, holdout_clips

BEFORE = Path(__file__).parent / "data" / "ae_scores_before_runner_v2.json"
SMALL = {"n_mels": 16, "n_frames": 2, "device": "cpu"}  # 32-dim vectors: the tests that bypass features run fast


def random_clips(n_source=8, n_target=4, vectors=12, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    clips = [torch.from_numpy(rng.standard_normal((vectors, dim)).astype(np.float32)) for _ in range(n_source + n_target)]
    return clips, np.array(["source"] * n_source + ["target"] * n_target)


def test_in_sample_reproduces_the_scores_of_the_code_before_runner_v2(tmp_path):
    """tests/data/ae_scores_before_runner_v2.json: float.hex() of every clip score of this fixed run.

    Pins the runner's AE path to a tolerance, not to the bit: the log-mel's vectorised log and the
    Mahalanobis loops (multiversioned, -ffp-contract=fast) round differently on AVX2 and AVX-512 hosts,
    and three epochs of float32 training amplify those ulps (0.25 % at most when the log changed).
    A real change of the path (another feature, crop, model or score) moves scores by far more.
    """
    if asdx.get_kernels() == "torch":
        pytest.skip("pins scores written with the native frontend: the torch log-mel's last-bit differences "
                    "(docs/kernels.md), amplified by three epochs of training, exceed the 0.5 % tolerance")
    torch.set_num_threads(2)  # conftest restores one thread; the file was written with torch's default on a 2-core machine; float32 GEMM sums by thread
    # the pinned scores were written on the synthetic set of that time: the diffuse background
    data = generate(tmp_path / "data", machines="fan,Sander", seconds=2.0, n_source=20, n_target=4, n_test=6, seed=0,
                    progress=False, background="diffuse")
    run_dir, _ = run(RunOptions(system="ae", machines="fan,Sander", data=data, out=tmp_path / "runs", name="g",
                                progress=False), AEConfig(epochs=3, device="cpu", threshold_scores="in-sample"))
    expected = json.loads(BEFORE.read_text())
    for machine in ("fan", "Sander"):
        for split in ("train", "test"):
            with open(run_dir / "machines" / machine / f"{split}_scores.csv", newline="") as handle:
                got = {row["name"]: float(row["score"]) for row in csv.DictReader(handle)}
            want = {name: float.fromhex(value) for name, value in expected[f"{machine}/{split}"].items()}
            assert got.keys() == want.keys(), f"{machine}/{split}"
            names = sorted(want)
            np.testing.assert_allclose([got[n] for n in names], [want[n] for n in names], rtol=5e-3,
                                       err_msg=f"{machine}/{split}")
    threshold = json.loads((run_dir / "machines" / "fan" / "threshold.json").read_text())
    assert threshold["n_train"] == 24  # in-sample: the gamma is fitted on every train clip's score


def test_runner_fits_the_gamma_on_the_held_out_clips_only(tmp_path):
    data = generate(tmp_path / "data", machines="fan", seconds=1.0, n_source=20, n_target=4, n_test=2, seed=1,
                    progress=False)
    run_dir, _ = run(RunOptions(system="ae", machines="fan", data=data, out=tmp_path / "runs", name="h",
                                progress=False), AEConfig(epochs=1, device="cpu", threshold_scores="holdout",
                                                          balance_domains=False))
    threshold = json.loads((run_dir / "machines" / "fan" / "threshold.json").read_text())
    assert threshold["n_train"] == 3  # ceil(0.1 * 20) source + ceil(0.1 * 4) target held-out clips
    with open(run_dir / "machines" / "fan" / "train_scores.csv", newline="") as handle:
        rows = {row["name"]: float(row["score"]) for row in csv.DictReader(handle)}
    assert len(rows) == 24  # every train clip keeps its row
    held = (run_dir / "machines" / "fan" / "held_out_clips.txt").read_text().split()
    assert len(held) == 3 and sum("target" in name for name in held) == 1
    refit = GammaThreshold(q=0.9).fit([rows[name] for name in held])  # the threshold is theirs alone
    assert refit.threshold_ == threshold["threshold"]


def test_kfold_scores_each_clip_with_a_model_trained_without_it_and_keeps_the_final_model():
    clips, domains = random_clips()
    config = AEConfig(epochs=2, batch_size=32, threshold_scores="kfold", folds=3, **SMALL)  # MAHALA: covariances too
    kfold = AESystem(config).fit_vectors(clips, domains, progress=False)
    in_sample = AESystem(AEConfig(**{**config.__dict__, "threshold_scores": "in-sample"}))
    in_sample.fit_vectors(clips, domains, progress=False)
    np.testing.assert_array_equal(kfold.train_scores_, in_sample.train_scores_)  # the final model is unchanged
    np.testing.assert_array_equal(kfold.machine_train_scores().scores, kfold.out_of_fold_scores_)
    fold = stratified_folds(domains, 3, config.seed)
    for k in range(3):
        kept, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        without = AESystem(AEConfig(**{**config.__dict__, "threshold_scores": "in-sample"}))
        without.fit_vectors([clips[i] for i in kept], domains[kept], progress=False)
        # the raw held-out scores are the fold model's; the threshold gets them on the final model's scale
        # (tests/test_ae_threshold_scores.py)
        np.testing.assert_array_equal(kfold.out_of_fold_raw_[held], without.score_vectors([clips[i] for i in held]))


def test_holdout_model_never_sees_the_held_out_clips():
    """Changing a held-out clip leaves the model and the other clips' scores as they were; changing a
    trained-on clip does not."""
    clips, domains = random_clips(n_source=20, n_target=4)
    config = AEConfig(epochs=2, batch_size=32, threshold_scores="holdout", **SMALL)
    base = AESystem(config).fit_vectors(clips, domains, progress=False)
    held = holdout_clips(domains, config.validation_split, config.seed)
    np.testing.assert_array_equal(base.held_out_, held)
    scores = base.machine_train_scores()
    np.testing.assert_array_equal(scores.for_threshold(),
                                  balance_domains(base.train_scores_[held], domains[held] == "target"))
    assert len(scores.scores) == len(clips)
    h, t = np.flatnonzero(held)[0], np.flatnonzero(~held)[0]
    for changed, same in ((h, True), (t, False)):
        altered = list(clips)
        altered[changed] = clips[changed] + 3.0
        other = AESystem(config).fit_vectors(altered, domains, progress=False)
        keep = np.arange(len(clips)) != changed
        assert np.array_equal(other.train_scores_[keep], base.train_scores_[keep]) is same


def test_in_sample_scores_are_optimistic_for_a_memorising_model():
    clips, domains = random_clips(n_source=6, n_target=3, vectors=8, seed=3)  # noise: nothing to learn but the clips
    config = AEConfig(epochs=10, batch_size=16, threshold_scores="kfold", folds=3, **SMALL)  # MAHALA
    system = AESystem(config).fit_vectors(clips, domains, progress=False)
    # the final model's own clips score lower than out-of-fold ones (ratio 0.68-0.81 over seeds 0-3)
    assert system.train_scores_.mean() < 0.9 * system.out_of_fold_scores_.mean()


def test_official_threshold_scores_are_mini_batch_scores():
    clips, domains = random_clips(n_source=10, n_target=2, vectors=30)  # 360 vectors: 324 train, 36 validation
    for score, n_batches in (("MSE", 11 + 2), ("MAHALA", 11 + 2)):
        config = AEConfig(epochs=2, score=score, batch_size=32, threshold_scores="official", **SMALL)
        system = AESystem(config).fit_vectors(clips, domains, progress=False)
        scores = system.machine_train_scores()
        assert len(scores.scores) == len(clips) and len(scores.for_threshold()) == n_batches
        if score == "MSE":  # the last epoch's training losses come first, as in the official y_pred list
            np.testing.assert_array_equal(scores.for_threshold()[:11], system.last_epoch_batch_losses_)


def test_folds_and_holdout_are_stratified_and_validated():
    domains = np.array(["source"] * 40 + ["target"] * 6)
    held = holdout_clips(domains, 0.1, 0)
    assert held[:40].sum() == 4 and held[40:].sum() == 1
    assert holdout_clips(np.array(["source"] * 30 + ["target"]), 0.1, 0)[-1] == False  # noqa: E712 (one target)
    small = holdout_clips(np.array(["source"] * 10 + ["target"] * 6), 0.1, 0)  # 1 + 1, topped up with a source
    assert small[:10].sum() == 2 and small[10:].sum() == 1
    for domains_, fraction in ((["source"] * 3, 0.1), (["source"] * 40, 0.0)):
        with pytest.raises(ValueError, match="at least 3"):
            holdout_clips(np.array(domains_), fraction, 0)
    fold = stratified_folds(np.array(["source"] * 41 + ["target"] * 6), 5, 0)
    assert sorted(np.bincount(fold).tolist()) == [9, 9, 9, 10, 10]  # the dealing goes on across domains
    assert len(set(fold[41:].tolist())) == 5  # the 6 target clips cover all 5 folds
    with pytest.raises(ValueError, match="folds"):
        stratified_folds(domains[:3], 5, 0)
    with pytest.raises(ValueError, match="threshold_scores"):
        AEConfig(threshold_scores="test")
    with pytest.raises(ValueError, match="folds"):
        AEConfig(folds=1)

