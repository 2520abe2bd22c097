"""Wall time of one benchmark grid with the local executor and with Ray at 1 and 2 workers, over several
shard sizes: speed-up, Ray's overhead per task, and the shard size below which Ray does not pay.

    python perf/scale.py                       # mnist5k-small-cnn x PGD (5 steps) on 400 mnist-5k examples
    python perf/scale.py --n 1000 --steps 20 --shard-sizes 20,50,100,250

Every configuration computes the whole grid from an empty store (nothing is served from cache). Ray runs
on a local instance with 2 CPUs; its start-up and the first (cold) run, which spawns the workers and
imports torch in them, are timed apart from the warm runs. The local executor uses torch's default
threads (all cores), a Ray task one thread per task, as `robench run` does.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import robench
from robench import zoo
from robench.executors import LocalExecutor, RayExecutor


def timed(model, spec, executor, args, shard_size) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        robench.evaluate(model, spec, dataset="mnist-5k", n=args.n, store=Path(tmp) / "s.sqlite",
                         shard_size=shard_size, seed=0, executor=executor, device="cpu")
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--shard-sizes", default="10,25,50,100,200")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration (the median is kept)")
    args = parser.parse_args()
    import ray

    spec = f"pgd-linf:eps=0.1,steps={args.steps}"
    model = zoo.get("mnist5k-small-cnn").load(progress=False)
    sizes = [int(s) for s in args.shard_sizes.split(",")]
    print(f"grid: mnist5k-small-cnn x {spec} on {args.n} mnist-5k examples; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} (shared machine: timings are noisy); torch "
          f"{torch.__version__}, ray {ray.__version__}, local executor with {torch.get_num_threads()} torch threads",
          flush=True)
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray.init (local instance, 2 CPUs): {time.perf_counter() - start:.1f} s", flush=True)
    cold = timed(model, spec, RayExecutor(workers=2), args, sizes[-1])
    print(f"first Ray run (spawns workers, imports torch): {cold:.1f} s", flush=True)

    def med(executor, size):
        return statistics.median(timed(model, spec, executor, args, size) for _ in range(args.repeats))

    rows = []
    for size in sizes:
        tasks = -(-args.n // size)
        local = med(LocalExecutor(), size)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same work as one Ray task does, in-process: isolates Ray's overhead
        local1 = med(LocalExecutor(), size)
        torch.set_num_threads(threads)
        ray1, ray2 = med(RayExecutor(workers=1), size), med(RayExecutor(workers=2), size)
        rows.append((size, tasks, local, local1, ray1, ray2))
        print(f"shard {size:>4}: {tasks:>3} tasks  local {local:6.2f} s  local 1 thread {local1:6.2f} s  "
              f"ray x1 {ray1:6.2f} s  ray x2 {ray2:6.2f} s", flush=True)
    ray.shutdown()

    print("\n| shard size | tasks | local (s) | local, 1 thread (s) | Ray 1 worker (s) | Ray 2 workers (s) | "
          "speed-up Ray 2 vs 1 | speed-up Ray 2 vs best local | Ray overhead per task (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, tasks, local, local1, ray1, ray2 in rows:
        # overhead per task: Ray with 1 worker against the same single-threaded work done in-process
        print(f"| {size} | {tasks} | {local:.2f} | {local1:.2f} | {ray1:.2f} | {ray2:.2f} | {ray1 / ray2:.2f}x | "
              f"{min(local, local1) / ray2:.2f}x | {1000 * (ray1 - local1) / tasks:.0f} |")
    # Ray pays where 2 workers beat the faster of the two local runs
    paying = [size for size, _, local, local1, _, ray2 in rows if ray2 < min(local, local1)]
    losing = [size for size in sizes if size not in paying]
    print(f"\nRay (2 workers) beats the local executor (best of its two thread settings) at shard sizes "
          f"{', '.join(map(str, paying)) or 'none'}; it does not at {', '.join(map(str, losing)) or 'none'}.")


if __name__ == "__main__":
    sys.exit(main())
