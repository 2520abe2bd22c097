"""Throughput of the MNIST-C corruptions (images/s) on MNIST test images, against the original
implementation's figures (shared/data/mnist_c_reference/README.md: one process, 2-core machine).

    ROBENCH_DATA=/path/to/data python perf/mnist_c.py [--n 10000] [--threads 2]

Prints one row per corruption, the whole suite over n images, and the projection to the full dataset
(train + test, 1.05 million images). Wall time and process CPU time are both shown: on a shared
machine the wall time depends on the other jobs.
"""
from __future__ import annotations

import argparse
import time

import torch

from robench.corruptions.mnist_c import MNIST_C
from robench.data import load_dataset
from robench.registry import CORRUPTIONS
from robench.seeding import derived

# images/s of the original (google-research/mnist-c corruptions.py), from the reference README
REFERENCE = {"shot_noise": 14912, "impulse_noise": 9758, "glass_blur": 66, "motion_blur": 1144, "shear": 11385,
             "scale": 13804, "rotate": 11330, "brightness": 3205, "translate": 12506, "stripe": 38161, "fog": 895,
             "spatter": 7278, "dotted_line": 7845, "zigzag": 1638, "canny_edges": 2660}
REFERENCE_SUITE_PER_1000 = 19.0  # seconds for all 15 over 1000 images
FULL = 15 * 70_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="MNIST test images (default 10000)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = load_dataset("mnist", "test").select(n=args.n).x
    base = torch.Generator().manual_seed(0)
    for name in MNIST_C:  # warm-up: imports, cached tables
        CORRUPTIONS.create(name)(x[:8], derived(base, name))
    print(f"{args.n} MNIST test images, torch threads {torch.get_num_threads()}")
    print(f"{'corruption':14s} {'wall s':>7s} {'cpu s':>7s} {'images/s':>10s} {'original':>9s} {'ratio':>7s}")
    wall_total = cpu_total = 0.0
    for name in MNIST_C:
        corruption = CORRUPTIONS.create(name)
        wall, cpu = time.perf_counter(), time.process_time()
        corruption(x, derived(base, name))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall_total, cpu_total = wall_total + wall, cpu_total + cpu
        rate = args.n / wall
        print(f"{name:14s} {wall:7.2f} {cpu:7.2f} {rate:10,.0f} {REFERENCE[name]:9,d} {rate / REFERENCE[name]:6.1f}x")
    original = REFERENCE_SUITE_PER_1000 * args.n / 1000
    print(f"{'suite (15)':14s} {wall_total:7.2f} {cpu_total:7.2f} {15 * args.n / wall_total:10,.0f} "
          f"{'':9s} {original / wall_total:6.1f}x  (original about {original:.0f} s)")
    scale = FULL / (15 * args.n)
    print(f"full dataset ({FULL:,} images) projected: {wall_total * scale:.0f} s wall, {cpu_total * scale:.0f} s cpu "
          f"(original about {REFERENCE_SUITE_PER_1000 * FULL / 15 / 1000 / 60:.0f} min)")


if __name__ == "__main__":
    main()
