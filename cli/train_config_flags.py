"""TrainConfig's flags, generated from its fields: `us8k train`, `us8k cv` and `us8k launch-training` share them.

One flag per `models.config.TrainConfig` field: its name is the field's (`--batch-size` for
batch_size) unless the field's metadata names another, its help is the metadata's with the
dataclass default appended, and its syntax follows the field's type: a bool is a --x/--no-x
switch, a tuple a comma-separated list, an int, float or str one value (of the metadata's choices,
if it lists some). Every flag's dest is the field's name and its default None, so a flag not given
leaves the value to `--config`'s file or the dataclass default (`config_from_flags`).
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from models.config import TrainConfig

VERBOSITIES = ("auto", "0", "1", "2")
CONFIG_GROUP = "the configuration (written to RUN/config.json; defaults as below, or --config's values)"


def csv_list(text: str) -> list[str]:
    """A comma-separated list of names (empty entries dropped)."""
    return [part for part in text.split(",") if part.strip()]


def int_list(text: str) -> list[int]:
    """A comma-separated list of integers (folds)."""
    return [int(part) for part in csv_list(text)]


def verbosity(text: str):
    """Keras's verbosity flag: auto, 0, 1 or 2."""
    if text not in VERBOSITIES:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(VERBOSITIES)}")
    return text if text == "auto" else int(text)


def flag_name(field: dataclasses.Field) -> str:
    return field.metadata.get("name", "--" + field.name.replace("_", "-"))


def _value_type(hint):
    """The field's type without None: `int | None` → int."""
    if isinstance(hint, types.UnionType):
        return next(option for option in typing.get_args(hint) if option is not type(None))
    return hint


def shown_default(value) -> str:
    """A default as the help states it: on/off, a comma-separated list, a number without trailing zeros."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _help(field: dataclasses.Field, default) -> str:
    stated = field.metadata.get("default_text") if default is None else shown_default(default)
    text = field.metadata["help"] + (f" (default {stated})" if stated else "")
    return text.replace("%", "%%")  # argparse formats help strings with %


def add_config_arguments(parser: argparse.ArgumentParser, *, exclude=()) -> None:
    """One flag per TrainConfig field but those named in `exclude` (`us8k cv`: the fold split)."""
    defaults = TrainConfig()
    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group(CONFIG_GROUP)
    for field in dataclasses.fields(TrainConfig):
        if field.name in exclude:
            continue
        kind = _value_type(hints[field.name])
        options = {"dest": field.name, "default": None, "help": _help(field, getattr(defaults, field.name))}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is tuple:
            options["type"] = int_list if typing.get_args(kind)[0] is int else csv_list
        else:
            options["type"] = kind
            if "choices" in field.metadata:
                options["choices"] = field.metadata["choices"]
        group.add_argument(flag_name(field), **options)


def given_values(args: argparse.Namespace) -> dict:
    """The TrainConfig fields whose flags were given (not None)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if getattr(args, f.name, None) is not None}


def config_from_flags(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """`base` (default: the dataclass defaults) with every configuration flag given over it."""
    return dataclasses.replace(base or TrainConfig(), **given_values(args))
