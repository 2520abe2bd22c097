import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from torch import nn

import robench
from robench.errors import RobenchError
from robench.store import Store
from robench.threats import build_threat

PROVENANCE = {"robench", "git_commit", "torch", "torchvision", "foolbox", "model", "model_sha256", "threat",
              "threat_hash", "threat_version", "dataset", "split", "indices", "data_sha256", "seed", "device",
              "started", "wall_seconds", "cpu_seconds"}


def test_record_has_metrics_and_provenance(embedded_model, tmp_path):
    records = robench.evaluate(embedded_model, ["clean", "fgsm:eps=0.1"], dataset="mnist-5k", n=100,
                               store=tmp_path / "s.sqlite", model_name="cnn")
    clean, fgsm = records
    assert PROVENANCE <= set(fgsm.provenance)
    assert 0 < fgsm.provenance["cpu_seconds"]  # the local executor's CPU time, all torch threads included
    assert fgsm.provenance["indices"] == "0:100" and fgsm.n == 100 and fgsm.threat == "fgsm:eps=0.1,precision=fp32"
    assert fgsm.metrics["clean_accuracy"] == clean.metrics["clean_accuracy"]
    assert fgsm.metrics["robust_accuracy"]["0.1"]["value"] < clean.metrics["clean_accuracy"]["value"]
    assert set(clean.metrics["calibration"]["clean"]) == {"nll", "brier", "ece", "nll_ci95", "brier_ci95", "ece_ci95"}
    json.dumps([r.to_dict() for r in records])  # JSON-ready


def test_repeated_task_is_served_from_the_store(embedded_model, tmp_path, monkeypatch):
    store = Store(tmp_path / "s.sqlite")
    threat = build_threat("pgd-linf:eps=0.1,steps=3")
    calls = []
    original = type(threat).evaluate_shard
    monkeypatch.setattr(type(threat), "evaluate_shard", lambda self, *a: calls.append(1) or original(self, *a))
    first = robench.evaluate(embedded_model, threat, dataset="mnist-5k", n=120, store=store, shard_size=50)
    # each shard is two tasks: the attack and its sanity checks (robench.attacks.checks)
    assert len(calls) == 3 and store.count("shards") == 2 * 3 and store.count("records") == 1
    again = robench.evaluate(embedded_model, threat, dataset="mnist-5k", n=120, store=store, shard_size=50)
    assert len(calls) == 3 and again[0].to_dict() == first[0].to_dict()
    # a longer slice reuses the finished shards (same indices, same seeds) and computes only the rest
    longer = robench.evaluate(embedded_model, threat, dataset="mnist-5k", n=200, store=store, shard_size=50)
    assert len(calls) == 5 and longer[0].n == 200 and store.count("shards") == 2 * 5
    # another model is another task
    other = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    robench.evaluate(other, threat, dataset="mnist-5k", n=120, store=store, shard_size=50)
    assert len(calls) == 8


def test_corruption_suite_splits_into_one_task_per_corruption(embedded_model, tmp_path, monkeypatch):
    """Each shard of a suite runs as one task per corruption (stored, and resumable, one by one) with the
    shard's seed, so the outputs equal those of the suite evaluated whole."""
    from robench.corruptions.base import CorruptionThreat

    spec, kw = "mnist-c:corruptions=fog|stripe|rotate", dict(dataset="mnist-5k", n=80, shard_size=40,
                                                            with_outputs=True)
    store = Store(tmp_path / "split.sqlite")
    split = robench.evaluate(embedded_model, spec, store=store, **kw)[0]
    assert store.count("shards") == 2 * 3 and split.provenance["tasks"] == 6 and split.provenance["shards"] == 2
    monkeypatch.setattr(CorruptionThreat, "parts", lambda self: {"": self})
    whole = robench.evaluate(embedded_model, spec, store=tmp_path / "whole.sqlite", **kw)[0]
    assert split.metrics == whole.metrics and list(split.outputs) == list(whole.outputs)
    for k in whole.outputs:
        np.testing.assert_array_equal(split.outputs[k], whole.outputs[k], err_msg=k)


