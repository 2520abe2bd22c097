"""Records -> tables: the columns each Record's threat reports (robench.report), one row per model,
rendered as plain text (fitted to a terminal's width), Markdown, CSV, LaTeX or JSON. Accuracies and rates
are in % in every table; the JSON Records and `to_dataframe` keep the fractions the metrics hold."""
from __future__ import annotations

import csv
import io
import json
import textwrap
from typing import Any, Iterable, Sequence

from robench.evaluate import Record
from robench.flags import COLUMN, Flag, cell, checked, flags_of
from robench.metrics import Accuracy
from robench.report import Column, report_of
from robench.spec import ThreatSpec

#: the width a "table" is fitted to unless told otherwise (columns of text)
WIDTH = 120
#: the sentence on units and brackets under every table
UNITS = "Accuracy in %, with the 95% Clopper-Pearson interval in brackets."


def headline(record: Record, detail: bool = True, name: str | None = None) -> dict[str, Column]:
    """Column title -> cell of one Record, from its threat's Report: the baseline (the model's clean
    accuracy) as "clean", the headline columns as ``f"{name} {head}"`` and, with `detail`, every other
    column of the report as ``f"{name} {column name}"``. `name` titles the threat (default: its name)."""
    name = name or ThreatSpec.parse(record.threat).name

    def title(text: str) -> str:  # "clean ECE" of the threat "clean" stays "clean ECE"
        return text if text == name or text.startswith(f"{name} ") else f"{name} {text}"

    columns: dict[str, Column] = {}
    for column in report_of(record.threat, record.metrics).columns:
        if column.baseline:
            columns.setdefault("clean", column)
        elif column.head is not None:
            columns[title(column.head)] = column
        elif detail:
            columns[title(column.name)] = column
    return columns


def _value(cell: Any) -> Any:
    return cell.value if isinstance(cell, Column) else cell


def format_cell(cell: Any, interval: bool = True) -> str:
    """A cell as text: an accuracy in % with its 95% interval, a percent column in %, a number in 4
    significant digits, None as "-"."""
    value = _value(cell)
    if value is None:
        return "-"
    if isinstance(value, Accuracy):
        lo, hi = value.interval
        main = f"{100 * value.value:.1f}"
        return f"{main} [{100 * lo:.1f}, {100 * hi:.1f}]" if interval else main
    if isinstance(cell, Column) and cell.percent and isinstance(value, (int, float)):
        return f"{100 * value:.1f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def plain(cell: Any) -> Any:
    """A cell's number for CSV and sorting: an accuracy's value, a number or text as it is."""
    value = _value(cell)
    return value.value if isinstance(value, Accuracy) else value


def threat_titles(threats: Iterable[str]) -> dict[str, str]:
    """A distinct title per canonical threat string: its name, plus the parameters in which it differs
    from other threats of the same name, e.g. ``pgd-linf[steps=5]`` and ``pgd-linf[steps=20]``."""
    specs = {t: ThreatSpec.parse(t) for t in dict.fromkeys(threats)}
    titles = {}
    for threat, spec in specs.items():
        same = [s for s in specs.values() if s.name == spec.name]
        differing = sorted({k for s in same for k in set(s.params) | set(spec.params)
                            if s.params.get(k) != spec.params.get(k)})
        shown = ThreatSpec(spec.name, {k: spec.params.get(k) for k in differing})
        titles[threat] = spec.name if not differing else f"{spec.name}[{str(shown).partition(':')[2]}]"
    return titles


def grid(records: Sequence[Record], detail: bool = True) -> tuple[list[str], dict[str, dict[str, Column]]]:
    """Column titles (in first-seen order) and row -> column -> value; every Record has its own cells
    (threats of the same name are told apart by their parameters, and a model name that comes twice
    with the same threat gets a numbered row)."""
    titles = threat_titles(r.threat for r in records)
    columns: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    flagged: dict[str, list[Flag]] = {}  # row -> the flags of its checked Records
    for record, flags in zip(records, flags_of(records)):
        cells = headline(record, detail, titles[record.threat])
        row, copy = record.model, 1
        while any(c in rows.get(row, {}) and c != "clean" for c in cells):
            copy += 1
            row = f"{record.model} ({copy})"
        for title, value in cells.items():
            if title not in columns:
                columns.append(title)
            rows.setdefault(row, {}).setdefault(title, value)
        if checked(record):
            flagged.setdefault(row, []).extend(flags)
    if "clean" in columns:
        columns.remove("clean")
        columns.insert(0, "clean")
    if flagged:
        columns.append(COLUMN)
        for row, flags in flagged.items():
            rows[row][COLUMN] = cell(flags)
    return columns, rows


