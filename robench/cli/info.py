"""`robench info`: the version, the versions it runs with, and the locations it reads and writes."""
from __future__ import annotations

import argparse

import robench
from robench.cli.common import Parents, examples

INFO_EXAMPLES = """
    robench info
    robench info --data-root ~/data --store results.sqlite"""


def cmd_info(args: argparse.Namespace) -> None:
    facts = robench.about(data_root=args.data_root, store=args.store)
    width = max(len(f.what) for f in facts)
    value = max(len(f.value) for f in facts)
    for fact in facts:
        print(f"{fact.what.ljust(width)}  {fact.value.ljust(value)}  {fact.source}".rstrip())


def add_info(sub, parents: Parents) -> None:
    p = sub.add_parser("info", parents=[parents.common, parents.store], formatter_class=parents.fmt,
                       epilog=examples(INFO_EXAMPLES),
                       help="robench's version, the versions it runs with, and the cache, data and store in use")
    p.add_argument("--data-root", help="folder with the datasets (default: $ROBENCH_DATA or ~/.cache/robench/data)")
    p.set_defaults(func=cmd_info)
