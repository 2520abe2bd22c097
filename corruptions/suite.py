"""Corruption suites: a named set of registered corruptions (MNIST-C is one), each at the suite's severities,
evaluated as one threat with one part per corruption and severity, summarised as the accuracy per part, their
mean and the relative drop from clean accuracy, and exported in the suite's official file layout.

A new suite is a subclass registered under its name::

    @register_suite
    class MySuite(CorruptionSuite):
        name, label = "my-c", "My-C"
        members = ("fog", "zigzag")        # registered corruption names
        severities = (1, 2, 3, 4, 5)       # None: each corruption at its own default severity

Nothing else changes: the threat ``my-c`` (``my-c:corruptions=fog``), its tables and ``robench corrupt
--suite my-c`` follow from the class.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np
import torch

from robench.corruptions.base import Corruption, CorruptionThreat
from robench.data import SPLITS, load_dataset
from robench.errors import RobenchError, unknown_name
from robench.files import atomic_path
from robench.metrics import Accuracy
from robench.progress import bar as progress_bar
from robench.registry import CORRUPTIONS
from robench.seeding import derived

#: images corrupted at once by `export`; part of the seeding, so the files do not depend on memory
CHUNK = 10_000


class SuiteThreat(CorruptionThreat):
    """The threat of a corruption suite: a CorruptionThreat over the suite's parts, labelled with the
    suite's name; with several severities, the summary adds the mean accuracy per severity and per
    corruption (over its severities)."""

    def __init__(self, corruptions: dict[str, Corruption], *, label: str,
                 part_severities: dict[str, tuple[str, int]] | None = None):
        super().__init__(corruptions)
        self.label = label
        #: part name -> (corruption, severity), for a suite evaluated at several severities
        self.part_severities = part_severities

    def summarize(self, outputs):
        metrics = super().summarize(outputs)
        if self.part_severities and "accuracy" in metrics:
            by_severity: dict[int, list[float]] = {}
            by_corruption: dict[str, list[float]] = {}
            for part, acc in metrics["accuracy"].items():
                corruption, severity = self.part_severities[part]
                by_severity.setdefault(severity, []).append(Accuracy.from_json(acc).value)
                by_corruption.setdefault(corruption, []).append(Accuracy.from_json(acc).value)
            metrics["mean_accuracy_per_severity"] = {str(s): float(np.mean(v)) for s, v in sorted(by_severity.items())}
            metrics["mean_accuracy_per_corruption"] = {c: float(np.mean(v)) for c, v in by_corruption.items()}
        return metrics


class CorruptionSuite:
    """A suite of registered corruptions. Subclasses set `name` (registered name), `label` (in table
    titles), `members` (corruption names, in the official order) and `severities` (None: each
    corruption at its own default, as in a published set with one severity per corruption); they may
    override `files` (one file per part) or `export` for their official file layout and set `prefix`. The threat parameter `corruptions` picks some
    of the members ("all": every one)."""

    name: ClassVar[str]
    label: ClassVar[str]
    members: ClassVar[tuple[str, ...]]
    severities: ClassVar[tuple[int, ...] | None] = None
    #: where `export` writes the files (for messages)
    layout: ClassVar[str] = "OUT/<corruption>/<split>_images.npy and _labels.npy"
    #: the members' registered names are prefix + member ("cifar10-c:fog"), where a suite's corruption
    #: shares its name with another suite's
    prefix: ClassVar[str] = ""

    def __init__(self, *, corruptions: tuple[str, ...] = ("all",)):
        names = self.members if tuple(corruptions) == ("all",) else tuple(corruptions)
        for name in names:
            if name not in self.members:
                raise unknown_name(f"{self.label} corruption", name, (*self.members, "all"))
        #: part name -> (corruption name, severity or None)
        self.parts: dict[str, tuple[str, int | None]] = {}
        self.corruptions: dict[str, Corruption] = {}
        for name in dict.fromkeys(names):
            for severity in self.severities or (None,):
                part = self.part_name(name, severity)
                self.parts[part] = (name, severity)
                registered = self.prefix + name
                self.corruptions[part] = (CORRUPTIONS.create(registered) if severity is None
                                          else CORRUPTIONS.create(registered, severity=severity))

    @staticmethod
    def part_name(corruption: str, severity: int | None) -> str:
        """The name of one part: the corruption's name, with "/<severity>" when the suite has severities."""
        return corruption if severity is None else f"{corruption}/{severity}"

    @classmethod
    def as_threat(cls, **params: Any) -> SuiteThreat:
        suite = cls(**params)
        severities = None if cls.severities is None else dict(suite.parts)
        return SuiteThreat(suite.corruptions, label=cls.label, part_severities=severities)

    # -- export ---------------------------------------------------------------------------------------
    def files(self, out: Path, part: str, split: str) -> tuple[Path, Path]:
        """Where the official layout puts the images and the labels of one part and split; the default is
        MNIST-C's (`folder_layout`)."""
        return folder_layout(out, part, split)

    def export(self, dataset: str, split: str, out_dir: str | os.PathLike, data_root: str | None = None,
               seed: int = 0, progress: bool = True) -> Path:
        """Write every part over a dataset split ('train', 'test' or 'all'): see `export_corruptions`."""
        return export_corruptions(self.corruptions, dataset, split, out_dir, data_root=data_root, seed=seed,
                                  progress=progress, files=self.files, title=self.name)


