"""Leaderboards: a folder with spec.toml (the protocol), entries/<model>.json (one entry per model: the
Records of every threat, with 95% intervals and provenance), and README.md, index.html and figures/*.svg
rendered from the entries.

`update` computes what is missing or stale (through the results store) and re-renders; `check`
re-renders in memory and lists every difference from the committed files (no model is evaluated);
`verify` recomputes a random sample of an entry's examples; `submit` evaluates a user's model under
the exact protocol and writes an entry file.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from robench.errors import RobenchError
from robench.spec import read_toml
from robench.tables import format_cell, is_accuracy, render_grid

#: the entry file format; bump when its layout changes
ENTRY_FORMAT = 1
RENDERED = ("README.md", "index.html")
FIGURES = "figures"
#: a Record's optional per-example outcomes: metric path -> the correct mask (example i of the slice at bit i,
#: numpy.packbits little bit order), base64; written for the accuracies of deterministic threats
OUTCOMES = "per_example_correct"
#: `verify` fails an accuracy whose two-sided hypergeometric p-value is below this
P_THRESHOLD = 0.001
_SAFE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9_-])?")


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


# ---------------------------------------------------------------------------------------------- spec

@dataclass
class Spec:
    """spec.toml: the protocol every entry of the leaderboard is evaluated under."""

    name: str
    title: str
    dataset: str
    split: str
    n: int
    threats: list[str]
    models: list[str]
    seed: int = 0
    sort: str = "clean"
    pending: list[str] = field(default_factory=list)
    description: str = ""

    @classmethod
    def load(cls, path: str | Path) -> "Spec":
        path = Path(path)
        raw = read_toml(path, "leaderboard spec", cls.__dataclass_fields__)
        missing = sorted({"name", "title", "dataset", "split", "n", "threats", "models"} - set(raw))
        if missing:
            raise RobenchError(f"{path}: missing keys {missing}.")
        spec = cls(**raw)
        if not isinstance(spec.n, int) or spec.n < 1:
            raise RobenchError(f"{path}: n must be a positive integer (the first n examples); got {spec.n!r}.")
        return spec

    @property
    def protocol(self) -> dict[str, Any]:
        """What an entry must have been computed under."""
        return {"dataset": self.dataset, "split": self.split, "indices": f"0:{self.n}", "seed": self.seed,
                "threats": list(self.threats)}

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
        for model in set(self.models) & set(self.pending):
            out.append(f"model {model!r} is listed both in models and in pending")
        return out


# --------------------------------------------------------------------------------------------- entries

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
    for key, want in (("dataset", spec.dataset), ("split", spec.split), ("indices", f"0:{spec.n}"),
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


def _accuracies(metrics: Any, prefix: str = "") -> dict[str, dict[str, Any]]:
    """metric path ("robust_accuracy/0.1") -> every accuracy dict in a Record's metrics."""
    out = {}
    items = metrics.items() if isinstance(metrics, dict) else enumerate(metrics) if isinstance(metrics, list) else ()
    for key, value in items:
        if is_accuracy(value):
            out[f"{prefix}{key}"] = value
        elif isinstance(value, (dict, list)):
            out.update(_accuracies(value, f"{prefix}{key}/"))
    return out


