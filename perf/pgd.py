"""Speed of robench's Linf PGD against its peers, and what its speed options cost in accuracy.

    python perf/pgd.py [--batch 128] [--steps 20] [--rounds 5] [--threads N] [--no-accuracy]

Part 1 (throughput): one process, the same model, batch, eps, step size and number of steps (all
steps run: no early stop) for
  bare         a bare forward+backward loop: plain fp32 eager, no projection bookkeeping (the limit)
  foolbox      foolbox 3 LinfPGD
  torchattacks torchattacks PGD
  robench      robench pgd-linf as users call it (defaults: channels_last where it pays)
  robench-nchw robench pgd-linf forced to the contiguous (NCHW) layout the others use
  robench-bf16 robench pgd-linf with precision=bf16 (different arithmetic: shown, not compared)
for the zoo's small CNN and Madry CNN (untrained weights: speed does not depend on them). Contenders are
timed interleaved (every round runs each once, in rotating order) and the median is kept, since the
machine is shared; throughput is images * steps / s and the ratios are to the bare loop and to the
fastest peer (foolbox or torchattacks). The bar: robench >= fastest peer and >= 0.95 x bare.

Part 2 (accuracy, skipped with --no-accuracy): robust accuracy and time of fp32, fp32 with early_stop
and bf16 on the trained zoo model mnist-small-cnn over the first 500 MNIST test points (the embedded
mnist-5k test split and mnist5k-small-cnn when ROBENCH_DATA holds no MNIST), eps 0.1, 40 steps.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from robench import nets
from robench.attacks.pgd import LinfPGD

PEERS = ("foolbox", "torchattacks")


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def bare_loop(model, x, y, eps, step, steps):
    """The limit: random start, then steps of forward + backward + signed step; no projection."""
    adv = x + torch.empty_like(x).uniform_(-eps, eps)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        grad, = torch.autograd.grad(loss, adv)
        adv = adv.detach() + step * grad.sign()
    return adv


def contenders(model, x, y, eps, step, steps) -> dict[str, Callable[[], object]]:
    import foolbox
    import torchattacks

    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1))
    fb_attack = foolbox.attacks.LinfPGD(abs_stepsize=step, steps=steps, random_start=True)
    ta_attack = torchattacks.PGD(model, eps=eps, alpha=step, steps=steps, random_start=True)
    ours = LinfPGD(steps=steps, step=step)
    nchw = LinfPGD(steps=steps, step=step)
    nchw.memory_format = "contiguous"
    bf16 = LinfPGD(steps=steps, step=step, precision="bf16")
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    return {
        "bare": lambda: bare_loop(model, x, y, eps, step, steps),
        "foolbox": lambda: fb_attack(fmodel, x, y, epsilons=eps),
        "torchattacks": lambda: ta_attack(x, y),
        "robench": lambda: ours(model, x, y, eps=eps, generator=gen()),
        "robench-nchw": lambda: nchw(model, x, y, eps=eps, generator=gen()),
        "robench-bf16": lambda: bf16(model, x, y, eps=eps, generator=gen()),
    }


def interleaved(runs: dict[str, Callable[[], object]], rounds: int, warmup: bool = True) -> dict[str, float]:
    """Median seconds of each callable, timed round-robin with a rotating order (after one warm-up)."""
    for run in runs.values() if warmup else ():
        run()
    names, times = list(runs), {n: [] for n in runs}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}


def throughput(args) -> list[dict]:
    from robench.data import load_dataset

    data = load_dataset("mnist-5k", "test").select(n=args.batch)
    x, y = data.x, data.y
    rows = []
    for arch in ("small-cnn", "madry-cnn"):
        torch.manual_seed(0)
        model = frozen(nets.create(arch, channels=1, size=28, classes=10, mean=(0.1307,), std=(0.3081,)))
        secs = interleaved(contenders(model, x, y, args.eps, args.eps / 4, args.steps), args.rounds)
        speed = {n: args.batch * args.steps / s for n, s in secs.items()}
        fastest = max(PEERS, key=speed.get)
        print(f"\n{arch}: batch {args.batch}, {args.steps} steps, eps {args.eps}, {args.rounds} rounds, "
              f"{torch.get_num_threads()} threads (images*steps/s; ratios to bare and to {fastest})")
        for name, v in speed.items():
            print(f"  {name:13s} {v:9.1f}   x{v / speed['bare']:.3f} bare   x{v / speed[fastest]:.3f} {fastest}")
        rows.append({"model": arch, "speed": speed, "fastest": fastest})
    return rows


def accuracy(args) -> dict:
    from robench import zoo
    from robench.data import load_dataset

    root = os.environ.get("ROBENCH_DATA")
    try:
        data = load_dataset("mnist", "test", root=root, download=False).select(n=500)
        model, where = zoo.get("mnist-small-cnn").load(data_root=root, progress=False), "mnist-small-cnn, MNIST"
    except Exception as error:  # no full MNIST here: the embedded digits and their model
        print(f"(no full MNIST: {str(error).splitlines()[0]}; using the embedded set)")
        data = load_dataset("mnist-5k", "test").select(n=500)
        model, where = zoo.get("mnist5k-small-cnn").load(progress=False), "mnist5k-small-cnn, mnist-5k"
    model = frozen(model)
    eps, steps = 0.1, 40
    attacks = {"fp32": LinfPGD(steps=steps), "fp32 early_stop": LinfPGD(steps=steps, early_stop=True),
               "bf16": LinfPGD(steps=steps, precision="bf16"),
               "bf16 early_stop": LinfPGD(steps=steps, precision="bf16", early_stop=True)}
    robust: dict[str, float] = {}

    def runner(name):
        def run():
            generator = torch.Generator().manual_seed(0)
            success = attacks[name](model, data.x, data.y, eps=eps, generator=generator).success
            with torch.no_grad():
                clean = model(data.x).argmax(1) == data.y
            value = float((clean & ~success).float().mean())
            assert robust.setdefault(name, value) == value, "the same seed must give the same result"
        return run

    secs = interleaved({n: runner(n) for n in attacks}, max(2, args.rounds // 2), warmup=False)
    with torch.no_grad():
        clean = float((model(data.x).argmax(1) == data.y).float().mean())
    print(f"\naccuracy: {where} test[:500], eps {eps}, {steps} steps, default step; clean {clean:.3f}")
    for name in attacks:
        print(f"  {name:16s} robust {robust[name]:.3f}   {secs[name]:7.2f} s   "
              f"x{secs['fp32'] / secs[name]:.2f} vs fp32")
    return {"where": where, "clean": clean, "robust": robust, "secs": secs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-accuracy", action="store_true", help="skip part 2")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}")
    rows = throughput(args)
    acc = None if args.no_accuracy else accuracy(args)

    print("\nSummary (throughput ratios; the bar: robench >= fastest peer and >= 0.95 x bare, all steps run)")
    print("| model | robench / bare | robench / fastest peer | robench-nchw / bare | robench-bf16 / bare | bar |")
    print("|---|---|---|---|---|---|")
    ok = True
    for row in rows:
        s, f = row["speed"], row["speed"][row["fastest"]]
        met = s["robench"] >= f and s["robench"] >= 0.95 * s["bare"]
        ok &= met
        print(f"| {row['model']} | {s['robench'] / s['bare']:.3f} | {s['robench'] / f:.3f} ({row['fastest']}) | "
              f"{s['robench-nchw'] / s['bare']:.3f} | {s['robench-bf16'] / s['bare']:.3f} | "
              f"{'met' if met else 'MISSED'} |")
    if acc:
        print(f"\n| {acc['where']}, eps 0.1, 40 steps | robust accuracy | time vs fp32 |")
        print("|---|---|---|")
        for name, value in acc["robust"].items():
            print(f"| {name} | {value:.3f} | x{acc['secs']['fp32'] / acc['secs'][name]:.2f} faster |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
