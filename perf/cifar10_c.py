"""Throughput of the CIFAR-10-C corruptions against imagecorruptions (the maintained library of the
ImageNet-C corruptions), side by side in one process on the same CIFAR-10 test images.

    ROBENCH_DATA=/path/to/data python perf/cifar10_c.py [--n 100] [--severity 3] [--threads 1]

imagecorruptions corrupts one image at a time with the ImageNet-C settings (it has no CIFAR-10 ones);
robench runs batched, with the CIFAR-10-C settings and, where a corruption takes the setting as data, with
imagecorruptions' own (the same work). Ratios are imagecorruptions' time over robench's (wall time).

Recorded (2-core machine shared with a training job, nice 19, torch threads 1, n=100, severity 3):

    corruption             robench s  same-settings s  imagecorruptions s    ratio  same-settings ratio
    (filled in below from the run of the commit that added this script)
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from robench.corruptions.cifar10_c import CIFAR10_C, PREFIX
from robench.data import load_dataset
from robench.registry import CORRUPTIONS
from robench.seeding import derived

#: imagecorruptions' (ImageNet-C) settings at severities 1-5, for the corruptions whose robench `level`
#: has the same form
IMAGENET = {"gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38), "shot_noise": (60, 25, 12, 5, 3),
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


def imagecorruptions():
    """imagecorruptions' ``corrupt``, run on today's numpy (np.float_) and scikit-image (gaussian's multichannel=)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from imagecorruptions import corrupt, corruptions
    import skimage.filters

    np.float_ = np.float64
    corruptions.gaussian = lambda image, sigma, multichannel=None, **kw: skimage.filters.gaussian(
        image, sigma=sigma, channel_axis=-1 if multichannel else None, **kw)
    return corrupt


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="CIFAR-10 test images (default 100)")
    parser.add_argument("--severity", type=int, default=3, help="severity 1-5 (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    corrupt = imagecorruptions()
    x = load_dataset("cifar10", "test").select(n=args.n).x
    arrays = list((x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())  # its input: uint8 HWC
    base = torch.Generator().manual_seed(0)
    print(f"{args.n} CIFAR-10 test images, severity {args.severity}, torch threads {torch.get_num_threads()}")
    print(f"{'corruption':18s} {'robench s':>9s} {'same-set s':>10s} {'imagecorr s':>11s} {'ratio':>7s} {'same-set':>8s}")
    totals = np.zeros(3)
    for name in CIFAR10_C:
        ours = CORRUPTIONS.create(PREFIX + name, severity=args.severity)
        same = CORRUPTIONS.create(PREFIX + name, severity=args.severity)
        if name in IMAGENET:
            same.level = IMAGENET[name][args.severity - 1]
        for corruption in (ours, same):  # warm-up: imports, cached tables
            corruption(x[:4], derived(base, name))
        corrupt(arrays[0], corruption_name=name, severity=args.severity)
        times = np.array([timed(lambda: ours(x, derived(base, name))), timed(lambda: same(x, derived(base, name))),
                          timed(lambda: [corrupt(im, corruption_name=name, severity=args.severity) for im in arrays])])
        totals += times
        print(f"{name:18s} {times[0]:9.3f} {times[1]:10.3f} {times[2]:11.3f} {times[2] / times[0]:6.1f}x "
              f"{times[2] / times[1]:7.1f}x")
    print(f"{'all 15':18s} {totals[0]:9.3f} {totals[1]:10.3f} {totals[2]:11.3f} {totals[2] / totals[0]:6.1f}x "
          f"{totals[2] / totals[1]:7.1f}x")


if __name__ == "__main__":
    main()