def register_suite(cls: type[CorruptionSuite]) -> type[CorruptionSuite]:
    """Class decorator: register a CorruptionSuite subclass under its `name`."""
    return CORRUPTIONS.register(cls.name, cls)


def _splits(split: str) -> tuple[str, ...]:
    if split == "all":
        return SPLITS
    if split not in SPLITS:
        raise RobenchError(f"split must be one of {', '.join(SPLITS)} or 'all'; got {split!r}.")
    return (split,)


def folder_layout(out: Path, part: str, split: str) -> tuple[Path, Path]:
    """MNIST-C's layout: OUT/<part>/<split>_images.npy and OUT/<part>/<split>_labels.npy."""
    return out / part / f"{split}_images.npy", out / part / f"{split}_labels.npy"


def save_array(path: Path, array: np.ndarray) -> None:
    """`array` as a .npy file at `path`, written atomically (its folder made where missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def corrupted(corruptions: dict[str, Corruption], dataset: str, split: str, data_root: str | None = None,
              seed: int = 0, progress: bool = True, title: str = "corruptions"
              ) -> Iterator[tuple[str, str, np.ndarray, np.ndarray]]:
    """(part name, split, images as uint8 (N, H, W, C), labels) for each of `corruptions` (by part name)
    over each split of `split` ('train', 'test' or 'all'), labels as uint8 where every label fits (else
    int64). The images depend only on the seed, the part, the split and the chunk (not on the layout)."""
    base = torch.Generator().manual_seed(seed)
    for part in _splits(split):
        data = load_dataset(dataset, part, data_root)
        labels = data.labels.numpy()
        labels = labels.astype(np.uint8) if len(labels) == 0 or 0 <= labels.min() and labels.max() < 256 else labels
        bar = progress_bar(corruptions.items(), desc=f"{title} {dataset} {part}", unit="corruption", enabled=progress)
        for name, corruption in bar:
            chunks = []
            for start in range(0, len(data), CHUNK):
                x = data.images[start:start + CHUNK].float().div_(255)
                y = corruption(x, derived(base, f"{name}/{part}/{start}"))
                chunks.append((y * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy())
            yield name, part, np.concatenate(chunks), labels


def export_corruptions(corruptions: dict[str, Corruption], dataset: str, split: str, out_dir: str | os.PathLike,
                       data_root: str | None = None, seed: int = 0, progress: bool = True,
                       files: Callable[[Path, str, str], tuple[Path, Path]] = folder_layout,
                       title: str = "corruptions") -> Path:
    """Corrupt a dataset split ('train', 'test' or 'all') with each of `corruptions` (see `corrupted`) and
    write, each file atomically, the images and the labels where `files(out, part, split)` says (default:
    MNIST-C's layout, `folder_layout`). Any image size and channel count; the same seed gives the same files."""
    out = Path(out_dir)
    for name, part, images, labels in corrupted(corruptions, dataset, split, data_root, seed, progress, title):
        images_path, labels_path = files(out, name, part)
        save_array(images_path, images)
        save_array(labels_path, labels)
    return out


def suite_corruptions(suite: str | Sequence[str]) -> dict[str, Corruption]:
    """Corruptions by part name: a suite ("mnist-c"), one corruption, or a list of corruption names."""
    names = [suite] if isinstance(suite, str) else list(suite)
    out: dict[str, Corruption] = {}
    for name in names:
        entry = CORRUPTIONS.get(name)
        if isinstance(entry, type) and issubclass(entry, Corruption):
            out[name] = entry()
        else:
            out.update(entry().corruptions)
    return out
