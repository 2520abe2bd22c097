"""Leaderboards: update computes only what is missing or stale, check catches every drift, verify, submit,
show, HTML escaping, and the page sorted in headless Chromium. A tiny leaderboard on the embedded digits
(mnist-5k) with nearest-class-mean models keeps every test fast."""
from __future__ import annotations

import functools
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from robench import leaderboard
from robench.cli import main
from robench.errors import RobenchError
from robench.metrics import clopper_pearson
from robench.threats import build_threat

EVIL = "<img src=x onerror=alert(1)>"
THREATS = [build_threat(t).canonical for t in ("clean", "pgd-linf:eps=0.1|0.2,steps=2")]


def constant_model(label: int) -> nn.Module:
    """Always predicts `label` (zero weights)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].bias[label] = 1.0
    return model.eval()


@functools.lru_cache(maxsize=1)
def _class_means() -> torch.Tensor:
    from robench.data import load_dataset

    train = load_dataset("mnist-5k", "train").select(n=2000)
    x, y = train.x.flatten(1), train.y
    return torch.stack([x[y == k].mean(0) for k in range(10)])


def nearest_mean_model(boost: float = 0.0) -> nn.Module:
    """Nearest class mean on the embedded digits (a linear model, so attacks have gradients); `boost`
    adds to class 1's logit, which lowers accuracy by a controlled amount."""
    means = _class_means()
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        model[1].weight.copy_(means)
        model[1].bias.copy_(-0.5 * (means ** 2).sum(1))
        model[1].bias[1] += boost
    return model.eval()


MODELS = {"ncm": lambda: nearest_mean_model(), "ncm-boost": lambda: nearest_mean_model(4.0),
          EVIL: lambda: constant_model(2)}


class Loader:
    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, name: str) -> nn.Module:
        self.calls.append(name)
        return MODELS[name]()


