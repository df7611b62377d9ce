"""Frozen dataclass configs: JSON round trip, named presets and checked ``key=value`` overrides.

A config is a plain ``@dataclass(frozen=True)`` whose fields are JSON-able scalars, tuples of them, or
nested config dataclasses. Everything a command can change is a field, so the resolved config written
to ``config.json`` reproduces the run.

>>> @dataclass(frozen=True)
... class Opt:
...     lr: float = 0.1
...     schedule: tuple[int, ...] = (60, 120)
>>> apply_overrides(Opt(), ["lr=0.05", "schedule=30,60"])
Opt(lr=0.05, schedule=(30, 60))
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from diffcore.errors import ConfigError

C = TypeVar("C")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_optional(tp: Any) -> tuple[bool, Any]:
    """``X | None`` → (True, X); anything else → (False, tp)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` (a JSON value or a command-line string) to the field type ``tp``.

    Raises :class:`ConfigError` naming the field, the expected type and the value otherwise.
    """
    optional, tp = _is_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{name}: None is not allowed, expected {_type_name(tp)}")
    origin = typing.get_origin(tp)
    try:
        if dataclasses.is_dataclass(tp):
            if isinstance(value, tp):
                return value
            if isinstance(value, Mapping):
                return from_dict(tp, value)
            raise TypeError
        if origin is typing.Literal:
            choices = typing.get_args(tp)
            for choice in choices:
                if value == choice or (isinstance(value, str) and str(choice) == value):
                    return choice
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")
        if origin is tuple:
            args = typing.get_args(tp)
            if isinstance(value, str):
                items = [v for v in value.replace(" ", "").split(",") if v != ""]
            elif isinstance(value, Iterable):
                items = list(value)
            else:
                raise TypeError
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(items))
            if len(items) != len(args):
                raise ConfigError(f"{name}: expected {len(args)} values, got {len(items)} ({value!r})")
            return tuple(coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(items, args, strict=True)))
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            raise TypeError
        if tp is int:
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if tp is Any:
            return value
    except ConfigError:
        raise
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a valid {_type_name(tp)}") from None
    raise ConfigError(f"{name}: unsupported field type {tp!r}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        inner = _type_name(args[0])
        return f"comma-separated list of {inner}" if Ellipsis in args else f"tuple of {len(args)} values"
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(map(repr, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


def to_dict(config: Any) -> dict[str, Any]:
    """Dataclass → JSON-able dict (tuples become lists, nested configs become dicts)."""
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"expected a config dataclass, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Dict → dataclass, every value type-checked; unknown keys are rejected with the valid ones named."""
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for {cls.__name__}; "
            f"valid keys: {', '.join(types_)}"
        )
    return cls(**{k: coerce(v, types_[k], k) for k, v in data.items()})


def save_json(config: Any, path: str | Path) -> None:
    from diffcore.io import atomic_write_text

    atomic_write_text(path, json.dumps(to_dict(config), indent=2) + "\n")


def load_json(cls: type[C], path: str | Path) -> C:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"config file {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object, found {type(data).__name__}")
    return from_dict(cls, data)


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key=value (nested: outer.inner=value)")
    return key.strip(), value.strip()


def apply_overrides(config: C, overrides: Iterable[str] | Mapping[str, Any]) -> C:
    """Return a copy of ``config`` with ``key=value`` strings (or a mapping) applied, type-checked.

    Dotted keys reach into nested config dataclasses (``optim.lr=0.1``).
    """
    pairs = overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides)
    for key, value in pairs:
        config = _replace_path(config, key.split("."), value, key)
    return config


def _replace_path(config: Any, path: list[str], value: Any, full_key: str) -> Any:
    types_ = _field_types(type(config))
    head = path[0]
    if head not in types_:
        raise ConfigError(
            f"unknown config key {full_key!r} for {type(config).__name__}; valid keys: {', '.join(types_)}"
        )
    if len(path) > 1:
        inner = getattr(config, head)
        if not dataclasses.is_dataclass(inner):
            raise ConfigError(f"{full_key!r}: {head} is not a nested config")
        return dataclasses.replace(config, **{head: _replace_path(inner, path[1:], value, full_key)})
    return dataclasses.replace(config, **{head: coerce(value, types_[head], full_key)})


class Presets(Mapping[str, C]):
    """Named configs reproducing a paper's settings, each with a note on where it comes from.

    >>> presets = Presets({"cora": (Opt(lr=0.01), "README graph command")})  # doctest: +SKIP
    """

    def __init__(self, entries: Mapping[str, tuple[C, str]]):
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> C:
        if name not in self._entries:
            raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(self._entries)}")
        return self._entries[name][0]

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def source(self, name: str) -> str:
        self[name]
        return self._entries[name][1]


# ----------------------------------------------------------------------------------------- validation


def require(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``: one line per validation rule."""
    if not ok:
        raise ConfigError(message)


def check_config(config: Any) -> None:
    """Validate a whole config: ``config.check()`` and the ``check()`` of every nested config dataclass.

    A config dataclass validates its own fields in ``def check(self) -> None`` (with :func:`require`);
    nested configs are checked first, so an error names the innermost field at fault. A mapping of configs
    (one command running several) is checked value by value.
    """
    if isinstance(config, Mapping):
        for value in config.values():
            if dataclasses.is_dataclass(value):
                check_config(value)
        return
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_config(value)
    check = getattr(config, "check", None)
    if callable(check):
        check()


def flat_dict(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping → ``{"outer.inner": value}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(flat_dict(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old → new`` for every dotted key whose value differs (or exists on one side only)."""
    a, b = flat_dict(old), flat_dict(new)
    missing = object()
    return [f"{k}: {a.get(k, '(absent)')!r} → {b.get(k, '(absent)')!r}"
            for k in sorted(a.keys() | b.keys()) if a.get(k, missing) != b.get(k, missing)]
