"""The `--out` folder of a run: records.json, results.md and results.csv, and one figure per kind of
curve the Records' threats report (robench.report.Curve.figure: robustness_curve_linf.png, ...)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from robench.evaluate import Record


def write_outputs(records: Sequence[Record], out: str | os.PathLike) -> list[Path]:
    """Write the Records' tables and figures to the folder `out` (created if needed); returns the paths
    written, tables first."""
    from robench import plots, tables
    from robench.files import atomic_write
    from robench.report import report_of

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fmt in (("records.json", "json"), ("results.md", "markdown"), ("results.csv", "csv")):
        atomic_write(out / name, tables.render(records, fmt))
        written.append(out / name)
    titles = tables.threat_titles(r.threat for r in records)
    figures: dict[str, list] = {}
    for r in records:
        for curve in report_of(r.threat, r.metrics).curves:
            figures.setdefault(curve.figure, []).append((r, curve))
    for figure, drawn in figures.items():
        one_threat = len({r.threat for r, _ in drawn}) == 1
        series: dict[str, list] = {}
        for r, curve in drawn:
            label = r.model if one_threat else f"{r.model} ({titles[r.threat]})"
            copy = 1
            while label in series:
                copy += 1
                label = f"{r.model} ({copy})" if one_threat else f"{r.model} ({titles[r.threat]}, {copy})"
            series[label] = list(curve.points)
        first = drawn[0][1]
        path = out / f"{figure}.png"
        labels = dict(xlabel=first.x, ylabel=f"{first.y} (%)", title=figure_title(drawn))
        if first.style == "bars":
            written.append(plots.bars({k: {p[0]: tuple(p[1:]) for p in v} for k, v in series.items()}, path,
                                      **labels))
        else:
            written.append(plots.curves(series, path, **labels))
    return written


def figure_title(drawn: Sequence[tuple[Record, Any]]) -> str:
    """The title of a figure of (Record, Curve) pairs: the curves' titles, on which data, how many examples,
    e.g. "PGD Linf on mnist-5k test, n = 500"."""
    curves = ", ".join(dict.fromkeys(c.title for _, c in drawn))
    data = ", ".join(dict.fromkeys(f"{r.dataset} {r.split}" for r, _ in drawn))
    sizes = ", ".join(dict.fromkeys(str(r.n) for r, _ in drawn))
    return f"{curves} on {data}, n = {sizes}"
