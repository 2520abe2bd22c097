"""Records -> tables: every Record gets its own, distinguishable cells."""
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
