"""`robench list` and `robench zoo`: what is registered, and the zoo's models."""
from __future__ import annotations

import argparse

import robench
from robench.cli.common import Parents, examples, progress

LIST_EXAMPLES = """
    robench list threats
    robench list threats 'pgd-*'
    robench list attacks
    robench list corruptions
    robench list certifiers
    robench list defenses
    robench list models
    robench list sources"""
ZOO_LIST_EXAMPLES = """
    robench zoo list"""
ZOO_TRAIN_EXAMPLES = """
    robench zoo train mnist-small-cnn
    robench zoo train mnist-lenet5 mnist-mlp --data-root ~/data
    robench zoo train mnist-small-cnn --force"""
ZOO_EXAMPLES = ZOO_LIST_EXAMPLES + ZOO_TRAIN_EXAMPLES
#: `robench list FAMILY` (robench.describe_plugins)
FAMILIES = ["threats", "attacks", "corruptions", "certifiers", "defenses", "models", "sources", "datasets"]


def _print_columns(rows: list[tuple[str, ...]]) -> None:
    """Rows as columns aligned to their widest cell; the last column is not padded."""
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(len(rows[0]) - 1)] if rows else []
    for row in rows:
        print("  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]).rstrip())


def cmd_list(args: argparse.Namespace) -> None:
    plugins = robench.describe_plugins(args.family, args.pattern)
    if args.family in ("threats", "defenses"):  # a threat's family; a defense's stage (training- or inference-time)
        _print_columns([(p.name, p.kind, p.description) for p in plugins])
    else:
        _print_columns([(p.name, p.description) for p in plugins])


def cmd_zoo_list(args: argparse.Namespace) -> None:
    rows = [("name", "dataset", "arch", "recipe", "cached", "description")]
    for name in robench.list_models():
        e = robench.model_entry(name)
        recipe = e.recipe.defense or "standard"
        rows.append((name, e.dataset, e.arch, f"{recipe}, {e.recipe.epochs} ep", "yes" if e.is_cached() else "no",
                     e.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])


def cmd_zoo_train(args: argparse.Namespace) -> None:
    for name in args.names:
        entry = robench.model_entry(name)
        if entry.is_cached() and not args.force:
            print(f"{name}: already cached at {entry.cache_path} (use --force to retrain)")
            continue
        entry.train(data_root=args.data_root, device=args.device or "cpu", progress=progress(args))  # says what it wrote


def add_list(sub, parents: Parents) -> None:
    p = sub.add_parser("list", parents=[parents.common], formatter_class=parents.fmt, epilog=examples(LIST_EXAMPLES),
                       help="list usable threats, or registered attacks, corruptions, certifiers, defenses, "
                            "models, model sources or datasets")
    p.add_argument("family", choices=FAMILIES,
                   help="threats: every name usable in --threat, with its family and what it measures")
    p.add_argument("pattern", nargs="?", default="*", help="glob filter, e.g. 'foolbox:*'")
    p.set_defaults(func=cmd_list)


def add_zoo(sub, parents: Parents) -> None:
    p = sub.add_parser("zoo", parents=[parents.common], formatter_class=parents.fmt, epilog=examples(ZOO_EXAMPLES),
                       help="list or train zoo models")
    zsub = p.add_subparsers(dest="zoo_command", required=True, metavar="ACTION")
    z = zsub.add_parser("list", parents=[parents.common], formatter_class=parents.fmt,
                        epilog=examples(ZOO_LIST_EXAMPLES), help="zoo entries and whether their weights are cached")
    z.set_defaults(func=cmd_zoo_list)
    z = zsub.add_parser("train", parents=[parents.common, parents.data], formatter_class=parents.fmt,
                        epilog=examples(ZOO_TRAIN_EXAMPLES),
                        help="train zoo entries and cache their weights (each says how long it takes, first)")
    z.add_argument("names", nargs="+", metavar="NAME")
    z.add_argument("--force", action="store_true", help="retrain even if cached")
    z.set_defaults(func=cmd_zoo_train)
