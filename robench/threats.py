"""The Threat protocol every attack, corruption suite and certifying defense is evaluated through,
and `build_threat`, which turns a threat spec into a configured Threat.

A Threat is evaluated shard by shard (a shard is a fixed run of consecutive examples of the slice) into
per-example outputs, which `summarize` turns into metrics. Shards are the unit the results store
caches and executors distribute; each gets its own seed, so results do not depend on the split.
"""
from __future__ import annotations

import copy
import inspect
import typing
from abc import ABC, abstractmethod
from enum import Enum
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from robench.errors import RobenchError, unknown_name
from robench.registry import DEFENSES, THREAT_FAMILIES, is_threat, threat_families
from robench.spec import ThreatSpec, Value, conform

if typing.TYPE_CHECKING:
    from robench.flags import Flag
    from robench.report import Report

#: the default of a constructor parameter that has none (the value must be given in the spec)
NO_DEFAULT = inspect.Parameter.empty


class Budget:
    """A budget parameter (given at call time, not to ``__init__``) without default, of the given type,
    e.g. ``budget_parameters = {"eps": Budget(float)}``; several values may be given as a list
    (``eps=0.1|0.2``), each its own part."""

    def __init__(self, type_: type):
        self.type = type_


class Parameter(NamedTuple):
    """A threat parameter: its default (NO_DEFAULT or a `Budget` where there is none) and declared type."""

    default: Value
    type: Any

Outputs = dict[str, np.ndarray]


class Kind(str, Enum):
    """What a threat tests; the value is what Records store as their ``kind``."""

    INPUT_ATTACK = "input-attack"
    WEIGHT_ATTACK = "weight-attack"
    CORRUPTION = "corruption"
    CERTIFICATION = "certification"

    __str__ = str.__str__
    __format__ = str.__format__


@dataclass(frozen=True)
class ThreatContext:
    """Where a threat's examples come from: the dataset's registered name, the split, the data root
    (``--data-root``; None for the default) and the example indices. `Threat.bind` receives the whole
    slice's; inside `Threat.evaluate_shard`, ``self.context.indices`` are those of the shard's rows."""

    dataset: str
    split: str = "test"
    data_root: str | None = None
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False, compare=False)

    def at(self, indices: np.ndarray) -> "ThreatContext":
        """The same context for the examples `indices` (a shard)."""
        return replace(self, indices=np.asarray(indices, dtype=np.int64))


