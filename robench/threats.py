"""The Threat protocol every attack, corruption suite and certifying defense is evaluated through,
and `build_threat`, which turns a threat spec into a configured Threat.

A Threat is evaluated shard by shard (a shard is a fixed run of consecutive examples of the slice) into
per-example outputs, which `summarize` turns into metrics. Shards are the unit the results store
caches and executors distribute; each gets its own seed, so results do not depend on the split.
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from robench.errors import RobenchError, unknown_name
from robench.registry import ATTACKS, CORRUPTIONS, DEFENSES
from robench.spec import ThreatSpec, Value, as_tuple

REQUIRED = inspect.Parameter.empty


class Required:
    """A budget parameter without default, of the given type, e.g. ``{"eps": Required(float)}``;
    several values may be given as a list."""

    def __init__(self, type_: type):
        self.type = type_

Outputs = dict[str, np.ndarray]


class Threat(ABC):
    """One configured way of testing a model. Subclasses set `kind` and implement the two methods."""

    kind: ClassVar[str]
    #: bump when a change to the code changes results, so stored results become stale
    version: ClassVar[int] = 1
    #: examples per shard; None evaluates the whole slice as one shard (e.g. weight attacks)
    shard_size: ClassVar[int | None] = 500

    spec: ThreatSpec  # canonical spec, set by build_threat

    @abstractmethod
    def evaluate_shard(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       generator: torch.Generator) -> Outputs:
        """Per-example outputs (arrays whose first axis is the example) for images `x` (N,C,H,W) in
        [0, 1] with labels `y` (N,); for a non-sharded threat, any arrays."""

    @abstractmethod
    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        """Metrics (JSON-ready) from the outputs of all shards, concatenated along the first axis."""

    def parts(self) -> dict[str, "Threat"]:
        """Independent pieces of this threat, by name, each evaluated as its own task on every shard
        with the shard's generator; a shard's outputs are the union of its parts' outputs. A threat
        made of separable pieces (a suite of corruptions) splits so that they run in parallel and
        resume one by one; the default is the threat itself, whole."""
        return {"": self}

    @property
    def canonical(self) -> str:
        return f"{self.spec}"

    @property
    def key(self) -> str:
        """What identifies this threat's results: canonical string, hash and code version."""
        return f"{self.spec.hash}-v{self.version}"


def parameters_of(factory: Any) -> dict[str, Value]:
    """Keyword parameters (name -> default or REQUIRED) of a threat factory's constructor and budget."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = {
        name: p.default for name, p in inspect.signature(target).parameters.items()
        if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    params.update(getattr(factory, "budget_parameters", {}))
    return params


def _coerce(name: str, value: Value, default: Value) -> Value:
    if isinstance(default, Required):
        values = tuple(_coerce(name, v, default.type(0)) for v in as_tuple(value))
        return values if len(values) > 1 else values[0]
    if isinstance(default, tuple):
        return tuple(_coerce(name, v, default[0] if default else None) for v in as_tuple(value))
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _factory(name: str) -> Any:
    for registry in (ATTACKS, CORRUPTIONS, DEFENSES):
        if name in registry:
            factory = registry.get(name)
            if hasattr(factory, "as_threat"):
                return factory
            raise RobenchError(f"{registry.family.rstrip('s')} {name!r} cannot be used as a threat.")
    names = {n for r in (ATTACKS, CORRUPTIONS, DEFENSES) for n in r.names()
             if hasattr(r.get(n), "as_threat")}
    raise unknown_name("threat", name, names)


def build_threat(spec: str | ThreatSpec) -> Threat:
    """A configured Threat from ``"name:key=value,..."``; unknown keys and missing values are errors."""
    spec = ThreatSpec.parse(spec) if isinstance(spec, str) else spec
    factory = _factory(spec.name)
    valid = parameters_of(factory)
    unknown = sorted(set(spec.params) - set(valid))
    if unknown:
        raise RobenchError(f"threat {spec.name!r} has no parameter {', '.join(unknown)}; "
                           f"valid parameters: {', '.join(sorted(valid)) or '(none)'}.")
    params = {k: _coerce(k, spec.params.get(k, d), d) for k, d in valid.items()}
    missing = sorted(k for k, v in params.items() if v is REQUIRED or isinstance(v, Required))
    if missing:
        raise RobenchError(f"threat {spec.name!r} needs {', '.join(missing)}, e.g. {spec.name}:"
                           + ",".join(f"{k}=..." for k in missing) + ".")
    threat = factory.as_threat(**params)
    threat.spec = ThreatSpec(spec.name, params)
    return threat


def threat_names() -> dict[str, str]:
    """Every name usable as a threat, with the family it comes from."""
    return {n: r.family for r in (ATTACKS, CORRUPTIONS, DEFENSES) for n in r.names()
            if hasattr(r.get(n), "as_threat")}
