"""PGD adversarial training (Madry et al. 2018) with a mixing ratio and an eps warm-up."""
from __future__ import annotations

import torch
from torch import nn

from robench.defenses.base import TrainingDefense
from robench.errors import RobenchError
from robench.registry import ATTACKS, DEFENSES


@DEFENSES.register("pgd-at")
class PGDAdversarialTraining(TrainingDefense):
    """Replace a fraction `ratio` of each batch (round(ratio * N) examples chosen at random) by Linf PGD
    examples (`steps` steps of `rel_step` * eps, by default 2.5 * eps / steps; random start). During the first `warmup` epochs eps
    grows linearly: epoch e < warmup uses eps * (e + 1) / (warmup + 1)."""

    def __init__(self, *, eps: float = 0.3, steps: int = 10, rel_step: float | None = None, ratio: float = 1.0,
                 warmup: int = 0):
        if eps < 0 or not 0 <= ratio <= 1 or warmup < 0:
            raise RobenchError(f"pgd-at needs eps >= 0, 0 <= ratio <= 1 and warmup >= 0; "
                               f"got eps={eps}, ratio={ratio}, warmup={warmup}.")
        self.eps, self.ratio, self.warmup = float(eps), float(ratio), warmup
        self.current_eps = self.eps
        # the attack comes through its registry, not an import: defenses never import robench.attacks
        # (whose smoothadv imports the smoothed classifier from here), so the two packages form no cycle
        self.attack = ATTACKS.create("pgd-linf", steps=steps, rel_step=rel_step, random_start=True)

    def on_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        self.current_eps = self.eps * min(1.0, (epoch + 1) / (self.warmup + 1))

    def transform(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        k = round(self.ratio * len(x))
        if k == 0 or self.current_eps == 0:
            return x, y
        idx = torch.randperm(len(x), generator=generator)[:k].to(x.device)
        x = x.clone()
        x[idx] = self.attack(model, x[idx], y[idx], eps=self.current_eps, generator=generator).adversarial
        return x, y
