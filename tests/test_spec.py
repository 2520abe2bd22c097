import pytest

from robench.errors import RobenchError
from robench.spec import Benchmark, ThreatSpec
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
    assert "rel_step=0.03333333333333333" in a.canonical and "steps=40" in a.canonical


@pytest.mark.parametrize("text, message", [
    ("pgd-linf", "needs eps"),
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
