"""Robust distillation (Goldblum et al. 2020): a student trained on a teacher's soft labels, on clean inputs
(`distill`) or on adversarial ones (`ard`, adversarially robust distillation)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robench.defenses.adversarial import EpsWarmup
from robench.defenses.base import TrainingDefense
from robench.errors import RobenchError
from robench.registry import ATTACKS, DEFENSES, MODELS


def teacher_entry(name: object, defense: str):
    """The zoo entry named `name`, the teacher of `defense`; a one-line error if there is none."""
    if not isinstance(name, str) or name not in MODELS:
        raise RobenchError(f"{defense}: teacher {name!r} is not a zoo model; give a zoo name (`robench zoo list`), "
                           "e.g. teacher=mnist-pgd-at.")
    from robench.zoo import get

    return get(name)


@DEFENSES.register("distill")
class Distillation(TrainingDefense):
    """Knowledge distillation from `teacher` (a zoo name, or a module from Python): the loss is
    alpha * T^2 * KL(softmax(t(x) / T) || softmax(s(x') / T)) + (1 - alpha) * CE(s(x), y), for the student s
    (in training), the teacher t (eval mode, never trained) on the clean batch x, T the `temperature` and
    the KL averaged over the batch; x' = x here (the subclass `ard` attacks it). The defaults are the
    paper's code's (alpha 1, T 30). A teacher named in the zoo is loaded (trained first if need be), and
    its identity is part of the student's cache key."""

    name = "distill"

    def __init__(self, *, teacher: str | nn.Module, alpha: float = 1.0, temperature: float = 30.0):
        if not 0 <= alpha <= 1 or not temperature > 0:
            raise RobenchError(f"{self.name} needs 0 <= alpha <= 1 and temperature > 0; got alpha={alpha}, "
                               f"temperature={temperature}.")
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.teacher = teacher if isinstance(teacher, nn.Module) else teacher_entry(teacher, self.name).load()
        self.teacher.eval().requires_grad_(False)
        #: the clean batch `transform` saw last and the teacher's logits on it, for `loss`
        self.current: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def depends_on(cls, params: dict) -> dict[str, str]:
        teacher = params.get("teacher")
        return {} if isinstance(teacher, nn.Module) else {"teacher": teacher_entry(teacher, cls.name).identity}

    def inputs(self, model: nn.Module, x: torch.Tensor, teacher_logits: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        """The student's inputs x' of the distillation term for the clean batch `x`."""
        return x

    def transform(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            teacher_logits = self.teacher.to(x.device)(x)
        self.current = (x, teacher_logits)
        return self.inputs(model, x, teacher_logits, generator), y

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        clean, teacher_logits = self.current
        self.current = None
        t, total = self.temperature, 0.0
        if self.alpha > 0:
            kl = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits / t, 1), reduction="batchmean",
                          log_target=True)
            total = self.alpha * t * t * kl
        if self.alpha < 1:
            total = total + (1 - self.alpha) * F.cross_entropy(logits if x is clean else model(clean), y)
        return total


@DEFENSES.register("ard")
class AdversariallyRobustDistillation(EpsWarmup, Distillation):
    """ARD: `distill` whose distillation term sees x', Linf PGD examples against the student (the steps,
    random start and projection of `pgd-linf`: `steps` steps of `rel_step` * eps) that maximise
    KL(softmax(t(x)) || softmax(s(x'))), the divergence from the teacher's clean output; the teacher sees x,
    the cross-entropy term the clean x. eps follows `warmed_up` over the first `warmup` epochs. (The paper's
    public code attacks the cross-entropy to the labels instead.)"""

    name = "ard"

    def __init__(self, *, teacher: str | nn.Module, alpha: float = 1.0, temperature: float = 30.0, eps: float = 0.3,
                 steps: int = 10, rel_step: float | None = None, warmup: int = 0):
        if not 0 <= eps <= 1 or warmup < 0:
            raise RobenchError(f"ard needs 0 <= eps <= 1 (Linf) and warmup >= 0; got eps={eps}, warmup={warmup}.")
        self.attack = ATTACKS.create("pgd-linf", steps=steps, rel_step=rel_step, random_start=True)
        self.eps, self.warmup = float(eps), warmup
        self.current_eps = self.eps
        super().__init__(teacher=teacher, alpha=alpha, temperature=temperature)  # last: it may train the teacher

    def inputs(self, model: nn.Module, x: torch.Tensor, teacher_logits: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        eps, pgd = self.current_eps, self.attack
        if eps == 0:
            return x
        target = F.log_softmax(teacher_logits, 1)
        lo, hi, size = (x - eps).clamp(min=0), (x + eps).clamp(max=1), pgd.step_size(eps)
        adv = (x + pgd.start(x, eps, generator)).clamp(0, 1)
        was_training = model.training
        model.eval()  # as the attacks of `pgd-at` see the model
        for _ in range(pgd.steps):
            adv.requires_grad_(True)
            kl = F.kl_div(F.log_softmax(model(adv), 1), target, reduction="sum", log_target=True)
            grad, = torch.autograd.grad(kl, adv)
            adv = adv.detach()
            pgd.advance_(adv, grad, x, lo, hi, size, eps)
        model.train(was_training)
        return adv
