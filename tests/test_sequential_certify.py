"""Sequential CERTIFY (smoothing mode=sequential): the false-certification rate against a Bernoulli oracle
of known p_A just below each certification threshold, for the sequential and the fixed-n mode, a broken
variant (alpha not split over the looks) that the same check catches, never a radius beyond what fixed n =
n_max allows, and the threat's outputs, files and parameters."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from robench.defenses.smoothing import (ABSTAIN, Smooth, certify, looks_for, lower_confidence_bound, max_radius,
                                        sequential_bound)
from robench.errors import RobenchError
from robench.threats import build_threat

COMMON = "sigma=0.5,n0=10,alpha=0.1,radii=0|0.25|0.5|1"
SPEC = f"smoothing:mode=sequential,n=100,n_max=3200,{COMMON}"
TRIALS = 600
#: the binomial test's level: the false-certification count is "above alpha" when its p-value is below it
LEVEL = 1e-3


class Oracle:
    """draw(m): successes of m Bernoulli(p) draws; keeps the cumulative (successes, draws) after each call."""

    def __init__(self, p: float, rng: np.random.Generator):
        self.p, self.rng, self.seen = p, rng, [(0, 0)]

    def __call__(self, m: int) -> int:
        k = int(self.rng.binomial(m, self.p))
        self.seen.append((self.seen[-1][0] + k, self.seen[-1][1] + m))
        return k


def thresholds(threat) -> list[float]:
    """pA at which each requested radius is reached: Phi(r / sigma)."""
    return [float(stats.norm.cdf(r / threat.sigma)) for r in threat.radii]


def false_certifications(bound, looks, alpha: float, targets: list[float], seed: int = 0) -> list[int]:
    """Per threshold q of `targets`: in TRIALS runs of `bound` on an oracle with p_A = q - 0.001, how often
    the lower bound exceeds p_A (a certificate beyond the true radius, or of an abstaining class)."""
    counts = []
    for j, q in enumerate(targets):
        rng, p = np.random.default_rng([seed, j]), q - 0.001
        counts.append(sum(bound(Oracle(p, rng), looks, alpha, targets)[0] > p for _ in range(TRIALS)))
    return counts


def above_alpha(wrong: int, alpha: float) -> bool:
    """One-sided binomial test: `wrong` of TRIALS is significantly more than alpha."""
    return stats.binom.sf(wrong - 1, TRIALS, alpha) < LEVEL


def test_the_binomial_test_fails_at_twice_alpha():
    """With TRIALS trials the test rejects a rate of 2 alpha (and so any real doubling) almost surely."""
    alpha = build_threat(SPEC).alpha
    critical = next(k for k in range(TRIALS) if above_alpha(k, alpha))
    assert stats.binom.cdf(critical - 1, TRIALS, 2 * alpha) < LEVEL


def test_sequential_false_certification_rate_is_at_most_alpha():
    threat = build_threat(SPEC)
    assert threat.looks == (100, 200, 400, 800, 1600, 3200)
    wrong = false_certifications(sequential_bound, threat.looks, threat.alpha, thresholds(threat))
    assert not any(above_alpha(w, threat.alpha) for w in wrong), wrong
    assert min(wrong) > TRIALS * threat.alpha / 4  # not vacuous: the guarantee is nearly tight


def test_fixed_n_false_certification_rate_is_at_most_alpha():
    """The same check for the paper's CERTIFY: one look of n (what Smooth.certify runs)."""
    threat = build_threat(f"smoothing:n=1000,{COMMON}")
    assert threat.looks == (1000,)
    wrong = false_certifications(sequential_bound, threat.looks, threat.alpha, thresholds(threat))
    assert not any(above_alpha(w, threat.alpha) for w in wrong), wrong
    assert min(wrong) > TRIALS * threat.alpha / 4


def test_the_check_catches_alpha_not_split_over_the_looks():
    """A broken sequential CERTIFY that spends the whole alpha at every look certifies falsely far more
    often than alpha, and the binomial test says so."""
    threat = build_threat(SPEC)

    def unsplit(draw, looks, alpha, targets):
        return sequential_bound(draw, looks, alpha * len(looks), targets)

    wrong = false_certifications(unsplit, threat.looks, threat.alpha, thresholds(threat))
    assert all(above_alpha(w, threat.alpha) for w in wrong), wrong


def test_sequential_never_certifies_what_fixed_n_max_would_not_allow():
    """Whatever pA and draws, the sequential bound is at most fixed-n CERTIFY's bound at alpha on the counts
    of one of the looks it took, hence never a radius above fixed n = n_max's largest; at pA = 1 it stops at
    the first look at which unanimous draws certify the largest radius."""
    threat = build_threat(SPEC)
    targets, rng = thresholds(threat), np.random.default_rng(1)
    ceiling = max_radius(threat.sigma, threat.looks[-1], threat.alpha)
    for p in (0.5, 0.7, 0.85, 0.95, 0.98, 0.995, 0.9999, 1.0):
        for _ in range(40):
            oracle = Oracle(p, rng)
            best, used = sequential_bound(oracle, threat.looks, threat.alpha, targets)
            assert used == oracle.seen[-1][1] and used in threat.looks
            assert best <= max(lower_confidence_bound(k, n, threat.alpha) for k, n in oracle.seen[1:])
            assert threat.sigma * stats.norm.ppf(best) <= ceiling
    best, used = sequential_bound(Oracle(1.0, rng), threat.looks, threat.alpha, targets)
    level = threat.alpha / len(threat.looks)
    assert best >= targets[-1] and used == next(n for n in threat.looks if lower_confidence_bound(n, n, level) >= best)
    assert used < threat.looks[-1]


