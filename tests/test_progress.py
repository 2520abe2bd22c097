"""Never silent for minutes: progress as a bar on a terminal, as lines elsewhere, a note before and after
zoo training; and a model's name as Records and bars show it."""
import io

from torch import nn

from robench import progress
from robench.naming import model_name, name_model


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_print_at_most_one_line_per_interval_and_a_last_one(monkeypatch):
    clock = iter([0.0, 5.0, 16.0, 20.0, 31.0, 35.0, 40.0])  # start, then one reading per update, then close
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = progress.bar(total=500, desc="net | pgd-linf", unit="ex", stream=out, interval=15)
    assert isinstance(bar, progress.Lines)
    for _ in range(5):
        bar.update(100)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == ["net | pgd-linf: 200/500 ex (40%) after 16 s, about 24 s left",
                     "net | pgd-linf: 400/500 ex (80%) after 31 s, about 8 s left",
                     "net | pgd-linf: 500/500 ex (100%) in 40 s"]
    monkeypatch.undo()
    again = progress.Lines(total=1, desc="done", stream=out, interval=0)
    again.update()
    again.close()  # its last line said it all already
    assert out.getvalue().splitlines()[3:] == ["done: 1/1 it (100%) after 0 s"]


def test_a_long_silent_step_still_prints_a_line_per_interval_until_closed_or_dropped():
    import gc
    import time

    out = io.StringIO()
    bar = progress.bar(total=10, desc="net | pgd-linf", stream=out, interval=0.05)
    time.sleep(0.5)  # a shard that takes long: no update at all
    beats = out.getvalue().splitlines()
    assert len(beats) >= 2 and all(line.startswith("net | pgd-linf: 0/10 it (0%) after ") for line in beats)
    bar.close()
    closed = out.getvalue()
    time.sleep(0.2)
    assert out.getvalue() == closed  # closed: no more lines
    dropped = progress.bar(total=10, desc="dropped", stream=out, interval=0.05)
    time.sleep(0.2)
    del dropped  # never closed (an exception went past it): it stops once it is garbage
    gc.collect()
    time.sleep(0.1)
    before = out.getvalue()
    time.sleep(0.3)
    assert out.getvalue() == before and "dropped: 0/10" in before


def test_a_short_job_prints_nothing_and_silenced_progress_never_prints():
    out = io.StringIO()
    with progress.bar(total=3, desc="quick", stream=out) as bar:
        bar.update(3)
    silent = progress.bar(range(3), desc="silenced", enabled=False, stream=out)
    assert list(silent) == [0, 1, 2] and out.getvalue() == ""
    progress.note("not shown", enabled=False, stream=out)
    assert out.getvalue() == ""


def test_a_terminal_or_a_notebook_gets_a_live_bar(monkeypatch):
    from tqdm.auto import tqdm

    terminal = Terminal()
    assert progress.interactive(terminal) and not progress.interactive(io.StringIO())
    live = progress.bar(total=10, desc="net | clean", stream=terminal)
    assert isinstance(live, tqdm) and not live.disable
    live.close()

    class Kernel:
        kernel = object()

    class IPython:
        @staticmethod
        def get_ipython():
            return Kernel()

    monkeypatch.setitem(__import__("sys").modules, "IPython", IPython)
    assert progress.interactive(io.StringIO())  # a Jupyter kernel draws tqdm.auto's widget


def test_durations_read_as_people_say_them():
    assert [progress.duration(s) for s in (42, 210, 7200)] == ["42 s", "3.5 min", "2.0 h"]


def test_a_model_is_named_after_what_it_was_loaded_as_not_its_class(embedded_model):
    from robench import zoo
    from robench.identity import code_digest

    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert model_name(net) == "Sequential"
    before = code_digest(net)
    assert name_model(net, "mypkg.nets:make") is net and model_name(net) == "mypkg.nets:make"
    assert code_digest(net) == before  # the name never enters the model's identity
    assert model_name(zoo.get("mnist5k-small-cnn").load(progress=False)) == "mnist5k-small-cnn"


def test_zoo_training_says_what_and_how_long_before_and_what_it_wrote_after(capsys, tmp_path, monkeypatch):
    from robench import zoo
    from robench.training import Recipe

    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    assert zoo.get("mnist-gaussian-0.25").expected_time() == "about 3.6 min on a 2-core CPU"
    assert zoo.get("mnist-pgd-at").expected_time() == "about 71.7 min on a 2-core CPU, 2 torch threads"
    entry = zoo.ModelEntry("tiny-mlp", "mnist-5k", "mlp", Recipe(epochs=1))
    model = entry.load(progress=True)
    err = capsys.readouterr().err
    before = "robench: training zoo model tiny-mlp (1 epochs of mlp on mnist-5k; no time measured yet; cached afterwards)"
    after = "robench: trained tiny-mlp in "
    assert before in err and after in err and err.index(before) < err.index(after)
    assert f"wrote {entry.cache_path} and {entry.cache_path.with_suffix('.json').name}" in err
    assert entry.cache_path.is_file() and model_name(model) == "tiny-mlp"
    entry.train(progress=False)
    assert capsys.readouterr().err == ""


def test_every_timed_entry_is_in_the_zoo():
    import robench
    from robench.zoo import TRAINING_MINUTES

    assert set(TRAINING_MINUTES) <= set(robench.list_models()) and min(TRAINING_MINUTES.values()) > 0


def test_evaluate_names_a_zoo_model_and_a_user_module_after_what_they_were_loaded_as(embedded_model, tmp_path,
                                                                                     monkeypatch):
    import sys

    import robench
    from robench import zoo

    store = tmp_path / "s.sqlite"
    (record,) = robench.evaluate(embedded_model, "clean", dataset="mnist-5k", n=8, store=store, progress=False)
    assert record.model == "mnist5k-small-cnn"  # the loaded entry's name, not "Sequential"
    (tmp_path / "mynets.py").write_text("from torch import nn\n\n"
                                        "def make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mynets", raising=False)
    user = zoo.resolve("mynets:make")
    (record,) = robench.evaluate(user, "clean", dataset="mnist-5k", n=8, store=store, progress=False)
    assert record.model == "mynets:make"
    (record,) = robench.evaluate(user, "clean", dataset="mnist-5k", n=8, store=store, progress=False,
                                 model_name="mine")
    assert record.model == "mine"  # an explicit name wins


def test_evaluation_and_training_print_progress_lines_by_default_when_output_is_not_a_terminal(
        embedded_model, tmp_path, monkeypatch, capsys):
    import robench
    from robench import zoo
    from robench.training import Recipe

    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    robench.evaluate(embedded_model, "pgd-linf:eps=0.1,steps=2", dataset="mnist-5k", n=16, store=tmp_path / "s.sqlite",
                     shard_size=8)
    err = capsys.readouterr().err
    assert "mnist5k-small-cnn | pgd-linf: 16/16 ex (100%)" in err, err
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    zoo.ModelEntry("tiny-mlp", "mnist-5k", "mlp", Recipe(epochs=1)).load()
    assert "train: " in capsys.readouterr().err
