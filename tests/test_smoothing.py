"""Randomized smoothing: the statistics of PREDICT and CERTIFY on synthetic base classifiers with known
class probabilities, the smoothing threat, the certify files, and SmoothAdv."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from torch import nn

from robench.attacks.smoothadv import SmoothAdv
from robench.defenses.smoothing import ABSTAIN, Smooth, SmoothingThreat, certify, max_radius
from robench.errors import RobenchError
from robench.threats import build_threat


class Threshold(nn.Module):
    """Class 0 where the first pixel of the (noisy, clipped) input exceeds `t`, else class 1. On an image
    whose first pixel is 0.5, smoothed with sigma, P(class 0) = Phi((0.5 - t) / sigma) (for 0 < t < 1)."""

    def __init__(self, t: float):
        super().__init__()
        self.t = t

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        above = (z.flatten(1)[:, 0] > self.t).float()
        return torch.stack([above, 1 - above], dim=1)


class Rows(nn.Module):
    """Ignores the input values: in every batch, the first counts[0] rows vote class 0, the next counts[1]
    class 1, and so on (so one batch of sum(counts) rows gives exactly these counts)."""

    def __init__(self, counts: list[int]):
        super().__init__()
        self.labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(self.labels[:len(z)], len(self.labels.unique()) + 1).float()


class Halves(nn.Module):
    """Class 0 when the left half of an image is brighter than the right half, else class 1."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        left, right = z.chunk(2, dim=3)
        d = 50 * (left.mean((1, 2, 3)) - right.mean((1, 2, 3)))
        return torch.stack([d, -d], dim=1)


def half_image() -> torch.Tensor:
    return torch.full((1, 1, 1), 0.5)


