"""IBP and CROWN-IBP certified training: the schedule of eps, kappa and beta batch by batch, the loss it adds
to the training loop, and that a few epochs raise verified accuracy where natural training leaves none."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robench.data import DataSplit, dataset_info
from robench.defenses.bounds import margin_bounds
from robench.errors import RobenchError
from robench.registry import DEFENSES
from robench.threats import build_threat
from robench.training import Recipe, train


def _walk(defense, epochs: int, batches: int) -> list[dict[str, float]]:
    """The schedule of every batch of `epochs` epochs of `batches` batches."""
    seen = []
    x, y = torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long)
    for epoch in range(epochs):
        defense.on_epoch(epoch, epochs, batches)
        for _ in range(batches):
            defense.transform(None, x, y, None)
            seen.append(defense.current[2])
    return seen


def test_ibp_schedule_warms_up_then_ramps_eps_and_kappa_batch_by_batch():
    steps = _walk(DEFENSES.create("ibp", eps=0.4, warmup=1, ramp=2, kappa=0.5), epochs=4, batches=5)
    assert all(s == {"eps": 0.0, "kappa": 1.0} for s in steps[:5])
    ramp = steps[5:15]
    assert [round(s["eps"], 6) for s in ramp] == [round(0.4 * i / 10, 6) for i in range(10)]
    assert [round(s["kappa"], 6) for s in ramp] == [round(1 - 0.5 * i / 10, 6) for i in range(10)]
    assert all(s == {"eps": 0.4, "kappa": 0.5} for s in steps[15:])


def test_crown_ibp_schedule_takes_beta_from_one_to_zero_and_kappa_to_zero():
    steps = _walk(DEFENSES.create("crown-ibp", eps=0.4, warmup=1, ramp=1), epochs=3, batches=4)
    assert steps[0] == {"eps": 0.0, "kappa": 1.0, "beta": 1.0}
    assert [s["beta"] for s in steps[4:8]] == [1.0, 0.75, 0.5, 0.25]
    assert steps[-1] == {"eps": 0.4, "kappa": 0.0, "beta": 0.0}


@pytest.mark.parametrize("kwargs", [dict(eps=0), dict(eps=1.5), dict(warmup=-1), dict(ramp=-1), dict(kappa=2)])
def test_bad_parameters_are_one_line_errors(kwargs):
    with pytest.raises(RobenchError) as info:
        DEFENSES.create("ibp", **kwargs)
    assert "\n" not in str(info.value)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))


@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_the_loop_with_the_penalty_minimises_the_papers_mix(method):
    """CE(z, y) + penalty == kappa CE(z, y) + (1 - kappa) CE(-m, y), with m the beta mix of the bounds."""
    net, x, y = _net(), torch.rand(8, 1, 4, 4), torch.arange(8) % 3
    defense = DEFENSES.create(method, eps=0.2, warmup=1, ramp=2)
    defense.on_epoch(0, 3, 1)
    defense.transform(net, x, y, None)
    defense.penalty(net)  # natural training: the warm-up epoch
    defense.on_epoch(1, 3, 1)
    defense.transform(net, x, y, None)
    assert defense.penalty(net) is None  # the ramp's first batch: eps 0
    defense.transform(net, x, y, None)  # half way up the ramp
    at = defense.current[2]
    loss = F.cross_entropy(net(x), y) + defense.penalty(net)
    ibp = margin_bounds(net, x, y, at["eps"], "ibp")
    m = ibp
    if method == "crown-ibp":
        m = at["beta"] * margin_bounds(net, x, y, at["eps"], "crown-ibp") + (1 - at["beta"]) * ibp
    expected = at["kappa"] * F.cross_entropy(net(x), y) + (1 - at["kappa"]) * F.cross_entropy(-m, y)
    assert 0 < at["kappa"] < 1 and torch.allclose(loss, expected)


def test_ibp_training_verifies_what_natural_training_does_not():
    """Three noisy blobs: IBP training (at 1.5 eps) verifies far more test points at eps than natural
    training with the same loop and epochs, at about the same clean accuracy."""
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(3, 16, generator=g)
    labels = torch.arange(900) % 3
    images = ((centres[labels] + 0.15 * torch.randn(900, 16, generator=g)).clamp(0, 1) * 255).to(torch.uint8)
    info = dataset_info("mnist-5k")
    split = DataSplit(info, "train", images[:600].view(600, 1, 4, 4), labels[:600])
    x, y = images[600:].float().div(255).view(300, 1, 4, 4), labels[600:]
    verified = {}
    for defense in ("ibp", None):
        net = _net()
        params = {"eps": 0.15, "warmup": 1, "ramp": 3} if defense else {}
        train(net, split, Recipe(defense, params, epochs=8, batch_size=50, lr=3e-3), progress=False)
        outputs = build_threat("ibp:eps=0.1").evaluate_shard(net, x, y, None)
        verified[defense] = outputs["verified@0.1"].mean()
        assert outputs["clean_correct"].mean() >= 0.95
    assert verified["ibp"] >= 0.3 and verified["ibp"] >= verified[None] + 0.2, verified
