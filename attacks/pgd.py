"""Projected gradient descent (Madry et al. 2018) in Linf and L2, with restarts, and FGSM."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robench.attacks.base import Attack
from robench.errors import RobenchError
from robench.registry import ATTACKS

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class PGD(Attack):
    """PGD with `steps` steps of size `step` (absolute) or `rel_step` * eps, an optional uniform random
    start, and `restarts` runs: an example counts as broken if any restart breaks it, and later restarts
    attack only the examples still standing. `early_stop` stops iterating an example once it is
    misclassified (valid for accuracy, faster; off by default, as in the original). `precision` "bf16"
    or "fp16" runs the forward and backward passes under autocast (faster, different arithmetic)."""

    def __init__(self, *, steps: int, rel_step: float, step: float | None = None, restarts: int = 1,
                 random_start: bool = True, early_stop: bool = False, precision: str = "fp32"):
        if not isinstance(steps, int) or steps < 1:
            raise RobenchError(f"steps must be an integer >= 1; got {steps!r}.")
        if not isinstance(restarts, int) or restarts < 1:
            raise RobenchError(f"restarts must be an integer >= 1; got {restarts!r}.")
        if step is not None and step <= 0 or rel_step <= 0:
            raise RobenchError("step and rel_step must be > 0 (step, when given, overrides rel_step * eps).")
        if precision not in PRECISIONS:
            raise RobenchError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
        self.steps, self.step, self.rel_step, self.restarts = steps, step, rel_step, restarts
        self.random_start, self.early_stop, self.precision = random_start, early_stop, precision

    # -- the norm-specific parts -------------------------------------------------------------------
    def start(self, x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def ascend(self, delta: torch.Tensor, grad: torch.Tensor, size: float, eps: float) -> torch.Tensor:
        """One step along the gradient, projected back into the eps ball."""
        raise NotImplementedError

    # -- the shared loop -----------------------------------------------------------------------------
    def run(self, model, x, y, eps, generator):
        out = x.clone()
        if eps == 0:
            return out
        size = self.step if self.step is not None else self.rel_step * eps
        standing = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            idx = standing.nonzero().squeeze(1)
            adv, fooled = self._attack(model, x[idx], y[idx], eps, size, generator)
            out[idx] = adv
            standing[idx] = ~fooled
            if not standing.any():
                break
        return out

    def _loss_grad(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x = x.requires_grad_(True)
        dtype = PRECISIONS[self.precision]
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        grad, = torch.autograd.grad(loss, x)
        return logits.detach(), grad

    def _attack(self, model, x, y, eps, size, generator):
        delta = self.start(x, eps, generator) if self.random_start else torch.zeros_like(x)
        delta = (x + delta).clamp_(0, 1) - x
        active = torch.arange(len(x), device=x.device)
        for _ in range(self.steps):
            logits, grad = self._loss_grad(model, x[active] + delta[active], y[active])
            if self.early_stop:
                keep = logits.argmax(1) == y[active]
                active, grad = active[keep], grad[keep]
                if not len(active):
                    break
            step = self.ascend(delta[active], grad, size, eps)
            delta[active] = (x[active] + step).clamp_(0, 1) - x[active]
        adv = x + delta
        with torch.no_grad():
            fooled = model(adv).argmax(1) != y
        return adv, fooled


@ATTACKS.register("pgd-linf")
class LinfPGD(PGD):
    """PGD in Linf: sign-of-gradient steps, random start uniform in the eps cube (defaults as foolbox:
    40 steps of 0.01/0.3 * eps, i.e. Madry's 0.01 at eps 0.3)."""

    norm = "linf"

    def __init__(self, *, steps: int = 40, rel_step: float = 0.01 / 0.3, step: float | None = None,
                 restarts: int = 1, random_start: bool = True, early_stop: bool = False, precision: str = "fp32"):
        super().__init__(steps=steps, rel_step=rel_step, step=step, restarts=restarts, random_start=random_start,
                         early_stop=early_stop, precision=precision)

    def start(self, x, eps, generator):
        return (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps

    def ascend(self, delta, grad, size, eps):
        return (delta + size * grad.sign()).clamp_(-eps, eps)


def _l2(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


@ATTACKS.register("pgd-l2")
class L2PGD(PGD):
    """PGD in L2: steps along grad / ||grad||, random start uniform in the eps ball, projection by
    rescaling (defaults as foolbox: 50 steps of 0.025 * eps)."""

    norm = "l2"

    def __init__(self, *, steps: int = 50, rel_step: float = 0.025, step: float | None = None,
                 restarts: int = 1, random_start: bool = True, early_stop: bool = False, precision: str = "fp32"):
        super().__init__(steps=steps, rel_step=rel_step, step=step, restarts=restarts, random_start=random_start,
                         early_stop=early_stop, precision=precision)

    def start(self, x, eps, generator):
        n, d = len(x), x[0].numel()
        g = torch.randn(n, d + 2, generator=generator, device=x.device, dtype=x.dtype)
        direction = g / g.norm(dim=1, keepdim=True)
        return (direction[:, :d] * eps).view_as(x)

    def ascend(self, delta, grad, size, eps):
        delta = delta + size * grad / _l2(grad)
        return delta * (eps / _l2(delta)).clamp(max=1.0)


@ATTACKS.register("fgsm")
class FGSM(LinfPGD):
    """Fast gradient sign method: one step of size eps from the clean input (Goodfellow et al. 2015)."""

    def __init__(self, *, precision: str = "fp32"):
        PGD.__init__(self, steps=1, rel_step=1.0, random_start=False, precision=precision)
