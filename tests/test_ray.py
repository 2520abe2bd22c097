"""The Ray executor: same Records as a local run, resume after an interruption, failures reported with the
other shards kept. One local Ray instance (2 CPUs) is shared by the module."""
import json
import os
import sys

import numpy as np
import pytest
import torch

import robench
from robench.errors import RobenchError
from robench.executors import LocalExecutor, RayExecutor, get_executor
from robench.store import Store
from robench.threats import Threat, build_threat

try:
    import ray
except ImportError:  # pragma: no cover - CI installs the dev extra, which includes ray
    ray = None

pytestmark = pytest.mark.skipif(ray is None, reason="needs Ray: pip install 'robench[ray]'")

SPEC = "pgd-linf:eps=0.1,steps=3"
N, SHARD = 200, 40  # 5 shards


@pytest.fixture(scope="module")
def ray_instance():
    # threats defined in this module travel to the workers by value (the workers cannot import tests/)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class Wrapped(Threat):
    """A threat that behaves as `inner` (same canonical string, so the same store keys) except on the shard
    whose first image is `poison`: there it raises, or kills its worker once (a marker file remembers)."""

    def __init__(self, inner: Threat, poison: torch.Tensor, crash_marker: str | None = None):
        self.inner, self.poison, self.crash_marker = inner, poison, crash_marker
        self.spec, self.kind, self.shard_size, self.version = inner.spec, inner.kind, inner.shard_size, inner.version

    def evaluate_shard(self, model, x, y, generator):
        if torch.equal(x[0].cpu(), self.poison):
            if self.crash_marker is None:
                raise ValueError("poisoned shard")
            if not os.path.exists(self.crash_marker):
                open(self.crash_marker, "w").close()
                os._exit(1)  # the worker process dies; Ray retries the task
        return self.inner.evaluate_shard(model, x, y, generator)

    def parts(self):
        # the wrapped attack part, and the inner threat's other parts (its sanity checks) as they are
        return {**self.inner.parts(), "": self}

    def summarize(self, outputs):
        return self.inner.summarize(outputs)


def _poison(shard: int) -> torch.Tensor:
    return robench.load_dataset("mnist-5k", "test").select(n=N).x[shard * SHARD].clone()


class one_thread:
    """Run in-process with one torch thread, as a Ray task does: CPU kernels reduce in an order that depends
    on the thread count, so float metrics (NLL, norms) agree bit for bit only at the same count."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


@pytest.fixture(scope="module")
def local_record(embedded_model, tmp_path_factory):
    store = tmp_path_factory.mktemp("local") / "s.sqlite"
    with one_thread():
        return robench.evaluate(embedded_model, SPEC, dataset="mnist-5k", n=N, store=store, shard_size=SHARD,
                                seed=3, with_outputs=True, executor=LocalExecutor())[0]


def _same(a, b):
    assert a.metrics == b.metrics
    assert a.outputs.keys() == b.outputs.keys()
    for k in a.outputs:
        np.testing.assert_array_equal(a.outputs[k], b.outputs[k], err_msg=k)


def test_ray_run_equals_local_run(ray_instance, embedded_model, local_record, tmp_path):
    store = Store(tmp_path / "s.sqlite")
    r = robench.evaluate(embedded_model, SPEC, dataset="mnist-5k", n=N, store=store, shard_size=SHARD, seed=3,
                         with_outputs=True, executor=RayExecutor(workers=2))[0]
    _same(r, local_record)
    # each shard: the attack and its sanity checks
    assert store.count("shards") == 2 * N // SHARD and r.provenance["shards"] == N // SHARD
    assert 0 < r.provenance["cpu_seconds"]  # the workers' CPU time, summed over the tasks


class Counting(RayExecutor):
    def __init__(self, stop_after: int | None = None, **kw):
        super().__init__(**kw)
        self.sent, self.stop_after = 0, stop_after

    def run(self, fn, shared, tasks):
        tasks = list(tasks)
        self.sent += len(tasks)
        for i, pair in enumerate(super().run(fn, shared, tasks)):
            if self.stop_after is not None and i == self.stop_after:
                raise KeyboardInterrupt  # the driver is interrupted mid-way (Ctrl-C)
            yield pair


def test_interrupted_ray_run_resumes_with_only_the_missing_shards(ray_instance, embedded_model, local_record,
                                                                  tmp_path):
    store = Store(tmp_path / "s.sqlite")
    kw = dict(dataset="mnist-5k", n=N, store=store, shard_size=SHARD, seed=3)
    with pytest.raises(KeyboardInterrupt):
        robench.evaluate(embedded_model, SPEC, executor=Counting(stop_after=2, workers=2), **kw)
    done = store.count("shards")
    assert done == 2 and store.count("records") == 0
    again = Counting(workers=2)
    r = robench.evaluate(embedded_model, SPEC, executor=again, with_outputs=True, **kw)[0]
    assert again.sent == 2 * N // SHARD - done
    _same(r, local_record)


CERTIFY = "smoothing:mode=sequential,n0=20,n=100,n_max=400,radii=0.25|0.5,batch=200,sigma=0.25"


def _without_timing(record):
    """A certification Record's metrics and outputs but the per-example wall time (which never repeats)."""
    metrics = {k: v for k, v in record.metrics.items() if k != "seconds_per_example"}
    return metrics, {k: v for k, v in record.outputs.items() if k != "time"}


