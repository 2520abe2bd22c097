"""The AutoAttack ensemble threat: order, only still-robust examples attacked, robust accuracy after each
attack, which attack broke each example."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robench.errors import RobenchError
from robench.threats import build_threat


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


@pytest.mark.parametrize("norm, eps", [("linf", 0.02), ("l2", 0.15)])
def test_standard_ensemble_on_a_small_net(norm, eps):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(40, 1, 8, 8, generator=g)
    net = _net()
    y = net(x).argmax(1)  # all correct on clean input
    y[:4] = (y[:4] + 1) % 10  # but these four
    threat = build_threat(f"autoattack:eps={eps},norm={norm}")
    out = threat.evaluate_shard(net, x, y, torch.Generator().manual_seed(0))
    key = repr(eps)
    after = [out[f"after_{name}@{key}"] for name in ("apgd-ce", "apgd-t", "fab-t", "square")]
    for earlier, later in zip(after, after[1:]):
        assert not np.any(later & ~earlier)  # robust accuracy never rises along the chain
    robust, broken_by = out[f"robust@{key}"], out[f"broken_by@{key}"]
    assert np.array_equal(robust, after[-1]) and not robust[:4].any()
    assert np.all(broken_by[:4] == -1)  # misclassified on clean input: never attacked
    assert np.array_equal(broken_by >= 0, out["clean_correct"] & ~robust)
    norms = out[f"norm@{key}"][broken_by >= 0]
    assert np.all(norms <= eps * (1 + 1e-5) + 1e-6)
    metrics = threat.summarize(out)
    print(norm, {k: v["value"] for k, v in metrics["robust_accuracy_after"][key].items()}, metrics["broken_by"][key])
    assert metrics["robust_accuracy"][key]["value"] == metrics["robust_accuracy_after"][key]["square"]["value"]
    assert sum(metrics["broken_by"][key].values()) == int((broken_by >= 0).sum())
    assert 0 < metrics["robust_accuracy"][key]["value"] < metrics["clean_accuracy"]["value"]


def test_versions():
    assert list(build_threat("autoattack:eps=0.3,version=rand").attack.attacks) == ["apgd-ce", "apgd-dlr"]
    assert build_threat("autoattack:eps=0.3,version=rand").attack.attacks["apgd-dlr"].eot == 20
    plus = build_threat("autoattack:eps=0.3,version=plus").attack.attacks
    assert list(plus) == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    assert plus["apgd-ce"].restarts == plus["apgd-dlr"].restarts == plus["fab"].restarts == 5
    assert plus["apgd-dlr"].loss == "dlr" and plus["fab-t"].targets == plus["apgd-t"].targets == 9
    assert build_threat("autoattack:eps=0.3,version=plus").attack.label == "AutoAttack Linf plus"
    assert build_threat("autoattack:eps=0.3").canonical == "autoattack:eps=0.3,norm=linf,version=standard"
    bf16 = build_threat("autoattack:eps=0.3,precision=bf16")
    assert bf16.canonical == "autoattack:eps=0.3,norm=linf,precision=bf16,version=standard"
    assert {a.precision for a in bf16.attack.attacks.values()} == {"bf16"}
    with pytest.raises(RobenchError, match="precision"):
        build_threat("autoattack:eps=0.3,precision=int8")
    with pytest.raises(RobenchError, match="version"):
        build_threat("autoattack:eps=0.3,version=fast")


class _StopAfter:
    """An executor that runs `tasks` tasks, then dies as a killed process would."""

    def __init__(self, tasks: int):
        self.left, self.ran = tasks, []

    def run(self, fn, shared, tasks):
        for task in tasks:
            if not self.left:
                raise KeyboardInterrupt
            self.left -= 1
            self.ran.append(task.part)
            yield task, fn(shared, task)


def test_the_ensemble_resumes_attack_by_attack(embedded_model, tmp_path):
    """Each attack is a stage stored on its own: a run killed after APGD-T resumes with FAB-T and Square
    only, and gives the Record of an uninterrupted run."""
    import robench
    from robench.store import Store

    spec, kw = "autoattack:eps=0.05", dict(dataset="mnist-5k", n=6, shard_size=6)
    store = Store(tmp_path / "s.sqlite")
    first = _StopAfter(3)
    with pytest.raises(KeyboardInterrupt):
        robench.evaluate(embedded_model, spec, store=store, executor=first, **kw)
    assert sorted(first.ran) == ["apgd-ce", "apgd-t", "checks"]  # the first wave (APGD-CE, checks), then APGD-T
    again = _StopAfter(100)
    resumed = robench.evaluate(embedded_model, spec, store=store, executor=again, **kw)[0]
    assert again.ran == ["fab-t", "square"]
    fresh = robench.evaluate(embedded_model, spec, store=tmp_path / "fresh.sqlite", **kw)[0]
    assert resumed.metrics == fresh.metrics
    after = resumed.metrics["robust_accuracy_after"]["0.05"]
    counts = [after[name]["correct"] for name in ("apgd-ce", "apgd-t", "fab-t", "square")]
    assert counts == sorted(counts, reverse=True) and counts[-1] == resumed.metrics["robust_accuracy"]["0.05"]["correct"]


class _Spy:
    """An attack that records how many examples it is run on."""

    def __init__(self, attack):
        self.attack, self.sizes = attack, []

    def __getattr__(self, name):
        return getattr(self.attack, name)

    def __call__(self, model, x, y, **kw):
        self.sizes.append(len(x))
        return self.attack(model, x, y, **kw)


class _Opaque(nn.Module):
    """The same network behind a forward the bounds cannot read."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("readable", [True, False])
def test_no_attack_runs_on_an_example_ibp_verifies(readable):
    """Examples IBP verifies at eps count as robust without being attacked; on a model the bounds cannot
    read, every clean-correct example is attacked."""
    from robench.defenses.verified import certified_margins

    g = torch.Generator().manual_seed(3)
    x, net, eps = torch.rand(40, 1, 8, 8, generator=g), _net(), 0.02
    y = net(x).argmax(1)
    y[:4] = (y[:4] + 1) % 10
    verified = (certified_margins(net, x, y, eps, "ibp") > 0).numpy()
    assert 0 < verified.sum() < 36  # both kinds among the 36 clean-correct examples
    threat = build_threat(f"autoattack:eps={eps}")
    spy = threat.attack.attacks["apgd-ce"] = _Spy(threat.attack.attacks["apgd-ce"])
    out = threat.evaluate_shard(net if readable else _Opaque(net), x, y, torch.Generator().manual_seed(0))
    assert spy.sizes == [36 - verified.sum() if readable else 36]
    assert out[f"robust@{eps!r}"][verified].all()  # sound either way: a verified example is never broken
