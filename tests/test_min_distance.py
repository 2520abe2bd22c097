"""The minimal adversarial distance threat: exact on a linear model, its median interval, its curve."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from robench.attacks.min_distance import median_interval
from robench.errors import RobenchError
from robench.threats import build_threat


def _linear_case(n: int = 64):
    """A 10-class affine model on interior points (the nearest boundary point stays inside [0, 1]), the
    first 4 labels wrong, and the exact L2 distance of each example to its nearest decision boundary."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    x = 0.3 + 0.4 * torch.rand(n, 1, 28, 28)
    with torch.no_grad():
        z = model(x)
        y = z.argmax(1)
        y[:4] = (y[:4] + 1) % 10
        w = model[1].weight
        gap = (z.gather(1, y[:, None]) - z) / (w[y][:, None, :] - w[None]).norm(dim=2).clamp(min=1e-12)
        gap[torch.arange(n), y] = math.inf
    return model, x, y, gap.min(1).values.clamp(min=0).numpy()


def test_fab_finds_the_exact_l2_distance_to_a_linear_boundary_and_zero_where_misclassified():
    model, x, y, exact = _linear_case()
    threat = build_threat("min-distance:norm=l2")
    assert threat.canonical == "min-distance:norm=l2,restarts=1,steps=100" and threat.deterministic
    out = threat.evaluate_shard(model, x, y, torch.Generator().manual_seed(0))
    assert (out["distance"][:4] == 0).all() and not out["clean_correct"][:4].any()
    ratio = out["distance"][4:] / exact[4:]
    assert ratio.min() >= 1.0 - 1e-4  # never below the true distance (the points are adversarial)
    assert ratio.max() <= 1.01  # and within 1% of it (FAB steps a little past the boundary)


def test_the_summary_gives_the_median_its_interval_and_the_curve_the_distances_imply():
    model, x, y, _ = _linear_case()
    threat = build_threat("min-distance:norm=l2,steps=20")
    out = threat.evaluate_shard(model, x, y, torch.Generator().manual_seed(0))
    out["distance"][10] = math.inf  # an example FAB did not break: robust at every eps
    checks = threat.parts()["checks"].evaluate_shard(model, x, y, torch.Generator().manual_seed(0))
    metrics = threat.summarize({**out, **checks})
    d = out["distance"]
    assert metrics["median_distance"] == pytest.approx(float(np.median(d)))
    lo, hi = metrics["median_ci95"]
    assert lo <= metrics["median_distance"] <= hi
    assert metrics["found"]["correct"] == int((np.isfinite(d) & out["clean_correct"]).sum()) == 64 - 4 - 1
    curve = metrics["robust_accuracy"]
    assert curve["0.25"]["correct"] == int((d > 0.25).sum())
    values = [a["value"] for a in curve.values()]
    assert values == sorted(values, reverse=True) and values[-1] >= 1 / 64  # the unbroken example stays
    assert metrics["flags"] == []  # a linear model passes the sanity checks
    report = threat.report(metrics)
    assert [c.name for c in report.headline] == ["median"] and report.label == "min L2 distance"


def test_median_interval_is_the_order_statistic_interval_and_covers_at_its_level():
    values = np.arange(1.0, 101.0)
    k = int(stats.binom.ppf(0.025, 100, 0.5))
    assert median_interval(values) == (values[k - 1], values[100 - k])
    rng = np.random.default_rng(0)
    covered = sum(lo <= 0 <= hi for lo, hi in (median_interval(rng.normal(size=51)) for _ in range(400)))
    assert 0.92 <= covered / 400 <= 0.99


def test_bad_min_distance_parameters_are_one_line_errors():
    with pytest.raises(RobenchError, match="norm must be one of l2, linf; got 'l1'"):
        build_threat("min-distance:norm=l1")
    with pytest.raises(RobenchError, match="steps >= 1"):
        build_threat("min-distance:steps=0")
