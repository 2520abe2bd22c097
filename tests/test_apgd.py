"""APGD, APGD-DLR and APGD-T: the checkpoint schedule, the DLR losses, the budget, seeding, bf16 with its
fp32 re-check, and strength against PGD on the embedded digits model (agreement with the reference
implementation: tests/test_autoattack_reference.py)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robench.attacks import apgd
from robench.attacks.apgd import (L2APGD, L2APGDT, LinfAPGD, LinfAPGDT, checkpoints, dlr_loss,
                                  targeted_dlr_loss)
from robench.attacks.fab import LinfFABT
from robench.attacks.pgd import LinfPGD
from robench.attacks.square import LinfSquare
from robench.errors import RobenchError
from robench.threats import build_threat


def _net(classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, classes)).eval()


def _batch(n: int = 48, classes: int = 10):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(n, 1, 8, 8, generator=g)
    x[:6] = 0.0  # corners of the box
    x[6:12] = 1.0
    return x, torch.randint(0, classes, (n,), generator=g)


def paired_interval(a: torch.Tensor, b: torch.Tensor, z: float = 1.96) -> tuple[float, float]:
    """95% interval of mean(a) - mean(b) for paired booleans (normal approximation on the discordant
    pairs, as in McNemar's test), widened by one example for small counts."""
    n = len(a)
    d = a.float() - b.float()
    mean = float(d.mean())
    half = z * math.sqrt(max(float((d - mean).pow(2).sum()) / (n - 1), 0.0) / n) + 1 / n
    return mean - half, mean + half


def test_checkpoint_schedule():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]  # windows 3, 2, then never below ceil(0.6) = 1
    assert checkpoints(1000) == [220, 410, 570, 700, 800, 870, 930, 990]
    assert checkpoints(1) == [1]


def test_dlr_known_values():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    # y = 0 (correct): -(3 - 1) / (3 - 0); y = 1 (wrong): -(1 - 3) / (3 - 0)
    assert torch.allclose(dlr_loss(z, torch.tensor([0])), torch.tensor([-2 / 3]))
    assert torch.allclose(dlr_loss(z, torch.tensor([1])), torch.tensor([2 / 3]))
    # targeted, y = 0, t = 2: -(3 - 0) / (3 - (0 - 1) / 2)
    assert torch.allclose(targeted_dlr_loss(z, torch.tensor([0]), torch.tensor([2])), torch.tensor([-3 / 3.5]))
    # invariant to shifting and (positive) scaling of the logits
    w = torch.randn(16, 10, generator=torch.Generator().manual_seed(0))
    y, t = torch.arange(16) % 10, (torch.arange(16) + 3) % 10
    assert torch.allclose(dlr_loss(5 * w + 2, y), dlr_loss(w, y), atol=1e-5)
    assert torch.allclose(targeted_dlr_loss(5 * w - 1, y, t), targeted_dlr_loss(w, y, t), atol=1e-5)
    # a tie at the top: the largest other logit equals z_y, the loss is 0
    assert float(dlr_loss(torch.tensor([[2.0, 2.0, 0.0]]), torch.tensor([0]))) == 0.0


@pytest.mark.parametrize("attack, order", [
    (LinfAPGD(steps=12), math.inf), (LinfAPGD(steps=12, loss="dlr", restarts=2), math.inf),
    (LinfAPGDT(steps=6, targets=3), math.inf),
    (L2APGD(steps=12), 2), (L2APGD(steps=12, loss="dlr"), 2), (L2APGDT(steps=6, targets=3, restarts=2), 2),
])
@pytest.mark.parametrize("eps", [0.05, 0.5, 3.0])
def test_outputs_stay_in_the_ball_and_the_box(attack, order, eps, generator):
    if order == math.inf and eps > 1:
        eps = 1.0
    x, y = _batch()
    result = attack(_net(), x, y, eps=eps, generator=generator)
    delta = (result.adversarial - x).flatten(1)
    assert float(torch.linalg.vector_norm(delta, ord=order, dim=1).max()) <= eps * (1 + 1e-6) + 1e-6
    assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1
    assert result.success.any()  # the random net is easy: something breaks