def halves_data(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 images whose brighter half (0.6 against 0.4) gives the label of `Halves`; the L2 distance to
    the decision boundary is 0.1 * 8 = 0.8."""
    y = torch.arange(n) % 2
    x = torch.full((n, 1, 8, 8), 0.4)
    x[y == 0, :, :, :4] = 0.6
    x[y == 1, :, :, 4:] = 0.6
    return x, y


def test_radius_never_exceeds_the_bound_and_reaches_it_when_unanimous(generator):
    sigma, n, alpha = 0.25, 1000, 0.001
    bound = sigma * stats.norm.ppf(alpha ** (1 / n))
    assert max_radius(sigma, n, alpha) == pytest.approx(bound)
    unanimous = Smooth(Threshold(-1.0), 2, sigma)  # always class 0
    label, radius = unanimous.certify(half_image(), 10, n, alpha, 500, generator)
    assert label == 0 and radius == pytest.approx(bound, rel=1e-9)
    for t in (0.2, 0.4, 0.45):
        label, radius = Smooth(Threshold(t), 2, sigma).certify(half_image(), 10, n, alpha, 500, generator)
        assert radius <= bound + 1e-12


def test_radius_matches_the_closed_form_for_known_counts(generator):
    """With exactly n_a of n votes for the top class, radius = sigma * Phi^-1(p), p solving
    P(Binomial(n, p) >= n_a) = alpha (found here by root search, independently of scipy's beta)."""
    sigma, n, alpha = 0.5, 2000, 0.01
    for n_a in (1100, 1500, 1990):
        smooth = Smooth(Rows([n_a, n - n_a]), 3, sigma)
        label, radius = smooth.certify(torch.zeros(1, 2, 2), n, n, alpha, n, generator)
        p = optimize.brentq(lambda q: stats.binom.sf(n_a - 1, n, q) - alpha, 1e-9, 1 - 1e-12, xtol=1e-14)
        assert label == 0 and radius == pytest.approx(sigma * stats.norm.ppf(p), abs=1e-6)
    label, radius = Smooth(Rows([1000, n - 1000]), 3, sigma).certify(torch.zeros(1, 2, 2), n, n, alpha, n, generator)
    assert (label, radius) == (ABSTAIN, 0.0)  # 1000/2000 cannot give a lower bound >= 0.5


def test_radius_tends_to_the_true_radius(generator):
    """With many samples the certified radius approaches sigma * Phi^-1(pA) from below."""
    sigma, t = 0.25, 0.3
    true_radius = sigma * stats.norm.ppf(stats.norm.cdf((0.5 - t) / sigma))  # = 0.5 - t
    label, radius = Smooth(Threshold(t), 2, sigma).certify(half_image(), 100, 200_000, 0.001, 50_000, generator)
    assert label == 0 and true_radius - 0.02 < radius <= true_radius


def test_wrong_certificates_are_at_most_alpha():
    """A certificate is wrong if it names a class other than g's or a radius beyond the true one; over
    many independent certifications its rate must not be significantly above alpha."""
    sigma, t, alpha, trials = 0.5, 0.25, 0.1, 3000
    p_a = stats.norm.cdf((0.5 - t) / sigma)  # about 0.69
    true_radius = sigma * stats.norm.ppf(p_a)
    smooth = Smooth(Threshold(t), 2, sigma)
    g = torch.Generator().manual_seed(1)
    wrong = certified = 0
    for _ in range(trials):
        label, radius = smooth.certify(half_image(), 10, 100, alpha, 100, g)
        if label != ABSTAIN:
            certified += 1
            wrong += label != 0 or radius > true_radius
    assert certified > trials / 3  # the test has power: most trials certify
    assert stats.binom.sf(wrong - 1, trials, alpha) > 1e-3, f"{wrong} wrong of {trials}"
    assert wrong / trials > alpha / 4  # and is not vacuous: the bound is tight, not far below alpha


@pytest.mark.parametrize("n_a,n_b", [(60, 40), (64, 36), (65, 35), (70, 30), (80, 20), (50, 50), (30, 1)])
def test_predict_abstains_exactly_when_the_p_value_exceeds_alpha(n_a, n_b, generator):
    alpha = 0.01
    smooth = Smooth(Rows([n_b, n_a, 3]), 4, 0.25)  # class 1 on top, class 0 runner-up, class 2 third
    n = n_a + n_b + 3
    p_value = min(1.0, 2 * stats.binom.cdf(min(n_a, n_b), n_a + n_b, 0.5))  # two-sided, symmetric
    expected = ABSTAIN if p_value > alpha else 1
    assert smooth.predict(torch.zeros(1, 2, 2), n, alpha, n, generator) == expected


def test_noise_is_seeded_and_drawn_in_batches():
    smooth = Smooth(Threshold(0.45), 2, 0.25)
    a = smooth.counts(half_image(), 1000, 1000, torch.Generator().manual_seed(3))
    b = smooth.counts(half_image(), 1000, 1000, torch.Generator().manual_seed(3))
    c = smooth.counts(half_image(), 1000, 7, torch.Generator().manual_seed(3))
    assert (a == b).all() and a.sum() == c.sum() == 1000


def test_smoothing_threat_and_certify_files(tmp_path):
    threat = build_threat("smoothing:sigma=0.25,n0=20,n=200,alpha=0.01,radii=0|0.25|0.5,batch=200")
    assert isinstance(threat, SmoothingThreat)
    x, y = halves_data(12)
    out = threat.evaluate_shard(Halves(), x, y, torch.Generator().manual_seed(0))
    assert set(out) == {"label", "predict", "radius", "correct", "time"} and all(len(v) == 12 for v in out.values())
    assert (out["radius"] <= max_radius(0.25, 200, 0.01) + 1e-9).all()
    assert ((out["predict"] == ABSTAIN) <= (out["radius"] == 0)).all()
    summary = threat.summarize(out)
    acc = summary["certified_accuracy"]
    assert acc["0.0"]["value"] == 1 and acc["0.25"]["value"] > 0.5 and acc["0.5"]["value"] < 0.5
    assert summary["clean_accuracy"]["value"] == acc["0.0"]["value"]
    assert summary["average_certified_radius"] == pytest.approx(np.where(out["correct"], out["radius"], 0).mean())

    result = certify(Halves(), x, y, tmp_path / "cert.tsv", indices=range(100, 112), sigma=0.25,
                     n0=20, n=200, alpha=0.01, batch=200, radii=(0.0, 0.5))
    lines = (tmp_path / "cert.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["idx", "label", "predict", "radius", "correct", "time", "samples"] and len(lines) == 13
    assert lines[1].startswith("100\t0\t0\t")
    assert (tmp_path / "cert_certified.tsv").read_text().startswith("radius\tcertified_accuracy")
    assert (tmp_path / "cert_certified.png").stat().st_size > 1000
    assert json.loads((tmp_path / "cert_summary.json").read_text())["average_certified_radius"] == \
        result["average_certified_radius"]


def test_reduced_precision_gives_the_same_votes_on_a_clear_case(generator):
    smooth = Smooth(Threshold(-1.0), 2, 0.25, precision="bf16")
    assert smooth.certify(half_image(), 10, 100, 0.01, 100, generator)[0] == 0
    with pytest.raises(RobenchError):
        Smooth(Threshold(0.5), 2, 0.25, precision="int4")


def test_smoothadv_stays_in_the_ball_and_breaks_the_smoothed_classifier():
    x, y = halves_data(16)
    smooth = Smooth(Halves(), 2, 0.25, samples=64)
    assert (smooth(x).argmax(1) == y).all()
    g = torch.Generator().manual_seed(0)
    weak = SmoothAdv(m=8, steps=10)(smooth, x, y, eps=0.4, generator=g)
    strong = SmoothAdv(m=8, steps=10)(smooth, x, y, eps=1.2, generator=g)
    for result, eps in ((weak, 0.4), (strong, 1.2)):
        norms = (result.adversarial - x).flatten(1).norm(dim=1)
        assert (norms <= eps + 1e-4).all() and result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    assert not weak.success.any() and strong.success.all()  # the boundary is 0.8 away
    with pytest.raises(RobenchError, match="Smooth"):
        SmoothAdv()(Halves(), x, y, eps=0.5)


def test_smoothadv_threat_evaluates_the_smoothed_model():
    threat = build_threat("smoothadv:eps=0|1.2,sigma=0.25,m=4,steps=10,samples=32")
    x, y = halves_data(8)
    summary = threat.summarize(threat.evaluate_shard(Halves(), x, y, torch.Generator().manual_seed(0)))
    robust = summary["robust_accuracy"]
    assert robust["0.0"]["value"] == summary["clean_accuracy"]["value"] == 1 and robust["1.2"]["value"] == 0
    assert summary["sigma"] == 0.25


def test_noisy_copies_that_do_not_fit_are_forwarded_in_halves_and_count_the_same(embedded_model, embedded_test,
                                                                                 small_memory, capsys):
    x = torch.as_tensor(embedded_test.select(n=1).x)[0]
    limited = Smooth(small_memory(embedded_model, 300), 10, 0.25)
    counts = limited.counts(x, 2000, 1000, torch.Generator().manual_seed(1))
    assert limited.fits == 250  # 1000 -> 500 -> 250, then kept for the second batch
    assert capsys.readouterr().err.count("noisy copies ran out of memory on cpu") == 2
    ample = Smooth(embedded_model, 10, 0.25).counts(x, 2000, 1000, torch.Generator().manual_seed(1))
    assert counts.sum() == 2000 and (counts == ample).all()  # the same noise draws, forwarded in pieces
