"""Bad input gives a one-line RobenchError that says what was wrong and how to fix it, before any work
starts; on the command line, exit code 2 and one line on stderr (130 and one line for Ctrl-C)."""
import re
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import robench.zoo
from robench.cli import main
from robench.errors import RobenchError
from robench.inference import check_logits, check_weights, predict, resolve_device, warn_if_probabilities
from robench.spec import Benchmark, conform, tomllib
from robench.registry import threat_families
from robench.threats import NO_DEFAULT, Budget, build_threat, parameters_of, _factory
from robench.zoo import load_user_model, load_weights

BASE = ["--dataset", "mnist-5k", "--n", "20", "--quiet"]
LEADERBOARDS = Path(__file__).resolve().parent.parent / "leaderboards"


def cli(capsys, *argv, code=2):
    """Run the CLI; check its exit code and that stderr is one line without a traceback; return stderr."""
    assert main(list(argv)) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# -- 1. threat values are checked against their declared types ----------------------------------------

@pytest.mark.parametrize("text, message", [
    ("pgd-linf:eps=", "eps must be a finite number, or a list of them; got nothing"),
    ("pgd-linf:eps=abc", "eps must be a finite number, or a list of them; got 'abc'"),
    ("pgd-linf:eps=0.1|", "eps must be a finite number, or a list of them; got the list 0.1|"),
    ("pgd-linf:eps=nan", "eps must be a finite number"),
    ("pgd-linf:eps=0.1,rel_step=abc", "rel_step must be a finite number or none; got 'abc'"),
    ("pgd-linf:eps=0.1,steps=true", "steps must be an integer; got true"),
    ("pgd-linf:eps=0.1,steps=2.5", "steps must be an integer; got 2.5"),
    ("pgd-linf:eps=0.1,precision=16", "precision must be a string; got 16"),
    ("pgd-linf:eps=0.1,step=abc", "step must be a finite number or none"),
    ("gaussian:sigma=0.1|0.2", "sigma must be a finite number; got the list 0.1|0.2"),
    ("smoothing:sigma=0.25|0.5", "sigma must be a finite number; got the list 0.25|0.5"),
    ("smoothing:n=true", "n must be an integer; got true"),
    ("bitflip:flips=1|2", "flips must be an integer; got the list 1|2"),
    ("bitflip:k=1.5", "k must be an integer or a string"),
    ("smoothadv:eps=0.5,samples=1.5", "samples must be an integer"),
    ("mnist-c:corruptions=5", "corruptions must be a string, or a list of them"),
    ("foolbox:LinfDeepFoolAttack:eps=0.1,steps=abc", "steps must be an integer; got 'abc'"),
    ("foolbox:LinfDeepFoolAttack:eps=0.1,loss=foo", "loss must be one of logits, crossentropy"),
    ("foolbox:GenAttack:eps=0.1,reduced_dims=4", "reduced_dims must be a list of 2 values"),
])
def test_threat_values_of_the_wrong_type_are_refused(text, message):
    with pytest.raises(RobenchError, match="threat '.*': " + re.escape(message)):
        build_threat(text)


@pytest.mark.parametrize("text, canonical_part", [
    ("gaussian:sigma=1", "sigma=1.0"),                       # int accepted for float
    ("pgd-linf:eps=0.1,step=none", "step=none"),             # None where the annotation allows it
    ("pgd-linf:eps=0.1,step=1", "step=1.0"),
    ("pgd-linf:eps=0|0.1", "eps=0.0|0.1"),                   # a Budget takes lists
    ("smoothing:radii=0|1", "radii=0.0|1.0"),                # so does a tuple-typed parameter
    ("mnist-c:corruptions=fog", "corruptions=fog"),          # one value for a tuple
    ("bitflip:k=all", "k=all"),
    ("foolbox:LinfDeepFoolAttack:eps=0.1,candidates=none", "candidates=none"),
])
def test_values_that_fit_their_types_are_accepted_and_normalised(text, canonical_part):
    assert canonical_part in build_threat(text).canonical.split(":", 2)[-1].split(",")


def test_every_registered_threat_declares_types_its_defaults_fit():
    names = threat_families()
    assert len(names) > 50  # the built-ins and the foolbox attacks
    for name in names:
        for key, param in parameters_of(_factory(name)).items():
            if param.default is not NO_DEFAULT and not isinstance(param.default, Budget):
                conform(param.default, param.type, f"{name}: {key}")