def write_spec(folder: Path, **over) -> None:
    spec = {"name": "tiny", "title": "Tiny", "dataset": "mnist-5k", "split": "test", "n": 40, "seed": 0,
            "sort": "clean", "threats": THREATS, "models": list(MODELS)}
    spec.update(over)
    lines = []
    for key, value in spec.items():
        if isinstance(value, dict):  # a TOML inline table
            value = "{" + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items()) + "}"
            lines.append(f"{key} = {value}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    (folder / "spec.toml").write_text("\n".join(lines) + "\n")


@pytest.fixture
def board(tmp_path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    write_spec(folder)
    leaderboard.update(folder, loader=Loader(), store=tmp_path / "store.sqlite")
    return folder


def test_update_writes_entries_and_check_passes(board):
    lb = leaderboard.Leaderboard.load(board)
    assert set(lb.entries) == set(MODELS)
    assert lb.check() == []
    entry = lb.entries["ncm"]
    assert [r["threat"] for r in entry["records"]] == THREATS
    clean = entry["records"][0]["metrics"]["clean_accuracy"]
    assert clean["n"] == 40 and len(clean["ci95"]) == 2
    assert entry["records"][0]["provenance"]["model_sha256"]
    assert main(["leaderboard", "check", str(board)]) == 0


def test_a_figure_says_what_it_shows_in_the_tables_unit(board):
    """Title with the data and n, the x axis with its norm and unit, y in % as the tables, eps 0 = clean."""
    lb = leaderboard.Leaderboard.load(board)
    svg = (board / "figures" / "pgd-linf.svg").read_text()
    texts = [html.unescape(t) for t in re.findall(r">([^<>]+)</text>", svg)]
    assert texts[0] == "PGD Linf on Tiny test, n = 40"
    assert "Linf eps (pixels in [0, 1])" in texts and "accuracy (%)" in texts and "100" in texts
    assert set(lb.spec.models) <= set(texts)  # the legend
    ticks = [t for t in texts if re.fullmatch(r"[\d.]+", t)]
    assert ticks == ["0", "20", "40", "60", "80", "100", "0", "0.1", "0.2"]  # y in %, x from eps 0 (clean)


def test_check_fails_on_an_edited_table(board, capsys):
    readme = board / "README.md"
    readme.write_text(readme.read_text().replace("ncm", "ncm-one", 1))
    assert any("README.md" in p for p in leaderboard.Leaderboard.load(board).check())
    assert main(["leaderboard", "check", str(board)]) != 0
    assert "README.md: differs" in capsys.readouterr().err


def test_check_fails_on_a_spec_mismatch(board):
    write_spec(board, n=30)
    problems = leaderboard.Leaderboard.load(board).check()
    assert any("protocol" in p for p in problems) and any("indices" in p for p in problems)
    assert main(["leaderboard", "check", str(board)]) != 0


def test_the_headline_shows_the_spec_columns_and_the_details_keep_the_rest(board):
    from robench.leaderboard import views

    lb = leaderboard.Leaderboard.load(board)
    every = views.table(lb)[0]
    assert every[:3] == ["clean", "PGD Linf 0.1", "PGD Linf 0.2"], every
    write_spec(board, headline=["clean", "PGD Linf 0.2"], sort="PGD Linf 0.2")
    lb = leaderboard.Leaderboard.load(board)
    assert views.table(lb)[0] == ["clean", "PGD Linf 0.2", views.COLUMN]
    lb.render_to_disk()
    assert leaderboard.Leaderboard.load(board).check() == []
    readme = (board / "README.md").read_text()
    head = next(line for line in readme.splitlines() if line.startswith("| model |"))
    assert "PGD Linf 0.2" in head and "PGD Linf 0.1" not in head
    assert "| model | clean | eps 0.1 | eps 0.2 | flags |" in readme  # the detail table keeps eps 0.1
    write_spec(board, headline=["clean", "PGD Linf 0.5"], sort="clean")
    problems = leaderboard.Leaderboard.load(board).problems()
    assert any("headline column 'PGD Linf 0.5' is not a column of the entries" in p for p in problems), problems
    write_spec(board, headline=["clean"], sort="PGD Linf 0.2")
    assert any("sort column 'PGD Linf 0.2' is not one of the headline" in p
               for p in leaderboard.Leaderboard.load(board).problems())


def test_threats_on_fewer_examples_are_evaluated_checked_and_verified_on_their_own_count(tmp_path):
    """Protocol v2's mixed counts: `threat_n` gives PGD the first 20 of the board's 40 examples."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_spec(folder, threat_n={"pgd-linf": 20}, models=["ncm"])
    leaderboard.update(folder, loader=Loader(), store=tmp_path / "store.sqlite")
    lb = leaderboard.Leaderboard.load(folder)
    clean, pgd = (lb.records("ncm")[t] for t in THREATS)
    assert clean["n"] == 40 and pgd["n"] == 20 and pgd["provenance"]["indices"] == "0:20"
    assert lb.spec.protocol["threat_n"] == {THREATS[1]: 20} and lb.check() == []
    assert "first 40 examples (first 20 for pgd-linf)" in (folder / "README.md").read_text()
    result = leaderboard.verify(folder, "ncm", n=15, seed=3, loader=Loader())
    assert max(result.indices) < 20 and result.ok  # drawn where every verified threat has outcomes
    # a PGD Record over all 40 examples is stale under this protocol; a bad pattern or count is named
    write_spec(folder, models=["ncm"])
    assert any("pgd-linf record is stale" in p and "indices '0:20', spec '0:40'" in p
               for p in leaderboard.Leaderboard.load(folder).check())
    write_spec(folder, threat_n={"fgsm": 20, "pgd-linf": 41}, models=["ncm"])
    problems = leaderboard.Leaderboard.load(folder).spec.problems()
    assert "threat_n pattern 'fgsm' names none of the spec's threats" in problems
    assert any(p.startswith("threat_n 'pgd-linf' must be a whole number of examples from 1 to n (40)") for p in problems)


def test_check_fails_on_a_non_canonical_spec_threat(board):
    write_spec(board, threats=["clean", "pgd-linf:eps=0.1|0.2,steps=2"])
    assert any("not canonical" in p for p in leaderboard.Leaderboard.load(board).check())


def test_check_fails_on_a_missing_and_an_unlisted_entry(board):
    (board / "entries" / "ncm-boost.json").rename(board / "entries" / "other.json")
    problems = leaderboard.Leaderboard.load(board).check()
    assert any(p.startswith("ncm-boost: no entry") for p in problems)
    assert any("other.json" in p for p in problems)
    assert main(["leaderboard", "check", str(board)]) != 0


def test_update_recomputes_only_stale_records(board, tmp_path):
    logs: list[str] = []
    loader = Loader()
    leaderboard.update(board, loader=loader, store=tmp_path / "fresh.sqlite", log=logs.append)
    assert all("up to date" in line for line in logs if not line.startswith("wrote")), logs
    # an older threat version makes that one record stale; other weights make all of a model's stale
    path = board / "entries" / "ncm.json"
    entry = json.loads(path.read_text())
    entry["records"][1]["provenance"]["threat_version"] = 0
    path.write_text(leaderboard.dump_entry(entry))
    assert any("threat version" in p for p in leaderboard.Leaderboard.load(board).check())
    path = board / "entries" / "ncm-boost.json"
    entry = json.loads(path.read_text())
    for record in entry["records"]:
        record["provenance"]["model_sha256"] = "0" * 64
    path.write_text(leaderboard.dump_entry(entry))
    logs.clear()
    leaderboard.update(board, loader=loader, store=tmp_path / "fresh.sqlite", log=logs.append)
    stale = sorted(line for line in logs if not line.startswith("wrote") and "up to date" not in line)
    assert len(stale) == 4, stale
    assert stale[0].startswith("ncm-boost: clean (weights sha256 000000000000, model has ")
    assert stale[1].startswith("ncm-boost: pgd-linf (weights sha256 000000000000, model has ")
    assert stale[2].startswith("ncm-boost: weights ") and "differ from the entry's 000000000000" in stale[2]
    assert "recomputing every record" in stale[2]
    assert stale[3].startswith(f"ncm: pgd-linf (threat version 0, code has {build_threat(THREATS[1]).version})")
    assert leaderboard.Leaderboard.load(board).check() == []


def _edit(board: Path, model: str, change) -> Path:
    path = board / "entries" / f"{model}.json"
    entry = json.loads(path.read_text())
    change(entry)
    path.write_text(leaderboard.dump_entry(entry))
    return path


def _one_digit_off(value: float, place: int = 3) -> float:
    """`value` with its `place`-th decimal digit changed."""
    text = f"{value:.17f}"
    at = text.index(".") + place
    return float(text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1:])


def test_check_catches_an_entry_that_contradicts_itself(board, capsys):
    robust = json.loads((board / "entries" / "ncm.json").read_text())["records"][1]["metrics"]["robust_accuracy"]
    stored = _one_digit_off(robust["0.1"]["value"])
    _edit(board, "ncm", lambda e: e["records"][1]["metrics"]["robust_accuracy"]["0.1"].update(value=stored))
    problems = leaderboard.Leaderboard.load(board).problems()
    ok = robust["0.1"]
    assert problems[0] in leaderboard.Leaderboard.load(board).check()
    assert problems == [f"ncm: pgd-linf robust_accuracy/0.1: value {stored!r} stored, {ok['value']!r} recomputed "
                        f"(correct/n = {ok['correct']}/40)"]
    assert main(["leaderboard", "check", str(board)]) != 0
    assert problems[0] in capsys.readouterr().err
    # update refuses to render it (and computes nothing first)
    readme = (board / "README.md").read_text()
    with pytest.raises(RobenchError, match=r"entry ncm of tiny contradicts itself.*robust_accuracy/0\.1"):
        leaderboard.update(board, loader=None, store=board / "s.sqlite")
    assert (board / "README.md").read_text() == readme
    # an interval off by one digit, an n other than the protocol's, a count that is not one
    _edit(board, "ncm", lambda e: e["records"][1]["metrics"]["robust_accuracy"]["0.1"].update(value=ok["value"]))
    lo = _one_digit_off(ok["ci95"][0])
    _edit(board, "ncm-boost", lambda e: e["records"][0]["metrics"]["clean_accuracy"]["ci95"].__setitem__(0, lo))
    _edit(board, EVIL, lambda e: e["records"][1]["metrics"]["robust_accuracy"]["0.2"].update(
        n=41, value=e["records"][1]["metrics"]["robust_accuracy"]["0.2"]["correct"] / 41,
        ci95=list(clopper_pearson(e["records"][1]["metrics"]["robust_accuracy"]["0.2"]["correct"], 41))))
    problems = leaderboard.Leaderboard.load(board).problems()
    assert len(problems) == 2, problems
    assert any(p.startswith(f"ncm-boost: clean clean_accuracy: ci95 [{lo!r},") and "recomputed (Clopper-Pearson" in p
               for p in problems), problems
    assert f"{EVIL}: pgd-linf robust_accuracy/0.2: n 41 stored, the protocol's n is 40" in problems


def test_shipped_entries_are_consistent():
    for name in leaderboard.names():
        lb = leaderboard.Leaderboard.load(name)
        assert [p for m in lb.entries for p in lb.inconsistencies(m)] == [], name


def _mask(record: dict, path: str) -> list[bool]:
    n = record["metrics"]["clean_accuracy"]["n"]
    return leaderboard._unpack(record[leaderboard.OUTCOMES][path], n).tolist()


def test_update_stores_per_example_outcomes_of_deterministic_threats(board):
    clean, pgd = json.loads((board / "entries" / "ncm.json").read_text())["records"]
    assert set(clean[leaderboard.OUTCOMES]) == {"clean_accuracy"}
    mask = _mask(clean, "clean_accuracy")
    assert len(mask) == 40 and sum(mask) == clean["metrics"]["clean_accuracy"]["correct"]
    assert leaderboard.OUTCOMES not in pgd  # random start: a sample cannot recompute it example by example


def test_outcome_masks_cover_the_deterministic_parts_of_a_suite():
    import numpy as np

    threat = build_threat("mnist-c:corruptions=scale|shot_noise|canny_edges")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 30)
    outputs = {"label": labels, **{f"probs@{n}": rng.dirichlet(np.ones(10), 30)
                                   for n in ("clean", "scale", "shot_noise", "canny_edges")}}
    masks = leaderboard.outcome_masks(threat, outputs)
    assert set(masks) == {"clean_accuracy", "accuracy/scale", "accuracy/canny_edges"}
    assert masks["accuracy/scale"].tolist() == (outputs["probs@scale"].argmax(1) == labels).tolist()
    assert leaderboard.outcome_masks(build_threat("pgd-linf:eps=0.1"), {"clean_correct": labels > 3}) == {}


def test_hypergeometric_p_value():
    from scipy.stats import fisher_exact

    for k, n, K, N in ((5, 10, 20, 40), (0, 15, 2, 40), (15, 15, 40, 40), (3, 12, 30, 200)):
        table = [[k, n - k], [K - k, N - K - (n - k)]]
        assert leaderboard.hypergeom_p(k, n, K, N) == pytest.approx(fisher_exact(table).pvalue, rel=1e-9)
    assert leaderboard.hypergeom_p(5, 10, 3, 40) == 0.0  # more correct in the sample than in the whole
    assert leaderboard.hypergeom_p(40, 40, 40, 40) == 1.0 and leaderboard.hypergeom_p(39, 40, 40, 40) == 0.0


def test_verify_passes_and_catches_a_forged_count(board):
    result = leaderboard.verify(board, "ncm", n=15, seed=3, loader=Loader())
    assert len(result.indices) == 15 and result.seed == 3 and result.verdicts and result.ok
    assert result.weights_match
    exact = {(v.threat, v.metric): v.mismatches for v in result.verdicts}
    assert exact[("clean", "clean_accuracy")] == []  # compared example by example
    assert all(v.mismatches is None and v.p >= leaderboard.P_THRESHOLD for v in result.verdicts if v.threat != "clean")
    # a forged count that is consistent in itself (value, interval and n agree) fails the exact test
    _edit(board, "ncm", lambda e: e["records"][1]["metrics"]["robust_accuracy"].update(
        {"0.1": {"value": 0.0, "correct": 0, "n": 40, "ci95": list(clopper_pearson(0, 40))}}))
    result = leaderboard.verify(board, "ncm", n=15, seed=3, loader=Loader())
    bad = [v for v in result.verdicts if not v.ok]
    assert [(v.metric, v.p) for v in bad] == [("robust_accuracy/0.1", 0.0)] and "p=0" in bad[0].how
    # an inconsistent entry is refused
    _edit(board, "ncm", lambda e: e["records"][0]["metrics"]["clean_accuracy"].update(n=400))
    with pytest.raises(RobenchError, match="ncm contradicts itself"):
        leaderboard.verify(board, "ncm", n=15, seed=3, loader=Loader())


def test_verify_names_the_examples_whose_outcome_differs(board):
    record = json.loads((board / "entries" / "ncm.json").read_text())["records"][0]
    mask = _mask(record, "clean_accuracy")
    right, wrong = mask.index(True), mask.index(False)
    mask[right], mask[wrong] = False, True  # the same count, two outcomes swapped
    import numpy as np

    packed = __import__("base64").b64encode(np.packbits(mask, bitorder="little").tobytes()).decode()
    _edit(board, "ncm", lambda e: e["records"][0][leaderboard.OUTCOMES].update(clean_accuracy=packed))
    assert leaderboard.Leaderboard.load(board).check() == []
    result = leaderboard.verify(board, "ncm", n=40, seed=0, loader=Loader())
    (verdict,) = [v for v in result.verdicts if v.threat == "clean"]
    assert not verdict.ok and verdict.mismatches == sorted([right, wrong]) and verdict.p == 1.0
    assert verdict.how == f"outcome differs on 2 examples: {min(right, wrong)}, {max(right, wrong)}"
    # without the per-example outcomes (an older entry), the count alone is compared
    _edit(board, "ncm", lambda e: e["records"][0].pop(leaderboard.OUTCOMES))
    result = leaderboard.verify(board, "ncm", n=40, seed=0, loader=Loader())
    assert result.ok and all(v.mismatches is None for v in result.verdicts)


def test_verify_says_when_the_weights_differ_before_evaluating(board, monkeypatch):
    module = sys.modules["robench.evaluate"]  # robench.evaluate is also the function's name
    logs: list[str] = []
    original = module.evaluate

    def evaluate(*args, **kwargs):
        assert logs, "the weights were compared only after evaluating"
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "evaluate", evaluate)
    entry_sha = json.loads((board / "entries" / "ncm.json").read_text())["records"][0]["provenance"]["model_sha256"]
    result = leaderboard.verify(board, "ncm", n=15, seed=3, loader=lambda m: nearest_mean_model(0.01),
                                log=logs.append)
    assert not result.weights_match and result.entry_sha256 == [entry_sha]
    assert len(logs) == 1 and "weights differ from the entry's" in logs[0] and entry_sha[:16] in logs[0]
    assert result.verdicts and all(v.mismatches is None for v in result.verdicts)  # counts only


def test_html_escapes_every_text_and_has_no_external_assets(board):
    page = (board / "index.html").read_text()
    assert EVIL not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert EVIL not in (board / "README.md").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    readme = (board / "README.md").read_text()
    assert "Sorted by **clean**" in readme


def test_show_formats(board):
    lb = leaderboard.Leaderboard.load(board)
    md = leaderboard.show(lb, "markdown")
    assert md.startswith("| model | clean | PGD Linf 0.1 | PGD Linf 0.2 |")
    latex = leaderboard.show(lb, "latex")
    assert r"\begin{tabular}" in latex and r"PGD Linf 0.1" in latex
    rows = leaderboard.show(lb, "csv").splitlines()
    assert rows[0].startswith("model,clean,") and len(rows) == 1 + len(MODELS)
    values = [float(r.split(",")[1]) for r in rows[1:]]
    assert values == sorted(values, reverse=True)


def test_submit_writes_an_entry_that_checks(board, tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "usermodel.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def make():\n    m = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
        "    torch.nn.init.zeros_(m[1].weight)\n    return m\n")
    weights = tmp_path / "w.pt"
    torch.save(constant_model(3).state_dict(), weights)
    monkeypatch.syspath_prepend(str(pkg))
    out = tmp_path / "mine.json"
    assert main(["leaderboard", "submit", str(board), "--model", "usermodel:make", "--weights", str(weights),
                 "--as", "mine", "--out", str(out), "--store", str(tmp_path / "s.sqlite"), "--quiet"]) == 0
    entry = json.loads(out.read_text())
    assert entry["source"]["model"] == "usermodel:make" and entry["source"]["weights_sha256"]
    shutil.copy(out, board / "entries" / "mine.json")
    write_spec(board, models=[*MODELS, "mine"])
    leaderboard.update(board, loader=Loader(), models=list(MODELS), store=tmp_path / "s.sqlite")
    lb = leaderboard.Leaderboard.load(board)
    assert lb.check() == [] and "mine" in (board / "README.md").read_text()


BAD_NAMES = ["", "../evil", "a/b", "a\\b", "..", ".hidden", "-rf", "with space", "naïve", "x" * 101, "a..b",
             "trailing.", "tab\tname", "new\nline"]


def test_submit_refuses_unsafe_names(board, tmp_path, capsys):
    for name in ("mine", "my-model_2.1", "A", "x" * 100):
        assert leaderboard.check_entry_name(name) == name
    for name in BAD_NAMES:
        with pytest.raises(RobenchError, match="is not a safe file name: use 1 to 100 ASCII letters, digits"):
            leaderboard.check_entry_name(name)
        with pytest.raises(RobenchError, match="not a safe file name"):
            leaderboard.submit(board, constant_model(0), name, source={}, out=tmp_path / "x.json")
    for name in ("../evil", "", ".x", "a b"):
        # refused before the model is even imported (there is no such module)
        assert main(["leaderboard", "submit", str(board), "--model", "nosuchmodule:make", "--as", name,
                     "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not a safe file name" in err and "ASCII letters, digits" in err
    assert not (tmp_path / "x.json").exists() and not list(tmp_path.glob("*evil*"))


def test_shipped_leaderboards_check():
    assert leaderboard.names(), "no leaderboards shipped"
    for name in leaderboard.names():
        assert leaderboard.Leaderboard.load(name).check() == [], name


def test_each_row_says_what_the_model_is(tmp_path):
    """The Models table: a zoo entry's architecture, parameter count, recipe and CPU training time; a model
    the zoo does not know is said to be so."""
    from robench import zoo
    from robench.leaderboard.views import model_rows

    columns, rows = model_rows(leaderboard.Leaderboard.load("mnist"))
    assert columns == ["architecture", "parameters", "training", "CPU training"]
    cnn = zoo.get("mnist-small-cnn")
    assert rows["mnist-small-cnn"] == {"architecture": "small-cnn",
                                       "parameters": f"{sum(p.numel() for p in cnn.build().parameters()):,}",
                                       "training": f"{cnn.description} (3 epochs)", "CPU training": "1.7 min"}
    assert "IBP training" in rows["mnist-ibp-0.1"]["training"]
    folder = tmp_path / "toy"
    folder.mkdir()
    write_spec(folder, threats=["clean"], models=["ncm"])
    leaderboard.update(folder, loader=Loader(), store=tmp_path / "store.sqlite")
    _, rows = model_rows(leaderboard.Leaderboard.load(folder))
    assert rows["ncm"]["training"] == "zoo entry ncm, not in this robench's zoo"
    assert "## Models" in (folder / "README.md").read_text() and "<h2>Models</h2>" in (folder / "index.html").read_text()


def test_threats_sharing_a_name_get_their_own_heading_and_figure(tmp_path):
    folder = tmp_path / "twice"
    folder.mkdir()
    threats = [build_threat(t).canonical for t in ("clean", "pgd-linf:eps=0.05,steps=5", "pgd-linf:eps=0.1,steps=5")]
    write_spec(folder, threats=threats, models=["ncm"])
    leaderboard.update(folder, loader=Loader(), store=tmp_path / "store.sqlite")
    readme = (folder / "README.md").read_text()
    assert "## pgd-linf:eps=0.05\n" in readme and "## pgd-linf:eps=0.1\n" in readme
    assert sorted(p.name for p in (folder / "figures").iterdir()) == ["pgd-linf_eps=0.05.svg", "pgd-linf_eps=0.1.svg"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _dump_dom(page: Path, query: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--user-data-dir=" + str(page.parent / ".chromium"), "--dump-dom", page.as_uri() + query]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def test_page_sorts_in_headless_chromium(board):
    if CHROMIUM is None:
        print("skipped: no chromium binary (apt-get install chromium)", file=sys.stderr)
        pytest.skip("no chromium binary on PATH; .ci/run installs Debian's chromium")
    from html.parser import HTMLParser

    class Rows(HTMLParser):
        """Cells of the table with id="leaderboard": (data-sort, text) per row; tags inside cells."""

        def __init__(self):
            super().__init__()
            self.rows, self.inside, self.cell, self.tags_in_cells = [], False, None, []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "table":
                self.inside = attrs.get("id") == "leaderboard"
            elif self.inside and tag == "tr":
                self.rows.append([])
            elif self.inside and tag == "td":
                self.cell = [attrs.get("data-sort"), ""]
                self.rows[-1].append(self.cell)
            elif self.inside and self.cell is not None and tag not in ("span",):
                self.tags_in_cells.append(tag)

        def handle_endtag(self, tag):
            if tag == "table":
                self.inside = False
            elif tag == "td":
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell[1] += data

    for query, reverse in (("?sort=1&dir=asc", False), ("?sort=1&dir=desc", True)):
        parser = Rows()
        parser.feed(_dump_dom(board / "index.html", query))
        rows = [r for r in parser.rows if r]
        assert len(rows) == len(MODELS)
        keys = [float(r[1][0]) for r in rows]
        assert keys == sorted(keys, reverse=reverse), (query, keys)
        assert EVIL in [r[0][1] for r in rows], "the markup model name is shown as text"
        assert "img" not in parser.tags_in_cells
    dom = _dump_dom(board / "index.html", "?sort=0&dir=asc")
    assert 'aria-sort="ascending"' in dom


def test_package_data_ships_every_leaderboard_file():
    """setup.cfg's package_data globs cover every committed leaderboard file (the wheel test builds it)."""
    import configparser
    import fnmatch

    root = Path(__file__).resolve().parent.parent
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    globs = cfg["options.package_data"]["robench.leaderboards"].split()
    folder = root / "leaderboards"
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
             and p.suffix in (".toml", ".json", ".md", ".html", ".svg")]
    assert files
    for rel in files:
        assert any(fnmatch.fnmatch(rel, g) and rel.count("/") == g.count("/") for g in globs), rel


SANDWICH = [build_threat(t).canonical for t in ("clean", "pgd-linf:eps=0.05|0.1,steps=5", "crown:eps=0.05|0.1")]


def test_the_sandwich_shows_verified_below_attacked_below_clean_and_flags_a_broken_order(tmp_path):
    folder = tmp_path / "sandwich"
    folder.mkdir()
    write_spec(folder, threats=SANDWICH, models=["ncm", "ncm-boost"])
    leaderboard.update(folder, loader=Loader(), store=tmp_path / "store.sqlite")
    lb = leaderboard.Leaderboard.load(folder)
    from robench.leaderboard.views import sandwich

    view = sandwich(lb)
    assert view.columns == ["clean", "PGD Linf 0.05", "CROWN verified 0.05", "PGD Linf 0.1", "CROWN verified 0.1",
                            "order"]
    assert set(view.rows) == {"ncm", "ncm-boost"} and not view.flags
    for row in view.rows.values():
        assert row["order"] == "ok"
        assert row["CROWN verified 0.1"].correct <= row["PGD Linf 0.1"].correct <= row["clean"].correct
    assert sandwich(lb, "l2") is None  # no L2 threat measures a ball twice
    readme = (folder / "README.md").read_text()
    assert "## Sandwich (Linf)" in readme and "| ncm |" in readme.split("## Sandwich (Linf)")[1]

    crown = next(r for r in lb.entries["ncm"]["records"] if r["threat"] == SANDWICH[2])
    crown["metrics"]["verified_accuracy"]["0.1"] = dict(view.rows["ncm"]["clean"].to_json())  # a broken bound
    view = sandwich(lb)
    broken = view.rows["ncm"]["order"]
    assert broken.startswith("CROWN verified 0.1 (") and "above PGD Linf 0.1" in broken
    assert view.flags == (f"ncm: order: {broken}",)
    assert view.rows["ncm-boost"]["order"] == "ok"
    from robench.leaderboard.render import render_readme

    assert "\n- ncm: order: CROWN verified 0.1 (" in render_readme(lb, {})  # the model's name as written


def _clean_probs(model_name: str) -> torch.Tensor:
    """The softmax outputs of a test board's model on the board's 40 examples."""
    from robench.data import load_dataset

    test = load_dataset("mnist-5k", "test").select(n=40)
    with torch.no_grad():
        return MODELS[model_name]()(test.x).softmax(1)


def test_entries_store_the_confidences_an_ece_claim_needs_and_check_catches_a_changed_one(board, tmp_path):
    from robench.leaderboard.entries import CONFIDENCES, confidences_of

    assert all(CONFIDENCES not in r for m in MODELS for r in leaderboard.Leaderboard.load(board).records(m).values())
    (board / "claims.toml").write_text(ECE_CLAIM.replace("EVIL", "ncm-boost").replace('b = { model = "ncm"',
                                                                                     'b = { model = "ncm-boost"'))
    assert any("stores no per-example confidences" in p for p in leaderboard.Leaderboard.load(board).problems())
    logs: list[str] = []
    leaderboard.update(board, loader=Loader(), store=tmp_path / "store.sqlite", log=logs.append)
    assert "ncm-boost: clean (a claim on calibration needs its confidences)" in logs, logs
    lb = leaderboard.Leaderboard.load(board)
    assert lb.check() == [] and CONFIDENCES not in lb.records("ncm")[THREATS[0]]  # no claim names it
    (board / "claims.toml").write_text(ECE_CLAIM.replace("EVIL", "ncm-boost"))
    leaderboard.update(board, loader=Loader(), store=tmp_path / "store.sqlite")
    lb = leaderboard.Leaderboard.load(board)
    record = lb.records("ncm")[THREATS[0]]
    assert record[CONFIDENCES]["calibration/clean"]["accuracy"] == "clean_accuracy"
    confidence, hits = confidences_of(record, "calibration/clean")
    probs = _clean_probs("ncm")
    assert confidence == pytest.approx(probs.max(1).values.numpy(), abs=1 / 65535)
    assert (hits == (probs.argmax(1) == _labels()).numpy()).all()
    assert CONFIDENCES not in lb.records("ncm")[THREATS[1]]  # PGD reports no calibration
    path = board / "entries" / "ncm.json"
    entry = json.loads(path.read_text())
    import base64

    import numpy as np

    item = entry["records"][0][CONFIDENCES]["calibration/clean"]
    raw = np.frombuffer(base64.b64decode(item["confidence"]), dtype="<u2").copy()
    raw[:5] = 65535 - raw[:5]  # five examples' confidences changed: the ECE they give moves
    item["confidence"] = base64.b64encode(raw.tobytes()).decode()
    path.write_text(leaderboard.dump_entry(entry))
    problems = leaderboard.Leaderboard.load(board).check()
    assert any("ncm: clean calibration/clean: per_example_confidence give ECE" in p for p in problems), problems
    item["hits"] = item["hits"][::-1]  # hits that no longer add up to the accuracy's count
    path.write_text(leaderboard.dump_entry(entry))
    problems = leaderboard.Leaderboard.load(board).check()
    assert any("ncm: clean calibration/clean: per_example_confidence:" in p for p in problems), problems


def test_a_random_corruption_gives_the_confidences_and_hits_of_its_own_evaluation():
    """Claims on calibration need no determinism: the stored hits are the outcomes the Record counts."""
    from robench.data import load_dataset
    from robench.metrics import ece_of

    test = load_dataset("mnist-5k", "test").select(n=40)
    threat = build_threat("gaussian:sigma=0.5")
    assert not threat.deterministic
    outputs = threat.evaluate_shard(nearest_mean_model(), test.x, test.y, torch.Generator().manual_seed(0))
    metrics = threat.summarize(outputs)
    found = threat.confidences(outputs)
    assert set(found) == {f"calibration/{name}" for name in metrics["calibration"]}
    for path, (confidence, hits, accuracy, baseline) in found.items():
        name = path.split("/")[1]
        assert ece_of(confidence, hits) == pytest.approx(metrics["calibration"][name]["ece"])
        assert baseline == (name == "clean")
        counted = metrics["clean_accuracy"] if accuracy == "clean_accuracy" else metrics["accuracy"][name]
        assert int(hits.sum()) == counted["correct"]


def _labels() -> torch.Tensor:
    from robench.data import load_dataset

    return load_dataset("mnist-5k", "test").select(n=40).y


ECE_CLAIM = """
[[claim]]
paper = "Calibration 2026"
claim = "a constant model is worse calibrated than nearest means"
a = { model = "EVIL", threat = "clean", metric = "calibration/clean/ece" }
b = { model = "ncm", threat = "clean", metric = "calibration/clean/ece" }
relation = ">"
"""


def test_an_ece_claim_is_judged_by_a_paired_bootstrap_on_the_stored_confidences(board, tmp_path):
    from robench.leaderboard import claims
    from robench.metrics import ece, paired_ece

    (board / "claims.toml").write_text(ECE_CLAIM.replace("EVIL", EVIL.replace('"', '\\"')))
    leaderboard.update(board, loader=Loader(), store=tmp_path / "store.sqlite")
    lb = leaderboard.Leaderboard.load(board)
    (verdict,) = claims.verdicts(lb)
    y = _labels()
    sides = []
    for name in (EVIL, "ncm"):
        probs = _clean_probs(name)
        sides.append([(probs.max(1).values.numpy(), (probs.argmax(1) == y).numpy())])
        assert lb.records(name)[THREATS[0]]["metrics"]["calibration"]["clean"]["ece"] == pytest.approx(
            ece(probs.numpy(), y.numpy()), abs=1e-6)
    want = paired_ece(*sides)
    assert verdict.test == "paired bootstrap, 2000 resamples"
    assert verdict.a.value == pytest.approx(want.a, abs=1e-4) and verdict.b.value == pytest.approx(want.b, abs=1e-4)
    assert (verdict.p_above, verdict.p_below) == pytest.approx((want.p_above, want.p_below), abs=2 / 2001)
    want_verdict = ("supported" if want.p_above < 0.05 else "contradicted" if want.p_below < 0.05
                    else "inconclusive at this n")
    assert verdict.verdict == want_verdict
    row = claims.rows(lb)[1]["Calibration 2026: a constant model is worse calibrated than nearest means"]
    assert row["a"].endswith(f"{verdict.a.value:.3f} [{verdict.a.interval[0]:.3f}, {verdict.a.interval[1]:.3f}]")
    # an ECE against an accuracy is refused; a model whose Record lacks confidences is named by check
    (board / "claims.toml").write_text(ECE_CLAIM.replace('metric = "calibration/clean/ece" }\nrelation',
                                                         'metric = "clean_accuracy" }\nrelation'))
    found = leaderboard.Leaderboard.load(board).problems()
    assert any("must both be accuracies or both ECEs" in p for p in found), found
    (board / "claims.toml").write_text(ECE_CLAIM.replace("EVIL", "ncm-boost"))  # not updated since
    found = leaderboard.Leaderboard.load(board).problems()
    assert any("claim 1" in p and "stores no per-example confidences" in p for p in found), found


NOISE_THREATS = [build_threat(t).canonical for t in
                 ("clean", "gaussian:sigma=0.5", "gaussian:sigma=1.0", "min-distance:norm=l2,steps=20")]


def test_the_noise_analysis_sets_the_half_space_prediction_beside_the_measured_distance(tmp_path):
    """Ford et al. 2019's comparison on a board with two noise levels and the minimal L2 distance: the
    predictions are -sigma * Phi^-1(error) of the entries' noise accuracies, the measured column is the
    min-distance Record's median, and a model is named only when its ratio stands out from the others'."""
    import math

    from scipy import stats

    from robench.leaderboard import noise

    folder = tmp_path / "noisy"
    folder.mkdir()
    write_spec(folder, threats=NOISE_THREATS, models=["ncm", "ncm-boost"])
    leaderboard.update(folder, loader=Loader(), store=tmp_path / "store.sqlite")
    lb = leaderboard.Leaderboard.load(folder)
    found = noise.analysis(lb)
    assert found.columns[:4] == ["noise σ=0.5", "noise σ=1", "predicted d (σ=0.5)", "predicted d (σ=1)"]
    for model in ("ncm", "ncm-boost"):
        records = lb.records(model)
        acc = records[NOISE_THREATS[2]]["metrics"]["accuracy"]["gaussian"]["value"]
        want = max(0.0, -1.0 * stats.norm.ppf(1 - acc)) if acc < 1 else math.inf
        assert found.rows[model]["predicted d (σ=1)"] == ("inf" if want == math.inf else f"{want:.2f}")
        median = records[NOISE_THREATS[3]]["metrics"]["median_distance"]
        assert found.rows[model]["median min L2 distance"].startswith(f"{median:.2f} [")
    assert found.rho is None and found.verdict == "inconclusive at this n"  # two models: no rank test
    readme = (folder / "README.md").read_text()
    assert "## Noise and adversarial distance (Ford et al. 2019)" in readme and found.summary() in readme
    assert (folder / "figures" / "noise-vs-adversarial.svg").is_file()
    assert leaderboard.Leaderboard.load(folder).check() == []

    ratios = {m: float(r["measured / predicted"]) for m, r in found.rows.items()}
    assert found.masking == noise.outliers(ratios) == []  # two models: nobody is named
    assert noise.outliers({"a": 9.0, "b": 8.0, "c": 10.0, "masked": 40.0}) == ["masked"]
    assert noise.outliers({"a": 9.0, "b": 8.0, "c": 10.0, "d": 17.0}) == []


def test_the_rank_test_of_the_noise_analysis_is_spearmans_one_sided():
    from scipy import stats

    from robench.leaderboard import noise

    predicted, measured = [0.5, 1.0, 1.5, 2.0, 2.5], [0.4, 0.9, 1.2, 2.2, 2.0]
    rho = stats.spearmanr(predicted, measured)
    assert rho.statistic == pytest.approx(0.9)
    assert stats.spearmanr(predicted, measured, alternative="greater").pvalue < noise.ALPHA
    assert noise.predicted_distance(1.0, 0.5) == 0.0 and noise.predicted_distance(0.5, 1.0) == float("inf")
    assert noise.predicted_distance(0.5, 1 - stats.norm.cdf(-2.0)) == pytest.approx(1.0)  # mu = Phi(-d / sigma)


CLAIMS = """
[[claim]]
paper = "Means 2026"
claim = "nearest class means beat a constant model"
a = { model = "ncm", threat = "clean", metric = "clean_accuracy" }
b = { model = "EVIL", threat = "clean", metric = "clean_accuracy" }
relation = ">"

[[claim]]
paper = "Constant 2026"
claim = "a constant model beats nearest means"
a = { model = "EVIL", threat = "clean", metric = "clean_accuracy" }
b = { model = "ncm", threat = "clean", metric = "clean_accuracy" }
relation = ">"

[[claim]]
paper = "Same 2026"
claim = "a model matches itself under attack"
a = { model = "ncm", threat = "pgd-linf", metric = "robust_accuracy/0.1" }
b = { model = "ncm", threat = "pgd-linf:eps=0.1|0.2", metric = "robust_accuracy/0.1" }
relation = "~"
margin = 0.01

[[claim]]
paper = "Boost 2026"
claim = "boosting class 1 costs clean accuracy"
a = { model = "ncm", threat = "clean", metric = "clean_accuracy" }
b = { model = "ncm-boost", threat = "clean", metric = "clean_accuracy" }
relation = ">"
"""


def test_claims_are_judged_from_the_entries_and_checked(board, tmp_path):
    from robench.leaderboard import claims

    (board / "claims.toml").write_text(CLAIMS.replace("EVIL", EVIL.replace('"', '\\\\"')))
    lb = leaderboard.Leaderboard.load(board)
    means, constant, same, boost = claims.verdicts(lb)
    assert means.test.startswith("McNemar exact") and means.verdict == "supported" and means.p_above < 0.05
    assert constant.verdict == "contradicted" and constant.p_below < 0.05
    assert same.test == "Fisher exact (unpaired)" and same.verdict == "supported"  # PGD: no per-example outcomes
    assert boost.verdict == "inconclusive at this n"  # the boost changes no prediction of these 40
    # McNemar on the discordant pairs: the exact one-sided binomial p of ncm's wins among them
    from scipy.stats import binomtest

    from robench.leaderboard.entries import OUTCOMES, _unpack

    masks = [_unpack(lb.records(m)[THREATS[0]][OUTCOMES]["clean_accuracy"], 40) for m in ("ncm", EVIL)]
    wins, losses = int((masks[0] & ~masks[1]).sum()), int((~masks[0] & masks[1]).sum())
    assert means.test == f"McNemar exact, {wins} vs {losses} discordant"
    assert means.p_above == pytest.approx(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue)
    assert lb.check() != []  # the committed README lacks the claims table: check asks for a re-render
    lb.render_to_disk()
    assert leaderboard.Leaderboard.load(board).check() == []
    readme = (board / "README.md").read_text()
    assert "## Claims" in readme and "| Means 2026: nearest class means beat a constant model |" in readme
    assert "contradicted" in readme and html.escape(EVIL) in (board / "index.html").read_text()

    (board / "claims.toml").write_text(CLAIMS.replace("robust_accuracy/0.1", "robust_accuracy/0.7", 1))
    lb = leaderboard.Leaderboard.load(board)
    found = lb.problems()
    assert any("claims.toml claim 3" in p and "no accuracy 'robust_accuracy/0.7'" in p for p in found), found
    rows = claims.rows(lb)[1]  # a claim on a cell not computed yet renders as such, beside the judged ones
    assert rows["Same 2026: a model matches itself under attack"]["verdict"].startswith("not evaluated yet (")
    assert rows["Boost 2026: boosting class 1 costs clean accuracy"]["verdict"] == "inconclusive at this n"
    (board / "claims.toml").write_text(CLAIMS.replace('relation = "~"', 'relation = ">="'))
    assert any("relation must be one of" in p for p in leaderboard.Leaderboard.load(board).problems())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible here)")
