"""The README's code works: the "Writing a plugin" section's modules (fenced ```python blocks whose first
line is ``# my_package/<module>.py``) are installed as a package through the entry points of its
```toml block and evaluated end to end; every other code block parses, and every ``robench ...``
command line parses with the CLI's own parser (without running)."""
from __future__ import annotations

import ast
import importlib
import io
import re
import shlex
import sys
import tomllib
from contextlib import redirect_stderr
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Writing a plugin"
PACKAGE = "my_package"
MODULE_MARK = re.compile(rf"#\s*({PACKAGE}/\w+\.py)\s*$")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def blocks(text: str) -> list[tuple[str, str, int]]:
    """Fenced code blocks of `text`: (language, code, line of the opening fence)."""
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def plugin_section() -> str:
    text = README.read_text()
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    rest = text.split(SECTION, 1)[1]
    return rest.split("\n## ", 1)[0]


def plugin_modules() -> dict[str, str]:
    """The plugin section's modules: path in the package -> code."""
    found = {}
    for lang, code, _ in blocks(plugin_section()):
        mark = MODULE_MARK.match(code.split("\n", 1)[0]) if lang == "python" else None
        if mark:
            found[mark.group(1)] = code
    return found


def plugin_entry_points() -> dict[str, dict[str, str]]:
    """The plugin section's pyproject.toml snippet: entry-point group -> {name: "module:attr"}."""
    tomls = [code for lang, code, _ in blocks(plugin_section()) if lang == "toml" and "entry-points" in code]
    assert len(tomls) == 1, "the plugin section should show one pyproject.toml snippet with the entry points"
    return tomllib.loads(tomls[0])["project"]["entry-points"]


# ------------------------------------------------------------------------------------ installed plugins

@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """my_package written from the README, with a dist-info holding the README's entry points, put on
    sys.path; each entry point found through importlib.metadata is registered the way
    robench.registry.Registry._load registers one (``register(ep.name, ep.load())``). Registrations,
    modules, caches and sys.path are restored afterwards."""
    from robench import data, report
    from robench.registry import ATTACKS, CERTIFIERS, CORRUPTIONS, DATASETS, DEFENSES, MODELS

    modules, groups = plugin_modules(), plugin_entry_points()
    wanted = {f"{PACKAGE}/{m}.py" for m in ("attacks", "certifiers", "corruptions", "data")}
    assert wanted <= set(modules), f"README plugin section lacks {sorted(wanted - set(modules))}"
    assert {"robench.attacks", "robench.certifiers", "robench.corruptions", "robench.datasets"} <= set(groups)

    registries = {r.group: r for r in (ATTACKS, CERTIFIERS, CORRUPTIONS, DATASETS, DEFENSES, MODELS)}
    for registry in registries.values():
        registry.names()  # built-ins and installed plugins loaded now, before my_package is on the path

    root = tmp_path_factory.mktemp("site")
    (root / PACKAGE).mkdir()
    (root / PACKAGE / "__init__.py").write_text("")
    for path, code in modules.items():
        (root / path).write_text(code)
    dist = root / "my_package-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-package\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items()) + "\n"
        for group, eps in groups.items()))

    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    added: list[tuple[object, str]] = []
    try:
        for group, eps in groups.items():
            assert group in registries, f"unknown entry-point group {group!r} in the README"
            found = {ep.name: ep for ep in metadata.entry_points(group=group) if ep.name in eps}
            assert set(found) == set(eps), f"{group}: entry points {sorted(set(eps) - set(found))} not found"
            for name, ep in found.items():
                registries[group].register(name, ep.load())
                added.append((registries[group], name))
        yield {name: registry.get(name) for registry, name in added}
    finally:
        for registry, name in added:
            registry._entries.pop(name, None)
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        for key in [k for k in data._CACHE if k[0] in groups.get("robench.datasets", {})]:
            del data._CACHE[key]
        report._threat.cache_clear()
        importlib.invalidate_caches()


@pytest.fixture(scope="module")
def ncm():
    """Nearest class mean on the embedded digits: a linear model (logits x.m_k - |m_k|^2 / 2)."""
    return nearest_mean("mnist-5k", 2000)


