"""Rendering a leaderboard: README.md, index.html (from the template templates/page.html: no external
assets, sortable tables, figures inline) and figures/*.svg, from its views (robench.leaderboard.views)."""
from __future__ import annotations

import base64
import functools
import html
import math
from pathlib import Path
from typing import Any

from robench.attacks.norms import NORM_NAMES
from robench.leaderboard import claims, noise
from robench.leaderboard.entries import FIGURES, Leaderboard
from robench.leaderboard.views import (details, model_rows, note, provenance_rows, report, sandwich, show, sort_value,
                                      table, threat_name)
from robench.metrics import Accuracy
from robench.tables import format_cell, markdown_text, render_grid

TEMPLATE = Path(__file__).resolve().parent / "templates" / "page.html"
CLAIMS_NOTE = (f"Published claims checked against these entries (claims.toml): each compares cell a with cell b by "
               f"a one-sided test at level {claims.ALPHA}: accuracies by an exact test (McNemar's on shared "
               "per-example outcomes, else Fisher's on the counts), expected calibration errors (ECE, as a fraction) "
               "by a paired bootstrap over the shared examples.")
NOISE_FIGURE = "noise-vs-adversarial.svg"
NOISE_TITLE = "Noise and adversarial distance (Ford et al. 2019)"
NOISE_NOTE = ("Per model, accuracy under Gaussian noise at each sigma of the spec, the L2 distance to the decision "
              "boundary that the half-space model predicts from it (d = -sigma * Phi^-1(error rate)), and the "
              "measured median minimal L2 adversarial distance (untargeted FAB without a budget) with its 95% "
              "interval; measured / predicted uses the smallest sigma with an error rate in (0, 1/2). The noise is "
              "clipped to [0, 1], so the prediction is low for every model; compare the models' ratios.")
MODELS_NOTE = ("What each model is: zoo entries are trained from their recipe by `robench zoo train NAME` (the weights "
               "are not committed; the provenance table gives the sha256 each entry was computed with); CPU training "
               "time on this project's 2-core CPU, as in the README's zoo table.")


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
               ylabel: str = "accuracy (%)", ymax: float = 100.0) -> str:
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