def _unpack(text: str, n: int) -> Any:
    import numpy as np

    raw = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8)
    if len(raw) != -(-n // 8):
        raise ValueError(f"{len(raw)} bytes for {n} examples")
    return np.unpackbits(raw, bitorder="little").astype(bool)


def accuracy_problems(spec: Spec, model: str, record: dict[str, Any]) -> list[str]:
    """Where a Record contradicts itself: an accuracy whose value is not correct/n, whose interval is not the
    Clopper-Pearson one of its counts, whose n is not the protocol's (for a record under the protocol), or
    whose per-example outcomes do not add up to its count."""
    from robench.metrics import clopper_pearson

    where = f"{model}: {str(record.get('threat')).split(':')[0]}"
    on_slice = record.get("provenance", {}).get("indices") == f"0:{spec.n}"
    out = [f"{where}: record n {record.get('n')}, the protocol's n is {spec.n}"] if (
        on_slice and record.get("n") != spec.n) else []
    accuracies = _accuracies(record.get("metrics", {}))
    for path, acc in accuracies.items():
        k, n, value, ci = acc.get("correct"), acc["n"], acc["value"], acc["ci95"]
        if not (isinstance(k, int) and isinstance(n, int) and 0 <= k <= n and n > 0):
            out.append(f"{where} {path}: correct {k!r} of n {n!r} are not counts")
            continue
        if value != k / n:
            out.append(f"{where} {path}: value {value!r} stored, {k / n!r} recomputed (correct/n = {k}/{n})")
        want = list(clopper_pearson(k, n))
        if not (isinstance(ci, list) and len(ci) == 2 and all(abs(a - b) <= 1e-9 for a, b in zip(ci, want))):
            out.append(f"{where} {path}: ci95 {ci!r} stored, {want!r} recomputed (Clopper-Pearson of {k}/{n})")
        if on_slice and n != spec.n:
            out.append(f"{where} {path}: n {n} stored, the protocol's n is {spec.n}")
    for path, text in record.get(OUTCOMES, {}).items():
        acc = accuracies.get(path)
        try:
            count = int(_unpack(text, acc["n"]).sum()) if acc else None
        except (ValueError, TypeError) as exc:
            out.append(f"{where} {path}: {OUTCOMES} is not a packed mask of {acc['n']} examples ({exc})")
            continue
        if count is None or count != acc.get("correct"):
            out.append(f"{where} {path}: {OUTCOMES} counts {count} correct, the accuracy {acc and acc.get('correct')}")
    return out


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
            each = [_accuracies(part.summarize({k: v[i:i + 1] for k, v in outputs.items()})) for i in range(n)]
        except Exception:  # noqa: BLE001 - a threat whose summary needs more than one example: no digest
            continue
        masks.update({path: np.array([e[path]["correct"] == 1 for e in each]) for path in each[0]})
    return masks


def with_outcomes(record: Any, threat: Any) -> dict[str, Any]:
    """A fresh Record (evaluated with outputs) as a dict, with the per-example outcomes of its deterministic
    accuracies packed in (those whose mask adds up to the accuracy's count)."""
    import numpy as np

    data = record.to_dict()
    accuracies = _accuracies(data["metrics"])
    packed = {path: base64.b64encode(np.packbits(mask, bitorder="little").tobytes()).decode()
              for path, mask in outcome_masks(threat, record.outputs or {}).items()
              if path in accuracies and int(mask.sum()) == accuracies[path]["correct"]}
    if packed:
        data[OUTCOMES] = packed
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
        return out

    # ------------------------------------------------------------------------------------- rendering

    def rendered(self) -> dict[str, str]:
        """Relative path -> text of every rendered file."""
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


# ------------------------------------------------------------------------------------ headline table

def _threat_name(threat: str) -> str:
    from robench.spec import ThreatSpec

    return ThreatSpec.parse(threat).name


def _params(threat: str) -> dict[str, Any]:
    from robench.spec import ThreatSpec

    return ThreatSpec.parse(threat).params


def _eps(key: str) -> str:
    return f"{float(key):g}"


def headline(record: dict[str, Any]) -> dict[str, Any]:
    """Leaderboard columns of one Record: clean accuracy, robust accuracy per eps, MNIST-C mean,
    certified accuracy per radius > 0, bit flips to the target accuracy."""
    name, m = _threat_name(record["threat"]), record["metrics"]
    if name == "clean":
        return {"clean": m["clean_accuracy"]}
    if name in ("pgd-linf", "pgd-l2", "fgsm") or record["kind"] == "input-attack":
        label = {"pgd-linf": "PGD Linf", "pgd-l2": "PGD L2", "fgsm": "FGSM"}.get(name, name)
        return {f"{label} {_eps(e)}": acc for e, acc in m.get("robust_accuracy", {}).items()}
    if name == "mnist-c":
        return {"MNIST-C mean": m.get("mean_accuracy")}
    if record["kind"] == "corruption":
        return {f"{name} mean": m.get("mean_accuracy")}
    if name == "smoothing":
        sigma = _params(record["threat"]).get("sigma")
        return {f"certified r={_eps(r)} (σ={sigma:g})": acc for r, acc in m["certified_accuracy"].items()
                if float(r) > 0}
    if name == "bitflip":
        flips = m.get("flips_to_target")
        return {f"BFA flips to {100 * m['target']:g}%": flips if flips is not None else f">{m['flips']}"}
    return {}


def sort_value(value: Any) -> float:
    """A number to sort a cell by (accuracy value, number, ">N" as N + 0.5); missing sorts last."""
    if is_accuracy(value):
        return float(value["value"])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.startswith(">"):
        try:
            return float(value[1:]) + 0.5
        except ValueError:
            pass
    return -math.inf


def table(lb: Leaderboard) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Headline columns and model -> column -> value, rows sorted by the spec's key (descending, then by
    clean accuracy, then by name)."""
    columns: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    for model in lb.spec.models:
        records = lb.records(model)
        row = rows.setdefault(model, {})
        for threat in lb.spec.threats:
            if threat in records:
                for title, value in headline(records[threat]).items():
                    row.setdefault(title, value)
                    if title not in columns:
                        columns.append(title)
    if "clean" in columns:
        columns.remove("clean")
        columns.insert(0, "clean")
    key = lb.spec.sort

    def order(item: tuple[str, dict[str, Any]]) -> tuple:
        model, row = item
        return (-sort_value(row.get(key)), -sort_value(row.get("clean")), model)

    return columns, dict(sorted(rows.items(), key=order))


def _pct(value: Any) -> Any:
    return f"{100 * value:.1f}" if isinstance(value, float) else value


def _headline_cells(columns: list[str], rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m: {c: _pct(v) if c.endswith("mean") else v for c, v in r.items()} for m, r in rows.items()}


def show(lb: Leaderboard, fmt: str = "markdown") -> str:
    """The headline table as markdown, csv, latex or aligned text."""
    columns, rows = table(lb)
    if fmt == "csv":
        return render_grid(columns, rows, "csv")
    return render_grid(columns, _headline_cells(columns, rows), fmt, note=note(lb.spec, columns))


def note(spec: Spec, columns: Sequence[str]) -> str:
    """The legend under the headline table, for the columns it has."""
    parts = [f"Accuracy in % on the first {spec.n} {spec.split} examples, with the 95% Clopper-Pearson "
             "interval in brackets."]
    if any(c.endswith(" mean") for c in columns):
        parts.append("MNIST-C mean: the mean of the per-corruption accuracies (their intervals are in the "
                     "detail table).")
    if any(c.startswith("certified") for c in columns):
        parts.append("Certified: randomized-smoothing certified accuracy at that L2 radius.")
    if any(c.startswith("BFA") for c in columns):
        parts.append("BFA flips: bit flips the progressive bit search needs to bring the 8-bit model's "
                     "accuracy down to the target, the median over attack batches (their range is in the detail "
                     "table; more is better; >N: not reached within N).")
    parts.append(f"Sorted by {spec.sort}, best first.")
    return " ".join(parts)


# ------------------------------------------------------------------------------------- detail tables

def details(lb: Leaderboard) -> list[tuple[str, list[str], dict[str, dict[str, Any]]]]:
    """(title, columns, rows) per threat of the spec: every metric the headline leaves out."""
    out = []
    order = list(table(lb)[1])
    for threat in lb.spec.threats:
        name = _threat_name(threat)
        columns: list[str] = []
        rows: dict[str, dict[str, Any]] = {}
        for model in order:
            record = lb.records(model).get(threat)
            if record is None:
                continue
            m, row = record["metrics"], rows.setdefault(model, {})
            if record["kind"] == "input-attack":
                row["clean"] = m["clean_accuracy"]
                for e, acc in m["robust_accuracy"].items():
                    row[f"eps {_eps(e)}"] = acc
                for e, norm in m.get("mean_perturbation_norm", {}).items():
                    row[f"mean norm @{_eps(e)}"] = norm
            elif record["kind"] == "corruption":
                row["clean"] = m["clean_accuracy"]
                for c, acc in m.get("accuracy", {}).items():
                    row[c] = acc
                if "mean_accuracy" in m:
                    row["mean"] = _pct(m["mean_accuracy"])
                    row["relative drop %"] = _pct(m.get("relative_drop"))
                    eces = [v["ece"] for k, v in m["calibration"].items() if k != "clean"]
                    row["mean ECE"] = sum(eces) / len(eces)
                row["clean ECE"] = m["calibration"]["clean"]["ece"]
            elif record["kind"] == "certification":
                row["smoothed clean"] = m["clean_accuracy"]
                for r, acc in m["certified_accuracy"].items():
                    row[f"r={_eps(r)}"] = acc
                row["ACR"] = m["average_certified_radius"]
                row["abstain"] = m["abstention_rate"]
                row["max radius"] = m["max_radius"]
            elif name == "bitflip":
                row["8-bit"] = m["quantized_accuracy"]
                row[f"flips to {100 * m['target']:g}%"] = headline(record)[f"BFA flips to {100 * m['target']:g}%"]
                budget = _params(record["threat"])["flips"]
                lo, hi = (f">{budget}" if v is None else v for v in m["flips_to_target_range"])
                row["range over batches"] = f"{lo} to {hi}"
                row["batches"] = m["batches"]
                row["final"] = m["final_accuracy"]
                row["flips"] = m["flips"]
                row["hamming"] = m["hamming_distance"]
            elif name == "bitflip-random":
                row["8-bit"] = m["quantized_accuracy"]
                row[f"median acc. after {m['flips']} random flips %"] = _pct(m["median_accuracy"])
                row["seeds"] = m["seeds"]
            else:
                from robench.tables import headline as generic

                from robench.evaluate import Record

                row.update(generic(Record.from_dict(record)))
            for c in row:
                if c not in columns:
                    columns.append(c)
        if rows:
            out.append((threat, columns, rows))
    return out


def provenance_rows(lb: Leaderboard) -> tuple[list[str], dict[str, dict[str, Any]]]:
    columns = ["weights sha256", "source", "robench", "torch", "commit", "device", "computed", "wall s"]
    rows = {}
    for model in table(lb)[1]:
        entry = lb.entries.get(model, {})
        recs = entry.get("records", [])
        if not recs:
            continue
        p = recs[0]["provenance"]
        source = entry.get("source", {})
        rows[model] = {"weights sha256": str(p.get("model_sha256", ""))[:12],
                       "source": source.get("zoo") and f"zoo {source['zoo']}" or source.get("model", "submitted"),
                       "robench": p.get("robench"), "torch": p.get("torch"),
                       "commit": str(p.get("git_commit") or "-")[:10], "device": p.get("device"),
                       "computed": max(str(r["provenance"].get("started", ""))[:10] for r in recs),
                       "wall s": round(sum(float(r["provenance"].get("wall_seconds", 0)) for r in recs))}
    return columns, rows


# -------------------------------------------------------------------------------------------- figures

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
            "#7f7f7f", "#bcbd22")


def _ticks(values: list[float], most: int = 8) -> list[float]:
    """The x values themselves when few, else about `most` round numbers spanning them."""
    if len(values) <= most:
        return values
    lo, hi = values[0], values[-1]
    raw = (hi - lo) / (most - 1)
    step = 10 ** math.floor(math.log10(raw))
    step = next(m * step for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def svg_curves(curves: dict[str, list[tuple[float, float]]], *, title: str, xlabel: str,
               ylabel: str = "accuracy", ymax: float = 1.0) -> str:
    """A small deterministic SVG line chart: one line per name through its (x, y) points; all text escaped."""
    e = html.escape
    w, h, left, right, top, bottom = 560, 330, 52, 170, 28, 40
    xs = [x for pts in curves.values() for x, _ in pts] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    pw, ph = w - left - right, h - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (1 - y / ymax) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{left}" y="16" font-size="13">{e(title)}</text>']
    for i in range(6):
        y = ymax * i / 5
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
    for x in _ticks(sorted(set(xs))):
        parts.append(f'<text x="{px(x):.1f}" y="{top + ph + 15}" text-anchor="middle">{x:g}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{h - 6}" text-anchor="middle">{e(xlabel)}</text>')
    parts.append(f'<text x="12" y="{top + ph / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + ph / 2:.1f})">{e(ylabel)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    for i, (name, pts) in enumerate(curves.items()):
        colour = _PALETTE[i % len(_PALETTE)]
        pts = sorted(pts)
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in pts
                  if len(pts) < 30]
        ly = top + 10 + 15 * i
        parts.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 28}" y1="{ly}" y2="{ly}" stroke="{colour}" '
                     f'stroke-width="2"/>')
        parts.append(f'<text x="{left + pw + 32}" y="{ly + 4}">{e(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def render_figures(lb: Leaderboard) -> dict[str, str]:
    """figure file name -> SVG: robustness curves per input attack, certified accuracy against radius,
    accuracy against bit flips."""
    figures: dict[str, str] = {}
    order = list(table(lb)[1])
    for threat in lb.spec.threats:
        name = _threat_name(threat)
        curves: dict[str, list[tuple[float, float]]] = {}
        for model in order:
            record = lb.records(model).get(threat)
            if record is None:
                continue
            m = record["metrics"]
            if record["kind"] == "input-attack":
                curves[model] = [(0.0, m["clean_accuracy"]["value"])] + [
                    (float(e), a["value"]) for e, a in m["robust_accuracy"].items()]
            elif record["kind"] == "certification":
                curves[model] = [(float(r), a["value"]) for r, a in m["certified_accuracy"].items()]
            elif name == "bitflip":
                curves[model] = [(0.0, m["quantized_accuracy"]["value"])] + [
                    (float(p["flips"]), p["accuracy"]) for p in m["accuracy_per_flip"]]
        if not curves:
            continue
        if name == "smoothing":
            fig = svg_curves(curves, title=f"Certified accuracy ({lb.spec.title})", xlabel="L2 radius")
        elif name == "bitflip":
            fig = svg_curves(curves, title=f"Accuracy under bit-flip attack ({lb.spec.title})", xlabel="bit flips")
        else:
            fig = svg_curves(curves, title=f"{name} ({lb.spec.title})", xlabel="eps")
        figures[f"{name.replace(':', '_')}.svg"] = fig
    return figures


# ------------------------------------------------------------------------------------------ README

def render_readme(lb: Leaderboard, figures: dict[str, str]) -> str:
    spec = lb.spec
    columns, rows = table(lb)
    lines = [f"# {spec.title} leaderboard", "",
             "<!-- Rendered by `robench leaderboard update` from spec.toml and entries/; do not edit. -->", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [f"Protocol: `{spec.dataset}` {spec.split} split, first {spec.n} examples, seed {spec.seed}, "
              f"protocol hash `{spec.protocol_hash}`. Sorted by **{spec.sort}** (best first).", ""]
    lines += [show(lb, "markdown").rstrip(), ""]
    if spec.pending:
        lines += ["Not evaluated yet (listed as `pending` in spec.toml): "
                  + ", ".join(f"`{m}`" for m in spec.pending) + ".", ""]
    lines += ["## Threats", ""] + [f"- `{t}`" for t in spec.threats] + [""]
    for threat, dcols, drows in details(lb):
        lines += [f"## {_threat_name(threat)}", "", f"`{threat}`", "",
                  render_grid(dcols, drows, "markdown", note="").rstrip(), ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({FIGURES}/{name})" for name in figures] + [""]
    pcols, prows = provenance_rows(lb)
    total = sum(r["wall s"] for r in prows.values())
    lines += ["## Provenance", "", render_grid(pcols, prows, "markdown", note="").rstrip(), "",
              f"Total compute of these entries: {total} s of wall time. Verify an entry with "
              f"`robench leaderboard verify {spec.name} MODEL --n 100`.", ""]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- HTML

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right}th:first-child,td:first-child{text-align:left}th.sortable{cursor:pointer;background:#f3f3f3}
th.sortable:hover{background:#e4e4e4}th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}.ci{color:#777;font-size:11px}code{font-size:12px}
img{max-width:100%;border:1px solid #eee;margin:4px}"""