def test_leaderboard_threats_keep_their_canonical_strings():
    specs = list(LEADERBOARDS.glob("*/spec.toml"))
    assert specs
    for spec in specs:
        for threat in tomllib.loads(spec.read_text())["threats"]:
            assert build_threat(threat).canonical == threat


def test_foolbox_values_are_checked_before_any_model_is_loaded(capsys, monkeypatch):
    monkeypatch.setattr(robench.zoo, "resolve", lambda *a, **k: pytest.fail("a model was loaded"))
    err = cli(capsys, "run", "--model", "mnist5k-small-cnn", "--threat",
              "foolbox:LinfDeepFoolAttack:eps=0.1,steps=abc", *BASE)
    assert "steps must be an integer" in err


# -- 2. the command line -------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--indices", "5:2"], "5:2 is an empty range"),
    (["--indices", "3,3,3"], "lists 1 example(s) more than once (3)"),
    (["--indices", "0:5,4"], "more than once (4)"),
    (["--device", "nosuch"], "'nosuch' is not a torch device"),
    (["--device", "cuda"], "no CUDA device is visible"),
])
def test_bad_run_options(capsys, monkeypatch, extra, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(robench.zoo, "resolve", lambda *a, **k: pytest.fail("a model was loaded"))
    argv = ["run", "--model", "mnist5k-small-cnn", "--threat", "clean", "--dataset", "mnist-5k", "--quiet", *extra]
    assert message in cli(capsys, *argv)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda")
    if torch.cuda.is_available():
        with pytest.raises(RobenchError, match="does not exist"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_out_naming_a_file_is_refused_before_running(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(robench.zoo, "resolve", lambda *a, **k: pytest.fail("a model was loaded"))
    (tmp_path / "results").write_text("keep me")
    err = cli(capsys, "run", "--model", "mnist5k-small-cnn", "--threat", "clean", *BASE,
              "--out", str(tmp_path / "results"))
    assert "is an existing file; give a folder" in err
    assert (tmp_path / "results").read_text() == "keep me"
    err = cli(capsys, "run", "--model", "mnist5k-small-cnn", "--threat", "clean", *BASE,
              "--out", str(tmp_path / "results" / "sub"))
    assert "is a file, not a folder" in err
    err = cli(capsys, "certify", "--model", "mnist5k-small-cnn", "--dataset", "mnist-5k", "--out", str(tmp_path))
    assert "is a folder; give the path of the per-example TSV" in err


@pytest.mark.parametrize("where", ["resolve", "evaluate"])
def test_ctrl_c_exits_quietly_with_130(capsys, monkeypatch, tmp_path, where):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(robench.zoo, "resolve", lambda *a, **k: nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))
    module = robench.zoo if where == "resolve" else robench  # the CLI calls the public robench.evaluate
    monkeypatch.setattr(module, where, interrupt)
    err = cli(capsys, "run", "--model", "mnist5k-small-cnn", "--threat", "clean", *BASE,
              "--store", str(tmp_path / "s.sqlite"), code=130)
    assert err.startswith("robench: interrupted") and "resumes" in err


#: a fresh interpreter whose `import torch` (or any import of the module `heavy`) raises KeyboardInterrupt
#: once the CLI is imported, as a Ctrl-C pressed while main() loads the heavy modules
INTERRUPTED_IMPORT = """
import builtins, sys
real_import = builtins.__import__
def interrupted(name, *args, **kwargs):
    if name == HEAVY or name.startswith(HEAVY + "."):
        raise KeyboardInterrupt
    return real_import(name, *args, **kwargs)
from robench.cli import main
assert "torch" not in sys.modules, "importing robench.cli imported torch"
builtins.__import__ = interrupted
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("heavy, argv", [
    ("torch", ["run", "--model", "mnist5k-small-cnn", "--threat", "clean", *BASE]),
    ("torch", ["list", "threats"]),
    ("torch", ["leaderboard", "show", "mnist"]),
    ("numpy", ["results", "--store", "STORE"]),
])
def test_ctrl_c_while_the_heavy_modules_import_exits_with_130(tmp_path, heavy, argv):
    import subprocess
    import sys

    argv = [str(tmp_path / "s.sqlite") if a == "STORE" else a for a in argv]
    run = subprocess.run([sys.executable, "-c", f"HEAVY = {heavy!r}\n" + INTERRUPTED_IMPORT, *argv],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 130, run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("robench: interrupted"), run.stderr
    assert "Traceback" not in run.stderr and not run.stdout


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a module of the given name and source on sys.path; returns its path."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        return path
    return write


def test_user_factory_that_raises(capsys, user_module):
    user_module("raisingnet", "def make():\n    raise ValueError('no such layer size')\n")
    err = cli(capsys, "run", "--model", "raisingnet:make", "--threat", "clean", *BASE)
    assert "raisingnet:make: calling make() raised ValueError: no such layer size (at " in err
    assert "raisingnet.py:2)" in err


def test_user_module_with_a_syntax_error(capsys, user_module):
    path = user_module("brokennet", "from torch import nn\ndef make(:\n    return nn.Linear(2, 2)\n")
    err = cli(capsys, "run", "--model", "brokennet:make", "--threat", "clean", *BASE)
    assert f"syntax error in {path}, line 2" in err


def test_user_module_whose_import_raises_or_lacks_the_callable(user_module):
    user_module("importfails", "raise RuntimeError('needs a GPU')\n")
    with pytest.raises(RobenchError, match="importing importfails raised RuntimeError: needs a GPU"):
        load_user_model("importfails:make")
    user_module("nomake", "x = 1\n")
    with pytest.raises(RobenchError, match="has no callable 'make'"):
        load_user_model("nomake:make")


@pytest.mark.parametrize("line, message", [
    ("dataset = 5", "dataset must be a string; got 5"),
    ('indices = "0:10"', "indices must be an integer, or a list of them or none; got '0:10'"),
    ("indices = [1, 2, 1]", "indices lists 1 example(s) more than once (1)"),
    ("indices = []", "indices selects no examples"),
    ("n = true", "n must be an integer or none; got true"),
    ('seed = "abc"', "seed must be an integer; got 'abc'"),
    ('split = "val"', "split must be one of train, test; got 'val'"),
    ("threats = [1]", "threats must be a string, or a list of them; got [1]"),
    ("batch_size = 64", "unknown keys ['batch_size']"),
])
def test_benchmark_values_of_the_wrong_type(capsys, tmp_path, line, message):
    path = tmp_path / "bench.toml"
    path.write_text('models = ["mnist5k-small-cnn"]\n' + ("" if line.startswith("threats") else 'threats = ["clean"]\n')
                    + line + "\n")
    with pytest.raises(RobenchError, match=r"bench.toml: .*" + re.escape(message)):
        Benchmark.load(path)
    assert message in cli(capsys, "run", str(path), "--quiet")


def test_benchmark_file_that_is_not_utf8(capsys, tmp_path):
    path = tmp_path / "bench.toml"
    path.write_bytes('models = ["mnist5k-small-cnn"]\nthreats = ["clean"]\n# caf\xe9\n'.encode("latin-1"))
    assert "is not UTF-8 text (byte 0xe9 at offset" in cli(capsys, "run", str(path), "--quiet")


# -- 3. degenerate settings ----------------------------------------------------------------------------

def test_smoothing_that_can_never_certify():
    with pytest.raises(RobenchError, match=r"n=5 can never certify at alpha=0.001.*give n >= 10"):
        build_threat("smoothing:n=5,n0=10")
    build_threat("smoothing:n=10,n0=10")
    with pytest.raises(RobenchError, match="give n >= 3"):
        build_threat("smoothing:n=2,alpha=0.25")


def test_linf_eps_above_one_is_refused_l2_is_not():
    with pytest.raises(RobenchError, match="Linf eps 1.5 exceeds 1"):
        build_threat("pgd-linf:eps=0.1|1.5")
    with pytest.raises(RobenchError, match="Linf eps 2.0 exceeds 1"):
        build_threat("foolbox:LinfPGD:eps=2")
    assert build_threat("fgsm:eps=1").epsilons == (1.0,)
    assert build_threat("pgd-l2:eps=3").epsilons == (3.0,)  # below sqrt(784) = 28 on MNIST


def test_probabilities_instead_of_logits_warn():
    logits = torch.randn(4, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_probabilities(logits)
        warn_if_probabilities(logits.log_softmax(1))
    with pytest.warns(UserWarning, match="look like probabilities.*remove the final softmax"):
        warn_if_probabilities(logits.softmax(1))


def test_nan_logits_and_weights_are_refused():
    with pytest.raises(RobenchError, match="NaN or infinite logits for 1 of 3 examples"):
        check_logits(torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [2.0, 3.0]]), 3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    check_weights(model)
    with torch.no_grad():
        model[3].weight[0, 1] = float("inf")
    with pytest.raises(RobenchError, match=r"the model's 3.weight holds 1 NaN or infinite value\(s\) of 6"):
        check_weights(model)
    with pytest.raises(RobenchError, match="NaN or infinite logits"):
        predict(model, torch.ones(2, 1, 2, 2))


# -- 4. weight files -----------------------------------------------------------------------------------

USER_MODEL = "from torch import nn\ndef make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"


def test_weight_files_that_are_not_weights(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(RobenchError, match=r"empty.pt is empty \(0 bytes\)"):
        load_weights(tmp_path / "empty.pt")
    for name in ("notes.pt", "notes.safetensors"):
        (tmp_path / name).write_text("these are my notes, not weights\n")
        with pytest.raises(RobenchError, match="is neither a safetensors file nor a torch checkpoint"):
            load_weights(tmp_path / name)
    torch.save(nn.Linear(2, 2), tmp_path / "whole.pt")
    with pytest.raises(RobenchError, match=r"cannot read torch weights .*save model.state_dict\(\)"):
        load_weights(tmp_path / "whole.pt")
    state = {"w": torch.ones(2)}
    torch.save(state, tmp_path / "state.pt")
    save_file(state, tmp_path / "state.safetensors")
    assert torch.equal(load_weights(tmp_path / "state.pt")["w"], state["w"])
    assert torch.equal(load_weights(tmp_path / "state.safetensors")["w"], state["w"])


def test_state_dict_mismatch_names_the_keys(tmp_path, user_module):
    user_module("mismatchnet", USER_MODEL)
    save_file({"1.weight": torch.zeros(10, 700), "fc.weight": torch.zeros(2), "fc.bias": torch.zeros(2)},
              tmp_path / "w.safetensors")
    with pytest.raises(RobenchError) as info:
        load_user_model("mismatchnet:make", str(tmp_path / "w.safetensors"))
    message = str(info.value)
    assert "do not fit mismatchnet:make" in message and "\n" not in message
    assert "1 missing (1.bias)" in message and "2 unexpected (fc.bias, fc.weight)" in message
    assert "1 mis-shaped (1.weight (10, 700) in the file, (10, 784) in the model)" in message


def test_sha256_case_and_form(capsys, tmp_path, user_module):
    from robench.files import file_digest

    user_module("shanet", USER_MODEL)
    path = tmp_path / "w.safetensors"
    save_file({"1.weight": torch.zeros(10, 784), "1.bias": torch.zeros(10)}, path)
    digest = file_digest(path, "sha256")
    assert load_user_model("shanet:make", str(path), digest.upper()) is not None
    for bad in (digest[:40], "z" * 64):
        with pytest.raises(RobenchError, match="is not 64 hexadecimal digits"):
            load_weights(path, bad)
    assert "give --weights too" in cli(capsys, "run", "--model", "shanet:make", "--weights-sha256", digest,
                                       "--threat", "clean", *BASE)


# -- 5. zoo models on another dataset ------------------------------------------------------------------

def test_zoo_model_on_another_dataset_is_refused(capsys, tmp_path, monkeypatch):
    def reached(*args, **kwargs):
        raise RobenchError("model loading reached")

    monkeypatch.setattr(robench.zoo, "resolve", reached)
    certify = ["certify", "--model", "fashion-mnist-gaussian-0.25", "--dataset", "mnist", "--n", "100",
               "--out", str(tmp_path / "c.tsv"), "--quiet"]
    err = cli(capsys, *certify)
    assert "'fashion-mnist-gaussian-0.25' was trained on fashion-mnist, not mnist" in err
    assert "--allow-dataset-mismatch" in err
    assert "model loading reached" in cli(capsys, *certify, "--allow-dataset-mismatch")
    bench = tmp_path / "bench.toml"
    bench.write_text('models = ["mnist5k-small-cnn", "fashion-mnist-small-cnn"]\nthreats = ["clean"]\n'
                     'dataset = "mnist-5k"\n')
    assert "'fashion-mnist-small-cnn' was trained on fashion-mnist, not mnist-5k" in cli(capsys, "run", str(bench))


def test_warnings_print_as_one_line(capsys, monkeypatch):
    def warn_then_fail(*args, **kwargs):
        warnings.warn("first line\nsecond line")
        raise RobenchError("stop here")

    monkeypatch.setattr(robench.zoo, "resolve", warn_then_fail)
    assert main(["run", "--model", "mnist5k-small-cnn", "--threat", "clean", *BASE]) == 2
    assert capsys.readouterr().err == "robench: warning: first line second line\nrobench: error: stop here\n"
