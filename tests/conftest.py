"""Shared fixtures. Tests that need the full MNIST files skip (with the reason) unless ROBENCH_DATA
points at them; CI sets ROBENCH_DATA, so nothing skips there."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from robench.data import IDX_FILES, IDX_FOLDERS


def _has_mnist(root: str | None) -> bool:
    return bool(root) and all(any((Path(root) / f / n).is_file() for f in IDX_FOLDERS["mnist"])
                              for n in IDX_FILES["mnist"])


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Zoo weights and stores of the test session live in a fresh folder, never in ~/.cache."""
    old = os.environ.get("ROBENCH_CACHE")
    os.environ["ROBENCH_CACHE"] = str(tmp_path_factory.mktemp("robench-cache"))
    yield
    if old is None:
        os.environ.pop("ROBENCH_CACHE", None)
    else:
        os.environ["ROBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def data_root() -> str:
    """The folder holding the real MNIST (and other) files; skips the test where there is none."""
    root = os.environ.get("ROBENCH_DATA")
    if not _has_mnist(root):
        pytest.skip("needs the full MNIST files: set ROBENCH_DATA to a folder holding mnist/*.gz")
    return root


@pytest.fixture(scope="session")
def embedded_model():
    """The quickstart's small CNN trained on the embedded digits (about 10 s on 2 cores)."""
    from robench import zoo

    return zoo.get("mnist5k-small-cnn").load(progress=False)


@pytest.fixture(scope="session")
def embedded_test():
    from robench.data import load_dataset

    return load_dataset("mnist-5k", "test")


@pytest.fixture(scope="session")
def mnist_model(data_root):
    """The zoo's standard small CNN on real MNIST (about a minute on 2 cores)."""
    from robench import zoo

    return zoo.get("mnist-small-cnn").load(data_root=data_root, progress=False)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


class Tie(nn.Module):
    """In fp32 class 1 by a margin of 0.05 that no input moves; under bf16 autocast classes 0 and 1 tie
    at 100 (bf16's spacing there is 0.5), so argmax says 0: a bf16 "success" that fp32 refutes. Counts
    forward passes."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 10)
        with torch.no_grad():
            self.linear.weight.normal_(0, 1e-6, generator=torch.Generator().manual_seed(0))
            self.linear.bias.zero_()
            self.linear.bias[:2] = torch.tensor([100.05, 100.1])
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.linear(x.flatten(1))


@pytest.fixture
def tie_model() -> nn.Module:
    """A fresh `Tie` in eval mode (its forward-pass count starts at 0)."""
    return Tie().eval()


class SmallMemory(nn.Module):
    """`model`, except that a batch of more than `limit` inputs runs out of memory (as CUDA's allocator says)."""

    def __init__(self, model: nn.Module, limit: int):
        super().__init__()
        self.model, self.limit = model, limit

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(x)} images")
        return self.model(x)


@pytest.fixture
def small_memory() -> type[SmallMemory]:
    """The class `SmallMemory`: a model wrapper whose batches above a limit run out of memory."""
    return SmallMemory
