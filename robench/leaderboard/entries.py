"""Leaderboard entries: the entry file format, when a stored Record counts for a spec (staleness), the
consistency checks of an entry's accuracies, the per-example outcomes of deterministic threats (and the
confidences behind their calibration metrics), and `Leaderboard` (a folder's spec and entries, its
problems, and check/render of its files)."""
from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from robench.errors import RobenchError
from robench.leaderboard.spec import Spec, locate
from robench.metrics import accuracies, ece_of

#: the entry file format; bump when its layout changes
ENTRY_FORMAT = 1
RENDERED = ("README.md", "index.html")
FIGURES = "figures"
#: a Record's optional per-example outcomes: metric path -> the correct mask (example i of the slice at bit i,
#: numpy.packbits little bit order), base64; written for the accuracies of deterministic threats
OUTCOMES = "per_example_correct"
#: a Record's optional per-example top-class confidences and hits behind each of its ECEs: calibration
#: metric path ("calibration/fog") -> {"accuracy": the accuracy path of the hits, "baseline": true for the
#: unshifted data, "hits": the correct mask (packed as the outcomes), "confidence": base64 of
#: little-endian uint16 round(confidence * 65535)};
#: written for the Records that claims on calibration compare (robench.leaderboard.claims), random
#: corruptions too: they are the outcomes of the evaluation itself
CONFIDENCES = "per_example_confidence"
_CONFIDENCE_SCALE = 65535
#: how far the ECE recomputed from the stored (rounded) confidences may be from the Record's
ECE_TOLERANCE = 1e-4
_SAFE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9_-])?")


def entry_path(folder: Path, model: str) -> Path:
    return folder / "entries" / f"{model}.json"


def make_entry(spec: Spec, model: str, records: Sequence[Any], source: dict[str, Any]) -> dict[str, Any]:
    """An entry: the protocol it was computed under, where the model came from, and one Record per threat."""
    return {"format": ENTRY_FORMAT, "leaderboard": spec.name, "model": model, "protocol": spec.protocol,
            "protocol_hash": spec.protocol_hash, "source": source,
            "records": [r.to_dict() if hasattr(r, "to_dict") else r for r in records]}


def dump_entry(entry: dict[str, Any]) -> str:
    # key order is kept (not sorted): tables list corruptions, eps and radii in the threat's own order
    return json.dumps(entry, indent=1, allow_nan=False) + "\n"


def record_problem(spec: Spec, record: dict[str, Any] | None, threat: str, versions: dict[str, int] | None = None,
                   sha256: str | None = None) -> str | None:
    """Why a stored Record does not count for `threat` under `spec` (None when it does): missing, another
    protocol, an older version of the threat's code or of the evaluation loop, or other weights than `sha256`."""
    from robench.evaluate import EVALUATION_VERSION

    if record is None:
        return "missing"
    prov = record.get("provenance", {})
    if record.get("threat") != threat:
        return f"threat {record.get('threat')!r}"
    for key, want in (("dataset", spec.dataset), ("split", spec.split), ("indices", spec.indices_of(threat)),
                      ("seed", spec.seed)):
        got = prov.get(key, record.get(key))
        if got != want:
            return f"{key} {got!r}, spec {want!r}"
    if versions is not None and prov.get("threat_version") != versions.get(threat):
        return f"threat version {prov.get('threat_version')}, code has {versions.get(threat)}"
    if prov.get("evaluation_version", 1) != EVALUATION_VERSION:
        return f"evaluation loop version {prov.get('evaluation_version', 1)}, code has {EVALUATION_VERSION}"
    if sha256 is not None and prov.get("model_sha256") != sha256:
        return f"weights sha256 {str(prov.get('model_sha256'))[:12]}, model has {sha256[:12]}"
    return None


