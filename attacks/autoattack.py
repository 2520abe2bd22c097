"""The AutoAttack ensemble (Croce & Hein, ICML 2020) as one threat, from robench's own attacks:
``autoattack:eps=0.3,norm=linf,version=standard``.

The attacks run in AutoAttack's order, each only on the examples every earlier one failed on (and that
are correct on clean input); an example is robust only if every attack fails on it. Per eps, the
outputs hold which examples are still robust after each attack, which attack broke each example
(-1: none; the index in `ATTACKS_OF[version]`) and the norm of the perturbation that broke it.
- standard: APGD-CE (100 iterations) -> APGD-T (9 targets, 100 iterations each) -> FAB-T (9 targets,
  100 iterations) -> Square (5,000 queries);
- rand (randomized models): APGD-CE and APGD-DLR with the gradient averaged over 20 draws (EOT);
- plus is not available yet: it needs the untargeted FAB, which robench does not have.
Each attack draws from its own random stream (derived from the shard's seed, the eps and its name).
"""
from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from robench.attacks.apgd import L2APGD, L2APGDT, LinfAPGD, LinfAPGDT
from robench.attacks.base import Attack, AttackThreat
from robench.attacks.fab import L2FABT, LinfFABT
from robench.attacks.norms import perturbation_norm
from robench.attacks.square import L2Square, LinfSquare
from robench.errors import RobenchError
from robench.inference import predict
from robench.metrics import accuracy
from robench.registry import ATTACKS
from robench.seeding import derived
from robench.spec import as_tuple
from robench.threats import Budget, Outputs

#: the attacks of each version, in the order they run
ATTACKS_OF = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}


def ensemble(norm: str, version: str) -> dict[str, Attack]:
    """The configured attacks of `version` in `norm`, by name, in the order they run."""
    linf = norm == "linf"
    if version == "standard":
        return {"apgd-ce": (LinfAPGD if linf else L2APGD)(loss="ce", steps=100),
                "apgd-t": (LinfAPGDT if linf else L2APGDT)(targets=9, steps=100),
                "fab-t": (LinfFABT if linf else L2FABT)(targets=9, steps=100),
                "square": (LinfSquare if linf else L2Square)(queries=5000, p_init=0.8)}
    if version == "rand":
        apgd = LinfAPGD if linf else L2APGD
        return {"apgd-ce": apgd(loss="ce", steps=100, eot=20), "apgd-dlr": apgd(loss="dlr", steps=100, eot=20)}
    if version == "plus":
        raise RobenchError("autoattack version=plus is not available yet: it needs the untargeted FAB, which "
                           "robench does not implement; use version=standard (or rand for randomized models).")
    raise RobenchError(f"autoattack version must be standard, plus or rand; got {version!r}.")


@ATTACKS.register("autoattack")
class AutoAttack:
    """The AutoAttack ensemble in `norm` ("linf" or "l2"), `version` standard or rand (see the module)."""

    budget_parameters = {"eps": Budget(float)}
    label = None

    def __init__(self, *, norm: Literal["linf", "l2"] = "linf",
                 version: Literal["standard", "plus", "rand"] = "standard"):
        if norm not in ("linf", "l2"):
            raise RobenchError(f"autoattack norm must be linf or l2; got {norm!r}.")
        self.norm, self.version = norm, version
        self.attacks = ensemble(norm, version)

    @classmethod
    def as_threat(cls, eps: Any, **hyperparameters: Any) -> "AutoAttackThreat":
        epsilons = tuple(float(e) for e in as_tuple(eps))
        config = cls(**hyperparameters)
        if any(not math.isfinite(e) or e < 0 for e in epsilons):
            raise RobenchError(f"eps must be >= 0; got {'|'.join(map(str, epsilons))}.")
        if config.norm == "linf" and max(epsilons) > 1:
            raise RobenchError(f"Linf eps {max(epsilons)} exceeds 1, the largest distance between images in [0, 1].")
        return AutoAttackThreat(config, epsilons)


class AutoAttackThreat(AttackThreat):
    """Robust accuracy under the AutoAttack ensemble at each eps, with the robust accuracy after each
    attack in turn and which attack broke each example."""

    version = 1

    def __init__(self, attack: AutoAttack, epsilons: tuple[float, ...]):
        super().__init__(attack, epsilons)  # type: ignore[arg-type]

    def parts(self) -> dict[str, "AutoAttackThreat"]:
        if len(self.epsilons) == 1:
            return {"": self}
        return {f"eps={eps!r}": AutoAttackThreat(self.attack, (eps,)) for eps in self.epsilons}

    @property
    def cost(self) -> float:
        # at most: every attack on every example (each runs only on the examples still robust)
        return 1 + sum(a.forward_passes for a in self.attack.attacks.values())

    def evaluate_shard(self, model, x, y, generator) -> Outputs:
        clean = predict(model, x).argmax(1) == y
        out: Outputs = {"clean_correct": clean.cpu().numpy()}
        for eps in self.epsilons:
            stream = derived(generator, "eps", eps)
            standing = clean.clone()
            adversarial = x.clone()
            broken_by = torch.full((len(x),), -1, dtype=torch.int64, device=x.device)
            for i, (name, attack) in enumerate(self.attack.attacks.items()):
                idx = standing.nonzero().squeeze(1)
                if len(idx):
                    result = attack(model, x[idx], y[idx], eps=eps, generator=derived(stream, name))
                    hit = idx[result.success]
                    adversarial[hit] = result.adversarial[result.success]
                    broken_by[hit] = i
                    standing[hit] = False
                out[f"after_{name}@{eps!r}"] = standing.cpu().numpy().copy()
            norms = perturbation_norm(adversarial - x, self.attack.norm)
            out[f"robust@{eps!r}"] = standing.cpu().numpy()
            out[f"norm@{eps!r}"] = torch.where(broken_by >= 0, norms, torch.nan).cpu().numpy()
            out[f"broken_by@{eps!r}"] = broken_by.cpu().numpy()
        return out

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        metrics = super().summarize(outputs)
        names = list(self.attack.attacks)
        metrics["robust_accuracy_after"] = {
            repr(eps): {name: accuracy(outputs[f"after_{name}@{eps!r}"]) for name in names} for eps in self.epsilons}
        metrics["broken_by"] = {
            repr(eps): {name: int(np.sum(outputs[f"broken_by@{eps!r}"] == i)) for i, name in enumerate(names)}
            for eps in self.epsilons}
        return metrics
