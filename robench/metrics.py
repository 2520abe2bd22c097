"""Accuracy with 95% Clopper-Pearson intervals, and calibration metrics (NLL, Brier, ECE)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats

from robench.errors import RobenchError


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for k successes out of n."""
    if n == 0:
        return (0.0, 1.0)
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return (lo, hi)


@dataclass(frozen=True)
class Accuracy:
    """An accuracy: `correct` of `n` examples, `value` = correct / n, and its 95% Clopper-Pearson `interval`.
    Its JSON (in Records, the store and leaderboard entries) is ``{"value", "correct", "n", "ci95"}``."""

    value: float
    correct: int
    n: int
    interval: tuple[float, float]

    @classmethod
    def of(cls, correct: np.ndarray) -> "Accuracy":
        """The accuracy of a boolean per-example mask."""
        correct = np.asarray(correct, dtype=bool)
        k, n = int(correct.sum()), int(correct.size)
        return cls(k / n if n else float("nan"), k, n, clopper_pearson(k, n))

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "correct": self.correct, "n": self.n, "ci95": list(self.interval)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Accuracy":
        """The accuracy stored as `data` (see `to_json`); a RobenchError names what is missing."""
        if not cls.is_json(data):
            raise RobenchError(f"not an accuracy (value, correct, n, ci95): {str(data)[:80]}")
        lo, hi = data["ci95"]
        return cls(data["value"], data["correct"], data["n"], (lo, hi))

    @staticmethod
    def is_json(data: Any) -> bool:
        """True when `data` has the stored layout of an accuracy (exactly the keys value, correct, n, ci95)."""
        return isinstance(data, dict) and data.keys() == _ACCURACY_KEYS


_ACCURACY_KEYS = {"value", "correct", "n", "ci95"}


def accuracy(correct: np.ndarray) -> dict:
    """The JSON of the `Accuracy` of a boolean per-example mask: {value, correct, n, ci95}. Threats
    summarize into JSON; readers turn it back into an Accuracy with `Accuracy.from_json`."""
    return Accuracy.of(correct).to_json()


def accuracies(metrics: Any, prefix: str = "") -> dict[str, Accuracy]:
    """metric path ("robust_accuracy/0.1") -> every accuracy stored in a Record's metrics (JSON)."""
    out: dict[str, Accuracy] = {}
    items = metrics.items() if isinstance(metrics, dict) else enumerate(metrics) if isinstance(metrics, list) else ()
    for key, value in items:
        if Accuracy.is_json(value):
            out[f"{prefix}{key}"] = Accuracy.from_json(value)
        elif isinstance(value, (dict, list)):
            out.update(accuracies(value, f"{prefix}{key}/"))
    return out


def _mean_ci(values: np.ndarray, level: float = 0.95) -> list[float]:
    """Normal-approximation interval of the mean of per-example values."""
    if len(values) < 2:
        return [float("nan"), float("nan")]
    half = stats.norm.ppf(0.5 + level / 2) * values.std(ddof=1) / np.sqrt(len(values))
    return [float(values.mean() - half), float(values.mean() + half)]


