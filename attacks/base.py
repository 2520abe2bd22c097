"""Base classes of input attacks and the threat that measures robust accuracy under them."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, final

import numpy as np
import torch
from torch import nn

from robench.attacks.norms import NORM_NAMES, NORM_ORDERS, perturbation_norm
from robench.errors import RobenchError
from robench.inference import check_images, predict
from robench.metrics import Accuracy, accuracy
from robench.report import Ball, Column, Curve, Report, number
from robench.seeding import derived
from robench.spec import as_tuple
from robench.threats import Budget, Kind, Outputs, Threat

if TYPE_CHECKING:
    from robench.flags import Flag


@dataclass
class AttackResult:
    """Adversarial inputs (same shape as the inputs, in [0, 1]) and which of them the model misclassifies."""

    adversarial: torch.Tensor
    success: torch.Tensor


class Attack(ABC):
    """An input attack. Hyperparameters are keyword-only arguments of ``__init__``; the budget `eps` is
    given at call time. Subclasses implement `run`; the final ``__call__`` checks the inputs, puts the
    model in eval mode with frozen parameters, and restores both afterwards; it then enforces the budget
    and judges success the same way for every attack (see `__call__`). Subclasses may not override
    ``__call__``."""

    #: the norm `eps` is measured in: "linf" or "l2"
    norm: ClassVar[str]
    #: the attack's name in table titles ("PGD Linf"); None: the threat's registered name
    label: ClassVar[str | None] = None
    budget_parameters: ClassVar[dict] = {"eps": Budget(float)}
    #: "iterative" for a multi-step white-box attack expected to come close to the ensemble (PGD), None
    #: otherwise; the flags compare such an attack with the ensemble (robench.attacks.checks.compare)
    role: ClassVar[str | None] = None
    #: True for an attack that looks for the smallest perturbation (FAB): its mean norm says how far the
    #: boundary is. A fixed-budget attack's Linf perturbations end on the ball (a sign step or the
    #: projection puts some pixel at +-eps), so their mean Linf norm is eps and is not reported
    minimum_norm: ClassVar[bool] = False
    #: hyperparameters that make the attack stronger when raised (steps, restarts): a stronger
    #: configuration whose robust accuracy is higher is flagged
    strength_parameters: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
            generator: torch.Generator) -> torch.Tensor:
        """Adversarial inputs within `eps` of `x` (in `norm`) and in [0, 1]."""

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "__call__" in vars(cls):
            raise TypeError(f"{cls.__name__} overrides Attack.__call__, which enforces the budget and judges "
                            "success for every attack; implement `run` instead.")

    @final
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                 generator: torch.Generator | None = None) -> AttackResult:
        """Run the attack on images `x` (N, C, H, W) in [0, 1] with labels `y` (N,) at budget `eps`.

        The budget is enforced here, for every attack: the inputs `run` returns must have the shape of
        `x`, be finite, lie in [0, 1] and within `eps` of `x` in `norm`, up to float rounding (8 ulps of the
        dtype per coordinate, accumulated over the coordinates for L2 and L1; none for L0). Anything
        else is **rejected** with a RobenchError, not clipped: an attack that leaves its budget has a bug,
        and projecting its output would hide the bug and report a result the attack never produced;
        and a projection is not a no-op for a correct attack (rescaling onto the L2 sphere changes the
        last bits of points on it), so clipping would change the results of the attacks that are right.
        Success is then judged on the returned inputs alone: the model in eval mode misclassifies them
        (``predict(model, adversarial).argmax(1) != y``)."""
        check_images(x, y)
        if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise RobenchError(f"eps must be a finite number >= 0; got {eps!r}.")
        generator = generator or torch.Generator(device=x.device).manual_seed(0)
        was_training = model.training
        grad_flags = [p.requires_grad for p in model.parameters()]
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            adversarial = self.run(model, x, y, float(eps), generator).detach()
            self._check_budget(x, adversarial, float(eps))
            success = predict(model, adversarial).argmax(1) != y
        finally:
            model.train(was_training)
            for p, flag in zip(model.parameters(), grad_flags):
                p.requires_grad_(flag)
        return AttackResult(adversarial, success)

    def _check_budget(self, x: torch.Tensor, adversarial: torch.Tensor, eps: float) -> None:
        """Raise unless `adversarial` has the shape of `x`, is finite, lies in [0, 1] and within `eps` of
        `x` in `norm`, up to float rounding (see `__call__`)."""
        name = type(self).__name__
        if not torch.is_tensor(adversarial) or adversarial.shape != x.shape:
            shape = tuple(adversarial.shape) if torch.is_tensor(adversarial) else type(adversarial).__name__
            raise RobenchError(f"attack {name} returned {shape} from run; expected a tensor of the input "
                               f"shape {tuple(x.shape)}.")
        if not len(x):
            return
        if not torch.isfinite(adversarial).all():
            raise RobenchError(f"attack {name} returned non-finite inputs (NaN or inf); an attack must return "
                               "images in [0, 1].")
        ulp = 8 * torch.finfo(adversarial.dtype if adversarial.is_floating_point() else torch.float32).eps
        low, high = float(adversarial.min()), float(adversarial.max())
        if low < -ulp or high > 1 + ulp:
            raise RobenchError(f"attack {name} returned inputs outside [0, 1] (from {low:g} to {high:g}); an "
                               "attack must return images in [0, 1]: clamp them in `run` (e.g. .clamp(0, 1)).")
        if getattr(self, "norm", None) not in NORM_ORDERS:
            raise RobenchError(f"attack {name} declares norm {getattr(self, 'norm', None)!r}; set the class "
                               f"attribute norm to one of {', '.join(NORM_ORDERS)}.")
        norms = perturbation_norm(adversarial.to(x.dtype) - x, self.norm)
        d = x[0].numel()
        slack = {"linf": ulp, "l2": ulp * (eps + math.sqrt(d)), "l1": ulp * (eps + d), "l0": 0.0}[self.norm]
        worst = int(norms.argmax())
        if float(norms[worst]) > eps + slack:
            raise RobenchError(f"attack {name} returned inputs outside its budget: example {worst} is at "
                               f"{self.norm} distance {float(norms[worst]):.6g} from the input, eps is {eps:g}; "
                               "an attack must project its output into the eps ball in `run` (Linf: clamp the "
                               "perturbation to [-eps, eps]; L2: rescale it to norm <= eps).")

    @classmethod
    def as_threat(cls, eps: Any, **hyperparameters: Any) -> "AttackThreat":
        """The threat at each eps. Images lie in [0, 1], so a Linf eps above 1 is refused (eps = 1 already
        reaches every image); L2, L1 and L0 budgets are not bounded here, as their largest useful value
        depends on the image size (sqrt(C * H * W) for L2)."""
        epsilons = tuple(float(e) for e in as_tuple(eps))
        if any(not math.isfinite(e) or e < 0 for e in epsilons):
            raise RobenchError(f"eps must be >= 0; got {'|'.join(map(str, epsilons))}.")
        if cls.norm == "linf" and max(epsilons) > 1:
            raise RobenchError(f"Linf eps {max(epsilons)} exceeds 1, the largest distance between images in "
                               "[0, 1]; give eps <= 1 (e.g. 0.3 for MNIST, 8/255 for CIFAR-10).")
        return AttackThreat(cls(**hyperparameters), epsilons)


class AttackThreat(Threat):
    """Robust accuracy under an input attack at each eps: an example is robust only if it is correct on
    clean input and the attack (every restart) fails on it. Each eps is its own part (stored, resumed
    and distributed on its own) with its own random stream, derived from the shard's seed and that eps
    alone, so an eps gives the same result whatever other eps are in the list."""

    kind = Kind.INPUT_ATTACK
    # v2: one part and one random stream per eps (v1: the eps shared one stream in turn). The sanity
    # checks (part `checks`, `metrics["flags"]`) leave every eps part's outputs and metrics as they were:
    # Records computed before them have no "flags" and read as "not checked"
    version = 2
    #: APGD-T took 2.4x the CPU time in shards of 2 as in shards of 32 or 64 (perf/shards.py, mnist-small-cnn),
    #: and the ensemble's cost alone would put 2 of mnist-pgd-at's examples in a shard
    min_shard_size = 32

    def __init__(self, attack: Attack, epsilons: tuple[float, ...]):
        self.attack = attack
        self.epsilons = epsilons

    def parts(self) -> dict[str, Threat]:
        """One part per eps (the threat itself for a single eps) and the sanity checks."""
        if len(self.epsilons) == 1:
            return {"": self, "checks": self.checks()}
        return {**{f"eps={eps!r}": type(self)(self.attack, (eps,)) for eps in self.epsilons}, "checks": self.checks()}

    def checks(self) -> Threat:
        """The sanity probes of this threat's evaluation (robench.attacks.checks), as a part."""
        from robench.attacks.checks import AttackChecks

        return AttackChecks(self.attack.norm, self.epsilons)

    @property
    def cost(self) -> float:
        # a gradient step costs about three forward passes; attacks without `steps` count as 10 steps;
        # an attack may state its own cost in forward passes per example (`forward_passes`)
        if hasattr(self.attack, "forward_passes"):
            return 1 + float(self.attack.forward_passes)
        return 1 + 3 * getattr(self.attack, "steps", 10) * getattr(self.attack, "restarts", 1)

    def evaluate_shard(self, model, x, y, generator) -> Outputs:
        clean = predict(model, x).argmax(1) == y
        out: Outputs = {"clean_correct": clean.cpu().numpy()}
        for eps in self.epsilons:
            result = self.attack(model, x, y, eps=eps, generator=derived(generator, "eps", eps))
            robust = clean & ~result.success
            norms = perturbation_norm(result.adversarial - x, self.attack.norm)
            out[f"robust@{eps!r}"] = robust.cpu().numpy()
            out[f"norm@{eps!r}"] = torch.where(result.success & clean, norms, torch.nan).cpu().numpy()
        return out

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        robust, norms = {}, {}
        for eps in self.epsilons:
            robust[repr(eps)] = accuracy(outputs[f"robust@{eps!r}"])
            values = outputs[f"norm@{eps!r}"]
            norms[repr(eps)] = float(np.nanmean(values)) if np.isfinite(values).any() else None
        return {"clean_accuracy": accuracy(outputs["clean_correct"]), "robust_accuracy": robust,
                "mean_perturbation_norm": norms, "flags": [f.to_json() for f in self.flags(outputs)]}

    def compare(self, metrics: dict[str, Any], others: list[tuple[Threat, dict[str, Any]]]) -> list["Flag"]:
        from robench.attacks.checks import compare

        return compare(self, metrics, others)

    def flags(self, outputs: Outputs) -> list["Flag"]:
        """The warnings the sanity checks' outputs raise (none where the checks did not run)."""
        from robench.attacks.checks import flags

        return flags(outputs, self.attack.norm, self.epsilons) if "check_randomized" in outputs else []

    def report(self, metrics: dict[str, Any], label: str | None = None) -> Report:
        """Headline: robust accuracy per eps; details: clean, robust and, where it carries information (L2,
        or a minimum-norm attack: see `Attack.minimum_norm`), the mean perturbation norm of successes per
        eps; one robustness curve (clean accuracy at eps 0)."""
        label = label or self.attack.label or self.spec.name
        clean = Accuracy.from_json(metrics["clean_accuracy"])
        robust = {float(e): Accuracy.from_json(a) for e, a in metrics["robust_accuracy"].items()}
        columns = [Column("clean", clean, baseline=True)]
        columns += [Column(f"eps {number(e)}", a, head=number(e)) for e, a in robust.items()]
        if self.attack.norm != "linf" or getattr(self.attack, "minimum_norm", False):
            columns += [Column(f"mean norm @{number(e)}", v)
                        for e, v in metrics.get("mean_perturbation_norm", {}).items()]
        points = [(0.0, clean.value, *clean.interval)] + [(e, a.value, *a.interval) for e, a in robust.items()]
        norm = NORM_NAMES[self.attack.norm]
        rung = "ensemble" if self.attack.role == "ensemble" else "attacked"
        return Report(label, f"{label}: robust accuracy ({norm} eps), an example counting only if correct "
                             "on clean input and under every restart", tuple(columns),
                      (Curve(f"robustness_curve_{self.attack.norm}", label, f"{norm} eps (pixels in [0, 1])",
                             tuple(points)),),
                      ball=Ball(self.attack.norm, rung, robust))
