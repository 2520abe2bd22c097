"""Figures. Every function writes a PNG and returns its path; matplotlib runs headless (Agg). Accuracies
come in as fractions in [0, 1] (as the metrics hold them) and are drawn in %, the unit of every table."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save `fig` as a PNG whose text chunks repeat what it shows: Title (the title), Description (the axis
    labels and the legend), so that a reader or a test can tell the figure apart without looking at it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ax = fig.axes[0]
    legend = ax.get_legend()
    entries = [t.get_text() for t in legend.get_texts()] if legend else []
    described = {"Title": ax.get_title() or fig.get_suptitle(),
                 "Description": f"x: {ax.get_xlabel()}; y: {ax.get_ylabel()}; legend: {'; '.join(entries)}"}
    fig.savefig(path, dpi=dpi, metadata=described)
    plt.close(fig)
    return path


def _pct(value: float | None) -> float | None:
    """A fraction in % (None stays None)."""
    return None if value is None else 100 * value


def _finish(fig, ax, path: str | Path, grid_axis: str = "both", legend: dict | None = None) -> Path:
    """Grid, the accuracy axis in %, legend and tight layout, then save: the common end of every line or bar
    chart (`legend`: keyword arguments of Axes.legend)."""
    ax.grid(axis=grid_axis, alpha=0.3)
    ax.set_ylim(0, 102)
    ax.legend(fontsize=8, **(legend or {}))
    fig.tight_layout()
    return _save(fig, path)


def curves(series: dict[str, Sequence[tuple]], path: str | Path, *, xlabel: str, ylabel: str = "accuracy (%)",
           title: str = "") -> Path:
    """Lines of y (a fraction, drawn in %) against x, one per name; each point is (x, y) or (x, y, ci_lo,
    ci_hi), the interval drawn as a band where known (robench.report.Curve points)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, points in series.items():
        points = sorted(points, key=lambda p: p[0])
        xs = [p[0] for p in points]
        ax.plot(xs, [_pct(p[1]) for p in points], marker="o" if len(points) < 30 else None, label=name)
        banded = [p for p in points if len(p) >= 4 and p[2] is not None and p[3] is not None]
        if banded:
            ax.fill_between([p[0] for p in banded], [_pct(p[2]) for p in banded], [_pct(p[3]) for p in banded],
                            alpha=0.2)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return _finish(fig, ax, path)


def certified_accuracy_curve(curves: dict[str, tuple[Sequence[float], Sequence[bool]]], path: str | Path,
                             *, title: str = "", xlabel: str = "radius") -> Path:
    """Certified accuracy (correct and radius >= r, in %) against the radius r, one line per model, with a
    95% Clopper-Pearson band; each curve is (per-example radius, per-example correct). The title gets the
    number of examples."""
    import numpy as np

    from robench.metrics import clopper_pearson

    fig, ax = plt.subplots(figsize=(5.5, 4))
    top = max([float(np.max(r)) for r, _ in curves.values() if len(r)] + [1e-3]) * 1.05
    grid = np.linspace(0.0, top, 200)
    for name, (radius, correct) in curves.items():
        radius, correct = np.asarray(radius, dtype=float), np.asarray(correct, dtype=bool)
        hits = [int((correct & (radius >= r)).sum()) for r in grid]
        bands = [clopper_pearson(k, len(radius)) for k in hits]
        ax.plot(grid, [100 * k / max(len(radius), 1) for k in hits], label=name)
        ax.fill_between(grid, [_pct(b[0]) for b in bands], [_pct(b[1]) for b in bands], alpha=0.2)
    sizes = ", ".join(dict.fromkeys(str(len(r)) for r, _ in curves.values()))
    ax.set(xlabel=xlabel, ylabel="certified accuracy (%)", title=f"{title}\n{sizes} examples" if title else
           f"{sizes} examples")
    return _finish(fig, ax, path)


def corruption_grid(rows: dict[str, Sequence], path: str | Path, *, title: str = "") -> Path:
    """Example images, one row per corruption: each value is (n, H, W, C) float in [0, 1], C 1 or 3."""
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(0.9 * n + 1.4, 0.9 * len(rows) + 0.4), squeeze=False)
    for axrow, (name, images) in zip(axes, rows.items()):
        for j, ax in enumerate(axrow):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
            if j < len(images):
                image = images[j]
                ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        axrow[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight() if title else 1))
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.1 / fig.get_figheight(), va="top")
    return _save(fig, path, dpi=100)


def bars(series: dict[str, dict[str, tuple]], path: str | Path, *, xlabel: str, ylabel: str = "accuracy (%)",
         title: str = "") -> Path:
    """y (a fraction, drawn in %) per category, series side by side: series[name][category] = (y, ci_lo,
    ci_hi), the interval as error bars where known; the legend right of the bars."""
    names = list(dict.fromkeys(c for per in series.values() for c in per))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) * max(len(series), 1) + 1.5), 4))
    for k, (label, per) in enumerate(series.items()):
        shown = [c for c in names if c in per]
        xs = [i + (k - (len(series) - 1) / 2) * width for i, c in enumerate(names) if c in per]
        ys = [_pct(per[c][0]) for c in shown]
        lo = [_pct(per[c][0] - per[c][1]) if per[c][1] is not None else 0.0 for c in shown]
        hi = [_pct(per[c][2] - per[c][0]) if per[c][2] is not None else 0.0 for c in shown]
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=label)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return _finish(fig, ax, path, grid_axis="y",
                   legend=dict(loc="upper left", bbox_to_anchor=(1.005, 1.0)))


def bitflip_curve(attack: Sequence[tuple[int, float]], random: Sequence[Sequence[tuple[int, float]]],
                  path: str | Path, *, start: float | None = None, target: float | None = None,
                  title: str = "") -> Path:
    """Accuracy against the number of bit flips: the attack's (flips, accuracy) points beside the median
    of the random-flip runs (with their min-max band); `start` is the accuracy at 0 flips. Accuracies are
    fractions, drawn in %."""
    from statistics import median

    fig, ax = plt.subplots(figsize=(5.5, 4))
    head = [(0, start)] if start is not None else []
    points = head + list(attack)
    ax.plot([p[0] for p in points], [_pct(p[1]) for p in points], marker=".", label="bit-flip attack (BFA)")
    if random:
        flips = [p[0] for p in random[0]]
        runs = [[_pct(p[1]) for p in run] for run in random]
        columns = list(zip(*runs))
        ax.plot([p[0] for p in head] + flips, [_pct(p[1]) for p in head] + [median(c) for c in columns],
                label=f"random flips (median of {len(runs)})")
        ax.fill_between(flips, [min(c) for c in columns], [max(c) for c in columns], alpha=0.2)
    if target is not None:
        ax.axhline(_pct(target), color="grey", linestyle="--", linewidth=1, label=f"target {_pct(target):g}%")
    ax.set(xlabel="bit flips", ylabel="accuracy (%)", title=title)
    return _finish(fig, ax, path)