def nearest_mean(dataset: str, n: int) -> nn.Module:
    from robench.data import load_dataset

    train = load_dataset(dataset, "train").select(n=n)
    x, y = train.x.flatten(1), train.y
    means = torch.stack([x[y == k].mean(0) for k in range(int(y.max()) + 1)])
    model = nn.Sequential(nn.Flatten(), nn.Linear(x.shape[1], len(means)))
    with torch.no_grad():
        model[1].weight.copy_(means)
        model[1].bias.copy_(-0.5 * (means ** 2).sum(1))
    return model.eval()


def test_plugins_are_listed_with_their_docstrings(installed):
    import robench
    from robench.registry import describe, threat_families

    families = {name: reg.family for name, reg in threat_families("my-*").items()}
    assert families == {"my-attack": "attacks", "my-c": "corruptions", "my-certifier": "certifiers"}
    assert set(robench.list_threats("my-*")) == set(families)
    assert describe(installed["my-attack"]).startswith("Random signs")
    assert "sk-digits" in robench.DATASETS.names() and installed["sk-digits"].name == "sk-digits"
    assert installed["my-c"].name == "my-c" and installed["darken"].name == "darken"


def test_readme_attack(installed, ncm, tmp_path):
    import robench

    record, = robench.evaluate(ncm, "my-attack:eps=0.1", dataset="mnist-5k", n=20, store=tmp_path / "s.sqlite")
    assert record.kind == "input-attack" and record.n == 20
    clean, robust = record.metrics["clean_accuracy"], record.metrics["robust_accuracy"]["0.1"]
    assert clean["n"] == robust["n"] == 20 and robust["correct"] <= clean["correct"] and clean["value"] > 0.5
    twice, = robench.evaluate(ncm, "my-attack:eps=0.1|0.3,strength=0.5", dataset="mnist-5k", n=20,
                              store=tmp_path / "s.sqlite")
    assert set(twice.metrics["robust_accuracy"]) == {"0.1", "0.3"}
    table = robench.render([record, twice], "markdown")
    assert "my-attack" in table and "0.3" in table
    # the attack stays within its budget: Attack.__call__ would reject it otherwise
    from robench.errors import RobenchError

    with pytest.raises(RobenchError, match="outside its budget"):
        robench.evaluate(ncm, "my-attack:eps=0.1,strength=2", dataset="mnist-5k", n=20, store=tmp_path / "s.sqlite")


def test_readme_certifier(installed, ncm, tmp_path):
    import robench
    from robench.data import load_dataset

    weight, bias = ncm[1].weight.detach(), ncm[1].bias.detach()
    lipschitz = float(torch.linalg.matrix_norm(weight, 2))  # the linear map's exact Lipschitz constant (L2)
    spec = f"my-certifier:lipschitz={lipschitz!r},radii=0.0|0.5|1.0"
    record, = robench.evaluate(ncm, spec, dataset="mnist-5k", n=30, store=tmp_path / "s.sqlite")
    assert record.kind == "certification"

    x, y = load_dataset("mnist-5k", "test").select(n=30).x, load_dataset("mnist-5k", "test").select(n=30).y
    logits = x.flatten(1) @ weight.T + bias
    top = logits.topk(2, dim=1)
    correct = top.indices[:, 0] == y
    radius = np.where(correct.numpy(), ((top.values[:, 0] - top.values[:, 1]) / (2 ** 0.5 * lipschitz)).numpy(), 0.0)
    for r in (0.0, 0.5, 1.0):
        assert record.metrics["certified"][repr(r)]["correct"] == int((correct.numpy() & (radius >= r)).sum())
    assert record.metrics["clean"]["correct"] == int(correct.sum())
    assert record.metrics["acr"] == pytest.approx(float(radius.mean()), rel=1e-5)
    # the certificate holds: no perturbation within the radius changes a certified prediction
    r = torch.tensor(radius, dtype=torch.float32)[:, None]
    g = torch.randn(x.flatten(1).shape, generator=torch.Generator().manual_seed(0))
    moved = x.flatten(1) + 0.999 * r * g / g.norm(dim=1, keepdim=True)
    assert torch.equal((moved @ weight.T + bias).argmax(1)[correct], y[correct])

    table = robench.render([record], "markdown")
    assert "Lipschitz" in table or "my-certifier" in table
    assert "ACR" in table and "r=0.5" in table
    report = installed["my-certifier"].as_threat(lipschitz=lipschitz, radii=(0.0, 0.5, 1.0)).report(record.metrics)
    assert [c.head for c in report.headline] == ["r=0.0", "r=0.5", "r=1.0"]
    assert report.curves[0].figure == "certified_accuracy" and len(report.curves[0].points) == 3