def legend(records: Sequence[Record]) -> str:
    """The legend under a table of `records`: the units, then each threat's notes (robench.report), once."""
    titles = threat_titles(r.threat for r in records)
    parts = [UNITS]
    for record in records:
        notes = report_of(record.threat, record.metrics).notes
        if notes:
            parts.append(f"{titles[record.threat]}: {' '.join(notes)}")
    for record, flags in zip(records, flags_of(records)):
        parts += [f"Flag {f.code} ({record.model}, {titles[record.threat]}): {f.message}." for f in flags]
    return " ".join(dict.fromkeys(parts))


def render(records: Sequence[Record], fmt: str = "table", *, detail: bool | None = None, width: int = WIDTH) -> str:
    """`fmt`: "table" (aligned text fitted to `width` columns, headline columns only unless `detail`),
    "markdown", "csv", "latex" (every column unless `detail` is False) or "json" (the full Records)."""
    if fmt == "json":
        return json.dumps([r.to_dict() for r in records], indent=2)
    columns, rows = grid(records, detail=fmt != "table" if detail is None else detail)
    return render_grid(columns, rows, fmt, note=legend(records), width=width)


_LATEX = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
          "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "|": r"\textbar{}",
          "<": "$<$", ">": "$>$", "σ": r"$\sigma$", "ε": r"$\varepsilon$", "α": r"$\alpha$", "δ": r"$\delta$",
          "±": r"$\pm$", "×": r"$\times$", "≤": r"$\leq$", "≥": r"$\geq$", "µ": r"$\mu$", "–": "--", "—": "---"}
#: the packages a LaTeX table needs, named in its first line
LATEX_PACKAGES = ("booktabs",)


def _latex(text: str) -> str:
    """`text` for pdflatex: special characters escaped, symbols (sigma, >, ...) as math."""
    return "".join(_LATEX.get(char, char) for char in str(text))


def _csv_number(cell: Any) -> Any:
    """A cell's number in a CSV: accuracies and percent columns in % (as in every table), the rest as is."""
    value = plain(cell)
    if isinstance(_value(cell), Accuracy) or (isinstance(cell, Column) and cell.percent
                                              and isinstance(value, (int, float))):
        return round(100 * value, 4)
    return "" if value is None else value


def _aligned(header: Sequence[str], body: Sequence[Sequence[str]], wrap: bool, lines: int = 3) -> list[str]:
    """Rows of text in columns as wide as their widest cell; with `wrap`, a header breaks at spaces into at
    most `lines` lines, its column as narrow as that allows."""
    def width(i: int, head: str) -> int:
        w = max([len(row[i]) for row in body] + [max(map(len, head.split(" "))) if wrap else len(head)])
        while wrap and len(textwrap.wrap(head, w, break_long_words=False)) > lines:
            w += 1
        return w

    widths = [width(i, h) for i, h in enumerate(header)]
    heads = [textwrap.wrap(h, w, break_long_words=False) or [""] if wrap else [h] for h, w in zip(header, widths)]
    depth = max(map(len, heads))
    heads = [[""] * (depth - len(h)) + h for h in heads]  # headers sit on the line above the rule
    rows = [[h[k] for h in heads] for k in range(depth)] + [["-" * w for w in widths], *body]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]


def _fitted(columns: Sequence[str], rows: dict[str, dict[str, Any]], first: str, width: int) -> tuple[list[str], bool]:
    """The plain-text layout of the table that fits `width`: one row per model with intervals, then with
    headers wrapped, then transposed (a row per column), then the same without intervals; the last as a
    fallback. Returns the lines and whether they show the intervals."""
    lines: list[str] = []
    for transposed, interval, wrap in ((False, True, False), (False, True, True), (True, True, True),
                                       (False, False, False), (False, False, True), (True, False, True)):
        cells = {name: [format_cell(row.get(c), interval) for c in columns] for name, row in rows.items()}
        if transposed:
            lines = _aligned(["", *cells], [[c, *(v[i] for v in cells.values())] for i, c in enumerate(columns)], wrap)
        else:
            lines = _aligned([first, *columns], [[name, *values] for name, values in cells.items()], wrap)
        if max(map(len, lines)) <= width:
            break
    return lines, interval


