"""One generic registry for every plugin family, with entry-point discovery for third-party plugins.

Built-ins register themselves when their package is imported; third-party packages add entries through
the entry-point groups ``robench.attacks``, ``robench.corruptions``, ``robench.certifiers``,
``robench.defenses``, ``robench.models``, ``robench.sources`` and ``robench.datasets`` (the entry point's
name becomes the registered name).

Families: attacks (input and weight attacks), corruptions (single corruptions and suites), certifiers
(randomized smoothing, Linf bound propagation), defenses (training-time batch transforms and
inference-time model wrappers; no threats), models (the zoo), model sources (``source:name`` models from
other libraries: RobustBench, timm, torchvision) and datasets. A *threat* is an entry of
attacks, corruptions or certifiers that has ``as_threat`` (see `threat_families`).
"""
from __future__ import annotations

import fnmatch
import importlib
import re
from importlib import metadata
from typing import TYPE_CHECKING, Callable, Generic, Iterator, TypeVar

from robench.errors import RobenchError, unknown_name

if TYPE_CHECKING:  # annotations only: the families' base classes import this module
    from robench.attacks.base import Attack
    from robench.attacks.weights import WeightAttack
    from robench.corruptions.base import Corruption
    from robench.data import Dataset
    from robench.defenses.base import InferenceDefense, TrainingDefense
    from robench.sources.base import ModelSource
    from robench.threats import Threat
    from robench.zoo import ModelEntry

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one family: ``register`` refuses duplicates, ``get``/``create`` look names up."""

    def __init__(self, family: str, builtins: tuple[str, ...] = (), about: str = ""):
        self.family = family
        #: what the family holds, in a few words (``robench list``)
        self.about = about
        self.group = f"robench.{family}"
        self._builtins = builtins
        self._entries: dict[str, T] = {}
        self._loaded = False
        #: (glob pattern, loader): loaders that register the entries matching their pattern on first need
        self._lazy: list[tuple[str, Callable[[], None]]] = []

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register `obj` under `name` (or use as a decorator); a name already taken is an error."""

        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise RobenchError(f"{self.family} name {name!r} is already registered; choose another name.")
            self._entries[name] = entry
            return entry

        return add if obj is None else add(obj)

    def lazy(self, pattern: str, loader: Callable[[], None]) -> None:
        """Defer registering the entries whose names match the glob `pattern` to `loader`, run once, when
        such a name is looked up or the family is listed (e.g. the foolbox attacks, so that foolbox is
        imported only when a ``foolbox:*`` attack is used). An error in the loader propagates."""
        self._lazy.append((pattern, loader))

    def _run_lazy(self, name: str | None = None) -> None:
        """Run the pending lazy loaders (those whose pattern matches `name`, or all)."""
        for item in list(self._lazy):
            if item in self._lazy and (name is None or fnmatch.fnmatchcase(name, item[0])):
                self._lazy.remove(item)
                item[1]()

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
        if name not in self._entries:
            self._run_lazy(name)
        if name not in self._entries:
            self._run_lazy()  # the error lists every name
        try:
            return self._entries[name]
        except KeyError:
            raise unknown_name(self.family.rstrip("s"), name, self._entries) from None

    def create(self, name: str, **kwargs) -> object:
        """``get(name)(**kwargs)``: an instance of a registered class (or the result of a factory)."""
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def names(self, pattern: str = "*") -> list[str]:
        self._load()
        self._run_lazy()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        self._load()
        if name not in self._entries:
            self._run_lazy(name)
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


ATTACKS: Registry[type[Attack] | type[WeightAttack]] = Registry(
    "attacks", ("robench.attacks",), "input attacks (eps budget) and weight attacks (bit flips)")
CORRUPTIONS: Registry[type[Corruption]] = Registry(
    "corruptions", ("robench.corruptions",), "corruptions and corruption suites")
CERTIFIERS: Registry[type[Threat]] = Registry(
    "certifiers", ("robench.defenses",), "certified robustness (randomized smoothing, IBP/CROWN bounds)")
DEFENSES: Registry[type[TrainingDefense] | type[InferenceDefense]] = Registry(
    "defenses", ("robench.defenses",), "training-time and inference-time defenses")
MODELS: Registry[ModelEntry] = Registry("models", ("robench.zoo",), "zoo models")
SOURCES: Registry[type[ModelSource]] = Registry(
    "sources", ("robench.sources",), "model sources: source:name models from other libraries")
DATASETS: Registry[Dataset] = Registry("datasets", ("robench.data",), "datasets")

#: the families whose entries can be threats, in lookup order (a name found in an earlier family wins)
THREAT_FAMILIES: tuple[Registry, ...] = (ATTACKS, CORRUPTIONS, CERTIFIERS)


def is_threat(entry: object) -> bool:
    """Whether a registered entry can be used as a threat (it has ``as_threat``)."""
    return hasattr(entry, "as_threat")


def threat_families(pattern: str = "*") -> dict[str, Registry]:
    """Every name usable as a threat (matching the glob `pattern`), sorted, with the family it comes from."""
    found: dict[str, Registry] = {}
    for registry in THREAT_FAMILIES:
        for name in registry.names(pattern):
            if name not in found and is_threat(registry.get(name)):
                found[name] = registry
    return dict(sorted(found.items()))


def describe(entry: object) -> str:
    """A registered entry's one-line description: its `description` text if it has one, else the first
    line of its docstring."""
    text = getattr(entry, "description", None)
    if isinstance(text, str) and text.strip():
        return " ".join(text.split())
    doc = (getattr(entry, "__doc__", None) or "").strip()
    paragraph = " ".join(doc.split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s+(?=[A-Z])", paragraph, maxsplit=1)[0]
