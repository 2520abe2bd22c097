"""How a threat's results read: the `Report` a Threat returns for the metrics of one Record.

Every consumer (the tables of `robench run`, its ``--out`` files and figures, the leaderboards) renders
Records through their threat's Report only, so a new threat (an ensemble attack, a certifier, a corruption
suite) shows up everywhere by implementing `Threat.report` in its own module:

- `columns`: the threat's detail table, in order. A column with a `head` is also a headline column,
  titled ``f"{label} {head}"`` on a leaderboard and ``f"{threat title} {head}"`` in `robench run`'s table;
  a `baseline` column is the model's clean accuracy, shown once per model as "clean".
- `curves`: what to plot: one series per Record; curves with the same `figure` are drawn together.
- `description` (one line), `notes` (the legend of the headline columns) and `provenance` (notes on
  how the numbers were obtained).
- `ball`: for accuracy inside norm balls, the rung it stands on in the order verified <= ensemble-attacked
  <= attacked <= clean (the leaderboards' sandwich view).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from robench.metrics import Accuracy

#: what a cell holds: an accuracy (shown in % with its interval), a number, text, or nothing (None)
Value = Union[Accuracy, float, int, str, None]


@dataclass(frozen=True)
class Column:
    """One number of a Record, with how it reads."""

    #: title in the threat's detail table ("eps 0.1", "ACR")
    name: str
    value: Value
    #: set for a headline column: its title after the threat's label ("0.1" -> "PGD Linf 0.1")
    head: str | None = None
    higher_is_better: bool = True
    #: a fraction in [0, 1] without interval, shown in % (kept as the fraction in CSV)
    percent: bool = False
    #: the model's clean accuracy as this threat measured it: shown as "clean" in run tables
    baseline: bool = False


#: a point of a curve: x (a number, or a category for bars), y, and the 95% interval of y (None if unknown)
Point = tuple[Union[float, str], float, Union[float, None], Union[float, None]]


@dataclass(frozen=True)
class Curve:
    """A series to plot for one Record (one model): y against x."""

    #: the figure it belongs to (file name stem of `robench run --out`), e.g. "robustness_curve_linf"
    figure: str
    title: str
    x: str
    points: tuple[Point, ...]
    y: str = "accuracy"
    #: "line": y against a numeric x; "bars": y per category x
    style: Literal["line", "bars"] = "line"


#: the rungs of the sandwich, lowest first: an example verified robust must withstand every attack, and
#: the ensemble must be at least as strong as any one attack
RUNGS = ("verified", "ensemble", "attacked")


@dataclass(frozen=True)
class Ball:
    """Accuracy inside `norm` balls ("linf", "l2") of each radius, on one rung of `RUNGS`."""

    norm: str
    rung: Literal["verified", "ensemble", "attacked"]
    accuracy: dict[float, Accuracy]


@dataclass(frozen=True)
class Report:
    """What one Record of a threat shows: see the module docstring."""

    #: the threat's name in headline titles ("PGD Linf", "MNIST-C", "certified")
    label: str
    description: str
    columns: tuple[Column, ...] = ()
    curves: tuple[Curve, ...] = ()
    #: legend lines for the headline columns (shown once per table however many models have them)
    notes: tuple[str, ...] = ()
    provenance: tuple[str, ...] = ()
    ball: Ball | None = None

    @property
    def headline(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.head is not None)

    @property
    def baseline(self) -> Column | None:
        return next((c for c in self.columns if c.baseline), None)

    def title(self, column: Column) -> str:
        """A headline column's title on a leaderboard."""
        return f"{self.label} {column.head}".strip()


def accuracy(value: Any) -> Accuracy | None:
    """A stored accuracy (JSON) as an Accuracy; None stays None."""
    return None if value is None else Accuracy.from_json(value)


def number(value: float) -> str:
    """A number as a short title: 0.1 -> "0.1", 1.0 -> "1", "0.25" -> "0.25"."""
    return f"{float(value):g}"


def generic(label: str, description: str, metrics: dict[str, Any]) -> Report:
    """A Report of every accuracy and top-level number in `metrics`, for a threat that has no `report`
    of its own: all are detail columns, none is a headline."""
    from robench.metrics import accuracies

    columns = [Column(path.replace("/", " "), acc) for path, acc in accuracies(metrics).items()]
    columns += [Column(key, value) for key, value in metrics.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)]
    return Report(label, description, tuple(columns))


@functools.lru_cache(maxsize=256)
def _threat(canonical: str) -> Any:
    from robench.threats import build_threat

    return build_threat(canonical)


def report_of(threat: str, metrics: dict[str, Any]) -> Report:
    """The Report of a Record of the threat with canonical string `threat` and these `metrics` (JSON). A
    threat that no longer builds (a plugin not installed, parameters the current code refuses) reads
    through `generic`."""
    from robench.errors import RobenchError
    from robench.spec import ThreatSpec

    try:
        built = _threat(threat)
    except RobenchError:
        return generic(ThreatSpec.parse(threat).name, "a threat this robench cannot build", metrics)
    return built.report(metrics)