def check_entry_name(name: str) -> str:
    """`name` if it is safe as an entry's file name (entries/NAME.json), else a RobenchError."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise RobenchError(f"entry name {name!r} is not a safe file name: use 1 to 100 ASCII letters, digits, "
                           "'.', '_' and '-', starting with a letter or digit, not ending with '.', without '..'.")
    return name


def _stored_accuracies(metrics: Any, prefix: str = "") -> dict[str, dict[str, Any]]:
    """metric path ("robust_accuracy/0.1") -> every stored accuracy (JSON) in a Record's metrics, also one
    that lost a key (a hand-edited entry), so that the consistency check can name it."""
    out = {}
    items = metrics.items() if isinstance(metrics, dict) else enumerate(metrics) if isinstance(metrics, list) else ()
    for key, value in items:
        if isinstance(value, dict) and {"value", "n", "ci95"} <= set(value):
            out[f"{prefix}{key}"] = value
        elif isinstance(value, (dict, list)):
            out.update(_stored_accuracies(value, f"{prefix}{key}/"))
    return out


def _pack(mask: Any) -> str:
    import numpy as np

    return base64.b64encode(np.packbits(mask, bitorder="little").tobytes()).decode()


def _unpack(text: str, n: int) -> Any:
    import numpy as np

    raw = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8)
    if len(raw) != -(-n // 8):
        raise ValueError(f"{len(raw)} bytes for {n} examples")
    return np.unpackbits(raw, bitorder="little").astype(bool)


def accuracy_problems(spec: Spec, model: str, record: dict[str, Any]) -> list[str]:
    """Where a Record contradicts itself: an accuracy whose value is not correct/n, whose interval is not the
    Clopper-Pearson one of its counts, whose n is not the protocol's (for a record under the protocol),
    whose per-example outcomes do not add up to its count, or whose per-example confidences do not give
    its ECE."""
    from robench.metrics import clopper_pearson

    where = f"{model}: {str(record.get('threat')).split(':')[0]}"
    want_n = spec.n_of(str(record.get("threat")))
    on_slice = record.get("provenance", {}).get("indices") == f"0:{want_n}"
    out = [f"{where}: record n {record.get('n')}, the protocol's n is {want_n}"] if (
        on_slice and record.get("n") != want_n) else []
    stored = _stored_accuracies(record.get("metrics", {}))
    for path, acc in stored.items():
        k, n, value, ci = acc.get("correct"), acc["n"], acc["value"], acc["ci95"]
        if not (isinstance(k, int) and isinstance(n, int) and 0 <= k <= n and n > 0):
            out.append(f"{where} {path}: correct {k!r} of n {n!r} are not counts")
            continue
        if value != k / n:
            out.append(f"{where} {path}: value {value!r} stored, {k / n!r} recomputed (correct/n = {k}/{n})")
        want = list(clopper_pearson(k, n))
        if not (isinstance(ci, list) and len(ci) == 2 and all(abs(a - b) <= 1e-9 for a, b in zip(ci, want))):
            out.append(f"{where} {path}: ci95 {ci!r} stored, {want!r} recomputed (Clopper-Pearson of {k}/{n})")
        if on_slice and n != want_n:
            out.append(f"{where} {path}: n {n} stored, the protocol's n is {want_n}")
    for path, text in record.get(OUTCOMES, {}).items():
        acc = stored.get(path)
        try:
            count = int(_unpack(text, acc["n"]).sum()) if acc else None
        except (ValueError, TypeError) as exc:
            out.append(f"{where} {path}: {OUTCOMES} is not a packed mask of {acc['n']} examples ({exc})")
            continue
        if count is None or count != acc.get("correct"):
            out.append(f"{where} {path}: {OUTCOMES} counts {count} correct, the accuracy {acc and acc.get('correct')}")
    for path, stored_ece in _stored_eces(record).items():
        try:
            confidence, hits = confidences_of(record, path)
        except RobenchError as exc:
            out.append(f"{where} {path}: {CONFIDENCES}: {exc}")
            continue
        if stored_ece is None or abs(ece_of(confidence, hits) - stored_ece) > ECE_TOLERANCE:
            out.append(f"{where} {path}: {CONFIDENCES} give ECE {ece_of(confidence, hits):.6f}, the Record "
                       f"{stored_ece if stored_ece is None else round(stored_ece, 6)}")
    return out


def _stored_eces(record: dict[str, Any]) -> dict[str, float | None]:
    """Calibration path -> the Record's ECE there, for each path with stored confidences."""
    out = {}
    for path in record.get(CONFIDENCES, {}):
        node: Any = record.get("metrics", {})
        for key in path.split("/"):
            node = node.get(key) if isinstance(node, dict) else None
        out[path] = node.get("ece") if isinstance(node, dict) else None
    return out