def test_an_update_on_cuda_agrees_with_the_cpu_within_the_intervals(tmp_path):
    """The refresh on a GPU: the provenance names the device, and every accuracy of a CUDA update lies in the
    95% interval of the CPU update's (kernels differ, so outcomes near a boundary may flip)."""
    from robench.metrics import accuracies

    threats = [build_threat(t).canonical for t in (
        "clean", "pgd-linf:eps=0.1|0.2,steps=10", "autoattack:eps=0.1,norm=linf,version=standard",
        "mnist-c:corruptions=fog|rotate", "gaussian:sigma=0.3",
        "smoothing:mode=sequential,n0=20,n=200,n_max=2000,radii=0.25|0.5,sigma=0.25")]
    entries = {}
    for device in ("cpu", "cuda"):
        folder = tmp_path / device
        folder.mkdir()
        write_spec(folder, n=100, threats=threats, models=["mnist5k-small-cnn"])
        leaderboard.update(folder, store=tmp_path / f"{device}.sqlite", device=device)
        entries[device] = leaderboard.Leaderboard.load(folder).entries["mnist5k-small-cnn"]
        assert leaderboard.Leaderboard.load(folder).check() == []
    for on_cpu, on_cuda in zip(entries["cpu"]["records"], entries["cuda"]["records"]):
        assert on_cuda["provenance"]["device"].startswith("cuda")
        cpu_acc, cuda_acc = accuracies(on_cpu["metrics"]), accuracies(on_cuda["metrics"])
        assert cpu_acc.keys() == cuda_acc.keys()
        for path, acc in cpu_acc.items():
            low, high = acc.interval
            assert low - 1e-9 <= cuda_acc[path].value <= high + 1e-9, (on_cpu["threat"], path)
