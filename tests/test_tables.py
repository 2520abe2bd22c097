"""Records -> tables: every Record gets its own, distinguishable cells; tables fit their width, say their
units once, and their LaTeX compiles."""
import pytest

from robench.evaluate import Record
from robench.metrics import accuracy
from robench.tables import grid, render, threat_titles


def attack_record(model: str, threat: str, robust: int) -> Record:
    metrics = {"clean_accuracy": accuracy([True] * 10),
               "robust_accuracy": {"0.2": accuracy([True] * robust + [False] * (10 - robust))}}
    return Record(model, threat, "input-attack", "mnist", "test", 10, metrics)


def test_threats_of_the_same_name_get_their_own_columns():
    few = "pgd-linf:eps=0.2,rel_step=0.25,steps=5"
    many = "pgd-linf:eps=0.2,rel_step=0.25,steps=20"
    records = [attack_record("net", few, 7), attack_record("net", many, 4)]
    assert threat_titles([few, many]) == {few: "pgd-linf[steps=5]", many: "pgd-linf[steps=20]"}
    columns, rows = grid(records)
    assert columns == ["clean", "pgd-linf[steps=5] 0.2", "pgd-linf[steps=20] 0.2"]
    assert rows["net"]["pgd-linf[steps=5] 0.2"].value.correct == 7
    assert rows["net"]["pgd-linf[steps=20] 0.2"].value.correct == 4
    for fmt in ("table", "markdown", "csv"):
        text = render(records, fmt)
        assert "70.0" in text or "0.7" in text
        assert "40.0" in text or "0.4" in text
    # a threat alone keeps its plain name
    assert threat_titles([few]) == {few: "pgd-linf"}


def test_a_model_name_given_twice_gets_two_rows():
    threat = "pgd-linf:eps=0.2,rel_step=0.25,steps=5"
    columns, rows = grid([attack_record("net", threat, 7), attack_record("net", threat, 3)])
    assert rows["net"]["pgd-linf 0.2"].value.correct == 7 and rows["net (2)"]["pgd-linf 0.2"].value.correct == 3


def test_records_as_a_dataframe():
    import robench

    few = "pgd-linf:eps=0.2,steps=5"
    frame = robench.to_dataframe([attack_record("net", few, 7), attack_record("other", few, 4)])
    robust = frame[(frame.column == "eps 0.2")].set_index("model")
    assert robust.loc["net", "correct"] == 7 and robust.loc["other", "value"] == 0.4
    assert robust.loc["net", "ci95_low"] < 0.7 < robust.loc["net", "ci95_high"] and robust["headline"].all()
    assert set(frame.columns) >= {"model", "threat", "dataset", "n", "column", "value", "correct"}


# -- tables that fit, units said once, LaTeX that compiles -----------------------------------------------

EPS = "0.05|0.1|0.15|0.2|0.3"


def many_eps_record(model: str, threat: str = f"pgd-linf:eps={EPS},steps=5", robust: int = 6) -> Record:
    eps = threat.split("eps=")[1].split(",")[0].split("|")
    metrics = {"clean_accuracy": accuracy([True] * 9 + [False]),
               "robust_accuracy": {e: accuracy([True] * robust + [False] * (10 - robust)) for e in eps}}
    return Record(model, threat, "input-attack", "mnist", "test", 10, metrics)


def smoothing_record(model: str = "net_1 & co") -> Record:
    metrics = {"certified_accuracy": {"0.0": accuracy([True] * 8 + [False] * 2),
                                      "0.25": accuracy([True] * 5 + [False] * 5)},
               "average_certified_radius": 0.3, "abstention_rate": accuracy([False] * 10),
               "clean_accuracy": accuracy([True] * 8 + [False] * 2), "max_radius": 0.6}
    return Record(model, "smoothing:sigma=0.25,n0=10,n=100,radii=0.0|0.25", "certification", "mnist", "test", 10,
                  metrics)


