import json
import pickle
import sys

import pytest
import torch

from robench import zoo
from robench.cli import main
from robench.errors import RobenchError
from robench.training import Recipe
from robench.zoo import ModelEntry, fetch_weights, load_weights


def test_recipe_hash_keys_everything_that_shapes_the_weights():
    base = ModelEntry("a", "mnist", "small-cnn", Recipe(epochs=3))
    assert base.recipe_hash == ModelEntry("b", "mnist", "small-cnn", Recipe(epochs=3)).recipe_hash
    for other in (ModelEntry("a", "mnist", "small-cnn", Recipe(epochs=4)),
                  ModelEntry("a", "mnist", "lenet5", Recipe(epochs=3)),
                  ModelEntry("a", "fashion-mnist", "small-cnn", Recipe(epochs=3)),
                  ModelEntry("a", "mnist", "small-cnn", Recipe("gaussian", {"sigma": 0.25}, epochs=3)),
                  ModelEntry("a", "mnist", "small-cnn", Recipe("gaussian", {"sigma": 0.5}, epochs=3))):
        assert other.recipe_hash != base.recipe_hash


def test_cached_weights_are_verified_on_load(embedded_model, capsys):
    entry = zoo.get("mnist5k-small-cnn")
    assert entry.is_cached() and entry.cache_path.suffix == ".safetensors"
    meta = json.loads(entry.cache_path.with_suffix(".json").read_text())
    assert meta["recipe"] == entry.recipe.as_dict() and len(meta["sha256"]) == 64
    reloaded = entry.load(train_if_missing=False)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), embedded_model.state_dict().values()))
    assert main(["zoo", "list"]) == 0
    row = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("mnist5k-small-cnn "))
    assert " yes " in row
    assert main(["zoo", "train", "mnist5k-small-cnn"]) == 0 and "already cached" in capsys.readouterr().out
    original = entry.cache_path.read_bytes()
    try:
        entry.cache_path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(RobenchError, match="checksum mismatch"):
            entry.load(train_if_missing=False)
    finally:
        entry.cache_path.write_bytes(original)


def test_untrained_entry_without_training_is_a_clear_error():
    entry = ModelEntry("never-trained", "mnist-5k", "mlp", Recipe(epochs=1, seed=12345))
    with pytest.raises(RobenchError, match="robench zoo train never-trained"):
        entry.load(train_if_missing=False)


def test_weights_from_a_url_are_checked_and_cached(tmp_path):
    state = {"w": torch.arange(4.0)}
    path = tmp_path / "w.pt"
    torch.save(state, path)
    digest = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    local = fetch_weights(path.as_uri(), digest)
    assert torch.equal(load_weights(local, digest)["w"], state["w"])
    with pytest.raises(RobenchError, match="sha256 does not match"):
        fetch_weights(path.as_uri(), "0" * 64)
    with pytest.raises(RobenchError, match="needs a sha256"):
        fetch_weights(path.as_uri(), None)


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_checkpoints_never_unpickle_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    with pytest.raises(RobenchError, match=r"cannot read (\w+ )?weights"):
        load_weights(path)


def test_training_is_reproducible_whatever_the_global_rng_state(tmp_path, monkeypatch):
    from robench.evaluate import model_fingerprint

    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    entry = ModelEntry("tiny", "mnist-5k", "mlp", Recipe(epochs=1, batch_size=256))
    torch.rand(3)
    first = model_fingerprint(entry.train(progress=False))
    torch.rand(5)
    assert model_fingerprint(entry.train(progress=False)) == first


