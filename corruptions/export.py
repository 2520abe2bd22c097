"""`robench corrupt`: write a corruption suite over a dataset in the suite's official layout, and draw a
preview grid. Any image size and channel count; the work is done by robench.corruptions.suite."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from robench.corruptions.suite import CorruptionSuite, export_corruptions, suite_corruptions
from robench.data import load_dataset
from robench.registry import CORRUPTIONS
from robench.seeding import derived


def export_suite(suite: str, dataset: str, split: str, out_dir: str | os.PathLike, data_root: str | None = None,
                 seed: int = 0, progress: bool = True) -> Path:
    """Corrupt a dataset split ('train', 'test' or 'all') with every corruption of `suite` (a registered
    CorruptionSuite such as "mnist-c", written in its official layout, or one corruption's name, written
    as OUT_DIR/<corruption>/<split>_images.npy (uint8 N x H x W x C) and <split>_labels.npy), each file
    atomically. The same seed gives the same files."""
    entry = CORRUPTIONS.get(suite)
    if isinstance(entry, type) and issubclass(entry, CorruptionSuite):
        return entry().export(dataset, split, out_dir, data_root=data_root, seed=seed, progress=progress)
    return export_corruptions(suite_corruptions(suite), dataset, split, out_dir, data_root=data_root, seed=seed,
                              progress=progress, title=suite)


def layout(suite: str) -> str:
    """Where `export_suite` puts the files of `suite`, with OUT for the output folder."""
    entry = CORRUPTIONS.get(suite)
    return (entry if isinstance(entry, type) and issubclass(entry, CorruptionSuite) else CorruptionSuite).layout


def preview(out_png: str | os.PathLike, suite: str = "mnist-c", dataset: str = "mnist", split: str = "test",
            n: int = 8, data_root: str | None = None, seed: int = 0) -> Path:
    """A PNG grid: the first `n` images of the split, clean and under each corruption of `suite`."""
    from robench.plots import corruption_grid

    data = load_dataset(dataset, split, data_root).select(n=n)
    base = torch.Generator().manual_seed(seed)
    rows = {"clean": data.x}
    rows.update({name: c(data.x, derived(base, name)) for name, c in suite_corruptions(suite).items()})
    return corruption_grid({k: v.permute(0, 2, 3, 1).numpy() for k, v in rows.items()}, out_png,
                           title=f"{suite} on {dataset} {split}")
