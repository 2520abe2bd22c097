"""`robench results`: what the results store holds, filtered, exported to CSV/JSON, and deleted."""
import csv
import json

import pytest

import robench
from robench.cli import main
from robench.store import Store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory, embedded_model):
    path = tmp_path_factory.mktemp("results") / "s.sqlite"
    robench.evaluate(embedded_model, ["clean", "fgsm:eps=0.1"], dataset="mnist-5k", n=40, store=path,
                     model_name="cnn-a")
    robench.evaluate(embedded_model, ["fgsm:eps=0.2"], dataset="mnist-5k", n=30, store=path, model_name="cnn-b")
    return path


def _run(capsys, *argv):
    code = main(["results", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_lists_what_is_stored(store_path, capsys):
    code, out, _ = _run(capsys, "--store", str(store_path))
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["key", "model", "threat", "dataset", "split", "n", "when", "headline"]
    assert len(lines) == 1 + 3
    clean = next(line for line in lines[1:] if line.split()[2] == "clean")
    assert "cnn-a" in clean and "mnist-5k" in clean and " 40 " in clean and "UTC" in clean
    assert "clean" in clean.split("UTC", 1)[1]  # the headline: clean accuracy in %
    fgsm = next(line for line in lines if "fgsm:eps=0.2" in line)
    assert "cnn-b" in fgsm and " 30 " in fgsm


def test_filters(store_path, capsys):
    _, out, _ = _run(capsys, "--store", str(store_path), "--threat", "fgsm")
    assert [line.split()[2] for line in out.splitlines()[1:]] == ["fgsm:eps=0.1,precision=fp32",
                                                                  "fgsm:eps=0.2,precision=fp32"]
    _, out, _ = _run(capsys, "--store", str(store_path), "--model", "cnn-b", "--threat", "fgsm*")
    assert len(out.splitlines()) == 2 and "cnn-b" in out
    _, out, _ = _run(capsys, "--store", str(store_path), "--dataset", "mnist")
    assert out.startswith("no stored Records match")


def test_exports_csv_and_json(store_path, tmp_path, capsys):
    code, out, _ = _run(capsys, "--store", str(store_path), "--out", str(tmp_path / "r.csv"))
    assert code == 0 and "wrote 3 Records" in out
    table = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [r["model"] for r in table] == ["cnn-a", "cnn-a", "cnn-b"] and len(table[0]["key"]) == 32
    assert {r["n"] for r in table} == {"40", "30"}
    code, out, _ = _run(capsys, "--store", str(store_path), "--format", "json", "--model", "cnn-a")
    records = json.loads(out)
    assert len(records) == 2 and records[0]["metrics"]["clean_accuracy"]["n"] == 40
    assert {"key", "created", "provenance", "threat"} <= set(records[0])
    code, _, err = _run(capsys, "--store", str(store_path), "--out", str(tmp_path / "r.txt"))
    assert code == 2 and "--format csv or json" in err


def test_deletes_selected_records_only_with_yes(store_path, tmp_path, capsys):
    import sqlite3

    path = tmp_path / "copy.sqlite"
    with sqlite3.connect(store_path) as source, sqlite3.connect(path) as target:
        source.backup(target)  # a copy with what the WAL holds
    code, out, err = _run(capsys, "--store", str(path), "--model", "cnn-a", "--delete")
    assert code == 2 and "add --yes" in err and "cnn-a" in out
    assert Store(path).count("records") == 3
    shards = Store(path).count("shards")
    code, out, _ = _run(capsys, "--store", str(path), "--model", "cnn-a", "--threat", "fgsm", "--delete", "--yes",
                        "--shards")
    assert code == 0 and out.startswith("deleted 1 Records and their shards")
    store = Store(path)
    assert 0 < store.count("shards") < shards  # the deleted Record's shards went with it
    assert [r["threat"] for r in store.records()] == ["clean", "fgsm:eps=0.2,precision=fp32"]
    assert {r.record["model"] for r in store.find(threat="fgsm")} == {"cnn-b"}
