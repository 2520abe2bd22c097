"""The results store under faults: corrupted values are caught by their checksums and recomputed, every
SQLite failure is a one-line RobenchError that says what is wrong (and only a corrupt file is called
broken), old stores are migrated and newer ones refused."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from contextlib import closing

import numpy as np
import pytest
from torch import nn

import robench
from robench import store as store_module
from robench.cli import main
from robench.errors import RobenchError
from robench.store import Store, pack
from robench.threats import build_threat

OLD_SCHEMA = """
CREATE TABLE shards (key TEXT PRIMARY KEY, threat TEXT, model TEXT, payload BLOB, created REAL);
CREATE TABLE records (key TEXT PRIMARY KEY, model TEXT, threat TEXT, dataset TEXT, record TEXT, created REAL);
"""
REMOVE_ADVICE = ("remove", "delete")


def record(accuracy: float = 0.9731, model: str = "cnn") -> dict:
    return {"model": model, "threat": "clean", "dataset": "mnist-5k", "metrics": {"accuracy": accuracy}}


def outputs(n: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"correct": rng.random(n) < 0.9, "margin": rng.random(n).astype(np.float32)}


def raw_execute(path, sql: str, args=()) -> None:
    """Change the store behind its back, as a disk fault or a stray tool would."""
    db = sqlite3.connect(path)
    with db:
        db.execute(sql, args)
    db.close()


def opened(path) -> closing[Store]:
    """A Store that closes at the end of the with-block."""
    return closing(Store(path))


def assert_one_line(error: pytest.ExceptionInfo, *wanted: str, remove_advice: bool) -> str:
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in wanted), message
    assert any(w in message.lower() for w in REMOVE_ADVICE) == remove_advice, message
    return message


@pytest.fixture
def read_only():
    """Make a file or folder read-only for real: chmod, or (as root, whom chmod does not stop) chattr +i."""
    undo = []

    def protect(path):
        if os.geteuid() != 0:
            mode = path.stat().st_mode
            path.chmod(0o555 if path.is_dir() else 0o444)
            undo.append(lambda: path.chmod(mode))
        elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
            undo.append(lambda: subprocess.run(["chattr", "-i", str(path)], check=True))
        else:
            pytest.skip("running as root (chmod does not stop root's writes) and chattr +i is unavailable here")
        try:
            open(path / "probe" if path.is_dir() else path, "a").close()
        except OSError:
            return
        pytest.skip(f"{path} stays writable here even after protecting it")

    yield protect
    for step in reversed(undo):
        step()


# 1. checksums: a corrupted value is reported, dropped and recomputed, never served

def test_a_record_with_one_changed_digit_is_dropped_and_stored_again(tmp_path):
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.put_record("r1", record(0.9731))
    store.put_record("r2", record(0.5, model="other"))
    raw_execute(path, "UPDATE records SET record = replace(record, '0.9731', '0.9781') WHERE key = 'r1'")
    text = sqlite3.connect(path).execute("SELECT record FROM records WHERE key = 'r1'").fetchone()[0]
    assert json.loads(text)["metrics"]["accuracy"] == 0.9781  # still valid JSON: only the checksum can tell
    with pytest.warns(RuntimeWarning, match=r"record r1 fails its checksum; dropped it, it will be recomputed"):
        assert store.get_record("r1") is None
    assert store.count("records") == 1
    store.put_record("r1", record(0.9731))
    assert store.get_record("r1") == record(0.9731)
    # records() skips (and drops) a corrupted one too
    raw_execute(path, "UPDATE records SET record = replace(record, '0.5', '0.6') WHERE key = 'r2'")
    with pytest.warns(RuntimeWarning, match="record r2 fails its checksum"):
        assert list(store.records()) == [record(0.9731)]
    assert store.count("records") == 1


@pytest.mark.parametrize("fault,reason", [("flip", "fails its checksum"), ("garble", "cannot be decoded")])
def test_a_corrupted_shard_is_dropped_and_stored_again(tmp_path, fault, reason):
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.put_shard("s1", "clean", "cnn", outputs())
    payload = bytearray(sqlite3.connect(path).execute("SELECT payload FROM shards").fetchone()[0])
    if fault == "flip":  # one flipped bit inside the npz payload
        payload[len(payload) // 2] ^= 0x01
        raw_execute(path, "UPDATE shards SET payload = ?", (bytes(payload),))
    else:  # garbage whose checksum matches: it must still not be served
        raw_execute(path, "UPDATE shards SET payload = ?, checksum = ?",
                    (b"not an npz", hashlib.sha256(b"not an npz").hexdigest()))
    with pytest.warns(RuntimeWarning, match=f"shard s1 {reason}; dropped it, it will be recomputed"):
        assert store.get_shard("s1") is None
    assert store.count("shards") == 0
    store.put_shard("s1", "clean", "cnn", outputs())
    assert {k: v.tolist() for k, v in store.get_shard("s1").items()} == {k: v.tolist() for k, v in outputs().items()}


def test_a_flipped_byte_on_disk_is_caught_by_the_checksum(tmp_path):
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.put_shard("s1", "clean", "cnn", outputs(n=20000))
    payload = store.db.execute("SELECT payload FROM shards").fetchone()[0]
    store.close()  # checkpoints the WAL into the file
    data = bytearray(path.read_bytes())
    at = data.find(payload[2000:2032])
    assert at > 0
    data[at + 16] ^= 0x40
    path.write_bytes(bytes(data))
    store = Store(path)
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"  # SQLite itself sees nothing wrong
    with pytest.warns(RuntimeWarning, match="shard s1 fails its checksum"):
        assert store.get_shard("s1") is None


def test_evaluate_recomputes_a_corrupted_record_and_shard(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite"
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    threat = build_threat("clean")
    calls = []
    original = type(threat).evaluate_shard
    monkeypatch.setattr(type(threat), "evaluate_shard", lambda self, *a: calls.append(1) or original(self, *a))
    first = robench.evaluate(model, threat, dataset="mnist-5k", n=100, store=path, shard_size=50)[0]
    assert len(calls) == 2
    raw_execute(path, """UPDATE records SET record = replace(record, '"n": 100', '"n": 190')""")
    key = sqlite3.connect(path).execute("SELECT key FROM shards ORDER BY created LIMIT 1").fetchone()[0]
    raw_execute(path, "UPDATE shards SET payload = substr(payload, 1, 100) WHERE key = ?", (key,))
    with pytest.warns(RuntimeWarning, match="will be recomputed") as caught:
        again = robench.evaluate(model, threat, dataset="mnist-5k", n=100, store=path, shard_size=50)[0]
    assert {str(w.message).split()[3] for w in caught} == {"record", "shard"}
    assert len(calls) == 3  # only the corrupted shard ran again
    assert again.n == 100 and again.metrics == first.metrics
    with opened(path) as store:
        assert store.count("shards") == 2 and store.count("records") == 1


# 2./3. every failure is a one-line RobenchError; only a corrupt file is called broken

def test_a_corrupt_database_page_says_remove_the_broken_file(tmp_path):
    path = tmp_path / "s.sqlite"
    with opened(path) as store:
        for i in range(300):
            store.put_record(f"r{i}", record(i / 300))
    data = bytearray(path.read_bytes())
    pages = len(data) // 4096
    assert pages > 10
    data[(pages // 2) * 4096:(pages // 2 + 1) * 4096] = b"\xff" * 4096
    path.write_bytes(bytes(data))
    with pytest.raises(RobenchError) as error:
        with opened(path) as store:
            list(store.records())
            for i in range(300):
                store.get_record(f"r{i}")
    assert_one_line(error, str(path), "corrupt", "remove the broken file", remove_advice=True)


def test_a_file_that_is_not_a_database_says_remove_the_broken_file(tmp_path):
    path = tmp_path / "s.sqlite"
    path.write_text("not a database " * 100)
    with pytest.raises(RobenchError) as error:
        Store(path)
    assert_one_line(error, "cannot be opened", "not an SQLite database", "remove the broken file", remove_advice=True)


def test_a_read_only_store_fails_at_open_before_any_work(tmp_path, read_only, monkeypatch):
    path = tmp_path / "s.sqlite"
    with opened(path) as store:
        store.put_shard("s1", "clean", "cnn", outputs())
    read_only(path)
    with pytest.raises(RobenchError) as error:
        Store(path)
    assert_one_line(error, "is read-only", "point --store at a writable file", remove_advice=False)
    threat = build_threat("clean")
    calls = []
    monkeypatch.setattr(type(threat), "evaluate_shard", lambda self, *a: calls.append(1))
    with pytest.raises(RobenchError, match="is read-only"):
        robench.evaluate(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), threat, dataset="mnist-5k", n=10,
                         store=path)
    assert calls == []


@pytest.mark.parametrize("existing", [True, False])
def test_a_store_in_a_read_only_folder_fails_at_open(tmp_path, read_only, existing):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "s.sqlite"
    if existing:
        with opened(path) as store:
            store.put_record("r1", record())
    read_only(folder)
    with pytest.raises(RobenchError) as error:
        Store(path)
    assert_one_line(error, f"its folder {folder} is read-only", "writable folder", remove_advice=False)


def test_a_directory_is_not_a_store(tmp_path, capsys):
    with pytest.raises(RobenchError) as error:
        Store(tmp_path)
    assert_one_line(error, "is a directory", str(tmp_path / "results.sqlite"), remove_advice=False)
    code = main(["run", "--model", "mnist5k-small-cnn", "--threat", "clean", "--dataset", "mnist-5k", "--n", "10",
                 "--store", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is a directory" in err


def test_a_full_disk_keeps_the_finished_work(tmp_path):
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.put_shard("s1", "clean", "cnn", outputs())
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")  # the database cannot grow: SQLite's real SQLITE_FULL
    with pytest.raises(RobenchError) as error:
        store.put_shard("s2", "clean", "cnn", outputs(n=20000))
    assert_one_line(error, "cannot be written", "disk is full", "intact", remove_advice=False)
    store.close()
    with opened(path) as store:
        assert store.count("shards") == 1 and store.get_shard("s1")["correct"].tolist() == outputs()["correct"].tolist()


def test_a_locked_store_says_so(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.1)
    try:
        with pytest.raises(RobenchError) as error:
            Store(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_one_line(error, "locked", "wait for that run to finish", remove_advice=False)


# 4. schema versions

def test_an_old_store_is_migrated_with_checksums(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    with db:
        db.execute("INSERT INTO shards VALUES ('good', 'clean', 'cnn', ?, 1.0)", (pack(outputs()),))
        db.execute("INSERT INTO shards VALUES ('bad', 'clean', 'cnn', ?, 2.0)", (b"garbled npz",))
        db.execute("INSERT INTO records VALUES ('good', 'cnn', 'clean', 'mnist-5k', ?, 1.0)", (json.dumps(record()),))
        db.execute("INSERT INTO records VALUES ('bad', 'cnn', 'clean', 'mnist-5k', '{\"model\": ', 2.0)")
    db.close()
    store = Store(path)
    assert store.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
    for table in ("shards", "records"):
        assert "checksum" in {row[1] for row in store.db.execute(f"PRAGMA table_info({table})")}
        assert store.db.execute(f"SELECT COUNT(*) FROM {table} WHERE checksum IS NULL").fetchone() == (0,)
    assert store.get_shard("good")["margin"].tolist() == outputs()["margin"].tolist()
    assert store.get_record("good") == record()
    with pytest.warns(RuntimeWarning, match="shard bad cannot be decoded"):
        assert store.get_shard("bad") is None
    with pytest.warns(RuntimeWarning, match="record bad cannot be decoded"):
        assert store.get_record("bad") is None
    store.close()
    with opened(path) as store:  # opening again migrates nothing more
        assert store.count("shards") == 1 and store.get_record("good") == record()


def test_a_store_of_a_newer_robench_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    Store(path).close()
    raw_execute(path, "UPDATE meta SET value = '3' WHERE key = 'schema'")
    with pytest.raises(RobenchError) as error:
        Store(path)
    assert_one_line(error, "written by a newer robench (schema 3", "upgrade robench or use another --store",
                    remove_advice=False)


# 5. the interface used elsewhere

def test_the_public_interface(tmp_path):
    path = tmp_path / "s.sqlite"
    store = Store(path)
    assert store.path == path and store.get_shard("s1") is None and store.get_record("r1") is None
    for _ in range(2):  # a rerun never duplicates rows
        store.put_shard("s1", "clean", "cnn", outputs())
        store.put_record("r1", record(0.1, model="cnn"))
        store.put_record("r2", record(0.2, model="mlp"))
    assert store.count("shards") == 1 and store.count("records") == 2
    assert list(store.records()) == [record(0.1, "cnn"), record(0.2, "mlp")]
    assert list(store.records(model="mlp")) == [record(0.2, "mlp")]
    with pytest.raises(ValueError):
        store.count("meta")
    store.close()
    with opened(path) as store:
        assert store.get_record("r1") == record(0.1, "cnn")
