"""The sanity checks of an input-attack evaluation and the flags they raise (robench.flags).

Every attack threat runs, as its own part ``checks`` on each shard, a few cheap probes of the model:
- a randomized forward pass: two forward passes on the same inputs disagree;
- outputs that are probabilities (rows in [0, 1] summing to 1), not logits;
- zero gradients: the cross-entropy gradient at the clean input is exactly 0 (quantised or saturated layers);
- a large budget: a cheap PGD at Linf eps 0.5 (L2 eps sqrt(d) / 2), where every image in [0, 1] can be
  turned into the same gray image, must bring accuracy to ~0;
- random noise of the attack's own size (Linf: random signs +-eps; L2: a random direction of norm eps),
  which lies inside the threat model, so an attack must break at least the examples noise breaks
  (Ford et al. 2019: robustness to noise and to adversarial perturbations go together).
`flags` turns the outputs into Flags with their evidence; `compare` finds those that only comparing an
attack's Record with the model's other Records shows. The Square-after-white-box flag is the ensemble's
(robench.attacks.autoattack).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from robench.flags import Flag
from robench.metrics import Accuracy
from robench.inference import looks_like_probabilities, predict
from robench.seeding import derived
from robench.threats import Kind, Outputs, Threat

#: examples (fraction) a probe must see before it flags; random noise and the large budget state their own
RANDOMIZED_SHARE, PROBABILITY_SHARE, ZERO_GRADIENT_SHARE = 0.01, 0.5, 0.01
#: the accuracy (fraction) above which the large-budget PGD counts as not reaching ~0
LARGE_BUDGET_ACCURACY = 0.05
#: examples (points) broken by random noise that the attack fails on, above which the attack is flagged
NOISE_POINTS = 0.5
LARGE_BUDGET_STEPS = 10


def large_budget(norm: str, x: torch.Tensor) -> float | None:
    """The budget at which any image can be moved to the constant 0.5 image; None for other norms."""
    return {"linf": 0.5, "l2": 0.5 * math.sqrt(x[0].numel())}.get(norm)


class AttackChecks(Threat):
    """The sanity probes of an attack threat in `norm` at `epsilons` (see the module)."""

    kind = Kind.INPUT_ATTACK
    cost = 4 + 3 * LARGE_BUDGET_STEPS

    def __init__(self, norm: str, epsilons: Sequence[float]):
        self.norm, self.epsilons = norm, tuple(epsilons)

    def evaluate_shard(self, model, x, y, generator) -> Outputs:
        from robench.attacks.pgd import L2PGD, LinfPGD

        first, second = predict(model, x), predict(model, x)
        scale = 1 + first.abs().amax(1)
        out: Outputs = {
            "check_randomized": ((first - second).abs().amax(1) > 1e-4 * scale).cpu().numpy(),
            "check_probabilities": looks_like_probabilities(first).cpu().numpy(),
            "check_zero_gradient": _zero_gradient(model, x, y).cpu().numpy()}
        stream = derived(generator, "checks")
        big = large_budget(self.norm, x)
        if big is not None:
            pgd = (LinfPGD if self.norm == "linf" else L2PGD)(steps=LARGE_BUDGET_STEPS)
            result = pgd(model, x, y, eps=big, generator=derived(stream, "large-budget"))
            out["check_large_budget_correct"] = (~result.success).cpu().numpy()
            for eps in self.epsilons:
                noisy = _noise(x, self.norm, eps, derived(stream, "noise", eps))
                out[f"check_noise_correct@{eps!r}"] = (predict(model, noisy).argmax(1) == y).cpu().numpy()
        return out

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        raise NotImplementedError("the checks are summarized by their attack threat (see `flags`)")


def _zero_gradient(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example: the cross-entropy gradient at the input is exactly zero."""
    with torch.enable_grad():
        inputs = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(inputs).float(), y, reduction="sum")
        grad, = torch.autograd.grad(loss, inputs, allow_unused=True)
    if grad is None:  # the output does not depend on the input through autograd at all
        return torch.ones(len(x), dtype=torch.bool, device=x.device)
    return grad.flatten(1).abs().amax(1) == 0


def _noise(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator) -> torch.Tensor:
    """`x` plus random noise of size eps (Linf: random signs; L2: a uniformly random direction), in [0, 1]."""
    if norm == "linf":
        signs = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        return (x + eps * signs).clamp(0, 1)
    g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + eps * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))).clamp(0, 1)


