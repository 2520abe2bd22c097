import numpy as np
import pytest
from scipy import stats

from robench.metrics import accuracy, brier, clopper_pearson, ece, nll


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
