"""Figures. Every function writes a PNG and returns its path; matplotlib runs headless (Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def robustness_curve(curves: dict[str, Sequence[tuple[float, float, float, float]]], path: str | Path,
                     *, xlabel: str = "eps", title: str = "") -> Path:
    """Accuracy against perturbation size, one line per model; each point is (eps, acc, ci_lo, ci_hi)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, points in curves.items():
        points = sorted(points)
        eps = [p[0] for p in points]
        ax.plot(eps, [p[1] for p in points], marker="o", label=name)
        ax.fill_between(eps, [p[2] for p in points], [p[3] for p in points], alpha=0.2)
    ax.set(xlabel=xlabel, ylabel="accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def certified_accuracy_curve(curves: dict[str, tuple[Sequence[float], Sequence[bool]]], path: str | Path,
                             *, title: str = "") -> Path:
    """Certified accuracy (correct and radius >= r) against the L2 radius r, one line per model, with a
    95% Clopper-Pearson band; each curve is (per-example radius, per-example correct)."""
    import numpy as np

    from robench.metrics import clopper_pearson

    fig, ax = plt.subplots(figsize=(5.5, 4))
    top = max([float(np.max(r)) for r, _ in curves.values() if len(r)] + [1e-3]) * 1.05
    grid = np.linspace(0.0, top, 200)
    for name, (radius, correct) in curves.items():
        radius, correct = np.asarray(radius, dtype=float), np.asarray(correct, dtype=bool)
        hits = [int((correct & (radius >= r)).sum()) for r in grid]
        bands = [clopper_pearson(k, len(radius)) for k in hits]
        ax.plot(grid, [k / max(len(radius), 1) for k in hits], label=name)
        ax.fill_between(grid, [b[0] for b in bands], [b[1] for b in bands], alpha=0.2)
    ax.set(xlabel="L2 radius", ylabel="certified accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