def test_certification_runs_one_task_per_shard_on_ray_and_resumes(ray_instance, embedded_model, tmp_path):
    """Sequential CERTIFY over 120 digits in 3 shards of 40 on two Ray workers: the Record of a local run,
    and a driver interrupted after one shard resumes with only the other two."""
    kw = dict(dataset="mnist-5k", n=120, shard_size=40, seed=3, with_outputs=True)
    with one_thread():
        local = robench.evaluate(embedded_model, CERTIFY, store=tmp_path / "local.sqlite", **kw)[0]
    store = Store(tmp_path / "ray.sqlite")
    with pytest.raises(KeyboardInterrupt):
        robench.evaluate(embedded_model, CERTIFY, store=store, executor=Counting(stop_after=1, workers=2), **kw)
    assert store.count("shards") == 1 and store.count("records") == 0
    again = Counting(workers=2)
    on_ray = robench.evaluate(embedded_model, CERTIFY, store=store, executor=again, **kw)[0]
    assert again.sent == 2 and on_ray.provenance["shards"] == 3
    (metrics, outputs), (local_metrics, local_outputs) = _without_timing(on_ray), _without_timing(local)
    assert metrics == local_metrics and outputs.keys() == local_outputs.keys()
    for k in outputs:
        np.testing.assert_array_equal(outputs[k], local_outputs[k], err_msg=k)
    assert 0 < metrics["certified_accuracy"]["0.25"]["value"] and metrics["samples_per_example"] < 20 + 400


def test_failing_shard_is_reported_and_the_others_are_kept(ray_instance, embedded_model, local_record, tmp_path):
    store = Store(tmp_path / "s.sqlite")
    kw = dict(dataset="mnist-5k", n=N, store=store, shard_size=SHARD, seed=3)
    bad = Wrapped(build_threat(SPEC), _poison(2))
    with pytest.raises(RobenchError, match=r"1 of 10 shards failed on Ray: examples 80:120 .*ValueError: poisoned"):
        robench.evaluate(embedded_model, bad, executor=RayExecutor(workers=2, max_retries=1), **kw)
    # every task is kept but the poisoned shard's attack (each shard: the attack and its sanity checks)
    assert store.count("shards") == 2 * N // SHARD - 1 and store.count("records") == 0
    again = Counting(workers=2)
    r = robench.evaluate(embedded_model, SPEC, executor=again, with_outputs=True, **kw)[0]
    assert again.sent == 1
    _same(r, local_record)


def test_corruption_suite_runs_split_over_corruptions_on_ray(ray_instance, embedded_model, tmp_path):
    spec = "mnist-c:corruptions=fog|stripe|rotate"
    kw = dict(dataset="mnist-5k", n=80, shard_size=40, seed=3, with_outputs=True)
    with one_thread():
        local = robench.evaluate(embedded_model, spec, store=tmp_path / "local.sqlite", **kw)[0]
    counting = Counting(workers=2)
    on_ray = robench.evaluate(embedded_model, spec, store=tmp_path / "ray.sqlite", executor=counting, **kw)[0]
    assert counting.sent == 2 * 3  # shards x corruptions
    _same(on_ray, local)


