"""Noise and adversarial robustness side by side (Ford et al. 2019), over a leaderboard's models.

For a linear decision boundary, an error rate mu under isotropic Gaussian noise of standard deviation
sigma puts the input at distance d = -sigma * Phi^-1(mu) from the boundary (the half-space model). Per
model, the analysis sets that prediction, from each noise level of the spec, beside the measured median
minimal L2 adversarial distance; it tests whether the two order the models alike (Spearman's rank
correlation, one-sided) and names the models whose adversarial distance is far above what noise predicts,
Ford et al.'s sign of a defense that masks gradients. It reads the threats' `isotropic_noise` and
`minimal_distance` (robench.threats.Threat), so it shows on any board whose spec has both kinds.

Each model's prediction uses the smallest noise level with an error rate in (0, 1/2); mu counts every
example wrong under noise, clean errors included, as the Record does. The noise is clipped to [0, 1] with
the image, which on MNIST's black background makes it far from isotropic, so the predictions sit well
below the measured distances for every model: a model is named only when its measured / predicted ratio
is more than `MASKING_RATIO` times the median ratio of the board's models."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy import stats

from robench.leaderboard.entries import Leaderboard

#: how many times the board's median measured / predicted ratio a model's ratio must exceed to be named
#: (adversarially robust far beyond what its noise robustness predicts, relative to the other models)
MASKING_RATIO = 2.0
#: the level of the rank-correlation test
ALPHA = 0.05
PAPER = "Ford et al. 2019"
CLAIM = "models robust to Gaussian noise are robust to adversarial perturbations (the half-space model orders them alike)"


@dataclass(frozen=True)
class Point:
    model: str
    predicted: float
    measured: float


@dataclass(frozen=True)
class NoiseAnalysis:
    columns: list[str]
    rows: dict[str, dict[str, Any]]
    points: list[Point]
    #: Spearman's rho, its one-sided p-values (rho > 0, rho < 0) and the verdict; None below 3 models
    rho: float | None
    p_positive: float | None
    p_negative: float | None
    verdict: str
    masking: list[str]

    def summary(self) -> str:
        test = ("fewer than 3 models with both numbers" if self.rho is None else
                f"Spearman's rho {self.rho:.2f} over {len(self.points)} models, one-sided p {self.p_positive:.2g} "
                f"(rho > 0), {self.p_negative:.2g} (rho < 0)")
        named = (f" Measured / predicted above {MASKING_RATIO:g}x the other models' median (adversarially robust "
                 f"far beyond their noise robustness; masked gradients?): {', '.join(self.masking)}."
                 if self.masking else "")
        return f"{PAPER}: {CLAIM}: {self.verdict} ({test}).{named}"


def predicted_distance(sigma: float, accuracy: float) -> float:
    """-sigma * Phi^-1(error rate): infinite without errors, 0 from an error rate of 1/2."""
    error = 1.0 - accuracy
    if error <= 0:
        return math.inf
    return max(0.0, -sigma * float(stats.norm.ppf(error)))


def analysis(lb: Leaderboard) -> NoiseAnalysis | None:
    """The analysis of `lb`'s entries, or None where no entry has both a noise level and an L2 minimal
    distance."""
    from robench.threats import build_threat

    threats = {t: build_threat(t) for t in lb.spec.threats}
    columns: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    points: list[Point] = []
    for model in lb.spec.models:
        row: dict[str, Any] = {}
        levels, measured = [], None
        for t, record in lb.records(model).items():
            if t not in threats:
                continue
            noise = threats[t].isotropic_noise(record["metrics"])
            distance = threats[t].minimal_distance(record["metrics"])
            if noise is not None:
                sigma, acc = noise
                d = predicted_distance(sigma, acc.value)
                row[f"noise σ={sigma:g}"] = acc
                row[f"predicted d (σ={sigma:g})"] = _text(d)
                if 0 < 1 - acc.value < 0.5:
                    levels.append((sigma, d))
            if distance is not None and distance[0] == "l2" and measured is None:
                _, median, (lo, hi) = distance
                measured = math.inf if median is None else median
                row["median min L2 distance"] = f"{_text(measured)} [{_text(lo)}, {_text(hi)}]"
        if measured is None or not any(c.startswith("noise") for c in row):
            continue
        predicted = min(levels)[1] if levels else None
        ratio = measured / predicted if predicted and math.isfinite(measured) else None
        row["measured / predicted"] = "-" if ratio is None else f"{ratio:.2f}"
        if ratio is not None:
            points.append(Point(model, predicted, measured))
        rows[model] = row
        columns += [c for c in row if c not in columns]
    if not rows:
        return None
    masking = outliers({p.model: p.measured / p.predicted for p in points})
    rho = p_pos = p_neg = None
    verdict = "inconclusive at this n"
    if len(points) >= 3:
        x, y = [p.predicted for p in points], [p.measured for p in points]
        rho = float(stats.spearmanr(x, y).statistic)
        p_pos = float(stats.spearmanr(x, y, alternative="greater").pvalue)
        p_neg = float(stats.spearmanr(x, y, alternative="less").pvalue)
        verdict = "supported" if p_pos < ALPHA else "contradicted" if p_neg < ALPHA else verdict
    first = [c for c in columns if c.startswith("noise")] + [c for c in columns if c.startswith("predicted")]
    return NoiseAnalysis(first + [c for c in columns if c not in first], rows, points, rho, p_pos, p_neg, verdict,
                         masking)


def outliers(ratios: dict[str, float]) -> list[str]:
    """The models whose ratio exceeds `MASKING_RATIO` times the median ratio of the others (3 models or more)."""
    import statistics

    if len(ratios) < 3:
        return []
    return [m for m, r in ratios.items()
            if r > MASKING_RATIO * statistics.median(v for k, v in ratios.items() if k != m)]


def _text(value: float | None) -> str:
    if value is None or math.isinf(value):
        return "inf"
    return f"{value:.2f}"