class Threat(ABC):
    """One configured way of testing a model. Subclasses set `kind` and implement the two methods."""

    kind: ClassVar[Kind]
    #: bump when a change to the code changes results, so stored results become stale
    version: ClassVar[int] = 1
    #: the most examples per shard; None evaluates the whole slice as one shard (e.g. weight attacks)
    shard_size: ClassVar[int | None] = 500
    #: the fewest examples per shard, whatever the cost: an attack batched over examples runs several times
    #: slower per example in smaller batches (perf/shards.py), so attacks set it; 1 where a part batches
    #: over something else (the noise draws of certification)
    min_shard_size: ClassVar[int] = 1
    #: True when results draw no randomness (the generator is unused): any subset of the examples gives each one the same outcome
    deterministic: ClassVar[bool] = False
    #: forward passes of the model one example costs in one part (with the model's size, it sets the
    #: shard size, so that a task takes about the same time whatever the threat: see robench.evaluate)
    cost: float = 1.0

    #: for a part that continues another (one stage of a chain, e.g. one attack of an ensemble): the name
    #: of the part whose outputs on the same shard it receives as `previous` (see `following`)
    after: str | None = None
    #: the outputs of the `after` part on this shard (set by `following`; None for independent parts)
    previous: Outputs | None = None

    #: parameters left out of the canonical spec while they hold their default: parameters added after
    #: results were stored, so those keep their identity (store keys, seeds, leaderboard specs)
    quiet_defaults: ClassVar[tuple[str, ...]] = ()

    spec: ThreatSpec  # canonical spec, set by build_threat
    #: the dataset, data root and examples being evaluated (set by `bind`); None where a threat is
    #: evaluated outside robench.evaluate (direct calls to evaluate_shard)
    context: ThreatContext | None = None

    def bind(self, context: ThreatContext) -> None:
        """Called once per part, before any shard runs, with the dataset, data root and indices of the
        whole slice. The default keeps it as `context`; a threat that needs more (images from the
        training split, precomputed files per example) overrides this to prepare them, and calls super."""
        self.context = context

    def at(self, indices: np.ndarray) -> "Threat":
        """This (bound) threat with ``context.indices`` narrowed to one shard's examples: a shallow copy,
        so whatever `bind` prepared is shared. Unbound threats are returned as they are."""
        if self.context is None:
            return self
        shard = copy.copy(self)
        shard.context = self.context.at(indices)
        return shard

    def following(self, previous: Outputs) -> "Threat":
        """This part given the outputs `previous` of its `after` part on the same shard: a shallow copy."""
        stage = copy.copy(self)
        stage.previous = previous
        return stage

    @abstractmethod
    def evaluate_shard(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       generator: torch.Generator) -> Outputs:
        """Per-example outputs (arrays whose first axis is the example) for images `x` (N,C,H,W) in
        [0, 1] with labels `y` (N,); for a non-sharded threat, any arrays."""

    @abstractmethod
    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        """Metrics (JSON-ready) from the outputs of all shards, concatenated along the first axis."""

    def report(self, metrics: dict[str, Any]) -> "Report":
        """How the `metrics` of one Record of this threat read: headline and detail columns, curves, a
        description and notes (robench.report). Every table, figure and leaderboard renders Records
        through this alone. The default lists every accuracy and number of the metrics as details."""
        from robench.report import generic

        return generic(self.spec.name, (type(self).__doc__ or "").strip().split("\n")[0], metrics)

    def parts(self) -> dict[str, "Threat"]:
        """Independent pieces of this threat, by name, each evaluated as its own task on every shard
        with the shard's generator; a shard's outputs are the union of its parts' outputs. A threat
        made of separable pieces (a suite of corruptions) splits so that they run in parallel and
        resume one by one; the default is the threat itself, whole. A part may continue another (its
        `after` names an earlier part): it then runs once that part has finished on the shard, with
        its outputs, so a chain of stages (the attacks of an ensemble, each on the examples the earlier
        ones failed on) resumes stage by stage."""
        return {"": self}

    def compare(self, metrics: dict[str, Any], others: list[tuple["Threat", dict[str, Any]]]) -> list["Flag"]:
        """Flags (robench.flags) that comparing this threat's `metrics` with the metrics of `others` (the
        other threats evaluated on the same model, data and seed) shows; the default finds none."""
        return []

    def combine(self, outputs: Outputs) -> Outputs:
        """The threat's per-example outputs from the union of its parts' (what `summarize` reads and
        Records carry); the default is the union itself. A chain of stages derives its totals here."""
        return outputs

    def confidences(self, outputs: Outputs) -> dict[str, tuple[np.ndarray, np.ndarray, str, bool]]:
        """The per-example numbers behind the calibration metrics the threat reports: metric path
        ("calibration/fog") -> (top-class confidence per example, hit per example, the path of the
        accuracy the hits count, whether it is the unshifted baseline). Leaderboard entries store them,
        so that claims on calibration are tested example by example; the default has none."""
        return {}

    def isotropic_noise(self, metrics: dict[str, Any]) -> tuple[float, Any] | None:
        """For a threat that adds isotropic Gaussian noise of one standard deviation: (sigma, the Accuracy
        under it) from its Record's `metrics`; None for other threats. With `minimal_distance`, what the
        noise-versus-adversarial analysis (robench.leaderboard.noise, Ford et al. 2019) reads."""
        return None

    def minimal_distance(self, metrics: dict[str, Any]) -> tuple[str, float | None, tuple] | None:
        """For a threat that measures the minimal adversarial distance: (norm, the median distance (None:
        infinite), its 95% interval) from its Record's `metrics`; None for other threats."""
        return None

    @property
    def canonical(self) -> str:
        return f"{self.spec}"


