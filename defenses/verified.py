"""Verified Linf accuracy by bound propagation: the certifiers ``ibp``, ``crown-ibp`` and ``crown``.

An example is verified at eps when the model is correct on it and the lower bound of every margin
z_y - z_k (k != y) over the Linf ball of radius eps (clipped to [0, 1]) is positive (robench.defenses.bounds).
CROWN-IBP and CROWN take per margin the tighter of their bound and IBP's: both are sound, and on
IBP-trained networks IBP's is often the tighter (mnist-crown-ibp-0.3, first 1000 test digits, eps 0.3:
87.6% verified by IBP alone, 80.5% by CROWN-IBP alone). Bounds are deterministic and computed on the
device of the input, `batch` examples at a time, in fp32.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from robench.defenses.bounds import certified_margin, margin_bounds
from robench.errors import RobenchError
from robench.inference import check_images, predict
from robench.metrics import Accuracy, accuracy
from robench.registry import CERTIFIERS
from robench.report import Ball, Column, Curve, Report, number
from robench.spec import as_tuple
from robench.threats import Budget, Kind, Outputs, Threat


def certified_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, method: str,
                      batch: int = 100) -> torch.Tensor:
    """The certified margin (N,) of each example over the Linf ball of radius `eps`: per margin the tighter of
    `method`'s lower bound and IBP's, the smallest over k != y; positive: no point of the ball changes the
    prediction from y. Raises CannotBound for a model the bounds cannot read."""
    margins = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            bounds = margin_bounds(model, xb, yb, eps, method)
            if method != "ibp":
                bounds = torch.maximum(bounds, margin_bounds(model, xb, yb, eps, "ibp"))
            margins.append(certified_margin(bounds, yb))
    return torch.cat(margins) if margins else torch.zeros(0, device=x.device)


class BoundThreat(Threat):
    """Verified accuracy at each Linf eps by one bound method; one part per eps."""

    kind = Kind.CERTIFICATION
    deterministic: ClassVar[bool] = True
    budget_parameters: ClassVar[dict] = {"eps": Budget(float)}
    #: the bound method (robench.defenses.bounds.METHODS) and its name in tables
    method: ClassVar[str]
    label: ClassVar[str]
    #: forward passes one example's bounds cost: the most perf/bounds.py measured on the zoo's CNNs
    #: (random weights, eps 0.1, one CPU thread); CROWN's grows with the number of unstable ReLUs
    cost: float = 1.0

    def __init__(self, *, batch: int = 100, precision: str = "fp32"):
        if batch < 1:
            raise RobenchError(f"{self.method} needs batch >= 1; got {batch}.")
        if precision != "fp32":
            raise RobenchError(f"{self.method} computes bounds in fp32 only, not {precision}: a certificate computed "
                               "in low precision is not a certificate (rounding can make a bound wrong); drop "
                               f"precision={precision}.")
        self.batch, self.precision = batch, precision
        self.epsilons: tuple[float, ...] = ()

    @classmethod
    def as_threat(cls, eps: Any, **params: Any) -> "BoundThreat":
        epsilons = tuple(float(e) for e in as_tuple(eps))
        if any(not math.isfinite(e) or not 0 <= e <= 1 for e in epsilons):
            raise RobenchError(f"{cls.method}: eps must lie in [0, 1] (a Linf radius of images in [0, 1]); got "
                               f"{'|'.join(map(str, epsilons))}.")
        threat = cls(**params)
        threat.epsilons = epsilons
        return threat

    def parts(self) -> dict[str, Threat]:
        if len(self.epsilons) == 1:
            return {"": self}
        parts = {}
        for eps in self.epsilons:
            part = type(self)(batch=self.batch, precision=self.precision)
            part.epsilons = (eps,)
            parts[f"eps={eps!r}"] = part
        return parts

    def evaluate_shard(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       generator: torch.Generator) -> Outputs:
        check_images(x, y)
        was_training = model.training
        model.eval()
        try:
            out: Outputs = {"clean_correct": (predict(model, x).argmax(1) == y).cpu().numpy()}
            for eps in self.epsilons:
                margin = certified_margins(model, x, y, eps, self.method, self.batch).double().cpu().numpy()
                out[f"margin@{eps!r}"] = margin
                out[f"verified@{eps!r}"] = out["clean_correct"] & (margin > 0)
        finally:
            model.train(was_training)
        return out

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        return {"clean_accuracy": accuracy(outputs["clean_correct"]),
                "verified_accuracy": {repr(e): accuracy(outputs[f"verified@{e!r}"]) for e in self.epsilons},
                "median_certified_margin": {repr(e): float(np.median(outputs[f"margin@{e!r}"]))
                                            if len(outputs[f"margin@{e!r}"]) else None for e in self.epsilons}}

    def report(self, metrics: dict[str, Any]) -> Report:
        """Headline: verified accuracy per eps; details: clean, verified and the median certified margin
        per eps; the verified curve (clean accuracy at eps 0)."""
        clean = Accuracy.from_json(metrics["clean_accuracy"])
        verified = {float(e): Accuracy.from_json(a) for e, a in metrics["verified_accuracy"].items()}
        columns = [Column("clean", clean, baseline=True)]
        columns += [Column(f"eps {number(e)}", a, head=number(e)) for e, a in verified.items()]
        columns += [Column(f"median margin @{number(e)}", v) for e, v in metrics["median_certified_margin"].items()]
        points = [(0.0, clean.value, *clean.interval)] + [(e, a.value, *a.interval) for e, a in verified.items()]
        return Report(f"{self.label} verified",
                      f"{self.label}: verified Linf accuracy, an example counting when correct and every margin's "
                      "lower bound over the eps ball is positive", tuple(columns),
                      (Curve("verified_curve", f"{self.label} verified", "Linf eps (pixels in [0, 1])",
                             tuple(points)),),
                      notes=(f"{self.label} verified: accuracy certified by {self.label} bounds"
                             f"{'' if self.method == 'ibp' else ' (or IBP bounds, per margin, where tighter)'} at "
                             "that Linf eps (deterministic, sound up to fp32 rounding).",),
                      ball=Ball("linf", "verified", verified))


@CERTIFIERS.register("ibp")
class IBPThreat(BoundThreat):
    """Verified Linf accuracy by interval bound propagation (Gowal et al. 2018), the margin specification
    folded into the last layers."""

    method, label, cost = "ibp", "IBP", 3.5


@CERTIFIERS.register("crown-ibp")
class CrownIBPThreat(BoundThreat):
    """Verified Linf accuracy by CROWN-IBP (Zhang et al. 2020): IBP boxes inside, CROWN's backward linear
    bound of the margins to the input, or IBP's bound where that is tighter."""

    method, label, cost = "crown-ibp", "CROWN-IBP", 50.0
    version = 2  # v2: each margin's bound the tighter of CROWN-IBP's and IBP's (v1: CROWN-IBP's)


@CERTIFIERS.register("crown")
class CrownThreat(BoundThreat):
    """Verified Linf accuracy by CROWN (Zhang et al. 2018): backward linear bounds, the ReLU inputs' boxes
    tightened by CROWN itself where IBP leaves a unit unstable; IBP's bound where that is tighter."""

    method, label, cost = "crown", "CROWN", 1e5
    version = 2  # v2: each margin's bound the tighter of CROWN's and IBP's (v1: CROWN's)
    shard_size: ClassVar[int | None] = 50
