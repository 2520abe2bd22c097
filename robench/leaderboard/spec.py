"""Where leaderboards live, and spec.toml: a leaderboard's protocol, written as a benchmark file
(robench.spec.Benchmark: models, threats, dataset, split, n, seed) plus what the board shows."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from robench.errors import RobenchError
from robench.spec import Benchmark, read_toml


def root() -> Path:
    """The folder holding the leaderboards shipped with robench (the robench.leaderboards package)."""
    import robench.leaderboards

    return Path(robench.leaderboards.__file__).resolve().parent


def names(where: str | Path | None = None) -> list[str]:
    base = Path(where) if where else root()
    return sorted(p.parent.name for p in base.glob("*/spec.toml"))


def locate(name: str | Path) -> Path:
    """A leaderboard folder from a path or the name of a shipped leaderboard."""
    path = Path(name)
    if (path / "spec.toml").is_file():
        return path
    if (root() / str(name) / "spec.toml").is_file():
        return root() / str(name)
    raise RobenchError(f"no leaderboard {str(name)!r}: give a folder with a spec.toml or one of "
                       f"{', '.join(names()) or '(none)'}.")


@dataclass
class Spec(Benchmark):
    """spec.toml: the benchmark every entry of the leaderboard is evaluated under (the first `n` examples
    of `split`; no explicit indices), with its name, title, sort column, pending models and description."""

    name: str = ""
    title: str = ""
    sort: str = "clean"
    pending: list[str] = field(default_factory=list)
    description: str = ""
    #: threats of `threats` shown in their detail table only, not in the headline table (e.g. PGD beside
    #: the AutoAttack ensemble, whose numbers are the headline)
    details_only: list[str] = field(default_factory=list)
    #: the headline table's columns, in order (titles as the tables write them, "clean" first); empty:
    #: every headline column of every threat not in `details_only`. The others stay in the detail tables
    headline: list[str] = field(default_factory=list)
    #: threats evaluated on fewer examples than `n` (the first that many): threat pattern (its name and
    #: the parameters that single threats out, as claims name them) -> count, e.g. {"autoattack" = 1000}
    threat_n: dict[str, int] = field(default_factory=dict)

    what: ClassVar[str] = "leaderboard spec"
    #: a new leaderboard may list every model as pending
    non_empty: ClassVar[tuple[str, ...]] = ("threats",)
    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "title", "dataset", "split", "n", "threats", "models")

    @classmethod
    def load(cls, path: str | Path) -> "Spec":
        path = Path(path)
        raw = read_toml(path, cls.what, cls.__dataclass_fields__)
        missing = sorted(set(cls.REQUIRED) - set(raw))
        if missing:
            raise RobenchError(f"{path}: missing keys {missing}.")
        if "indices" in raw:
            raise RobenchError(f"{path}: a leaderboard evaluates the first n examples; remove indices.")
        if not isinstance(raw["n"], int) or isinstance(raw["n"], bool) or raw["n"] < 1:
            raise RobenchError(f"{path}: n must be a positive integer (the first n examples); got {raw['n']!r}.")
        return cls.from_dict(raw, source=str(path))

    def n_of(self, threat: str) -> int:
        """The examples `threat` (a spec threat) is evaluated on: the first n_of of the split."""
        found = [count for pattern, count in self.threat_n.items() if names_threat(pattern, threat)]
        return found[0] if found else self.n

    def indices_of(self, threat: str) -> str:
        return f"0:{self.n_of(threat)}"

    def examples(self) -> str:
        """Which examples the threats see, in words: "first 200 examples", or with `threat_n` "first
        10000 examples (first 1000 for autoattack and pgd-linf, 500 for smoothing)"."""
        fewer: dict[int, list[str]] = {}
        for t in self.threats:
            if self.n_of(t) != self.n:
                name = t.split(":")[0]
                if name not in fewer.setdefault(self.n_of(t), []):
                    fewer[self.n_of(t)].append(name)
        text = f"first {self.n} examples"
        if fewer:
            text += " (" + "; ".join(f"first {count} for {', '.join(names)}"
                                     for count, names in sorted(fewer.items(), reverse=True)) + ")"
        return text

    @property
    def protocol(self) -> dict[str, Any]:
        """What an entry must have been computed under (a spec without `threat_n` keeps its old hash)."""
        out = {"dataset": self.dataset, "split": self.split, "indices": f"0:{self.n}", "seed": self.seed,
               "threats": list(self.threats)}
        fewer = {t: self.n_of(t) for t in self.threats if self.n_of(t) != self.n}
        if fewer:
            out["threat_n"] = fewer
        return out

    @property
    def protocol_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.protocol, sort_keys=True).encode()).hexdigest()[:16]

    def problems(self) -> list[str]:
        """Threats that are not written canonically (so a changed default would go unnoticed)."""
        from robench.threats import build_threat

        out = []
        for text in self.threats:
            try:
                canonical = build_threat(text).canonical
            except RobenchError as exc:
                out.append(f"spec threat {text!r}: {exc}")
                continue
            if canonical != text:
                out.append(f"spec threat {text!r} is not canonical; with the current defaults it reads {canonical!r}")
        for text in self.details_only:
            if text not in self.threats:
                out.append(f"details_only threat {text!r} is not one of the spec's threats")
        for pattern, count in self.threat_n.items():
            matched = [t for t in self.threats if names_threat(pattern, t)]
            if not matched:
                out.append(f"threat_n pattern {pattern!r} names none of the spec's threats")
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= self.n:
                out.append(f"threat_n {pattern!r} must be a whole number of examples from 1 to n ({self.n}); "
                           f"got {count!r}")
        for t in self.threats:
            several = [p for p in self.threat_n if names_threat(p, t)]
            if len(several) > 1:
                out.append(f"threat {t.split(':')[0]} is named by several threat_n patterns: {', '.join(several)}")
        for model in set(self.models) & set(self.pending):
            out.append(f"model {model!r} is listed both in models and in pending")
        return out


def names_threat(pattern: str, threat: str) -> bool:
    """Whether `pattern` (a threat name, with parameters that single threats out: "autoattack:norm=l2")
    names the canonical spec threat `threat`."""
    from robench.spec import ThreatSpec

    want, spec = ThreatSpec.parse(pattern), ThreatSpec.parse(threat)
    return want.name == spec.name and all(k in spec.params and spec.params[k] == v for k, v in want.params.items())
