"""Submission CSVs: exact format, validation with file and line, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from asdx import submission
from asdx._atomic import atomic_write_text

NAMES = ["section_00_0000.wav", "section_00_0001.wav", "section_00_0002.wav"]


def test_round_trip_and_exact_format(tmp_path):
    scores = np.array([0.3084583878517151, -1e-05, 12.5])
    score_path, decision_path = submission.write_submission(tmp_path, "ToyCar", NAMES, scores, [1, 0, True])
    assert score_path.name == "anomaly_score_ToyCar_section_00_test.csv"
    assert decision_path.name == "decision_result_ToyCar_section_00_test.csv"
    assert score_path.read_text() == ("section_00_0000.wav,0.3084583878517151\n"
                                      "section_00_0001.wav,-1e-05\nsection_00_0002.wav,12.5\n")
    assert decision_path.read_text() == "section_00_0000.wav,1\nsection_00_0001.wav,0\nsection_00_0002.wav,1\n"
    read = submission.read_scores(score_path)
    assert read.names == tuple(NAMES) and read.values.dtype == np.float64
    np.testing.assert_array_equal(read.values, scores)          # repr round-trips floats exactly
    decisions = submission.read_decisions(decision_path)
    assert decisions.values.tolist() == [1, 0, 1]
    assert submission.submission_machines(tmp_path) == ["ToyCar"]
    assert oct(score_path.stat().st_mode & 0o777) == oct(0o644)


def test_decisions_may_be_written_as_floats(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a.wav,1.0\nb.wav,0.0\n")
    assert submission.read_decisions(path).values.tolist() == [1, 0]


@pytest.mark.parametrize("text, line, message", [
    ("a.wav,0.5\nb.wav\n", 2, "expected 2 fields"),
    ("a.wav,0.5\nb.wav,0.1,0.2\n", 2, "expected 2 fields"),
    ("name,score\na.wav,0.5\n", 1, "not a number \\(the file must have no header\\)"),
    ("a.wav,0.5\nb.wav,nan\n", 2, "not finite"),
    ("a.wav,inf\n", 1, "not finite"),
    ("a.wav,0.5\nb.wav,0.1\na.wav,0.2\n", 3, "duplicate clip name 'a.wav' \\(first on line 1\\)"),
    ("a.wav,0.5\n\nb.wav,0.1\n", 2, "expected 2 fields"),
    (",0.5\n", 1, "is empty"),
    (" a.wav,0.5\n", 1, "whitespace"),
    ('"a,b.wav",0.5\n', 1, "comma"),
])
def test_malformed_score_files_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "anomaly_score_fan_section_00_test.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{path.name}, line {line}: .*{message}"):
        submission.read_scores(path)


@pytest.mark.parametrize("value", ["2", "0.5", "-1", "yes", "nan"])
def test_decisions_outside_0_1_are_rejected(tmp_path, value):
    path = tmp_path / "decision_result_fan_section_00_test.csv"
    path.write_text(f"a.wav,0\nb.wav,{value}\n")
    with pytest.raises(ValueError, match=f"{path.name}, line 2: the decision"):
        submission.read_decisions(path)


def test_empty_and_absent_files(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(ValueError, match="e.csv: has no rows"):
        submission.read_scores(tmp_path / "e.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        submission.read_scores(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"a.wav,\xff\xfe\n")
    with pytest.raises(ValueError, match="bin.csv: not UTF-8"):
        submission.read_scores(tmp_path / "bin.csv")


@pytest.mark.parametrize("names, scores, decisions, message", [
    (NAMES, [0.1, 0.2], [0, 1, 0], "scores: length 2 does not match the 3 names"),
    (NAMES, [0.1, np.inf, 0.3], [0, 1, 0], "scores: contains NaN or inf"),
    (NAMES, [0.1, 0.2, 0.3], [0, 2, 0], "decisions: values must be 0 or 1"),
    (NAMES, [0.1, 0.2, 0.3], [0, 1], "decisions: length 2"),
    (["a.wav", "a.wav"], [0.1, 0.2], [0, 1], "names\\[1\\]: 'a.wav' is duplicated"),
    (["a,b.wav"], [0.1], [0], "names\\[0\\]: .* comma"),
    (["a.wav", ""], [0.1, 0.2], [0, 1], "names\\[1\\]: '' is empty"),
    ("a.wav", [0.1], [0], "names: must be a sequence"),
])
def test_bad_input_writes_nothing(tmp_path, names, scores, decisions, message):
    with pytest.raises(ValueError, match=message):
        submission.write_submission(tmp_path, "fan", names, scores, decisions)
    assert list(tmp_path.iterdir()) == []


def test_bad_machine_name(tmp_path):
    with pytest.raises(ValueError, match="machine: '../fan'"):
        submission.write_scores(tmp_path, "../fan", NAMES, [0.1, 0.2, 0.3])


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = submission.write_scores(tmp_path, "fan", NAMES, [0.1, 0.2, 0.3])
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        submission.write_scores(tmp_path, "fan", NAMES, [0.4, 0.5, 0.6])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_atomic_write_cleans_up_when_writing_fails(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(target, "caf\udce9\n")      # a lone surrogate cannot be encoded
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_text(tmp_path / "missing" / "x.csv", "x")
