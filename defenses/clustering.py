"""Piece-wise clustering (Rakin et al. 2020): a weight regulariser against bit-flip attacks."""
from __future__ import annotations

import torch
from torch import nn

from robench.defenses.base import TrainingDefense
from robench.errors import RobenchError
from robench.registry import DEFENSES


@DEFENSES.register("piecewise-clustering")
class PiecewiseClustering(TrainingDefense):
    """Adds ``lam * sum over conv and linear layers of (sum (w+ - mean w+)^2 + sum (w- - mean w-)^2)``
    to the training loss, where w+ and w- are a layer's positive and negative weights; batches are
    left as they are."""

    def __init__(self, *, lam: float = 1e-3):
        if lam < 0:
            raise RobenchError(f"piecewise-clustering: lam must be >= 0; got {lam}.")
        self.lam = float(lam)

    def transform(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def penalty(self, model: nn.Module) -> torch.Tensor:
        total = torch.zeros(())
        for module in model.modules():
            if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                w = module.weight.flatten()
                for part in (w[w > 0], w[w < 0]):
                    if part.numel():
                        total = total.to(w) + ((part - part.mean()) ** 2).sum()
        return self.lam * total