def _true_class(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return probs[np.arange(len(labels)), labels]


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels; probs (N, K)."""
    return float(_nll_terms(probs, labels).mean())


def _nll_terms(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(_true_class(probs, labels), 1e-12, 1.0))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over examples of the squared distance between probs (N, K) and the one-hot label."""
    return float(_brier_terms(probs, labels).mean())


def _brier_terms(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return ((probs - onehot) ** 2).sum(axis=1)


def _ece_parts(probs: np.ndarray, labels: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per example: its confidence bin and hit - confidence."""
    return _bins_and_gaps(probs.max(axis=1), probs.argmax(axis=1) == labels, bins)


def _bins_and_gaps(confidence: np.ndarray, hit: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return which, hit - confidence  # in the confidences' precision (float32 for a model's softmax)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error with `bins` equal-width confidence bins (Guo et al. 2017):
    sum over bins of |sum of (hit - confidence) in the bin| / N."""
    return _binned_gap(*_ece_parts(probs, labels, bins), bins)


def ece_of(confidence: np.ndarray, hit: np.ndarray, bins: int = 15) -> float:
    """The ECE of per-example top-class confidences and hits (see `ece`)."""
    return _binned_gap(*_bins_and_gaps(np.asarray(confidence, dtype=float), np.asarray(hit, dtype=bool), bins), bins)


def _binned_gap(which: np.ndarray, gap: np.ndarray, bins: int) -> float:
    return float(np.abs(np.bincount(which, weights=gap, minlength=bins)).sum() / len(gap))


def _resampled_eces(which: np.ndarray, gap: np.ndarray, index: np.ndarray, bins: int) -> np.ndarray:
    """The ECE of each resample: row r of `index` (B, N) picks the examples of resample r."""
    b, n = index.shape
    cells = (np.arange(b)[:, None] * bins + which[index]).ravel()
    sums = np.bincount(cells, weights=gap[index].ravel(), minlength=b * bins).reshape(b, bins)
    return np.abs(sums).sum(1) / n


def _resamples(n: int, resamples: int, seed: int):
    """Bootstrap index rows (examples drawn with replacement; seeded), a block at a time to bound memory."""
    rng = np.random.default_rng(seed)
    per_round = max(1, 2_000_000 // n)
    for start in range(0, resamples, per_round):
        yield rng.integers(0, n, (min(per_round, resamples - start), n))


def ece_ci(probs: np.ndarray, labels: np.ndarray, bins: int = 15, resamples: int = 1000,
           level: float = 0.95, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of the ECE (examples resampled with replacement; seeded)."""
    n = len(labels)
    if n < 2:
        return [float("nan"), float("nan")]
    which, gap = _ece_parts(probs, labels, bins)
    values = np.concatenate([_resampled_eces(which, gap, idx, bins) for idx in _resamples(n, resamples, seed)])
    a = (1 - level) / 2
    return [float(np.quantile(values, a)), float(np.quantile(values, 1 - a))]


@dataclass(frozen=True)
class PairedEce:
    """Two mean ECEs over the same examples (each the mean over its conditions, e.g. the corruptions of a
    suite), their percentile bootstrap 95% intervals, and the one-sided bootstrap p-values of a above b
    and a below b ((1 + resamples against) / (1 + resamples))."""

    a: float
    b: float
    interval_a: tuple[float, float]
    interval_b: tuple[float, float]
    p_above: float
    p_below: float
    resamples: int


def paired_ece(a: Sequence[tuple[np.ndarray, np.ndarray]], b: Sequence[tuple[np.ndarray, np.ndarray]],
               bins: int = 15, resamples: int = 2000, seed: int = 0) -> PairedEce:
    """Compare the mean ECE of the conditions `a` with that of `b`, each condition (confidence, hit) per
    example of the same N examples, by a paired bootstrap: every resample draws one set of examples and
    computes both means on it."""
    sides = [[_bins_and_gaps(np.asarray(c, dtype=float), np.asarray(h, dtype=bool), bins) for c, h in side]
             for side in (a, b)]
    n = len(sides[0][0][1])
    if n < 2 or any(len(gap) != n for side in sides for _, gap in side):
        raise RobenchError(f"a paired ECE test needs every condition on the same N >= 2 examples; got "
                           f"{sorted({len(gap) for side in sides for _, gap in side})}")
    full = [float(np.mean([ece_of(c, h, bins) for c, h in side])) for side in (a, b)]
    draws = [[], []]
    for idx in _resamples(n, resamples, seed):
        for k, side in enumerate(sides):
            draws[k].append(np.mean([_resampled_eces(w, g, idx, bins) for w, g in side], axis=0))
    da, db = (np.concatenate(d) for d in draws)
    diff = da - db
    intervals = [(float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))) for d in (da, db)]
    return PairedEce(full[0], full[1], intervals[0], intervals[1], float((1 + (diff <= 0).sum()) / (1 + resamples)),
                     float((1 + (diff >= 0).sum()) / (1 + resamples)), resamples)


def calibration(probs: np.ndarray, labels: np.ndarray) -> dict:
    """NLL, Brier score and 15-bin ECE with 95% intervals (normal for the two means, bootstrap for ECE)."""
    terms = {"nll": _nll_terms(probs, labels), "brier": _brier_terms(probs, labels)}
    out: dict = {}
    for name, values in terms.items():
        out[name] = float(values.mean())
        out[f"{name}_ci95"] = _mean_ci(values)
    out["ece"] = ece(probs, labels)
    out["ece_ci95"] = ece_ci(probs, labels)
    return out
