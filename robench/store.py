"""The results store: SQLite (WAL) holding finished shards and Records, so a repeated task is served
from cache and a killed run resumes where it stopped.

Every value is stored with the sha256 of its bytes and verified on read: a value that fails (or cannot
be decoded) is reported with a warning, dropped and treated as missing, so it is recomputed, never
served. Every write is one transaction; a key holds one row (INSERT OR REPLACE), so a rerun never
duplicates rows. Opening writes the schema version, so a store that cannot be written fails before any
work starts. Every SQLite failure becomes a one-line RobenchError that says what is wrong.

Schema versions: 1 had no checksums and no `meta` table (migrated on open); 2 is the current one."""
from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np

from robench.errors import RobenchError
from robench.files import cache_root

SCHEMA_VERSION = 2
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS shards (key TEXT PRIMARY KEY, threat TEXT, model TEXT, payload BLOB, created REAL,"
    " checksum TEXT)",
    "CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, model TEXT, threat TEXT, dataset TEXT, record TEXT,"
    " created REAL, checksum TEXT)",
)
VALUE_COLUMN = {"shards": "payload", "records": "record"}
BUSY_TIMEOUT_S = 60.0  # how long to wait for another process's write lock

# SQLite's primary result codes (https://sqlite.org/rescode.html)
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR = 5, 6, 8, 10
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 11, 13, 14, 26


class StoredRecord(NamedTuple):
    """A Record as stored: its key, when it was written (seconds since the epoch) and the Record (a dict)."""

    key: str
    created: float
    record: dict


def _glob_escape(text: str) -> str:
    """`text` with SQLite GLOB's special characters matched literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def default_store_path() -> Path:
    return cache_root() / "results.sqlite"


def pack(outputs: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **outputs)
    return buffer.getvalue()


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
        return {k: arrays[k] for k in arrays.files}


def checksum(value: bytes | str | None) -> str:
    """The sha256 (hex) of a stored value: a payload's bytes or a Record's JSON text (UTF-8)."""
    data = value.encode() if isinstance(value, str) else value or b""
    return hashlib.sha256(data).hexdigest()


def store_error(path: Path, action: str, exc: sqlite3.Error) -> RobenchError:
    """A one-line error for an SQLite failure while the store was `action` ("opened", "read", "written"):
    what is wrong and what to do. Only a corrupt file gets the advice to remove it."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None
    text = str(exc).lower()

    def means(codes: tuple[int, ...], *phrases: str) -> bool:
        return primary in codes or any(p in text for p in phrases)

    if means((SQLITE_CORRUPT, SQLITE_NOTADB), "malformed", "not a database"):
        problem, advice = ("it is corrupt or not an SQLite database",
                           "remove the broken file (its cached results are lost) or point --store at another one")
    elif means((SQLITE_FULL,), "disk is full"):
        problem, advice = ("the disk is full",
                           "free space and rerun; the store itself is intact and keeps the finished work")
    elif means((SQLITE_READONLY,), "readonly", "read-only"):
        problem, advice = "it is read-only", "point --store at a writable file, or make this one writable"
    elif means((SQLITE_BUSY, SQLITE_LOCKED), "locked"):
        problem, advice = ("another process holds it locked",
                           "wait for that run to finish, or point --store at another file")
    elif means((SQLITE_CANTOPEN,), "unable to open") and not os.access(path.parent, os.W_OK | os.X_OK):
        problem, advice = (f"its folder {path.parent} is read-only",
                           "point --store at a file in a writable folder (SQLite writes its journal next to it)")
    elif means((SQLITE_CANTOPEN,), "unable to open"):
        problem, advice = ("SQLite cannot open the file",
                           "check that it and its folder are accessible, or point --store at another file")
    elif means((SQLITE_IOERR,), "i/o error"):
        problem, advice = ("the disk reported an I/O error",
                           "check the disk or mount and rerun, or point --store at another file")
    else:
        problem, advice = "SQLite failed", "point --store at another file"
    return RobenchError(f"results store {path} cannot be {action}: {problem} ({exc}); {advice}.")


