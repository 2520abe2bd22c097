"""`robench corrupt` and `robench certify`: a corrupted copy of a dataset, and randomized-smoothing
certificates written as the original tool does."""
from __future__ import annotations

import argparse

import robench
from robench import RobenchError
from robench.cli.common import Parents, check_models, examples, executor_of, load_model, output_path, progress

CORRUPT_EXAMPLES = """
    robench corrupt --suite mnist-c --dataset mnist --split test --out mnist_c/
    robench corrupt --suite mnist-c --dataset mnist --split all --out mnist_c/ --preview mnist_c.png
    robench corrupt --suite fog --dataset fashion-mnist --split test --out fog/
    robench corrupt --suite cifar10-c --dataset cifar10 --split test --out CIFAR-10-C/"""
CERTIFY_EXAMPLES = """
    robench certify --model mnist-gaussian-0.25 --sigma 0.25 --n0 100 --n 100000 --alpha 0.001 \\
        --n-examples 500 --out certify/mnist-gaussian-0.25.tsv
    robench certify --model mnist-gaussian-0.25 --sigma 0.25 --n 10000 --precision bf16 --out bf16.tsv
    robench certify --model mnist-gaussian-0.25 --mode sequential --n 1000 --n-max 100000 --out seq.tsv
    robench certify --model mnist-gaussian-0.25 --mode sequential --n 1000 --n-max 100000 --out seq.tsv \\
        --executor ray --address HEAD:6379"""


def cmd_corrupt(args: argparse.Namespace) -> None:
    if not args.out and not args.preview:
        raise RobenchError("give --out DIR (the corrupted dataset) and/or --preview FILE.png.")
    if args.out:
        out = robench.export_corruptions(args.suite, args.dataset, args.split, args.out, data_root=args.data_root,
                                         seed=args.seed, progress=progress(args))
        print(f"wrote {robench.corruption_layout(args.suite).replace('OUT', str(out))}")
    if args.preview:
        split = "test" if args.split == "all" else args.split
        print(f"wrote {robench.preview_corruptions(args.preview, args.suite, args.dataset, split, data_root=args.data_root, seed=args.seed)}")


def cmd_certify(args: argparse.Namespace) -> None:
    threat = robench.certify_threat(sigma=args.sigma, n0=args.n0, n=args.n, alpha=args.alpha, batch=args.batch,
                                    precision=args.precision, radii=args.radii, mode=args.mode, n_max=args.n_max)
    out = output_path(args.out, folder=False)
    executor = executor_of(args)
    check_models([args.model], args.dataset, args)
    model = load_model(args.model, args, args.dataset)
    result = robench.certify(model, threat, out=out, dataset=args.dataset, split=args.split, n_examples=args.n_examples,
                             label=args.model, data_root=args.data_root, store=args.store, seed=args.seed,
                             device=args.device, model_name=args.model, progress=progress(args),
                             executor=executor)
    print(f"{args.model}, {threat.canonical}, {result.record.n} examples of {args.dataset} {args.split}:")
    print("\n".join(result.lines()))
    for path in result.files.values():
        print(f"wrote {path}")


def add_corrupt(sub, parents: Parents) -> None:
    p = sub.add_parser("corrupt", parents=[parents.common, parents.data], formatter_class=parents.fmt,
                       epilog=examples(CORRUPT_EXAMPLES), help="write a corrupted copy of a dataset in the suite's published layout")
    p.add_argument("--suite", required=True,
                   help="a corruption suite (e.g. mnist-c) or one corruption's name (robench list corruptions)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--split", choices=["train", "test", "all"], default="test")
    p.add_argument("--out", help="output folder: OUT/<corruption>/<split>_images.npy (uint8 N x H x W x C) and "
                                 "_labels.npy; for cifar10-c OUT/<corruption>.npy and OUT/labels.npy")
    p.add_argument("--preview", help="also draw a grid of examples per corruption to this PNG")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_corrupt)


def add_certify(sub, parents: Parents) -> None:
    p = sub.add_parser("certify", parents=[parents.common, parents.data, parents.store, parents.weights,
                                           parents.mismatch, parents.executor], formatter_class=parents.fmt,
                       epilog=examples(CERTIFY_EXAMPLES),
                       help="randomized smoothing: certify L2 robustness (CERTIFY of Cohen et al. 2019)")
    p.add_argument("--model", required=True, help="zoo name (e.g. mnist-gaussian-0.25) or package.module:callable")
    p.add_argument("--sigma", type=float, default=0.25, help="noise level (default 0.25)")
    p.add_argument("--n0", type=int, default=100, help="noise draws to pick the class (default 100)")
    p.add_argument("--n", type=int, default=100_000,
                   help="noise draws to bound its probability (default 100000; sequential: the first look)")
    p.add_argument("--mode", choices=["fixed", "sequential"], default="fixed",
                   help="fixed: n draws per example (the paper's CERTIFY); sequential: looks of n, 2n, 4n, ... up to "
                        "--n-max, alpha split over them, stopping once the largest radius is certified or out of reach")
    p.add_argument("--n-max", type=int, help="sequential: the most draws per example (e.g. 100000)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (default 0.001)")
    p.add_argument("--batch", type=int, default=1000, help="noisy copies per forward pass (default 1000)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
                   help="radii for the certified accuracy table")
    p.add_argument("--n-examples", type=int, default=500, help="first N test points (default 500)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="per-example TSV; _certified.tsv/.png and _summary.json go beside it")
    p.set_defaults(func=cmd_certify)