# Sorts a table by a clicked header (numbers from data-sort); ?sort=N&dir=asc|desc sorts on load.
_JS = """(function(){
function sortTable(table, col, dir){
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  rows.sort(function(a, b){
    var x = a.cells[col].getAttribute('data-sort'), y = b.cells[col].getAttribute('data-sort');
    var nx = parseFloat(x), ny = parseFloat(y), c;
    if (!isNaN(nx) && !isNaN(ny)) { c = nx - ny; } else { c = String(x).localeCompare(String(y)); }
    return dir === 'asc' ? c : -c;
  });
  rows.forEach(function(r){ body.appendChild(r); });
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function(th, i){
    if (i === col) { th.setAttribute('aria-sort', dir === 'asc' ? 'ascending' : 'descending'); }
    else { th.removeAttribute('aria-sort'); }
  });
}
document.querySelectorAll('table.sortable').forEach(function(table){
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function(th, i){
    th.classList.add('sortable');
    th.addEventListener('click', function(){
      sortTable(table, i, th.getAttribute('aria-sort') === 'descending' ? 'asc' : 'desc');
    });
  });
});
var q = new URLSearchParams(window.location.search), main = document.getElementById('leaderboard');
if (main && q.has('sort')) { sortTable(main, parseInt(q.get('sort'), 10), q.get('dir') === 'asc' ? 'asc' : 'desc'); }
})();"""


