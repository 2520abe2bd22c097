"""The Square attack: its p schedule and window shapes, the budget, seeding, and that it breaks a model
whose gradients are useless (input quantisation) where PGD cannot."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robench.attacks.pgd import LinfPGD
from robench.attacks.square import L2Square, LinfSquare, bump, meta_bump, p_at
from robench.errors import RobenchError
from robench.threats import build_threat


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def _batch(n: int = 32):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(n, 3, 8, 8, generator=g)
    x[:4] = 0.0
    x[4:8] = 1.0
    return x, torch.randint(0, 10, (n,), generator=g)


def test_p_schedule():
    # halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10,000 queries (scaled to the budget)
    assert p_at(1, 10000, 0.8) == p_at(10, 10000, 0.8) == 0.8
    assert p_at(11, 10000, 0.8) == 0.4 and p_at(50, 10000, 0.8) == 0.4 and p_at(51, 10000, 0.8) == 0.2
    assert p_at(5, 5000, 0.8) == 0.8 and p_at(6, 5000, 0.8) == 0.4
    assert p_at(4001, 5000, 0.8) == 0.8 / 512 and p_at(4000, 5000, 0.8) == 0.8 / 256
    assert LinfSquare().side(0.8, 28, 28) == 25 and LinfSquare().side(0.8 / 512, 28, 28) == 1


def test_linf_proposal_changes_one_window_to_the_faces():
    x, _ = _batch()
    eps, s = 0.1, 3
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    attack = LinfSquare()
    adv = attack.init(x, lo, hi, eps, torch.Generator().manual_seed(0))
    new = attack.propose(x, adv, lo, hi, eps, s, torch.Generator().manual_seed(1))
    changed = (new != adv).any(1)  # (n, h, w)
    for i in range(len(x)):
        rows, cols = changed[i].any(1).nonzero().squeeze(1), changed[i].any(0).nonzero().squeeze(1)
        assert len(rows) and int(rows.max() - rows.min()) < s and int(cols.max() - cols.min()) < s
    at_face = (new == hi) | (new == lo)
    assert at_face.all()  # a Linf Square iterate sits at a face of the box in every coordinate


def test_bumps():
    b = bump(5, 5)
    assert float(b[2, 2]) == pytest.approx(1 / 9 + 1 / 4 + 1)  # the centre is inside all three rectangles
    assert float(b[0, 0]) == pytest.approx(1 / 9) and torch.equal(b, b.t()) and torch.equal(b, b.flip(0))
    m = meta_bump(6)
    assert m.shape == (6, 6) and float(m[:, :3].min()) > 0 and float(m[:, 3:].max()) < 0


@pytest.mark.parametrize("attack, order, eps", [
    (LinfSquare(queries=40), math.inf, 0.05), (LinfSquare(queries=40, restarts=2), math.inf, 0.5),
    (L2Square(queries=40), 2, 0.3), (L2Square(queries=40, restarts=2), 2, 3.0),
])
def test_outputs_stay_in_the_ball_and_the_box(attack, order, eps, generator):
    x, y = _batch()
    result = attack(_net(), x, y, eps=eps, generator=generator)
    delta = (result.adversarial - x).flatten(1)
    assert float(torch.linalg.vector_norm(delta, ord=order, dim=1).max()) <= eps * (1 + 1e-6) + 1e-6
    assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1
    assert result.success.any()


@pytest.mark.parametrize("attack", [LinfSquare(queries=30), L2Square(queries=30)])
def test_same_seed_same_result(attack):
    x, y = _batch()
    net = _net()
    runs = [attack(net, x, y, eps=0.1, generator=torch.Generator().manual_seed(s)).adversarial for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_bf16_successes_are_rechecked_in_fp32(tie_model):
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = tie_model
    result = LinfSquare(queries=20, precision="bf16")(model, x, torch.ones(8, dtype=torch.long), eps=0.3)
    # the start "fools" the model in bf16, not in fp32: the search goes on for all its queries
    assert not result.success.any() and model.calls >= 20


def test_threat_spec_and_errors():
    threat = build_threat("square-linf:eps=0.3")
    assert threat.attack.queries == 5000 and threat.attack.p_init == 0.8
    with pytest.raises(RobenchError, match="p_init"):
        LinfSquare(p_init=1.5)


class Quantised(nn.Module):
    """The model on inputs rounded to 5 grey levels: its gradient is zero almost everywhere."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)


def test_breaks_a_model_without_useful_gradients_where_pgd_cannot(embedded_model, embedded_test):
    data = embedded_test.select(n=40)
    model = Quantised(embedded_model)
    square = LinfSquare(queries=100)(model, data.x, data.y, eps=0.15, generator=torch.Generator().manual_seed(0))
    pgd = LinfPGD(steps=10)(model, data.x, data.y, eps=0.15, generator=torch.Generator().manual_seed(0))
    clean = float((model(data.x).argmax(1) == data.y).float().mean())
    robust_square, robust_pgd = 1 - float(square.success.float().mean()), 1 - float(pgd.success.float().mean())
    print(f"clean {clean:.3f}, robust under PGD {robust_pgd:.3f}, under Square {robust_square:.3f}")
    assert robust_pgd > clean - 0.15  # PGD's zero gradients leave it at its random start
    assert robust_square < robust_pgd - 0.25