def test_looks_double_up_to_n_max():
    assert looks_for(1000, 100_000) == (1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 100_000)
    assert looks_for(1000, 4000) == (1000, 2000, 4000)
    assert looks_for(1000, 1000) == (1000,)


class Halves(nn.Module):
    """Class 0 when the left half of an image is brighter than the right half, else class 1."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        left, right = z.chunk(2, dim=3)
        d = 50 * (left.mean((1, 2, 3)) - right.mean((1, 2, 3)))
        return torch.stack([d, -d], dim=1)


def halves_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 images whose brighter half (0.6 against 0.4) gives the label of `Halves` (0.8 from the boundary)."""
    y = torch.arange(n) % 2
    x = torch.full((n, 1, 8, 8), 0.4)
    x[y == 0, :, :, :4] = 0.6
    x[y == 1, :, :, 4:] = 0.6
    return x, y


def test_fixed_mode_is_the_original_certify_on_the_same_noise():
    """mode=fixed (the default) keeps its canonical spec and gives, draw for draw, the authors' CERTIFY:
    class from n0 copies, Clopper-Pearson bound of n fresh copies at alpha."""
    spec = "smoothing:alpha=0.01,batch=100,n=300,n0=20,precision=fp32,radii=0.0|0.25|0.5,sigma=0.25"
    threat = build_threat(spec)
    assert threat.canonical == spec and build_threat(spec + ",mode=fixed").canonical == spec
    x, y = halves_data(6)
    out = threat.evaluate_shard(Halves(), x, y, torch.Generator().manual_seed(5))
    smooth, g = Smooth(Halves(), 2, 0.25), torch.Generator().manual_seed(5)
    for xi, label, radius in zip(x, out["predict"], out["radius"]):
        c_a = int(smooth.counts(xi, 20, 100, g).argmax())
        n_a = int(smooth.counts(xi, 300, 100, g)[c_a])
        p_a = stats.beta.ppf(0.01, n_a, 300 - n_a + 1) if n_a else 0.0
        assert (label, radius) == ((c_a, 0.25 * stats.norm.ppf(p_a)) if p_a >= 0.5 else (ABSTAIN, 0.0))
    assert "samples" not in out and (threat.samples(out) == 320).all()
    assert threat.summarize(out)["mode"] == "fixed"


def test_sequential_threat_outputs_files_and_report(tmp_path):
    threat = build_threat("smoothing:mode=sequential,sigma=0.25,n0=20,n=100,n_max=10000,alpha=0.01,"
                          "radii=0|0.25|0.5,batch=1000")
    x, y = halves_data(8)
    out = threat.evaluate_shard(Halves(), x, y, torch.Generator().manual_seed(0))
    assert set(out) == {"label", "predict", "radius", "correct", "time", "samples"}
    # the boundary is 0.8 away (pA 0.9993): every example certifies 0.5 (Phi(2) needs about 290 unanimous
    # draws at alpha 0.01 / 8) at the look of 400 or 800 copies, and stops there
    assert set(out["samples"]) <= {20 + 400, 20 + 800} and (out["radius"] >= 0.5).all() and out["correct"].all()
    summary = threat.summarize(out)
    assert summary["mode"] == "sequential" and summary["samples_per_example"] == out["samples"].mean()
    assert summary["max_radius"] == pytest.approx(max_radius(0.25, 10000, 0.01 / 8))
    report = threat.report(summary)
    assert "samples/example" in [c.name for c in report.columns] and "sequential CERTIFY" in report.provenance[0]

    certify(Halves(), x, y, tmp_path / "seq.tsv", sigma=0.25, n0=20, n=100, n_max=10000, mode="sequential",
            alpha=0.01, batch=1000, radii=(0.0, 0.5))
    rows = [line.split("\t") for line in (tmp_path / "seq.tsv").read_text().splitlines()]
    assert rows[0] == ["idx", "label", "predict", "radius", "correct", "time", "samples"]
    assert {r[-1] for r in rows[1:]} <= {"420", "820"}


def test_sequential_parameters_are_checked():
    for spec, message in [("smoothing:mode=sequential", "needs n_max"),
                          ("smoothing:n_max=100000", "n_max with mode=sequential only"),
                          ("smoothing:mode=sequential,n=1000,n_max=100", "n_max >= n"),
                          ("smoothing:mode=sequential,n=5,n_max=9", "n_max=9 can never certify"),
                          ("smoothing:mode=anytime", "mode must be one of fixed, sequential")]:
        with pytest.raises(RobenchError, match=message):
            build_threat(spec)