def test_results_do_not_depend_on_the_executor_order(embedded_model, tmp_path):
    a = robench.evaluate(embedded_model, "pgd-linf:eps=0.1,steps=3", dataset="mnist-5k", n=100,
                         store=tmp_path / "a.sqlite", shard_size=50)[0]
    b = robench.evaluate(embedded_model, "pgd-linf:eps=0.1,steps=3", dataset="mnist-5k", indices=range(100),
                         store=tmp_path / "b.sqlite", shard_size=50)[0]
    assert a.metrics == b.metrics


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Flatten(), nn.Linear(784, 10, bias=False), nn.Flatten(0)), r"logits of shape \(N, classes\)"),
    (nn.Sequential(nn.Flatten(), nn.Linear(784, 5)), "returns 5 classes"),
    (nn.Sequential(nn.Flatten(), nn.Linear(100, 10)), "the model failed on a batch"),
])
def test_models_with_wrong_outputs_get_clear_errors(model, message, tmp_path):
    with pytest.raises(RobenchError, match=message):
        robench.evaluate(model, "clean", dataset="mnist-5k", n=10, store=tmp_path / "s.sqlite")


RESUME_SCRIPT = textwrap.dedent("""
    import sys, torch, robench
    import robench.evaluate
    from robench import zoo
    from robench.store import Store
    loop = sys.modules["robench.evaluate"]
    model = zoo.get("mnist5k-small-cnn").load(progress=False)
    threat = robench.build_threat("pgd-linf:eps=0.1,steps=20")
    compute_shard, put_shard = loop.compute_shard, Store.put_shard
    def computed(*args):
        print("computed", flush=True)
        return compute_shard(*args)
    def stored(self, *args):
        put_shard(self, *args)
        print("stored", flush=True)
    loop.compute_shard, Store.put_shard = computed, stored
    r = robench.evaluate(model, threat, dataset="mnist-5k", n=400, store=sys.argv[1], shard_size=50)
    print("done", r[0].metrics["robust_accuracy"]["0.1"]["correct"], flush=True)
""")


