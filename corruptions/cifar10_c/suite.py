"""The CIFAR-10-C suite: its 15 corruptions at severities 1-5, as a `CorruptionSuite`."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from robench.corruptions.cifar10_c.common import PREFIX
from robench.corruptions.suite import CorruptionSuite, corrupted, register_suite, save_array
from robench.errors import RobenchError

#: in the published order (Hendrycks & Dietterich 2019)
CIFAR10_C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
             "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")

#: imagecorruptions' (ImageNet-C) settings at severities 1-5 of the corruptions whose `level` has the same form
#: here, to compare with that library on the same work (tests, perf/cifar10_c.py): ``corruption.level = ...``
IMAGENET_C_LEVELS = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38), "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
    "snow": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
             (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
    "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5), "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "jpeg_compression": (25, 18, 15, 10, 7)}


@register_suite
class Cifar10C(CorruptionSuite):
    """The CIFAR-10-C suite: the chosen corruptions ("all" for the 15), each at severities 1-5."""

    name = "cifar10-c"
    label = "CIFAR-10-C"
    members = CIFAR10_C
    severities = (1, 2, 3, 4, 5)
    prefix = PREFIX
    layout = "OUT/<corruption>.npy (severities 1-5 in turn) and OUT/labels.npy"

    def export(self, dataset: str, split: str, out_dir: str | os.PathLike, data_root: str | None = None,
               seed: int = 0, progress: bool = True) -> Path:
        """The published layout (Hendrycks & Dietterich's release, which RobustBench's loader reads): per
        corruption OUT/<corruption>.npy, uint8 (5 N, H, W, C) with severities 1 to 5 in turn, and
        OUT/labels.npy, the N test labels five times; the test split only, as published. Each severity's
        images are those of the MNIST-C layout's part <corruption>/<severity> at the same seed."""
        if split != "test":
            raise RobenchError(f"CIFAR-10-C is published for the test split only, not {split!r}: give --split test "
                               "(one corruption's name as --suite writes any split in MNIST-C's layout).")
        out, blocks = Path(out_dir), {}
        labels = None
        for part, _, images, labels in corrupted(self.corruptions, dataset, split, data_root, seed, progress, self.name):
            name, severity = self.parts[part]
            blocks.setdefault(name, {})[severity] = images
            if len(blocks[name]) == len(self.severities):
                done = blocks.pop(name)
                save_array(out / f"{name}.npy", np.concatenate([done[s] for s in self.severities]))
        if labels is not None:
            save_array(out / "labels.npy", np.tile(labels, len(self.severities)))
        return out
