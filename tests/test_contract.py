"""One contract per threat: the output side (tables, `robench run --out`, figures, leaderboards) renders any
threat through its Report alone. No module of robench/ names a built-in threat or one of its metric keys,
and a certifier and a corruption suite registered from this test module render everywhere."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from robench.metrics import Accuracy, accuracy

ROOT = Path(__file__).resolve().parent.parent

#: metric keys of the built-in threats (attacks, corruption suites, smoothing, bit flips)
METRIC_KEYS = {
    "clean_accuracy", "robust_accuracy", "mean_perturbation_norm", "certified_accuracy", "average_certified_radius",
    "abstention_rate", "max_radius", "seconds_per_example", "flips_to_target", "flips_to_target_range",
    "flips_to_target_per_batch", "quantized_accuracy", "final_accuracy", "accuracy_per_flip", "hamming_distance",
    "median_accuracy", "median_drop", "accuracy_per_seed", "median_accuracy_per_flip", "mean_accuracy",
    "relative_drop", "median_batch", "seconds_per_iteration", "calibration",
}
#: names that mean something beyond one threat: the clean baseline
GENERIC = {"clean"}


def _builtin_threat_names() -> set[str]:
    """Every registered threat name, less the generic ones and those that also name a defense (a
    training recipe's "gaussian" is the defense, not the corruption)."""
    from robench.registry import DEFENSES, threat_families

    return set(threat_families()) - GENERIC - set(DEFENSES.names())


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant of a module except docstrings, with its line."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str)}
    module_names = {id(node.args[0]) for node in ast.walk(tree) if _imports_by_name(node)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings | module_names]


#: calls whose first argument is a Python module's name (pyautoattack's import name is "autoattack")
IMPORT_CALLS = {"find_spec", "import_module", "__import__"}


def _imports_by_name(node: ast.AST) -> bool:
    """`node` is a call that imports or registers a module by name: find_spec, import_module, __import__ or
    sys.modules.setdefault."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    registers = (name == "setdefault" and isinstance(func, ast.Attribute)
                 and isinstance(func.value, ast.Attribute) and func.value.attr == "modules")
    return name in IMPORT_CALLS or registers


def test_no_core_module_names_a_builtin_threat_or_its_metrics():
    """A literal that is a built-in threat's name, starts a spec of one ("smoothing:sigma=..."), or is one
    of their metric keys, anywhere in robench/ (the threats live in attacks/, corruptions/, defenses/)."""
    names = _builtin_threat_names()
    found = []
    for path in sorted((ROOT / "robench").rglob("*.py")):
        for line, text in _strings(ast.parse(path.read_text(), str(path))):
            stripped = text.strip()
            if stripped in names or stripped in METRIC_KEYS or any(stripped.startswith(f"{n}:") for n in names):
                found.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert not found, "\n".join(found)


def test_the_grep_finds_what_it_looks_for():
    tree = ast.parse('def f(m):\n    """smoothing is fine in a docstring"""\n    return m["abstention_rate"], '
                     'f"smoothing:sigma={m}"\n')
    texts = [t for _, t in _strings(tree)]
    assert "abstention_rate" in texts and "smoothing:sigma=" in texts
    assert not any("docstring" in t for t in texts)


def test_the_grep_skips_module_names_but_not_the_same_word_elsewhere():
    tree = ast.parse('import importlib.util, sys\nimportlib.util.find_spec("autoattack")\n'
                     'sys.modules.setdefault("autoattack", None)\nthreat = "autoattack"\n')
    assert _strings(tree) == [(4, "autoattack")]


# --------------------------------------------------------------------------- plugins from this module

from robench.report import Column, Curve, Report  # noqa: E402
from robench.threats import Kind, Outputs, Threat  # noqa: E402


class IntervalCertifier(Threat):
    """A toy certifier (not randomized smoothing): an example is certified at radius r when the model is
    correct and its logit margin exceeds `scale` * r."""

    kind = Kind.CERTIFICATION
    deterministic = True

    def __init__(self, *, scale: float = 1.0, radii: tuple[float, ...] = (0.0, 0.1, 0.2)):
        self.scale, self.radii = float(scale), tuple(float(r) for r in radii)

    @classmethod
    def as_threat(cls, **params: Any) -> "IntervalCertifier":
        return cls(**params)

    def evaluate_shard(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator) -> Outputs:
        with torch.no_grad():
            logits = model(x)
        top2 = logits.topk(2, dim=1).values
        correct = logits.argmax(1) == y
        return {"correct": correct.numpy(), "bound": ((top2[:, 0] - top2[:, 1]) / self.scale).numpy()}

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        correct, bound = outputs["correct"].astype(bool), outputs["bound"]
        return {"verified": {repr(r): accuracy(correct & (bound > r)) for r in self.radii},
                "mean_bound": float(np.where(correct, bound, 0.0).mean())}

    def report(self, metrics: dict[str, Any]) -> Report:
        verified = {float(r): Accuracy.from_json(a) for r, a in metrics["verified"].items()}
        columns = [Column(f"r={r:g}", a, head=f"r={r:g}" if r > 0 else None) for r, a in verified.items()]
        columns.append(Column("mean bound", metrics["mean_bound"]))
        return Report("Margin-verified", "toy margin certifier", tuple(columns),
                      (Curve("verified_accuracy", "Verified accuracy", "Linf radius",
                             tuple((r, a.value, *a.interval) for r, a in verified.items())),),
                      notes=("Margin-verified: a toy certifier's verified accuracy.",))


from robench.corruptions.base import Corruption  # noqa: E402


class Darken(Corruption):
    """A toy corruption: images times `factor`."""

    name = "toy-darken"
    deterministic = True

    def __init__(self, *, factor: float = 0.5):
        self.factor = factor

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return images * self.factor


class ToySuite:
    """A toy corruption suite of two darkenings, labelled "Toy-C"."""

    label = "Toy-C"

    @classmethod
    def as_threat(cls, **params: Any) -> Threat:
        from robench.corruptions.base import CorruptionThreat

        threat = CorruptionThreat({"dark": Darken(factor=0.5), "darker": Darken(factor=0.2)})
        threat.label = cls.label
        return threat


@pytest.fixture
def plugins():
    from robench.registry import CERTIFIERS, CORRUPTIONS

    CERTIFIERS.register("toy-margin", IntervalCertifier)
    CORRUPTIONS.register("toy-c", ToySuite)
    yield
    CERTIFIERS._entries.pop("toy-margin", None)
    CORRUPTIONS._entries.pop("toy-c", None)
    from robench import report

    report._threat.cache_clear()


def nearest_mean_model(boost: float = 0.0) -> nn.Module:
    """Nearest class mean on the embedded digits; `boost` adds to class 1's logit (as in test_leaderboard)."""
    from robench.data import load_dataset

    train = load_dataset("mnist-5k", "train").select(n=2000)
    x, y = train.x.flatten(1), train.y
    means = torch.stack([x[y == k].mean(0) for k in range(10)])
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        model[1].weight.copy_(means)
        model[1].bias.copy_(-0.5 * (means ** 2).sum(1))
        model[1].bias[1] += boost
    return model.eval()


def _models():
    return {"ncm": lambda: nearest_mean_model(), "ncm-boost": lambda: nearest_mean_model(4.0)}


def write_spec(folder: Path, **over) -> None:
    spec = {"name": "tiny", "title": "Tiny", "dataset": "mnist-5k", "split": "test", "n": 40, "seed": 0,
            "sort": "clean"}
    spec.update(over)
    (folder / "spec.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in spec.items()))


def test_a_plugin_certifier_and_suite_render_on_a_leaderboard(plugins, tmp_path):
    from robench import leaderboard
    from robench.threats import build_threat

    models = _models()
    threats = [build_threat(t).canonical for t in ("clean", "toy-margin:radii=0.0|0.5|1.0", "toy-c")]
    folder = tmp_path / "toy"
    folder.mkdir()
    write_spec(folder, threats=threats, models=list(models), sort="Margin-verified r=0.5")
    leaderboard.update(folder, loader=lambda m: models[m](), store=tmp_path / "s.sqlite")
    lb = leaderboard.Leaderboard.load(folder)
    assert lb.check() == []
    readme = (folder / "README.md").read_text()
    header = [c.strip() for c in readme.split("\n| model |", 1)[1].split("\n", 1)[0].split("|")]
    assert header[:4] == ["clean", "Margin-verified r=0.5", "Margin-verified r=1", "Toy-C mean"], header
    assert "MNIST-C" not in readme
    assert "Margin-verified: a toy certifier's verified accuracy." in readme
    assert "Toy-C mean: the mean of the per-corruption accuracies" in readme
    assert "| dark | darker |" in readme and "mean bound" in readme
    assert (folder / "figures" / "toy-margin.svg").is_file()
    assert "Verified accuracy on Tiny test, n = 40" in (folder / "figures" / "toy-margin.svg").read_text()
    html = (folder / "index.html").read_text()
    assert "Margin-verified r=0.5" in html and "Toy-C mean" in html


def test_a_plugin_certifier_and_suite_render_in_run_outputs(plugins, tmp_path):
    from robench.cli import _write_outputs
    from robench.evaluate import evaluate
    from robench.tables import render

    models = _models()
    records = []
    for name, make in models.items():
        records += evaluate(make(), ["clean", "toy-margin:radii=0.0|0.5", "toy-c"], dataset="mnist-5k", n=30,
                            store=tmp_path / "s.sqlite", model_name=name)
    table = render(records, "table")
    assert table.splitlines()[0].split()[:4] == ["model", "clean", "toy-margin", "r=0.5"]
    assert "toy-c mean" in table
    written = _write_outputs(records, tmp_path / "out")
    assert {p.name for p in written} == {"records.json", "results.md", "results.csv", "verified_accuracy.png",
                                         "corruption_accuracy.png"}
    assert json.loads((tmp_path / "out" / "records.json").read_text())[1]["kind"] == "certification"
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "toy-margin mean bound" in markdown and "toy-c dark" in markdown


def test_accuracy_json_round_trip_and_kinds():
    stored = accuracy(np.array([True, True, False, True]))
    assert list(stored) == ["value", "correct", "n", "ci95"]
    typed = Accuracy.from_json(stored)
    assert typed.value == 0.75 and typed.correct == 3 and typed.n == 4 and typed.interval == tuple(stored["ci95"])
    assert typed.to_json() == stored and json.dumps(typed.to_json()) == json.dumps(stored)
    with pytest.raises(Exception, match="not an accuracy"):
        Accuracy.from_json({"value": 0.5})
    assert json.dumps(Kind.CERTIFICATION) == '"certification"' and f"{Kind.INPUT_ATTACK}" == "input-attack"


def test_shipped_entries_load_and_render_through_the_reports():
    """The committed entries (JSON as stored) render: every Record has a Report with its columns."""
    from robench import leaderboard

    for name in leaderboard.names():
        lb = leaderboard.Leaderboard.load(name)
        if not lb.entries:  # a staged board, every model still pending
            assert lb.spec.pending and not lb.spec.models, name
            continue
        files = lb.rendered()
        assert files["README.md"].count("\n## ") >= len(lb.spec.threats)
        columns, rows = leaderboard.table(lb)
        assert columns[0] == "clean" and lb.spec.sort in columns, (name, columns)


def test_a_record_whose_threat_no_longer_builds_still_renders():
    """A stored Record of a threat this robench cannot build (a plugin not installed) reads generically."""
    from robench.evaluate import Record
    from robench.tables import render

    metrics = {"verified": {"0.1": accuracy(np.array([True, False, True]))}, "mean_bound": 0.25}
    record = Record("net", "uninstalled-certifier:radii=0.1", "certification", "mnist", "test", 3, metrics)
    markdown = render([record], "markdown")
    assert "uninstalled-certifier verified 0.1" in markdown and "66.7 [" in markdown
    assert "uninstalled-certifier mean_bound" in markdown
