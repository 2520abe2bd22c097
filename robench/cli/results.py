"""`robench results`: list, export or delete the Records in the results store."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import robench
from robench import RobenchError
from robench.cli.common import Parents, examples

RESULTS_EXAMPLES = """
    robench results
    robench results --model 'mnist-*' --threat pgd-linf
    robench results --dataset mnist --format csv --out results.csv
    robench results --threat bitflip --delete --yes"""


def cmd_results(args: argparse.Namespace) -> None:
    store = robench.Store(args.store)
    found = robench.find_results(store, model=args.model, threat=args.threat, dataset=args.dataset)
    if args.delete:
        if not found:
            print("no stored Records match; nothing deleted.")
            return
        if not args.yes:
            sys.stdout.write(robench.render_results(found, "table"))
            raise RobenchError(f"--delete would delete the {len(found)} Records above from {store.path}; add --yes "
                               "to delete them.")
        deleted = store.delete_records([s.key for s in found], shards=args.shards)
        print(f"deleted {deleted} Records{' and their shards' if args.shards else ''} from {store.path}.")
        return
    fmt = args.format or (Path(args.out).suffix.lstrip(".").lower() if args.out else "table")
    if fmt not in ("table", "csv", "json"):
        raise RobenchError(f"cannot tell the format of {args.out} from its suffix; give --format csv or json.")
    if args.out:
        out = Path(args.out).expanduser()
        if out.is_dir():
            raise RobenchError(f"--out {args.out} is a folder; give a file, e.g. {out / ('results.' + fmt)}.")
        robench.write_results(found, out, fmt)
        print(f"wrote {len(found)} Records to {args.out}")
    elif found or fmt != "table":
        sys.stdout.write(robench.render_results(found, fmt))
    else:
        print(f"no stored Records match in {store.path}.")


def add_results(sub, parents: Parents) -> None:
    p = sub.add_parser("results", parents=[parents.common, parents.store], formatter_class=parents.fmt,
                       epilog=examples(RESULTS_EXAMPLES), help="list, export or delete the Records in the results store")
    p.add_argument("--model", help="only models matching this glob, e.g. 'mnist-*'")
    p.add_argument("--threat", help="only threats matching this glob or name, e.g. pgd-linf or 'pgd-*'")
    p.add_argument("--dataset", help="only Records of this dataset (glob)")
    p.add_argument("--format", choices=["table", "csv", "json"],
                   help="table (default), csv (the listed columns) or json (the whole Records)")
    p.add_argument("--out", help="write to this file instead of printing (format from its suffix, or --format)")
    p.add_argument("--delete", action="store_true", help="delete the selected Records (needs --yes)")
    p.add_argument("--yes", action="store_true", help="confirm --delete")
    p.add_argument("--shards", action="store_true",
                   help="with --delete, also drop their cached shards, so that a rerun recomputes them")
    p.set_defaults(func=cmd_results)
