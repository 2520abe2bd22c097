"""Flags: warnings, with their evidence, that an evaluation looks broken and its number should not be
trusted as it stands (gradient masking, a randomized model evaluated as a deterministic one, an attack
weaker than it should be).

A Record's own flags are in its metrics (``metrics["flags"]``, written by its threat's `summarize`, e.g.
robench.attacks.checks). Others only show when Records of the same model are compared (PGD and the
ensemble disagreeing, robust accuracy rising with more steps): each threat finds those in
`Threat.compare`. `flags_of` gives both, per Record, for tables and leaderboards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class Flag:
    """One warning: a short code (``zero-gradient``), a one-sentence message that says what was seen and
    what to do, and the evidence (JSON-ready numbers)."""

    code: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "evidence": self.evidence}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Flag":
        return cls(data["code"], data["message"], dict(data.get("evidence", {})))


#: the table column that lists a model's flags; "-" when there are none, NOT_CHECKED when its attack
#: Records predate the sanity checks
COLUMN, NOT_CHECKED = "flags", "not checked"


def cell(flags: Sequence[Flag], checked: bool = True) -> str:
    """The flags' codes, each once, for a table cell."""
    return ", ".join(dict.fromkeys(f.code for f in flags)) or ("-" if checked else NOT_CHECKED)


def own_flags(record: Any) -> list[Flag]:
    """The flags a Record's threat wrote into its metrics."""
    return [Flag.from_json(f) for f in _metrics(record).get("flags", [])]


def checked(record: Any) -> bool:
    """Whether the Record's threat ran sanity checks (Records from before the checks existed did not)."""
    return "flags" in _metrics(record)


def flags_of(records: Sequence[Any]) -> list[list[Flag]]:
    """Per Record (in order): its own flags and those its threat's `Threat.compare` finds against the
    other Records of the same model (weights), data, examples and seed (dicts or robench.evaluate.Record)."""
    data = [r if isinstance(r, dict) else r.to_dict() for r in records]
    threats = [_threat(d["threat"]) for d in data]
    out = []
    for i, (record, threat) in enumerate(zip(data, threats)):
        others = [(threats[j], data[j]["metrics"]) for j in range(len(data))
                  if j != i and threats[j] is not None and _group(data[j]) == _group(record)]
        found = own_flags(record)
        if threat is not None:
            found += threat.compare(record["metrics"], others)
        out.append(found)
    return out


def _metrics(record: Any) -> dict[str, Any]:
    return record["metrics"] if isinstance(record, dict) else record.metrics


def _group(record: dict[str, Any]) -> tuple:
    """What two Records must share to be compared: the model and its weights, the data and the seed."""
    prov = record.get("provenance", {})
    return (record.get("model"), prov.get("model_sha256"), record.get("dataset"), record.get("split"),
            prov.get("indices"), prov.get("seed"))


def _threat(text: str) -> Any:
    """The Threat a Record's spec builds, or None where it no longer builds (an uninstalled plugin)."""
    from robench.errors import RobenchError
    from robench.threats import build_threat

    try:
        return build_threat(text)
    except RobenchError:
        return None
