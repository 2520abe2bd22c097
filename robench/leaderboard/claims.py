"""A leaderboard's claims table (claims.toml beside spec.toml): published claims checked against the
entries. Each claim compares two cells, `a` and `b`, each a model's metric under one of the spec's
threats, and says how they relate:

    [[claim]]
    paper = "Madry et al. 2018"
    claim = "PGD adversarial training gives Linf robustness that standard training lacks"
    a = { model = "mnist-pgd-at", threat = "autoattack:norm=linf", metric = "robust_accuracy/0.3" }
    b = { model = "mnist-small-cnn", threat = "autoattack:norm=linf", metric = "robust_accuracy/0.3" }
    relation = ">"          # ">" a above b, "<" a below b, "~" within `margin` of each other

A threat is named by its name and, where the spec has several of that name, the parameters that tell
them apart. Two accuracies are compared by an exact test at level `ALPHA`, one-sided in each direction:
McNemar's on the shared examples where both Records hold per-example outcomes, else Fisher's on the
counts. A claim is supported when the test finds the stated order, contradicted when it finds the
opposite one, and inconclusive at this n otherwise; a "~" claim is supported when the difference is
within the margin and neither order is found, contradicted when an order is found and the difference is
beyond the margin. A cell's metric is an accuracy of the Record ("robust_accuracy/0.3", "accuracy") or an expected
calibration error: "calibration/fog/ece" (one condition of a corruption Record), "calibration/mean/ece"
(the mean over its corruptions). Two ECEs are compared by a paired bootstrap over the shared examples
(`robench.metrics.paired_ece`, from the per-example confidences and hits the entries store), with the
same verdict rules. `leaderboard check` names a claim whose model, threat or metric the entries lack.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robench.errors import RobenchError
from robench.metrics import Accuracy
from robench.spec import read_toml

#: the level of the one-sided tests
ALPHA = 0.05
FILE = "claims.toml"
RELATIONS = (">", "<", "~")


@dataclass(frozen=True)
class Cell:
    model: str
    threat: str
    metric: str

    def title(self) -> str:
        return f"{self.model}, {self.threat} {self.metric}"


@dataclass(frozen=True)
class Claim:
    paper: str
    claim: str
    a: Cell
    b: Cell
    relation: str
    margin: float = 0.0


@dataclass(frozen=True)
class Estimate:
    """A cell's number that is not an accuracy (an ECE) and its 95% interval."""

    value: float
    interval: tuple[float, float]


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    a: Accuracy | Estimate
    b: Accuracy | Estimate
    #: the one-sided p-values: a above b, a below b
    p_above: float
    p_below: float
    test: str
    verdict: str  # "supported", "contradicted" or "inconclusive at this n"


def load(folder: Path) -> list[Claim]:
    """The claims of the leaderboard in `folder` ([] without a claims.toml)."""
    path = Path(folder) / FILE
    if not path.is_file():
        return []
    raw = read_toml(path, "claims file", ("claim",))
    out = []
    for i, item in enumerate(raw.get("claim", []), 1):
        where = f"{path}: claim {i}"
        unknown = sorted(set(item) - {"paper", "claim", "a", "b", "relation", "margin"})
        missing = sorted({"paper", "claim", "a", "b", "relation"} - set(item))
        if unknown or missing:
            raise RobenchError(f"{where}: " + "; ".join(
                ([f"unknown keys {unknown}"] if unknown else []) + ([f"missing keys {missing}"] if missing else [])))
        if item["relation"] not in RELATIONS:
            raise RobenchError(f"{where}: relation must be one of {', '.join(RELATIONS)}; got {item['relation']!r}.")
        cells = []
        for side in ("a", "b"):
            cell = item[side]
            if not isinstance(cell, dict) or set(cell) != {"model", "threat", "metric"}:
                raise RobenchError(f"{where}: {side} must be a table with model, threat and metric.")
            cells.append(Cell(str(cell["model"]), str(cell["threat"]), str(cell["metric"])))
        if is_ece(cells[0].metric) != is_ece(cells[1].metric):
            raise RobenchError(f"{where}: a and b must both be accuracies or both ECEs; got {cells[0].metric!r} "
                               f"and {cells[1].metric!r}.")
        out.append(Claim(str(item["paper"]), str(item["claim"]), *cells, item["relation"],
                         float(item.get("margin", 0.0))))
    return out


