import numpy as np
import pytest
from scipy import stats

from robench.metrics import accuracy, brier, calibration, clopper_pearson, ece, ece_ci, nll, paired_ece


def test_clopper_pearson_known_values():
    # the exact interval for 0/10 and 10/10 has the closed form 1 - 0.025**(1/10)
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** 0.1))
    assert clopper_pearson(10, 10) == (pytest.approx(0.025 ** 0.1), 1.0)
    lo, hi = clopper_pearson(930, 1000)
    assert lo == pytest.approx(stats.beta.ppf(0.025, 930, 71)) and hi == pytest.approx(stats.beta.ppf(0.975, 931, 70))


def test_interval_covers_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    p, n = 0.9, 200
    hits = [lo <= p <= hi for lo, hi in (clopper_pearson(int(k), n) for k in rng.binomial(n, p, 2000))]
    assert np.mean(hits) >= 0.95


def test_accuracy_dict():
    acc = accuracy(np.array([True, False, True, True]))
    assert acc["value"] == 0.75 and acc["correct"] == 3 and acc["n"] == 4
    assert acc["ci95"][0] < 0.75 < acc["ci95"][1]


def test_calibration_of_a_perfect_and_a_uniform_predictor():
    labels = np.array([0, 1, 2, 1])
    perfect = np.eye(3)[labels]
    assert nll(perfect, labels) == pytest.approx(0, abs=1e-9)
    assert brier(perfect, labels) == 0 and ece(perfect, labels) == 0
    uniform = np.full((4, 3), 1 / 3)
    assert nll(uniform, labels) == pytest.approx(np.log(3))
    assert brier(uniform, labels) == pytest.approx((2 / 3) ** 2 + 2 / 9)
    # confidence 1/3 everywhere; argmax picks class 0, right once out of 4
    assert ece(uniform, labels) == pytest.approx(abs(1 / 4 - 1 / 3))


def _draw(rng: np.random.Generator, n: int, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax probabilities over 10 classes, and the probabilities a model reports:
    the same (calibrated) at temperature 1, overconfident above 1."""
    logits = rng.normal(0, 3, (n, 10))
    logits -= logits.max(1, keepdims=True)
    truth = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = (truth.cumsum(1) > rng.random((n, 1))).argmax(1)
    reported = np.exp(temperature * logits)
    return reported / reported.sum(1, keepdims=True), labels


def test_ece_is_the_binned_gap_of_guo_et_al():
    probs, labels = _draw(np.random.default_rng(1), 500)
    conf, hit = probs.max(1), probs.argmax(1) == labels
    which = np.minimum((conf * 15).astype(int), 14)
    expected = sum((which == b).mean() * abs(hit[which == b].mean() - conf[which == b].mean())
                   for b in range(15) if (which == b).any())
    assert ece(probs, labels) == pytest.approx(expected)


def test_calibration_intervals_cover_the_population_value():
    """For an overconfident model, the NLL, Brier and ECE intervals from 1000 examples cover the
    population values (from 400,000 draws) at about the nominal rate over 100 repetitions. The ECE
    bootstrap is seeded and its interval narrows with n. (For a calibrated model no ECE interval covers
    the population value 0: the estimate is biased upward.)"""
    rng = np.random.default_rng(0)
    population = calibration(*_draw(rng, 400_000, 2.0))
    covered = {"nll": 0, "brier": 0, "ece": 0}
    for _ in range(100):
        sample = calibration(*_draw(rng, 1000, 2.0))
        for name in covered:
            lo, hi = sample[f"{name}_ci95"]
            covered[name] += lo <= population[name] <= hi
    for name, hits in covered.items():
        assert 0.88 <= hits / 100 <= 0.99, (name, hits)
    probs, labels = _draw(rng, 400)
    assert ece_ci(probs, labels) == ece_ci(probs, labels)
    narrow, wide = ece_ci(probs, labels), ece_ci(probs[:100], labels[:100])
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def _condition(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return probs.max(1), probs.argmax(1) == labels


def test_paired_ece_gives_the_ece_its_interval_and_the_mean_over_conditions():
    rng = np.random.default_rng(3)
    (pa, la), (pb, lb), (pc, lc) = _draw(rng, 300, 2.0), _draw(rng, 300), _draw(rng, 300, 3.0)
    single = paired_ece([_condition(pa, la)], [_condition(pb, lb)], resamples=1000)
    assert single.a == pytest.approx(ece(pa, la)) and single.b == pytest.approx(ece(pb, lb))
    assert list(single.interval_a) == ece_ci(pa, la)  # the same seeded resamples as ece_ci
    mean = paired_ece([_condition(pa, la), _condition(pc, lc)], [_condition(pb, lb)])
    assert mean.a == pytest.approx((ece(pa, la) + ece(pc, lc)) / 2)
    same = paired_ece([_condition(pa, la)], [_condition(pa, la)])
    assert same.p_above == same.p_below == 1.0  # every resample gives a difference of 0
    with pytest.raises(Exception, match="same N"):
        paired_ece([_condition(pa, la)], [_condition(pb[:200], lb[:200])])


def test_paired_ece_rejects_at_about_its_level_under_the_null_and_finds_an_overconfident_model():
    """Two equally overconfident conditions: the one-sided test says "a above b" in about 5% of 200
    repetitions; an overconfident against a calibrated one: nearly always."""
    rng = np.random.default_rng(4)
    null = power = 0
    for _ in range(200):
        a, b, calibrated = _draw(rng, 300, 3.0), _draw(rng, 300, 3.0), _draw(rng, 300)
        null += paired_ece([_condition(*a)], [_condition(*b)], resamples=500).p_above < 0.05
        power += paired_ece([_condition(*a)], [_condition(*calibrated)], resamples=500).p_above < 0.05
    assert null / 200 <= 0.1, null
    assert power / 200 >= 0.9, power
