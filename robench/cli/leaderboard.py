"""`robench leaderboard`: update, check, verify, submit to or show the leaderboards (robench.leaderboard)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import robench
from robench import RobenchError
from robench.cli.common import Parents, examples, executor_of, progress

#: examples per action; `robench leaderboard --help` shows them all
EXAMPLES = {
    "update": """
    robench leaderboard update mnist
    robench leaderboard update mnist --model mnist-small-cnn --model mnist-lenet5
    robench leaderboard update mnist-v2 --executor ray --workers 2
    robench leaderboard update mnist-v2 --executor ray --address HEAD:6379
    robench leaderboard update""",
    "check": """
    robench leaderboard check
    robench leaderboard check mnist fashion-mnist""",
    "verify": """
    robench leaderboard verify mnist mnist-small-cnn --n 100
    robench leaderboard verify mnist my-net --model-target mypkg.nets:make_model --weights model.safetensors""",
    "submit": """
    robench leaderboard submit mnist --model mypkg.nets:make_model --weights model.safetensors --as my-net
    robench leaderboard submit fashion-mnist --model mypkg.nets:make_model --out entries/my-net.json""",
    "show": """
    robench leaderboard show mnist
    robench leaderboard show mnist --format latex > mnist.tex
    robench leaderboard show fashion-mnist --format csv""",
}


def cmd_update(args: argparse.Namespace) -> None:
    leaderboard = robench.leaderboard
    executor = executor_of(args)
    for name in [args.name] if args.name else leaderboard.names():
        leaderboard.update(name, store=args.store, device=args.device, data_root=args.data_root,
                           progress=progress(args), models=args.model, executor=executor,
                           log=lambda s: print(s, file=sys.stderr))
        print(f"{name}: up to date")


def cmd_check(args: argparse.Namespace) -> None:
    leaderboard = robench.leaderboard
    failed = []
    for name in args.names or leaderboard.names():
        problems = leaderboard.Leaderboard.load(name).check()
        for problem in problems:
            print(f"{name}: {problem}", file=sys.stderr)
        print(f"{name}: {'FAILED' if problems else 'ok'}")
        if problems:
            failed.append(str(name))
    if failed:
        raise RobenchError(f"leaderboard check failed for {', '.join(failed)}; see the lines above.")


def _dataset(name: str) -> str:
    """The dataset of the leaderboard `name` (a source model is sized for it)."""
    leaderboard = robench.leaderboard
    return leaderboard.Spec.load(leaderboard.locate(name) / "spec.toml").dataset


def cmd_verify(args: argparse.Namespace) -> None:
    leaderboard = robench.leaderboard

    def submitted_model(_name: str):
        return robench.create_model(args.model_target, weights=args.weights, sha256=args.weights_sha256,
                                    dataset=_dataset(args.name), normalize=args.normalize)

    loader = submitted_model if args.model_target else None
    result = leaderboard.verify(args.name, args.model, n=args.n, seed=args.seed, device=args.device,
                                data_root=args.data_root, loader=loader, progress=progress(args),
                                log=lambda s: print(f"WARNING: {s}", flush=True))
    print(f"{args.model} on {args.name}: {len(result.indices)} examples drawn with --seed {result.seed}; the weights "
          + ("are the entry's" if result.weights_match else "DIFFER from the entry's (counts compared only)"))
    cell = robench.format_cell
    for v in result.verdicts:
        print(f"{'ok  ' if v.ok else 'FAIL'} {v.threat.split(':')[0]:<15} {v.metric:<32} "
              f"entry {cell(v.entry):<22} sample {cell(v.sample):<22} {v.how}")
    bad = [v for v in result.verdicts if not v.ok]
    if bad:
        raise RobenchError(f"{len(bad)} of {len(result.verdicts)} accuracies of the sample disagree with the entry "
                           f"(exact test p < {leaderboard.P_THRESHOLD}, or per-example outcomes that differ).")


def cmd_submit(args: argparse.Namespace) -> None:
    leaderboard = robench.leaderboard
    name = args.model.rsplit(":", 1)[-1].replace(".", "-") if args.as_name is None else args.as_name
    leaderboard.check_entry_name(name)
    model = robench.create_model(args.model, weights=args.weights, sha256=args.weights_sha256,
                                 dataset=_dataset(args.name), normalize=args.normalize, data_root=args.data_root)
    source = {"model": args.model}
    if args.weights:
        source.update(weights=Path(args.weights).name, weights_sha256=robench.file_sha256(args.weights))
    path = leaderboard.submit(args.name, model, name, source=source, out=args.out, store=args.store,
                              device=args.device, data_root=args.data_root, progress=progress(args),
                              executor=executor_of(args))
    print(f"wrote {path}: copy it to leaderboards/{args.name}/entries/{name}.json, add {name!r} to the models "
          f"of its spec.toml and run `robench leaderboard update {args.name}` to re-render.")


def cmd_show(args: argparse.Namespace) -> None:
    leaderboard = robench.leaderboard
    print(leaderboard.show(leaderboard.Leaderboard.load(args.name), args.format), end="")


def add_leaderboard(sub, parents: Parents) -> None:
    common, data, store, weights = parents.common, parents.data, parents.store, parents.weights
    p = sub.add_parser("leaderboard", parents=[common], formatter_class=parents.fmt,
                       epilog=examples("".join(EXAMPLES.values())),
                       help="update, check, verify, submit to or show the leaderboards")
    lsub = p.add_subparsers(dest="leaderboard_command", required=True, metavar="ACTION")
    lb = lsub.add_parser("update", formatter_class=parents.fmt, epilog=examples(EXAMPLES["update"]),
                         parents=[common, data, store, parents.executor],
                         help="compute missing or stale entries through the results store and re-render")
    lb.add_argument("name", nargs="?", help="leaderboard name or folder (default: all shipped leaderboards)")
    lb.add_argument("--model", action="append", help="only this model of the spec (repeatable)")
    lb.set_defaults(func=cmd_update)
    lb = lsub.add_parser("check", formatter_class=parents.fmt, epilog=examples(EXAMPLES["check"]),
                         parents=[common],
                         help="fail if a rendered file differs from its entries or an entry from the spec (fast)")
    lb.add_argument("names", nargs="*", metavar="NAME", help="leaderboard names or folders (default: all)")
    lb.set_defaults(func=cmd_check)
    lb = lsub.add_parser("verify", formatter_class=parents.fmt, epilog=examples(EXAMPLES["verify"]),
                         parents=[common, data, weights],
                         help="recompute a random sample of an entry and compare it with the entry's counts")
    lb.add_argument("name", help="leaderboard name or folder")
    lb.add_argument("model", help="the entry's model name")
    lb.add_argument("--n", type=int, default=100, help="examples to recompute (default 100)")
    lb.add_argument("--seed", type=int, help="seed of the sample (default: random, printed)")
    lb.add_argument("--model-target", default="", help="package.module:callable of a submitted entry's model")
    lb.set_defaults(func=cmd_verify)
    lb = lsub.add_parser("submit", formatter_class=parents.fmt, epilog=examples(EXAMPLES["submit"]),
                         parents=[common, data, store, weights, parents.executor],
                         help="evaluate your model under a leaderboard's exact protocol and write an entry file")
    lb.add_argument("name", help="leaderboard name or folder")
    lb.add_argument("--model", required=True, help="package.module:callable returning an nn.Module")
    lb.add_argument("--as", dest="as_name", help="the model's name on the leaderboard, its entry's file name: "
                    "ASCII letters, digits, '.', '_', '-' (default: the callable)")
    lb.add_argument("--out", help="entry file to write (default NAME.json in the current folder)")
    lb.set_defaults(func=cmd_submit)
    lb = lsub.add_parser("show", formatter_class=parents.fmt, epilog=examples(EXAMPLES["show"]),
                         parents=[common], help="print a leaderboard's headline table for papers")
    lb.add_argument("name", help="leaderboard name or folder")
    lb.add_argument("--format", choices=["markdown", "csv", "latex", "table"], default="markdown",
                    help="markdown (default), csv, latex (a booktabs tabular for pdflatex) or table (120 columns)")
    lb.set_defaults(func=cmd_show)
