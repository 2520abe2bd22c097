"""Threat specs (``pgd-linf:eps=0.1|0.2,steps=40``) and benchmark files (TOML).

A threat is written ``name:key=value,key=value``; a list is written with ``|``. The canonical string has
sorted keys and every default filled in; its hash identifies the threat in the results store.
"""
from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from robench.errors import RobenchError

Value = Any  # bool | int | float | str | None | tuple of those


def parse_value(text: str) -> Value:
    """``"0.1|0.2"`` -> (0.1, 0.2); ``"40"`` -> 40; ``"true"`` -> True; ``"none"`` -> None; else the string."""
    if "|" in text:
        return tuple(parse_value(part) for part in text.split("|"))
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.strip()


def format_value(value: Value) -> str:
    if isinstance(value, (tuple, list)):
        return "|".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RobenchError(f"threat parameter value {value} is not a finite number.")
        return repr(value)
    return str(value)


@dataclass(frozen=True)
class ThreatSpec:
    """A threat name and its parameters as written by the user (not yet checked against the threat)."""

    name: str
    params: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "ThreatSpec":
        # a namespaced name ("foolbox:LinfDeepFoolAttack") keeps its colons up to the first key=value
        segments = text.strip().split(":")
        cut = next((i for i, seg in enumerate(segments) if "=" in seg), len(segments))
        name, rest = ":".join(segments[:cut]), ":".join(segments[cut:])
        if not name:
            raise RobenchError(f"threat spec {text!r} has no name; write it as name:key=value,key=value.")
        params: dict[str, Value] = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise RobenchError(f"threat spec {text!r}: {item!r} is not key=value (lists use '|', e.g. eps=0.1|0.2).")
            params[key.strip()] = parse_value(value)
        return cls(name.strip(), params)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={format_value(v)}" for k, v in sorted(self.params.items()))

    @property
    def hash(self) -> str:
        return hashlib.sha256(str(self).encode()).hexdigest()[:16]


@dataclass
class Benchmark:
    """A benchmark file: which models meet which threats on which data."""

    models: list[str]
    threats: list[str]
    dataset: str = "mnist"
    split: str = "test"
    n: int | None = None
    indices: list[int] | None = None
    seed: int = 0
    batch_size: int = 256

    @classmethod
    def load(cls, path: str | Path) -> "Benchmark":
        return cls.from_dict(read_toml(path, "benchmark file", cls.__dataclass_fields__), source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "benchmark") -> "Benchmark":
        check_keys(raw, cls.__dataclass_fields__, source)
        for key in ("models", "threats"):
            value = raw.get(key)
            if isinstance(value, str):
                raw[key] = [value]
            elif not value or not all(isinstance(v, str) for v in raw[key]):
                raise RobenchError(f"{source}: {key!r} must be a non-empty list of strings.")
        return cls(**raw)


def check_keys(raw: dict, known: Iterable[str], source: str) -> None:
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise RobenchError(f"{source}: unknown keys {unknown}; valid keys are {sorted(known)}.")


def read_toml(path: str | Path, what: str, known: Iterable[str]) -> dict:
    """The table in TOML file `path` (a `what`, for messages), whose keys must be among `known`."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RobenchError(f"{what} {path} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise RobenchError(f"{what} {path} is not valid TOML: {exc}") from None
    check_keys(raw, known, str(path))
    return raw


def as_tuple(value: Value | Sequence[Value]) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
