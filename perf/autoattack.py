"""AutoAttack: robench's standard ensemble against the reference implementation and torchattacks, and
PGD against the ensemble on the adversarially trained model.

    python perf/autoattack.py [--n 500] [--models mnist-small-cnn,mnist-pgd-at] [--contenders ...]
                              [--seeds 0] [--threads 1]
    python perf/autoattack.py --pgd [--n 1000] [--pgd-model mnist-pgd-at] [--store PATH]

Part 1 (default): on the first `n` MNIST test points of each zoo model (mnist-pgd-at at Linf eps 0.3,
mnist-small-cnn at Linf eps 0.1), in one process, on the same points:
  robench       robench's standard ensemble (`robench.attacks.autoattack.ensemble`: APGD-CE, APGD-T,
                FAB-T, Square), each attack on the points still robust, as the threat's stages run them
  robench-bf16  the same attacks with precision=bf16 (autocast, an fp32 re-check before a point counts as
                broken): a candidate, not the threat's arithmetic
  evaluate      robench.evaluate(model, "autoattack:eps=...,norm=linf") into a temporary store (the threat as
                users run it: per-stage random streams, plus its sanity checks); not run by default
  pyautoattack  pyautoattack.AutoAttack(version="standard"), the reference (Croce & Hein's code)
  torchattacks  torchattacks' APGD, APGDT, FAB (multi-targeted) and Square chained as its AutoAttack chains
                them, with the iteration counts passed explicitly (100: its AutoAttack passes none, so they
                run their default 10)
For each: robust accuracy with its 95% Clopper-Pearson interval, robust accuracy and wall time after each
attack, the paired difference to the reference (points robust under one and broken by the other, both
ways) and the time ratios to the reference, in CPU time of this process (less sensitive to other load on
a shared machine) and in wall time. The issue's goal: robench >= 2x faster than the reference at equal or
lower robust accuracy. Contenders run once per seed (the ensemble takes minutes to hours on a CPU); the
load average is printed with each.

Part 2 (--pgd): mnist-pgd-at, first `n` (1000) test points, Linf eps 0.3, through robench.evaluate:
clean, PGD-40, PGD-100 x 10 restarts and the ensemble side by side, against the anchor of REFERENCE.md
(Madry et al.'s model: 89.62 under PGD, 88.50 under AutoAttack, clean 98.53; 1.1 points lost).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time

import torch

import robench
from robench.attacks.autoattack import ensemble
from robench.data import load_dataset
from robench.metrics import clopper_pearson

EPS = {"mnist-pgd-at": 0.3, "mnist-small-cnn": 0.1}
CONTENDERS = ("robench", "robench-bf16", "evaluate", "pyautoattack", "torchattacks")
DEFAULT_CONTENDERS = ("robench", "robench-bf16", "pyautoattack", "torchattacks")
REFERENCE = "pyautoattack"


def load(name: str, root: str | None):
    """The zoo model `name` if its weights are cached (never trains here), frozen, in eval mode."""
    entry = robench.model_entry(name)
    if not entry.is_cached():
        return None
    model = entry.load(train_if_missing=False, data_root=root, progress=False).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def robust_of(model, adv, x, y) -> torch.Tensor:
    with torch.no_grad():
        return (model(x).argmax(1) == y) & (model(adv).argmax(1) == y)


def run_robench(model, x, y, eps, seed, precision="fp32"):
    """robench's ensemble, attack by attack on the points still robust: (robust (n,), [(attack, robust
    accuracy after it, seconds)])."""
    with torch.no_grad():
        standing = model(x).argmax(1) == y
    stages = []
    for name, attack in ensemble("linf", "standard").items():
        attack.precision = precision
        idx = standing.nonzero().squeeze(1)
        start = time.perf_counter()
        if len(idx):
            result = attack(model, x[idx], y[idx], eps=eps, generator=torch.Generator().manual_seed(seed))
            standing[idx[result.success]] = False
        stages.append((name, float(standing.float().mean()), time.perf_counter() - start))
    return standing, stages


def run_evaluate(model, eps, seed, name, n, root):
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        record, = robench.evaluate(model, f"autoattack:eps={eps},norm=linf", dataset="mnist", n=n, seed=seed,
                                   store=os.path.join(folder, "results.sqlite"), model_name=name, data_root=root,
                                   with_outputs=True)
        seconds = time.perf_counter() - start
    after = record.metrics["robust_accuracy_after"][repr(eps)]
    stages = [(attack, a["value"], float("nan")) for attack, a in after.items()]
    stages[-1] = (stages[-1][0], stages[-1][1], seconds)  # only the total is timed
    print(f"    evaluate: broken_by {record.metrics['broken_by'][repr(eps)]}, flags "
          f"{[f['code'] for f in record.metrics.get('flags', [])]}")
    return torch.as_tensor(record.outputs[f"robust@{eps!r}"]), stages


class _Times(logging.Handler):
    """Collects pyautoattack's "robust accuracy after X: ... (total time T s)" log lines."""

    pattern = re.compile(r"robust accuracy after (\S+): ([\d.]+)% \(total time ([\d.]+) s\)")

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.stages = []

    def emit(self, record):
        found = self.pattern.search(record.getMessage())
        if found:
            total = float(found[3])
            previous = sum(s for _, _, s in self.stages)
            self.stages.append((found[1].lower(), float(found[2]) / 100, total - previous))


