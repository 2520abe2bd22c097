"""Adversarial training: PGD (Madry et al. 2018) with a mixing ratio, Linf and L2 together (Tramer & Boneh
2019), and SmoothAdv training of a smoothed classifier's base (Salman et al. 2019); each with an eps warm-up.

The attacks come through their registry, not an import: defenses never import robench.attacks (whose
smoothadv imports the smoothed classifier from here), so the two packages form no cycle."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robench.defenses.base import TrainingDefense
from robench.defenses.smoothing import Smooth, num_classes_of
from robench.errors import RobenchError
from robench.registry import ATTACKS, DEFENSES


def warmed_up(eps: float, epoch: int, warmup: int) -> float:
    """The eps of `epoch` (0-based) under a linear warm-up over the first `warmup` epochs: epoch e < warmup
    uses eps * (e + 1) / (warmup + 1), later epochs eps."""
    return eps * min(1.0, (epoch + 1) / (warmup + 1))


class EpsWarmup(TrainingDefense):
    """A recipe whose budget `eps` follows `warmed_up` over the first `warmup` epochs: `current_eps` is the
    epoch's (subclasses set `eps`, `warmup` and `current_eps = eps` in ``__init__``)."""

    eps: float
    warmup: int
    current_eps: float

    def on_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        self.current_eps = warmed_up(self.eps, epoch, self.warmup)


@DEFENSES.register("pgd-at")
class PGDAdversarialTraining(EpsWarmup):
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
        self.attack = ATTACKS.create("pgd-linf", steps=steps, rel_step=rel_step, random_start=True)

    def transform(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        k = round(self.ratio * len(x))
        if k == 0 or self.current_eps == 0:
            return x, y
        idx = torch.randperm(len(x), generator=generator)[:k].to(x.device)
        x = x.clone()
        x[idx] = self.attack(model, x[idx], y[idx], eps=self.current_eps, generator=generator).adversarial
        return x, y


@DEFENSES.register("multi-norm-at")
class MultiNormAdversarialTraining(TrainingDefense):
    """Adversarial training against Linf and L2 together (Tramer & Boneh 2019; Li et al.): each example gets
    a Linf PGD example at `eps_linf` and an L2 PGD example at `eps_l2` (`steps` steps of `rel_step` * eps,
    random start). `mode` "avg" trains on both (the batch doubled: the loss is the mean of the two
    attacks' losses), "max" on the one of higher cross-entropy per example. Both eps follow `warmed_up`."""

    MODES = ("avg", "max")

    def __init__(self, *, eps_linf: float = 0.3, eps_l2: float = 2.0, steps: int = 10, rel_step: float | None = None,
                 mode: str = "avg", warmup: int = 0):
        if eps_linf < 0 or eps_l2 < 0 or warmup < 0 or mode not in self.MODES:
            raise RobenchError(f"multi-norm-at needs eps_linf >= 0, eps_l2 >= 0, warmup >= 0 and mode one of "
                               f"{', '.join(self.MODES)}; got eps_linf={eps_linf}, eps_l2={eps_l2}, warmup={warmup}, "
                               f"mode={mode!r}.")
        self.eps = {"linf": float(eps_linf), "l2": float(eps_l2)}
        self.mode, self.warmup = mode, warmup
        self.current_eps = dict(self.eps)
        self.attacks = {norm: ATTACKS.create(f"pgd-{norm}", steps=steps, rel_step=rel_step, random_start=True)
                        for norm in self.eps}

    def on_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        self.current_eps = {norm: warmed_up(eps, epoch, self.warmup) for norm, eps in self.eps.items()}

    def transform(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        linf, l2 = (self.attacks[norm](model, x, y, eps=self.current_eps[norm], generator=generator).adversarial
                    for norm in ("linf", "l2"))
        if self.mode == "avg":
            return torch.cat([linf, l2]), torch.cat([y, y])
        was_training = model.training
        model.eval()  # the losses the attacks maximised
        with torch.no_grad():
            worse = F.cross_entropy(model(l2), y, reduction="none") > F.cross_entropy(model(linf), y, reduction="none")
        model.train(was_training)
        return torch.where(worse.view(-1, *[1] * (x.dim() - 1)), l2, linf), y


@DEFENSES.register("smoothadv-at")
class SmoothAdvTraining(EpsWarmup):
    """SmoothAdv training (Salman et al. 2019): per batch, `m` noise draws N(0, sigma^2) per image, `steps`
    steps of the `smoothadv` attack at L2 `eps` on the smoothed soft classifier of the model in training
    with those draws, then training on the m noisy copies clip(x' + noise, 0, 1) of each attacked x' (the
    batch m times larger, labels repeated: the loss is the mean over the draws). eps follows `warmed_up`."""

    def __init__(self, *, sigma: float = 0.25, eps: float = 0.5, m: int = 1, steps: int = 1, warmup: int = 0):
        if sigma <= 0 or eps < 0 or warmup < 0:
            raise RobenchError(f"smoothadv-at needs sigma > 0, eps >= 0 and warmup >= 0; got sigma={sigma}, "
                               f"eps={eps}, warmup={warmup}.")
        self.sigma, self.eps, self.m, self.warmup = float(sigma), float(eps), m, warmup
        self.current_eps = self.eps
        self.attack = ATTACKS.create("smoothadv", m=m, steps=steps)

    def transform(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        seed = int(torch.randint(2**62, (1,), generator=generator))

        def draws() -> torch.Generator:  # the attack's noise, drawn again for training
            return torch.Generator(device=x.device).manual_seed(seed)

        adv = x
        if self.current_eps > 0:
            # one vote judges the attack's success, which training does not use; the model keeps its layout
            smooth = Smooth(model, num_classes_of(model, x), self.sigma, channels_last=False, samples=1)
            adv = self.attack(smooth, x, y, eps=self.current_eps, generator=draws()).adversarial
        noisy = (adv.unsqueeze(0) + self.attack.noise(x, self.sigma, draws())).clamp(0, 1)
        return noisy.flatten(0, 1), y.repeat(self.m)
