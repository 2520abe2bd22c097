"""The final Attack.__call__ enforces the budget: a plugin attack whose `run` returns inputs outside the
eps ball (Linf, L2) or outside [0, 1] is rejected, never clipped; success is judged on the returned
inputs for every attack."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robench.attacks.base import Attack, AttackThreat
from robench.attacks.norms import perturbation_norm
from robench.attacks.pgd import L2PGD, LinfPGD
from robench.errors import RobenchError
from robench.inference import predict


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 3, 8, 8, generator=g) * 0.6 + 0.2, torch.randint(10, (16,), generator=g)


class Scaled(Attack):
    """Moves every pixel by `factor` * eps (Linf) in a random sign direction; factor > 1 leaves the ball."""

    norm = "linf"

    def __init__(self, *, factor: float = 1.0, clamp: bool = True):
        self.factor, self.clamp = factor, clamp

    def run(self, model, x, y, eps, generator):
        sign = torch.randint(0, 2, x.shape, generator=generator).float() * 2 - 1
        adv = x + self.factor * eps * sign
        return adv.clamp(0, 1) if self.clamp else adv


class ScaledL2(Attack):
    """A random direction of L2 length `factor` * eps (kept inside [0, 1] for the inputs used here)."""

    norm = "l2"

    def __init__(self, *, factor: float = 1.0):
        self.factor = factor

    def run(self, model, x, y, eps, generator):
        d = torch.randn(x.shape, generator=generator)
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return x + self.factor * eps * d


def test_a_linf_plugin_outside_the_ball_is_rejected(model, batch):
    x, y = batch
    with pytest.raises(RobenchError, match=r"outside its budget.*linf distance 0\.2.*eps is 0\.1"):
        Scaled(factor=2.0)(model, x, y, eps=0.1)
    result = Scaled(factor=1.0)(model, x, y, eps=0.1)  # on the boundary: accepted, nothing changed
    assert float(perturbation_norm(result.adversarial - x, "linf").max()) <= 0.1 + 1e-6


def test_an_l2_plugin_outside_the_ball_is_rejected(model, batch):
    x, y = batch
    with pytest.raises(RobenchError, match=r"outside its budget.*l2 distance 0\.3.*eps is 0\.2"):
        ScaledL2(factor=1.5)(model, x, y, eps=0.2)
    result = ScaledL2(factor=1.0)(model, x, y, eps=0.2)  # norm eps up to float rounding: accepted
    norms = perturbation_norm(result.adversarial - x, "l2")
    assert torch.allclose(norms, torch.full_like(norms, 0.2), atol=1e-5)


def test_inputs_outside_the_unit_box_are_rejected(model, batch):
    x, y = batch
    with pytest.raises(RobenchError, match=r"outside \[0, 1\]"):
        Scaled(factor=1.0, clamp=False)(model, x, y, eps=0.9)


class Broken(Attack):
    norm = "linf"

    def __init__(self, *, what: str):
        self.what = what

    def run(self, model, x, y, eps, generator):
        if self.what == "nan":
            return torch.full_like(x, math.nan)
        return x[:, :1]


def test_non_finite_or_misshapen_outputs_are_rejected(model, batch):
    x, y = batch
    with pytest.raises(RobenchError, match="non-finite"):
        Broken(what="nan")(model, x, y, eps=0.1)
    with pytest.raises(RobenchError, match=r"expected a tensor of the input shape \(16, 3, 8, 8\)"):
        Broken(what="shape")(model, x, y, eps=0.1)


def test_the_threat_fails_rather_than_scoring_a_bad_plugin(model, batch):
    x, y = batch
    threat = AttackThreat(Scaled(factor=3.0), (0.05,))
    with pytest.raises(RobenchError, match="outside its budget"):
        threat.evaluate_shard(model, x, y, torch.Generator().manual_seed(0))


def test_an_attack_cannot_override_the_final_call():
    with pytest.raises(TypeError, match="overrides Attack.__call__"):
        class Sneaky(Attack):  # noqa: F841
            norm = "linf"

            def run(self, model, x, y, eps, generator):
                return x

            def __call__(self, model, x, y, *, eps, generator=None):
                return None


@pytest.mark.parametrize("attack", [Scaled(factor=1.0), LinfPGD(steps=5), L2PGD(steps=5)])
def test_success_is_judged_on_the_returned_inputs(model, batch, attack):
    x, y = batch
    eps = 0.1 if attack.norm == "linf" else 1.0
    result = attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(2))
    assert torch.equal(result.success, predict(model, result.adversarial).argmax(1) != y)


class NoNorm(Attack):
    norm = "l3"

    def run(self, model, x, y, eps, generator):
        return x.clone()


def test_an_unknown_norm_is_named(model, batch):
    x, y = batch
    with pytest.raises(RobenchError, match="declares norm 'l3'.*linf, l2, l1, l0"):
        NoNorm()(model, x, y, eps=0.1)