def test_readme_corruption_suite(installed, ncm, tmp_path):
    import robench

    record, = robench.evaluate(ncm, "my-c", dataset="mnist-5k", n=20, store=tmp_path / "s.sqlite")
    assert record.kind == "corruption"
    parts = record.metrics["accuracy"]
    assert set(parts) == {f"{c}/{s}" for c in ("darken", "rotate", "fog") for s in (1, 3, 5)}
    assert set(record.metrics["mean_accuracy_per_severity"]) == {"1", "3", "5"}
    assert record.metrics["mean_accuracy"] == pytest.approx(np.mean([a["value"] for a in parts.values()]))
    table = robench.render([record], "markdown")
    assert "My-C" in table or "my-c" in table
    assert "darken/5" in table and "fog/1" in table
    some, = robench.evaluate(ncm, "my-c:corruptions=darken", dataset="mnist-5k", n=20, store=tmp_path / "s.sqlite")
    assert set(some.metrics["accuracy"]) == {"darken/1", "darken/3", "darken/5"}
    assert some.metrics["accuracy"]["darken/1"] == parts["darken/1"]  # same part, same result

    # the README's `robench corrupt --suite my-c ...` line, run as written (to a temporary folder)
    from robench.cli import main

    line, = [c for _, c in robench_commands()[0] if c.startswith("robench corrupt --suite my-c")]
    argv = shlex.split(line)[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "my_c")
    assert main([*argv, "--quiet"]) == 0
    images = np.load(tmp_path / "my_c" / "darken" / "5" / "test_images.npy")
    assert images.shape == (1000, 28, 28, 1) and images.dtype == np.uint8
    assert (tmp_path / "my_c" / "fog" / "1" / "test_labels.npy").is_file()


def test_readme_dataset(installed, tmp_path, monkeypatch):
    import robench
    from robench.data import load_dataset

    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path / "cache"))  # the zoo entry trains into a fresh cache
    train, test = load_dataset("sk-digits", "train"), load_dataset("sk-digits", "test")
    assert (len(train), len(test)) == (1500, 297) and tuple(test.images.shape[1:]) == (1, 8, 8)
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
    ncm = nearest_mean("sk-digits", 1500)
    clean, = robench.evaluate(ncm, "clean", dataset="sk-digits", n=200, store=tmp_path / "s.sqlite")
    assert clean.dataset == "sk-digits" and clean.metrics["clean_accuracy"]["value"] > 0.8

    if "robench.models" in plugin_entry_points():  # the README's zoo entry, trained on the plugin dataset
        name, = plugin_entry_points()["robench.models"]
        model = robench.create_model(name, progress=False)
        records = robench.evaluate(model, ["clean", "my-attack:eps=0.1"], dataset="sk-digits", n=100,
                                   store=tmp_path / "s.sqlite", model_name=name)
        assert records[0].metrics["clean_accuracy"]["value"] > 0.5
        assert name in robench.render(records, "markdown")


# ------------------------------------------------------------------------------------ everything parses

def test_the_plugin_section_is_found():
    assert len(plugin_modules()) >= 4 and plugin_entry_points()


def test_every_code_block_parses():
    text = README.read_text()
    bad = []
    for lang, code, line in blocks(text):
        try:
            if lang == "python":
                ast.parse(code, f"README.md:{line}")
            elif lang == "toml":
                tomllib.loads(code)
            elif lang in ("bash", "sh", "shell", "console"):
                for command in shell_lines(code):
                    shlex.split(command, comments=True)
        except (SyntaxError, tomllib.TOMLDecodeError, ValueError) as exc:
            bad.append(f"README.md:{line} ({lang}): {exc}")
    assert not bad, "\n".join(bad)


