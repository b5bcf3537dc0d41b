"""The command line's own texts and forms: help without torch, a description per command, one list syntax."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from asdx.cli import build_parser, main

COMMANDS = ("demo", "run", "evaluate", "score", "report", "compare", "beats", "synth", "info")


def test_help_and_argument_errors_import_neither_torch_nor_sklearn():
    """On a busy host importing torch and scikit-learn took 15-21 s: help and argument errors must not need them."""
    code = """
import contextlib, io, sys
from asdx.cli import main
calls = [["--help"], ["run", "--help"], *[["run", s, "--help"] for s in ("ae", "sera", "fusion", "proto")],
         *[[c, "--help"] for c in ("demo", "evaluate", "score", "report", "compare", "beats", "synth", "info")],
         ["run", "ae", "--bogus"], ["run", "ae", "--epochs"], ["run", "nope"], ["evaluate"], ["--threads", "0", "info"],
         ["run", "ae", "--epochs", "0", "--data", "nowhere"], ["run", "sera", "--layer", "-1", "--machine", ","]]
for argv in calls:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    assert code in (0, 1, 2), (argv, code)
heavy = sorted(m for m in ("torch", "sklearn", "scipy", "faiss", "matplotlib") if m in sys.modules)
print(" ".join(heavy))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [], f"imported {done.stdout.strip()} (stderr: {done.stderr[-500:]})"


def test_every_command_has_a_description(capsys):
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == set(COMMANDS)
    for name, sub in commands.items():
        assert sub.description and len(sub.description) > 40, name


def test_the_demo_help_says_it_runs_all_five_systems(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = " ".join(capsys.readouterr().out.split())
    assert "run all five systems" in top and "run ae," not in top
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")   # argparse wraps after hyphens
    assert "ae, sera, fusion, proto and beam" in text and "random-tiny" in text


def test_cache_help_names_its_real_default(capsys):
    with pytest.raises(SystemExit):
        main(["run", "sera", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--cache PATH feature cache folder of frozen-backbone systems (default: <out>/cache)" in text
    assert "unset" not in text.split("--cache", 1)[1].split("--", 1)[0]


def test_config_help_says_yaml_needs_the_yaml_extra(capsys):
    with pytest.raises(SystemExit):
        main(["run", "ae", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "asdx[yaml]" in text


# ----------------------------------------------------------------------------- machine lists: one syntax everywhere

@pytest.mark.parametrize("given", [["fan,valveEmu"], ["fan", "valveEmu"], ["fan,", "valveEmu"], ["fan, valveEmu"]])
def test_run_synth_and_evaluate_read_machine_lists_alike(given, monkeypatch, tmp_path):
    """Commas, spaces or both, under --machine or --machines, in every command that takes a list."""
    import asdx.data.synth
    import asdx.evaluation
    import asdx.runner

    seen = {}

    def fake_run(options, config):
        seen["run"] = options.machines
        return None, None

    def fake_generate(out, machines, **_):
        seen["synth"] = machines
        return out

    def fake_truth(data, split, machines=None):
        seen["evaluate"] = machines
        raise ValueError("stop here")

    monkeypatch.setattr(asdx.runner, "run", fake_run)
    monkeypatch.setattr(asdx.data.synth, "generate", fake_generate)
    monkeypatch.setattr(asdx.evaluation, "dataset_ground_truth", fake_truth)
    for flag in ("--machine", "--machines"):
        assert main(["run", "ae", "--data", str(tmp_path), "--quiet", "--device", "cpu", flag, *given]) == 0
        assert seen.pop("run") == "fan,valveEmu"
        assert main(["synth", "--out", str(tmp_path / "d"), "--quiet", flag, *given]) == 0
        assert seen.pop("synth") == ["fan", "valveEmu"]
        assert main(["evaluate", "--submission", str(tmp_path), "--data", str(tmp_path), flag, *given]) == 1
        assert seen.pop("evaluate") == ["fan", "valveEmu"]


def test_an_empty_machine_list_is_one_error_line(tmp_path, capsys):
    assert main(["run", "ae", "--data", str(tmp_path), "--machine", ","]) == 1
    assert capsys.readouterr().err == "asdx run: error: --machine: no machine type given.\n"
    assert not (tmp_path / "runs").exists()


def test_the_default_run_name_is_unchanged_by_the_list_syntax(monkeypatch, tmp_path):
    """`--machine fan valveEmu` names its run like `--machine fan,valveEmu` always did: fan+valveEmu-seed<seed>."""
    import asdx.runner
    from asdx.rundir import RunDir

    names = []
    monkeypatch.setattr(asdx.runner, "run", lambda options, config: (names.append(RunDir.for_run(options, config).name),
                                                                     (None, None))[1])
    assert main(["run", "ae", "--data", str(tmp_path), "--device", "cpu", "--machine", "fan", "valveEmu"]) == 0
    assert names == ["fan+valveEmu-seed13711"]


def test_the_run_options_are_the_fields_of_runoptions(monkeypatch, tmp_path):
    """One declaration per run option: `asdx run`'s run options are made from asdx.options.RunOptions, whose
    Python checks say what the command line says."""
    import dataclasses

    import asdx.runner
    from asdx.options import RunOptions, default_workers

    seen = []
    monkeypatch.setattr(asdx.runner, "run", lambda options, config: (seen.append(options), (None, None))[1])
    monkeypatch.setenv("ASDX_DATA", str(tmp_path))
    assert main(["run", "ae", "--device", "cpu", "--seconds", "4", "--cache", "c", "--quiet", "--resume",
                 "--machines", "fan", "Sander"]) == 0
    assert seen.pop() == RunOptions(system="ae", machines="fan,Sander", data=tmp_path, seconds=4.0,
                                    cache_dir=Path("c"), progress=False, resume=True, workers=default_workers())
    assert main(["run", "ae", "--device", "cpu", "--data", "d", "--workers", "0"]) == 0
    assert seen.pop() == RunOptions(system="ae", data=Path("d"))                 # Python's defaults otherwise

    run_parser = next(a for a in build_parser()._actions if a.dest == "command").choices["run"]
    ae = next(a for a in run_parser._actions if a.dest == "system").choices["ae"]
    group = next(g for g in ae._action_groups if g.title == "run options (every system)")
    flags = {a.dest for a in group._group_actions}
    assert flags == {f.name for f in dataclasses.fields(RunOptions) if f.metadata.get("cli", True)}
    assert flags | {"system", "progress", "notes"} == {f.name for f in dataclasses.fields(RunOptions)}
    for kwargs, message in [({"seconds": 0}, "seconds: must be > 0, got 0"),
                            ({"threshold_q": 1.0}, "threshold_q: must be > 0 and < 1, got 1.0"),
                            ({"workers": -1}, "workers: must be >= 0, got -1")]:
        with pytest.raises(ValueError, match=message):
            RunOptions(system="ae", **kwargs)


def test_info_json_reports_the_pairing_checks(capsys):
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert isinstance(report["faiss_problems"], list) and "omp_wait_policy" in report
