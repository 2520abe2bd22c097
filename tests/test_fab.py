"""FAB-T: the exact projection on a hyperplane within the box, the budget, seeding, and minimum-norm
results (smaller than eps on the examples it breaks) on the embedded digits model."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robench.attacks.apgd import LinfAPGDT
from robench.attacks.fab import L2FABT, LinfFABT, project_hyperplane_box
from robench.threats import build_threat


def _bisect(z, w, r, norm):
    """The projection by bisection on the multiplier (the slow, obvious way)."""
    direction = torch.sign(w) * torch.sign(r)[:, None]
    room = torch.where(direction > 0, 1 - z, z)
    k = torch.ones_like(w) if norm == "linf" else w.abs()
    lo, hi = torch.zeros(len(z), 1, dtype=z.dtype), torch.full((len(z), 1), 1e6, dtype=z.dtype)
    for _ in range(200):
        mid = (lo + hi) / 2
        reach = (w.abs() * torch.minimum(mid * k, room)).sum(1, keepdim=True)
        below = reach < r.abs()[:, None]
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return direction * torch.minimum(hi * k, room)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_on_the_hyperplane_in_the_box(norm):
    g = torch.Generator().manual_seed(0)
    z = torch.rand(64, 50, generator=g, dtype=torch.float64)
    z[:8, :10] = 0.0
    z[8:16, :10] = 1.0
    w = torch.randn(64, 50, generator=g, dtype=torch.float64)
    w[:, 40:] = 0.0  # coordinates the hyperplane does not see must not move
    r = torch.randn(64, generator=g, dtype=torch.float64) * 2
    r[-4:] = 1e3  # out of the box's reach
    r[-5] = 0.0
    d = project_hyperplane_box(z, w, r, norm)
    assert float((z + d).min()) >= -1e-12 and float((z + d).max()) <= 1 + 1e-12
    assert torch.all(d[:, 40:] == 0) and torch.all(d[-5] == 0)
    feasible = slice(0, 59)
    assert torch.allclose((w * d).sum(1)[feasible], r[feasible], atol=1e-9)
    assert torch.allclose(d, _bisect(z, w, r, norm), atol=1e-7)
    # out of reach: the corner of the box furthest along the hyperplane's normal
    assert torch.allclose(z[-4:] + d[-4:], (torch.sign(w[-4:]) > 0).double().where(w[-4:] != 0, z[-4:]))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


@pytest.mark.parametrize("attack, order, eps", [
    (LinfFABT(steps=10, targets=3), math.inf, 0.1), (LinfFABT(steps=10, targets=2, restarts=2), math.inf, 0.5),
    (L2FABT(steps=10, targets=3), 2, 0.5), (L2FABT(steps=10, targets=2, restarts=2, early_stop=False), 2, 3.0),
])
def test_outputs_stay_in_the_ball_and_the_box(attack, order, eps, generator):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(48, 1, 8, 8, generator=g)
    x[:6] = 0.0
    y = torch.randint(0, 10, (48,), generator=g)
    result = attack(_net(), x, y, eps=eps, generator=generator)
    delta = (result.adversarial - x).flatten(1)
    assert float(torch.linalg.vector_norm(delta, ord=order, dim=1).max()) <= eps * (1 + 1e-6) + 1e-6
    assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1
    assert result.success.any()
    # examples it did not break come back untouched
    assert torch.equal(result.adversarial[~result.success], x[~result.success])


def test_same_seed_same_result():
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
    attack = L2FABT(steps=6, targets=2, restarts=3, early_stop=False)
    runs = [attack(_net(), x, y, eps=1.0, generator=torch.Generator().manual_seed(s)).adversarial for s in (4, 4)]
    assert torch.equal(runs[0], runs[1])


def test_bf16_successes_are_rechecked_in_fp32(tie_model):
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = tie_model
    attack = LinfFABT(steps=6, targets=2, precision="bf16")
    result = attack(model, x, torch.ones(8, dtype=torch.long), eps=0.3)
    # every iterate "fools" the model in bf16; none in fp32, so none is recorded and every step runs
    assert not result.success.any() and torch.equal(result.adversarial, x) and model.calls >= 12


def test_threat_spec():
    threat = build_threat("fab-t-linf:eps=0.3")
    assert (threat.attack.targets, threat.attack.steps, threat.attack.alpha_max, threat.attack.eta,
            threat.attack.beta) == (9, 100, 0.1, 1.05, 0.9)


def test_minimum_norm_on_the_embedded_model(embedded_model, embedded_test):
    data = embedded_test.select(n=30)
    eps = 0.15
    fab = LinfFABT(steps=12, targets=2, early_stop=False)(embedded_model, data.x, data.y, eps=eps,
                                                          generator=torch.Generator().manual_seed(0))
    apgd = LinfAPGDT(steps=12, targets=2)(embedded_model, data.x, data.y, eps=eps,
                                          generator=torch.Generator().manual_seed(0))
    clean = embedded_model(data.x).argmax(1) == data.y
    broken = fab.success & clean
    norms = (fab.adversarial - data.x).flatten(1).abs().amax(1)[broken]
    print(f"FAB-T broke {int(broken.sum())} of {int(clean.sum())}, mean Linf norm {float(norms.mean()):.3f} "
          f"(eps {eps}); APGD-T broke {int((apgd.success & clean).sum())}")
    assert broken.sum() >= 0.5 * (apgd.success & clean).sum()
    assert float(norms.mean()) < 0.9 * eps and float(norms.max()) <= eps + 1e-6
