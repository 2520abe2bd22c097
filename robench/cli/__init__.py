"""The `robench` command. It calls the public API and nothing deeper."""
from __future__ import annotations

import argparse
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Sequence

from robench.errors import RobenchError


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _doc(obj: object) -> str:
    return (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]


def cmd_list(args: argparse.Namespace) -> None:
    from robench.registry import ATTACKS, CERTIFIERS, CORRUPTIONS, DATASETS, DEFENSES, MODELS, describe, threat_families

    if args.family == "threats":  # every usable threat: name, family, what it measures
        rows = [(name, registry.family.rstrip("s"), describe(registry.get(name)))
                for name, registry in threat_families(args.pattern).items()]
    else:
        registry = {"attacks": ATTACKS, "corruptions": CORRUPTIONS, "certifiers": CERTIFIERS, "defenses": DEFENSES,
                    "models": MODELS, "datasets": DATASETS}[args.family]
        rows = [(name, _defense_stage(registry.get(name)), describe(registry.get(name))) if registry is DEFENSES
                else (name, describe(registry.get(name))) for name in registry.names(args.pattern)]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(len(rows[0]) - 1)] if rows else []
    for row in rows:
        print("  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]).rstrip())


def _defense_stage(entry: object) -> str:
    from robench.defenses.base import InferenceDefense, TrainingDefense

    if isinstance(entry, type) and issubclass(entry, TrainingDefense):
        return "training-time"
    if isinstance(entry, type) and issubclass(entry, InferenceDefense):
        return "inference-time"
    return ""


def cmd_zoo_list(args: argparse.Namespace) -> None:
    from robench import zoo
    from robench.registry import MODELS

    rows = [("name", "dataset", "arch", "recipe", "cached", "description")]
    for name in MODELS.names():
        e = zoo.get(name)
        recipe = e.recipe.defense or "standard"
        rows.append((name, e.dataset, e.arch, f"{recipe}, {e.recipe.epochs} ep", "yes" if e.is_cached() else "no",
                     e.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])


def cmd_zoo_train(args: argparse.Namespace) -> None:
    from robench import zoo

    for name in args.names:
        entry = zoo.get(name)
        if entry.is_cached() and not args.force:
            print(f"{name}: already cached at {entry.cache_path} (use --force to retrain)")
            continue
        start = time.perf_counter()
        entry.train(data_root=args.data_root, device=args.device or "cpu", progress=_progress(args))
        print(f"{name}: trained in {time.perf_counter() - start:.0f} s, cached at {entry.cache_path}")


def _parse_indices(text: str | None) -> list[int] | None:
    from robench.spec import check_indices

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
    check_indices(out, f"--indices {text!r}")
    return out


def _output_path(text: str, *, folder: bool) -> Path:
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


def _check_models(models: Sequence[str], dataset: str, args: argparse.Namespace) -> None:
    """Refuse, before any work, unknown zoo names and zoo models trained on another dataset."""
    from robench import zoo

    for name in models:
        if ":" in name:  # package.module:callable
            continue
        trained_on = zoo.get(name).dataset
        if trained_on != dataset and not getattr(args, "allow_dataset_mismatch", False):
            raise RobenchError(f"zoo model {name!r} was trained on {trained_on}, not {dataset}; evaluate it on "
                               f"{trained_on} (--dataset {trained_on}), or add --allow-dataset-mismatch to "
                               f"evaluate it on {dataset} anyway.")


def _write_outputs(records, out: Path) -> list[Path]:
    """records.json, results.md and results.csv, and one figure per kind of curve the Records' threats
    report (robench.report.Curve.figure: robustness_curve.png, corruption_accuracy.png, ...)."""
    from robench import plots, tables
    from robench.files import atomic_write
    from robench.report import report_of

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fmt in (("records.json", "json"), ("results.md", "markdown"), ("results.csv", "csv")):
        atomic_write(out / name, tables.render(records, fmt))
        written.append(out / name)
    titles = tables.threat_titles(r.threat for r in records)
    figures: dict[str, list] = {}
    for r in records:
        for curve in report_of(r.threat, r.metrics).curves:
            figures.setdefault(curve.figure, []).append((r, curve))
    for figure, drawn in figures.items():
        one_threat = len({r.threat for r, _ in drawn}) == 1
        series: dict[str, list] = {}
        for r, curve in drawn:
            label = r.model if one_threat else f"{r.model} ({titles[r.threat]})"
            copy = 1
            while label in series:
                copy += 1
                label = f"{r.model} ({copy})" if one_threat else f"{r.model} ({titles[r.threat]}, {copy})"
            series[label] = list(curve.points)
        first = drawn[0][1]
        datasets = sorted({r.dataset for r, _ in drawn})
        title = ", ".join(dict.fromkeys(c.title for _, c in drawn)) + f" on {', '.join(datasets)}"
        path = out / f"{figure}.png"
        if first.style == "bars":
            written.append(plots.bars({k: {p[0]: tuple(p[1:]) for p in v} for k, v in series.items()}, path,
                                      ylabel=first.y, title=title))
        else:
            written.append(plots.curves(series, path, xlabel=first.x, ylabel=first.y, title=title))
    return written


def _run(models: Sequence[str], threats: Sequence[str], args: argparse.Namespace, *, dataset: str, split: str,
         n: int | None, indices: list[int] | None, seed: int):
    from tqdm.auto import tqdm

    from robench import zoo
    from robench.evaluate import evaluate
    from robench.executors import get_executor
    from robench.store import Store
    from robench.threats import build_threat

    built = [build_threat(t) for t in threats]  # check every spec and model before any work starts
    _check_models(models, dataset, args)
    executor = get_executor(getattr(args, "executor", "local"), getattr(args, "address", None),
                            getattr(args, "workers", None), getattr(args, "gpus_per_task", None))
    store = Store(args.store)
    records = []
    grid = tqdm(total=len(models) * len(built), desc="grid", unit="threat",
                disable=not _progress(args) or len(models) < 2)  # aggregate over models; evaluate bars each threat
    for name in models:
        model = zoo.resolve(name, weights=args.weights, sha256=args.weights_sha256, data_root=args.data_root,
                            progress=_progress(args))
        records += evaluate(model, built, dataset=dataset, split=split, n=n, indices=indices,
                            data_root=args.data_root, store=store, seed=seed, device=args.device,
                            model_name=name, progress=_progress(args), executor=executor)
        grid.update(len(built))
    grid.close()
    return records


def cmd_run(args: argparse.Namespace) -> None:
    from robench import tables
    from robench.spec import Benchmark

    if args.spec:
        bench = Benchmark.load(args.spec)
        models = args.model or bench.models
        threats = args.threat or bench.threats
        dataset, split = args.dataset or bench.dataset, args.split or bench.split
        n, indices = args.n if args.n is not None else bench.n, _parse_indices(args.indices) or bench.indices
        seed = args.seed if args.seed is not None else bench.seed
    else:
        if not args.model or not args.threat:
            raise RobenchError("give --model and --threat (or a benchmark file); see `robench run --help`.")
        models, threats = args.model, args.threat
        dataset, split, n = args.dataset or "mnist", args.split or "test", args.n
        indices, seed = _parse_indices(args.indices), args.seed or 0
    if n is not None and indices is not None:
        n = None if not args.n else n
    out = _output_path(args.out, folder=True) if args.out else None
    records = _run(models, threats, args, dataset=dataset, split=split, n=n, indices=indices, seed=seed)
    print(tables.render(records, args.format), end="")
    if out:
        for path in _write_outputs(records, out):
            print(f"wrote {path}", file=sys.stderr)


def cmd_quickstart(args: argparse.Namespace) -> None:
    """The benchmark files quickstart.toml and quickstart-certify.toml shipped with robench (robench/benchmarks),
    on the first --n points (a file's own n caps it)."""
    from robench import tables
    from robench.spec import Benchmark

    start = time.perf_counter()
    out = _output_path(args.out, folder=True)
    runs = [Benchmark.preset("quickstart"), Benchmark.preset("quickstart-certify")]
    sizes = [args.n if b.n is None else min(b.n, args.n) for b in runs]
    print(f"robench quickstart: {', '.join(runs[0].models)} on the embedded MNIST digits ({runs[0].dataset}, "
          f"first {sizes[0]} test points; {sizes[1]} for certification), offline.", file=sys.stderr)
    records = []
    for bench, n in zip(runs, sizes):
        records += _run(bench.models, bench.threats, args, dataset=bench.dataset, split=bench.split, n=n,
                        indices=None, seed=bench.seed)
    print(tables.render(records, "table"), end="")
    for path in _write_outputs(records, out):
        print(f"wrote {path}")
    print(f"done in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def cmd_results(args: argparse.Namespace) -> None:
    from robench import results
    from robench.files import atomic_write
    from robench.store import Store

    store = Store(args.store)
    found = results.find(store, model=args.model, threat=args.threat, dataset=args.dataset)
    if args.delete:
        if not found:
            print("no stored Records match; nothing deleted.")
            return
        if not args.yes:
            sys.stdout.write(results.render(found, "table"))
            raise RobenchError(f"--delete would delete the {len(found)} Records above from {store.path}; add --yes "
                               "to delete them.")
        deleted = store.delete_records([s.key for s in found], shards=args.shards)
        print(f"deleted {deleted} Records{' and their shards' if args.shards else ''} from {store.path}.")
        return
    fmt = args.format or (Path(args.out).suffix.lstrip(".").lower() if args.out else "table")
    if fmt not in ("table", "csv", "json"):
        raise RobenchError(f"cannot tell the format of {args.out} from its suffix; give --format csv or json.")
    text = results.render(found, fmt)
    if args.out:
        out = Path(args.out).expanduser()
        if out.is_dir():
            raise RobenchError(f"--out {args.out} is a folder; give a file, e.g. {out / ('results.' + fmt)}.")
        atomic_write(out, text)
        print(f"wrote {len(found)} Records to {args.out}")
    elif found or fmt != "table":
        sys.stdout.write(text)
    else:
        print(f"no stored Records match in {store.path}.")


def cmd_leaderboard_update(args: argparse.Namespace) -> None:
    from robench import leaderboard

    for name in [args.name] if args.name else leaderboard.names():
        leaderboard.update(name, store=args.store, device=args.device, data_root=args.data_root,
                           progress=_progress(args), models=args.model, log=lambda s: print(s, file=sys.stderr))
        print(f"{name}: up to date")


def cmd_leaderboard_check(args: argparse.Namespace) -> None:
    from robench import leaderboard

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


def cmd_leaderboard_verify(args: argparse.Namespace) -> None:
    from robench import leaderboard, zoo
    from robench.tables import format_cell

    def submitted_model(_name: str):
        return zoo.resolve(args.model_target, weights=args.weights, sha256=args.weights_sha256)

    loader = submitted_model if args.model_target else None
    result = leaderboard.verify(args.name, args.model, n=args.n, seed=args.seed, device=args.device,
                                data_root=args.data_root, loader=loader, progress=_progress(args),
                                log=lambda s: print(f"WARNING: {s}", flush=True))
    print(f"{args.model} on {args.name}: {len(result.indices)} examples drawn with --seed {result.seed}; the weights "
          + ("are the entry's" if result.weights_match else "DIFFER from the entry's (counts compared only)"))
    for v in result.verdicts:
        print(f"{'ok  ' if v.ok else 'FAIL'} {v.threat.split(':')[0]:<15} {v.metric:<32} "
              f"entry {format_cell(v.entry):<22} sample {format_cell(v.sample):<22} {v.how}")
    bad = [v for v in result.verdicts if not v.ok]
    if bad:
        raise RobenchError(f"{len(bad)} of {len(result.verdicts)} accuracies of the sample disagree with the entry "
                           f"(exact test p < {leaderboard.P_THRESHOLD}, or per-example outcomes that differ).")


def cmd_leaderboard_submit(args: argparse.Namespace) -> None:
    from robench import leaderboard, zoo
    from robench.data import file_digest

    name = args.model.rsplit(":", 1)[-1].replace(".", "-") if args.as_name is None else args.as_name
    leaderboard.check_entry_name(name)
    model = zoo.resolve(args.model, weights=args.weights, sha256=args.weights_sha256, data_root=args.data_root)
    source = {"model": args.model}
    if args.weights:
        source.update(weights=Path(args.weights).name, weights_sha256=file_digest(Path(args.weights), "sha256"))
    path = leaderboard.submit(args.name, model, name, source=source, out=args.out, store=args.store,
                              device=args.device, data_root=args.data_root, progress=_progress(args))
    print(f"wrote {path}: copy it to leaderboards/{args.name}/entries/{name}.json, add {name!r} to the models "
          f"of its spec.toml and run `robench leaderboard update {args.name}` to re-render.")


def cmd_leaderboard_show(args: argparse.Namespace) -> None:
    from robench import leaderboard

    print(leaderboard.show(leaderboard.Leaderboard.load(args.name), args.format), end="")


def cmd_corrupt(args: argparse.Namespace) -> None:
    from robench.corruptions.export import export_suite, preview

    if not args.out and not args.preview:
        raise RobenchError("give --out DIR (the corrupted dataset) and/or --preview FILE.png.")
    if args.out:
        out = export_suite(args.suite, args.dataset, args.split, args.out, data_root=args.data_root, seed=args.seed,
                           progress=_progress(args))
        print(f"wrote {out}/<corruption>/<split>_images.npy and _labels.npy")
    if args.preview:
        print(f"wrote {preview(args.preview, args.suite, args.dataset, 'test' if args.split == 'all' else args.split, data_root=args.data_root, seed=args.seed)}")


def cmd_certify(args: argparse.Namespace) -> None:
    from robench import zoo
    from robench.defenses.smoothing import certify_threat, summary_lines, write_certification
    from robench.evaluate import evaluate

    threat = certify_threat(sigma=args.sigma, n0=args.n0, n=args.n, alpha=args.alpha, batch=args.batch,
                            precision=args.precision, radii=args.radii)
    out = _output_path(args.out, folder=False)
    _check_models([args.model], args.dataset, args)
    model = zoo.resolve(args.model, weights=args.weights, sha256=args.weights_sha256, data_root=args.data_root,
                        progress=_progress(args))
    record, = evaluate(model, threat, dataset=args.dataset, split=args.split, n=args.n_examples,
                       data_root=args.data_root, store=args.store, seed=args.seed, device=args.device,
                       model_name=args.model, progress=_progress(args), with_outputs=True)
    summary = write_certification(threat, record.outputs, range(record.n), out, label=args.model)
    print(f"{args.model}, {threat.canonical}, {record.n} examples of {args.dataset} {args.split}:")
    print("\n".join(summary_lines(summary)))
    for path in summary["files"].values():
        print(f"wrote {path}")


EXAMPLES = {
    "list": """
        robench list threats
        robench list threats 'pgd-*'
        robench list attacks
        robench list corruptions
        robench list certifiers
        robench list defenses
        robench list models""",
    "zoo": """
        robench zoo list
        robench zoo train mnist-small-cnn --data-root ~/data""",
    "run": """
        robench run --model mnist-small-cnn --threat pgd-linf:eps=0.1|0.2|0.3 --n 1000
        robench run --model mnist-small-cnn --threat foolbox:LinfDeepFoolAttack:eps=0.1 --format json
        robench run --model mypkg.nets:make_model --weights model.safetensors --threat fgsm:eps=0.1
        robench run bench.toml --out results/
        robench run bench.toml --executor ray --address HEAD:6379
        robench run bench.toml --executor ray --address HEAD:6379 --device cuda --gpus-per-task 0.5""",
    "corrupt": """
        robench corrupt --suite mnist-c --dataset mnist --split test --out mnist_c/
        robench corrupt --suite mnist-c --dataset mnist --split all --out mnist_c/ --preview mnist_c.png
        robench corrupt --suite fog --dataset fashion-mnist --split test --out fog/""",
    "certify": """
        robench certify --model mnist-gaussian-0.25 --sigma 0.25 --n0 100 --n 100000 --alpha 0.001 \\
            --n-examples 500 --out certify/mnist-gaussian-0.25.tsv
        robench certify --model mnist-gaussian-0.25 --sigma 0.25 --n 10000 --precision bf16 --out bf16.tsv""",
    "quickstart": """
        robench quickstart
        robench quickstart --out /tmp/qs --n 200""",
    "results": """
        robench results
        robench results --model 'mnist-*' --threat pgd-linf
        robench results --dataset mnist --format csv --out results.csv
        robench results --threat bitflip --delete --yes""",
    "leaderboard": """
        robench leaderboard check
        robench leaderboard update mnist
        robench leaderboard verify mnist mnist-small-cnn --n 100
        robench leaderboard submit mnist --model mypkg.nets:make_model --weights model.safetensors
        robench leaderboard show mnist --format latex""",
}


def _examples(name: str) -> str:
    return "examples:" + textwrap.dedent(EXAMPLES[name]).rstrip() + "\n"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-root", help="folder with the datasets (default: $ROBENCH_DATA or ~/.cache/robench/data)")
    data.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--store", help="results store (default ~/.cache/robench/results.sqlite)")
    weights = argparse.ArgumentParser(add_help=False)
    weights.add_argument("--weights", help="weights of a package.module:callable model (safetensors or .pt)")
    weights.add_argument("--weights-sha256", help="expected sha256 of --weights")
    mismatch = argparse.ArgumentParser(add_help=False)
    mismatch.add_argument("--allow-dataset-mismatch", action="store_true",
                          help="evaluate zoo models on another dataset than the one they were trained on")
    fmt = argparse.RawDescriptionHelpFormatter

    parser = argparse.ArgumentParser(prog="robench", formatter_class=fmt, parents=[common],
                                     description="Evaluate PyTorch image classifiers against many threats at once.",
                                     epilog="examples:\n  robench quickstart\n  robench run --model mnist-small-cnn "
                                            "--threat pgd-linf:eps=0.3 --n 1000\n\n"
                                            "Each command has --help with examples.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", parents=[common], formatter_class=fmt, epilog=_examples("list"),
                       help="list usable threats, or registered attacks, corruptions, certifiers, defenses, "
                            "models or datasets")
    p.add_argument("family", choices=["threats", "attacks", "corruptions", "certifiers", "defenses", "models",
                                      "datasets"],
                   help="threats: every name usable in --threat, with its family and what it measures")
    p.add_argument("pattern", nargs="?", default="*", help="glob filter, e.g. 'foolbox:*'")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("zoo", parents=[common], formatter_class=fmt, epilog=_examples("zoo"),
                       help="list or train zoo models")
    zsub = p.add_subparsers(dest="zoo_command", required=True, metavar="ACTION")
    z = zsub.add_parser("list", parents=[common], help="zoo entries and whether their weights are cached")
    z.set_defaults(func=cmd_zoo_list)
    z = zsub.add_parser("train", parents=[common, data], help="train zoo entries and cache their weights")
    z.add_argument("names", nargs="+", metavar="NAME")
    z.add_argument("--force", action="store_true", help="retrain even if cached")
    z.set_defaults(func=cmd_zoo_train)

    p = sub.add_parser("run", parents=[common, data, store, weights, mismatch], formatter_class=fmt,
                       epilog=_examples("run"),
                       help="evaluate models under threats")
    p.add_argument("spec", nargs="?", help="benchmark file (TOML: models, threats, dataset, split, n, indices, seed)")
    p.add_argument("--model", action="append", help="zoo name or package.module:callable (repeatable)")
    p.add_argument("--threat", action="append", help="threat spec, e.g. pgd-linf:eps=0.1|0.3,steps=40 (repeatable)")
    p.add_argument("--dataset", help="dataset name (robench list datasets; default mnist)")
    p.add_argument("--split", choices=["train", "test"], help="default test")
    p.add_argument("--n", type=int, help="evaluate the first N examples")
    p.add_argument("--indices", help="explicit example indices, e.g. 0,5,9 or 0:100")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="folder for records.json, results.md, results.csv and figures")
    p.add_argument("--format", choices=["table", "json", "csv", "markdown"], default="table")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where shards run: in this process (default) or on Ray (pip install 'robench[ray]')")
    p.add_argument("--address", help="Ray cluster to join, e.g. HEAD:6379 (default: a local Ray instance)")
    p.add_argument("--workers", type=int, help="Ray tasks at once (default: every CPU of the cluster)")
    p.add_argument("--gpus-per-task", type=float, metavar="G",
                   help="GPUs each Ray task asks for (1, or a fraction such as 0.25 to share one); use with "
                        "--device cuda")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("corrupt", parents=[common, data], formatter_class=fmt, epilog=_examples("corrupt"),
                       help="write a corrupted copy of a dataset in the MNIST-C layout")
    p.add_argument("--suite", required=True,
                   help="a corruption suite (e.g. mnist-c) or one corruption's name (robench list corruptions)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--split", choices=["train", "test", "all"], default="test")
    p.add_argument("--out", help="output folder: OUT/<corruption>/<split>_images.npy (uint8 N x 28 x 28 x 1)")
    p.add_argument("--preview", help="also draw a grid of examples per corruption to this PNG")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_corrupt)

    p = sub.add_parser("certify", parents=[common, data, store, weights, mismatch], formatter_class=fmt,
                       epilog=_examples("certify"),
                       help="randomized smoothing: certify L2 robustness (CERTIFY of Cohen et al. 2019)")
    p.add_argument("--model", required=True, help="zoo name (e.g. mnist-gaussian-0.25) or package.module:callable")
    p.add_argument("--sigma", type=float, default=0.25, help="noise level (default 0.25)")
    p.add_argument("--n0", type=int, default=100, help="noise draws to pick the class (default 100)")
    p.add_argument("--n", type=int, default=100_000, help="noise draws to bound its probability (default 100000)")
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

    p = sub.add_parser("quickstart", parents=[common, data, store], formatter_class=fmt, epilog=_examples("quickstart"),
                       help="offline demo: train small models on the embedded digits and attack them")
    p.add_argument("--out", default="robench-out/quickstart", help="output folder (default robench-out/quickstart)")
    p.add_argument("--n", type=int, default=500, help="test points (default 500)")
    p.set_defaults(func=cmd_quickstart, weights=None, weights_sha256=None)
    p = sub.add_parser("results", parents=[common, store], formatter_class=fmt, epilog=_examples("results"),
                       help="list, export or delete the Records in the results store")
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

    p = sub.add_parser("leaderboard", parents=[common], formatter_class=fmt, epilog=_examples("leaderboard"),
                       help="update, check, verify, submit to or show the leaderboards")
    lsub = p.add_subparsers(dest="leaderboard_command", required=True, metavar="ACTION")
    lb = lsub.add_parser("update", parents=[common, data, store],
                         help="compute missing or stale entries through the results store and re-render")
    lb.add_argument("name", nargs="?", help="leaderboard name or folder (default: all shipped leaderboards)")
    lb.add_argument("--model", action="append", help="only this model of the spec (repeatable)")
    lb.set_defaults(func=cmd_leaderboard_update)
    lb = lsub.add_parser("check", parents=[common],
                         help="fail if a rendered file differs from its entries or an entry from the spec (fast)")
    lb.add_argument("names", nargs="*", metavar="NAME", help="leaderboard names or folders (default: all)")
    lb.set_defaults(func=cmd_leaderboard_check)
    lb = lsub.add_parser("verify", parents=[common, data, weights],
                         help="recompute a random sample of an entry and compare it with the entry's counts")
    lb.add_argument("name", help="leaderboard name or folder")
    lb.add_argument("model", help="the entry's model name")
    lb.add_argument("--n", type=int, default=100, help="examples to recompute (default 100)")
    lb.add_argument("--seed", type=int, help="seed of the sample (default: random, printed)")
    lb.add_argument("--model-target", default="", help="package.module:callable of a submitted entry's model")
    lb.set_defaults(func=cmd_leaderboard_verify)
    lb = lsub.add_parser("submit", parents=[common, data, store, weights],
                         help="evaluate your model under a leaderboard's exact protocol and write an entry file")
    lb.add_argument("name", help="leaderboard name or folder")
    lb.add_argument("--model", required=True, help="package.module:callable returning an nn.Module")
    lb.add_argument("--as", dest="as_name", help="the model's name on the leaderboard, its entry's file name: "
                    "ASCII letters, digits, '.', '_', '-' (default: the callable)")
    lb.add_argument("--out", help="entry file to write (default NAME.json in the current folder)")
    lb.set_defaults(func=cmd_leaderboard_submit)
    lb = lsub.add_parser("show", parents=[common], help="print a leaderboard's headline table for papers")
    lb.add_argument("name", help="leaderboard name or folder")
    lb.add_argument("--format", choices=["markdown", "csv", "latex", "table"], default="markdown")
    lb.set_defaults(func=cmd_leaderboard_show)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    kind = "" if category is UserWarning else f"{category.__name__}: "
    print(f"robench: warning: {kind}{' '.join(str(message).splitlines())}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv`: 0 on success, 2 on bad input (one line on stderr), 130 on Ctrl-C.
    Warnings print as one line each."""
    args = None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args = build_parser().parse_args(argv)
            if getattr(args, "device", None):
                from robench.inference import resolve_device

                resolve_device(args.device)
            args.func(args)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
