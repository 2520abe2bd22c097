"""robench: evaluate PyTorch image classifiers against many threats at once.

    records = robench.evaluate(model, ["clean", "pgd-linf:eps=0.3"], dataset="mnist", n=1000)
    robench.list_threats("pgd-*"), robench.create_threat("pgd-linf:eps=0.3")
    robench.list_models("mnist-*"), robench.create_model("mnist-small-cnn")
"""
from __future__ import annotations

from robench.version import __version__

from robench.data import Dataset, DatasetInfo, load_dataset  # noqa: E402
from robench.errors import RobenchError  # noqa: E402
from robench.evaluate import Record, evaluate  # noqa: E402
from robench.registry import ATTACKS, CERTIFIERS, CORRUPTIONS, DATASETS, DEFENSES, MODELS  # noqa: E402
from robench.registry import threat_families  # noqa: E402
from robench.store import Store  # noqa: E402
from robench.tables import render  # noqa: E402
from robench.threats import Threat, ThreatContext, build_threat  # noqa: E402


def list_threats(pattern: str = "*") -> list[str]:
    """Names usable as threats (attacks, corruptions, certifiers) matching the glob `pattern`, sorted."""
    return list(threat_families(pattern))


def create_threat(spec: str) -> Threat:
    """A configured Threat from a spec, e.g. ``"pgd-linf:eps=0.1|0.3,steps=40"`` (same as `build_threat`)."""
    return build_threat(spec)


def list_models(pattern: str = "*") -> list[str]:
    """Zoo model names matching the glob `pattern`, sorted."""
    return MODELS.names(pattern)


def create_model(name: str, **kwargs):
    """A model in eval mode: a zoo entry by name (trained and cached on first use) or a user's
    ``package.module:callable``; `kwargs` go to robench.zoo.resolve (weights, sha256, data_root, progress)."""
    from robench import zoo

    return zoo.resolve(name, **kwargs)


__all__ = ["__version__", "evaluate", "Record", "Store", "render", "build_threat", "Threat", "ThreatContext",
           "load_dataset", "Dataset", "DatasetInfo", "RobenchError", "list_threats", "create_threat",
           "list_models", "create_model", "ATTACKS", "CORRUPTIONS", "CERTIFIERS", "DEFENSES", "MODELS", "DATASETS"]
