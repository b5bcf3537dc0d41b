"""System configuration: one dataclass per system; CLI flags and config-file keys come from it.

A config file (TOML, or YAML when PyYAML is installed) holds the same keys as
the flags (`--batch-size` <-> `batch_size`), at the top level or under a table
named after the system. Precedence: dataclass defaults < file < command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from pathlib import Path
from typing import Any


def add_config_arguments(parser: argparse.ArgumentParser, config_class) -> None:
    """One --flag per dataclass field; defaults stay None so that only given flags override."""
    group = parser.add_argument_group(f"{config_class.__name__} (also settable in --config)")
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        kind = type(field.default)
        if kind is bool:
            group.add_argument(flag, dest=field.name, default=None, action=argparse.BooleanOptionalAction,
                               help=f"default {field.default}")
        else:
            group.add_argument(flag, dest=field.name, default=None, type=kind, metavar=kind.__name__.upper(),
                               help=f"default {field.default!r}")


def read_config_file(path, system: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found.")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as error:
            raise ValueError(f"{path}: YAML configs need PyYAML (pip install pyyaml), or use TOML.") from error
        data = yaml.safe_load(text) or {}
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: not valid TOML ({error}).") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of keys, got {type(data).__name__}.")
    section = data.get(system, {}) if isinstance(data.get(system), dict) else {}
    flat = {k: v for k, v in data.items() if not isinstance(v, dict)}
    return {key.replace("-", "_"): value for key, value in {**flat, **section}.items()}


def build_config(config_class, file_values: dict[str, Any], cli_values: dict[str, Any], source: str = "config"):
    """The dataclass from defaults < file values < CLI values; unknown keys raise naming them."""
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(file_values) - names)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)} for {config_class.__name__}; "
                         f"known: {', '.join(sorted(names))}.")
    values = {**file_values, **{k: v for k, v in cli_values.items() if k in names and v is not None}}
    return config_class(**values)
