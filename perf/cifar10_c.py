"""Throughput of the CIFAR-10-C corruptions against imagecorruptions (the maintained library of the
ImageNet-C corruptions), side by side in one process on the same CIFAR-10 test images.

    ROBENCH_DATA=/path/to/data python perf/cifar10_c.py [--n 100] [--severity 3] [--repeat 3] [--threads 1]

imagecorruptions corrupts one image at a time with the ImageNet-C settings (it has no CIFAR-10 ones);
robench runs batched, with the CIFAR-10-C settings and, where a corruption takes the setting as data, with
imagecorruptions' own (the same work). Ratios are imagecorruptions' time over robench's (best wall time
of --repeat runs).

Recorded (one process on a 2-core machine shared with a training job, nice 19, torch threads 1,
`nice -n 19 python perf/cifar10_c.py`: n=100, severity 3, best of 3):

    corruption         robench s same-set s imagecorr s   ratio same-set
    gaussian_noise         0.002      0.002       0.009    4.4x     4.3x
    shot_noise             0.015      0.017       0.023    1.5x     1.3x
    impulse_noise          0.007      0.006       0.011    1.6x     1.9x
    defocus_blur           0.005      0.032       0.023    4.8x     0.7x
    glass_blur             0.017      0.024       1.660   99.6x    70.0x
    motion_blur            0.007      0.015       0.094   12.7x     6.5x
    zoom_blur              0.029      0.019       0.262    8.9x    13.6x
    snow                   0.011      0.011       0.069    6.2x     6.1x
    frost                  0.004      0.005       0.651  152.5x   136.1x
    fog                    0.005      0.005       0.063   12.7x    12.6x
    brightness             0.003      0.003       0.042   16.4x    16.9x
    contrast               0.002      0.002       0.007    3.6x     3.9x
    elastic_transform      0.019      0.034       0.041    2.2x     1.2x
    pixelate               0.007      0.008       0.004    0.6x     0.5x
    jpeg_compression       0.017      0.015       0.013    0.8x     0.9x
    all 15                 0.150      0.197       2.972   19.8x    15.1x

With --n 1000 --repeat 1 the suite is 20.3x (CIFAR-10 settings). imagecorruptions is slowest where it
loops in Python (glass blur's swaps) or rereads and resizes a frost photograph per image; the noises,
contrast, pixelate and JPEG are a few numpy or Pillow calls per image there, whose work (sampling,
libjpeg, Pillow's resampling) robench does as well, so they gain little or nothing.
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
    print(f"{'corruption':18s} {'robench s':>9s} {'same-set s':>10s} {'imagecorr s':>11s} {'ratio':>7s} "
          f"{'same-set':>8s}")
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