def test_task_whose_worker_dies_is_retried(ray_instance, embedded_model, local_record, tmp_path):
    marker = tmp_path / "crashed"
    flaky = Wrapped(build_threat(SPEC), _poison(1), crash_marker=str(marker))
    r = robench.evaluate(embedded_model, flaky, dataset="mnist-5k", n=N, store=tmp_path / "s.sqlite",
                         shard_size=SHARD, seed=3, with_outputs=True, executor=RayExecutor(workers=2))[0]
    assert marker.exists()  # the worker did die once
    _same(r, local_record)


def test_get_executor():
    assert isinstance(get_executor("local"), LocalExecutor)
    assert isinstance(get_executor("ray", workers=2), RayExecutor)
    with pytest.raises(RobenchError, match="need --executor ray"):
        get_executor("local", workers=2)
    with pytest.raises(RobenchError, match="need --executor ray"):
        get_executor("local", gpus_per_task=1)
    with pytest.raises(RobenchError, match="must be > 0"):
        get_executor("ray", gpus_per_task=-1)
    assert get_executor("ray", gpus_per_task=0.5).num_gpus == 0.5
    with pytest.raises(RobenchError, match="unknown executor 'dask'"):
        get_executor("dask")


def test_without_ray_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RobenchError, match=r"pip install 'robench\[ray\]'"):
        get_executor("ray")


def test_cli_run_on_ray(ray_instance, embedded_model, tmp_path, capsys):
    from robench.cli import main

    def argv(store, *extra):
        return ["run", "--model", "mnist5k-small-cnn", "--threat", "clean", "--dataset", "mnist-5k", "--n", "60",
                "--store", str(tmp_path / store), "--format", "json", "--quiet", *extra]

    def metrics(out):
        return [r["metrics"] for r in json.loads(out)]

    assert main(argv("ray.sqlite", "--executor", "ray", "--workers", "2")) == 0
    on_ray = metrics(capsys.readouterr().out)
    assert Store(tmp_path / "ray.sqlite").count("shards") == 1
    with one_thread():
        assert main(argv("local.sqlite")) == 0
    assert metrics(capsys.readouterr().out) == on_ray
    assert main(argv("other.sqlite", "--workers", "2")) == 2
    assert "need --executor ray" in capsys.readouterr().err


def _board(folder):
    folder.mkdir()
    threats = [build_threat(t).canonical for t in ("clean", "mnist-c:corruptions=fog|rotate", SPEC)]
    (folder / "spec.toml").write_text(
        'name = "tiny"\ntitle = "Tiny"\ndataset = "mnist-5k"\nsplit = "test"\nn = 80\nseed = 0\nsort = "clean"\n'
        f'threats = {json.dumps(threats)}\nmodels = ["mnist5k-small-cnn"]\n')
    return folder


def _entry_metrics(folder):
    entry = json.loads((folder / "entries" / "mnist5k-small-cnn.json").read_text())
    return {r["threat"]: r["metrics"] for r in entry["records"]}


def test_leaderboard_update_spreads_over_ray_and_resumes(ray_instance, embedded_model, tmp_path):
    """`robench leaderboard update --executor ray`: the entries of a local update; an update interrupted after
    one task sends only the missing ones when run again."""
    from robench import leaderboard
    from robench.cli import main

    local = _board(tmp_path / "local")
    with one_thread():
        leaderboard.update(local, store=tmp_path / "local.sqlite")
    board, store = _board(tmp_path / "ray"), Store(tmp_path / "ray.sqlite")
    with pytest.raises(KeyboardInterrupt):
        leaderboard.update(board, store=store, executor=Counting(stop_after=1, workers=2))
    done = store.count("shards")  # clean's one task, then the first of the corruptions'
    assert not (board / "entries" / "mnist5k-small-cnn.json").exists() and done == 2
    again = Counting(workers=2)
    leaderboard.update(board, store=store, executor=again)
    assert again.sent == 1 + 2 + 2 - done  # clean, the two corruptions, PGD and its sanity checks
    assert _entry_metrics(board) == _entry_metrics(local)
    assert leaderboard.Leaderboard.load(board).check() == []
    (board / "entries" / "mnist5k-small-cnn.json").unlink()  # the CLI, from the stored shards
    assert main(["leaderboard", "update", str(board), "--executor", "ray", "--workers", "2", "--store",
                 str(tmp_path / "ray.sqlite"), "--quiet"]) == 0
    assert _entry_metrics(board) == _entry_metrics(local)
