"""What the commands share: progress, the table width, --out and --indices checks, the zoo dataset check,
the examples epilogs and the parent parsers of the common options. Like every module of robench.cli, it
uses the public API only."""
from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple, Sequence

import robench
from robench import RobenchError


def progress(args: argparse.Namespace) -> bool:
    """Whether to report progress (unless --quiet): a bar on a terminal, a line every ~15 s elsewhere."""
    return not args.quiet


def table_width() -> int:
    """The width to fit tables to: the terminal's when stdout is one, else 120 columns."""
    return shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else 120


def examples(text: str) -> str:
    """An epilog "examples:" from an indented block of command lines (quoted so that they paste into bash)."""
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "  ") + "\n"


def parse_indices(text: str | None) -> list[int] | None:
    """--indices: "0,5,9" or ranges "0:100" (STOP excluded), each index once; None when not given."""
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition(":")
        try:
            chunk = range(int(lo), int(hi)) if sep else [int(lo)]
        except ValueError:
            raise RobenchError(f"--indices {text!r}: write indices as 0,5,9 or ranges as 0:100.") from None
        if not chunk:
            raise RobenchError(f"--indices {text!r}: {part} is an empty range; write START:STOP with START < STOP "
                               "(STOP excluded), e.g. 0:100.")
        out.extend(chunk)
    robench.check_indices(out, f"--indices {text!r}")
    return out


def output_path(text: str, *, folder: bool) -> Path:
    """The --out path `text` of an output folder (or file), refused before any work if it cannot be one."""
    path = Path(text).expanduser().absolute()
    if folder and path.exists() and not path.is_dir():
        raise RobenchError(f"--out {text} is an existing file; give a folder (for records.json, results.md, "
                           "results.csv and the figures).")
    if not folder and path.is_dir():
        raise RobenchError(f"--out {text} is a folder; give the path of the per-example TSV, e.g. "
                           f"{Path(text) / 'certify.tsv'}.")
    nearest = next(p for p in (path if folder else path.parent, *path.parents) if p.exists())  # it must hold the rest
    if not nearest.is_dir():
        raise RobenchError(f"--out {text} cannot be created: {nearest} is a file, not a folder.")
    return path


def check_models(models: Sequence[str], dataset: str, args: argparse.Namespace) -> None:
    """Refuse, before any work, unknown zoo names and zoo models trained on another dataset."""
    for name in models:
        if ":" in name:  # package.module:callable
            continue
        trained_on = robench.model_entry(name).dataset
        if trained_on != dataset and not getattr(args, "allow_dataset_mismatch", False):
            raise RobenchError(f"zoo model {name!r} was trained on {trained_on}, not {dataset}; evaluate it on "
                               f"{trained_on} (--dataset {trained_on}), or add --allow-dataset-mismatch to "
                               f"evaluate it on {dataset} anyway.")


def load_model(name: str, args: argparse.Namespace, dataset: str | None = None):
    """The model `name` (zoo name, source:name or package.module:callable) with the command's --weights and
    --normalize options, sized for `dataset` where the source needs it."""
    return robench.create_model(name, weights=args.weights, sha256=args.weights_sha256, dataset=dataset,
                                normalize=getattr(args, "normalize", None), data_root=args.data_root,
                                progress=progress(args))


class Parents(NamedTuple):
    """Parent parsers of the options several commands share."""

    common: argparse.ArgumentParser
    data: argparse.ArgumentParser
    store: argparse.ArgumentParser
    weights: argparse.ArgumentParser
    mismatch: argparse.ArgumentParser
    executor: argparse.ArgumentParser
    fmt: type = argparse.RawDescriptionHelpFormatter


def parents() -> Parents:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true",
                        help="no progress: no bars, no progress lines, no notes on zoo training")
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-root", help="folder with the datasets (default: $ROBENCH_DATA or ~/.cache/robench/data)")
    data.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--store", help="results store (default ~/.cache/robench/results.sqlite)")
    weights = argparse.ArgumentParser(add_help=False)
    weights.add_argument("--weights", help="weights of a package.module:callable, timm:ARCH or torchvision:ARCH "
                                           "model: a safetensors file or a weights-only torch checkpoint (or an "
                                           "https URL with --weights-sha256)")
    weights.add_argument("--weights-sha256", help="expected sha256 of --weights")
    weights.add_argument("--normalize", metavar="MEAN,STD",
                         help="the model's input normalisation, put inside it: MEAN,STD, per-channel means then "
                              "stds, a dataset name (cifar10) or none; replaces a timm/torchvision model's own "
                              "(from its configuration), goes in front of any other model")
    mismatch = argparse.ArgumentParser(add_help=False)
    mismatch.add_argument("--allow-dataset-mismatch", action="store_true",
                          help="evaluate zoo models on another dataset than the one they were trained on")
    executor = argparse.ArgumentParser(add_help=False)
    executor.add_argument("--executor", choices=["local", "ray"], default="local",
                          help="where shards run: in this process (default) or on Ray (pip install 'robench[ray]')")
    executor.add_argument("--address", help="Ray cluster to join, e.g. HEAD:6379 (default: a local Ray instance)")
    executor.add_argument("--workers", type=int, help="Ray tasks at once (default: every CPU of the cluster)")
    executor.add_argument("--gpus-per-task", type=float, metavar="G",
                          help="GPUs each Ray task asks for (1, or a fraction such as 0.25 to share one); use with "
                               "--device cuda")
    return Parents(common, data, store, weights, mismatch, executor)


def executor_of(args: argparse.Namespace):
    """The executor the --executor, --address, --workers and --gpus-per-task options ask for."""
    return robench.get_executor(args.executor, args.address, args.workers, args.gpus_per_task)
