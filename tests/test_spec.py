from typing import Literal

import pytest

from robench.errors import RobenchError
from robench.spec import Benchmark, ThreatSpec, conform
from robench.threats import build_threat


def test_parse_values_and_canonical_order():
    spec = ThreatSpec.parse("pgd-linf:steps=40,eps=0.1|0.3,random_start=false")
    assert spec.name == "pgd-linf"
    assert spec.params == {"steps": 40, "eps": (0.1, 0.3), "random_start": False}
    assert str(spec) == "pgd-linf:eps=0.1|0.3,random_start=false,steps=40"


def test_namespaced_name_keeps_its_colon():
    spec = ThreatSpec.parse("foolbox:LinfDeepFoolAttack:eps=0.1,steps=5")
    assert spec.name == "foolbox:LinfDeepFoolAttack"
    assert spec.params == {"eps": 0.1, "steps": 5}


def test_canonical_fills_defaults_and_normalises_numbers():
    a = build_threat("pgd-linf:eps=1")
    b = build_threat("pgd-linf:steps=40,eps=1.0,restarts=1")
    assert a.canonical == b.canonical and a.spec.hash == b.spec.hash
    assert "rel_step=none" in a.canonical and "steps=40" in a.canonical  # none: 2.5 * eps / steps


def test_budgets_written_as_fractions_are_floats_in_the_canonical_form():
    spec = ThreatSpec.parse("pgd-linf:eps=8/255|16/255,steps=10")
    assert spec.params == {"eps": (8 / 255, 16 / 255), "steps": 10}
    threat = build_threat("pgd-linf:eps=8/255")
    assert threat.canonical == build_threat(f"pgd-linf:eps={8 / 255!r}").canonical
    assert "eps=0.03137254901960784," in threat.canonical
    assert ThreatSpec.parse("x:a=2/1,b=1/0,c=x/2,d=/tmp/f").params == {"a": 2.0, "b": "1/0", "c": "x/2", "d": "/tmp/f"}


@pytest.mark.parametrize("text, message", [
    ("pgd-linf", "needs eps"),
    ("pgd-linf:eps=1/0", "eps must be a finite number, or a list of them; got '1/0'"),
    ("pgd-linf:eps=0.1,stesp=3", "has no parameter stesp"),
    ("pgd-lin:eps=0.1", "Did you mean 'pgd-linf'"),
    ("pgd-linf:eps=-0.1", "eps must be >= 0"),
    ("pgd-linf:eps=0.1,steps=0", "steps must be an integer >= 1"),
    ("pgd-linf:eps=0.1,steps", "is not key=value"),
    ("pgd-linf:eps", "unknown threat .pgd-linf:eps.. Did you mean .pgd-linf."),
])
def test_bad_threat_specs_explain_themselves(text, message):
    with pytest.raises(RobenchError, match=message):
        build_threat(text)


def test_benchmark_file(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text('models = ["a"]\nthreats = ["clean"]\ndataset = "mnist-5k"\nn = 10\n')
    bench = Benchmark.load(path)
    assert (bench.models, bench.threats, bench.dataset, bench.n) == (["a"], ["clean"], "mnist-5k", 10)
    path.write_text('models = ["a"]\nthreats = ["clean"]\nsplitt = "test"\n')
    with pytest.raises(RobenchError, match="unknown keys"):
        Benchmark.load(path)
    path.write_text('models = [\n')
    with pytest.raises(RobenchError, match="not valid TOML"):
        Benchmark.load(path)


@pytest.mark.parametrize("value, hint, expected", [
    (3, float, 3.0),
    (3, int | float, 3),
    (None, float | None, None),
    ("fog", tuple[str, ...], ("fog",)),
    ((1, 2), tuple[float, ...], (1.0, 2.0)),
    ([1, 2], list[int] | None, [1, 2]),
    ("bf16", Literal["fp32", "bf16"], "bf16"),
    (False, bool, False),
])
def test_conform_accepts_and_normalises(value, hint, expected):
    got = conform(value, hint, "x")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value, hint, message", [
    (True, int, "x must be an integer; got true"),
    (True, float, "x must be a finite number; got true"),
    (1, bool, "x must be true or false; got 1"),
    ("3", int, "x must be an integer; got '3'"),
    (None, float, "x must be a finite number; got none"),
    (float("inf"), float, "x must be a finite number; got inf"),
    ((1, 2), int, "x must be an integer; got the list 1|2"),
    ("fp8", Literal["fp32", "bf16"], "x must be one of fp32, bf16; got 'fp8'"),
    ((1,), tuple[int, int], r"x must be a list of 2 values \(an integer, an integer\)"),
])
def test_conform_refuses_with_the_declared_type(value, hint, message):
    with pytest.raises(RobenchError, match=message):
        conform(value, hint, "x")
