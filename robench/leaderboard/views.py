"""The tables of a leaderboard, built from each Record's Report (robench.report) only: the headline table
(sorted by the spec's column), one detail table per threat, the legend, and the provenance table."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from robench.attacks.norms import NORM_NAMES
from robench.flags import COLUMN, Flag, cell, checked, flags_of
from robench.leaderboard.entries import Leaderboard
from robench.metrics import Accuracy
from robench.report import RUNGS, Column, Report, number, report_of
from robench.spec import ThreatSpec
from robench.threats import Kind
from robench.tables import plain, render_grid

Rows = dict[str, dict[str, Any]]
#: the kind of Record that carries sanity checks
KIND_CHECKED = Kind.INPUT_ATTACK.value


def model_flags(lb: Leaderboard, model: str) -> dict[str, list[Flag]]:
    """threat -> the flags of the model's Record of that threat: its own and those the model's other Records show."""
    records = [r for t, r in lb.records(model).items() if t in lb.spec.threats]
    return {r["threat"]: f for r, f in zip(records, flags_of(records))}


def threat_name(threat: str, threats: Sequence[str] = ()) -> str:
    """The threat's name, with the parameters that tell it apart where other `threats` share the name
    ("autoattack:eps=2.0,norm=l2" beside "autoattack:eps=0.3,norm=linf")."""
    spec = ThreatSpec.parse(threat)
    others = [ThreatSpec.parse(t) for t in threats if t != threat and ThreatSpec.parse(t).name == spec.name]
    differing = [k for k, v in spec.params.items() if any(o.params.get(k) != v for o in others)]
    return spec.name + (":" + ",".join(f"{k}={spec.params[k]}" for k in differing) if differing else "")


def report(record: dict[str, Any]) -> Report:
    """The Report of a stored Record (JSON)."""
    return report_of(record["threat"], record["metrics"])


def headline(record: dict[str, Any]) -> dict[str, Column]:
    """Leaderboard columns of one Record: its baseline as "clean", then its report's headline columns
    titled ``f"{label} {head}"``."""
    rep = report(record)
    columns = {"clean": rep.baseline} if rep.baseline is not None else {}
    columns.update({rep.title(c): c for c in rep.headline})
    return columns


def sort_value(cell: Any) -> float:
    """A number to sort a cell by (accuracy value, number, ">N" as N + 0.5); missing sorts last."""
    value = plain(cell)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.startswith(">"):
        try:
            return float(value[1:]) + 0.5
        except ValueError:
            pass
    return -math.inf


def table(lb: Leaderboard, *, every_column: bool = False) -> tuple[list[str], Rows]:
    """Headline columns (the spec's `headline`, unless `every_column`) and model -> column -> cell, rows
    sorted by the spec's key (best first: descending unless its column says lower is better), then by
    clean accuracy, then by name."""
    columns: list[str] = []
    rows: Rows = {}
    for model in lb.spec.models:
        records = lb.records(model)
        row = rows.setdefault(model, {})
        for threat in lb.spec.threats:
            if threat in records and (threat not in lb.spec.details_only or not row):
                shown = headline(records[threat])
                if threat in lb.spec.details_only:  # only its clean accuracy, where no threat before gave one
                    shown = {k: v for k, v in shown.items() if k == "clean"}
                for title, value in shown.items():
                    row.setdefault(title, value)
                    if title not in columns:
                        columns.append(title)
        row[COLUMN] = cell([f for per in model_flags(lb, model).values() for f in per],
                          all(checked(r) for r in records.values() if r.get("kind") == KIND_CHECKED))
    if "clean" in columns:
        columns.remove("clean")
        columns.insert(0, "clean")
    if lb.spec.headline and not every_column:
        columns = [c for c in lb.spec.headline if c in columns]
    columns.append(COLUMN)
    key = lb.spec.sort
    sample = next((row[key] for row in rows.values() if isinstance(row.get(key), Column)), None)
    sign = -1 if sample is None or sample.higher_is_better else 1

    def order(item: tuple[str, dict[str, Any]]) -> tuple:
        model, row = item
        value = sort_value(row.get(key))
        return (sign * value if value != -math.inf else math.inf, -sort_value(row.get("clean")), model)

    return columns, dict(sorted(rows.items(), key=order))


def _reports(lb: Leaderboard) -> dict[str, list[Report]]:
    """threat -> the Reports of its Records, in the spec's model order."""
    return {t: [report(lb.records(m)[t]) for m in lb.spec.models if t in lb.records(m)] for t in lb.spec.threats}


def note(lb: Leaderboard) -> str:
    """The legend under the headline table: the notes of the threats with headline columns, once each."""
    spec = lb.spec
    parts = [f"Accuracy in % on the {spec.examples().replace(' examples', f' {spec.split} examples', 1)}, with the "
             "95% Clopper-Pearson interval in brackets."]
    for threat, reports in _reports(lb).items():
        if threat not in spec.details_only:
            parts += [n for r in reports if r.headline for n in r.notes]
    parts.append(f"Sorted by {spec.sort}, best first. The flags column names warnings that an evaluation "
                 "looks broken (gradient masking, a randomized model, an attack weaker than random noise); "
                 "each is explained with its evidence under the detail tables; \"not checked\": the attack Records "
                 "predate robench's sanity checks.")
    return " ".join(dict.fromkeys(parts))


def show(lb: Leaderboard, fmt: str = "markdown") -> str:
    """The headline table as markdown, csv, latex or aligned text."""
    columns, rows = table(lb)
    if fmt == "csv":
        return render_grid(columns, rows, "csv")
    return render_grid(columns, rows, fmt, note=note(lb))


@dataclass
class Detail:
    """One threat's detail table: the columns of its report, one row per model, with the report's
    one-line description (when every model's reads the same) and provenance notes."""

    threat: str
    columns: list[str]
    rows: Rows
    description: str = ""
    provenance: tuple[str, ...] = ()
    #: "model: code: message" for every flag of the threat's Records
    flags: tuple[str, ...] = ()


def details(lb: Leaderboard) -> list[Detail]:
    """A Detail per threat of the spec, rows in the headline table's order."""
    out = []
    order = list(table(lb)[1])
    flagged = {model: model_flags(lb, model) for model in order}  # once per model, not once per threat
    for threat in lb.spec.threats:
        detail = Detail(threat, [], {})
        descriptions: list[str] = []
        provenance: list[str] = []
        for model in order:
            record = lb.records(model).get(threat)
            if record is None:
                continue
            rep = report(record)
            detail.rows[model] = {c.name: c for c in rep.columns}
            detail.columns += [c.name for c in rep.columns if c.name not in detail.columns]
            if record.get("kind") == KIND_CHECKED:
                found = flagged[model].get(threat, [])
                detail.rows[model][COLUMN] = cell(found, checked(record))
                detail.flags += tuple(f"{model}: {f.code}: {f.message}" for f in found)
            descriptions.append(rep.description)
            provenance += rep.provenance
        if detail.rows:
            if any(COLUMN in row for row in detail.rows.values()):
                detail.columns.append(COLUMN)
            detail.description = descriptions[0] if len(set(descriptions)) == 1 else ""
            detail.provenance = tuple(dict.fromkeys(provenance))
            out.append(detail)
    return out


#: the sandwich view's column of order violations
ORDER = "order"


def sandwich(lb: Leaderboard, norm: str = "linf") -> Detail | None:
    """Per model: clean accuracy, then at each eps (of `norm` balls) that two or more rungs share, every
    threat's accuracy from the highest rung to the lowest (attacked, ensemble, verified: robench.report
    RUNGS), and where the order verified <= ensemble <= attacked <= clean is broken (a bug in one of
    them). None when no eps is shared."""
    order = list(table(lb)[1])
    balls = {model: {} for model in order}  # model -> threat -> (Report, Ball)
    for model in order:
        for threat, record in lb.records(model).items():
            rep = report(record) if threat in lb.spec.threats else None
            if rep is not None and rep.ball is not None and rep.ball.norm == norm:
                balls[model][threat] = (rep, rep.ball)
    rungs_at: dict[float, set[str]] = {}
    for found in balls.values():
        for _, ball in found.values():
            for eps in ball.accuracy:
                rungs_at.setdefault(eps, set()).add(ball.rung)
    shared = sorted(eps for eps, rungs in rungs_at.items() if len(rungs) > 1)
    if not shared:
        return None
    name = NORM_NAMES.get(norm, norm)
    detail = Detail(f"sandwich:{norm}", ["clean"], {},
                    description=f"{name} accuracy at each eps from every threat that measures it, highest rung first: "
                                "verified <= ensemble-attacked <= attacked <= clean must hold")
    broken: list[str] = []
    for model in order:
        row: dict[str, Any] = {}
        clean = None
        cells: list[tuple[float, int, str, Accuracy]] = []
        for threat in lb.spec.threats:
            if threat not in balls[model]:
                continue
            rep, ball = balls[model][threat]
            clean = clean or (rep.baseline.value if rep.baseline is not None else None)
            for eps in shared:
                if eps in ball.accuracy:
                    cells.append((eps, RUNGS.index(ball.rung), f"{rep.label} {number(eps)}", ball.accuracy[eps]))
        if not cells:
            continue
        cells.sort(key=lambda c: (c[0], -c[1]))
        row["clean"] = clean
        for _, _, title, acc in cells:
            row[title] = acc
            if title not in detail.columns:
                detail.columns.append(title)
        found = _order_violations(clean, cells)
        row[ORDER] = "; ".join(found) if found else "ok"
        broken += [f"{model}: {ORDER}: {v}" for v in found]
        detail.rows[model] = row
    detail.columns.append(ORDER)
    detail.flags = tuple(broken)
    return detail


def _order_violations(clean: Accuracy | None, cells: list[tuple[float, int, str, Accuracy]]) -> list[str]:
    """Each pair of one eps where a lower rung (or any rung against clean) holds more correct examples."""
    def above(a: Accuracy, b: Accuracy) -> bool:
        return a.correct > b.correct if a.n == b.n else a.value > b.value

    out = []
    for eps, rung, title, acc in cells:
        if clean is not None and above(acc, clean):
            out.append(f"{title} ({100 * acc.value:.1f}%) above clean ({100 * clean.value:.1f}%)")
        for other_eps, other_rung, other_title, other in cells:
            if other_eps == eps and rung < other_rung and above(acc, other):
                out.append(f"{title} ({100 * acc.value:.1f}%) above {other_title} ({100 * other.value:.1f}%)")
    return out


def model_rows(lb: Leaderboard) -> tuple[list[str], Rows]:
    """What each model is: for a zoo entry its architecture, parameter count, training (the zoo's
    description, which names the defense and its paper) and CPU training time; a submitted entry, where it
    came from."""
    from robench import zoo

    columns = ["architecture", "parameters", "training", "CPU training"]
    rows = {}
    for model in table(lb)[1]:
        source = lb.entries.get(model, {}).get("source", {})
        entry = _zoo_entry(source.get("zoo"))
        if entry is not None:
            minutes = zoo.TRAINING_MINUTES.get(entry.name)
            rows[model] = {"architecture": entry.arch,
                           "parameters": f"{sum(p.numel() for p in entry.build().parameters()):,}",
                           "training": f"{entry.description} ({entry.recipe.epochs} epochs)",
                           "CPU training": "-" if minutes is None else f"{minutes:g} min"}
        else:
            what = f"zoo entry {source['zoo']}, not in this robench's zoo" if source.get("zoo") else \
                f"submitted: {source.get('model', 'unknown')}"
            rows[model] = {"architecture": "-", "parameters": "-", "training": what, "CPU training": "-"}
    return columns, rows


def _zoo_entry(name: str | None) -> Any:
    from robench import zoo
    from robench.registry import MODELS

    return zoo.get(name) if name and name in MODELS else None


def provenance_rows(lb: Leaderboard) -> tuple[list[str], Rows]:
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
