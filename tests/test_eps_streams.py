"""Results do not depend on what else is in the list: each eps (and its restarts) draws its random stream
from the seed, the shard and that eps alone (issue 19: eps=0.1 read 76.0% in eps=0.1|0.3, 76.5% in
eps=0.1|0.2|0.3)."""
import json

import numpy as np
import pytest

import robench
from robench.cli import main

SPEC = "pgd-linf:eps={},steps=5,rel_step=0.5,restarts=2"
#: strict: once evaluate.py derives the shard seed without the eps list these pass, and the marker must go
NOT_YET = pytest.mark.xfail(strict=True, reason="robench/evaluate.py seeds a shard from threat.canonical, which holds "
                                                "the whole eps list, so each eps's derived stream depends on the list")


@NOT_YET
def test_an_eps_draws_the_same_random_starts_whatever_else_is_in_the_list(embedded_model, tmp_path):
    kw = dict(dataset="mnist-5k", n=100, store=tmp_path / "s.sqlite", with_outputs=True)
    alone = robench.evaluate(embedded_model, SPEC.format("0.1"), **kw)[0].outputs
    assert np.isfinite(alone["norm@0.1"]).sum() > 10  # enough broken examples to compare their perturbations
    for eps in ("0.1|0.3", "0.1|0.2|0.3", "0.3|0.2|0.1", "0.05|0.1"):
        listed = robench.evaluate(embedded_model, SPEC.format(eps), **kw)[0].outputs
        assert np.array_equal(listed["robust@0.1"], alone["robust@0.1"]), eps
        # the perturbation of every broken example is the very same: the same random start and restarts
        assert np.array_equal(listed["norm@0.1"], alone["norm@0.1"], equal_nan=True), eps
    # the comparison above sees a changed stream: another seed moves the perturbations
    other = robench.evaluate(embedded_model, SPEC.format("0.1|0.3"), seed=1, **kw)[0].outputs
    assert not np.array_equal(other["norm@0.1"], alone["norm@0.1"], equal_nan=True)


@NOT_YET
def test_the_command_line_gives_eps_0_1_the_same_accuracy_in_either_list(embedded_model, tmp_path, capsys):
    base = ["--model", "mnist5k-small-cnn", "--dataset", "mnist-5k", "--n", "200", "--quiet", "--format", "json",
            "--store", str(tmp_path / "s.sqlite")]
    seen = []
    for eps in ("0.1|0.3", "0.1|0.2|0.3"):
        assert main(["run", *base, "--threat", SPEC.format(eps)]) == 0
        metrics = json.loads(capsys.readouterr().out)[0]["metrics"]
        seen.append((metrics["robust_accuracy"]["0.1"], metrics["mean_perturbation_norm"]["0.1"]))
    assert 0 < seen[0][0]["value"] < 1
    assert seen[0] == seen[1]  # the accuracy, and the mean perturbation norm that any other stream would move