def confidences_of(record: dict[str, Any], path: str) -> tuple[Any, Any]:
    """The stored per-example confidences of calibration metric `path` and their hits (correct mask);
    a RobenchError says what is missing or does not add up."""
    import numpy as np

    item = record.get(CONFIDENCES, {}).get(path)
    if not isinstance(item, dict) or not {"accuracy", "hits", "confidence"} <= set(item):
        raise RobenchError(f"no per-example confidences and hits for {path}")
    acc = _stored_accuracies(record.get("metrics", {})).get(item["accuracy"])
    if acc is None:
        raise RobenchError(f"the accuracy {item['accuracy']!r} of {path}'s hits is not in the Record")
    try:
        raw = np.frombuffer(base64.b64decode(item["confidence"], validate=True), dtype="<u2")
        hits = _unpack(item["hits"], acc["n"])[:acc["n"]]
    except (ValueError, TypeError) as exc:
        raise RobenchError(f"{path}: unreadable confidences or hits ({exc})") from None
    if len(raw) != acc["n"] or int(hits.sum()) != acc["correct"]:
        raise RobenchError(f"{path}: {len(raw)} confidences and {int(hits.sum())} hits; the accuracy "
                           f"{item['accuracy']} has {acc['correct']} correct of {acc['n']}")
    return raw / _CONFIDENCE_SCALE, hits


def outcome_masks(threat: Any, outputs: dict[str, Any]) -> dict[str, Any]:
    """metric path -> per-example correct mask, for the accuracies that the deterministic parts of `threat`
    report (Threat.deterministic: no randomness, so any sample of the examples recomputes them exactly),
    from its per-example `outputs` (each example summarized on its own); {} for a random threat."""
    import numpy as np

    masks: dict[str, Any] = {}
    n = len(next(iter(outputs.values()), ()))
    for part in threat.parts().values():
        if not getattr(part, "deterministic", False) or not n:
            continue
        try:
            each = [accuracies(part.summarize({k: v[i:i + 1] for k, v in outputs.items()})) for i in range(n)]
        except Exception:  # noqa: BLE001 - a threat whose summary needs more than one example: no digest
            continue
        masks.update({path: np.array([e[path].correct == 1 for e in each]) for path in each[0]})
    return masks


def with_outcomes(record: Any, threat: Any, confidences: bool = False) -> dict[str, Any]:
    """A fresh Record (evaluated with outputs) as a dict, with the per-example outcomes of its deterministic
    accuracies packed in (those whose mask adds up to the accuracy's count), and with `confidences` the
    confidences and hits behind its ECEs (about 3 bytes per example and condition, so only for the Records
    that claims on calibration compare)."""
    import numpy as np

    data = record.to_dict()
    stored = accuracies(data["metrics"])
    packed = {path: _pack(mask) for path, mask in outcome_masks(threat, record.outputs or {}).items()
              if path in stored and int(mask.sum()) == stored[path].correct}
    if packed:
        data[OUTCOMES] = packed
    confidences = {path: {"accuracy": accuracy, "baseline": baseline, "hits": _pack(np.asarray(hit, dtype=bool)),
                          "confidence": base64.b64encode(np.round(np.asarray(conf, dtype=np.float64)
                                                                  * _CONFIDENCE_SCALE).astype("<u2").tobytes()).decode()}
                   for path, (conf, hit, accuracy, baseline) in threat.confidences(record.outputs or {}).items()
                   if confidences}
    if confidences:
        data[CONFIDENCES] = confidences
    return data


