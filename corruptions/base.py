"""Base class of corruptions and the threat that measures accuracy and calibration under them."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, final

import numpy as np
import torch

from robench.errors import RobenchError
from robench.inference import check_images, predict
from robench.metrics import Accuracy, accuracy, calibration
from robench.report import Column, Curve, Report
from robench.registry import CORRUPTIONS
from robench.seeding import derived
from robench.threats import Kind, Outputs, Threat


class Corruption(ABC):
    """A pure, batched function of (images, generator) -> images, all float (N, C, H, W) in [0, 1].
    Parameters (severity, sigma, ...) are keyword-only arguments of ``__init__``; the same generator
    state gives the same output."""

    #: registered name
    name: ClassVar[str]
    #: (C, H, W) the corruption needs, None where any size works; a None entry leaves that axis free
    input_shape: ClassVar[tuple[int | None, int | None, int | None] | None] = None
    #: True when `apply` ignores the generator
    deterministic: ClassVar[bool] = False

    @abstractmethod
    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The corrupted images, same shape, in [0, 1]."""

    @final
    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_images(images)
        if self.input_shape is not None:
            got = tuple(images.shape[1:])
            if any(w is not None and w != g for w, g in zip(self.input_shape, got)):
                want = ", ".join("*" if w is None else str(w) for w in self.input_shape)
                anywhere = sorted(n for n in CORRUPTIONS.names() if isinstance(CORRUPTIONS.get(n), type)
                                  and issubclass(CORRUPTIONS.get(n), Corruption)
                                  and CORRUPTIONS.get(n).input_shape is None and n != "clean")
                raise RobenchError(f"corruption {self.name!r} needs images of shape (N, {want}) (N, C, H, W); got "
                                   f"(N, {', '.join(map(str, got))}). It is defined for that image shape only; use it on "
                                   "data of that shape, or a corruption that takes any shape"
                                   + (f" ({', '.join(anywhere)})." if anywhere else "."))
        generator = generator or torch.Generator(device=images.device).manual_seed(0)
        return self.apply(images, generator).clamp_(0, 1)

    @classmethod
    def as_threat(cls, **params: Any) -> "CorruptionThreat":
        return CorruptionThreat({cls.name: cls(**params)})


class Graded(Corruption):
    """A corruption with a published table of settings, one per severity 1..len(levels); `level` holds
    the chosen one."""

    levels: ClassVar[tuple]

    def __init__(self, severity: int):
        if severity not in range(1, len(self.levels) + 1):
            raise RobenchError(f"{self.name} severity must be 1..{len(self.levels)}; got {severity!r}.")
        self.severity = severity
        self.level = self.levels[severity - 1]


def register(cls: type[Corruption]) -> type[Corruption]:
    """Class decorator: register a Corruption subclass under its `name`."""
    return CORRUPTIONS.register(cls.name, cls)


class CorruptionThreat(Threat):
    """Accuracy and calibration (NLL, Brier, ECE) on clean data and under each corruption, each with
    its own random stream (derived from the shard's seed and the corruption's name)."""

    kind = Kind.CORRUPTION
    cost = 2.0  # the corruption and a forward pass, plus the clean forward pass
    #: the suite's name in table titles ("MNIST-C"), set by the suite; None: the threat's registered name
    label: str | None = None

    def __init__(self, corruptions: dict[str, Corruption]):
        self.corruptions = corruptions

    @property
    def deterministic(self) -> bool:  # type: ignore[override]
        return all(c.deterministic for c in self.corruptions.values())

    def evaluate_shard(self, model, x, y, generator) -> Outputs:
        out: Outputs = {"label": y.cpu().numpy(), "probs@clean": predict(model, x).softmax(1).cpu().numpy()}
        for name, corruption in self.corruptions.items():
            corrupted = corruption(x, derived(generator, name))
            out[f"probs@{name}"] = predict(model, corrupted).softmax(1).cpu().numpy()
        return out

    def parts(self) -> dict[str, Threat]:
        """One part per corruption (each also predicts the clean images, a small share of the work)."""
        if len(self.corruptions) <= 1:
            return {"": self}
        return {name: CorruptionThreat({name: c}) for name, c in self.corruptions.items()}

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        labels = outputs["label"]
        names = ["clean", *self.corruptions]
        acc = {n: accuracy(outputs[f"probs@{n}"].argmax(1) == labels) for n in names}
        metrics: dict[str, Any] = {"clean_accuracy": acc["clean"],
                                   "calibration": {n: calibration(outputs[f"probs@{n}"], labels) for n in names}}
        if self.corruptions:
            metrics["accuracy"] = {n: acc[n] for n in self.corruptions}
            mean = float(np.mean([acc[n]["value"] for n in self.corruptions]))
            metrics["mean_accuracy"] = mean
            metrics["relative_drop"] = (acc["clean"]["value"] - mean) / acc["clean"]["value"] if acc["clean"]["value"] else None
        return metrics

    def confidences(self, outputs: Outputs) -> dict[str, tuple[np.ndarray, np.ndarray, str, bool]]:
        return {f"calibration/{name}": (probs.max(1), probs.argmax(1) == outputs["label"],
                                        "clean_accuracy" if name == "clean" else f"accuracy/{name}", name == "clean")
                for name in ["clean", *self.corruptions] if (probs := outputs.get(f"probs@{name}")) is not None}

    def isotropic_noise(self, metrics: dict[str, Any]) -> tuple[float, Accuracy] | None:
        if len(self.corruptions) != 1:
            return None
        (name, corruption), = self.corruptions.items()
        sigma = getattr(corruption, "isotropic_sigma", None)
        return None if sigma is None else (float(sigma), Accuracy.from_json(metrics["accuracy"][name]))

    def report(self, metrics: dict[str, Any]) -> Report:
        """Headline: the mean accuracy over the corruptions (none for clean data alone); details: clean and
        per-corruption accuracy, mean, relative drop, mean and clean ECE; bars of accuracy per corruption."""
        label = self.label or self.spec.name
        clean = Accuracy.from_json(metrics["clean_accuracy"])
        per = {name: Accuracy.from_json(a) for name, a in metrics.get("accuracy", {}).items()}
        calibration = metrics["calibration"]
        columns = [Column("clean", clean, baseline=True)] + [Column(name, a) for name, a in per.items()]
        notes: tuple[str, ...] = ()
        curves: tuple[Curve, ...] = ()
        if "mean_accuracy" in metrics:
            eces = [v["ece"] for k, v in calibration.items() if k != "clean"]
            columns += [Column("mean", metrics["mean_accuracy"], head="mean", percent=True),
                        Column("relative drop %", metrics.get("relative_drop"), percent=True, higher_is_better=False),
                        Column("mean ECE", sum(eces) / len(eces), higher_is_better=False)]
            notes = (f"{label} mean: the mean of the per-corruption accuracies (their intervals are in the detail "
                     "table).",)
            curves = (Curve("corruption_accuracy", "accuracy per corruption", "corruption",
                            tuple((name, a.value, *a.interval) for name, a in per.items()), style="bars"),)
        columns.append(Column("clean ECE", calibration["clean"]["ece"], higher_is_better=False))
        what = f"{len(per)} corruptions" if per else "clean data"
        return Report(label, f"accuracy and calibration (NLL, Brier, 15-bin ECE) on {what}", tuple(columns),
                      curves, notes)


@register
class Clean(Corruption):
    """No corruption: clean accuracy and calibration."""

    name = "clean"
    deterministic = True

    def apply(self, images, generator):
        return images.clone()

    @classmethod
    def as_threat(cls, **params: Any) -> CorruptionThreat:
        return CorruptionThreat({})