def test_training_uses_the_recipes_threads_whatever_the_callers_setting(tmp_path, monkeypatch):
    """CPU kernels split float sums across threads, so the weights depend on the thread count (on this small
    CNN, 2 threads give other weights than 1): training always runs with the recipe's threads and records it."""
    from robench.evaluate import model_fingerprint

    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    assert Recipe().threads == 1 and "threads" not in Recipe().as_dict()  # one-thread recipes keep their hash
    assert Recipe(threads=2).as_dict()["threads"] == 2
    entry = ModelEntry("tiny-cnn", "mnist-5k", "small-cnn", Recipe(epochs=1, batch_size=256))
    before = torch.get_num_threads()
    fingerprints = []
    try:
        for ambient in (2, 1):
            torch.set_num_threads(ambient)
            fingerprints.append(model_fingerprint(entry.train(progress=False)))
            assert torch.get_num_threads() == ambient  # restored
    finally:
        torch.set_num_threads(before)
    assert fingerprints[0] == fingerprints[1]
    meta = json.loads(entry.cache_path.with_suffix(".json").read_text())
    assert meta["torch_threads"] == 1
    assert meta["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


#: the CPU kernels (torch.backends.cpu.get_cpu_capability()) the committed zoo entries were trained with
ENTRIES_CPU = "AVX512"


def _cpu_vendor() -> str:
    """The CPU vendor as Linux reports it ("GenuineIntel", "AuthenticAMD"), or "" where it cannot be read."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("vendor_id")), "")


def test_zoo_training_reproduces_the_committed_leaderboard_weights(data_root, tmp_path, monkeypatch):
    """A fresh cache trains mnist-mlp to exactly the weights the MNIST leaderboard's entry records, on a CPU
    with the entries' instruction set and the same torch (other kernels give other weights: see
    leaderboards/README.md)."""
    from robench import leaderboard
    from robench.about import cpu
    from robench.evaluate import model_fingerprint

    record = leaderboard.Leaderboard.load("mnist").records("mnist-mlp")["clean"]
    if torch.backends.cpu.get_cpu_capability() != ENTRIES_CPU or torch.__version__ != record["provenance"]["torch"]:
        pytest.skip(f"the entries were trained with torch {record['provenance']['torch']} on {ENTRIES_CPU} kernels; "
                    f"this is torch {torch.__version__} on {torch.backends.cpu.get_cpu_capability()}")
    trained_on = record["provenance"].get("cpu")  # entries from before it was recorded: an Intel CPU
    if trained_on is not None and trained_on != cpu():
        pytest.skip(f"the entries were trained on {trained_on}, this is {cpu()}: MKL picks other kernels by CPU")
    if trained_on is None and _cpu_vendor() == "AuthenticAMD":
        pytest.skip("MKL runs other kernels on AMD CPUs: on an AMD EPYC with the same torch and AVX512 kernels, "
                    "mnist-mlp trained to 157aa4b7..., not the entry's 777cac0f...")
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = zoo.get("mnist-mlp").train(data_root=data_root, progress=False)
    finally:
        torch.set_num_threads(before)
    assert model_fingerprint(model) == record["provenance"]["model_sha256"]


def test_a_killed_training_resumes_after_its_last_epoch_to_the_weights_of_an_uninterrupted_run(tmp_path,
                                                                                              monkeypatch, capsys):
    from robench import training
    from robench.evaluate import model_fingerprint

    entry = ModelEntry("tiny-noisy-mlp", "mnist-5k", "mlp", Recipe("gaussian", {"sigma": 0.5}, epochs=3))
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path / "straight"))
    straight = model_fingerprint(entry.train(progress=False))

    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path / "killed"))
    save = training._Checkpoint.save

    def killed_after_epoch_two(self, epoch):
        save(self, epoch)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training._Checkpoint, "save", killed_after_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        entry.train(progress=False)
    checkpoint = entry.cache_path.with_suffix(".partial.pt")
    assert checkpoint.is_file() and not entry.is_cached()
    monkeypatch.undo()
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path / "killed"))
    resumed = entry.train(progress=True)
    assert "robench: resuming after epoch 2 from " in capsys.readouterr().err
    assert model_fingerprint(resumed) == straight
    assert json.loads(entry.cache_path.with_suffix(".json").read_text())["resumed_after_epoch"] == 2
    assert not checkpoint.exists()  # removed once the weights are cached

    model = entry.build()
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10)
    here = training._Checkpoint(checkpoint, entry.recipe, "cpu", model, optimizer, scheduler, torch.Generator())
    here.save(1)
    assert here.resume(progress=False) == 1
    monkeypatch.setattr(sys.modules["robench.about"], "cpu", lambda: "Another CPU (GenuineIntel)")  # other kernels
    elsewhere = training._Checkpoint(checkpoint, entry.recipe, "cpu", model, optimizer, scheduler, torch.Generator())
    assert elsewhere.resume(progress=True) == 0 and "starting over" in capsys.readouterr().err
    checkpoint.write_bytes(b"not a checkpoint")  # a damaged file is ignored: training starts over
    assert here.resume(progress=False) == 0
