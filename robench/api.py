"""The functions of the public API that are not defined in a module of their own: listing and creating
threats, models and other plugins, certification, corruption export and the results store on its own.
Use them as `robench.<name>` (robench/__init__.py); each imports what it needs when called."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from robench.evaluate import Record
    from robench.store import Store, StoredRecord
    from robench.threats import Threat
    from robench.zoo import ModelEntry

#: the families `describe_plugins` lists: "threats" is every name usable as a threat
FAMILIES = ("threats", "attacks", "corruptions", "certifiers", "defenses", "models", "sources", "datasets")


# -- threats and models (the timm-style pairs) -------------------------------------------------------

def list_threats(pattern: str = "*") -> list[str]:
    """Names usable as threats (attacks, corruptions, certifiers) matching the glob `pattern`, sorted."""
    from robench.registry import threat_families

    return list(threat_families(pattern))


def create_threat(spec: str) -> "Threat":
    """A configured Threat from a spec, e.g. ``"pgd-linf:eps=0.1|0.3,steps=40"`` (same as `build_threat`)."""
    from robench.threats import build_threat

    return build_threat(spec)


def list_models(pattern: str = "*") -> list[str]:
    """Zoo model names matching the glob `pattern`, sorted."""
    from robench.registry import MODELS

    return MODELS.names(pattern)


def create_model(name: str, **kwargs: Any):
    """A model in eval mode: a zoo entry by name (trained and cached on first use), ``source:name`` of a model
    source (``robustbench:``, ``timm:``, ``torchvision:``) or a user's ``package.module:callable``; `kwargs`
    go to robench.zoo.resolve (weights, sha256, dataset, normalize, data_root, progress)."""
    from robench import zoo

    return zoo.resolve(name, **kwargs)


def model_entry(name: str) -> "ModelEntry":
    """The zoo entry `name`: its dataset, architecture, training recipe and description, whether its
    weights are cached (`is_cached()`, `cache_path`) and `train(...)`. Unknown names list the known ones."""
    from robench import zoo

    return zoo.get(name)


# -- every plugin family -----------------------------------------------------------------------------

class Plugin(NamedTuple):
    """One registered plugin as `robench list` shows it."""

    name: str
    #: the registry it comes from: attacks, corruptions, certifiers, defenses, models, sources or datasets
    family: str
    #: for a threat its family in the singular (attack, corruption, certifier); for a defense when it acts
    #: (training-time, inference-time); else ""
    kind: str
    #: one line: its `description`, else the first sentence of its docstring
    description: str


def _defense_stage(entry: object) -> str:
    from robench.defenses.base import InferenceDefense, TrainingDefense

    if isinstance(entry, type) and issubclass(entry, TrainingDefense):
        return "training-time"
    if isinstance(entry, type) and issubclass(entry, InferenceDefense):
        return "inference-time"
    return ""


def describe_plugins(family: str, pattern: str = "*") -> list[Plugin]:
    """The plugins of `family` (one of FAMILIES) whose names match the glob `pattern`, sorted by name;
    "threats" lists every name usable as a threat, whatever family it comes from."""
    from robench import registry
    from robench.errors import unknown_name

    if family == "threats":
        return [Plugin(name, reg.family, reg.family.rstrip("s"), registry.describe(reg.get(name)))
                for name, reg in registry.threat_families(pattern).items()]
    registries = {"attacks": registry.ATTACKS, "corruptions": registry.CORRUPTIONS,
                  "certifiers": registry.CERTIFIERS, "defenses": registry.DEFENSES, "models": registry.MODELS,
                  "sources": registry.SOURCES, "datasets": registry.DATASETS}
    if family not in registries:
        raise unknown_name("plugin family", family, FAMILIES)
    reg = registries[family]
    found = []
    for name in reg.names(pattern):
        entry = reg.get(name)
        found.append(Plugin(name, family, _defense_stage(entry) if family == "defenses" else "",
                            registry.describe(entry)))
    return found


# -- certification -----------------------------------------------------------------------------------

def certify_threat(*, sigma: float = 0.25, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                   batch: int = 1000, precision: str = "fp32",
                   radii: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0), mode: str = "fixed",
                   n_max: int | None = None) -> "Threat":
    """The randomized-smoothing certification (CERTIFY of Cohen et al. 2019) with these parameters,
    checked as a threat spec is: noise level `sigma`, `n0` draws to pick the class, `n` draws to bound its
    probability, failure probability `alpha`, `batch` noisy copies per forward pass, the certified
    accuracy table at `radii`. `mode` "sequential" draws the bound in looks of n, 2 n, 4 n, ... up to `n_max`
    and stops an example once it certifies the largest radius or can reach no further one."""
    from robench.defenses import smoothing

    return smoothing.certify_threat(sigma=sigma, n0=n0, n=n, alpha=alpha, batch=batch, precision=precision,
                                    radii=radii, mode=mode, n_max=n_max)


@dataclass(frozen=True)
class Certification:
    """What `certify` computed and wrote: the Record (with per-example outputs) and the summary (the
    threat's metrics and the paths of the files written)."""

    record: "Record"
    summary: dict[str, Any]

    @property
    def files(self) -> dict[str, Path]:
        return {k: Path(v) for k, v in self.summary["files"].items()}

    def lines(self) -> list[str]:
        """Certified accuracy per radius with its 95% interval, the average certified radius and the
        abstention rate, one line each."""
        from robench.defenses import smoothing

        return smoothing.summary_lines(self.summary)


def certify(model: Any, threat: "Threat | None" = None, *, out: str | os.PathLike, dataset: str = "mnist",
            split: str = "test", n_examples: int = 500, label: str | None = None, **kwargs: Any) -> Certification:
    """Certify `model` (an nn.Module, or a name for robench.evaluate) with `threat` (from `certify_threat`;
    default its defaults) on the first `n_examples` of `dataset`/`split`, through the results store, and
    write for ``out = path/name.tsv`` the per-example TSV, ``name_certified.tsv``/``.png`` and
    ``name_summary.json``. `kwargs` go to robench.evaluate (store, seed, device, data_root, model_name,
    progress, executor)."""
    import robench
    from robench.defenses import smoothing

    threat = threat if threat is not None else certify_threat()
    record, = robench.evaluate(model, threat, dataset=dataset, split=split, n=n_examples, with_outputs=True,
                               **kwargs)
    name = label or kwargs.get("model_name") or record.model
    summary = smoothing.write_certification(threat, record.outputs, range(record.n), out, label=name,
                                            data=f"{record.dataset} {record.split}")
    return Certification(record, summary)


# -- corrupted copies of a dataset -------------------------------------------------------------------

def export_corruptions(suite: str, dataset: str, split: str, out: str | os.PathLike, *, data_root: str | None = None,
                       seed: int = 0, progress: bool = True) -> Path:
    """Write `dataset`/`split` ('train', 'test' or 'all') under every corruption of `suite` (a corruption
    suite such as "mnist-c" in its official layout, or one corruption's name) to the folder `out`;
    the same seed gives the same files. Returns the folder."""
    from robench.corruptions.export import export_suite

    return export_suite(suite, dataset, split, out, data_root=data_root, seed=seed, progress=progress)


def corruption_layout(suite: str) -> str:
    """Where `export_corruptions` writes the files of `suite`, with OUT for the output folder."""
    from robench.corruptions.export import layout

    return layout(suite)


def preview_corruptions(path: str | os.PathLike, suite: str, dataset: str = "mnist", split: str = "test", *,
                        n: int = 8, data_root: str | None = None, seed: int = 0) -> Path:
    """A PNG grid at `path`: the first `n` images of the split, clean and under each corruption of `suite`."""
    from robench.corruptions.export import preview

    return preview(path, suite, dataset, split, n=n, data_root=data_root, seed=seed)


# -- the results store on its own --------------------------------------------------------------------

def find_results(store: "Store | str | os.PathLike | None" = None, *, model: str | None = None,
                 threat: str | None = None, dataset: str | None = None) -> list["StoredRecord"]:
    """The Records in `store` (default the shared results store) whose model, threat and dataset match
    the glob patterns given."""
    from robench import results

    return results.find(store, model=model, threat=threat, dataset=dataset)


def render_results(stored: Sequence["StoredRecord"], fmt: str = "table") -> str:
    """Stored Records as text: "table" (model, threat, dataset, n, when, headline), "csv" or "json"."""
    from robench import results

    return results.render(stored, fmt)


def write_results(stored: Sequence["StoredRecord"], path: str | os.PathLike, fmt: str = "csv") -> Path:
    """`render_results(stored, fmt)` written atomically to the file `path`."""
    from robench.files import atomic_write

    path = Path(path).expanduser()
    atomic_write(path, render_results(stored, fmt))
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, in hex (as `--weights-sha256` and a Record's provenance write it)."""
    from robench.files import file_digest

    return file_digest(Path(path), "sha256")