def resolve_threat(pattern: str, threats: list[str]) -> str:
    """The one spec threat that `pattern` (a name with the parameters that single it out) names."""
    from robench.leaderboard.spec import names_threat

    found = [t for t in threats if names_threat(pattern, t)]
    if len(found) != 1:
        raise RobenchError(f"claim threat {pattern!r} names {len(found)} of the spec's threats"
                           + (f" ({', '.join(found)}): add the parameters that tell them apart" if found else ""))
    return found[0]


def _record(lb: Any, cell: Cell) -> dict[str, Any]:
    threat = resolve_threat(cell.threat, lb.spec.threats)
    record = lb.records(cell.model).get(threat)
    if record is None:
        raise RobenchError(f"claim cell {cell.title()}: no Record of {cell.model} under {threat}")
    return record


def is_ece(metric: str) -> bool:
    return metric.startswith("calibration/") and metric.endswith("/ece") and metric.count("/") == 2


def ece_conditions(lb: Any, cell: Cell) -> list[tuple[Any, Any]]:
    """The (confidence, hit) per example of each condition an ECE cell averages over."""
    from robench.leaderboard.entries import CONFIDENCES, confidences_of

    record = _record(lb, cell)
    condition = cell.metric.split("/")[1]
    stored = record.get(CONFIDENCES, {})
    paths = ([p for p, item in stored.items() if not item.get("baseline")] if condition == "mean"
             else [p for p in stored if p == f"calibration/{condition}"])
    if not paths:
        raise RobenchError(f"claim cell {cell.title()}: the Record stores no per-example confidences for "
                           f"{cell.metric} (run `robench leaderboard update {lb.spec.name} --model {cell.model}`)")
    try:
        return [confidences_of(record, p) for p in paths]
    except RobenchError as exc:
        raise RobenchError(f"claim cell {cell.title()}: {exc}") from None


def cell_value(lb: Any, cell: Cell) -> tuple[Accuracy, str | None]:
    """The accuracy a cell names and its packed per-example outcomes (None where not stored)."""
    from robench.leaderboard.entries import OUTCOMES, _stored_accuracies

    record = _record(lb, cell)
    stored = _stored_accuracies(record.get("metrics", {}))
    if cell.metric not in stored:
        raise RobenchError(f"claim cell {cell.title()}: no accuracy {cell.metric!r}; the Record has "
                           f"{', '.join(sorted(stored)) or 'none'}")
    return Accuracy.from_json(stored[cell.metric]), record.get(OUTCOMES, {}).get(cell.metric)


def judge(lb: Any, claim: Claim) -> Verdict:
    """The claim's numbers, test and verdict (see the module docstring)."""
    from scipy.stats import binomtest, fisher_exact

    from robench.leaderboard.entries import _unpack

    if is_ece(claim.a.metric):
        return _judge_ece(lb, claim)
    (a, mask_a), (b, mask_b) = cell_value(lb, claim.a), cell_value(lb, claim.b)
    if mask_a is not None and mask_b is not None and a.n == b.n:
        ma, mb = _unpack(mask_a, a.n), _unpack(mask_b, b.n)
        only_a, only_b = int((ma & ~mb).sum()), int((~ma & mb).sum())
        discordant = only_a + only_b
        p_above = binomtest(only_a, discordant, 0.5, alternative="greater").pvalue if discordant else 1.0
        p_below = binomtest(only_a, discordant, 0.5, alternative="less").pvalue if discordant else 1.0
        test = f"McNemar exact, {only_a} vs {only_b} discordant"
    else:
        table = [[a.correct, a.n - a.correct], [b.correct, b.n - b.correct]]
        p_above = float(fisher_exact(table, alternative="greater")[1])
        p_below = float(fisher_exact(table, alternative="less")[1])
        test = "Fisher exact (unpaired)"
    return Verdict(claim, a, b, float(p_above), float(p_below), test, _verdict(claim, a.value - b.value, p_above, p_below))


