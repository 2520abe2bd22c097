"""What the shard size costs an attack: one threat through robench.evaluate at several forced shard sizes,
on the same points, in one process, each from an empty store.

    python perf/shards.py                                   # mnist-small-cnn, apgd-t-linf at eps 0.1, 64 points
    python perf/shards.py --model mnist-pgd-at --threat apgd-t-linf:eps=0.3 --sizes 2,8,32,64

Prints per size the CPU time of this process (less sensitive to other load than wall time), the wall time,
the robust accuracy and the CPU ratio to the largest size. The shard's random stream depends on its
examples, so accuracies may differ by a few points between sizes; the cost should not. It is what sets
`AttackThreat.min_shard_size`, the floor under the shard size an attack's cost alone would give (see
robench.evaluate.shard_size_for). Also prints one gradient step's CPU time per example at each batch size
of the model (forward and backward, no attack).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

import robench
from robench.data import load_dataset


def gradient_step_ms(model, size: int, shape: tuple[int, ...]) -> float:
    """CPU milliseconds per example of one forward and backward pass over a batch of `size`."""
    x = torch.rand(size, *shape, requires_grad=True)
    for _ in range(3):
        model(x).sum().backward()
    repeats = max(5, 512 // size)
    start = time.process_time()
    for _ in range(repeats):
        model(x).sum().backward()
    return (time.process_time() - start) / repeats / size * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist-small-cnn")
    parser.add_argument("--threat", default="apgd-t-linf:eps=0.1")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--sizes", default="2,8,32,64")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = os.environ.get("ROBENCH_DATA")
    entry = robench.model_entry(args.model)
    model = entry.load(data_root=root).eval()
    print(f"{args.model}, {args.threat}, first {args.n} test points, {args.threads} torch thread(s); "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    shape = tuple(load_dataset(entry.dataset, "test", root).select(n=1).x.shape[1:])
    sizes = [int(s) for s in args.sizes.split(",")]
    print("batch  gradient step (ms/example)")
    for size in sizes:
        print(f"{size:>5}  {gradient_step_ms(model, size, shape):.3f}", flush=True)
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            cpu, wall = time.process_time(), time.perf_counter()
            record = robench.evaluate(model, args.threat, dataset=entry.dataset, n=args.n, data_root=root,
                                      store=f"{tmp}/store.sqlite", model_name=args.model, shard_size=size,
                                      progress=False)[0]
            robust = ", ".join(f"{v['value']:.1%} ({v['correct']}/{v['n']})" for k, by_eps in record.metrics.items()
                               if k.startswith("robust_accuracy") for v in by_eps.values())
            rows.append((size, time.process_time() - cpu, time.perf_counter() - wall, robust))
        print(f"shard {size}: {rows[-1][1]:.1f} s CPU", flush=True)
    largest = rows[-1][1]
    print("\nshard  CPU s  wall s  robust  CPU / largest shard's")
    for size, cpu, wall, robust in rows:
        print(f"{size:>5}  {cpu:>5.1f}  {wall:>6.1f}  {robust}  x{cpu / largest:.2f}")


if __name__ == "__main__":
    main()
