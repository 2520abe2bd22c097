"""One generic registry for every plugin family, with entry-point discovery for third-party plugins.

Built-ins register themselves when their package is imported; third-party packages add entries through
the entry-point groups ``robench.attacks``, ``robench.defenses``, ``robench.corruptions``,
``robench.models`` and ``robench.datasets`` (the entry point's name becomes the registered name).
"""
from __future__ import annotations

import fnmatch
import importlib
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

from robench.errors import RobenchError, unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one family: ``register`` refuses duplicates, ``get``/``create`` look names up."""

    def __init__(self, family: str, builtins: tuple[str, ...] = ()):
        self.family = family
        self.group = f"robench.{family}"
        self._builtins = builtins
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register `obj` under `name` (or use as a decorator); a name already taken is an error."""

        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise RobenchError(f"{self.family} name {name!r} is already registered; choose another name.")
            self._entries[name] = entry
            return entry

        return add if obj is None else add(obj)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtins:
            importlib.import_module(module)
        for ep in metadata.entry_points(group=self.group):
            if ep.name in self._entries:
                continue
            try:
                self.register(ep.name, ep.load())
            except Exception as exc:  # a broken plugin must not take the built-ins down with it
                raise RobenchError(f"plugin {ep.name!r} ({ep.value}) in group {self.group} failed to load: {exc}")

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise unknown_name(self.family.rstrip("s"), name, self._entries) from None

    def create(self, name: str, **kwargs) -> object:
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def names(self, pattern: str = "*") -> list[str]:
        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


ATTACKS: Registry = Registry("attacks", ("robench.attacks",))
DEFENSES: Registry = Registry("defenses", ("robench.defenses",))
CORRUPTIONS: Registry = Registry("corruptions", ("robench.corruptions",))
MODELS: Registry = Registry("models", ("robench.zoo",))
DATASETS: Registry = Registry("datasets", ("robench.data",))
