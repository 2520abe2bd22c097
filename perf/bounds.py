"""Speed of robench's Linf bounds (examples per second) beside a plain forward pass of the same net.

    python perf/bounds.py [--archs small-cnn,gowal-small,...] [--eps 0.1] [--batch 100] [--crown-examples 1]
                          [--rounds 3] [--threads 1]

For each CNN architecture of the zoo (freshly initialised weights: the arithmetic does not depend on their
values, but CROWN's cost grows with the number of unstable ReLUs, printed beside it) on the embedded MNIST
test digits: forward (no gradient), IBP, CROWN-IBP and CROWN on the margin specification at `eps`. The
forward pass, IBP and CROWN-IBP run on `batch` examples in `rounds` interleaved rounds (the median is kept),
CROWN (a backward pass per unstable unit: minutes per example on the pooling CNNs) once on
`crown-examples`. Each method's cost is reported as a multiple of the forward pass. On the CPU with one
thread, times are the process's CPU time (robust to a shared machine); otherwise wall time.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from robench import nets
from robench.data import dataset_info, load_dataset
from robench.defenses.bound_ops import ReluOp
from robench.defenses.bounds import BoundedNet, input_box, margin_bounds


def seconds(fn, device: str, threads: int) -> float:
    clock = time.process_time if device == "cpu" and threads == 1 else time.perf_counter
    start = clock()
    with torch.no_grad():
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return clock() - start


def unstable_share(model: torch.nn.Module, x: torch.Tensor, eps: float) -> float:
    """The share of ReLU inputs whose IBP box straddles 0."""
    net = BoundedNet(model, x.shape[1:], x)
    with torch.no_grad():
        boxes = net.intervals(input_box(x, eps))
    straddle = [((lo < 0) & (hi > 0)).float() for (lo, hi), op in zip(boxes, net.ops) if isinstance(op, ReluOp)]
    return float(sum(s.sum() for s in straddle) / sum(s.numel() for s in straddle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", default="small-cnn,madry-cnn,lenet5,gowal-small,gowal-medium")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--crown-examples", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist-5k", "test").select(n=args.batch)
    info = dataset_info("mnist-5k")
    x, y = data.x.to(args.device), data.y.to(args.device)
    print(f"eps {args.eps}, batch {args.batch} (CROWN: {args.crown_examples}), {args.threads} thread(s), "
          f"{args.device}, median of {args.rounds} rounds (CROWN: one); torch {torch.__version__}")
    print(f"{'arch':<14}{'unstable':>9}{'forward/s':>11}{'IBP/s':>9}{'xfwd':>7}{'CROWN-IBP/s':>13}{'xfwd':>7}"
          f"{'CROWN/s':>9}{'xfwd':>9}")
    for arch in args.archs.split(","):
        torch.manual_seed(0)
        model = nets.create(arch, channels=info.channels, size=info.size, classes=info.classes, mean=info.mean,
                            std=info.std).to(args.device).eval()
        few, fy = x[:args.crown_examples], y[:args.crown_examples]
        runs = {
            "forward": lambda: model(x),
            "ibp": lambda: margin_bounds(model, x, y, args.eps, "ibp"),
            "crown-ibp": lambda: margin_bounds(model, x, y, args.eps, "crown-ibp"),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.rounds):
            for name in list(runs)[r % len(runs):] + list(runs)[:r % len(runs)]:
                times[name].append(seconds(runs[name], args.device, args.threads))
        rate = {name: len(x) / statistics.median(t) for name, t in times.items()}
        crown = seconds(lambda: margin_bounds(model, few, fy, args.eps, "crown"), args.device, args.threads)
        rate["crown"] = len(few) / crown
        ratio = {name: rate["forward"] / rate[name] for name in rate}
        print(f"{arch:<14}{unstable_share(model, x, args.eps):>9.1%}{rate['forward']:>11.0f}{rate['ibp']:>9.0f}"
              f"{ratio['ibp']:>7.1f}{rate['crown-ibp']:>13.1f}{ratio['crown-ibp']:>7.1f}{rate['crown']:>9.3f}"
              f"{ratio['crown']:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
