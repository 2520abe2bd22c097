"""What a model source is (`ModelSource`, `Loaded`), and the input normalisation put inside a model."""
from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import ModuleType
from typing import ClassVar

from torch import nn

from robench.errors import RobenchError

#: per-channel (mean, std); one value each broadcasts over every channel
Normalization = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class Loaded:
    """A source's network in eval mode and the normalisation its own configuration prescribes for input in
    [0, 1] (None: the network takes [0, 1] input as it is, or normalises inside)."""

    model: nn.Module
    normalization: Normalization | None = None


class ModelSource(ABC):
    """Where ``NAME:rest`` models come from. `load` builds the network; weights from a file always go
    through robench.zoo.load_into (checked, tensors only)."""

    #: the prefix before the colon
    name: ClassVar[str]
    #: how to install what the source needs, for the error raised when it is missing
    install: ClassVar[str]

    @abstractmethod
    def load(self, name: str, *, weights: str | None, sha256: str | None, dataset: str | None,
             progress: bool) -> Loaded:
        """The model `name` (the part after the prefix). With `weights` (a file or URL, checked against
        `sha256`) the network is sized for `dataset` (classes, channels) where one is given; without, the
        library's own weights are used."""

    def require(self, module: str) -> ModuleType:
        """`module` imported, or an error saying what to install. Deprecation warnings the library raises
        on import (timm: `torch.jit.interface`) are its own, not the user's, and are not shown."""
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                return importlib.import_module(module)
        except ImportError as exc:
            raise RobenchError(f"{self.name}: models need the package {module.split('.')[0]} ({exc}); "
                               f"install it with {self.install}.") from None


def close_names(name: str, choices: list[str], kind: str, listing: str) -> RobenchError:
    """An error for an unknown `name` among many `choices`: the closest few and where to list them all."""
    import difflib

    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return RobenchError(f"unknown {kind} {name!r}.{hint} {listing} lists them all.")


def parse_normalize(text: str) -> Normalization | None:
    """``--normalize``: "MEAN,STD" (one value each, for every channel), "M1,M2,M3,S1,S2,S3" (per channel),
    the name of a dataset (its mean and std, e.g. cifar10), or "none" (no normalisation: None)."""
    text = text.strip()
    if text.lower() == "none":
        return None
    if "," not in text:
        from robench.data import dataset_info

        info = dataset_info(text)
        return tuple(info.mean), tuple(info.std)
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or len(values) % 2 or not all(map(math.isfinite, values)) or min(values[len(values) // 2:]) <= 0:
        raise RobenchError(f"--normalize {text!r}: write MEAN,STD (e.g. 0.5,0.25), per-channel means then stds "
                           "(0.4914,0.4822,0.4465,0.2470,0.2435,0.2616), a dataset name (cifar10) or none; "
                           "every std must be positive.")
    half = len(values) // 2
    return tuple(values[:half]), tuple(values[half:])


def normalized(model: nn.Module, normalization: Normalization | None) -> nn.Module:
    """`model` with `normalization` as its first layer (robench.nets.Normalize), or `model` itself."""
    if normalization is None:
        return model
    from robench.nets import Normalize

    return nn.Sequential(Normalize(*normalization), model).eval()
