"""Throughput of the CIFAR-10-C corruptions against imagecorruptions (the maintained library of the
ImageNet-C corruptions), side by side in one process on the same CIFAR-10 test images.

    ROBENCH_DATA=/path/to/data python perf/cifar10_c.py [--n 100] [--severity 3] [--repeat 3] [--threads 1]

imagecorruptions corrupts one image at a time with the ImageNet-C settings (it has no CIFAR-10 ones);
robench runs batched, with the CIFAR-10-C settings and, where a corruption takes the setting as data, with
imagecorruptions' own (the same work). Ratios are imagecorruptions' time over robench's (best wall time
of --repeat runs).

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

from robench.corruptions.cifar10_c import CIFAR10_C, IMAGENET_C_LEVELS, PREFIX
from robench.data import load_dataset
from robench.registry import CORRUPTIONS
from robench.seeding import derived

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


def timed(fn, repeat: int) -> float:
    """The best wall time of `repeat` runs (the machine may be shared)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="CIFAR-10 test images (default 100)")
    parser.add_argument("--severity", type=int, default=3, help="severity 1-5 (default 3)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, the best counts (default 3)")
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
        if name in IMAGENET_C_LEVELS:
            same.level = IMAGENET_C_LEVELS[name][args.severity - 1]
        for corruption in (ours, same):  # warm-up: imports, cached tables
            corruption(x[:4], derived(base, name))
        corrupt(arrays[0], corruption_name=name, severity=args.severity)
        times = np.array([timed(lambda: ours(x, derived(base, name)), args.repeat),
                          timed(lambda: same(x, derived(base, name)), args.repeat),
                          timed(lambda: [corrupt(im, corruption_name=name, severity=args.severity) for im in arrays],
                                args.repeat)])
        totals += times
        print(f"{name:18s} {times[0]:9.3f} {times[1]:10.3f} {times[2]:11.3f} {times[2] / times[0]:6.1f}x "
              f"{times[2] / times[1]:7.1f}x")
    print(f"{'all 15':18s} {totals[0]:9.3f} {totals[1]:10.3f} {totals[2]:11.3f} {totals[2] / totals[0]:6.1f}x "
          f"{totals[2] / totals[1]:7.1f}x")


if __name__ == "__main__":
    main()
