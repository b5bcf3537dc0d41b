"""System configuration: one dataclass per system; CLI flags and config-file keys come from it.

The convention (asdx.systems.configs.AEConfig is the model to copy; a system's config lives in that
light module, not beside the system, so that building the command line imports no torch):
  - a plain stdlib ``@dataclass`` with a default for every field;
  - the annotation is the type: int, float, str, bool, ``str | None``, ``Path``,
    ``Path | None``, ``tuple[str, ...]``, or ``Literal[...]`` for a fixed set of choices;
  - a range goes in ``Annotated[int, Field(ge=1)]`` (pydantic ``Field`` or the
    ``annotated_types`` markers ``Ge``/``Gt``/``Le``/``Lt``/``Interval``);
  - help text goes in ``dataclasses.field(default=..., metadata={"help": "..."})``;
  - ``__post_init__`` calls :func:`validate_fields`, so Python callers get the
    same checks and messages as the command line;
  - a torch device is an asdx.device.Device field (its spelling checked here, resolved by the runner).
The run options (asdx.options.RunOptions) follow the same convention; their metadata may also
set the flag's spelling ("flags", "nargs", "metavar"), a command-line default ("cli_default")
and keep a field off the command line ("cli": False).

Validation is pydantic's (``TypeAdapter(config_class)``), a well-kept library,
so values from TOML/YAML/the command line are converted and checked the same way;
this module only turns its errors into one line per problem that names the key
and where the value came from. A config file (TOML, or YAML when PyYAML is
installed) holds the same keys as the flags (``--batch-size`` <-> ``batch_size``),
at the top level or under a table named after the system. Precedence: dataclass
defaults < file < command line. Nothing here creates files or folders.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import sys
import types
import typing
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, Union

import annotated_types
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from asdx.device import Device

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    try:
        import tomli as tomllib
    except ImportError:  # reported when a TOML file is read, not at import
        tomllib = None

__all__ = ["add_config_arguments", "build_config", "config_dict", "describe_field", "read_config_file",
           "validate_fields"]


# ----------------------------------------------------------------------------- reading the annotations

@dataclasses.dataclass(frozen=True)
class _FieldSpec:
    """What the annotation of one config field says, in the pieces asdx needs."""

    name: str
    hint: Any                              # the full annotation (with Annotated), what pydantic validates
    base: Any                              # the type without Annotated and without `| None`
    nullable: bool
    constraints: tuple[tuple[str, Any], ...]   # ("ge", 1), ("lt", 1.0), ...
    help: str
    default: Any
    flags: tuple[str, ...]                 # ("--batch-size",); metadata "flags" may spell them otherwise
    metadata: Any                          # the field's metadata (help, default_help, cli, nargs...)


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _constraints(metadata) -> list[tuple[str, Any]]:
    found = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            found += _constraints(item.metadata)
        elif isinstance(item, annotated_types.GroupedMetadata):   # Interval(ge=0, lt=1) -> Ge, Lt
            found += _constraints(list(item))
        else:
            for key in ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "pattern"):
                value = getattr(item, key, None)
                if value is not None:
                    found.append((key, value))
    return found


def _description(metadata) -> str:
    return next((item.description for item in metadata if isinstance(item, FieldInfo) and item.description), "")


@functools.lru_cache(maxsize=None)
def _specs(config_class) -> dict[str, _FieldSpec]:
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise TypeError(f"config_class: expected a dataclass, got {config_class!r}.")
    hints = typing.get_type_hints(config_class, include_extras=True)
    specs = {}
    for field in dataclasses.fields(config_class):
        if not field.init:
            continue
        hint = hints[field.name]
        base, metadata = hint, []
        while typing.get_origin(base) is Annotated:
            base, *extra = typing.get_args(base)
            metadata += extra
        nullable = False
        if _is_union(base) and type(None) in typing.get_args(base):
            members = [a for a in typing.get_args(base) if a is not type(None)]
            nullable = True
            base = members[0] if len(members) == 1 else Union[tuple(members)]
            while typing.get_origin(base) is Annotated:
                base, *extra = typing.get_args(base)
                metadata += extra
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = dataclasses.MISSING
        specs[field.name] = _FieldSpec(field.name, hint, base, nullable, tuple(_constraints(metadata)),
                                       field.metadata.get("help", "") or _description(metadata), default,
                                       tuple(field.metadata.get("flags", (_flag(field.name),))), field.metadata)
    return specs


@functools.lru_cache(maxsize=None)
def _adapter(config_class) -> TypeAdapter:
    return TypeAdapter(config_class)


@functools.lru_cache(maxsize=None)
def _field_adapter(config_class, name: str) -> TypeAdapter:
    return TypeAdapter(_specs(config_class)[name].hint)


def _choices(spec: _FieldSpec) -> tuple | None:
    return typing.get_args(spec.base) if typing.get_origin(spec.base) is Literal else None


def _item_type(spec: _FieldSpec):
    """The element type of a `tuple[X, ...]` field, else None."""
    if typing.get_origin(spec.base) is tuple:
        args = typing.get_args(spec.base)
        return args[0] if args else str
    return None


def _bare(tp):
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


_NOUNS = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
          bool: ("true or false", "true/false values"), Path: ("a path", "paths"),
          Device: (Device.EXPECTED, "devices")}


def _noun(tp, plural: bool = False) -> str:
    tp = _bare(tp)
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    for known, (one, many) in _NOUNS.items():
        if tp is known or (isinstance(tp, type) and issubclass(tp, PurePath) and known is Path):
            return many if plural else one
    name = getattr(tp, "__name__", str(tp))
    return f"{name} values" if plural else f"a {name}"


_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "multiple_of": "a multiple of",
            "min_length": "at least this many items:", "max_length": "at most this many items:",
            "pattern": "matching"}


def _constraint_text(spec: _FieldSpec) -> str:
    """'>= 1', '>= 0 and < 1', '' when unconstrained."""
    return " and ".join(f"{_SYMBOLS[key]} {value}" for key, value in spec.constraints)


def describe_field(config_class, name: str) -> str:
    """What a field accepts, in words: 'an integer >= 1', 'one of 'MSE', 'MAHALA'', 'a list of strings'."""
    spec = _specs(config_class)[name]
    item = _item_type(spec)
    text = f"one or more {_noun(item, plural=True)}" if item is not None else _noun(spec.base)
    if spec.constraints:
        text += " " + _constraint_text(spec)
    if spec.nullable:
        text += " (or none)"
    return text


# ----------------------------------------------------------------------------- the messages

# pydantic error types that mean "right type, out of range": the message names the range.
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of",
                 "too_short", "too_long", "string_pattern_mismatch"}


def _shown(value, from_cli: bool) -> str:
    """A value as the user wrote it: flags as typed, file values as TOML/Python would show them."""
    if from_cli:
        return " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
    return repr(value)


def _problem(config_class, name: str, error_type: str, value, from_cli: bool) -> str:
    spec = _specs(config_class)[name]
    if error_type == "missing":
        return f"{name}: required ({describe_field(config_class, name)})"
    if error_type in _RANGE_ERRORS and spec.constraints:
        return f"{name}: must be {_constraint_text(spec)}, got {_shown(value, from_cli)}"
    return f"{name}: expected {describe_field(config_class, name)}, got {_shown(value, from_cli)}"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_bool_type(tp) -> bool:
    tp = _bare(tp)
    if tp is bool:
        return True
    if typing.get_origin(tp) is Literal:
        return any(isinstance(c, bool) for c in typing.get_args(tp))
    return _is_union(tp) and any(_is_bool_type(a) for a in typing.get_args(tp))


def _bool_mistakes(config_class, values: dict[str, Any]) -> list[str]:
    """Names whose value is a bool but whose field is not: pydantic would read `epochs = true` as 1."""
    wrong = []
    for name, value in values.items():
        spec = _specs(config_class)[name]
        item = _item_type(spec)
        if item is not None:
            if isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value) \
                    and not _is_bool_type(item):
                wrong.append(name)
        elif isinstance(value, bool) and not _is_bool_type(spec.base):
            wrong.append(name)
    return wrong


def validate_fields(config) -> None:
    """Checks (and converts, e.g. str -> Path) every field of a config instance; raises ValueError.

    Call it from the dataclass's ``__post_init__``: ``AEConfig(epochs=0)`` then fails
    with the same message as ``--epochs 0``. It validates field by field, so it
    never constructs the dataclass again.
    """
    config_class = type(config)
    problems = []
    values = {name: getattr(config, name) for name in _specs(config_class)}
    wrong_bools = set(_bool_mistakes(config_class, values))
    for name, value in values.items():
        if name in wrong_bools:
            problems.append(_problem(config_class, name, "type", value, False))
            continue
        try:
            converted = _field_adapter(config_class, name).validate_python(value)
        except ValidationError as error:
            problems.append(_problem(config_class, name, error.errors()[0]["type"], value, False))
            continue
        if converted is not value:
            object.__setattr__(config, name, converted)   # also for frozen dataclasses
    if problems:
        raise ValueError("\n".join(problems))


# ----------------------------------------------------------------------------- command-line flags

def _metavar(spec: _FieldSpec) -> str:
    choices = _choices(spec)
    if choices is not None:
        return "{" + ",".join(str(c) for c in choices) + "}"
    item = _item_type(spec)
    tp = _bare(item if item is not None else spec.base)
    if typing.get_origin(tp) is Literal:
        return "{" + ",".join(str(c) for c in typing.get_args(tp)) + "}"
    if tp is int:
        return "N"
    if tp is float:
        return "X"
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "PATH"
    if tp is Device:
        return "DEVICE"
    return "TEXT"


def _default_text(value) -> str:
    if value is dataclasses.MISSING:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return str(value)


def add_config_arguments(parser: argparse.ArgumentParser, config_class, title: str | None = None):
    """One ``--flag`` per dataclass field (underscores -> dashes); returns the argument group.

    Values are kept as the strings given (pydantic converts them in build_config), and
    every default is None so that only the flags given override the file and the
    dataclass. Booleans are ``--x/--no-x``; tuple fields take one or more values.
    The help shows the field's help, its range or choices, and its default (or the field's
    metadata "default_help", for a default that is computed, e.g. "<out>/cache" for None).
    Other metadata: "flags" (the option strings, e.g. ("--machine", "--machines")), "nargs",
    "metavar", "cli_default" (a value, or a function of none, that the command line uses instead of the
    dataclass default, e.g. $ASDX_DATA) and "cli": False (no flag: the field is set another way).
    """
    group = parser.add_argument_group(title or f"{config_class.__name__} (also settable in --config)")
    for name, spec in _specs(config_class).items():
        meta = spec.metadata
        if not meta.get("cli", True):
            continue
        default = meta.get("cli_default")
        default = default() if callable(default) else default
        parts = [spec.help] if spec.help else []
        if spec.constraints:
            parts.append(_constraint_text(spec))
        text = "; ".join(parts)
        shown = meta.get("default_help") or _default_text(spec.default if default is None else default)
        text = (text + " " if text else "") + f"(default: {shown})"
        text = text.replace("%", "%%")     # argparse formats help with %
        if _is_bool_type(spec.base) and _choices(spec) is None:
            group.add_argument(*spec.flags, dest=name, default=default, action=argparse.BooleanOptionalAction,
                               help=text)
        else:
            group.add_argument(*spec.flags, dest=name, default=default, metavar=meta.get("metavar", _metavar(spec)),
                               help=text, nargs=meta.get("nargs", "+" if _item_type(spec) is not None else None))
    return group


def _from_cli(spec: _FieldSpec, value):
    """Command-line strings for Literal choices that are not strings (`--channel 1` -> 1)."""
    choices = _choices(spec)
    if choices is None or not isinstance(value, str):
        return value
    return next((c for c in choices if not isinstance(c, str) and str(c) == value), value)


# ----------------------------------------------------------------------------- config files

def read_config_file(path, system: str, known_systems) -> dict[str, Any]:
    """The keys for `system` from a TOML (or .yaml/.yml) file: top-level keys, then its `[system]` table.

    A table named after another of `known_systems` (e.g. asdx.systems.SYSTEMS) is ignored (one file
    may hold several systems); a table named after no known system is an error that lists them.
    Dashes in keys become underscores. Values are returned as read; build_config
    validates them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found.")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as error:
            raise ValueError(f"{path}: YAML configs need PyYAML (pip install pyyaml), or use TOML.") from error
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML ({' '.join(str(error).split())}).") from None
        data = {} if data is None else data
    else:
        if tomllib is None:  # pragma: no cover - Python 3.10 without tomli
            raise ValueError(f"{path}: TOML configs on Python 3.10 need tomli (pip install tomli).")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: not valid TOML ({error}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of keys, got {type(data).__name__}.")
    known = list(known_systems)
    tables = {key: value for key, value in data.items() if isinstance(value, dict)}
    strangers = [key for key in tables if key not in known]
    if strangers:
        close = difflib.get_close_matches(strangers[0], known, n=1)
        hint = f" (did you mean [{close[0]}]?)" if close else ""
        raise ValueError(f"{path}: [{strangers[0]}] is not a system{hint}; known systems: {', '.join(known)}. "
                         "Put the keys at the top level or under [<system>].")
    values: dict[str, Any] = {}
    for scope in ({k: v for k, v in data.items() if k not in tables}, tables.get(system, {})):
        seen: dict[str, str] = {}
        for key, value in scope.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: key {key!r} is not a name.")
            name = key.replace("-", "_")
            if name in seen:
                raise ValueError(f"{path}: {seen[name]!r} and {key!r} are the same key.")
            seen[name] = key
            values[name] = value        # the system's table overrides the top level
    return values


def build_config(config_class, file_values: dict[str, Any] | None = None, cli_values: dict[str, Any] | None = None,
                 source: str = "config file"):
    """The dataclass instance from defaults < file_values < cli_values, validated by pydantic.

    file_values: keys read by read_config_file (`source` names the file in messages);
    unknown keys are an error naming them. cli_values: e.g. ``vars(args)``; keys that
    are not fields and values that are None are ignored. Raises one ValueError with
    one line per problem, e.g. ``my.toml: epochs: expected an integer >= 1, got 'ten'``
    or ``hop_length: must be >= 1, got 0 (from --hop-length)``.
    """
    specs = _specs(config_class)
    file_values = dict(file_values or {})
    unknown = [key for key in file_values if key not in specs]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(specs), n=1)
            hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
        raise ValueError(f"{source}: unknown key(s) {', '.join(hints)} for {config_class.__name__}; "
                         f"known: {', '.join(specs)}.")
    cli = {name: _from_cli(specs[name], value) for name, value in (cli_values or {}).items()
           if name in specs and value is not None}
    values = {**file_values, **cli}

    def origin(name: str, line: str) -> str:
        if name in cli:
            return f"{line} (from {specs[name].flags[0]})"
        if name in file_values:
            return f"{source}: {line}"
        return f"{config_class.__name__} default: {line}"

    problems = {name: origin(name, _problem(config_class, name, "type", values[name], name in cli))
                for name in _bool_mistakes(config_class, values)}
    try:
        config = _adapter(config_class).validate_python({k: v for k, v in values.items() if k not in problems})
    except ValidationError as error:
        for item in error.errors():
            if not item["loc"]:                # raised by __post_init__ (checks across fields)
                cause = (item.get("ctx") or {}).get("error")
                problems.setdefault("", f"{config_class.__name__}: {cause if cause else item['msg']}")
                continue
            name = str(item["loc"][0])
            if name in specs:
                value = values.get(name, specs[name].default)
                problems.setdefault(name, origin(name, _problem(config_class, name, item["type"], value,
                                                                name in cli)))
    else:
        if not problems:
            return config
    order = [*specs, ""]                           # one line per problem, in field order
    raise ValueError("\n".join(problems[name] for name in sorted(problems, key=order.index)))


def config_dict(config) -> dict[str, Any]:
    """A config instance as JSON/TOML-ready values (Path -> str, tuple -> list), e.g. for config.json."""
    return _adapter(type(config)).dump_python(config, mode="json")
