import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from robench.cli import main

BASE = ["--dataset", "mnist-5k", "--n", "60", "--quiet"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_help_has_examples():
    exe = shutil.which("robench", path=str(Path(sys.executable).parent))
    assert exe, "the robench console script is not installed next to this Python"
    for argv in ([], ["run"], ["quickstart"], ["list"], ["zoo"]):
        out = subprocess.run([exe, *argv, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "examples:" in out.stdout


def test_list_families(capsys):
    for family, expected in (("attacks", "pgd-linf"), ("datasets", "mnist-5k"), ("models", "mnist5k-small-cnn"),
                             ("corruptions", "clean"), ("defenses", "")):
        code, out, _ = run(capsys, "list", family)
        assert code == 0 and expected in out


def test_run_formats_and_outputs(capsys, tmp_path, embedded_model):
    store = ["--store", str(tmp_path / "s.sqlite")]
    code, out, _ = run(capsys, "run", "--model", "mnist5k-small-cnn", "--threat", "pgd-linf:eps=0.1|0.2,steps=5",
                       "--threat", "clean", *BASE, *store, "--format", "json")
    assert code == 0
    records = json.loads(out)
    assert [r["threat"].split(":")[0] for r in records] == ["pgd-linf", "clean"]
    assert {"model", "threat", "metrics", "provenance"} <= set(records[0])
    code, out, _ = run(capsys, "run", "--model", "mnist5k-small-cnn", "--threat", "pgd-linf:eps=0.1|0.2,steps=5",
                       *BASE, *store, "--format", "csv", "--out", str(tmp_path / "out"))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["model"] == "mnist5k-small-cnn" and float(rows[0]["pgd-linf 0.2"]) <= float(rows[0]["clean"])
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"records.json", "results.md", "results.csv",
                                                              "robustness_curve_linf.png"}
    code, out, _ = run(capsys, "run", "--model", "mnist5k-small-cnn", "--threat", "pgd-linf:eps=0.1|0.2,steps=5",
                       *BASE, *store)
    assert out.splitlines()[0].split() == ["model", "clean", "pgd-linf", "0.1", "pgd-linf", "0.2", "flags"]


def test_benchmark_file(capsys, tmp_path, embedded_model):
    bench = tmp_path / "bench.toml"
    bench.write_text('models = ["mnist5k-small-cnn"]\nthreats = ["fgsm:eps=0.1"]\ndataset = "mnist-5k"\nn = 30\n')
    code, out, _ = run(capsys, "run", str(bench), "--quiet", "--store", str(tmp_path / "s.sqlite"),
                       "--format", "json", "--out", str(tmp_path / "out"))
    assert code == 0 and json.loads(out)[0]["n"] == 30
    title, described = figure_text(tmp_path / "out" / "robustness_curve_linf.png")
    assert title.endswith(" on mnist-5k test, n = 30") and described.startswith("x: Linf eps (pixels in [0, 1])")
    assert "; y: accuracy (%); legend: mnist5k-small-cnn" in described


def figure_text(path: Path) -> tuple[str, str]:
    """The title and the description (axis labels, legend) a figure's PNG carries (robench.plots)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.text["Title"], image.text["Description"]


def test_run_details_and_latex(capsys, tmp_path, embedded_model):
    argv = ["run", "--model", "mnist5k-small-cnn", "--threat", "pgd-linf:eps=0.1,steps=5", *BASE,
            "--store", str(tmp_path / "s.sqlite")]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "mean norm" not in out
    code, out, _ = run(capsys, *argv, "--details")
    assert code == 0 and "pgd-linf 0.1" in out and "mean norm" not in out  # a Linf PGD norm is eps
    l2 = [a.replace("pgd-linf:eps=0.1", "pgd-l2:eps=1.0") for a in argv]
    code, out, _ = run(capsys, *l2, "--details")
    assert code == 0 and "pgd-l2 mean norm @1" in out
    code, out, _ = run(capsys, *argv, "--format", "latex")
    assert code == 0 and out.startswith("% needs \\usepackage{booktabs}\n\\begin{tabular}")


USER_MODEL = '''
from torch import nn
def make():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
'''


def test_user_model_with_weights(capsys, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    (tmp_path / "usernet.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    weights = {"1.weight": torch.zeros(10, 784), "1.bias": torch.arange(10.0)}  # always predicts class 9
    save_file(weights, tmp_path / "w.safetensors")
    code, out, _ = run(capsys, "run", "--model", "usernet:make", "--weights", str(tmp_path / "w.safetensors"),
                       "--threat", "clean", *BASE, "--store", str(tmp_path / "s.sqlite"), "--format", "json")
    assert code == 0
    assert json.loads(out)[0]["metrics"]["clean_accuracy"]["value"] == pytest.approx(6 / 60)  # the 9s of 60
    code, _, err = run(capsys, "run", "--model", "usernet:make", "--weights", str(tmp_path / "w.safetensors"),
                       "--weights-sha256", "0" * 64, "--threat", "clean", *BASE)
    assert code == 2 and "checksum mismatch" in err


@pytest.mark.parametrize("argv, message", [
    (["run", "--model", "mnist5k-small-cnn", "--threat", "pgd-linf:eps=-1", *BASE], "eps must be >= 0"),
    (["run", "--model", "mnist5k-small-cnn", "--threat", "pgd-linf:eps=0.1,steps=0", *BASE], "steps must be"),
    (["run", "--model", "mnist5k-small-cn", "--threat", "clean", *BASE], "Did you mean 'mnist5k-small-cnn'"),
    (["run", "--model", "mnist5k-small-cnn", "--threat", "clen", *BASE], "Did you mean 'clean'"),
    (["run", "--model", "mnist5k-small-cnn", "--threat", "clean", "--dataset", "mnist-5k", "--n", "5000"],
     "n must be between 1 and 1000"),
    (["run", "--model", "nosuchpkg.nets:make", "--threat", "clean", *BASE], "cannot import nosuchpkg.nets:make"),
    (["run", "--threat", "clean"], "give --model and --threat"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, argv, message, embedded_model):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("robench: error: ") and message in err


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(Exception, match="eps must be"):
        main(["run", "--model", "mnist5k-small-cnn", "--threat", "pgd-linf:eps=-1", *BASE, "--debug"])


def test_quickstart_end_to_end(capsys, tmp_path, embedded_model):
    code, out, _ = run(capsys, "quickstart", "--out", str(tmp_path / "qs"), "--n", "50", "--quiet",
                       "--store", str(tmp_path / "s.sqlite"))
    assert code == 0
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120  # its many threats transpose: one column per model
    assert lines[0].split() == ["mnist5k-small-cnn", "mnist5k-mlp"] and lines[2].startswith("clean ")
    assert any(line.startswith("pgd-linf 0.1 ") for line in lines)
    assert "Accuracy in %, with the 95% Clopper-Pearson interval in brackets." in out
    records = json.loads((tmp_path / "qs" / "records.json").read_text())
    assert {r["model"] for r in records} == {"mnist5k-small-cnn", "mnist5k-mlp"}
    assert (tmp_path / "qs" / "robustness_curve_linf.png").stat().st_size > 10_000
    for figure, x in (("robustness_curve_linf", "Linf eps (pixels in [0, 1])"), ("corruption_accuracy", "corruption"), ("bitflip", "bit flips"),
                      ("certified_accuracy", "L2 radius")):
        title, described = figure_text(tmp_path / "qs" / f"{figure}.png")
        assert title.endswith(" on mnist-5k test, n = 50"), (figure, title)
        xlabel, ylabel, legend = described.split("; ", 2)
        assert xlabel.startswith(f"x: {x}") and ylabel == "y: accuracy (%)", (figure, described)
        assert legend == "legend: mnist5k-small-cnn; mnist5k-mlp", figure
    from robench.evaluate import Record
    from robench.report import report_of

    pgd = next(Record.from_dict(r) for r in records if r["threat"].startswith("pgd-linf"))
    assert report_of(pgd.threat, pgd.metrics).curves[0].points[0][:2] == (0.0, pgd.metrics["clean_accuracy"]["value"])
    assert "| mnist5k-small-cnn |" in (tmp_path / "qs" / "results.md").read_text()


def test_corrupt_writes_the_mnist_c_layout(capsys, tmp_path):
    import numpy as np

    from robench.data import load_dataset

    code, out, _ = run(capsys, "corrupt", "--suite", "stripe", "--dataset", "mnist-5k", "--split", "test",
                       "--out", str(tmp_path / "c"), "--preview", str(tmp_path / "p.png"), "--quiet")
    assert code == 0 and f"wrote {tmp_path / 'c'}/<corruption>/<split>_images.npy and _labels.npy" in out
    images = np.load(tmp_path / "c" / "stripe" / "test_images.npy")
    labels = np.load(tmp_path / "c" / "stripe" / "test_labels.npy")
    clean = load_dataset("mnist-5k", "test")
    assert images.shape == (1000, 28, 28, 1) and images.dtype == np.uint8
    assert np.array_equal(labels, clean.labels.numpy())
    assert np.array_equal(images[:, :, :7, 0], 255 - clean.images.numpy()[:, 0, :, :7])  # stripe inverts columns 0-6
    assert (tmp_path / "p.png").stat().st_size > 5_000


def test_certify_writes_the_tables_and_resumes_from_the_store(capsys, tmp_path, embedded_model):
    argv = ["certify", "--model", "mnist5k-small-cnn", "--dataset", "mnist-5k", "--sigma", "0.25", "--n0", "20",
            "--n", "200", "--n-examples", "12", "--out", str(tmp_path / "c.tsv"), "--store", str(tmp_path / "s.sqlite"),
            "--quiet"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "certified accuracy at r = 0.5" in out
    rows = (tmp_path / "c.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["idx", "label", "predict", "radius", "correct", "time", "samples"] and len(rows) == 13
    assert all(r.endswith("\t220") for r in rows[1:])  # fixed n: n0 + n noisy copies for every example
    from scipy.stats import norm

    bound = 0.25 * norm.ppf(0.001 ** (1 / 200))
    assert all(float(r.split("\t")[3]) <= bound + 1e-9 for r in rows[1:])
    assert (tmp_path / "c_summary.json").is_file()
    title, described = figure_text(tmp_path / "c_certified.png")
    assert title.startswith("Randomized smoothing on mnist-5k test: sigma=0.25, n0=20, n=200") and "12 examples" in title
    assert described.startswith("x: L2 radius (pixels in [0, 1]); y: certified accuracy (%)"), described
    first = (tmp_path / "c.tsv").read_text()
    (tmp_path / "c.tsv").unlink()
    assert run(capsys, *argv)[0] == 0  # served from the store: same certificates
    strip = lambda text: [line.split("\t")[:5] for line in text.splitlines()]  # noqa: E731 (time differs)
    assert strip((tmp_path / "c.tsv").read_text()) == strip(first)


# -- start-up, --version and the public API the CLI stands on --------------------------------------------

CLI = Path(__file__).resolve().parent.parent / "robench" / "cli"


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_help_and_version_do_not_import_torch():
    for argv in (["--help"], ["--version"], ["run", "--help"], ["leaderboard", "--help"]):
        run = _fresh(f"import sys\nfrom robench.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit as e:\n"
                     "    code = e.code\nprint('torch' in sys.modules, code)")
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines()[-1] in ("False 0", "False None"), (argv, run.stdout)


def test_version_names_the_release_and_the_commit():
    import robench

    exe = shutil.which("robench", path=str(Path(sys.executable).parent))
    out = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith(f"robench {robench.__version__}")
    robench.git_commit.cache_clear()  # looked up again now: the checkout may have moved on since it was cached
    commit = robench.git_commit()
    if commit:  # run from a checkout
        assert len(commit) == 40 and f"(git commit {commit})" in out.stdout


def test_public_api_is_lazy_and_complete():
    import robench

    run = _fresh("import sys, robench\nprint('torch' in sys.modules, sorted(set(robench.__all__) - set(dir(robench))))")
    assert run.stdout.split() == ["False", "[]"], run.stderr
    for name in robench.__all__:
        assert getattr(robench, name) is not None, name
    assert callable(robench.evaluate) and robench.leaderboard.show
    # importing the submodule robench.evaluate first keeps robench.evaluate the function
    run = _fresh("import robench.evaluate, robench\nprint(robench.evaluate.__module__, robench.Record.__name__)")
    assert run.stdout.split() == ["robench.evaluate", "Record"], run.stderr
    with pytest.raises(AttributeError):
        robench.no_such_name


def _public_only(path: Path) -> list[str]:
    """Imports of robench internals, and robench.<name> not in robench.__all__, in one CLI module."""
    import ast

    import robench

    public = set(robench.__all__)
    bad = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.startswith("robench") and a.name != "robench"
                    and not a.name.startswith("robench.cli")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("robench"):
            if node.module == "robench":
                bad += [f"robench.{a.name}" for a in node.names if a.name not in public]
            elif not node.module.startswith("robench.cli"):
                bad.append(node.module)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "robench":
            if node.attr not in public:
                bad.append(f"robench.{node.attr}")
    return [f"{path.name}: {b}" for b in bad]


def test_the_cli_uses_the_public_api_only_and_its_modules_are_small():
    modules = sorted(CLI.glob("*.py"))
    assert {p.name for p in modules} >= {"__init__.py", "__main__.py", "run.py", "leaderboard.py", "results.py"}
    assert [b for p in modules for b in _public_only(p)] == []
    assert max(len(p.read_text().splitlines()) for p in modules) <= 400
    assert _public_only_catches_internals()


def _public_only_catches_internals() -> bool:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.py"
        path.write_text("import robench\nfrom robench.store import Store\nfrom robench import zoo\nrobench.tables\n")
        return _public_only(path) == ["x.py: robench.store", "x.py: robench.zoo", "x.py: robench.tables"]


def test_python_dash_m_robench_cli(capsys):
    out = subprocess.run([sys.executable, "-m", "robench.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("robench ")


# -- help that is safe to paste, a quiet closed pipe, where things are -------------------------------------

def _parsers(parser=None, path=("robench",)):
    """(command path, parser) of the robench parser and every subcommand, depth first."""
    from robench.cli import build_parser

    parser = parser or build_parser()
    yield path, parser
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _examples(help_text: str) -> list[str]:
    """The command lines of a help's "examples:" block, backslash continuations joined."""
    block = help_text.split("\nexamples:\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_every_leaf_command_has_examples_that_paste_into_bash_and_parse():
    import shlex

    from robench.cli import build_parser

    leaves, bad = 0, []
    for path, parser in _parsers():
        text = parser.format_help()
        has_sub = any(a.__class__.__name__ == "_SubParsersAction" for a in parser._actions)
        if "\nexamples:\n" not in text:
            bad.append(f"{' '.join(path)}: no examples")
            continue
        leaves += not has_sub
        for line in _examples(text):
            shell = list(shlex.shlex(line, posix=True, punctuation_chars="|&;<>"))
            tokens = shlex.split(line)
            if shell[-2:-1] == [">"]:  # `... > table.tex`: a redirection of the output is fine
                shell, tokens = shell[:-2], tokens[:-2]
            operators = [t for t in shell if set(t) <= set("|&;<>")]
            if operators or tokens[:len(path)] != list(path):
                bad.append(f"{' '.join(path)}: {line!r} (shell operator {operators} or another command)")
                continue
            try:
                build_parser().parse_args(tokens[1:])
            except SystemExit as exc:
                bad.append(f"{' '.join(path)}: {line!r} does not parse (exit {exc.code})")
    assert not bad, "\n".join(bad)
    assert leaves >= 14  # list, zoo list/train, run, corrupt, certify, quickstart, results, 5 leaderboard, info


def test_the_help_examples_check_catches_an_unquoted_list():
    import shlex

    tokens = list(shlex.shlex("robench run --threat pgd-linf:eps=0.1|0.3", posix=True, punctuation_chars="|&;<>"))
    assert "|" in tokens
    assert _examples("x\nexamples:\n  robench a \\\n    --b\n  robench c\n\nmore") == ["robench a      --b", "robench c"]


def test_a_closed_pipe_ends_quietly():
    """`robench list threats | head -1`: the reader goes away; robench exits 0 without a traceback."""
    import os

    exe = shutil.which("robench", path=str(Path(sys.executable).parent))
    read, write = os.pipe()
    os.close(read)  # the reader has gone before robench writes anything
    try:
        out = subprocess.run([exe, "list", "threats"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert out.returncode == 0 and out.stderr == ""
    shell = subprocess.run(["bash", "-c", f"set -o pipefail; {exe} list threats | head -1"], capture_output=True,
                           text=True, timeout=120)
    assert shell.returncode == 0 and shell.stderr == "" and len(shell.stdout.splitlines()) == 1


def test_help_names_the_version_and_info_the_locations_in_use(capsys, tmp_path, monkeypatch):
    import robench
    from robench.cli import version_text

    with pytest.raises(SystemExit):
        main(["--help"])
    assert f"This is {version_text()}." in capsys.readouterr().out
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ROBENCH_DATA", str(tmp_path / "env-data"))
    code, out, _ = run(capsys, "info")
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert code == 0 and lines["robench"].split()[1] == robench.__version__
    assert f"{tmp_path / 'cache'}  " in lines["cache"] and "$ROBENCH_CACHE" in lines["cache"]
    assert f"{tmp_path / 'env-data'}  " in lines["data"] and "$ROBENCH_DATA" in lines["data"]
    assert str(tmp_path / "cache" / "results.sqlite") in lines["results store"]
    from robench.about import cpu

    assert cpu() in lines["cpu"] and "kernels" in lines["cpu"]  # weights trained here depend on it
    code, out, _ = run(capsys, "info", "--data-root", str(tmp_path / "flag"), "--store", str(tmp_path / "s.sqlite"))
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert f"{tmp_path / 'flag'}  " in lines["data"] and "--data-root" in lines["data"]
    assert str(tmp_path / "s.sqlite") in lines["results store"] and "--store" in lines["results store"]


def test_precision_applies_to_every_threat_that_allows_it_and_says_which_keep_their_own(capsys, tmp_path,
                                                                                         embedded_model):
    code, out, err = run(capsys, "run", "--model", "mnist5k-small-cnn", "--threat", "fgsm:eps=0.1", "--threat",
                         "ibp:eps=0.1", "--threat", "clean", "--threat", "fgsm:eps=0.2,precision=fp32",
                         "--dataset", "mnist-5k", "--n", "20", "--store", str(tmp_path / "s.sqlite"),
                         "--format", "json", "--precision", "bf16")
    assert code == 0
    threats = [r["threat"] for r in json.loads(out)]
    assert "precision=bf16" in threats[0] and "precision=fp32" in threats[1] and "precision=fp32" in threats[3]
    assert "ibp:eps=0.1 keeps its own precision: ibp does not allow precision=bf16" in err
    assert "clean keeps its own precision: it has no precision parameter" in err
    assert "fgsm:eps=0.2,precision=fp32 keeps its own precision: its spec sets precision=fp32" in err
    assert "fgsm:eps=0.1 keeps" not in err