def parameters_of(factory: Any) -> dict[str, Parameter]:
    """The keyword parameters of a threat factory's constructor and its budget. A parameter's type is
    its annotation (in ``__init__`` for hyperparameters, in ``as_threat`` for budget parameters), a
    `Budget`'s type, else its default's type; values of a tuple type or a `Budget`
    may be lists, others are single values."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    hints = _hints(target)
    params = {
        name: Parameter(p.default, hints.get(name, _type_of(p.default)))
        for name, p in inspect.signature(target).parameters.items()
        if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    budget_hints = _hints(getattr(factory, "as_threat", None))
    for name, default in getattr(factory, "budget_parameters", {}).items():
        declared = tuple[default.type, ...] if isinstance(default, Budget) else budget_hints.get(name)
        params[name] = Parameter(default, declared or _type_of(default))
    return params


def _hints(function: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(inspect.unwrap(function))
    except Exception:  # no annotations to read (a builtin, None) or ones that do not resolve
        return {}


def _type_of(default: Value) -> Any:
    if default is NO_DEFAULT or default is None:
        return Any
    if isinstance(default, tuple):
        return tuple[_type_of(default[0]) if default else Any, ...]
    return type(default)


def _coerce(threat: str, name: str, value: Value, param: Parameter) -> Value:
    """`value` of parameter `name` checked against its declared type; a `Budget` stays a single
    value when one is given, so that ``eps=0.1`` and ``eps=0.1|0.2`` read as written."""
    value = conform(value, param.type, f"threat {threat!r}: {name}")
    if isinstance(param.default, Budget) and len(value) == 1:
        return value[0]
    return value


def _factory(name: str) -> Any:
    """The registered factory of threat `name`: an attack, corruption (suite) or certifier with
    ``as_threat`` (robench.registry.THREAT_FAMILIES, in that order)."""
    for registry in THREAT_FAMILIES:
        if name in registry:
            factory = registry.get(name)
            if is_threat(factory):
                return factory
            raise RobenchError(f"{registry.family.rstrip('s')} {name!r} cannot be used as a threat.")
    if name in DEFENSES:
        raise RobenchError(f"defense {name!r} is a defense, not a threat: use it in a training recipe or wrap "
                           "the model with it; threats are listed by `robench list threats`.")
    raise unknown_name("threat", name, threat_families())


def build_threat(spec: str | ThreatSpec) -> Threat:
    """A configured Threat from ``"name:key=value,..."``; unknown keys, missing values and values of the
    wrong type (see `parameters_of`) are errors, raised before anything runs. Its canonical spec lists
    every parameter, defaults filled in, except the factory's `quiet_defaults` at their default."""
    spec = ThreatSpec.parse(spec) if isinstance(spec, str) else spec
    factory = _factory(spec.name)
    valid = parameters_of(factory)
    unknown = sorted(set(spec.params) - set(valid))
    if unknown:
        raise RobenchError(f"threat {spec.name!r} has no parameter {', '.join(unknown)}; "
                           f"valid parameters: {', '.join(sorted(valid)) or '(none)'}.")
    missing = sorted(k for k, p in valid.items()
                     if k not in spec.params and (p.default is NO_DEFAULT or isinstance(p.default, Budget)))
    if missing:
        raise RobenchError(f"threat {spec.name!r} needs {', '.join(missing)}, e.g. {spec.name}:"
                           + ",".join(f"{k}=..." for k in missing) + ".")
    params = {k: _coerce(spec.name, k, spec.params.get(k, p.default), p) for k, p in valid.items()}
    threat = factory.as_threat(**params)
    quiet = getattr(factory, "quiet_defaults", ())
    threat.spec = ThreatSpec(spec.name, {k: v for k, v in params.items() if k not in quiet or v != valid[k].default})
    return threat


def in_precision(spec: str | ThreatSpec, precision: str) -> tuple[ThreatSpec, str | None]:
    """`spec` evaluated in `precision` (autocast: AMP on CUDA, bf16 kernels on CPUs that have them) where its
    threat has a precision parameter that allows it and the spec does not set one; otherwise `spec` as it
    is and why (None when it was changed or already asks for `precision`)."""
    spec = ThreatSpec.parse(spec) if isinstance(spec, str) else spec
    if "precision" in spec.params:
        given = spec.params["precision"]
        return spec, None if given == precision else f"its spec sets precision={given}"
    if "precision" not in parameters_of(_factory(spec.name)):
        return spec, "it has no precision parameter"
    changed = ThreatSpec(spec.name, {**spec.params, "precision": precision})
    try:
        build_threat(changed)
    except RobenchError:  # e.g. bounds: a certificate computed in low precision is not a certificate
        return spec, f"{spec.name} does not allow precision={precision}"
    return changed, None