class Store:
    """Shards and Records keyed by everything that determines them (see robench.evaluate)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path).expanduser() if path else default_store_path()
        if self.path.is_dir():
            raise RobenchError(f"results store {self.path} cannot be opened: it is a directory; point --store at "
                               f"a file, e.g. {self.path / 'results.sqlite'}.")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RobenchError(f"results store {self.path} cannot be opened: its folder cannot be created "
                               f"({exc.strerror}); point --store at a file in a writable folder.") from exc
        with self._errors("opened"):
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            with self._errors("opened"):
                self.db.create_function("robench_sha256", 1, checksum, deterministic=True)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                with self._transaction():
                    self._upgrade()
        except RobenchError:
            self.db.close()
            raise

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn SQLite failures inside the block into one-line RobenchErrors."""
        try:
            yield
        except sqlite3.Error as exc:
            raise store_error(self.path, action, exc) from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction: committed if the block succeeds, rolled back otherwise."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        finally:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")

    def _upgrade(self) -> None:
        """Create or migrate the tables to SCHEMA_VERSION and write the version (a real write, so a store
        that cannot be written fails here, before any work)."""
        tables = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() if "meta" in tables else None
        if row is not None and not str(row[0]).isdigit():
            raise RobenchError(f"results store {self.path} has an unknown schema version {row[0]!r}; "
                               "point --store at another file.")
        if row is not None:
            version = int(row[0])
        elif tables & set(VALUE_COLUMN):
            version = 1  # the layout before checksums
        else:
            version = SCHEMA_VERSION  # a new store
        if version > SCHEMA_VERSION:
            raise RobenchError(f"results store {self.path} was written by a newer robench (schema {version}; this "
                               f"one reads schema {SCHEMA_VERSION}); upgrade robench or use another --store.")
        if version == 1:  # add the checksums to the rows as they are; a garbled value fails to decode later
            for table in sorted(tables & set(VALUE_COLUMN)):
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN checksum TEXT")
                self.db.execute(f"UPDATE {table} SET checksum = robench_sha256({VALUE_COLUMN[table]})")
        for statement in SCHEMA:
            self.db.execute(statement)
        self.db.execute("INSERT INTO meta VALUES ('schema', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (str(SCHEMA_VERSION),))

    def _verified(self, table: str, key: str, value: Any, stored: str | None, decode: Callable[[Any], Any]) -> Any:
        """`value` decoded if it matches its checksum; otherwise warn, drop the row and return None."""
        if stored == checksum(value):
            try:
                return decode(value)
            except Exception:  # noqa: BLE001 - any failure to decode means a garbled value
                reason = "cannot be decoded"
        else:
            reason = "fails its checksum"
        warnings.warn(f"results store {self.path}: {table[:-1]} {key} {reason}; dropped it, it will be recomputed.",
                      RuntimeWarning)
        with self._errors("written"):
            self.db.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
        return None

    def _get(self, table: str, key: str, decode: Callable[[Any], Any]) -> Any:
        with self._errors("read"):
            row = self.db.execute(f"SELECT {VALUE_COLUMN[table]}, checksum FROM {table} WHERE key = ?",
                                  (key,)).fetchone()
        return None if row is None else self._verified(table, key, *row, decode)

    def get_shard(self, key: str) -> dict[str, np.ndarray] | None:
        """A finished shard's outputs, or None if it is missing (or was corrupt and has been dropped)."""
        return self._get("shards", key, unpack)

    def put_shard(self, key: str, threat: str, model: str, outputs: dict[str, np.ndarray]) -> None:
        payload = pack(outputs)
        with self._errors("written"):
            self.db.execute("INSERT OR REPLACE INTO shards (key, threat, model, payload, created, checksum) "
                            "VALUES (?, ?, ?, ?, ?, ?)", (key, threat, model, payload, time.time(), checksum(payload)))

    def get_record(self, key: str) -> dict | None:
        """A finished Record (as a dict), or None if it is missing (or was corrupt and has been dropped)."""
        return self._get("records", key, json.loads)

    def put_record(self, key: str, record: dict) -> None:
        text = json.dumps(record)
        with self._errors("written"):
            self.db.execute("INSERT OR REPLACE INTO records (key, model, threat, dataset, record, created, checksum) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", (key, record["model"], record["threat"], record["dataset"],
                                                             text, time.time(), checksum(text)))

    def records(self, model: str | None = None) -> Iterator[dict]:
        """The stored Records (of `model`, if given) in the order they were written; corrupt ones are dropped."""
        query, args = "SELECT key, record, checksum FROM records", ()
        if model is not None:
            query, args = query + " WHERE model = ?", (model,)
        with self._errors("read"):
            rows = self.db.execute(query + " ORDER BY created", args).fetchall()
        for key, text, stored in rows:
            record = self._verified("records", key, text, stored, json.loads)
            if record is not None:
                yield record

    def find(self, model: str | None = None, threat: str | None = None, dataset: str | None = None) -> list[StoredRecord]:
        """The stored Records whose model, threat and dataset match the given glob patterns (None: any), in
        the order they were written, with their keys and times. A threat pattern also matches by name:
        ``pgd-linf`` selects every ``pgd-linf:...`` canonical string. Corrupt rows are dropped."""
        clauses, args = [], []
        for column, pattern in (("model", model), ("dataset", dataset)):
            if pattern is not None:
                clauses.append(f"{column} GLOB ?")
                args.append(pattern)
        if threat is not None:
            clauses.append("(threat GLOB ? OR threat GLOB ?)")
            args += [threat, _glob_escape(threat) + ":*"]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._errors("read"):
            rows = self.db.execute(f"SELECT key, created, record, checksum FROM records{where} ORDER BY created",
                                   args).fetchall()
        found = []
        for key, created, text, stored in rows:
            record = self._verified("records", key, text, stored, json.loads)
            if record is not None:
                found.append(StoredRecord(key, float(created), record))
        return found

    def delete_records(self, keys: Iterable[str], shards: bool = False) -> int:
        """Delete the Records with these keys (one transaction); with `shards`, also the finished shards
        of the same model name and threat, so that the next run recomputes them instead of reassembling
        the Record from the cache. Returns how many Records were deleted."""
        keys = list(keys)
        with self._errors("written"), self._transaction():
            deleted = 0
            for key in keys:
                row = self.db.execute("SELECT model, threat FROM records WHERE key = ?", (key,)).fetchone()
                if row is None:
                    continue
                self.db.execute("DELETE FROM records WHERE key = ?", (key,))
                deleted += 1
                if shards:
                    self.db.execute("DELETE FROM shards WHERE model = ? AND threat = ?", row)
        return deleted

    def count(self, table: str) -> int:
        if table not in VALUE_COLUMN:
            raise ValueError(table)
        with self._errors("read"):
            return self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def close(self) -> None:
        with self._errors("closed"):
            self.db.close()
