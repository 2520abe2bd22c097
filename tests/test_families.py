"""Families that say what they are: certifiers apart from defenses, `robench list threats`, the
timm-style public API, lazy foolbox registration, no import cycles, and a Smooth that leaves the
caller's model alone."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import robench
from robench.cli import main
from robench.errors import RobenchError
from robench.registry import ATTACKS, CERTIFIERS, DEFENSES, Registry, describe, threat_families
from robench.threats import build_threat

ROOT = Path(__file__).resolve().parent.parent


def test_certifiers_are_their_own_family_and_defenses_are_no_threats():
    assert "smoothing" in CERTIFIERS and "smoothing" not in DEFENSES
    assert CERTIFIERS.group == "robench.certifiers"
    assert build_threat("smoothing:n=100").canonical.startswith("smoothing:alpha=0.001,")
    assert {"gaussian", "patch-gaussian", "pgd-at", "smooth"} <= set(DEFENSES.names())
    with pytest.raises(RobenchError, match="is a defense, not a threat"):
        build_threat("pgd-at:eps=0.3")
    families = threat_families()
    assert families["smoothing"] is CERTIFIERS and families["pgd-linf"] is ATTACKS
    assert families["mnist-c"].family == "corruptions" and "pgd-at" not in families


def test_list_threats_and_defenses_from_the_cli(capsys):
    assert main(["list", "threats"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert rows["smoothing"] == "certifier" and rows["pgd-linf"] == "attack" and rows["fog"] == "corruption"
    assert rows["foolbox:LinfDeepFoolAttack"] == "attack" and "pgd-at" not in rows
    assert main(["list", "defenses"]) == 0
    out = capsys.readouterr().out
    assert "smoothing" not in out.split() and "training-time" in out and "inference-time" in out
    assert main(["list", "certifiers"]) == 0
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert {"smoothing", "ibp", "crown-ibp", "crown"} <= set(rows) and rows["smoothing"].startswith("Certified robustness")
    assert main(["list", "threats", "pgd-*"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["pgd-l2", "pgd-linf"]


def test_timm_style_public_api(embedded_model):
    assert robench.list_threats("pgd-*") == ["pgd-l2", "pgd-linf"]
    assert "smoothing" in robench.list_threats() and "pgd-at" not in robench.list_threats()
    threat = robench.create_threat("pgd-linf:eps=0.1")
    assert isinstance(threat, robench.Threat) and threat.canonical == build_threat("pgd-linf:eps=0.1").canonical
    assert "mnist5k-small-cnn" in robench.list_models("mnist5k-*")
    model = robench.create_model("mnist5k-small-cnn", progress=False)
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), embedded_model.state_dict().values()))


def test_describe_is_one_sentence():
    assert describe(ATTACKS.get("fgsm")) == ("Fast gradient sign method: one step of size eps from the clean input "
                                             "(Goodfellow et al. 2015).")

    class Described:
        description = "  given\n  text "
    assert describe(Described) == "given text"


def test_lazy_entries_register_on_first_need():
    calls = []
    reg = Registry("widgets")
    reg.register("plain", object())
    reg.lazy("ext:*", lambda: (calls.append(1), reg.register("ext:a", object())))
    assert "plain" in reg and "other" not in reg and calls == []
    assert "ext:a" in reg and calls == [1]
    assert reg.names() == ["ext:a", "plain"] and calls == [1]  # run once

    def broken():
        raise ImportError("no such package")
    reg.lazy("bad:*", broken)
    with pytest.raises(ImportError, match="no such package"):  # a failing loader is never swallowed
        reg.get("bad:x")


def test_foolbox_is_imported_only_when_a_foolbox_attack_is_used():
    code = ("import sys; import robench; from robench.threats import build_threat; "
            "build_threat('pgd-linf:eps=0.1'); assert 'foolbox' not in sys.modules, 'imported early'; "
            "build_threat('foolbox:LinfDeepFoolAttack:eps=0.1'); assert 'foolbox' in sys.modules; "
            "from robench.attacks.foolbox_adapter import SKIPPED; assert 'SpatialAttack' in SKIPPED")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr


def _module_imports() -> dict[str, set[str]]:
    """Module-level imports (top-level statements, not those inside functions) of every robench module,
    by dotted name, mapped to the robench modules (or packages) they name."""
    packages = {"robench": ROOT / "robench", "robench.attacks": ROOT / "attacks",
                "robench.defenses": ROOT / "defenses", "robench.corruptions": ROOT / "corruptions"}
    graph: dict[str, set[str]] = {}
    for package, folder in packages.items():
        for path in folder.glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found = []
            tree = ast.parse(path.read_text())
            body = [n for n in tree.body if not isinstance(n, ast.If)]  # skip `if TYPE_CHECKING:` blocks
            for node in body:
                if isinstance(node, ast.Import):
                    found += [(a.name, None) for a in node.names if a.name.startswith("robench")]
                elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("robench"):
                    found += [(node.module, a.name) for a in node.names]
            graph[name] = found
    resolved = {}
    for m, found in graph.items():  # `from robench import nets` names the module robench.nets, not robench
        deps = {f"{mod}.{attr}" if f"{mod}.{attr}" in graph else mod for mod, attr in found}
        resolved[m] = {d for d in deps if d in graph and d != m}
    return resolved


def test_no_import_cycles_between_attacks_and_defenses_nor_robench_and_evaluate():
    graph = _module_imports()

    def reaches(start: str, target_prefix: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for dep in graph.get(node, ()):
                if dep == target_prefix or dep.startswith(target_prefix + "."):
                    return True
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return False

    defenses = [m for m in graph if m.startswith("robench.defenses")]
    assert not any(reaches(m, "robench.attacks") for m in defenses)
    assert "robench" not in graph["robench.evaluate"]  # __version__ comes from robench.version
    assert not any("robench" in deps for m, deps in graph.items() if m != "robench")


class _Conv(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)  # 2 channels: a layout change is visible
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(self.conv(x).relu().flatten(1))


def test_smooth_leaves_the_callers_model_as_it_was():
    from robench.defenses.smoothing import Smooth

    model = _Conv().eval()
    before = {k: (v.clone(), v.stride()) for k, v in model.state_dict().items()}
    smooth = Smooth(model, 3, 0.25)
    x = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(1))
    counts = smooth.counts(x, 200, 50, torch.Generator().manual_seed(2))
    assert all(torch.equal(v, before[k][0]) and v.stride() == before[k][1] for k, v in model.state_dict().items())
    assert model.conv.weight.is_contiguous() and smooth.base is not model
    # the same counts as before the fix, when the base model itself was converted to channels-last
    old = _Conv().eval().to(memory_format=torch.channels_last)
    assert (Smooth(old, 3, 0.25).counts(x, 200, 50, torch.Generator().manual_seed(2)) == counts).all()
    assert Smooth(old, 3, 0.25).base is old  # nothing to convert: no copy