def test_a_few_columns_stay_one_row_per_model_with_intervals():
    lines = render([attack_record("net", "pgd-linf:eps=0.2,steps=5", 7)], "table").splitlines()
    assert lines[0].split() == ["model", "clean", "pgd-linf", "0.2"]
    assert lines[2].split()[:3] == ["net", "100.0", "[69.2,"]
    assert "Accuracy in %, with the 95% Clopper-Pearson interval in brackets." in " ".join(lines[3:])


def test_many_threats_transpose_and_many_models_drop_intervals_to_fit_the_width():
    two = [many_eps_record(m, t) for m in ("mnist5k-small-cnn", "mnist5k-mlp")
           for t in (f"pgd-linf:eps={EPS},steps=5", f"fgsm:eps={EPS}")]
    wide = render(two, "table", width=1000).splitlines()
    assert wide[0].split()[:3] == ["model", "clean", "pgd-linf"] and len(wide[0]) > 120
    lines = render(two, "table").splitlines()
    assert max(map(len, lines)) <= 120
    assert lines[0].split() == ["mnist5k-small-cnn", "mnist5k-mlp"]  # transposed: a column per model
    assert [line.split("  ")[0] for line in lines[2:5]] == ["clean", "pgd-linf 0.05", "pgd-linf 0.1"]
    assert "[" in lines[2] and "Intervals left out" not in "\n".join(lines)
    twelve = [many_eps_record(f"model-number-{i}") for i in range(12)]
    lines = render(twelve, "table").splitlines()
    assert max(map(len, lines)) <= 120 and "[" not in "\n".join(lines[:14])
    assert "Intervals left out to fit 120 columns" in " ".join(lines)
    assert sum(line.startswith("model-number-") for line in lines) == 12  # still one row per model


def test_the_legend_explains_units_brackets_and_each_threats_notes_once():
    records = [smoothing_record("a"), smoothing_record("b")]
    text = render(records, "markdown")
    assert text.count("Certified: randomized-smoothing certified accuracy") == 1
    assert "Accuracy in %, with the 95% Clopper-Pearson interval in brackets." in text


def test_csv_holds_the_tables_percent_and_intervals():
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(render([attack_record("net", "pgd-linf:eps=0.2,steps=5", 7)], "csv"))))
    assert float(rows[0]["clean"]) == 100.0 and float(rows[0]["pgd-linf 0.2"]) == 70.0
    lo, hi = map(float, rows[0]["pgd-linf 0.2 ci95"].split("-"))
    assert 30 < lo < 70 < hi < 100


def _compile(tmp_path, table: str) -> None:
    """Compile `table` in a document whose preamble loads the packages its first line names."""
    import re
    import shutil
    import subprocess

    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    needs = re.match(r"% needs \\usepackage\{([a-z,]+)\}\n", table)
    assert needs, table.splitlines()[0]
    (tmp_path / "table.tex").write_text(table)
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{" + needs.group(1) + "}\n"
                                      "\\begin{document}\n\\input{table.tex}\n\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "Missing character" not in (tmp_path / "doc.log").read_text()  # every symbol was typeset
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_latex_compiles_with_symbols_as_math(tmp_path):
    from robench.tables import render_grid

    table = render([smoothing_record(), attack_record("net~2", "pgd-linf:eps=0.2,steps=5", 7)], "latex")
    assert r"($\sigma$=0.25)" in table and r"net\_1 \& co" in table and "σ" not in table
    more = render_grid(["BFA flips to 11%"], {"m": {"BFA flips to 11%": ">100"}}, "latex")
    assert r"$>$100" in more and r"11\%" in more
    _compile(tmp_path, table)


def test_the_shipped_leaderboards_latex_compiles(tmp_path, capsys):
    from robench.cli import main

    assert main(["leaderboard", "show", "mnist", "--format", "latex"]) == 0
    _compile(tmp_path, capsys.readouterr().out)
