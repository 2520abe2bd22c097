"""The AutoAttack ensemble (Croce & Hein, ICML 2020) as one threat, from robench's own attacks:
``autoattack:eps=0.3,norm=linf,version=standard``.

The attacks run in AutoAttack's order, each only on the examples every earlier one failed on (and that
are correct on clean input); an example is robust only if every attack fails on it. Per eps, the
outputs hold which examples are still robust after each attack, which attack broke each example
(-1: none; else its index in the order of `ensemble(norm, version)`) and the norm of the perturbation that broke it.
- standard: APGD-CE (100 iterations) -> APGD-T (9 targets, 100 iterations each) -> FAB-T (9 targets,
  100 iterations) -> Square (5,000 queries);
- plus: APGD-CE, APGD-DLR and FAB (untargeted), 5 restarts each -> Square (5,000 queries) -> APGD-T ->
  FAB-T (9 targets each);
- rand (randomized models): APGD-CE and APGD-DLR with the gradient averaged over 20 draws (EOT).
Each attack draws from its own random stream (derived from the shard's seed, the eps and its name).
No attack runs on an example IBP verifies at its eps (robench.defenses.verified): no perturbation in the
ball can break it, so skipping it changes no result and saves the ensemble's cost on certified-trained
models (where a model has no verified example, or layers the bounds cannot read, every attack runs as before).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch

from robench.attacks.apgd import L2APGD, L2APGDT, LinfAPGD, LinfAPGDT
from robench.attacks.base import Attack, AttackThreat
from robench.attacks.fab import L2FAB, L2FABT, LinfFAB, LinfFABT
from robench.attacks.norms import NORM_NAMES, perturbation_norm
from robench.attacks.square import L2Square, LinfSquare
from robench.defenses.bound_ops import CannotBound
from robench.defenses.verified import certified_margins
from robench.errors import RobenchError
from robench.flags import Flag
from robench.inference import check_precision, predict
from robench.metrics import Accuracy, accuracy
from robench.report import Column, Report, number
from robench.registry import ATTACKS
from robench.seeding import derived
from robench.spec import as_tuple
from robench.threats import Budget, Kind, Outputs, Threat

#: robust accuracy (points) that Square may take off after the white-box attacks before the ensemble flags it
SQUARE_POINTS = 0.2

def ensemble(norm: str, version: str, precision: str = "fp32") -> dict[str, Attack]:
    """The configured attacks of `version` in `norm`, by name, in the order they run, their passes in
    `precision` (bf16/fp16: autocast, every success re-checked in fp32)."""
    linf, p = norm == "linf", precision
    if version == "standard":
        return {"apgd-ce": (LinfAPGD if linf else L2APGD)(loss="ce", steps=100, precision=p),
                "apgd-t": (LinfAPGDT if linf else L2APGDT)(targets=9, steps=100, precision=p),
                "fab-t": (LinfFABT if linf else L2FABT)(targets=9, steps=100, precision=p),
                "square": (LinfSquare if linf else L2Square)(queries=5000, p_init=0.8, precision=p)}
    if version == "rand":
        apgd = LinfAPGD if linf else L2APGD
        return {"apgd-ce": apgd(loss="ce", steps=100, eot=20, precision=p),
                "apgd-dlr": apgd(loss="dlr", steps=100, eot=20, precision=p)}
    if version == "plus":
        apgd = LinfAPGD if linf else L2APGD
        return {"apgd-ce": apgd(loss="ce", steps=100, restarts=5, precision=p),
                "apgd-dlr": apgd(loss="dlr", steps=100, restarts=5, precision=p),
                "fab": (LinfFAB if linf else L2FAB)(steps=100, restarts=5, precision=p),
                "square": (LinfSquare if linf else L2Square)(queries=5000, p_init=0.8, precision=p),
                "apgd-t": (LinfAPGDT if linf else L2APGDT)(targets=9, steps=100, precision=p),
                "fab-t": (LinfFABT if linf else L2FABT)(targets=9, steps=100, precision=p)}
    raise RobenchError(f"autoattack version must be standard, plus or rand; got {version!r}.")


@ATTACKS.register("autoattack")
class AutoAttack:
    """The AutoAttack ensemble in `norm` ("linf" or "l2"), `version` standard, plus or rand (see the module),
    with every pass in `precision` ("fp32"; "bf16" or "fp16" under autocast, each success re-checked in fp32:
    on mnist-small-cnn, 100 points, bf16 took 0.64x fp32's CPU time for the same robust set)."""

    budget_parameters = {"eps": Budget(float)}
    label = None
    role = "ensemble"
    strength_parameters = ()
    #: added after the boards' entries were computed in fp32: left out of the canonical spec at its default
    quiet_defaults = ("precision",)

    def __init__(self, *, norm: Literal["linf", "l2"] = "linf",
                 version: Literal["standard", "plus", "rand"] = "standard", precision: str = "fp32"):
        if norm not in ("linf", "l2"):
            raise RobenchError(f"autoattack norm must be linf or l2; got {norm!r}.")
        self.norm, self.version, self.precision = norm, version, check_precision(precision)
        self.attacks = ensemble(norm, version, self.precision)
        self.label = f"AutoAttack {NORM_NAMES[norm]}" + ("" if version == "standard" else f" {version}")

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
    attack in turn and which attack broke each example. Each attack at each eps is a stage (a part that
    continues the one before: see `EnsembleStage`), so a run resumes attack by attack."""

    # v2: one stage (part) per attack and eps, the sanity checks and flags (v1: one part per eps)
    version = 2

    def __init__(self, attack: AutoAttack, epsilons: tuple[float, ...]):
        super().__init__(attack, epsilons)  # type: ignore[arg-type]

    def parts(self) -> dict[str, Threat]:
        parts: dict[str, Threat] = {}
        for eps in self.epsilons:
            prefix = "" if len(self.epsilons) == 1 else f"eps={eps!r}/"
            previous = None
            for name, attack in self.attack.attacks.items():
                parts[prefix + name] = EnsembleStage(attack, name, eps, previous and prefix + previous)
                previous = name
        parts["checks"] = self.checks()
        return parts

    @property
    def cost(self) -> float:
        # at most: every attack on every example (each runs only on the examples still robust)
        return 1 + sum(a.forward_passes for a in self.attack.attacks.values())

    def evaluate_shard(self, model, x, y, generator) -> Outputs:
        """Every stage in turn and the checks, on one shard (what robench.evaluate does part by part)."""
        out: Outputs = {}
        for part in self.parts().values():
            out.update((part if part.after is None else part.following(out)).evaluate_shard(model, x, y, generator))
        return self.combine(out)

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        metrics = super().summarize(outputs)
        names = list(self.attack.attacks)
        metrics["robust_accuracy_after"] = {
            repr(eps): {name: accuracy(outputs[f"after_{name}@{eps!r}"]) for name in names} for eps in self.epsilons}
        metrics["broken_by"] = {
            repr(eps): {name: int(np.sum(outputs[f"broken_by@{eps!r}"] == i)) for i, name in enumerate(names)}
            for eps in self.epsilons}
        return metrics

    def report(self, metrics: dict[str, Any], label: str | None = None) -> Report:
        """That of any attack threat, with the robust accuracy after each attack but the last in the details
        (the last is the eps column) and a note on the ensemble."""
        rep = super().report(metrics, label)
        after = [Column(f"after {name} @{number(float(eps))}", Accuracy.from_json(acc))
                 for eps, per in metrics.get("robust_accuracy_after", {}).items()
                 for name, acc in list(per.items())[:-1]]
        note = (f"{rep.label}: the attacks {' -> '.join(self.attack.attacks)} in turn, each on the examples every "
                "earlier one failed on; an example counts as robust only if all fail"
                + (" (none runs on an example IBP verifies)." if self.attack.norm == "linf" else "."))
        return replace(rep, columns=rep.columns + tuple(after), notes=rep.notes + (note,))

    def combine(self, outputs: Outputs) -> Outputs:
        """The stages' outputs and, per eps: robust after the whole chain (``robust@eps``), which attack broke
        each example (``broken_by@eps``: its index in the chain, -1 for none) and the perturbation norm it found."""
        out: Outputs = dict(outputs)
        names = list(self.attack.attacks)
        for eps in self.epsilons:
            standing = outputs["clean_correct"]
            broken_by = np.full(len(standing), -1, dtype=np.int64)
            norms = np.full(len(standing), np.nan)
            for i, name in enumerate(names):
                after = outputs[f"after_{name}@{eps!r}"]
                hit = standing & ~after
                broken_by[hit], norms[hit] = i, outputs[f"norm_{name}@{eps!r}"][hit]
                standing = after
            out[f"robust@{eps!r}"], out[f"broken_by@{eps!r}"], out[f"norm@{eps!r}"] = standing, broken_by, norms
        return out

    def flags(self, outputs: Outputs) -> list[Flag]:
        found = super().flags(outputs)
        if self.attack.version == "rand":  # already the evaluation for randomized models
            found = [f for f in found if f.code != "randomized"]
        if "square" in self.attack.attacks:
            for eps in self.epsilons:
                broken = outputs[f"broken_by@{eps!r}"] == list(self.attack.attacks).index("square")
                points = 100 * float(broken.mean()) if len(broken) else 0.0
                if points > SQUARE_POINTS:
                    found.append(Flag("square-after-white-box",
                                      f"at {self.attack.norm} eps {eps:g}, the black-box Square attack broke "
                                      f"{int(broken.sum())}/{len(broken)} examples ({points:.1f} points) that every "
                                      "white-box attack failed on: the gradients are likely masked",
                                      {"eps": eps, "examples": int(broken.sum()), "n": len(broken), "points": points}))
        return found


class EnsembleStage(Threat):
    """One attack of the ensemble at one eps: it attacks the examples still robust after the stage it
    continues (`after`; the first stage: those correct on clean input) and says which are still robust
    (``after_<name>@eps``) and the norm of the perturbation that broke the others (``norm_<name>@eps``).
    Its random stream is derived from the shard's seed, the eps and the attack's name."""

    kind = Kind.INPUT_ATTACK

    def __init__(self, attack: Attack, name: str, eps: float, after: str | None):
        self.attack, self.name, self.eps, self.after = attack, name, eps, after

    @property
    def cost(self) -> float:
        return 1 + self.attack.forward_passes

    def evaluate_shard(self, model, x, y, generator) -> Outputs:
        out: Outputs = {}
        if self.previous is None:
            standing = predict(model, x).argmax(1) == y
            out["clean_correct"] = standing.cpu().numpy()
        else:
            before = self.after.rsplit("/", 1)[-1]  # the attack this stage continues
            # a copy: on Ray the earlier stage's outputs arrive as read-only arrays
            standing = torch.tensor(self.previous[f"after_{before}@{self.eps!r}"], device=x.device)
        norms = torch.full((len(x),), torch.nan, device=x.device)
        idx = (standing & ~self.verified(model, x, y)).nonzero().squeeze(1)
        if len(idx):
            stream = derived(derived(generator, "eps", self.eps), self.name)
            result = self.attack(model, x[idx], y[idx], eps=self.eps, generator=stream)
            hit = idx[result.success]
            norms[hit] = perturbation_norm(result.adversarial[result.success] - x[hit], self.attack.norm).float()
            standing = standing.clone()
            standing[hit] = False
        out[f"after_{self.name}@{self.eps!r}"] = standing.cpu().numpy()
        out[f"norm_{self.name}@{self.eps!r}"] = norms.cpu().numpy()
        return out

    def verified(self, model, x, y) -> torch.Tensor:
        """Which examples IBP verifies at the stage's eps (in Linf; none for L2 or a model it cannot read)."""
        none = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        if self.attack.norm != "linf" or not len(x):
            return none
        try:
            return certified_margins(model, x, y, self.eps, "ibp") > 0
        except CannotBound:
            return none

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        raise NotImplementedError("a stage is summarized by its ensemble (AutoAttackThreat)")
