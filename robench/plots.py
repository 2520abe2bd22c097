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
