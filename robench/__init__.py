"""robench: evaluate PyTorch image classifiers against many threats at once.

    records = robench.evaluate(model, ["clean", "pgd-linf:eps=0.3"], dataset="mnist", n=1000)
"""
__version__ = "0.1.0"

from robench.data import load_dataset  # noqa: E402
from robench.errors import RobenchError  # noqa: E402
from robench.evaluate import Record, evaluate  # noqa: E402
from robench.registry import ATTACKS, CORRUPTIONS, DATASETS, DEFENSES, MODELS  # noqa: E402
from robench.store import Store  # noqa: E402
from robench.tables import render  # noqa: E402
from robench.threats import Threat, build_threat  # noqa: E402

__all__ = ["evaluate", "Record", "Store", "render", "build_threat", "Threat", "load_dataset", "RobenchError",
           "ATTACKS", "CORRUPTIONS", "DEFENSES", "MODELS", "DATASETS"]