def markdown_text(text: Any) -> str:
    """`text` for a Markdown table cell or line: markup in a name shows as text; '|' would split a cell."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;")
    return text.replace("|", "\\|").replace("\n", " ")


def render_grid(columns: Sequence[str], rows: dict[str, dict[str, Any]], fmt: str = "table", *,
                first: str = "model", note: str | None = None, width: int = WIDTH) -> str:
    """A table of `rows` (row name -> column -> Column, Accuracy, number or text) in the given column order:
    "table" (aligned text fitted to `width`, see `_fitted`), "markdown", "csv" (values, then one interval
    column per accuracy column) or "latex" (a booktabs tabular that compiles with pdflatex). Accuracies
    and rates show in %, accuracies with their 95% interval. `note` (default `UNITS`) is the legend under
    the table; "" leaves it out. A per-row annotation (e.g. warnings) is one more column of text."""
    header = [first, *columns]
    if note is None:
        note = UNITS
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        ci_columns = [c for c in columns if any(isinstance(_value(r.get(c)), Accuracy) for r in rows.values())]
        writer.writerow(header + [f"{c} ci95" for c in ci_columns])
        for model, row in rows.items():
            intervals = [_value(row.get(c)).interval if isinstance(_value(row.get(c)), Accuracy) else None
                         for c in ci_columns]
            writer.writerow([model, *(_csv_number(row.get(c)) for c in columns)]
                            + [f"{100 * i[0]:.2f}-{100 * i[1]:.2f}" if i else "" for i in intervals])
        return out.getvalue()
    body = [[model] + [format_cell(row.get(c)) for c in columns] for model, row in rows.items()]
    if fmt == "markdown":
        lines = ["| " + " | ".join(map(markdown_text, header)) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(map(markdown_text, cells)) + " |" for cells in body]
        return "\n".join(lines) + (f"\n\n{note}\n" if note else "\n")
    if fmt == "latex":
        comment = textwrap.wrap(note, 100, initial_indent="% ", subsequent_indent="% ", break_on_hyphens=False)
        lines = [f"% needs \\usepackage{{{','.join(LATEX_PACKAGES)}}}", r"\begin{tabular}{l" + "r" * len(columns) + "}",
                 r"\toprule", " & ".join(map(_latex, header)) + r" \\", r"\midrule"]
        lines += [" & ".join(map(_latex, cells)) + r" \\" for cells in body]
        lines += [r"\bottomrule", r"\end{tabular}", *comment]
        return "\n".join(lines) + "\n"
    if fmt != "table":
        raise ValueError(f"unknown table format {fmt!r}; use table, markdown, csv, latex or json")
    lines, intervals = _fitted(columns, rows, first, width)
    if not intervals:
        note = f"Intervals left out to fit {width} columns (the markdown and CSV outputs have them). {note}".strip()
    legend = textwrap.wrap(note, max(width, 40), break_on_hyphens=False) if note else []
    return "\n".join(lines + ([""] + legend if legend else [])) + "\n"


def to_dataframe(records: Sequence[Record]):
    """The Records as a pandas DataFrame in long form, one row per Record and column of its threat's
    Report: model, threat, dataset, split, n, column, value, correct, ci95_low, ci95_high (the last
    three only for accuracies), headline (whether the column is a headline one)."""
    import pandas as pd

    rows = []
    for record in records:
        for column in report_of(record.threat, record.metrics).columns:
            value = column.value
            accuracy = value if isinstance(value, Accuracy) else None
            rows.append({"model": record.model, "threat": record.threat, "dataset": record.dataset,
                         "split": record.split, "n": record.n, "column": column.name,
                         "value": accuracy.value if accuracy else value,
                         "correct": accuracy.correct if accuracy else None,
                         "ci95_low": accuracy.interval[0] if accuracy else None,
                         "ci95_high": accuracy.interval[1] if accuracy else None,
                         "headline": column.head is not None})
    return pd.DataFrame(rows)