def _html_table(columns: list[str], rows: dict[str, dict[str, Any]], table_id: str | None = None) -> str:
    e = html.escape
    ident = f' id="{e(table_id)}"' if table_id else ""
    out = [f'<table class="sortable"{ident}>', "<thead><tr><th>model</th>"
           + "".join(f"<th>{e(c)}</th>" for c in columns) + "</tr></thead>", "<tbody>"]
    for model, row in rows.items():
        cells = [f'<td data-sort="{e(model)}">{e(model)}</td>']
        for c in columns:
            value = row.get(c)
            key = sort_value(value)
            sort = "-1e9" if key == -math.inf else repr(round(key, 6))
            if is_accuracy(value):
                lo, hi = value["ci95"]
                text = (f'{100 * value["value"]:.1f} <span class="ci">[{100 * lo:.1f}, {100 * hi:.1f}]'
                        f' n={value["n"]}</span>')
            else:
                text = e(format_cell(value))
            cells.append(f'<td data-sort="{e(sort)}">{text}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def render_html(lb: Leaderboard, figures: dict[str, str]) -> str:
    """A static page: no external assets, sortable tables, figures inline as data URIs, all text escaped."""
    e, spec = html.escape, lb.spec
    columns, rows = table(lb)
    body = [f"<h1>{e(spec.title)} leaderboard</h1>"]
    if spec.description:
        body.append(f"<p>{e(spec.description.strip())}</p>")
    body.append(f"<p>Protocol: <code>{e(spec.dataset)}</code> {e(spec.split)} split, first {spec.n} examples, "
                f"seed {spec.seed}, protocol hash <code>{e(spec.protocol_hash)}</code>. Sorted by "
                f"<b>{e(spec.sort)}</b>; click a column header to sort.</p>")
    body.append(_html_table(columns, _headline_cells(columns, rows), "leaderboard"))
    body.append(f"<p>{e(note(spec, columns))}</p>")
    if spec.pending:
        body.append("<p>Not evaluated yet: " + ", ".join(f"<code>{e(m)}</code>" for m in spec.pending) + ".</p>")
    for threat, dcols, drows in details(lb):
        body.append(f"<h2>{e(_threat_name(threat))}</h2><p><code>{e(threat)}</code></p>")
        body.append(_html_table(dcols, drows))
    if figures:
        body.append("<h2>Figures</h2>")
        for name, svg in figures.items():
            uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
            body.append(f'<img alt="{e(name)}" src="{uri}">')
    pcols, prows = provenance_rows(lb)
    body += ["<h2>Provenance</h2>", _html_table(pcols, prows)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(spec.title)} leaderboard</title>\n<style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{_JS}</script>\n</body></html>\n")


# ---------------------------------------------------------------------------------- computing entries

Loader = Callable[[str], Any]


def _zoo_loader(name: str, data_root: str | None = None, progress: bool = False) -> Any:
    from robench import zoo

    return zoo.get(name).load(data_root=data_root, progress=progress)


def update(name: str | Path, *, store: Any = None, device: str | None = None, data_root: str | None = None,
           loader: Loader | None = None, progress: bool = False, models: Sequence[str] | None = None,
           log: Callable[[str], None] = lambda s: None) -> Leaderboard:
    """Compute every missing or stale Record of the spec's models (stale: another protocol, an older
    threat version, or other weights) through the results store, write the entries and re-render.
    An entry that contradicts itself (see accuracy_problems) is refused before anything is computed."""
    from robench.evaluate import evaluate, model_fingerprint
    from robench.store import Store
    from robench.threats import build_threat
    from robench.files import atomic_write

    lb = Leaderboard.load(name)
    problems = lb.spec.problems()
    if problems:
        raise RobenchError(f"{lb.folder / 'spec.toml'}: " + "; ".join(problems))
    _refuse_inconsistent(lb)
    store = store if isinstance(store, Store) else Store(store)
    versions = lb.threat_versions()
    load = loader or (lambda m: _zoo_loader(m, data_root, progress))
    for model_name in models or lb.spec.models:
        if model_name not in lb.spec.models:
            raise RobenchError(f"model {model_name!r} is not in {lb.spec.name}'s spec; add it to models first.")
        entry = lb.entries.get(model_name)
        if entry and entry.get("source", {}).get("zoo") is None and loader is None:
            log(f"{model_name}: submitted entry, kept as is (re-run `robench leaderboard submit` to refresh)")
            continue
        model = load(model_name)
        sha = model_fingerprint(model)
        records = lb.records(model_name)
        todo = [t for t in lb.spec.threats if record_problem(lb.spec, records.get(t), t, versions, sha)]
        if not todo and entry and entry.get("protocol") == lb.spec.protocol:
            log(f"{model_name}: up to date")
            continue
        old = sorted({str(r.get("provenance", {}).get("model_sha256"))[:12] for r in records.values()})
        if old and sha[:12] not in old:
            log(f"{model_name}: weights {sha[:12]} differ from the entry's {', '.join(old)} (trained on another "
                "CPU or torch build? see leaderboards/README.md): recomputing every record")
        for t in todo:
            log(f"{model_name}: {t.split(':')[0]} ({record_problem(lb.spec, records.get(t), t, versions, sha)})")
        built = [build_threat(t) for t in todo]
        fresh = evaluate(model, built, dataset=lb.spec.dataset, split=lb.spec.split, n=lb.spec.n,
                         data_root=data_root, store=store, seed=lb.spec.seed, device=device, model_name=model_name,
                         progress=progress, with_outputs=True)
        by_threat = {**records, **{r.threat: with_outcomes(r, t) for r, t in zip(fresh, built)}}
        for rec in by_threat.values():
            rec["model"] = model_name
            rec["provenance"]["model"] = model_name
        entry = make_entry(lb.spec, model_name, [by_threat[t] for t in lb.spec.threats],
                           {"zoo": model_name})
        text = dump_entry(entry)
        atomic_write(entry_path(lb.folder, model_name), text)
        lb.entries[model_name] = json.loads(text)  # render exactly what `check` will read back
    _refuse_inconsistent(lb)
    for path in lb.render_to_disk():
        log(f"wrote {path}")
    return lb


def _refuse_inconsistent(lb: Leaderboard) -> None:
    for model in lb.spec.models:
        problems = lb.inconsistencies(model)
        if problems:
            raise RobenchError(f"entry {model} of {lb.spec.name} contradicts itself (edited by hand?), so it is not "
                               f"rendered: {'; '.join(problems)}. Restore entries/{model}.json, or delete it to "
                               "recompute it.")


def submit(name: str | Path, model: Any, model_name: str, *, source: dict[str, Any], out: str | Path | None = None,
           store: Any = None, device: str | None = None, data_root: str | None = None,
           progress: bool = False) -> Path:
    """Evaluate a user's model under the leaderboard's exact protocol and write its entry file (default
    ``<model_name>.json`` in the current folder), ready to add to entries/ with the name in the spec."""
    from robench.evaluate import evaluate
    from robench.threats import build_threat
    from robench.files import atomic_write

    check_entry_name(model_name)
    lb = Leaderboard.load(name)
    built = [build_threat(t) for t in lb.spec.threats]
    records = evaluate(model, built, dataset=lb.spec.dataset, split=lb.spec.split, n=lb.spec.n, data_root=data_root,
                       store=store, seed=lb.spec.seed, device=device, model_name=model_name, progress=progress,
                       with_outputs=True)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    entry = make_entry(lb.spec, model_name, [with_outcomes(r, t) for r, t in zip(records, built)],
                       {**source, "submitted": stamp})
    path = Path(out) if out else Path(f"{model_name}.json")
    atomic_write(path, dump_entry(entry))
    return path


def hypergeom_p(k: int, n: int, K: int, N: int) -> float:
    """Two-sided p-value of k correct among n examples drawn without replacement from N of which K are
    correct: the probability of a count no more likely than k (scipy.stats.hypergeom)."""
    import numpy as np
    from scipy.stats import hypergeom

    if not (0 <= K <= N and 0 <= n <= N):
        return 0.0
    dist = hypergeom(N, K, n)
    pmf = dist.pmf(np.arange(max(0, n - (N - K)), min(n, K) + 1))
    return float(min(1.0, pmf[pmf <= dist.pmf(k) * (1 + 1e-7)].sum()))


@dataclass
class Verdict:
    """One accuracy of the sample against the entry's: by the exact test of its count, or, for a
    deterministic threat's accuracy with per-example outcomes in the entry, example by example."""

    threat: str
    metric: str
    entry: dict[str, Any]
    sample: dict[str, Any]
    #: two-sided hypergeometric p-value of the sample's count under the entry's per-example outcomes
    p: float = 1.0
    #: examples (slice indices) whose outcome differs from the entry's; None where not compared one by one
    mismatches: list[int] | None = None

    @property
    def ok(self) -> bool:
        return not self.mismatches if self.mismatches is not None else self.p >= P_THRESHOLD

    @property
    def how(self) -> str:
        if self.mismatches is None:
            return f"exact test p={self.p:.3g}"
        if not self.mismatches:
            return f"same outcome on all {self.sample['n']} examples"
        shown = ", ".join(map(str, self.mismatches[:10])) + (", ..." if len(self.mismatches) > 10 else "")
        return f"outcome differs on {len(self.mismatches)} examples: {shown}"


@dataclass
class Verification:
    verdicts: list[Verdict]
    indices: list[int]
    seed: int
    #: the model's weights fingerprint and the entry's (model_sha256 of its records)
    model_sha256: str
    entry_sha256: list[str]

    @property
    def weights_match(self) -> bool:
        return self.entry_sha256 == [self.model_sha256]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)


