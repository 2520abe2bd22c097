"""Threat specs (``pgd-linf:eps=0.1|0.2,steps=40``) and benchmark files (TOML).

A threat is written ``name:key=value,key=value``; a list is written with ``|``. The canonical string has
sorted keys and every default filled in; its hash identifies the threat in the results store.
"""
from __future__ import annotations

import hashlib
import math
import sys
import types
import typing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal, Sequence, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from robench.errors import RobenchError

Value = Any  # bool | int | float | str | None | tuple of those


def parse_value(text: str) -> Value:
    """``"0.1|0.2"`` -> (0.1, 0.2); ``"40"`` -> 40; ``"8/255"`` -> 8 / 255 (a float); ``"true"`` -> True;
    ``"none"`` -> None; else the string."""
    if "|" in text:
        return tuple(parse_value(part) for part in text.split("|"))
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for convert in (int, float, _fraction):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.strip()


def _fraction(text: str) -> float:
    """``"8/255"`` -> 8 / 255: two numbers with a slash, as budgets are written (ValueError otherwise)."""
    top, sep, bottom = text.partition("/")
    if not sep:
        raise ValueError(text)
    numerator, denominator = float(top), float(bottom)
    if denominator == 0:
        raise ValueError(text)
    return numerator / denominator


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


class _Mismatch(Exception):
    pass


def conform(value: Value, hint: Any, name: str) -> Value:
    """`value` checked against its declared type `hint` and normalised; `name` (e.g. "threat 'fgsm': eps")
    begins the error. int is accepted for float (and converted), bool never for int or float, a string
    only for str, None only where `hint` allows it, a float only if finite; unions and Literals are
    understood, other classes checked with isinstance, ``Any`` takes anything. A sequence type
    (``tuple[float, ...]``, ``list[int]``) takes one value or a list and returns a tuple or list; any
    other type takes one value."""
    try:
        return _conform(value, hint)
    except _Mismatch:
        raise RobenchError(f"{name} must be {describe(hint)}; got {_shown(value)}.") from None


def _conform(value: Value, hint: Any) -> Value:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        for member in sorted(args, key=lambda a: a is float):  # an int stays an int where int is allowed
            try:
                return _conform(value, member)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise _Mismatch
    if origin in (tuple, list):
        items = value if isinstance(value, (tuple, list)) else (value,)
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length, e.g. tuple[int, int]
            if len(items) != len(args):
                raise _Mismatch
            return tuple(_conform(v, a) for v, a in zip(items, args))
        return origin(_conform(v, args[0] if args else Any) for v in items)
    if isinstance(value, (tuple, list)):
        raise _Mismatch
    if hint is type(None):
        ok = value is None
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(hint, type):
        ok = isinstance(value, hint)
    else:
        ok = True
    if not ok:
        raise _Mismatch
    return value


def describe(hint: Any) -> str:
    """A declared type in words: "an integer", "a number or none", "one of fp32, bf16"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):  # Literal members read as one choice: "one of a, b or none"
        choices = [v for a in args if typing.get_origin(a) is Literal for v in typing.get_args(a)]
        others = [describe(a) for a in args if typing.get_origin(a) is not Literal]
        return " or ".join(([describe(Literal[tuple(choices)])] if choices else []) + others)
    if origin is Literal:
        return "one of " + ", ".join(map(format_value, args)) if len(args) > 1 else format_value(args[0])
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values (" + ", ".join(describe(a) for a in args) + ")"
        return f"{describe(args[0] if args else Any)}, or a list of them"
    words = {float: "a finite number", int: "an integer", bool: "true or false", str: "a string",
             type(None): "none", Any: "any value"}
    return words.get(hint) or f"a {getattr(hint, '__name__', hint)}"


def _shown(value: Value) -> str:
    if value == "":
        return "nothing"
    if isinstance(value, tuple):
        return f"the list {format_value(value)}"
    if isinstance(value, (bool, type(None))):
        return format_value(value)
    return repr(value)


def check_indices(indices: Sequence[int], name: str) -> None:
    """Raise unless `indices` selects at least one example and none twice: a repeated example would be
    counted as several independent ones in an accuracy and its confidence interval."""
    if not len(indices):
        raise RobenchError(f"{name} selects no examples; give at least one index, e.g. 0:100.")
    repeated = sorted(i for i, count in Counter(indices).items() if count > 1)
    if repeated:
        raise RobenchError(f"{name} lists {len(repeated)} example(s) more than once "
                           f"({', '.join(map(str, repeated[:5]))}{', ...' if len(repeated) > 5 else ''}); "
                           "give each index once.")


@dataclass
class Benchmark:
    """A benchmark file: which models meet which threats on which data."""

    models: list[str]
    threats: list[str]
    dataset: str = "mnist"
    split: Literal["train", "test"] = "test"
    n: int | None = None
    indices: list[int] | None = None
    seed: int = 0

    #: what the file is called in messages
    what: ClassVar[str] = "benchmark file"
    #: list fields that must not be empty
    non_empty: ClassVar[tuple[str, ...]] = ("models", "threats")

    @classmethod
    def load(cls, path: str | Path) -> "Benchmark":
        return cls.from_dict(read_toml(path, cls.what, cls.__dataclass_fields__), source=str(path))

    @classmethod
    def preset(cls, name: str) -> "Benchmark":
        """A benchmark file shipped with robench (robench/benchmarks/NAME.toml), e.g. "quickstart"."""
        folder = Path(__file__).resolve().parent / "benchmarks"
        path = folder / f"{name}.toml"
        if not path.is_file():
            raise RobenchError(f"no shipped benchmark {name!r}; shipped: "
                               f"{', '.join(sorted(p.stem for p in folder.glob('*.toml'))) or '(none)'}.")
        return cls.load(path)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "benchmark") -> "Benchmark":
        """A Benchmark from a table whose keys and values are checked against the fields and their types."""
        check_keys(raw, cls.__dataclass_fields__, source)
        hints = typing.get_type_hints(cls)
        values = {key: conform(value, hints[key], f"{source}: {key}") for key, value in raw.items()}
        for key in cls.non_empty:
            if not values.get(key):
                raise RobenchError(f"{source}: {key!r} must be a non-empty list of strings.")
        if values.get("indices") is not None:
            check_indices(values["indices"], f"{source}: indices")
        return cls(**values)


def check_keys(raw: dict, known: Iterable[str], source: str) -> None:
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise RobenchError(f"{source}: unknown keys {unknown}; valid keys are {sorted(known)}.")


def read_toml(path: str | Path, what: str, known: Iterable[str]) -> dict:
    """The table in TOML file `path` (a `what`, for messages), whose keys must be among `known`."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise RobenchError(f"{what} {path} does not exist.") from None
    except OSError as exc:
        raise RobenchError(f"cannot read {what} {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError as exc:
        raise RobenchError(f"{what} {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                           f"{exc.start}); save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:
        raise RobenchError(f"{what} {path} is not valid TOML: {exc}") from None
    check_keys(raw, known, str(path))
    return raw


def as_tuple(value: Value | Sequence[Value]) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