def run_pyautoattack(model, x, y, eps, seed):
    from pyautoattack import AutoAttack

    handler, log = _Times(), logging.getLogger("auto-attack")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        aa = AutoAttack(model, eps=eps, norm="Linf", version="standard", seed=seed, device="cpu")
        adv, _ = aa.run_standard_evaluation(x.clone(), y.clone(), batch_size=len(x))
    finally:
        log.removeHandler(handler)
    return robust_of(model, adv, x, y), handler.stages


def run_torchattacks(model, x, y, eps, seed):
    import torchattacks as ta

    attacks = {"apgd-ce": ta.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=seed),
               "apgd-t": ta.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=10, seed=seed),
               "fab-t": ta.FAB(model, norm="Linf", eps=eps, steps=100, n_restarts=1, multi_targeted=True,
                               n_classes=10, seed=seed),
               "square": ta.Square(model, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, p_init=0.8, seed=seed)}
    with torch.no_grad():
        standing = model(x).argmax(1) == y
    stages = []
    for name, attack in attacks.items():  # each on the points still robust, as its MultiAttack does
        idx = standing.nonzero().squeeze(1)
        start = time.perf_counter()
        if len(idx):
            standing[idx[~robust_of(model, attack(x[idx], y[idx]), x[idx], y[idx])]] = False
        stages.append((name, float(standing.float().mean()), time.perf_counter() - start))
    return standing, stages


def interval(robust: torch.Tensor) -> str:
    k, n = int(robust.sum()), len(robust)
    low, high = clopper_pearson(k, n)
    return f"{100 * k / n:6.2f} [{100 * low:.2f}, {100 * high:.2f}]"


def compare(args, name, model, root) -> list[dict]:
    eps = EPS[name]
    data = load_dataset("mnist", "test", root).select(n=args.n)
    x, y = data.x, data.y
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    print(f"\n{name}: first {args.n} MNIST test points, Linf eps {eps}, clean {interval(clean)} %, "
          f"load average {os.getloadavg()[0]:.1f}")
    runners = {"robench": lambda s: run_robench(model, x, y, eps, s),
               "robench-bf16": lambda s: run_robench(model, x, y, eps, s, "bf16"),
               "evaluate": lambda s: run_evaluate(model, eps, s, name, args.n, root),
               "pyautoattack": lambda s: run_pyautoattack(model, x, y, eps, s),
               "torchattacks": lambda s: run_torchattacks(model, x, y, eps, s)}
    rows = []
    for seed in args.seeds:
        results = {}
        order = sorted(args.contenders, key=lambda c: c != REFERENCE)  # the reference first: the others compare to it
        for contender in order:
            start, cpu = time.perf_counter(), time.process_time()
            robust, stages = runners[contender](seed)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            results[contender] = robust, stages, seconds, cpu
            steps = ", ".join(f"{a} {100 * r:.2f}%" + (f" {s:.0f}s" if s == s else "") for a, r, s in stages)
            print(f"  seed {seed} {contender:12s} robust {interval(robust)} %  {seconds:8.1f} s wall  {cpu:8.1f} s cpu "
                  f"(load {os.getloadavg()[0]:.1f})  ({steps})", flush=True)
        ref = results.get(REFERENCE)
        print(f"  seed {seed} summary (paired to {REFERENCE}: robust here and broken by it / the reverse; "
              "speed-up in CPU time, then wall time)")
        for contender, (robust, stages, seconds, cpu) in results.items():
            row = {"model": name, "seed": seed, "contender": contender, "robust": float(robust.float().mean()),
                   "seconds": seconds, "cpu": cpu, "stages": stages}
            if ref is not None:
                row["only_here"], row["only_ref"] = int((robust & ~ref[0]).sum()), int((ref[0] & ~robust).sum())
                row["speedup"], row["wall_speedup"] = ref[3] / cpu, ref[2] / seconds
                print(f"    {contender:12s} {interval(robust)} %  paired +{row['only_here']}/-{row['only_ref']}  "
                      f"{cpu:8.1f} s cpu  x{row['speedup']:.2f}  (wall {seconds:.1f} s, x{row['wall_speedup']:.2f})")
            rows.append(row)
    return rows


