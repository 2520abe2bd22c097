"""The results store: SQLite (WAL) holding finished shards and Records, so a repeated task is served
from cache and a killed run resumes where it stopped. Every write is one transaction; a key is written
once (INSERT OR IGNORE), so a rerun never duplicates rows."""
from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from robench.errors import RobenchError

SCHEMA = """
CREATE TABLE IF NOT EXISTS shards (key TEXT PRIMARY KEY, threat TEXT, model TEXT, payload BLOB, created REAL);
CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, model TEXT, threat TEXT, dataset TEXT,
                                    record TEXT, created REAL);
"""


def default_store_path() -> Path:
    return Path(os.environ.get("ROBENCH_CACHE", "~/.cache/robench")).expanduser() / "results.sqlite"


def pack(outputs: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **outputs)
    return buffer.getvalue()


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
        return {k: arrays[k] for k in arrays.files}


class Store:
    """Shards and Records keyed by everything that determines them (see robench.evaluate)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path).expanduser() if path else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise RobenchError(f"results store {self.path} cannot be opened ({exc}); "
                               "point --store at another file or remove the broken one.") from None

    def get_shard(self, key: str) -> dict[str, np.ndarray] | None:
        row = self.db.execute("SELECT payload FROM shards WHERE key = ?", (key,)).fetchone()
        return unpack(row[0]) if row else None

    def put_shard(self, key: str, threat: str, model: str, outputs: dict[str, np.ndarray]) -> None:
        self.db.execute("INSERT OR IGNORE INTO shards VALUES (?, ?, ?, ?, ?)",
                        (key, threat, model, pack(outputs), time.time()))

    def get_record(self, key: str) -> dict | None:
        row = self.db.execute("SELECT record FROM records WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_record(self, key: str, record: dict) -> None:
        self.db.execute("INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?, ?)",
                        (key, record["model"], record["threat"], record["dataset"], json.dumps(record),
                         time.time()))

    def records(self, model: str | None = None) -> Iterator[dict]:
        query, args = "SELECT record FROM records", ()
        if model is not None:
            query, args = query + " WHERE model = ?", (model,)
        for (text,) in self.db.execute(query + " ORDER BY created", args):
            yield json.loads(text)

    def count(self, table: str) -> int:
        if table not in ("shards", "records"):
            raise ValueError(table)
        return self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def close(self) -> None:
        self.db.close()
