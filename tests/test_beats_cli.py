"""`asdx beats`: the CLI path of a BEATs checkpoint (--beats / ASDX_BEATS / random-tiny)."""

from asdx.cli import main
from conftest import fixture_path


def test_missing_checkpoint_says_which_file_to_get(monkeypatch, capsys):
    monkeypatch.delenv("ASDX_BEATS", raising=False)
    assert main(["beats"]) == 1
    err = capsys.readouterr().err
    assert "BEATs_iter3_plus_AS2M.pt" in err and "--beats" in err and "ASDX_BEATS" in err


def test_random_tiny_is_marked_on_its_output(synth_root, capsys):
    wav = next((synth_root / "dev_data" / "raw" / "fan" / "test").glob("*.wav"))
    assert main(["beats", "--beats", "random-tiny", "--wav", str(wav)]) == 0
    out = capsys.readouterr().out
    assert "tokens (1," in out and "NOTE: BEATs random-tiny" in out


def test_environment_variable_names_the_checkpoint(monkeypatch, capsys):
    monkeypatch.setenv("ASDX_BEATS", str(fixture_path("beats_tiny.pt")))
    assert main(["beats"]) == 0
    out = capsys.readouterr().out
    assert "2 layers x 64 dims" in out and "NOTE" not in out
