"""`robench run` and `robench quickstart`: models under threats, printed as a table and written to --out."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import robench
from robench import RobenchError
from robench.cli.common import (Parents, check_models, examples, executor_of, load_model, output_path, parse_indices,
                                progress, table_width)

RUN_EXAMPLES = """
    robench run --model mnist-small-cnn --threat "pgd-linf:eps=0.1|0.2|0.3" --n 1000
    robench run --model mnist-small-cnn --threat clean --threat "mnist-c:corruptions=fog|zigzag" --details
    robench run --model mnist-small-cnn --threat foolbox:LinfDeepFoolAttack:eps=0.1 --format json
    robench run --model mnist-small-cnn --threat "pgd-linf:eps=0.1|0.3" --format latex > table.tex
    robench run --model mnist-small-cnn --threat autoattack:eps=0.3 --threat crown-ibp:eps=0.1 --precision bf16
    robench run --model mypkg.nets:make_model --weights model.safetensors --threat fgsm:eps=0.1
    robench run --model robustbench:Carmon2019Unlabeled --dataset cifar10 --n 1000 --threat autoattack:eps=8/255
    robench run --model timm:resnet18 --weights r18.safetensors --dataset cifar10 --threat pgd-linf:eps=8/255
    robench run --model torchvision:resnet50 --dataset cifar10 --normalize cifar10 --weights r50.pt --threat clean
    robench run bench.toml --out results/
    robench run bench.toml --executor ray --address HEAD:6379
    robench run bench.toml --executor ray --address HEAD:6379 --device cuda --gpus-per-task 0.5"""
QUICKSTART_EXAMPLES = """
    robench quickstart
    robench quickstart --out /tmp/qs --n 200"""


def _write_outputs(records, out) -> list:
    """records.json, results.md, results.csv and the figures in the folder `out` (robench.write_outputs)."""
    return robench.write_outputs(records, out)


def evaluate_grid(models: Sequence[str], threats: Sequence[str], args: argparse.Namespace, *, dataset: str,
                  split: str, n: int | None, indices: list[int] | None, seed: int) -> list:
    """Every model under every threat, through the results store; specs and models are checked first."""
    from tqdm.auto import tqdm

    if getattr(args, "precision", None):
        threats = [_in_precision(t, args.precision, progress(args)) for t in threats]
    built = [robench.create_threat(t) for t in threats]  # check every spec and model before any work starts
    check_models(models, dataset, args)
    executor = executor_of(args)
    store = robench.Store(args.store)
    records = []
    grid = tqdm(total=len(models) * len(built), desc="grid", unit="threat",  # over models, on a terminal only:
                disable=not progress(args) or not sys.stderr.isatty() or len(models) < 2)  # evaluate reports each threat
    for name in models:
        model = load_model(name, args, dataset)
        records += robench.evaluate(model, built, dataset=dataset, split=split, n=n, indices=indices,
                                    data_root=args.data_root, store=store, seed=seed, device=args.device,
                                    model_name=name, progress=progress(args), executor=executor)
        grid.update(len(built))
    grid.close()
    return records


def _in_precision(spec: str, precision: str, verbose: bool) -> str:
    """`spec` in --precision where its threat allows it; a note where it keeps its own."""
    changed, reason = robench.in_precision(spec, precision)
    if reason and verbose:
        print(f"robench: {spec} keeps its own precision: {reason}", file=sys.stderr)
    return str(changed)


def cmd_run(args: argparse.Namespace) -> None:
    if args.spec:
        bench = robench.Benchmark.load(args.spec)
        models = args.model or bench.models
        threats = args.threat or bench.threats
        dataset, split = args.dataset or bench.dataset, args.split or bench.split
        n, indices = args.n if args.n is not None else bench.n, parse_indices(args.indices) or bench.indices
        seed = args.seed if args.seed is not None else bench.seed
    else:
        if not args.model or not args.threat:
            raise RobenchError("give --model and --threat (or a benchmark file); see `robench run --help`.")
        models, threats = args.model, args.threat
        dataset, split, n = args.dataset or "mnist", args.split or "test", args.n
        indices, seed = parse_indices(args.indices), args.seed or 0
    if n is not None and indices is not None:
        n = None if not args.n else n
    out = output_path(args.out, folder=True) if args.out else None
    records = evaluate_grid(models, threats, args, dataset=dataset, split=split, n=n, indices=indices, seed=seed)
    print(robench.render(records, args.format, detail=args.details or None, width=table_width()), end="")
    if out:
        for path in robench.write_outputs(records, out):
            print(f"wrote {path}", file=sys.stderr)


def cmd_quickstart(args: argparse.Namespace) -> None:
    """The benchmark files quickstart.toml and quickstart-certify.toml shipped with robench (robench/benchmarks),
    on the first --n points (a file's own n caps it)."""
    start = time.perf_counter()
    out = output_path(args.out, folder=True)
    runs = [robench.Benchmark.preset("quickstart"), robench.Benchmark.preset("quickstart-certify")]
    sizes = [args.n if b.n is None else min(b.n, args.n) for b in runs]
    print(f"robench quickstart: {', '.join(runs[0].models)} on the embedded MNIST digits ({runs[0].dataset}, "
          f"first {sizes[0]} test points; {sizes[1]} for certification), offline.", file=sys.stderr)
    records = []
    for bench, n in zip(runs, sizes):
        records += evaluate_grid(bench.models, bench.threats, args, dataset=bench.dataset, split=bench.split, n=n,
                                 indices=None, seed=bench.seed)
    print(robench.render(records, "table", width=table_width()), end="")
    for path in robench.write_outputs(records, out):
        print(f"wrote {path}")
    print(f"done in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def add_run(sub, parents: Parents) -> None:
    p = sub.add_parser("run", parents=[parents.common, parents.data, parents.store, parents.weights, parents.mismatch,
                                      parents.executor],
                       formatter_class=parents.fmt, epilog=examples(RUN_EXAMPLES), help="evaluate models under threats")
    p.add_argument("spec", nargs="?", help="benchmark file (TOML: models, threats, dataset, split, n, indices, seed)")
    p.add_argument("--model", action="append",
                   help="zoo name, robustbench:NAME, timm:ARCH, torchvision:ARCH or package.module:callable "
                        "(repeatable)")
    p.add_argument("--threat", action="append",
                   help='threat spec, quoted if it has a list, e.g. "pgd-linf:eps=0.1|0.3,steps=40" (repeatable)')
    p.add_argument("--dataset", help="dataset name (robench list datasets; default mnist)")
    p.add_argument("--split", choices=["train", "test"], help="default test")
    p.add_argument("--n", type=int, help="evaluate the first N examples")
    p.add_argument("--indices", help="explicit example indices, e.g. 0,5,9 or 0:100")
    p.add_argument("--seed", type=int)
    p.add_argument("--precision", choices=["bf16", "fp16"],
                   help="evaluate every threat that allows it in this precision (autocast: AMP on CUDA, bf16 "
                        "kernels on CPUs with AVX512-BF16 or AMX); certificates and weight attacks keep fp32")
    p.add_argument("--out", help="folder for records.json, results.md, results.csv and figures")
    p.add_argument("--format", choices=["table", "json", "csv", "markdown", "latex"], default="table",
                   help="table (default: fitted to the terminal, 120 columns in a pipe), markdown, csv, latex "
                        "(a booktabs tabular) or json (the whole Records)")
    p.add_argument("--details", action="store_true",
                   help="every column of every threat in the table, not only the headline ones")
    p.set_defaults(func=cmd_run)


def add_quickstart(sub, parents: Parents) -> None:
    p = sub.add_parser("quickstart", parents=[parents.common, parents.data, parents.store, parents.executor], formatter_class=parents.fmt,
                       epilog=examples(QUICKSTART_EXAMPLES),
                       help="offline demo: train small models on the embedded digits and attack them")
    p.add_argument("--out", default="robench-out/quickstart", help="output folder (default robench-out/quickstart)")
    p.add_argument("--n", type=int, default=500, help="test points (default 500)")
    p.set_defaults(func=cmd_quickstart, weights=None, weights_sha256=None, normalize=None)
