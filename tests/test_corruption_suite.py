"""The CorruptionSuite base class: parts per corruption and severity, the mean / relative-drop summary,
the suite's label, export in the official layout for any image shape; MNIST-C is one instance."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from robench.corruptions.base import CorruptionThreat
from robench.corruptions.export import export_suite
from robench.corruptions.mnist_c import MnistC
from robench.corruptions.suite import CorruptionSuite, SuiteThreat, export_corruptions
from robench.errors import RobenchError
from robench.registry import CORRUPTIONS
from robench.threats import build_threat


class ToySuite(CorruptionSuite):
    """Two deterministic corruptions at two severities each (not registered: a test-local suite)."""

    name = "toy-c"
    label = "Toy-C"
    members = ("brightness", "scale")
    severities = (1, 3)

    def files(self, out: Path, part: str, split: str) -> tuple[Path, Path]:
        corruption, severity = self.parts[part]
        return out / f"{corruption}-{severity}.npy", out / "labels.npy"


def test_a_suite_has_one_part_per_corruption_and_severity(embedded_model, embedded_test):
    threat = ToySuite.as_threat()
    assert isinstance(threat, SuiteThreat) and isinstance(threat, CorruptionThreat) and threat.label == "Toy-C"
    assert list(threat.parts()) == ["brightness/1", "brightness/3", "scale/1", "scale/3"]
    assert [c.severity for c in threat.corruptions.values()] == [1, 3, 1, 3]
    data = embedded_test.select(n=64)
    m = threat.summarize(threat.evaluate_shard(embedded_model, data.x, data.y, torch.Generator().manual_seed(0)))
    values = {k: a["value"] for k, a in m["accuracy"].items()}
    assert m["mean_accuracy"] == pytest.approx(np.mean(list(values.values())))
    clean = m["clean_accuracy"]["value"]
    assert m["relative_drop"] == pytest.approx((clean - m["mean_accuracy"]) / clean)
    assert m["mean_accuracy_per_severity"] == pytest.approx(
        {"1": (values["brightness/1"] + values["scale/1"]) / 2, "3": (values["brightness/3"] + values["scale/3"]) / 2})
    assert m["mean_accuracy_per_corruption"]["scale"] == pytest.approx((values["scale/1"] + values["scale/3"]) / 2)


def test_unknown_member_names_the_suite():
    with pytest.raises(RobenchError, match="unknown Toy-C corruption 'fogg'"):
        ToySuite(corruptions=("fogg",))


def test_mnist_c_is_a_suite_with_unchanged_threat():
    assert issubclass(CORRUPTIONS.get("mnist-c"), CorruptionSuite) and CORRUPTIONS.get("mnist-c") is MnistC
    threat = build_threat("mnist-c:corruptions=fog|zigzag")
    assert str(threat.spec) == "mnist-c:corruptions=fog|zigzag" and threat.label == "MNIST-C"
    assert list(threat.parts()) == ["fog", "zigzag"] and threat.part_severities is None


def test_export_in_the_suites_own_layout(tmp_path, embedded_test):
    out = ToySuite(corruptions=("scale",)).export("mnist-5k", "test", tmp_path, progress=False)
    assert sorted(os.listdir(out)) == ["labels.npy", "scale-1.npy", "scale-3.npy"]
    images = np.load(out / "scale-3.npy")
    assert images.shape == (len(embedded_test), 28, 28, 1) and images.dtype == np.uint8
    expected = CORRUPTIONS.create("scale", severity=3)(embedded_test.select().x)
    assert np.array_equal(images, (expected * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    assert np.array_equal(np.load(out / "labels.npy"), embedded_test.select().y.numpy().astype(np.uint8))


def test_export_takes_rgb_images_of_any_size(tmp_path, data_root):
    out = export_suite("gaussian", "cifar10", "test", tmp_path, data_root=data_root, progress=False)
    images, labels = np.load(out / "gaussian" / "test_images.npy"), np.load(out / "gaussian" / "test_labels.npy")
    assert images.shape == (1000, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (1000,) and labels.dtype == np.uint8
    again = export_corruptions({"gaussian": CORRUPTIONS.create("gaussian")}, "cifar10", "test", tmp_path / "b",
                               data_root=data_root, progress=False)
    assert np.array_equal(np.load(again / "gaussian" / "test_images.npy"), images)  # same seed, same files


def test_shape_error_names_the_shape_and_the_alternatives():
    with pytest.raises(RobenchError, match=r"needs images of shape \(N, 1, 28, 28\) \(N, C, H, W\); got "
                                           r"\(N, 3, 32, 32\).*any shape \(.*gaussian"):
        CORRUPTIONS.create("zigzag")(torch.zeros(2, 3, 32, 32))