@pytest.mark.parametrize("attack", [LinfAPGD(steps=8), L2APGDT(steps=4, targets=2)])
def test_same_seed_same_result(attack):
    x, y = _batch()
    net = _net()
    runs = [attack(net, x, y, eps=0.3, generator=torch.Generator().manual_seed(s)).adversarial for s in (5, 5, 6)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("attack", [LinfAPGD(steps=8), L2APGDT(steps=4, targets=2), LinfFABT(steps=6, targets=2),
                                    LinfSquare(queries=30)])
def test_passes_in_chunks_give_the_same_result(attack, monkeypatch):
    """Up to float rounding: a linear layer's products may round differently at another batch size."""
    x, y = _batch()
    net = _net()
    whole = attack(net, x, y, eps=0.1, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(apgd, "CPU_CHUNK", 5)  # 48 examples: 10 passes each time
    assert len(apgd.chunks(len(x), x.device)) == 10
    chunked = attack(net, x, y, eps=0.1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(chunked.success, whole.success)
    assert torch.allclose(chunked.adversarial, whole.adversarial, atol=1e-6)


def test_misclassified_examples_are_returned_untouched(generator):
    x, y = _batch()
    net = _net()
    wrong = net(x).argmax(1) != y
    adv = LinfAPGD(steps=4)(net, x, y, eps=0.2, generator=generator).adversarial
    assert wrong.any() and torch.equal(adv[wrong], x[wrong])


class Confident(nn.Module):
    """Class 0 by a margin no perturbation can overcome; counts forward passes."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.linear = nn.Linear(64, classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        logits = 0.01 * self.linear(x.flatten(1))
        return logits + torch.cat([torch.full_like(logits[:, :1], 100.0), torch.zeros_like(logits[:, 1:])], 1)


def test_eot_averages_over_that_many_passes(generator):
    x, _ = _batch(8)
    y = torch.zeros(8, dtype=torch.long)
    for eot, expected in ((1, 1 + 1 * (1 + 5) + 1), (3, 1 + 3 * (1 + 5) + 1)):
        model = Confident()
        result = L2APGD(steps=5, eot=eot)(model, x, y, eps=1.0, generator=generator)
        # one clean pass, eot passes at the start and after each step, the final judgement
        assert model.calls == expected and not result.success.any()
    with pytest.raises(RobenchError, match="eot must be an integer >= 1"):
        LinfAPGD(eot=0)


@pytest.mark.parametrize("attack", [LinfAPGD(steps=6, precision="bf16"), L2APGDT(steps=6, targets=2, precision="bf16")])
def test_bf16_successes_are_rechecked_in_fp32(attack, tie_model):
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = tie_model
    result = attack(model, x, torch.ones(8, dtype=torch.long), eps=0.3)
    # every point "fools" the model in bf16; none in fp32, so no example leaves and every step runs
    assert not result.success.any() and model.calls >= attack.steps * getattr(attack, "targets", 1)
    with pytest.raises(RobenchError, match="precision must be one of"):
        LinfAPGD(precision="int8")


def test_too_few_classes_is_a_clear_error(generator):
    x, y = _batch(8, classes=2)
    with pytest.raises(RobenchError, match="DLR loss needs a model with at least 3 classes; this one has 2"):
        LinfAPGD(loss="dlr", steps=2)(_net(2), x, y, eps=0.1, generator=generator)
    x, y = _batch(8, classes=3)
    with pytest.raises(RobenchError, match="at least 4 classes; this one has 3"):
        LinfAPGDT(steps=2)(_net(3), x, y, eps=0.1, generator=generator)
    LinfAPGD(loss="dlr", steps=2)(_net(3), x, y, eps=0.1, generator=generator)  # 3 classes suffice for DLR
    # fewer classes than targets: targets run up to classes - 1
    x, y = _batch(8, classes=4)
    assert len(LinfAPGDT(targets=9)._runs(_net(4)(x))) == 3


def test_threat_specs():
    threat = build_threat("apgd-linf:eps=0.1|0.2,loss=dlr,steps=5")
    assert threat.attack.loss == "dlr" and threat.attack.steps == 5 and threat.epsilons == (0.1, 0.2)
    assert "restarts=1" in threat.canonical and "eot=1" in threat.canonical
    assert build_threat("apgd-t-l2:eps=1.5").attack.targets == 9
    with pytest.raises(RobenchError, match="loss"):
        build_threat("apgd-linf:eps=0.1,loss=hinge")


# -- strength on the embedded digits model ------------------------------------------------------------
EPS = 0.15
STEPS = 20


@pytest.fixture(scope="module")
def data(embedded_test):
    return embedded_test.select(n=100)


def test_apgd_ce_is_at_least_as_strong_as_pgd(embedded_model, data):
    ours = LinfAPGD(steps=STEPS)(embedded_model, data.x, data.y, eps=EPS,
                                  generator=torch.Generator().manual_seed(0))
    pgd = LinfPGD(steps=STEPS)(embedded_model, data.x, data.y, eps=EPS, generator=torch.Generator().manual_seed(0))
    robust_ours, robust_pgd = ~ours.success, ~pgd.success
    low, high = paired_interval(robust_ours, robust_pgd)
    print(f"robust accuracy: APGD-CE {float(robust_ours.float().mean()):.3f}, PGD {float(robust_pgd.float().mean()):.3f}")
    assert low <= 0  # APGD not weaker beyond noise
    assert float(robust_ours.float().mean()) < float((embedded_model(data.x).argmax(1) == data.y).float().mean())
