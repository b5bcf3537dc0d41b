"""run() closes its run.log: a long-lived process running many runs leaks no file handles."""

import logging
import os
from pathlib import Path

import pytest

from asdx import runner
from asdx.runner import RunOptions, run
from asdx.systems.ae import AEConfig


@pytest.fixture(scope="module")
def one_machine(tmp_path_factory):
    from asdx.data import generate

    return generate(tmp_path_factory.mktemp("logs") / "data", machines="fan", seconds=1.0, n_source=8, n_target=2,
                    n_test=4, seed=0, progress=False)


def open_run_logs() -> list[str]:
    """run.log files this process holds open (Linux: /proc/self/fd)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc/self/fd to list open files")
    paths = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed between listing and reading (the listing's own descriptor)
            continue
        if target.endswith("run.log"):
            paths.append(target)
    return paths


def run_logger(run_dir: Path) -> logging.Logger:
    return logging.getLogger(f"asdx.run.{run_dir.resolve()}")


def options(data, out, name) -> RunOptions:
    return RunOptions(system="ae", machines="fan", data=data, out=out, name=name, progress=False)


def test_finished_runs_leave_no_handler_and_no_open_file(one_machine, tmp_path):
    before = open_run_logs()
    for name in ("first", "second"):
        run_dir, evaluation = run(options(one_machine, tmp_path, name), AEConfig(epochs=1))
        assert evaluation is not None
        assert run_logger(run_dir).handlers == []
        assert "run finished" in (run_dir / "run.log").read_text()
    assert open_run_logs() == before


def test_a_failed_run_closes_its_log_too(one_machine, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("planned failure")

    monkeypatch.setattr(runner, "run_machine", fail)
    before = open_run_logs()
    with pytest.raises(RuntimeError, match="planned failure"):
        run(options(one_machine, tmp_path, "failed"), AEConfig(epochs=1))
    run_dir = tmp_path / "ae" / "failed"
    assert run_logger(run_dir).handlers == []
    assert open_run_logs() == before
    assert "run failed: RuntimeError: planned failure" in (run_dir / "run.log").read_text()
