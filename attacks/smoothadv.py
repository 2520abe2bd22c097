"""SmoothAdv (Salman et al. 2019): the L2 PGD attack on a smoothed classifier.

In Python, attack a `Smooth` wrapper: ``SmoothAdv(m=32, steps=20)(Smooth(base, 10, sigma=0.25), x, y,
eps=0.5)``; its success is judged by the smoothed classifier (majority vote over ``Smooth.samples`` noisy
copies). As a threat, the model under test is the base classifier and the spec names the smoothing:
``smoothadv:eps=0.25|0.5,sigma=0.25,m=32,steps=20,samples=100``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robench.attacks.base import Attack
from robench.attacks.norms import l2_per_example
from robench.defenses.smoothing import Smooth, num_classes_of
from robench.errors import RobenchError
from robench.registry import ATTACKS
from robench.report import Report
from robench.threats import Kind, Outputs, Threat


@ATTACKS.register("smoothadv")
class SmoothAdv(Attack):
    """Maximise the NLL of the smoothed soft classifier, the mean softmax of the base model over `m`
    noise draws N(0, sigma^2) (drawn once, reused at every step; noisy inputs clipped to [0, 1] as in
    `Smooth`), by `steps` steps of size 2 * eps / steps along grad / ||grad||_2, each projected onto the
    L2 ball of radius eps and onto [0, 1]. The model must be a `Smooth`."""

    norm = "l2"
    label = "SmoothAdv"
    #: threat parameters besides eps: the smoothing the base model gets and the votes judging success
    budget_parameters: ClassVar[dict] = {**Attack.budget_parameters, "sigma": 0.25, "samples": 100}

    def __init__(self, *, m: int = 32, steps: int = 20):
        if m < 1 or steps < 1:
            raise RobenchError(f"smoothadv needs m >= 1 and steps >= 1; got m={m}, steps={steps}.")
        self.m, self.steps = m, steps

    def noise(self, x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
        """The `m` noise draws (m, *x.shape) for the images `x`: `run`'s first use of its generator, so a
        generator in the same state gives the draws an attack used (SmoothAdv training trains on them)."""
        return torch.randn((self.m, *x.shape), generator=generator, device=x.device, dtype=x.dtype) * sigma

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
            generator: torch.Generator) -> torch.Tensor:
        if not isinstance(model, Smooth):
            raise RobenchError("smoothadv attacks a smoothed classifier: wrap the base model as "
                               "Smooth(model, num_classes, sigma) (the threat spec does this for you).")
        if eps == 0:
            return x.clone()
        noise = self.noise(x, model.sigma, generator)
        size = 2 * eps / self.steps
        delta = torch.zeros_like(x)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            noisy = ((x + delta).unsqueeze(0) + noise).clamp(0, 1).flatten(0, 1)
            probs = F.softmax(model.base(noisy), dim=1).view(self.m, len(x), -1).mean(0)
            loss = F.nll_loss(probs.clamp_min(1e-20).log(), y, reduction="sum")
            grad, = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta = delta + size * grad / l2_per_example(grad)
                delta = delta * (eps / l2_per_example(delta)).clamp(max=1.0)
                delta = (x + delta).clamp(0, 1) - x
        return (x + delta).detach()

    @classmethod
    def as_threat(cls, eps: Any, sigma: float = 0.25, samples: int = 100, **hyperparameters: Any) -> "SmoothedThreat":
        return SmoothedThreat(super().as_threat(eps, **hyperparameters), sigma, samples)


class SmoothedThreat(Threat):
    """An input-attack threat evaluated on the smoothed version (`sigma`, majority of `samples` votes)
    of the model under test: clean and robust accuracy are those of the smoothed classifier."""

    kind = Kind.INPUT_ATTACK

    def __init__(self, inner: Threat, sigma: float, samples: int):
        if sigma <= 0 or samples < 1:
            raise RobenchError(f"smoothadv needs sigma > 0 and samples >= 1; got sigma={sigma}, samples={samples}.")
        self.inner, self.sigma, self.samples = inner, float(sigma), samples

    def evaluate_shard(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       generator: torch.Generator) -> Outputs:
        seed = int(torch.randint(2**62, (1,), generator=generator))
        smooth = Smooth(model, num_classes_of(model, x), self.sigma, samples=self.samples, seed=seed)
        return self.inner.evaluate_shard(smooth, x, y, generator)

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        return {**self.inner.summarize(outputs), "sigma": self.sigma, "samples": self.samples}

    def report(self, metrics: dict[str, Any]) -> Report:
        """The inner attack's report, read as the smoothed classifier's."""
        inner = self.inner.report(metrics, label=f"{self.inner.attack.label} (σ={self.sigma:g})")
        return replace(inner, provenance=(f"accuracies of the smoothed classifier: sigma {self.sigma:g}, majority of "
                                          f"{self.samples} noisy votes",))
