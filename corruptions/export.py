"""Write a corruption suite over a dataset in the official MNIST-C layout, and draw a preview grid."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from robench.corruptions.mnist_c import suite_corruptions
from robench.data import SPLITS, load_dataset
from robench.errors import RobenchError
from robench.seeding import derived

CHUNK = 10_000  # images corrupted at once; part of the seeding, so the output does not depend on memory


def _save_atomic(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _splits(split: str) -> tuple[str, ...]:
    if split == "all":
        return SPLITS
    if split not in SPLITS:
        raise RobenchError(f"split must be one of {', '.join(SPLITS)} or 'all'; got {split!r}.")
    return (split,)


def export_suite(suite: str, dataset: str, split: str, out_dir: str | os.PathLike, data_root: str | None = None,
                 seed: int = 0, progress: bool = True) -> Path:
    """Corrupt a dataset split ('train', 'test' or 'all') with every corruption of `suite` (e.g. "mnist-c",
    or one corruption's name) and write OUT_DIR/<corruption>/<split>_images.npy (uint8 N x H x W x C) and
    <split>_labels.npy (uint8), each file atomically. The same seed gives the same files."""
    corruptions = suite_corruptions(suite)
    out = Path(out_dir)
    base = torch.Generator().manual_seed(seed)
    for part in _splits(split):
        data = load_dataset(dataset, part, data_root)
        labels = data.labels.numpy().astype(np.uint8)
        bar = tqdm(corruptions.items(), desc=f"{suite} {dataset} {part}", disable=not progress, unit="corruption")
        for name, corruption in bar:
            chunks = []
            for start in range(0, len(data), CHUNK):
                x = data.images[start:start + CHUNK].float().div_(255)
                y = corruption(x, derived(base, f"{name}/{part}/{start}"))
                chunks.append((y * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy())
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            _save_atomic(folder / f"{part}_images.npy", np.concatenate(chunks))
            _save_atomic(folder / f"{part}_labels.npy", labels)
    return out


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
