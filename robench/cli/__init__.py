"""The `robench` command. It parses arguments and calls the public API (`robench.<name>`,
`robench.leaderboard.<name>`) and nothing deeper; one module per command group: listing (list, zoo),
run (run, quickstart), data (corrupt, certify), results, leaderboard, info.

Start-up is light: this package imports no torch, so `robench --help` and `robench --version` answer at
once; the heavy modules load inside `main` when a command first needs them, so a Ctrl-C at any point
exits with 130 and one line."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

import robench
from robench import RobenchError
from robench.cli import data, info, leaderboard, listing, results, run
from robench.cli.common import examples, parents
from robench.cli.run import _write_outputs  # noqa: F401 (robench.write_outputs; kept for callers of the old name)

__all__ = ["main", "build_parser", "version_text"]


def version_text() -> str:
    """The line `robench --version` prints: "robench VERSION", and the git commit when robench runs from a
    checkout."""
    commit = robench.git_commit()
    return f"robench {robench.__version__}" + (f" (git commit {commit})" if commit else "")


class _Version(argparse.Action):
    """--version: print `version_text()` and exit (the git commit is looked up only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


MAIN_EXAMPLES = """
    robench quickstart
    robench run --model mnist-small-cnn --threat "pgd-linf:eps=0.1|0.3" --n 1000
    robench info"""


def build_parser() -> argparse.ArgumentParser:
    shared = parents()
    parser = argparse.ArgumentParser(prog="robench", formatter_class=shared.fmt, parents=[shared.common],
                                     description="Evaluate PyTorch image classifiers against many threats at once.",
                                     epilog=examples(MAIN_EXAMPLES) + f"\nEach command has --help with examples.\n"
                                            f"This is {version_text()}.\n`robench info` lists the "
                                            "cache, data and results-store locations in use.")
    parser.add_argument("--version", action=_Version, help="print robench's version (and git commit) and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (listing.add_list, listing.add_zoo, run.add_run, data.add_corrupt, data.add_certify,
                run.add_quickstart, results.add_results, leaderboard.add_leaderboard, info.add_info):
        add(sub, shared)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    kind = "" if category is UserWarning else f"{category.__name__}: "
    print(f"robench: warning: {kind}{' '.join(str(message).splitlines())}", file=file or sys.stderr)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit after a closed pipe stays quiet."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a file descriptor (e.g. captured by a test)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv`: 0 on success, 2 on bad input (one line on stderr), 130 on Ctrl-C
    (also while the heavy modules import). Warnings print as one line each; a reader that closes the
    pipe early (`robench ... | head`) ends it quietly."""
    args = None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args = build_parser().parse_args(argv)
            if getattr(args, "device", None):
                robench.resolve_device(args.device)
            args.func(args)
            sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return 0
    except RobenchError as exc:
        if args is not None and args.debug:
            raise
        print(f"robench: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumes = "; finished shards are in the results store, so the same command resumes where it stopped"
        print(f"robench: interrupted{resumes if hasattr(args, 'store') else ''}.", file=sys.stderr)
        return 130
    return 0
