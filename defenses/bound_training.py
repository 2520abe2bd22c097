"""Certified Linf training: IBP (Gowal et al. 2018) and CROWN-IBP (Zhang et al. 2020), REFERENCE.md section 8.

The loss is kappa * CE(z, y) + (1 - kappa) * CE(-m, y), m the margin lower bounds over the eps ball (0 at
the true class). After `warmup` epochs of natural training, over the next `ramp` epochs, batch by batch,
eps grows linearly from 0 to `eps`, kappa from 1 to `kappa` and (CROWN-IBP) beta from `beta_start` to
`beta_end`, where m = beta * CROWN-IBP bound + (1 - beta) * IBP bound; then all stay at their final values.
robench's training loop adds CE(z, y) itself, so `penalty` adds (1 - kappa) * (CE(-m, y) - CE(z, y)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robench.defenses.base import TrainingDefense
from robench.defenses.bounds import BoundedNet, input_box, margin_spec
from robench.errors import RobenchError
from robench.registry import DEFENSES


@DEFENSES.register("ibp")
class IBPTraining(TrainingDefense):
    """IBP certified training at Linf `eps` with the ramp of the module docstring (kappa 1 -> `kappa`)."""

    name = "ibp"

    def __init__(self, *, eps: float = 0.4, warmup: int = 1, ramp: int = 10, kappa: float = 0.5):
        if not 0 < eps <= 1 or warmup < 0 or ramp < 0 or not 0 <= kappa <= 1:
            raise RobenchError(f"{self.name} training needs 0 < eps <= 1, warmup >= 0 epochs, ramp >= 0 and "
                               f"0 <= kappa <= 1; got eps={eps}, warmup={warmup}, ramp={ramp}, kappa={kappa}.")
        self.eps, self.warmup, self.ramp, self.kappa = float(eps), warmup, ramp, float(kappa)
        self.epoch = 0
        self.batch = 0  # batches seen in this epoch
        self.per_epoch = 0  # batches per epoch, from `on_epoch`
        #: the batch `transform` saw last and its schedule, for `penalty`
        self.current: tuple[torch.Tensor, torch.Tensor, dict[str, float]] | None = None

    def on_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        self.epoch, self.batch, self.per_epoch = epoch, 0, batches

    def progress(self) -> float:
        """Where the current batch is in the ramp: 0 before it, 1 after it."""
        if self.epoch < self.warmup:
            return 0.0
        if self.ramp == 0:
            return 1.0
        done = (self.epoch - self.warmup) * self.per_epoch + self.batch
        return min(1.0, done / (self.ramp * self.per_epoch))

    def schedule(self) -> dict[str, float]:
        """eps and kappa for the current batch."""
        p = self.progress()
        return {"eps": self.eps * p, "kappa": 1 - (1 - self.kappa) * p}

    def transform(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        self.current = (x, y, self.schedule())
        self.batch += 1
        return x, y

    def margins(self, net: BoundedNet, spec: torch.Tensor, box, at: dict[str, float]) -> torch.Tensor:
        """The margin lower bounds (B, K) the robust loss uses, under the schedule `at`."""
        return net.bound(spec, box, "ibp")

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        if self.current is None:
            return None
        x, y, at = self.current
        self.current = None
        if at["eps"] == 0 or at["kappa"] == 1:
            return None
        net = BoundedNet(model, x.shape[1:], x)
        m = self.margins(net, margin_spec(y, net.classes, x.dtype), input_box(x, at["eps"]), at)
        robust = F.cross_entropy(-m, y)
        return (1 - at["kappa"]) * (robust - F.cross_entropy(model(x), y))


@DEFENSES.register("crown-ibp")
class CrownIBPTraining(IBPTraining):
    """CROWN-IBP certified training at Linf `eps`: kappa 1 -> `kappa`, beta `beta_start` -> `beta_end` over
    the ramp (module docstring)."""

    name = "crown-ibp"

    def __init__(self, *, eps: float = 0.4, warmup: int = 1, ramp: int = 10, kappa: float = 0.0,
                 beta_start: float = 1.0, beta_end: float = 0.0):
        super().__init__(eps=eps, warmup=warmup, ramp=ramp, kappa=kappa)
        if not (0 <= beta_start <= 1 and 0 <= beta_end <= 1):
            raise RobenchError(f"crown-ibp training needs beta_start and beta_end in [0, 1]; got {beta_start}, "
                               f"{beta_end}.")
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)

    def schedule(self) -> dict[str, float]:
        p = self.progress()
        return {**super().schedule(), "beta": self.beta_start + (self.beta_end - self.beta_start) * p}

    def margins(self, net: BoundedNet, spec: torch.Tensor, box, at: dict[str, float]) -> torch.Tensor:
        beta = at["beta"]
        if beta == 0:
            return net.bound(spec, box, "ibp")
        ibp, crown_ibp = net.ibp_and_crown_ibp(spec, box)
        return beta * crown_ibp + (1 - beta) * ibp