def test_killed_run_resumes_without_recomputing_or_duplicating(embedded_model, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    store_path = tmp_path / "s.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(store_path)], stdout=subprocess.PIPE, text=True, env=env)
    finished = 0
    while finished < 3:
        line = proc.stdout.readline()
        assert line, "the run ended before it could be killed"
        finished += line.startswith("stored")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.1)
    done_before = Store(store_path).count("shards")
    assert 3 <= done_before < 16  # 8 shards, each the attack and its checks
    result = subprocess.run([sys.executable, str(script), str(store_path)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    recomputed = result.stdout.count("computed")
    assert recomputed == 16 - done_before
    store = Store(store_path)
    assert store.count("shards") == 16 and store.count("records") == 1
    # and the result equals an uninterrupted run
    fresh = robench.evaluate(embedded_model, "pgd-linf:eps=0.1,steps=20", dataset="mnist-5k", n=400,
                             store=tmp_path / "fresh.sqlite", shard_size=50)[0]
    assert result.stdout.split()[-1] == str(fresh.metrics["robust_accuracy"]["0.1"]["correct"])


def test_store_rejects_a_file_that_is_not_a_database(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database " * 100)
    with pytest.raises(RobenchError, match="cannot be opened"):
        Store(bad).count("shards")


class _Interrupted(Exception):
    pass


class _StopAfter:
    """An executor that runs `tasks` tasks and is then killed (the process dies mid-run)."""

    def __init__(self, tasks: int):
        self.left = tasks

    def run(self, fn, shared, tasks):
        for task in tasks:
            if not self.left:
                raise _Interrupted
            self.left -= 1
            yield task, fn(shared, task)


def test_each_eps_is_its_own_part_and_a_kill_loses_only_the_part_in_flight(embedded_model, tmp_path):
    """A kill half-way through a multi-eps attack keeps every finished (shard, eps) part; the rerun
    computes only the rest and gives the very Record of an uninterrupted run."""
    spec, kw = "pgd-linf:eps=0.05|0.1|0.2|0.3,steps=5,rel_step=0.5", dict(dataset="mnist-5k", n=60, shard_size=30)
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(_Interrupted):
        robench.evaluate(embedded_model, spec, store=store, executor=_StopAfter(5), **kw)
    assert store.count("shards") == 5 and store.count("records") == 0  # 2 shards x (4 eps + checks) = 10 parts
    counting = _StopAfter(100)
    resumed = robench.evaluate(embedded_model, spec, store=store, executor=counting, **kw)[0]
    assert 100 - counting.left == 5
    fresh = robench.evaluate(embedded_model, spec, store=tmp_path / "fresh.sqlite", **kw)[0]
    assert resumed.metrics == fresh.metrics


def test_shard_size_follows_the_cost_of_threat_and_model():
    from robench import nets
    from robench.evaluate import TASK_FLOPS, forward_flops, shard_size_for

    small = nets.create("mlp", channels=1, size=28, classes=10, mean=(0.5,), std=(0.5,))
    large = nets.create("madry-cnn", channels=1, size=28, classes=10, mean=(0.5,), std=(0.5,))
    x = torch.rand(1, 1, 28, 28)
    assert forward_flops(large, x) > 20 * forward_flops(small, x)
    cheap, costly = build_threat("clean"), build_threat("pgd-linf:eps=0.3,steps=20")
    assert shard_size_for(cheap, large, x) == cheap.shard_size  # cheap threats keep full shards
    size = shard_size_for(costly, large, x)
    assert 32 < size < costly.shard_size and size * costly.cost * forward_flops(large, x) <= TASK_FLOPS
    assert shard_size_for(costly, small, x) > size
    assert shard_size_for(build_threat("bitflip-random:flips=3,seeds=1"), large, x) is None
    # certification: the cost is n0 + n forward passes per example (it batches over the noise draws)
    assert shard_size_for(build_threat("smoothing:n=100000"), large, x) == 1


@pytest.mark.parametrize("spec", ["pgd-linf:eps=0.3,steps=100,restarts=10", "autoattack:eps=0.3",
                                  "autoattack:eps=2,norm=l2", "min-distance:norm=l2"])
def test_costly_attacks_keep_batches_of_examples_large_enough_to_run_fast(spec):
    # the ensemble's cost alone would give mnist-pgd-at's CNN shards of 2 examples, where a gradient step
    # per example costs several times what it costs in a batch of 32
    from robench import nets
    from robench.evaluate import TASK_FLOPS, forward_flops, shard_size_for

    large = nets.create("madry-cnn", channels=1, size=28, classes=10, mean=(0.5,), std=(0.5,))
    x, threat = torch.rand(1, 1, 28, 28), build_threat(spec)
    assert TASK_FLOPS // (max(p.cost for p in threat.parts().values()) * forward_flops(large, x)) < 10
    assert shard_size_for(threat, large, x) == threat.min_shard_size == 32


def test_a_shard_that_runs_out_of_memory_is_evaluated_again_in_smaller_shards(embedded_model, small_memory, tmp_path,
                                                                               capsys):
    store = tmp_path / "s.sqlite"
    spec = "pgd-linf:eps=0.1,steps=2,rel_step=0.5"
    small = robench.evaluate(small_memory(embedded_model, 12), ["clean", spec], dataset="mnist-5k", n=40,
                             store=store, shard_size=40)
    assert "a shard of 40 examples ran out of memory on cpu; evaluating again in shards of 20" in capsys.readouterr().err
    assert [r.provenance["shard_size"] for r in small] == [10, 10]  # 40 -> 20 -> 10
    assert [r.provenance["planned_shard_size"] for r in small] == [40, 40]
    # the same shards with all the memory in the world give the same results
    ample = robench.evaluate(embedded_model, ["clean", spec], dataset="mnist-5k", n=40,
                             store=tmp_path / "t.sqlite", shard_size=10)

    def counts(records):  # float rounding of the calibration metrics aside
        return [r.metrics[key] for r, key in zip(records, ("clean_accuracy", "robust_accuracy"))]

    assert counts(small) == counts(ample)
    assert "planned_shard_size" not in ample[0].provenance
    # a rerun is served from the store under the planned size (2: the batch of the check before evaluating)
    again = robench.evaluate(small_memory(embedded_model, 2), ["clean", spec], dataset="mnist-5k", n=40,
                             store=store, shard_size=40)
    assert counts(again) == counts(small)


def test_one_example_out_of_memory_is_a_clear_error(embedded_model, small_memory, tmp_path):
    class Huge(small_memory):
        def forward(self, x):
            if torch.is_grad_enabled() and x.requires_grad:
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")
            return self.model(x)

    with pytest.raises(RobenchError, match="one example runs out of memory on cpu"):
        robench.evaluate(Huge(embedded_model, 0), "pgd-linf:eps=0.1,steps=2,rel_step=0.5", dataset="mnist-5k", n=8,
                         store=tmp_path / "s.sqlite", shard_size=8)
