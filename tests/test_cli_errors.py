"""The CLI's answers to bad input: one `asdx <command>: error:` line per problem, no traceback, no folder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from asdx.cli import main
from asdx.data import resolve_machines
from asdx.data.dataset import machine_clips
from asdx.submission import write_submission
from conftest import ROOT


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Runs in an empty folder, so that `runs/` (the default --out) would appear here if anything made it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fails(argv, capsys, *messages, code=1):
    assert main(argv) == code
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err + captured.out
    for message in messages:
        assert message in err, err
    return err


def _run(synth_root, *flags):
    return ["run", "ae", "--machine", "fan", "--data", str(synth_root), *flags]


@pytest.mark.parametrize("flags, message", [
    (["--hop-length", "0"], "asdx run: error: hop_length: must be >= 1, got 0 (from --hop-length)"),
    (["--batch-size", "0"], "asdx run: error: batch_size: must be >= 1, got 0 (from --batch-size)"),
    (["--epochs", "0"], "asdx run: error: epochs: must be >= 1, got 0 (from --epochs)"),
    (["--epochs", "ten"], "asdx run: error: epochs: expected an integer >= 1, got ten (from --epochs)"),
    (["--channel", "2"], "asdx run: error: channel: expected one of 0, 1 (or none), got 2 (from --channel)"),
    (["--score", "mse"], "score: expected one of 'MSE', 'MAHALA', got mse"),
    (["--threshold-q", "1"], "asdx run: error: threshold_q: must be > 0 and < 1, got 1 (from --threshold-q)"),
    (["--threshold-q", "0"], "threshold_q: must be > 0 and < 1, got 0"),
    (["--workers", "-1"], "asdx run: error: workers: must be >= 0, got -1 (from --workers)"),
    (["--seconds", "0"], "asdx run: error: seconds: must be > 0, got 0 (from --seconds)"),
    (["--device", "gpu"], "asdx run: error: device: expected auto, cpu, cuda, cuda:N or mps, got gpu (from --device)"),
])
def test_bad_flags(synth_root, in_tmp, capsys, flags, message):
    _fails(_run(synth_root, *flags), capsys, message)
    assert not (in_tmp / "runs").exists()


def test_every_problem_is_reported_at_once(synth_root, in_tmp, capsys):
    err = _fails(_run(synth_root, "--epochs", "0", "--hop-length", "0", "--workers", "-2"), capsys)
    assert err.splitlines() == ["asdx run: error: workers: must be >= 0, got -2 (from --workers)",
                                "asdx run: error: epochs: must be >= 1, got 0 (from --epochs)",
                                "asdx run: error: hop_length: must be >= 1, got 0 (from --hop-length)"]
    assert not (in_tmp / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message of a machine without CUDA")
def test_cuda_requested_without_a_gpu(synth_root, in_tmp, capsys):
    _fails(_run(synth_root, "--device", "cuda"), capsys,
           f"asdx run: error: device: 'cuda' requested but torch sees no CUDA GPU (torch {torch.__version__}, built")
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("text, message", [
    ('epochs = "ten"\n', "asdx run: error: my.toml: epochs: expected an integer >= 1, got 'ten'"),
    ("epochs = 1.5\n", "asdx run: error: my.toml: epochs: expected an integer >= 1, got 1.5"),
    ("[aee]\nepochs = 2\n", "asdx run: error: my.toml: [aee] is not a system (did you mean [ae]?); known systems: "
                            "ae, sera, fusion, proto"),
    ("learning_rate = 0.1\n", "asdx run: error: my.toml: unknown key(s) learning_rate for AEConfig"),
    ("epochs = \n", "asdx run: error: my.toml: not valid TOML"),
])
def test_bad_config_files(synth_root, in_tmp, capsys, text, message):
    (in_tmp / "my.toml").write_text(text)
    _fails(_run(synth_root, "--config", "my.toml"), capsys, message)
    assert not (in_tmp / "runs").exists()


def test_missing_config_file(synth_root, in_tmp, capsys):
    _fails(_run(synth_root, "--config", "nowhere.toml"), capsys, "asdx run: error: nowhere.toml: config file not found")
    assert not (in_tmp / "runs").exists()


def test_threads_must_be_positive(in_tmp, capsys):
    for value in ("0", "-3"):
        err = _fails(["--threads", value, "info"], capsys, f"asdx: error: --threads: must be >= 1, got {value}",
                     code=2)
        assert len(err.splitlines()) == 1


def test_unknown_flags_are_refused(synth_root, in_tmp, capsys):
    """A usage error: exit code 2, nothing on stdout, one error line that names the flag (after the usage
    text), no traceback, nothing written."""
    with pytest.raises(SystemExit) as caught:
        main(_run(synth_root, "--epochs", "2", "--bogus"))
    captured = capsys.readouterr()
    assert caught.value.code == 2 and captured.out == "" and "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("asdx") and "--bogus" in errors[0], captured.err
    assert captured.err.startswith("usage: asdx ") and captured.err.endswith(errors[0] + "\n")
    assert not (in_tmp / "runs").exists()


def test_run_help_lists_every_system_and_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for system in ("ae", "sera", "fusion", "proto"):
        assert f"\n    {system} " in text, system
    assert "planned" not in text
    with pytest.raises(SystemExit):
        main(["run", "ae", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--score {MSE,MAHALA}" in text and "--view {near,far,mid,w1}" in text and "--channel {0,1} alias of view" in text
    assert "--threshold-q X" in text and "--workers N" in text and "--seconds X" in text


def test_no_traceback_from_a_real_process(tmp_path):
    for argv, message in ((["--threads", "0", "info"], "asdx: error: --threads"),
                          (["run", "ae", "--epochs", "0"], "asdx run: error: epochs: must be >= 1")):
        done = subprocess.run([sys.executable, "-m", "asdx", *argv], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode in (1, 2) and message in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- evaluate

DEV, EVAL = ("fan", "valveEmu"), ("ToyDrone", "Sander")


def _oracle_submission(root, folder):
    """A submission of two dev and two eval machines whose scores rank every anomaly first."""
    for machine in resolve_machines(root, ",".join(DEV + EVAL)):
        clips = machine_clips(machine, "test")                  # eval labels: read from the ground-truth CSVs
        anomalous = np.array([clip.label == "anomaly" for clip in clips])
        target = np.array([clip.domain == "target" for clip in clips])
        assert anomalous.any() and (~anomalous).any()
        write_submission(folder, machine.name, [c.name for c in clips], anomalous + 0.1 * target,
                         anomalous.astype(int))


def test_evaluate_a_mixed_dev_and_eval_submission(synth_root, tmp_path, capsys):
    submission = tmp_path / "run" / "submission"
    _oracle_submission(synth_root, submission)
    before = sorted(p.name for p in submission.iterdir())
    assert main(["evaluate", "--submission", str(submission), "--data", str(synth_root)]) == 0
    out = capsys.readouterr().out
    assert "Ω = 1.0000" in out and all(machine in out for machine in DEV + EVAL)
    assert f"wrote {tmp_path / 'run' / 'submission_result.csv'}" in out     # next to the submission
    result = json.loads((tmp_path / "run" / "submission_result.json").read_text())
    assert result["official_score"] == 1.0 and sorted(result["machines"]) == sorted(DEV + EVAL)
    assert sorted(p.name for p in submission.iterdir()) == before          # nothing added inside it

    assert main(["evaluate", "--submission", str(submission), "--data", str(synth_root), "--machines", "Sander",
                 "--out", str(tmp_path / "elsewhere"), "--name", "one", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["official_score"] == 1.0 and "one_result.json" in captured.err
    assert (tmp_path / "elsewhere" / "one_result.csv").is_file()


def test_evaluate_errors_are_one_line_each(synth_root, tmp_path, capsys):
    submission = tmp_path / "run" / "submission"
    _oracle_submission(synth_root, submission)
    _fails(["evaluate", "--submission", str(submission), "--data", str(synth_root), "--split", "dev"], capsys,
           "asdx evaluate: error:")                                # only dev truth: eval machines are extra
    _fails(["evaluate", "--submission", str(tmp_path / "nothing"), "--data", str(synth_root)], capsys,
           "asdx evaluate: error:", "nothing")
    (tmp_path / "empty").mkdir()
    _fails(["evaluate", "--submission", str(tmp_path / "empty"), "--data", str(synth_root)], capsys,
           "asdx evaluate: error:", "no anomaly_score_")
    write_submission(tmp_path / "alien", "Drill", ["section_00_0000.wav"], [0.5], [0])
    _fails(["evaluate", "--submission", str(tmp_path / "alien"), "--data", str(synth_root)], capsys,
           "asdx evaluate: error: machines: no ground truth for Drill")
    (tmp_path / "a_file").write_text("")
    _fails(["evaluate", "--submission", str(submission), "--data", str(synth_root), "--out",
            str(tmp_path / "a_file")], capsys, "asdx evaluate: error:")
    assert not (tmp_path / "run" / "submission_result.csv").exists()


# ----------------------------------------------------------------------------- BEATs checkpoints

class NotAWeight:
    """Pickled by reference: torch.load(weights_only=True) refuses it."""


NOT_TORCH = "(not a file written by torch.save)"


def _not_checkpoints(folder) -> dict:
    """{path: the reason its one-line error gives}."""
    folder.mkdir(exist_ok=True)
    (folder / "junk.pt").write_bytes(b"\x00\x01 not a torch file" * 20)
    torch.save({"a": torch.zeros(2)}, folder / "dict.pt")
    torch.save(torch.zeros(3), folder / "tensor.pt")
    torch.save({"cfg": {}, "model": {"x": NotAWeight()}}, folder / "pickled.pt")
    torch.save({"cfg": {}, "model": {"fc.weight": torch.zeros(2, 2)}}, folder / "other_model.pt")
    torch.save({"a": 1}, folder / "legacy.pt", _use_new_zipfile_serialization=False)
    keys = ": expected a dict with 'cfg' and 'model'"
    return {folder / "junk.pt": NOT_TORCH, ROOT / "README.md": NOT_TORCH, folder / "dict.pt": keys,
            folder / "tensor.pt": keys, folder / "legacy.pt": keys,
            folder / "pickled.pt": ": it holds pickled Python objects",
            folder / "other_model.pt": ": its 'model' holds none of the BEATs weight names"}


def _one_line_without_torch_internals(err: str, path, reason: str) -> None:
    assert len(err.splitlines()) == 1, err
    assert f"{path} is not a BEATs checkpoint {reason}".replace(" :", ":") in err, err
    for internal in ("weights_only", "allow_pickle", "Traceback", "WeightsUnpickler", "file an issue"):
        assert internal not in err, err


def test_a_file_that_is_not_a_beats_checkpoint_is_one_line(synth_root, in_tmp, capsys):
    for path, reason in _not_checkpoints(in_tmp / "files").items():
        assert main(["beats", "--beats", str(path)]) == 1
        _one_line_without_torch_internals(capsys.readouterr().err, path, reason)
    for path in (in_tmp / "files" / "junk.pt", ROOT / "README.md"):
        for system in ("sera", "fusion", "proto"):
            assert main(["run", system, "--machine", "fan", "--data", str(synth_root), "--beats", str(path)]) == 1
            _one_line_without_torch_internals(capsys.readouterr().err, path, NOT_TORCH)
    assert not (in_tmp / "runs").exists()


def test_a_missing_checkpoint_file_is_not_called_not_given(synth_root, in_tmp, monkeypatch, capsys):
    monkeypatch.delenv("ASDX_BEATS", raising=False)
    assert main(["beats", "--beats", "nowhere.pt"]) == 1
    err = capsys.readouterr().err
    assert "--beats: BEATs checkpoint nowhere.pt does not exist" in err and "given" not in err
    assert len(err.splitlines()) == 1
    assert main(_run(synth_root)[:1] + ["sera", *_run(synth_root)[2:], "--beats", "nowhere.pt"]) == 1
    err = capsys.readouterr().err
    assert "nowhere.pt does not exist (sera_ft1 uses BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt1.pt" in err
    assert "given" not in err and "BEATs_iter3_plus_AS2M.pt" not in err


@pytest.mark.parametrize("system, wanted, other", [
    ("sera", "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt1.pt", "BEATs_iter3_plus_AS2M.pt"),
    ("fusion", "BEATs_iter3_plus_AS2M.pt", "finetuned"),
    ("proto", "BEATs_iter3_plus_AS2M.pt", "finetuned"),
])
def test_without_beats_each_system_names_its_own_checkpoint(system, wanted, other, synth_root, in_tmp, monkeypatch,
                                                            capsys):
    monkeypatch.delenv("ASDX_BEATS", raising=False)
    assert main(["run", system, "--machine", "fan", "--data", str(synth_root)]) == 1
    err = capsys.readouterr().err
    assert "No BEATs checkpoint given" in err and wanted in err and other not in err, err
    assert len(err.splitlines()) == 1
    assert not (in_tmp / "runs").exists()


# ----------------------------------------------------------------------------- NaN / inf samples

@pytest.fixture
def fan_copy(synth_root, tmp_path):
    """The fan machine of the shared set, copied (its clips may be spoiled), 6 train and 6 test clips."""
    import shutil

    root = tmp_path / "data"
    for split in ("train", "test"):
        source = synth_root / "dev_data" / "raw" / "fan" / split
        target = root / "dev_data" / "raw" / "fan" / split
        target.mkdir(parents=True)
        clips = sorted(source.glob("*.wav"))
        picked = clips[:6] if split == "train" else [c for c in clips if "anomaly" in c.name][:3] + \
            [c for c in clips if "normal" in c.name][:3]
        for clip in picked:
            shutil.copy(clip, target / clip.name)
    shutil.copy(synth_root / "dev_data" / "raw" / "fan" / "attributes_00.csv", root / "dev_data" / "raw" / "fan")
    return root


@pytest.mark.parametrize("split, bad", [("train", np.nan), ("test", np.inf), ("train", -np.inf)])
def test_a_float_wav_with_nan_or_inf_fails_before_any_folder(fan_copy, in_tmp, capsys, split, bad):
    import soundfile as sf

    clip = sorted((fan_copy / "dev_data" / "raw" / "fan" / split).glob("*.wav"))[1]
    audio, rate = sf.read(str(clip), dtype="float32", always_2d=True)
    audio = np.concatenate([audio, audio])                    # 2 s: the check reads 1 s blocks
    audio[rate + 5, 1] = bad                                   # in the second block, far channel
    sf.write(str(clip), audio, rate, subtype="FLOAT")
    _fails(_run(fan_copy, "--epochs", "1", "--quiet"), capsys,
           f"asdx run: error: {clip}: contains NaN or inf (first at channel 1, sample {rate + 5}).")
    assert [p.name for p in in_tmp.iterdir()] == ["data"]     # no runs/: no config.json, environment.json, run.log


def test_clean_float_wavs_pass_the_header_check(fan_copy):
    import soundfile as sf

    from asdx.data.loader import check_headers

    clips = sorted((fan_copy / "dev_data" / "raw" / "fan" / "train").glob("*.wav"))
    for clip in clips:
        audio, rate = sf.read(str(clip), dtype="float32", always_2d=True)
        sf.write(str(clip), audio, rate, subtype="DOUBLE" if clip == clips[0] else "FLOAT")
    assert len(check_headers(clips, 2)) == len(clips)


# ----------------------------------------------------------------------------- warnings

def test_a_warning_is_one_line_above_the_progress_bar(monkeypatch, capsys):
    import warnings

    from tqdm import tqdm

    import asdx.cli

    def warn_mid_bar(args):
        for i in tqdm(range(3), desc="clips", file=sys.stderr):
            if i == 1:
                warnings.warn("data/x.wav: mono file used as channel 0\n(near)", UserWarning)
        return 0

    before = warnings.showwarning
    monkeypatch.setattr(asdx.cli, "_cmd_info", warn_mid_bar)
    assert main(["info"]) == 0
    err = capsys.readouterr().err
    lines = [line.split("\r")[-1] for line in err.splitlines()]  # what a terminal shows of each line
    assert "asdx info: warning: data/x.wav: mono file used as channel 0 (near)" in lines
    assert "warnings.warn(" not in err and "UserWarning" not in err and "test_cli_errors.py" not in err
    assert warnings.showwarning is before                      # main() leaves the caller's display alone
