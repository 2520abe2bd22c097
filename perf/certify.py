"""Certification throughput (noisy forward passes per second) of robench's randomized smoothing against
peers, on the same model and images: a bare fp32 eager loop (noise + forward + argmax, no statistics),
the original authors' CERTIFY re-expressed as a peer loop, and the Adversarial Robustness Toolbox's
PyTorchRandomizedSmoothing (if installed: ``pip install robench[perf]``). All certify the same base
classifier f(clip(z, 0, 1)) at the same n0 and n; robench runs in fp32 and, reported beside it, bf16.

    python perf/certify.py --model mnist-gaussian-0.25 --n-examples 20 --n0 100 --n 10000

With --sequential it compares instead robench's two modes on each of --models (sigma from the zoo recipe):
fixed n = --n-max against sequential looks of --n, 2 n, 4 n, ... up to --n-max (smoothing mode=sequential),
certified accuracy at --radii and noisy forward passes (n0 included) side by side, with ratios:

    python perf/certify.py --sequential --n-examples 500 --n 1000 --n-max 100000
"""
from __future__ import annotations

import argparse
import copy
import time
from typing import Callable

import numpy as np
import torch
from scipy import stats
from torch import nn

from robench import zoo
from robench.data import load_dataset
from robench.defenses.smoothing import ABSTAIN, Smooth, certify_threat
from robench.metrics import accuracy

Result = tuple[list[int], list[float], float]  # predictions, radii, seconds


