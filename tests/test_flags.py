"""Flags: the sanity checks fire on models that mask gradients, are randomized or return probabilities,
and stay silent on honestly trained models; the cross-Record flags compare PGD with the ensemble and a
stronger configuration of an attack with a weaker one."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import robench
from robench.flags import flags_of
from robench.metrics import accuracy


class Quantised(nn.Module):
    """`inner` behind a 4-level input quantisation whose gradient is zero (a classic gradient mask)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 3) / 3)


class Softmaxed(nn.Module):
    """`inner` with a final softmax of temperature 1/50: outputs are saturated probabilities."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.softmax(50 * self.inner(x), dim=1)


class Noisy(nn.Module):
    """`inner` on inputs with fresh Gaussian noise at every forward pass (a randomized defense)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x + 0.3 * torch.randn_like(x))


def _codes(record) -> set[str]:
    return {f["code"] for f in record.metrics["flags"]}


def _run(model, spec, tmp_path, n=60):
    return robench.evaluate(model, spec, dataset="mnist-5k", n=n, store=tmp_path / "s.sqlite")[0]


def test_gradient_masking_is_flagged(embedded_model, tmp_path):
    masked = Quantised(embedded_model)
    pgd = _run(masked, "pgd-linf:eps=0.15,steps=10", tmp_path)
    assert {"zero-gradient", "large-budget"} <= _codes(pgd), pgd.metrics["flags"]
    # without its random start, PGD does not move at all: random noise of the same size does better
    still = _run(masked, "pgd-linf:eps=0.25,steps=10,random_start=false", tmp_path)  # noise breaks 4 of 60
    assert "weaker-than-noise" in _codes(still), still.metrics["flags"]
    ensemble = _run(masked, "autoattack:eps=0.15", tmp_path, n=8)  # nothing falls early: every attack runs in full
    assert {"zero-gradient", "square-after-white-box"} <= _codes(ensemble), ensemble.metrics["flags"]
    evidence = next(f["evidence"] for f in ensemble.metrics["flags"] if f["code"] == "square-after-white-box")
    assert evidence["examples"] == ensemble.metrics["broken_by"]["0.15"]["square"] > 0
    # and PGD is far above the ensemble (on 8 examples the intervals still overlap: see the tests below)
    few = _run(masked, "pgd-linf:eps=0.15,steps=10", tmp_path, n=8)
    assert ensemble.metrics["robust_accuracy"]["0.15"]["correct"] < few.metrics["robust_accuracy"]["0.15"]["correct"]


def test_probabilities_and_randomized_forward_are_flagged(embedded_model, tmp_path):
    soft = _run(Softmaxed(embedded_model), "pgd-linf:eps=0.1,steps=5", tmp_path)
    assert "probabilities" in _codes(soft)
    noisy = _run(Noisy(embedded_model), "fgsm:eps=0.1", tmp_path)
    flag = next(f for f in noisy.metrics["flags"] if f["code"] == "randomized")
    assert "version=rand" in flag["message"] and flag["evidence"]["examples"] == flag["evidence"]["n"] == 60


def test_flags_stay_silent_on_honest_models(embedded_model, mnist_model, data_root, tmp_path):
    small = _run(embedded_model, "pgd-linf:eps=0.1,steps=20", tmp_path, n=100)
    real = robench.evaluate(mnist_model, "pgd-linf:eps=0.1,steps=20", dataset="mnist", n=100, data_root=data_root,
                            store=tmp_path / "s.sqlite")[0]
    ensemble = _run(embedded_model, "autoattack:eps=0.1", tmp_path, n=16)
    for record in (small, real, ensemble):
        assert record.metrics["flags"] == [], (record.threat, record.metrics["flags"])
    few = _run(embedded_model, "pgd-linf:eps=0.1,steps=20", tmp_path, n=16)
    assert flags_of([few, ensemble]) == [[], []]


def _record(threat: str, correct: int, n: int = 1000, model: str = "m") -> dict:
    import numpy as np

    mask = np.arange(n) < correct
    return {"model": model, "threat": threat, "kind": "input-attack", "dataset": "mnist", "split": "test",
            "metrics": {"robust_accuracy": {"0.3": accuracy(mask)}},
            "provenance": {"model_sha256": "abc", "indices": f"0:{n}", "seed": 0}}


@pytest.mark.parametrize("pgd, ensemble, fires", [(900, 885, False), (900, 850, True)])
def test_pgd_and_the_ensemble_disagreeing_beyond_their_intervals(pgd, ensemble, fires):
    records = [_record("pgd-linf:eps=0.3", pgd), _record("autoattack:eps=0.3", ensemble)]
    codes = [{f.code for f in flags} for flags in flags_of(records)]
    assert codes == ([{"attack-vs-ensemble"}] * 2 if fires else [set(), set()])
    other_model = [records[0], {**records[1], "model": "other"}]
    assert flags_of(other_model) == [[], []]  # only Records of one model are compared


@pytest.mark.parametrize("strong, weak, fires", [(880, 890, False), (881, 880, False), (900, 880, True)])
def test_robust_accuracy_rising_with_more_steps_or_restarts(strong, weak, fires):
    records = [_record("pgd-linf:eps=0.3,restarts=10,steps=100", strong), _record("pgd-linf:eps=0.3,steps=40", weak)]
    flags = flags_of(records)
    assert [f.code for f in flags[0]] == (["rises-with-strength"] if fires else []) and flags[1] == []
    # a different step rule is not "the same attack, stronger"
    assert flags_of([_record("pgd-linf:eps=0.3,rel_step=0.01,steps=100", 900), records[1]]) == [[], []]


def test_run_tables_show_the_flags_and_their_messages(embedded_model, tmp_path):
    from robench.tables import render

    kw = dict(dataset="mnist-5k", n=60, store=tmp_path / "s.sqlite")
    soft = robench.evaluate(Softmaxed(embedded_model), "pgd-linf:eps=0.1,steps=5", model_name="soft", **kw)[0]
    plain = robench.evaluate(embedded_model, "pgd-linf:eps=0.1,steps=5", model_name="plain", **kw)[0]
    text = render([soft, plain], "markdown")
    header, _, *rows = text.splitlines()[:4]
    assert header.rstrip(" |").endswith("flags")
    assert rows[0].startswith("| soft") and "probabilities" in rows[0].split("|")[-2]
    assert rows[1].startswith("| plain") and rows[1].split("|")[-2].strip() == "-"
    assert "Flag probabilities (soft, " in text