@dataclass
class Leaderboard:
    folder: Path
    spec: Spec
    entries: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, name: str | Path) -> "Leaderboard":
        folder = locate(name)
        spec = Spec.load(folder / "spec.toml")
        entries = {}
        for path in sorted((folder / "entries").glob("*.json")):
            try:
                entries[path.stem] = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise RobenchError(f"entry {path} is not valid JSON: {exc}") from None
        return cls(folder, spec, entries)

    def records(self, model: str) -> dict[str, dict[str, Any]]:
        """threat canonical string -> Record dict of a model's entry."""
        return {r["threat"]: r for r in self.entries.get(model, {}).get("records", [])}

    def inconsistencies(self, model: str) -> list[str]:
        """Where `model`'s entry contradicts itself (see accuracy_problems)."""
        return [p for r in self.entries.get(model, {}).get("records", []) for p in accuracy_problems(self.spec, model, r)]

    def threat_versions(self) -> dict[str, int]:
        from robench.threats import build_threat

        return {t: build_threat(t).version for t in self.spec.threats}

    def problems(self) -> list[str]:
        """Every way the entries disagree with the spec (no model is loaded)."""
        out = self.spec.problems()
        versions = self.threat_versions() if not out else None
        for model in self.spec.models:
            entry = self.entries.get(model)
            if entry is None:
                out.append(f"{model}: no entry (entries/{model}.json); run `robench leaderboard update "
                           f"{self.spec.name}`")
                continue
            if entry.get("model") != model:
                out.append(f"{model}: entry names model {entry.get('model')!r}")
            if entry.get("protocol") != self.spec.protocol:
                out.append(f"{model}: entry protocol {entry.get('protocol_hash')} differs from the spec's "
                           f"{self.spec.protocol_hash}")
            records = self.records(model)
            for threat in self.spec.threats:
                why = record_problem(self.spec, records.get(threat), threat, versions)
                if why:
                    out.append(f"{model}: {threat.split(':')[0]} record is stale or missing ({why})")
            extra = sorted(set(records) - set(self.spec.threats))
            if extra:
                out.append(f"{model}: records for threats not in the spec: {', '.join(extra)}")
            out += self.inconsistencies(model)
        for model in sorted(set(self.entries) - set(self.spec.models)):
            out.append(f"entries/{model}.json: model not listed in the spec's models")
        if self.spec.headline and self.entries:
            from robench.leaderboard.views import table

            columns = table(self, every_column=True)[0]
            for title in self.spec.headline:
                if title not in columns:
                    out.append(f"headline column {title!r} is not a column of the entries; they have "
                               f"{', '.join(repr(c) for c in columns)}")
            if self.spec.sort not in self.spec.headline:
                out.append(f"sort column {self.spec.sort!r} is not one of the headline columns")
        from robench.leaderboard import claims

        return out + claims.problems(self)

    # ------------------------------------------------------------------------------------- rendering

    def rendered(self) -> dict[str, str]:
        """Relative path -> text of every rendered file."""
        from robench.leaderboard.render import render_figures, render_html, render_readme

        figures = render_figures(self)
        files = {"README.md": render_readme(self, figures)}
        files["index.html"] = render_html(self, figures)
        files.update({f"{FIGURES}/{name}": svg for name, svg in figures.items()})
        return files

    def render_to_disk(self) -> list[Path]:
        from robench.files import atomic_write

        files = self.rendered()
        for old in (self.folder / FIGURES).glob("*.svg"):
            if f"{FIGURES}/{old.name}" not in files:
                old.unlink()
        written = []
        for rel, text in files.items():
            path = self.folder / rel
            if not path.is_file() or path.read_text() != text:
                atomic_write(path, text)
                written.append(path)
        return written

    def check(self) -> list[str]:
        """Problems with the entries plus every committed file that differs from a fresh render."""
        out = self.problems()
        files = self.rendered()
        for rel, text in files.items():
            path = self.folder / rel
            if not path.is_file():
                out.append(f"{rel}: missing; run `robench leaderboard update {self.spec.name}`")
            elif path.read_text() != text:
                out.append(f"{rel}: differs from the entries (rendered files are never edited by hand); "
                           f"run `robench leaderboard update {self.spec.name}`")
        for old in sorted((self.folder / FIGURES).glob("*.svg")):
            if f"{FIGURES}/{old.name}" not in files:
                out.append(f"{FIGURES}/{old.name}: not rendered from the entries")
        return out