def _judge_ece(lb: Any, claim: Claim) -> Verdict:
    from robench.metrics import paired_ece

    a, b = ece_conditions(lb, claim.a), ece_conditions(lb, claim.b)
    if len({len(hit) for _, hit in a + b}) != 1:
        raise RobenchError(f"claim {claim.claim!r}: its ECE cells are not on the same examples")
    test = paired_ece(a, b)
    return Verdict(claim, Estimate(test.a, test.interval_a), Estimate(test.b, test.interval_b), test.p_above,
                   test.p_below, f"paired bootstrap, {test.resamples} resamples",
                   _verdict(claim, test.a - test.b, test.p_above, test.p_below))


def _verdict(claim: Claim, diff: float, p_above: float, p_below: float) -> str:
    if claim.relation == "~":
        if abs(diff) > claim.margin and min(p_above, p_below) < ALPHA:
            verdict = "contradicted"
        elif abs(diff) <= claim.margin and min(p_above, p_below) >= ALPHA:
            verdict = "supported"
        else:
            verdict = "inconclusive at this n"
    else:
        stated, opposite = (p_above, p_below) if claim.relation == ">" else (p_below, p_above)
        verdict = "supported" if stated < ALPHA else "contradicted" if opposite < ALPHA else "inconclusive at this n"
    return verdict


def verdicts(lb: Any) -> list[Verdict]:
    return [judge(lb, c) for c in load(lb.folder)]


def confidence_cells(lb: Any) -> set[tuple[str, str]]:
    """(model, spec threat) of every cell an ECE claim compares: the Records whose entries keep their
    per-example confidences ([] where the claims do not load: `check` names why)."""
    try:
        claims = load(lb.folder)
        return {(c.model, resolve_threat(c.threat, lb.spec.threats)) for claim in claims
                for c in (claim.a, claim.b) if is_ece(c.metric)}
    except RobenchError:
        return set()


def problems(lb: Any) -> list[str]:
    """Claims that name a missing model, threat or metric (for `leaderboard check`)."""
    out = []
    try:
        claims = load(lb.folder)
    except RobenchError as exc:
        return [str(exc)]
    for i, claim in enumerate(claims, 1):
        for cell in (claim.a, claim.b):
            try:
                ece_conditions(lb, cell) if is_ece(cell.metric) else cell_value(lb, cell)
            except RobenchError as exc:
                out.append(f"{FILE} claim {i}: {exc}")
    return out


def rows(lb: Any) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The claims table: one row per claim (keyed "paper: claim"), with both numbers, the test and verdict."""
    columns = ["a", "b", "relation", "p (a above b)", "p (a below b)", "test", "verdict"]
    table: dict[str, dict[str, Any]] = {}
    for claim in load(lb.folder):
        key = f"{claim.paper}: {claim.claim}"
        relation = claim.relation + (f" (margin {100 * claim.margin:g} points)" if claim.relation == "~" else "")
        try:
            v = judge(lb, claim)
        except RobenchError as exc:  # an entry not computed yet (`check` fails on it): the other claims still render
            table[key] = {"a": claim.a.title(), "b": claim.b.title(), "relation": relation, "p (a above b)": "-",
                          "p (a below b)": "-", "test": "-", "verdict": f"not evaluated yet ({exc})"}
            continue
        table[key] = {"a": f"{claim.a.title()}: {_number(v.a)}", "b": f"{claim.b.title()}: {_number(v.b)}",
                      "relation": relation, "p (a above b)": _p(v.p_above), "p (a below b)": _p(v.p_below),
                      "test": v.test, "verdict": v.verdict}
    return columns, table


def _number(value: Accuracy | Estimate) -> str:
    """An accuracy in percent, an ECE as a fraction, each with its interval."""
    lo, hi = value.interval
    if isinstance(value, Estimate):
        return f"{value.value:.3f} [{lo:.3f}, {hi:.3f}]"
    return f"{100 * value.value:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _p(value: float) -> str:
    return f"{value:.2g}"