def pgd_side_by_side(args, root) -> None:
    name = args.pgd_model
    model = load(name, root)
    if model is None:
        print(f"{name} is not cached (robench zoo train {name}): nothing to compare")
        return
    threats = {"PGD-40": "pgd-linf:eps=0.3,steps=40",
               "PGD-100 x 10": "pgd-linf:eps=0.3,steps=100,restarts=10", "AutoAttack": "autoattack:eps=0.3,norm=linf"}
    print(f"\n{name}, first {args.n} MNIST test points, Linf eps 0.3, seed {args.seeds[0]}, "
          f"load average {os.getloadavg()[0]:.1f}")
    robust = {}
    with tempfile.TemporaryDirectory() as folder:
        for label, threat in threats.items():
            start = time.perf_counter()
            record, = robench.evaluate(model, threat, dataset="mnist", n=args.n, seed=args.seeds[0],
                                       store=args.store or os.path.join(folder, "results.sqlite"), model_name=name,
                                       data_root=root, with_outputs=True)
            seconds = time.perf_counter() - start
            if not robust:
                robust["clean"] = torch.as_tensor(record.outputs["clean_correct"]).bool()
                print(f"  {'clean':13s} {interval(robust['clean'])} %")
            robust[label] = torch.as_tensor(record.outputs["robust@0.3"]).bool()
            print(f"  {label:13s} {interval(robust[label])} %  {seconds:8.1f} s  (flags "
                  f"{[f['code'] for f in record.metrics.get('flags', [])]})", flush=True)
    for label in ("PGD-40", "PGD-100 x 10"):
        a, b = robust[label], robust["AutoAttack"]
        print(f"  {label} -> AutoAttack: {100 * (float(b.float().mean()) - float(a.float().mean())):+.2f} points "
              f"(robust under {label} only {int((a & ~b).sum())}, under AutoAttack only {int((b & ~a).sum())})")
    print("  anchor (Madry et al. 2018, REFERENCE.md): clean 98.53, PGD 89.62, AutoAttack 88.50 (-1.12 points)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=None, help="test points (default 500; 1000 with --pgd)")
    parser.add_argument("--models", default="mnist-small-cnn,mnist-pgd-at")
    parser.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS),
                        help=f"comma-separated, of {', '.join(CONTENDERS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (each contender runs once per seed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--pgd", action="store_true", help="part 2: PGD against the ensemble on mnist-pgd-at")
    parser.add_argument("--pgd-model", default="mnist-pgd-at", help="the model of part 2")
    parser.add_argument("--store", help="part 2's results store (default: a temporary one), so a killed run "
                        "resumes and its threats can be computed beforehand in other processes")
    args = parser.parse_args(argv)
    args.n = args.n or (1000 if args.pgd else 500)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.contenders = args.contenders.split(",")
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders {', '.join(sorted(unknown))}; choose from {', '.join(CONTENDERS)}")
    torch.set_num_threads(args.threads)
    root = os.environ.get("ROBENCH_DATA")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}")
    if args.pgd:
        pgd_side_by_side(args, root)
        return 0
    rows = []
    for name in args.models.split(","):
        model = load(name, root)
        if model is None:
            print(f"\n{name}: not cached (robench zoo train {name}); skipped")
            continue
        rows += compare(args, name, model, root)
    print(f"\n| model | seed | contender | robust accuracy % | paired vs {REFERENCE} (+here/-there) | CPU s | "
          "speed-up (CPU) | wall s | speed-up (wall) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        paired = f"+{r['only_here']}/-{r['only_ref']}" if "only_here" in r else "-"
        speed = f"x{r['speedup']:.2f}" if "speedup" in r else "-"
        wall = f"x{r['wall_speedup']:.2f}" if "wall_speedup" in r else "-"
        print(f"| {r['model']} | {r['seed']} | {r['contender']} | {100 * r['robust']:.2f} | {paired} | "
              f"{r['cpu']:.0f} | {speed} | {r['seconds']:.0f} | {wall} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
