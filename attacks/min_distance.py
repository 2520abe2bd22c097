"""The minimal adversarial distance: per example, the smallest perturbation that untargeted FAB (a
minimum-norm attack) finds to change the prediction, with no budget; its median over the examples,
with a distribution-free interval, and the robustness curve the distances give at every eps at once.
Beside the accuracy under Gaussian noise it is the measured half of Ford et al. 2019's comparison of
noise and adversarial robustness (robench.leaderboard.noise).

A misclassified clean example has distance 0; one where FAB finds no adversarial point has distance
infinity (it counts as robust at every eps), so the median is an upper bound of the true one only in
so far as FAB's points are not minimal: a stronger attack can only lower it."""
from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats

from robench.attacks.base import AttackThreat
from robench.attacks.fab import L2FAB, LinfFAB
from robench.attacks.norms import NORM_NAMES, perturbation_norm
from robench.errors import RobenchError
from robench.inference import predict
from robench.metrics import accuracy
from robench.registry import ATTACKS
from robench.report import Column, Curve, Report, number
from robench.threats import Kind, Outputs, Threat

#: the eps of the robustness curve the distances give, per norm (MNIST-sized inputs in [0, 1])
CURVE_STEP = {"l2": 0.25, "linf": 0.025}
CURVE_POINTS = 17


def median_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The distribution-free interval of the median: the order statistics whose ranks a Binomial(n, 1/2)
    puts at (1 - level) / 2 either side (inf where a rank falls on an infinite value)."""
    ordered = np.sort(values)
    n = len(ordered)
    if n == 0:
        return (math.nan, math.nan)
    k = int(stats.binom.ppf((1 - level) / 2, n, 0.5))  # lower rank, 0-based below
    return float(ordered[max(k - 1, 0)]), float(ordered[min(n - k, n - 1)])


@ATTACKS.register("min-distance")
class MinDistance:
    """Minimal adversarial distance in `norm` ("l2" or "linf") by untargeted FAB with `steps` iterations
    and `restarts` runs, without a budget: the median over the examples with its 95% interval, and the
    robust accuracy at every eps of the curve."""

    budget_parameters: dict = {}
    role = None
    strength_parameters = ("steps", "restarts")

    def __init__(self, *, norm: Literal["l2", "linf"] = "l2", steps: int = 100, restarts: int = 1):
        if norm not in ("l2", "linf"):
            raise RobenchError(f"min-distance norm must be l2 or linf; got {norm!r}.")
        if steps < 1 or restarts < 1:
            raise RobenchError(f"min-distance needs steps >= 1 and restarts >= 1; got steps={steps}, restarts={restarts}.")
        self.norm, self.steps, self.restarts = norm, steps, restarts
        self.attack = (L2FAB if norm == "l2" else LinfFAB)(steps=steps, restarts=restarts, early_stop=False)

    @classmethod
    def as_threat(cls, **hyperparameters: Any) -> "MinDistanceThreat":
        return MinDistanceThreat(cls(**hyperparameters))


class MinDistanceThreat(Threat):
    """Per example, the smallest adversarial perturbation untargeted FAB finds (no budget), with the
    attack sanity checks (robench.attacks.checks) as a part."""

    kind = Kind.INPUT_ATTACK
    min_shard_size = AttackThreat.min_shard_size  # FAB batches over examples as every attack does

    def __init__(self, config: MinDistance):
        self.config = config

    @property
    def norm(self) -> str:
        return self.config.norm

    @property
    def deterministic(self) -> bool:  # type: ignore[override]
        return self.config.restarts == 1  # the first run starts from the input itself

    @property
    def cost(self) -> float:
        return 1 + float(self.config.attack.forward_passes)

    def parts(self) -> dict[str, Threat]:
        from robench.attacks.checks import AttackChecks

        return {"": self, "checks": AttackChecks(self.norm, ())}

    def evaluate_shard(self, model, x, y, generator) -> Outputs:
        clean = predict(model, x).argmax(1) == y
        diameter = 1.0 if self.norm == "linf" else math.sqrt(x[0].numel())  # every point of [0, 1]^d is within
        result = self.config.attack(model, x, y, eps=diameter, generator=generator)
        size = perturbation_norm(result.adversarial - x, self.norm)
        distance = torch.where(result.success, size, torch.full_like(size, math.inf))
        distance = torch.where(clean, distance, torch.zeros_like(distance))
        return {"clean_correct": clean.cpu().numpy(), "distance": distance.cpu().numpy()}

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        from robench.attacks.checks import flags

        distance = outputs["distance"]
        clean = outputs["clean_correct"].astype(bool)
        finite = distance[clean & np.isfinite(distance)]
        median = float(np.median(distance)) if len(distance) else math.nan
        step = CURVE_STEP[self.norm]
        curve = {repr(round(k * step, 6)): accuracy(distance > k * step) for k in range(1, CURVE_POINTS)}
        return {"clean_accuracy": accuracy(clean),
                "median_distance": median if math.isfinite(median) else None,
                "median_ci95": [v if math.isfinite(v) else None for v in median_interval(distance)],
                "mean_found_distance": float(finite.mean()) if len(finite) else None,
                "found": accuracy(clean & np.isfinite(distance)),
                "robust_accuracy": curve,
                "flags": [f.to_json() for f in flags(outputs, self.norm, ())]}

    def minimal_distance(self, metrics: dict[str, Any]) -> tuple[str, float | None, tuple]:
        return self.norm, metrics["median_distance"], tuple(metrics["median_ci95"])

    def report(self, metrics: dict[str, Any]) -> Report:
        """Headline: the median distance; details: clean accuracy, the interval, the share of examples
        broken, the mean distance of those; the robustness curve the distances give."""
        from robench.metrics import Accuracy

        norm = NORM_NAMES[self.norm]
        label = f"min {norm} distance"
        clean = Accuracy.from_json(metrics["clean_accuracy"])
        lo, hi = metrics["median_ci95"]
        interval = f"[{_distance(lo)}, {_distance(hi)}]"
        columns = (Column("clean", clean, baseline=True),
                   Column("median", metrics["median_distance"], head="median"),
                   Column("95% interval", interval),
                   Column("broken", Accuracy.from_json(metrics["found"])),
                   Column("mean of broken", metrics["mean_found_distance"]))
        points = [(0.0, clean.value, *clean.interval)] + [
            (float(e), a["value"], *a["ci95"]) for e, a in metrics["robust_accuracy"].items()]
        return Report(label, f"{label}: per example, the smallest perturbation untargeted FAB ({self.config.steps} "
                             f"steps, {self.config.restarts} run{'s' if self.config.restarts > 1 else ''}) finds "
                             "to change the prediction, without a budget (0 where the clean input is "
                             "misclassified, infinite where none is found); the median over the examples with "
                             "its distribution-free 95% interval", columns,
                      (Curve(f"min_distance_curve_{self.norm}", f"robust accuracy from min {norm} distances",
                             f"{norm} eps (pixels in [0, 1])", tuple(points)),))


def _distance(value: float | None) -> str:
    return "inf" if value is None else number(round(value, 3))