def shell_lines(code: str) -> list[str]:
    """The commands of a shell block, with backslash continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def robench_commands() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(command lines of the shell blocks, inline code spans) that start with ``robench ``, with their line."""
    text = README.read_text()
    lines = [(line, c) for lang, code, line in blocks(text) if lang in ("bash", "sh", "shell", "console")
             for c in shell_lines(code) if c.startswith("robench ")]
    prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    spans = [(prose.count("\n", 0, m.start()) + 1, m.group(1)) for m in re.finditer(r"`(robench [^`]+)`", prose)]
    return lines, spans


def _parse(argv: list[str]) -> str | None:
    """None if the CLI's parser accepts `argv`, else its error message."""
    from robench.cli import build_parser

    err = io.StringIO()
    try:
        with redirect_stderr(err):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        return err.getvalue().strip().splitlines()[-1] if exc.code else None
    return None


def test_every_robench_command_line_parses():
    lines, spans = robench_commands()
    assert len(lines) > 20 and spans
    bad = []
    for line, command in lines:
        tokens = list(shlex.shlex(command, posix=True, punctuation_chars="|&;<>"))
        operators = [t for t in tokens if t and set(t) <= set("|&;<>")]
        if operators:  # e.g. an unquoted eps=0.1|0.3 is a shell pipe
            bad.append(f"README.md:{line}: shell operator {operators[0]!r} in {command!r}; quote the spec")
            continue
        error = _parse(shlex.split(command, comments=True)[1:])
        if error:
            bad.append(f"README.md:{line}: {command!r}: {error}")
    assert not bad, "\n".join(bad)


def test_every_inline_robench_command_names_a_subcommand():
    """Inline mentions (`robench list threats`, `robench zoo train NAME`) may leave out required options;
    their command and action must exist."""
    from robench.cli import build_parser

    commands = {}
    for action in build_parser()._subparsers._group_actions:
        for name, parser in action.choices.items():
            nested = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
            commands[name] = set(nested[0].choices) if nested else None
    _, spans = robench_commands()
    bad = []
    for line, span in spans:
        words = shlex.split(span, comments=True)[1:]
        if not words or words[0] not in commands:
            bad.append(f"README.md:{line}: `{span}`: no command {words[:1]} (commands: {', '.join(sorted(commands))})")
        elif commands[words[0]] and len(words) > 1 and not words[1].startswith("-") and words[1] not in commands[words[0]]:
            bad.append(f"README.md:{line}: `{span}`: robench {words[0]} has no action {words[1]!r}")
        elif words[0] == "list" and len(words) > 1 and _parse(words[:3]):
            bad.append(f"README.md:{line}: `{span}`: {_parse(words[:3])}")
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------------------ a new user's first steps

def test_the_newcomer_commands_come_first():
    lang, code, _ = blocks(README.read_text())[0]
    commands = [line.split("#")[0].strip() for line in code.splitlines()]
    assert lang == "bash" and commands == ["pip install -e '.[dev]'", "robench quickstart", "pytest"]


def test_the_install_lines_name_extras_that_exist():
    import configparser

    config = configparser.ConfigParser()
    config.read(README.parent / "setup.cfg")
    extras = set(config["options.extras_require"])
    install = [c for lang, code, _ in blocks(README.read_text()) if lang == "bash"
               for c in shell_lines(code) if c.startswith("pip install")]
    named = {e for c in install for e in re.findall(r"\.\[([\w,-]+)\]", c) for e in e.split(",")}
    assert {"dev", "ray", "perf"} <= named <= extras, (named, extras)
    assert any("download.pytorch.org/whl/cpu" in c and "torch" in c for c in install)  # the CPU build of torch
    oldest = re.search(r"needs Python (3\.\d+) or newer", README.read_text()).group(1)
    assert config["options"]["python_requires"] == f">={oldest}"  # the README's versions are the package's


def test_the_zoo_tables_times_are_the_ones_training_announces():
    from robench.zoo import TRAINING_MINUTES

    rows = re.findall(r"^\| `([\w.-]+)` \|.*\| ([\d.]+) min[^|]*\|$", README.read_text(), re.M)
    assert len(rows) >= 10
    wrong = {name: (float(minutes), TRAINING_MINUTES.get(name)) for name, minutes in rows
             if TRAINING_MINUTES.get(name) != float(minutes)}
    assert not wrong, f"README zoo table vs robench.zoo.TRAINING_MINUTES: {wrong}"
