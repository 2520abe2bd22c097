"""The results store on its own: what it holds, as rows (model, threat, dataset, n, when, headline), and
the Records themselves for export (`robench results`)."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass
from typing import Any, Sequence

from robench.errors import RobenchError
from robench.store import Store, StoredRecord

COLUMNS = ("key", "model", "threat", "dataset", "split", "n", "when", "headline")


@dataclass(frozen=True)
class Row:
    """One stored Record, summarised: `headline` is its threat's headline columns (robench.report),
    e.g. "PGD Linf 0.1 91.5; PGD Linf 0.3 12.0" (accuracies in %)."""

    key: str
    model: str
    threat: str
    dataset: str
    split: str
    n: int
    when: str
    headline: str

    def cells(self) -> list[str]:
        return [self.key, self.model, self.threat, self.dataset, self.split, str(self.n), self.when, self.headline]


def headline_text(record: dict[str, Any]) -> str:
    """The headline of a stored Record (a dict) in one line: the headline columns of its threat's
    Report with their values (accuracies in %), or the clean accuracy where a threat has no headline.
    A threat that no longer builds (a plugin not installed) says so instead."""
    from robench.evaluate import Record
    from robench.tables import format_cell, headline

    try:
        columns = headline(Record.from_dict(record), detail=False)
    except RobenchError as exc:  # shown, not hidden: the row still lists the Record
        return f"(cannot read: {' '.join(str(exc).split())})"
    return "; ".join(f"{title} {format_cell(cell, interval=False)}" for title, cell in columns.items())


def _when(created: float) -> str:
    return dt.datetime.fromtimestamp(created, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def rows(stored: Sequence[StoredRecord]) -> list[Row]:
    return [Row(s.key, s.record["model"], s.record["threat"], s.record["dataset"], s.record.get("split", ""),
                int(s.record["n"]), _when(s.created), headline_text(s.record)) for s in stored]


def find(store: Store | str | None = None, *, model: str | None = None, threat: str | None = None,
         dataset: str | None = None) -> list[StoredRecord]:
    """The stored Records matching the glob patterns (see Store.find)."""
    store = store if isinstance(store, Store) else Store(store)
    return store.find(model=model, threat=threat, dataset=dataset)


def render(stored: Sequence[StoredRecord], fmt: str = "table") -> str:
    """The Records as text: "table" (aligned columns, keys shortened to 12 characters), "csv" (every
    column, full keys) or "json" (the whole Records with their keys and times)."""
    if fmt == "json":
        return json.dumps([{"key": s.key, "created": _when(s.created), **s.record} for s in stored], indent=2) + "\n"
    table = rows(stored)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(row.cells() for row in table)
        return buffer.getvalue()
    if fmt != "table":
        raise RobenchError(f"format must be one of table, csv, json; got {fmt!r}.")
    lines = [list(COLUMNS)] + [[row.key[:12], *row.cells()[1:]] for row in table]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS) - 1)]
    return "".join("  ".join([*(c.ljust(w) for c, w in zip(line, widths)), line[-1]]).rstrip() + "\n"
                   for line in lines)
