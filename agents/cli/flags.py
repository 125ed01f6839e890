"""One command-line flag per dataclass field: how ``train``, ``rm train`` and ``finetune`` expose their configs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Collection
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def _optional(convert: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    return parse


def _json_object(text: str) -> dict[str, Any]:
    """``--algo-kwargs``: a JSON object such as '{"n_epochs": 4}'."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(text)
    return value


_json_object.__name__ = "JSON object"  # argparse names the converter in its error message

_CONVERTERS: dict[str, Any] = {
    "str": str,
    "Any": str,  # model, reward, prompts: names or paths on the command line
    "int": int,
    "float": float,
    "str | None": _optional(str),
    "int | None": _optional(int),
    "float | None": _optional(float),
    "dict[str, Any]": _json_object,
}


def add_config_flags(
    parser: Any, config_cls: type, *, defaults: dict[str, Any] | None = None, skip: Collection[str] = ()
) -> None:
    """One flag per dataclass field of ``config_cls`` (``--field-name``), with its help text and default.

    A field that holds a dataclass (``TrainConfig.env``, an :class:`~proxy_env.config.EnvConfig`) adds a
    group with one flag per field of its own, under the field's own name. ``defaults`` overrides a
    field's default on the command line only; ``skip`` names fields (at any depth) that get no flag and
    keep their default (a setting the command refuses). :func:`config_from_args` builds the config back.
    """
    base = config_cls()
    for f in fields(config_cls):
        value = getattr(base, f.name)
        if f.name in skip:
            continue
        if is_dataclass(value):
            group = parser.add_argument_group(f.name, f.metadata.get("help"))
            add_config_flags(group, type(value), defaults=defaults, skip=skip)
            continue
        # config modules use ``from __future__ import annotations``: every annotation is its source text
        assert isinstance(f.type, str), f"{config_cls.__name__}.{f.name}: annotation {f.type!r} is not a string"
        flag, help_text = _flag(f.name), f.metadata.get("help", "")
        default = (defaults or {}).get(f.name, value)
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif f.type.startswith(("tuple[int", "tuple[float")):
            parser.add_argument(
                flag,
                type=int if f.type.startswith("tuple[int") else float,
                nargs="+",
                default=list(default),
                metavar="N" if f.type.startswith("tuple[int") else "X",
                help=f"{help_text} (default: {default})",
            )
        elif f.type.startswith("tuple[str"):
            parser.add_argument(
                flag,
                nargs="+",
                default=list(default),
                metavar=f.name.upper().rstrip("S"),
                help=f"{help_text} (default: {list(default)})",
            )
        else:
            parser.add_argument(
                flag, type=_CONVERTERS[f.type], default=default, help=f"{help_text} (default: {default!r})"
            )


def flag_names(config_cls: type, *, skip: Collection[str] = ()) -> set[str]:
    """The flags :func:`add_config_flags` adds for ``config_cls`` with this ``skip`` (nested configs included)."""
    base = config_cls()
    names: set[str] = set()
    for f in fields(config_cls):
        value = getattr(base, f.name)
        if f.name not in skip:
            names |= flag_names(type(value), skip=skip) if is_dataclass(value) else {_flag(f.name)}
    return names


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def config_from_args(config_cls: type[T], args: argparse.Namespace) -> T:
    """The ``config_cls`` whose flags :func:`add_config_flags` added, from the parsed ``args`` (nested configs too).

    A field without a flag (``skip``) keeps its default.
    """
    base = config_cls()
    values: dict[str, Any] = {}
    for f in fields(config_cls):  # type: ignore[arg-type]
        default = getattr(base, f.name)
        if is_dataclass(default):
            values[f.name] = config_from_args(type(default), args)
        else:
            value = getattr(args, f.name, default)
            values[f.name] = tuple(value) if isinstance(default, tuple) else value
    return config_cls(**values)