class Clip(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.clamp(0, 1)


def bare_loop(model: nn.Module, x: torch.Tensor, sigma: float, passes: int, batch: int) -> float:
    """Seconds for `passes` noisy fp32 forward passes per image, argmax only."""
    start = time.perf_counter()
    with torch.no_grad():
        for xi in x:
            for i in range(0, passes, batch):
                b = min(batch, passes - i)
                model((xi + torch.randn(b, *xi.shape) * sigma).clamp(0, 1)).argmax(1)
    return time.perf_counter() - start


def original_certify(model: nn.Module, x: torch.Tensor, classes: int, sigma: float, n0: int, n: int,
                     alpha: float, batch: int) -> Result:
    """The authors' algorithm as they wrote it: one image at a time, `randn_like` noise per batch, counts
    on the host with bincount, the Clopper-Pearson bound from the beta quantile."""

    def sample(xi: torch.Tensor, num: int) -> np.ndarray:
        counts = np.zeros(classes, dtype=int)
        with torch.no_grad():
            while num > 0:
                b = min(batch, num)
                num -= b
                copies = xi.unsqueeze(0).repeat(b, 1, 1, 1)
                preds = model((copies + torch.randn_like(copies) * sigma).clamp(0, 1)).argmax(1)
                counts += np.bincount(preds.cpu().numpy(), minlength=classes)
        return counts

    preds, radii = [], []
    start = time.perf_counter()
    for xi in x:
        c_a = int(sample(xi, n0).argmax())
        n_a = int(sample(xi, n)[c_a])
        p_a = stats.beta.ppf(alpha, n_a, n - n_a + 1) if n_a else 0.0
        preds.append(c_a if p_a >= 0.5 else ABSTAIN)
        radii.append(sigma * stats.norm.ppf(p_a) if p_a >= 0.5 else 0.0)
    return preds, radii, time.perf_counter() - start


def art_certify(model: nn.Module, x: torch.Tensor, classes: int, sigma: float, n0: int, n: int,
                alpha: float, batch: int) -> Result | None:
    """ART's estimator; its selection step draws `sample_size` copies, set to n0 here."""
    try:
        from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    except ImportError:
        return None
    art = PyTorchRandomizedSmoothing(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                     nb_classes=classes, clip_values=(0.0, 1.0), device_type="cpu",
                                     sample_size=n0, scale=sigma, alpha=alpha)
    start = time.perf_counter()
    preds, radii = art.certify(x.numpy(), n=n, batch_size=batch)
    return [int(p) for p in preds], [float(r) for r in radii], time.perf_counter() - start


def robench_certify(model: nn.Module, x: torch.Tensor, classes: int, sigma: float, n0: int, n: int,
                    alpha: float, batch: int, precision: str) -> Result:
    smooth = Smooth(model, classes, sigma, precision=precision)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    out = [smooth.certify(xi, n0, n, alpha, batch, g) for xi in x]
    return [p for p, _ in out], [r for _, r in out], time.perf_counter() - start


def sequential_vs_fixed(args: argparse.Namespace) -> None:
    """Both modes of the smoothing threat on the first --n-examples test points of each model."""
    print(f"first {args.n_examples} test points, n0={args.n0}, alpha={args.alpha}, batch={args.batch}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models:
        entry = zoo.get(name)
        sigma = float(entry.recipe.defense_params["sigma"])
        base = entry.load(data_root=args.data_root, progress=False)
        data = load_dataset(entry.dataset, "test", args.data_root).select(args.n_examples)
        common = dict(sigma=sigma, n0=args.n0, alpha=args.alpha, batch=args.batch, radii=tuple(args.radii))
        threats = {"fixed": certify_threat(**common, n=args.n_max),
                   "sequential": certify_threat(**common, n=args.n, n_max=args.n_max, mode="sequential")}
        runs = {}
        for mode, threat in threats.items():
            start = time.perf_counter()
            out = threat.evaluate_shard(base, data.x, data.y, torch.Generator().manual_seed(0))
            runs[mode] = (threat.summarize(out), threat.samples(out), time.perf_counter() - start)
        (fixed, fixed_passes, fixed_s), (seq, seq_passes, seq_s) = runs["fixed"], runs["sequential"]
        print(f"\n{name} (sigma {sigma:g}): {threats['sequential'].canonical}")
        print(f"{'radius':>7s} {'fixed %':>8s} {'seq %':>8s} {'seq-fixed':>9s}")
        for r, a in fixed["certified_accuracy"].items():
            b = seq["certified_accuracy"][r]
            print(f"{float(r):7.2f} {100 * a['value']:8.1f} {100 * b['value']:8.1f} "
                  f"{100 * (b['value'] - a['value']):+9.1f}")
        print(f"{'ACR':>7s} {fixed['average_certified_radius']:8.3f} {seq['average_certified_radius']:8.3f}")
        print(f"largest certifiable radius: fixed {fixed['max_radius']:.3f}, sequential {seq['max_radius']:.3f}")
        stops = {n: int((seq_passes == args.n0 + n).sum()) for n in threats["sequential"].looks}
        print(f"forward passes: fixed {fixed_passes.sum():,}, sequential {seq_passes.sum():,} "
              f"({fixed_passes.sum() / seq_passes.sum():.1f}x fewer); examples stopping at each look: {stops}")
        print(f"wall: fixed {fixed_s:.1f} s, sequential {seq_s:.1f} s ({fixed_s / seq_s:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sequential", action="store_true", help="compare fixed n = --n-max with mode=sequential")
    ap.add_argument("--models", nargs="+", default=["mnist-gaussian-0.25", "mnist-gaussian-0.5"])
    ap.add_argument("--n-max", type=int, default=100_000)
    ap.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    ap.add_argument("--model", default="mnist-gaussian-0.25")
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", type=int, default=10_000, help="draws for the bound; with --sequential, the first look")
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--n-examples", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--radius", type=float, default=0.5, help="radius of the certified accuracy compared")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    if args.sequential:
        sequential_vs_fixed(args)
        return

    entry = zoo.get(args.model)
    base = entry.load(data_root=args.data_root, progress=False)
    data = load_dataset(entry.dataset, "test", args.data_root).select(args.n_examples)
    x, y = data.x, data.y.numpy()
    classes = int(base(x[:1]).shape[1])
    passes = len(x) * (args.n0 + args.n)
    clipped = nn.Sequential(Clip(), base).eval()
    common = (classes, args.sigma, args.n0, args.n, args.alpha, args.batch)

    runs: dict[str, Callable[[], Result | float | None]] = {
        "bare fp32 loop": lambda: bare_loop(base, x, args.sigma, args.n0 + args.n, args.batch),
        "original certify (peer)": lambda: original_certify(clipped, x, *common),
        "ART PyTorchRandomizedSmoothing": lambda: art_certify(clipped, x, *common),
        "robench fp32": lambda: robench_certify(copy.deepcopy(base), x, *common, "fp32"),
        "robench bf16": lambda: robench_certify(copy.deepcopy(base), x, *common, "bf16"),
    }
    results = {name: run() for name, run in runs.items()}
    bare = (results["bare fp32 loop"] + bare_loop(base, x, args.sigma, args.n0 + args.n, args.batch)) / 2

    print(f"{args.model}: {len(x)} images, sigma={args.sigma}, n0={args.n0}, n={args.n}, alpha={args.alpha}, "
          f"batch={args.batch}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'method':34s} {'passes/s':>10s} {'x bare':>7s} {'cert@r':>7s} {'95% CI':>15s} {'ACR':>6s}")
    print(f"{'bare fp32 loop':34s} {passes / bare:10.0f} {1.0:7.2f}")
    for name, result in results.items():
        if name == "bare fp32 loop":
            continue
        if result is None:
            print(f"{name:34s} (not installed)")
            continue
        preds, radii, seconds = result
        correct = np.array(preds) == y
        radii_arr = np.array(radii)
        acc = accuracy(correct & (radii_arr >= args.radius))
        acr = float(np.where(correct, radii_arr, 0).mean())
        lo, hi = acc["ci95"]
        print(f"{name:34s} {passes / seconds:10.0f} {bare / seconds:7.2f} {acc['value']:7.3f} "
              f"[{lo:.3f}, {hi:.3f}] {acr:6.3f}")


if __name__ == "__main__":
    main()
