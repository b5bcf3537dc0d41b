"""`asdx score` names each scored file by its path as given, so files of one name in two folders stay apart."""

from __future__ import annotations

import csv
import shutil

import pytest

from asdx.cli import main
from asdx.data import generate


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    data = generate(root / "data", machines="fan", seconds=1.0, n_source=8, n_target=3, n_test=2, seed=1,
                    progress=False)
    assert main(["run", "ae", "--machine", "fan", "--data", str(data), "--out", str(root / "runs"), "--name", "r",
                 "--epochs", "1", "--quiet", "--workers", "0"]) == 0
    return root / "runs" / "ae" / "r", data


def test_same_names_in_two_folders_are_told_apart(ae_run, tmp_path, monkeypatch, capsys):
    run_dir, data = ae_run
    clips = sorted((data / "dev_data" / "raw" / "fan" / "test").glob("*.wav"))
    for folder, clip in (("a", clips[0]), ("b", clips[1])):
        (tmp_path / folder).mkdir()
        shutil.copy(clip, tmp_path / folder / "clip.wav")
    shutil.copy(clips[2], tmp_path / "single.wav")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["score", "--run", str(run_dir), "--machine", "fan", "--quiet", "--out", "scores.csv",
                 "a", "b/", "single.wav"]) == 0
    printed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [path for path, _, _ in printed] == ["a/clip.wav", "b/clip.wav", "single.wav"]
    assert printed[0][1] != printed[1][1]                      # two different clips, two scores
    with open("scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["path"], r["score"], r["decision"]) for r in rows] == [tuple(line) for line in printed]


def test_a_bad_file_does_not_shift_the_paths_of_the_others(ae_run, tmp_path, capsys):
    run_dir, data = ae_run
    clips = sorted((data / "dev_data" / "raw" / "fan" / "test").glob("*.wav"))[:2]
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio")
    capsys.readouterr()
    assert main(["score", "--run", str(run_dir), "--machine", "fan", "--quiet", str(clips[0]), str(garbage),
                 str(clips[1])]) == 1
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [str(clips[0]), str(clips[1])]
    assert "1 file(s) not scored" in captured.err and "garbage.wav" in captured.err
