"""asdx.config: flags and config-file keys generated from a dataclass, validated by pydantic."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pytest
import torch
from pydantic import Field

import asdx.config
from asdx.config import (add_config_arguments, build_config, config_dict, describe_field, read_config_file,
                         validate_fields)
from asdx.device import Device
from asdx.systems.ae import AEConfig
from asdx.systems.configs import SeraConfig

SYSTEMS = ("ae", "sera", "fusion", "proto")


@dataclass
class Toy:
    """Every kind of field the convention allows."""

    name: str = "toy"
    tag: str | None = None
    root: Path = Path("data")
    cache: Path | None = None
    machines: tuple[str, ...] = ("fan", "ToyCar")
    shuffle: bool = True
    mode: Literal["fast", "exact"] = field(default="fast", metadata={"help": "fast or exact search"})
    level: Literal[0, 1, 2] = 1
    count: Annotated[int, Field(ge=1)] = 3
    rate: Annotated[float, Field(gt=0, lt=1)] = field(default=0.5, metadata={"help": "share (50% = 0.5)"})

    def __post_init__(self):
        validate_fields(self)


def _parser(config_class=Toy) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy")
    add_config_arguments(parser, config_class)
    return parser


def _argv(config) -> list[str]:
    """The flags a user would type for every field of `config`."""
    argv = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def _toml(values: dict) -> str:
    def literal(value):
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(value, list):
            return "[" + ", ".join(literal(v) for v in value) + "]"
        return repr(value)

    return "".join(f"{key} = {literal(value)}\n" for key, value in values.items() if value is not None)


ODD = Toy(name="odd name", tag="v2", root=Path("/tmp/a b/data"), cache=Path("rel/cache"),
          machines=("Sander",), shuffle=False, mode="exact", level=2, count=7, rate=0.25)


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("config", [Toy(), ODD, Toy(tag="", machines=("a", "b", "c"), level=0)])
def test_command_line_round_trip(config):
    args = _parser().parse_args(_argv(config))
    assert all(isinstance(v, (str, list, bool)) for v in vars(args).values() if v is not None)  # kept as given
    assert build_config(Toy, {}, vars(args)) == config


@pytest.mark.parametrize("config", [Toy(), ODD])
def test_toml_and_yaml_round_trip(config, tmp_path):
    values = config_dict(config)
    assert values["root"] == str(config.root) and isinstance(values["machines"], list)
    toml = tmp_path / "toy.toml"
    toml.write_text(_toml(values))
    assert build_config(Toy, read_config_file(toml, "toy", ["toy"]), {}, str(toml)) == config
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump({"toy": values}))           # None stays None in YAML
    assert build_config(Toy, read_config_file(path, "toy", ["toy"]), {}, str(path)) == config


def test_types_come_from_the_annotations():
    config = build_config(Toy, {"root": "x/y", "machines": ["a"]}, {"cache": "c", "level": "2", "count": "9",
                                                                    "rate": "0.125", "shuffle": False})
    assert config.root == Path("x/y") and isinstance(config.cache, Path) and config.machines == ("a",)
    assert config.level == 2 and config.count == 9 and config.rate == 0.125 and config.shuffle is False
    assert Toy(root="p", machines=["m"]).root == Path("p")     # validate_fields converts for Python callers too
    assert Toy(root="p", machines=["m"]).machines == ("m",)
    assert describe_field(Toy, "count") == "an integer >= 1"
    assert describe_field(Toy, "rate") == "a number > 0 and < 1"
    assert describe_field(Toy, "mode") == "one of 'fast', 'exact'"
    assert describe_field(Toy, "tag") == "a string (or none)"
    assert describe_field(Toy, "machines") == "one or more strings"


def test_precedence_defaults_then_file_then_command_line(tmp_path):
    path = tmp_path / "ae.toml"
    path.write_text("epochs = 1\nscore = 'MSE'\nbatch-size = 8\n[ae]\nbatch_size = 64\nlr = 0.5\n"
                    "[sera]\nepochs = 99\nwhatever = 1\n")
    file_values = read_config_file(path, "ae", SYSTEMS)
    assert file_values == {"epochs": 1, "score": "MSE", "batch_size": 64, "lr": 0.5}   # [ae] wins; [sera] ignored
    config = build_config(AEConfig, file_values, {"batch_size": "32", "epochs": None, "data": "elsewhere"},
                          str(path))
    assert (config.epochs, config.score, config.batch_size, config.lr, config.n_mels) == (1, "MSE", 32, 0.5, 128)


# ----------------------------------------------------------------------------- messages

@pytest.mark.parametrize("text, message", [
    ('epochs = "ten"\n', "my.toml: epochs: expected an integer >= 1, got 'ten'"),
    ("epochs = 1.5\n", "my.toml: epochs: expected an integer >= 1, got 1.5"),     # never truncated to 1
    ("epochs = true\n", "my.toml: epochs: expected an integer >= 1, got True"),   # never read as 1
    ("[ae]\nvalidation_split = 1\n", "my.toml: validation_split: must be >= 0 and < 1, got 1"),
    ("channel = 2\n", "my.toml: channel: expected one of 0, 1 (or none), got 2"),
    ("score = 'mse'\n", "my.toml: score: expected one of 'MSE', 'MAHALA', got 'mse'"),
])
def test_bad_file_values_name_the_file_and_the_key(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    Path("my.toml").write_text(text)
    with pytest.raises(ValueError) as caught:
        build_config(AEConfig, read_config_file("my.toml", "ae", SYSTEMS), {}, "my.toml")
    assert str(caught.value) == message


def test_one_line_per_problem_from_the_command_line():
    with pytest.raises(ValueError) as caught:
        build_config(AEConfig, {"lr": 0}, {"hop_length": "0", "batch_size": "0", "epochs": "0"}, "my.toml")
    assert str(caught.value).splitlines() == [
        "epochs: must be >= 1, got 0 (from --epochs)",
        "batch_size: must be >= 1, got 0 (from --batch-size)",
        "my.toml: lr: must be > 0, got 0",
        "hop_length: must be >= 1, got 0 (from --hop-length)",
    ]


def test_one_line_per_field_even_with_several_bad_items():
    with pytest.raises(ValueError) as caught:
        build_config(Toy, {"machines": [1, 2], "tag": 3}, {"count": "0"}, "toy.yaml")
    assert str(caught.value).splitlines() == ["toy.yaml: tag: expected a string (or none), got 3",
                                              "toy.yaml: machines: expected one or more strings, got [1, 2]",
                                              "count: must be >= 1, got 0 (from --count)"]


def test_unknown_keys_and_tables(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text("epochs = 2\n[aee]\nlr = 0.1\n")
    with pytest.raises(ValueError, match=r"\[aee\] is not a system \(did you mean \[ae\]\?\); "
                                         r"known systems: ae, sera, fusion, proto"):
        read_config_file(path, "ae", SYSTEMS)
    with pytest.raises(ValueError, match="my.toml: unknown key.*learning_rate.*batchsize \\(did you mean batch_size"):
        build_config(AEConfig, {"learning_rate": 0.1, "batchsize": 3}, {}, "my.toml")
    path.write_text("epochs = 2\nepochs-x = 1\n[ae]\nbatch_size = 1\nbatch-size = 2\n")
    with pytest.raises(ValueError, match="'batch_size' and 'batch-size' are the same key"):
        read_config_file(path, "ae", SYSTEMS)
    path.write_text("epochs = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        read_config_file(path, "ae", SYSTEMS)
    with pytest.raises(FileNotFoundError, match="nowhere.toml"):
        read_config_file(tmp_path / "nowhere.toml", "ae", SYSTEMS)


def test_tables_of_the_other_known_systems_are_skipped(tmp_path):
    from asdx.systems import SYSTEMS as BUILT

    path = tmp_path / "all.toml"
    path.write_text("[ae]\nepochs = 3\n[fusion]\nk = 1\n")
    assert read_config_file(path, "ae", BUILT) == {"epochs": 3}
    with pytest.raises(ValueError, match=r"\[fusion\] is not a system.*known systems: ae, sera"):
        read_config_file(path, "ae", ["ae", "sera"])


def test_aeconfig_stays_a_plain_dataclass_that_checks_itself():
    assert AEConfig(epochs=2).epochs == 2 and AEConfig().device == "auto"
    assert dataclasses.asdict(AEConfig(channel=1))["view"] == "far"  # channel is view's alias
    for kwargs, message in [({"epochs": 0}, "epochs: must be >= 1, got 0"),
                            ({"batch_size": 0}, "batch_size: must be >= 1"),
                            ({"lr": 0.0}, "lr: must be > 0"),
                            ({"validation_split": 1.0}, r"validation_split: must be >= 0 and < 1"),
                            ({"n_fft": 1}, "n_fft: must be >= 2"),
                            ({"channel": 2}, "channel: expected one of 0, 1"),
                            ({"score": "L2"}, "score: expected one of 'MSE', 'MAHALA'"),
                            ({"epochs": 2.5}, "epochs: expected an integer >= 1, got 2.5")]:
        with pytest.raises(ValueError, match=message):
            AEConfig(**kwargs)


def test_help_shows_choices_ranges_and_defaults():
    text = _parser(AEConfig).format_help()
    assert "--score {MSE,MAHALA}" in text and "--channel {0,1}" in text and "--view {near,far,mid,w1}" in text
    flat = " ".join(text.split())
    assert "alias of view, kept for old commands and configs: 0 = near, 1 = far (default: none)" in flat
    assert "--epochs N training epochs; >= 1 (default: 100)" in flat
    assert "(default: auto)" in flat
    toy = " ".join(_parser().format_help().split())
    assert "--shuffle, --no-shuffle" in toy and "--machines TEXT [TEXT ...]" in toy
    assert "fast or exact search (default: fast)" in toy and "share (50% = 0.5); > 0 and < 1" in toy


@dataclass
class Spelled:
    """Field metadata that RunOptions uses: other flag names, a command-line default, fields off the command line."""

    system: str = field(metadata={"cli": False})
    machines: str = field(default="all", metadata={"help": "machines", "flags": ("--machine", "--machines"),
                                                   "nargs": "+", "metavar": "M"})
    cache_dir: Path | None = field(default=None, metadata={"help": "cache", "flags": ("--cache",),
                                                           "default_help": "<out>/cache"})
    workers: Annotated[int, Field(ge=0)] = field(default=0, metadata={"help": "workers", "cli_default": lambda: 3})


def test_field_metadata_spells_the_flags():
    parser = _parser(Spelled)
    text = " ".join(parser.format_help().split())
    assert "--system" not in text and "--machine M [M ...], --machines M [M ...]" in text
    assert "--cache PATH cache (default: <out>/cache)" in text and "workers; >= 0 (default: 3)" in text
    args = parser.parse_args(["--machines", "a", "b", "--cache", "c"])
    assert (args.machines, args.cache_dir, args.workers) == (["a", "b"], "c", 3)
    config = build_config(Spelled, {}, {**vars(args), "system": "ae", "machines": "a,b"})
    assert config == Spelled("ae", "a,b", Path("c"), 3)
    with pytest.raises(ValueError) as caught:
        build_config(Spelled, {}, {"system": "ae", "cache_dir": 1, "workers": "-1"})
    assert str(caught.value).splitlines() == ["cache_dir: expected a path (or none), got 1 (from --cache)",
                                              "workers: must be >= 0, got -1 (from --workers)"]


def test_toml_reader_falls_back_to_tomli_without_failing_at_import(monkeypatch, tmp_path):
    """On Python 3.10 the module imports tomli; without it, importing still works and TOML reading says why."""
    path = tmp_path / "c.toml"
    path.write_text("epochs = 2\n")
    monkeypatch.setattr(sys, "version_info", (3, 10, 0))
    monkeypatch.setitem(sys.modules, "tomli", None)             # `import tomli` raises ImportError
    try:
        module = importlib.reload(asdx.config)
        assert module.tomllib is None
        with pytest.raises(ValueError, match="need tomli"):
            module.read_config_file(path, "ae", SYSTEMS)
    finally:
        monkeypatch.undo()
        importlib.reload(asdx.config)
    assert asdx.config.read_config_file(path, "ae", SYSTEMS) == {"epochs": 2}


# ----------------------------------------------------------------------------- devices

def test_device_names_are_checked_and_resolved():
    assert Device("cpu").resolve() == torch.device("cpu")
    assert Device(" CPU ") == "cpu" and Device("cuda:1") == "cuda:1"
    assert Device("auto").resolve().type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "", "cuda:x", "cpu:0:1", "cuda:"):
        with pytest.raises(ValueError, match="device: expected auto, cpu, cuda, cuda:N or mps"):
            Device(bad)


def test_a_device_field_is_checked_and_holds_a_plain_string():
    """Plain str values: config.json, config files and checkpoints (torch.load(weights_only=True)) hold a name,
    not an asdx class."""
    config = SeraConfig(device="CUDA:1")
    assert config.device == "cuda:1" and type(config.device) is str and type(AEConfig().device) is str
    assert config_dict(config)["device"] == "cuda:1"
    for source, values, cli, message in [
            ("my.toml", {"device": "gpu"}, {}, "my.toml: device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
            ("my.toml", {"device": True}, {}, "my.toml: device: expected auto, cpu, cuda, cuda:N or mps, got True"),
            ("f", {}, {"device": "gpu"}, "device: expected auto, cpu, cuda, cuda:N or mps, got gpu (from --device)")]:
        for config_class in (AEConfig, SeraConfig):
            with pytest.raises(ValueError) as caught:
                build_config(config_class, values, cli, source)
            assert str(caught.value) == message
    with pytest.raises(ValueError, match="device: expected auto"):
        AEConfig(device="gpu")
    assert "--device DEVICE" in _parser(AEConfig).format_help()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError) as caught:
        Device("cuda:1").resolve()
    assert str(caught.value).startswith(f"device: 'cuda:1' requested but torch sees no CUDA GPU "
                                        f"(torch {torch.__version__}, built for ")


def test_shared_settings_have_one_help_text_and_each_config_keeps_its_order():
    """A setting several systems share (configs.device_field, ...) reads the same in every `asdx run <system>
    --help`; declaring it once must not reorder a config's fields (its flags and config.json keys)."""
    from asdx.systems.configs import AEConfig, FusionConfig, ProtoConfig, SeraConfig

    configs = (AEConfig, SeraConfig, FusionConfig, ProtoConfig)
    for name in ("device", "weight_decay", "arcface_s", "arcface_m", "folds"):
        helps = {f.metadata["help"] for c in configs for f in dataclasses.fields(c) if f.name == name}
        assert len(helps) == 1, (name, helps)
    names = {c: [f.name for f in dataclasses.fields(c)] for c in configs}
    assert names[AEConfig][:5] == ["epochs", "batch_size", "lr", "validation_split", "seed"]
    assert names[SeraConfig][:2] == ["beats", "layer"] and names[SeraConfig][-3:] == [
        "device", "embed_batch_size", "feature_memory_mb"]
    assert names[ProtoConfig][-6:] == ["device", "embed_batch_size", "feature_memory_mb", "threshold_scores",
                                       "folds", "balance_domains"]