def svg_scatter(points: list[tuple[str, float, float]], *, title: str, xlabel: str, ylabel: str) -> str:
    """A small deterministic SVG scatter: one labelled dot per (name, x, y) and the line y = x; text escaped."""
    e = html.escape
    w, h, left, right, top, bottom = 560, 360, 52, 20, 28, 40
    top_value = max([max(x, y) for _, x, y in points] + [1e-9]) * 1.1
    pw, ph = w - left - right, h - top - bottom

    def px(x: float) -> float:
        return left + x / top_value * pw

    def py(y: float) -> float:
        return top + (1 - y / top_value) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{left}" y="16" font-size="13">{e(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>',
             f'<line x1="{px(0):.1f}" y1="{py(0):.1f}" x2="{px(top_value):.1f}" y2="{py(top_value):.1f}" '
             'stroke="#999" stroke-dasharray="4 3"/>']
    for i in range(6):
        v = top_value * i / 5
        parts.append(f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.2g}</text>')
        parts.append(f'<text x="{px(v):.1f}" y="{top + ph + 15}" text-anchor="middle">{v:.2g}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{h - 6}" text-anchor="middle">{e(xlabel)}</text>')
    parts.append(f'<text x="12" y="{top + ph / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + ph / 2:.1f})">{e(ylabel)}</text>')
    for i, (name, x, y) in enumerate(points):
        colour = _PALETTE[i % len(_PALETTE)]
        parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}"/>')
        parts.append(f'<text x="{px(x) + 5:.1f}" y="{py(y) - 4:.1f}" fill="{colour}">{e(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def render_figures(lb: Leaderboard) -> dict[str, str]:
    """figure file name -> SVG: per threat of the spec, the first line curve of each model's report
    (robustness against eps, certified accuracy against radius, accuracy against bit flips, ...)."""
    figures: dict[str, str] = {}
    order = list(table(lb)[1])
    for threat in lb.spec.threats:
        series: dict[str, list[tuple[float, float]]] = {}
        shown = None
        for model in order:
            record = lb.records(model).get(threat)
            if record is None:
                continue
            curve = next((c for c in report(record).curves if c.style == "line"), None)
            if curve is not None:
                series[model] = [(float(p[0]), 100 * p[1]) for p in curve.points]  # in %, as the tables
                shown = shown or curve
        if shown is not None:
            name = threat_name(threat, lb.spec.threats)
            figures[f"{name.replace(':', '_').replace(',', '_')}.svg"] = svg_curves(
                series, title=f"{shown.title} on {lb.spec.title} {lb.spec.split}, n = {lb.spec.n_of(threat)}", xlabel=shown.x,
                ylabel=f"{shown.y} (%)")
    found = noise.analysis(lb)
    if found is not None and found.points:
        figures[NOISE_FIGURE] = svg_scatter(
            [(p.model, p.predicted, p.measured) for p in found.points],
            title=f"Noise vs adversarial distance on {lb.spec.title} {lb.spec.split}",
            xlabel="L2 distance predicted from Gaussian noise (half-space model)",
            ylabel="median min L2 adversarial distance")
    return figures


# ------------------------------------------------------------------------------------------ README

def render_readme(lb: Leaderboard, figures: dict[str, str]) -> str:
    spec = lb.spec
    lines = [f"# {spec.title} leaderboard", "",
             "<!-- Rendered by `robench leaderboard update` from spec.toml and entries/; do not edit. -->", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [f"Protocol: `{spec.dataset}` {spec.split} split, {spec.examples()}, seed {spec.seed}, "
              f"protocol hash `{spec.protocol_hash}`. Sorted by **{spec.sort}** (best first).", ""]
    lines += [show(lb, "markdown").rstrip(), ""]
    if spec.pending:
        lines += ["Not evaluated yet (listed as `pending` in spec.toml): "
                  + ", ".join(f"`{m}`" for m in spec.pending) + ".", ""]
    claim_columns, claim_rows = claims.rows(lb)
    if claim_rows:
        lines += ["## Claims", "", CLAIMS_NOTE, "",
                  render_grid(claim_columns, claim_rows, "markdown", first="claim", note="").rstrip(), ""]
    lines += ["## Threats", ""] + [f"- `{t}`" for t in spec.threats] + [""]
    for norm in ("linf", "l2"):
        d = sandwich(lb, norm)
        if d is not None:
            lines += [f"## Sandwich ({NORM_NAMES[norm]})", "", _sentence(d.description), "",
                      render_grid(d.columns, d.rows, "markdown", note="").rstrip(), ""]
            if d.flags:
                lines += ["Broken order:", ""] + [f"- {markdown_text(_period(f))}" for f in d.flags] + [""]
    found = noise.analysis(lb)
    if found is not None:
        lines += [f"## {NOISE_TITLE}", "", NOISE_NOTE, "",
                  render_grid(found.columns, found.rows, "markdown", note="").rstrip(), "",
                  markdown_text(found.summary()), ""]
    for d in details(lb):
        lines += [f"## {threat_name(d.threat, lb.spec.threats)}", "", f"`{d.threat}`", ""]
        if d.description:
            lines += [_sentence(d.description), ""]
        lines += [render_grid(d.columns, d.rows, "markdown", note="").rstrip(), ""]
        if d.flags:
            lines += ["Flags:", ""] + [f"- {markdown_text(_period(f))}" for f in d.flags] + [""]
        if d.provenance:
            lines += [" ".join(_sentence(p) for p in d.provenance), ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({FIGURES}/{name})" for name in figures] + [""]
    mcols, mrows = model_rows(lb)
    lines += ["## Models", "", MODELS_NOTE, "", render_grid(mcols, mrows, "markdown", note="").rstrip(), ""]
    pcols, prows = provenance_rows(lb)
    total = sum(r["wall s"] for r in prows.values())
    lines += ["## Provenance", "", render_grid(pcols, prows, "markdown", note="").rstrip(), "",
              f"Total compute of these entries: {total} s of wall time. Verify an entry with "
              f"`robench leaderboard verify {spec.name} MODEL --n 100`.", ""]
    return "\n".join(lines)


def _sentence(text: str) -> str:
    text = _period(text)
    return text[:1].upper() + text[1:]


def _period(text: str) -> str:
    """`text` ending in a period, its first letter as it is (a flag line starts with a model's name)."""
    text = text.strip()
    return text + ("" if text.endswith(".") else ".")


# -------------------------------------------------------------------------------------------- HTML

@functools.lru_cache(maxsize=1)
def _template() -> str:
    return TEMPLATE.read_text(encoding="utf-8")


def _html_table(columns: list[str], rows: dict[str, dict[str, Any]], table_id: str | None = None,
                first: str = "model") -> str:
    e = html.escape
    ident = f' id="{e(table_id)}"' if table_id else ""
    out = [f'<table class="sortable"{ident}>', f"<thead><tr><th>{e(first)}</th>"
           + "".join(f"<th>{e(c)}</th>" for c in columns) + "</tr></thead>", "<tbody>"]
    for model, row in rows.items():
        cells = [f'<td data-sort="{e(model)}">{e(model)}</td>']
        for c in columns:
            cell = row.get(c)
            key = sort_value(cell)
            sort = "-1e9" if key == -math.inf else repr(round(key, 6))
            value = getattr(cell, "value", cell)
            if isinstance(value, Accuracy):
                lo, hi = value.interval
                text = (f'{100 * value.value:.1f} <span class="ci">[{100 * lo:.1f}, {100 * hi:.1f}]'
                        f' n={value.n}</span>')
            else:
                text = e(format_cell(cell))
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
    body.append(f"<p>Protocol: <code>{e(spec.dataset)}</code> {e(spec.split)} split, {e(spec.examples())}, "
                f"seed {spec.seed}, protocol hash <code>{e(spec.protocol_hash)}</code>. Sorted by "
                f"<b>{e(spec.sort)}</b>; click a column header to sort.</p>")
    body.append(_html_table(columns, rows, "leaderboard"))
    body.append(f"<p>{e(note(lb))}</p>")
    claim_columns, claim_rows = claims.rows(lb)
    if claim_rows:
        body += ["<h2>Claims</h2>", f"<p>{e(CLAIMS_NOTE)}</p>",
                 _html_table(claim_columns, claim_rows, first="claim")]
    if spec.pending:
        body.append("<p>Not evaluated yet: " + ", ".join(f"<code>{e(m)}</code>" for m in spec.pending) + ".</p>")
    for norm in ("linf", "l2"):
        d = sandwich(lb, norm)
        if d is not None:
            body += [f"<h2>Sandwich ({e(NORM_NAMES[norm])})</h2>", f"<p>{e(_sentence(d.description))}</p>",
                     _html_table(d.columns, d.rows)]
            if d.flags:
                body.append("<p>Broken order:</p><ul>" + "".join(f"<li>{e(_period(f))}</li>" for f in d.flags)
                            + "</ul>")
    found = noise.analysis(lb)
    if found is not None:
        body += [f"<h2>{e(NOISE_TITLE)}</h2>", f"<p>{e(NOISE_NOTE)}</p>", _html_table(found.columns, found.rows),
                 f"<p>{e(found.summary())}</p>"]
    for d in details(lb):
        body.append(f"<h2>{e(threat_name(d.threat, lb.spec.threats))}</h2><p><code>{e(d.threat)}</code></p>")
        if d.description:
            body.append(f"<p>{e(_sentence(d.description))}</p>")
        body.append(_html_table(d.columns, d.rows))
        if d.flags:
            body.append("<p>Flags:</p><ul>" + "".join(f"<li>{e(_period(f))}</li>" for f in d.flags) + "</ul>")
        if d.provenance:
            body.append(f"<p>{e(' '.join(_sentence(p) for p in d.provenance))}</p>")
    if figures:
        body.append("<h2>Figures</h2>")
        for name, svg in figures.items():
            uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
            body.append(f'<img alt="{e(name)}" src="{uri}">')
    mcols, mrows = model_rows(lb)
    body += ["<h2>Models</h2>", f"<p>{e(MODELS_NOTE)}</p>", _html_table(mcols, mrows)]
    pcols, prows = provenance_rows(lb)
    body += ["<h2>Provenance</h2>", _html_table(pcols, prows)]
    top, bottom = _template().split("{{body}}")
    return top.replace("{{title}}", e(spec.title)) + "\n".join(body) + bottom
