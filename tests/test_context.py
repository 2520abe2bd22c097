"""Threats get their context: the dataset, data root and example indices reach a threat before its
shards run (`Threat.bind`) and in each shard (``context.indices``), so a file-backed corruption suite
reads its precomputed images by example index and the bit-flip attack draws its batches from the
training split of the dataset being evaluated, under --data-root."""
from typing import Any

import numpy as np
import pytest
import torch

import robench
from robench.errors import RobenchError
from robench.inference import predict
from robench.metrics import accuracy
from robench.registry import CORRUPTIONS
from robench.threats import Outputs, Threat, ThreatContext, build_threat


class FileSuite(Threat):
    """Accuracy on precomputed corrupted images, one per example index of the split (a .npy of uint8
    (N, C, H, W), as MNIST-C ships its corruptions)."""

    kind = "corruption"
    deterministic = True
    bound: list = []  # contexts bind received, for the test

    def __init__(self, path: str):
        self.path = path
        self.images: np.ndarray | None = None

    @classmethod
    def as_threat(cls, path: str = "") -> "FileSuite":
        return cls(path)

    def bind(self, context: ThreatContext) -> None:
        super().bind(context)
        FileSuite.bound.append(context)
        self.images = np.load(self.path, mmap_mode="r")  # read once, shared by every shard
        if int(context.indices.max()) >= len(self.images):
            raise RobenchError(f"{self.path} holds {len(self.images)} images; example {context.indices.max()} asked.")

    def evaluate_shard(self, model, x, y, generator) -> Outputs:
        rows = torch.from_numpy(np.ascontiguousarray(self.images[self.context.indices])).float().div(255)
        return {"index": np.asarray(self.context.indices),
                "correct": (predict(model, rows.to(x.device)).argmax(1) == y).cpu().numpy()}

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        return {"accuracy": accuracy(outputs["correct"])}


@pytest.fixture
def file_suite(monkeypatch, tmp_path, embedded_test):
    CORRUPTIONS.names()  # built-ins loaded, so the test entry is added after them
    monkeypatch.setitem(CORRUPTIONS._entries, "toy-file-suite", FileSuite)
    FileSuite.bound = []
    inverted = 255 - embedded_test.images.numpy()  # "precomputed corruption": the inverted digits
    path = tmp_path / "inverted.npy"
    np.save(path, inverted)
    return path, inverted


def test_a_file_backed_suite_reads_its_images_by_example_index(embedded_model, embedded_test, file_suite, tmp_path):
    path, inverted = file_suite
    assert "toy-file-suite" in robench.list_threats("toy-*")
    indices = [7, 3, 999, 500, 12, 40, 41, 2, 600, 1]
    record = robench.evaluate(embedded_model, f"toy-file-suite:path={path}", dataset="mnist-5k", indices=indices,
                              store=tmp_path / "s.sqlite", shard_size=3, with_outputs=True)[0]
    assert record.outputs["index"].tolist() == indices  # every shard saw its own examples' indices
    expected = predict(embedded_model, torch.from_numpy(inverted[indices]).float() / 255).argmax(1) \
        == embedded_test.labels[indices]
    assert record.outputs["correct"].tolist() == expected.tolist()
    assert record.metrics["accuracy"]["correct"] == int(expected.sum())
    context = FileSuite.bound[0]
    assert (context.dataset, context.split) == ("mnist-5k", "test") and context.indices.tolist() == indices


def test_bitflip_draws_from_the_training_split_of_the_evaluated_dataset(embedded_model, tmp_path, monkeypatch):
    from robench.attacks import bitflip

    calls = []
    real = bitflip.load_dataset

    def spy(name, split="test", root=None, download=False):
        calls.append((name, split, root))
        return real(name, split, root, download=False)  # offline: mnist-5k is embedded, nothing to fetch

    monkeypatch.setattr(bitflip, "load_dataset", spy)
    assert build_threat("bitflip:flips=1").canonical == \
        "bitflip:batch=128,dataset=none,flips=1,k=10,loss=margin,seeds=5,target=0.11"
    root = tmp_path / "data"  # mnist-5k is embedded: any root holds it
    robench.evaluate(embedded_model, "bitflip:flips=1,seeds=1,batch=16,k=5", dataset="mnist-5k", n=20,
                     data_root=str(root), store=tmp_path / "s.sqlite")
    assert calls == [("mnist-5k", "train", str(root))]
    # an explicit dataset= is kept (the leaderboards spell it out)
    threat = build_threat("bitflip:flips=1,seeds=1,dataset=mnist-5k")
    threat.bind(ThreatContext("fashion-mnist", "test", str(root)))
    threat._pool(torch.zeros(2, 1, 28, 28))
    assert calls[-1] == ("mnist-5k", "train", str(root))


def test_bitflip_without_a_context_or_dataset_says_what_it_needs(embedded_model, generator):
    threat = build_threat("bitflip:flips=1,seeds=1")
    with pytest.raises(RobenchError, match="give dataset="):
        threat.evaluate_shard(embedded_model, torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.int64), generator)


def test_at_narrows_a_bound_threat_to_a_shard_without_touching_it():
    threat = build_threat("clean")
    assert threat.at(np.arange(3)) is threat  # unbound: nothing to narrow
    threat.bind(ThreatContext("mnist-5k", "test", None, np.arange(10)))
    shard = threat.at(np.array([4, 5]))
    assert shard is not threat and shard.context.indices.tolist() == [4, 5]
    assert threat.context.indices.tolist() == list(range(10))