def flags(outputs: Outputs, norm: str, epsilons: Sequence[float]) -> list[Flag]:
    """The flags the checks' outputs raise, given the attack's robust masks (``robust@eps``) in `outputs`."""
    found: list[Flag] = []
    n = len(outputs["check_randomized"])
    if not n:
        return found
    randomized = int(outputs["check_randomized"].sum())
    if randomized > RANDOMIZED_SHARE * n:
        found.append(Flag("randomized", f"two forward passes disagree on {randomized}/{n} examples: the model is "
                          "randomized, so a deterministic attack overstates its robustness; evaluate it with "
                          "autoattack version=rand (gradients averaged over 20 draws, EOT)",
                          {"examples": randomized, "n": n}))
    probabilities = int(outputs["check_probabilities"].sum())
    if probabilities > PROBABILITY_SHARE * n:
        found.append(Flag("probabilities", f"the outputs of {probabilities}/{n} examples are probabilities (in [0, 1], "
                          "summing to 1), not logits: losses on them saturate and gradient attacks weaken; "
                          "evaluate the model without its final softmax", {"examples": probabilities, "n": n}))
    zero = int(outputs["check_zero_gradient"].sum())
    if zero > ZERO_GRADIENT_SHARE * n:
        found.append(Flag("zero-gradient", f"the loss gradient is exactly zero at {zero}/{n} inputs: gradients are "
                          "masked (a non-differentiable or saturated layer), so gradient attacks are blind there; "
                          "trust the black-box attack (Square) or adapt the attack (BPDA)", {"examples": zero, "n": n}))
    if "check_large_budget_correct" in outputs:
        big = float(outputs["check_large_budget_correct"].mean())
        if big > LARGE_BUDGET_ACCURACY:
            eps = "0.5" if norm == "linf" else "sqrt(d)/2"
            found.append(Flag("large-budget", f"at {norm} eps {eps}, where every image can be turned into the same "
                              f"gray image, PGD-{LARGE_BUDGET_STEPS} leaves {100 * big:.1f}% accuracy (it should be "
                              "~0): the attack does not follow the model's gradients",
                              {"accuracy": big, "n": n, "steps": LARGE_BUDGET_STEPS}))
        for eps in epsilons:
            robust, noise = outputs.get(f"robust@{eps!r}"), outputs.get(f"check_noise_correct@{eps!r}")
            if robust is None or noise is None:
                continue
            missed = int(np.sum(robust & ~noise))
            if 100 * missed / n > NOISE_POINTS and missed > 1:
                found.append(Flag("weaker-than-noise", f"at {norm} eps {eps:g}, random noise of that size breaks "
                                  f"{missed}/{n} examples the attack fails on (noise accuracy {100 * noise.mean():.1f}%, "
                                  f"robust accuracy {100 * robust.mean():.1f}%): the attack is weaker than chance",
                                  {"eps": eps, "examples": missed, "n": n, "noise_accuracy": float(noise.mean()),
                                   "robust_accuracy": float(robust.mean())}))
    return found


#: the least rise of robust accuracy (in points, and in examples) that flags a stronger configuration
RISE_POINTS, RISE_EXAMPLES = 0.5, 2


def compare(threat: Any, metrics: dict[str, Any], others: list[tuple[Any, dict[str, Any]]]) -> list[Flag]:
    """The flags an attack threat's `metrics` raise against the other Records of the same model: a
    multi-step attack (`Attack.role` "iterative", e.g. PGD) and the ensemble ("ensemble") disagreeing
    beyond their 95% intervals, and robust accuracy rising with a stronger configuration of the same
    attack (more of its `strength_parameters`, the rest equal)."""
    found: list[Flag] = []
    mine = _robust(metrics)
    for other, their_metrics in others:
        attack = getattr(other, "attack", None)
        if attack is None or getattr(attack, "norm", None) != threat.attack.norm:
            continue
        theirs = _robust(their_metrics)
        for eps in sorted(mine.keys() & theirs.keys(), key=float):
            a, b = mine[eps], theirs[eps]
            roles = {getattr(threat.attack, "role", None), getattr(attack, "role", None)}
            if roles == {"iterative", "ensemble"} and _apart(a, b):
                single, ensemble = (a, b) if threat.attack.role == "iterative" else (b, a)
                found.append(Flag(
                    "attack-vs-ensemble",
                    f"at {threat.attack.norm} eps {eps}, {_label(threat if single is a else other)} ({_pct(single)}) "
                    f"and the ensemble ({_pct(ensemble)}) disagree by more than their 95% intervals: trust the "
                    "lower one and check the attack's settings", {"eps": float(eps), "single": single.to_json(),
                                                                 "ensemble": ensemble.to_json()}))
            if _stronger(threat, other) and a.n == b.n and a.correct - b.correct >= RISE_EXAMPLES \
                    and 100 * (a.correct - b.correct) / a.n > RISE_POINTS:
                found.append(Flag(
                    "rises-with-strength",
                    f"at {threat.attack.norm} eps {eps}, robust accuracy is higher with more "
                    f"{' / '.join(threat.attack.strength_parameters)} ({_pct(a)}, {threat.canonical}) than with "
                    f"fewer ({_pct(b)}, {other.canonical}): the attack is not converging (step size, masking)",
                    {"eps": float(eps), "stronger": threat.canonical, "stronger_accuracy": a.to_json(),
                     "weaker": other.canonical, "weaker_accuracy": b.to_json()}))
    return found


def _robust(metrics: dict[str, Any]) -> dict[str, Accuracy]:
    return {eps: Accuracy.from_json(acc) for eps, acc in metrics.get("robust_accuracy", {}).items()}


def _stronger(threat: Any, other: Any) -> bool:
    """`threat` is `other`'s attack with at least as much of every strength parameter, more of one, and the
    other hyperparameters equal."""
    knobs = threat.attack.strength_parameters
    if not knobs or threat.spec.name != other.spec.name:
        return False
    rest = [{k: v for k, v in t.spec.params.items() if k not in knobs and k != "eps"} for t in (threat, other)]
    mine = [getattr(threat.attack, k) for k in knobs]
    theirs = [getattr(other.attack, k) for k in knobs]
    return rest[0] == rest[1] and mine != theirs and all(m >= t for m, t in zip(mine, theirs))


def _apart(a: Accuracy, b: Accuracy) -> bool:
    return a.interval[1] < b.interval[0] or b.interval[1] < a.interval[0]


def _label(threat: Any) -> str:
    return threat.attack.label or threat.spec.name


def _pct(a: Accuracy) -> str:
    return f"{100 * a.value:.1f}% [{100 * a.interval[0]:.1f}, {100 * a.interval[1]:.1f}]"