def verify(name: str | Path, model_name: str, *, n: int = 100, seed: int | None = None, device: str | None = None,
           data_root: str | None = None, loader: Loader | None = None, progress: bool = False,
           log: Callable[[str], None] = lambda s: None) -> Verification:
    """Recompute `n` randomly drawn examples of an entry (per-example threats only; whole-slice threats such
    as bit flips are left out) with a fresh store, and compare each accuracy with the entry's: example by
    example where the entry has per-example outcomes of a deterministic threat and the weights are the
    entry's, else by the exact (hypergeometric) test of the count. Says through `log`, before evaluating,
    when the model's weights are not the entry's."""
    import numpy as np

    from robench.evaluate import evaluate, model_fingerprint
    from robench.store import Store
    from robench.threats import build_threat

    lb = Leaderboard.load(name)
    if model_name not in lb.entries:
        raise RobenchError(f"{lb.spec.name} has no entry for {model_name!r}; entries: {', '.join(lb.entries)}.")
    problems = lb.inconsistencies(model_name)
    if problems:
        raise RobenchError(f"entry {model_name} contradicts itself, so there is nothing to verify: "
                           + "; ".join(problems))
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 31))
    rng = np.random.default_rng(seed)
    indices = sorted(rng.choice(lb.spec.n, size=min(n, lb.spec.n), replace=False).tolist())
    records = lb.records(model_name)
    threats = [build_threat(t) for t in lb.spec.threats if t in records]
    threats = [t for t in threats if t.shard_size is not None]
    if not threats:
        raise RobenchError(f"{model_name}'s entry has no per-example threat to verify.")
    model = (loader or (lambda m: _zoo_loader(m, data_root, progress)))(model_name)
    sha = model_fingerprint(model)
    entry_sha = sorted({str(r.get("provenance", {}).get("model_sha256")) for r in records.values()})
    if entry_sha != [sha]:
        log(f"{model_name}: the weights differ from the entry's: model sha256 {sha[:16]}, entry "
            f"{', '.join(s[:16] for s in entry_sha)} (trained on another CPU or torch build? see "
            "leaderboards/README.md); comparing counts only, not example by example")
    with tempfile.TemporaryDirectory() as tmp:
        fresh = evaluate(model, threats, dataset=lb.spec.dataset, split=lb.spec.split, indices=indices,
                         data_root=data_root, store=Store(Path(tmp) / "verify.sqlite"), seed=lb.spec.seed,
                         device=device, model_name=model_name, progress=progress, with_outputs=True)
    verdicts = []
    for record, threat in zip(fresh, threats):
        stored = records[record.threat]
        entry_acc = _accuracies(stored["metrics"])
        masks = outcome_masks(threat, record.outputs or {}) if entry_sha == [sha] else {}
        for metric, value in _accuracies(record.metrics).items():
            if metric not in entry_acc:
                continue
            want = entry_acc[metric]
            verdict = Verdict(record.threat, metric, want, value,
                              hypergeom_p(value["correct"], value["n"], want["correct"], want["n"]))
            if metric in masks and metric in stored.get(OUTCOMES, {}):
                expected = _unpack(stored[OUTCOMES][metric], want["n"])[indices]
                verdict.mismatches = [i for i, a, b in zip(indices, masks[metric], expected) if a != b]
            verdicts.append(verdict)
    return Verification(verdicts, indices, seed, sha, entry_sha)
