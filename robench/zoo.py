"""Named, reproducible models: architecture + dataset + training recipe + where the weights come from.

Locally trained weights are cached as safetensors under ``$ROBENCH_CACHE/zoo`` (default
``~/.cache/robench/zoo``), keyed by the hash of everything that determines them; a sidecar JSON records
the file's sha256, which loading verifies.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from robench import nets
from robench.data import dataset_info, load_dataset
from robench.errors import RobenchError
from robench.files import atomic_path, atomic_write, cache_root, download, file_digest
from robench.registry import DEFENSES, MODELS
from robench.training import Recipe, train

#: bump when the training loop changes what it produces: every cached entry is then retrained
TRAINING_VERSION = 2

#: minutes training an entry took on this project's 2-core CPU (the README's zoo table, which
#: tests/test_readme.py checks against this), announced before an entry is trained
TRAINING_MINUTES = {
    "mnist5k-small-cnn": 0.2, "mnist5k-mlp": 0.1,
    "mnist-small-cnn": 1.7, "mnist-madry-cnn": 5.0, "mnist-lenet5": 0.5, "mnist-mlp": 0.1, "mnist-pgd-at": 71.7,
    "mnist-gaussian-0.25": 3.6, "mnist-gaussian-0.5": 5.1, "mnist-patch-gaussian": 3.0, "mnist-small-cnn-pwc": 3.7,
    "fashion-mnist-small-cnn": 4.2, "fashion-mnist-gaussian-0.25": 10.3, "fashion-mnist-patch-gaussian": 2.9,
    "mnist-ibp-0.1": 31.0, "mnist-crown-ibp-0.3": 88.0, "mnist-small-cnn-bn": 4.3, "mnist-sparse-cnn": 4.8,
    "mnist-distilled": 10.7, "mnist-smoothadv-0.25": 43.6, "mnist-pgd-at-0.25": 32.0,
    "mnist-pgd-at-0.5": 35.1,
}


@dataclass(frozen=True)
class ModelEntry:
    """A zoo model. Weights are trained locally from `recipe` (and cached) unless `weights` names a
    local file or an https URL, in which case `sha256` must be given and is checked on every load."""

    name: str
    dataset: str
    arch: str
    recipe: Recipe = field(default_factory=Recipe)
    description: str = ""
    weights: str | None = None
    sha256: str | None = None

    @property
    def recipe_hash(self) -> str:
        what = {"dataset": self.dataset, "arch": self.arch, "recipe": self.recipe.as_dict(),
                "training_version": TRAINING_VERSION}
        defense = self.recipe.defense
        depends = DEFENSES.get(defense).depends_on(self.recipe.defense_params) if defense else {}
        if depends:  # entries without dependencies keep the hash they had before dependencies were recorded
            what["depends_on"] = depends
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def identity(self) -> str:
        """What identifies the weights: the sha256 of given weights, else the recipe hash."""
        return self.sha256.lower() if self.weights and self.sha256 else self.recipe_hash

    @property
    def cache_path(self) -> Path:
        return cache_root() / "zoo" / f"{self.name}-{self.recipe_hash}.safetensors"

    def build(self) -> nn.Module:
        info = dataset_info(self.dataset)
        return nets.create(self.arch, channels=info.channels, size=info.size, classes=info.classes,
                           mean=info.mean, std=info.std)

    def is_cached(self) -> bool:
        return self.cache_path.is_file() and self.cache_path.with_suffix(".json").is_file()

    def expected_time(self) -> str:
        """How long training takes, for the line announcing it: the zoo table's time, else the recipe."""
        from robench.progress import duration

        minutes = TRAINING_MINUTES.get(self.name)
        if minutes is None:
            return f"{self.recipe.epochs} epochs of {self.arch} on {self.dataset}; no time measured yet"
        threads = "" if self.recipe.threads == 1 else f", {self.recipe.threads} torch threads"
        return f"about {duration(60 * minutes)} on a 2-core CPU{threads}"

    def train(self, *, data_root: str | None = None, device: str = "cpu", progress: bool = True) -> nn.Module:
        """Train from the recipe, cache the weights with their sha256, and return the model. With
        `progress`, say what is trained and how long it should take before, and what was written after."""
        import time

        from robench.progress import duration, note

        note(f"robench: training zoo model {self.name} ({self.expected_time()}; cached afterwards)", enabled=progress)
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.recipe.seed)  # the initial weights are part of the recipe
            model = self.build()
        data = load_dataset(self.dataset, "train", data_root)
        path = self.cache_path
        checkpoint = path.with_suffix(".partial.pt")  # a killed training resumes from its last epoch
        summary = train(model, data, self.recipe, device=device, progress=progress, checkpoint=checkpoint)
        model.cpu()
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
                      metadata={"entry": self.name, "recipe_hash": self.recipe_hash})
            meta = {"entry": self.name, "recipe": self.recipe.as_dict(), "sha256": file_digest(tmp, "sha256"),
                    "torch": torch.__version__, **summary}
            atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=2))
        checkpoint.unlink(missing_ok=True)
        note(f"robench: trained {self.name} in {duration(time.perf_counter() - start)}; wrote {path} and "
             f"{path.with_suffix('.json').name}", enabled=progress)
        return model

    def load(self, *, train_if_missing: bool = True, data_root: str | None = None,
             progress: bool = True) -> nn.Module:
        """The model in eval mode, its weights checked against their sha256, named after the entry
        (robench.naming: Records and progress bars show the entry's name)."""
        from robench.naming import name_model

        if self.weights:
            source, expected = self.weights, self.sha256
        else:
            if not self.is_cached():
                if not train_if_missing:
                    raise RobenchError(f"zoo model {self.name!r} is not trained yet; run `robench zoo train {self.name}`.")
                return name_model(self.train(data_root=data_root, progress=progress).eval(), self.name)
            source = str(self.cache_path)
            expected = json.loads(self.cache_path.with_suffix(".json").read_text())["sha256"]
        model = load_into(self.build(), source, expected, f"weights {source} do not fit zoo model {self.name!r}")
        return name_model(model, self.name)


def load_into(model: nn.Module, weights: str, sha256: str | None, what: str) -> nn.Module:
    """`model` in eval mode with the weights at `weights` (a local path, or a URL fetched once into the
    cache) checked against `sha256`: the one way every model, zoo entry or user's, gets its weights.
    `what` names the weights and the model in the error raised when they do not fit."""
    load_state(model, load_weights(fetch_weights(weights, sha256), sha256), what)
    return model.eval()


def load_weights(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a weights-only torch checkpoint (told apart by their first bytes),
    checked against `sha256` (64 hex digits, either case)."""
    path, expected = Path(path), _sha256(sha256)
    if not path.is_file():
        raise RobenchError(f"weights file {path} does not exist.")
    if expected is not None:
        got = file_digest(path, "sha256")
        if got != expected:
            raise RobenchError(f"checksum mismatch for {path}: sha256 {got}, expected {expected}. "
                               "The file is corrupt or not the one expected; delete it and fetch or train it again.")
    state = read_checkpoint(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise RobenchError(f"{path} does not hold a state dict (a dict of tensors); save model.state_dict().")
    return state


def read_checkpoint(path: Path) -> object:
    """The contents of the safetensors file or weights-only torch checkpoint at `path` (nested dicts and
    lists of tensors and plain values; never arbitrary pickled objects)."""
    kind = _weights_format(path)
    try:
        if kind == "safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        hint = "" if kind == "safetensors" else " (robench loads tensors only: save model.state_dict(), not the model)"
        raise RobenchError(f"cannot read {kind} weights from {path}: {first_line(exc)}{hint}") from None


def _sha256(digest: str | None) -> str | None:
    """`digest` in lower case; an error unless it is 64 hex digits."""
    if digest is None:
        return None
    text = digest.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise RobenchError(f"sha256 {digest!r} is not 64 hexadecimal digits; give the whole digest, as "
                           "`sha256sum FILE` prints it.")
    return text


def _weights_format(path: Path) -> str:
    """The format of the weights file at `path`, from its first bytes: "safetensors" or "torch" (a zip or
    pickle checkpoint)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise RobenchError(f"weights file {path} is empty (0 bytes): its saving or download was cut short; "
                           "save or fetch it again.")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return "torch"
    if head[8:9] == b"{":  # an 8-byte header length, then the JSON header
        return "safetensors"
    if is_html(path):
        raise RobenchError(f"{path} is an HTML page, not weights: its download returned a web page (an error, "
                           "login or quota page) instead of the file; delete it and download it again.")
    raise RobenchError(f"{path} is neither a safetensors file nor a torch checkpoint (it begins {head[:12]!r}); "
                       "save weights with safetensors.torch.save_file or torch.save(model.state_dict(), path).")


def is_html(path: Path) -> bool:
    """Whether the file at `path` is a web page (its first non-blank byte is "<"), as a download that was
    refused or redirected leaves in place of a checkpoint."""
    with open(path, "rb") as f:
        return f.read(64).lstrip()[:1] == b"<"


def load_state(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load `state` into `model`; if it does not fit, raise naming (a few of) the missing, unexpected
    and mis-shaped keys, with their counts. `what` names the weights and the model for the message."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
                 for k in own if k in state and state[k].shape != own[k].shape]
    problems = [f"{len(keys)} {label} ({_few(keys)})" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
    if problems:
        raise RobenchError(f"{what}: the keys do not match: {'; '.join(problems)}.")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RobenchError(f"{what}: {first_line(exc)}") from None


def _few(items: list[str], shown: int = 3) -> str:
    return ", ".join(items[:shown]) + (f", and {len(items) - shown} more" if len(items) > shown else "")


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def fetch_weights(source: str, sha256: str | None) -> Path:
    """A local path for `source` (a path or URL); URLs are downloaded once into the cache."""
    if "://" not in source:
        return Path(source).expanduser()
    if not sha256:
        raise RobenchError(f"weights URL {source} needs a sha256 to check the download against.")
    target = cache_root() / "weights" / f"{sha256[:16]}-{Path(source).name}"
    if not target.is_file():
        try:
            download([source], target, sha256, "sha256")
        except OSError as exc:
            raise RobenchError(f"cannot download weights from {source} (or its sha256 does not match {sha256}): "
                               f"{exc}") from None
    return target


def load_user_model(target: str, weights: str | None = None, sha256: str | None = None) -> nn.Module:
    """A user's model from ``package.module:callable`` (the callable returns an nn.Module), with
    optional weights (safetensors or a weights-only torch checkpoint) checked against `sha256`."""
    import importlib

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise RobenchError(f"model {target!r} is neither a zoo name nor package.module:callable "
                           "(see `robench zoo list`).")
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        raise RobenchError(f"cannot import {target}: syntax error in {exc.filename}, line {exc.lineno}: "
                           f"{exc.msg}.") from exc
    except ImportError as exc:
        from robench.registry import SOURCES

        raise RobenchError(f"cannot import {target}: {exc}. Is the package on PYTHONPATH? (Models of a model "
                           f"source are written {', '.join(f'{s}:NAME' for s in SOURCES.names())}.)") from exc
    except Exception as exc:
        raise RobenchError(f"cannot import {target}: importing {module_name} raised {first_line(exc)}"
                           f"{_where(exc)}.") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise RobenchError(f"cannot import {target}: {module_name} ({getattr(module, '__file__', '?')}) has no "
                           f"callable {attr!r}.")
    try:
        model = factory()
    except Exception as exc:
        raise RobenchError(f"{target}: calling {attr}() raised {first_line(exc)}{_where(exc)}.") from exc
    if not isinstance(model, nn.Module):
        raise RobenchError(f"{target} returned {type(model).__name__}, not a torch.nn.Module.")
    if weights:
        return load_into(model, weights, sha256, f"weights {weights} do not fit {target}")
    return model.eval()


def _where(exc: BaseException) -> str:
    """Where in the user's code `exc` was raised, as " (at file:line)"; "" if it was raised by the call."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def resolve(name: str, *, weights: str | None = None, sha256: str | None = None, dataset: str | None = None,
            normalize: str | None = None, data_root: str | None = None, progress: bool = True) -> nn.Module:
    """The model in eval mode for `name`, named after it: a zoo entry (`ModelEntry.load`: trained and cached
    on first use), ``source:name`` from a model source (robench.sources: ``robustbench:``, ``timm:``,
    ``torchvision:``, sized for `dataset` where it matters) or a user's ``package.module:callable``
    (`load_user_model`). Weights from a file (`weights`, checked against `sha256`) always go through
    `load_into`. `normalize` (see robench.sources.base.parse_normalize) is the input normalisation, put
    inside the model: it replaces a source model's own (from its library's configuration), and is added in
    front of any other model. This is the entry point the CLI and ``robench.create_model`` use."""
    from robench.naming import name_model
    from robench.registry import SOURCES
    from robench.sources.base import normalized, parse_normalize

    if sha256 and not weights:
        raise RobenchError("--weights-sha256 checks a --weights file; give --weights too.")
    given = None if normalize is None else parse_normalize(normalize)  # checked before any work
    own = None
    prefix, sep, rest = name.partition(":")
    if sep and prefix in SOURCES:
        loaded = SOURCES.create(prefix).load(rest, weights=weights, sha256=sha256, dataset=dataset, progress=progress)
        model, own = loaded.model, loaded.normalization
    elif sep:
        model = load_user_model(name, weights, sha256)
    elif weights:
        raise RobenchError("--weights goes with --model package.module:callable or source:name, not with a zoo name.")
    else:
        model = get(name).load(data_root=data_root, progress=progress)
    return name_model(normalized(model, own if normalize is None else given), name)


def register(entry: ModelEntry) -> ModelEntry:
    return MODELS.register(entry.name, entry)


def get(name: str) -> ModelEntry:
    entry = MODELS.get(name)
    if not isinstance(entry, ModelEntry):
        raise RobenchError(f"models registry entry {name!r} is not a ModelEntry.")
    return entry


STANDARD = Recipe(epochs=3)

for _entry in (
    ModelEntry("mnist5k-small-cnn", "mnist-5k", "small-cnn", Recipe(epochs=8),
               "small CNN on the embedded 4,000 MNIST digits (offline quickstart)"),
    ModelEntry("mnist5k-mlp", "mnist-5k", "mlp", Recipe(epochs=8), "MLP on the embedded digits (quickstart)"),
    ModelEntry("mnist-small-cnn", "mnist", "small-cnn", STANDARD, "small CNN, standard training"),
    ModelEntry("mnist-madry-cnn", "mnist", "madry-cnn", STANDARD, "Madry et al.'s MNIST CNN, standard training"),
    ModelEntry("mnist-lenet5", "mnist", "lenet5", STANDARD, "LeNet-5, standard training"),
    ModelEntry("mnist-mlp", "mnist", "mlp", STANDARD, "MLP, standard training"),
    ModelEntry("fashion-mnist-small-cnn", "fashion-mnist", "small-cnn", STANDARD, "small CNN, standard training"),
    ModelEntry("cifar10-resnet20", "cifar10", "resnet20", Recipe(epochs=30),
               "ResNet-20, standard training (on the 4,000-image subset where the full set is absent)"),
    ModelEntry("mnist-pgd-at", "mnist", "madry-cnn",
               Recipe("pgd-at", {"eps": 0.3, "steps": 10, "rel_step": 0.25, "warmup": 2}, epochs=8, threads=2),
               "Madry et al.'s CNN, PGD-10 adversarial training at Linf eps 0.3 with a 2-epoch eps ramp, 8 epochs"),
    ModelEntry("fashion-mnist-pgd-at", "fashion-mnist", "madry-cnn",
               Recipe("pgd-at", {"eps": 0.1, "steps": 10, "rel_step": 0.25, "warmup": 2}, epochs=8, threads=2),
               "Madry et al.'s CNN, PGD-10 adversarial training at Linf eps 0.1 with a 2-epoch eps ramp, 8 epochs "
               "(mnist-pgd-at's recipe at the eps usual for Fashion-MNIST)"),
    ModelEntry("mnist-multi-norm-at", "mnist", "madry-cnn",
               Recipe("multi-norm-at", {"eps_linf": 0.3, "eps_l2": 2.0, "steps": 10, "rel_step": 0.25, "warmup": 2,
                                        "mode": "avg"}, epochs=8, threads=2),
               "Madry et al.'s CNN trained on Linf (eps 0.3) and L2 (eps 2.0) PGD-10 examples of every input, losses "
               "averaged (Tramer & Boneh 2019's MNIST budgets and 'avg'; they ran 40-100 attack steps, robench 10 at "
               "this CPU budget), mnist-pgd-at's ramp and 8 epochs"),
    ModelEntry("mnist-distilled", "mnist", "small-cnn",
               Recipe("distill", {"teacher": "mnist-pgd-at", "alpha": 1.0, "temperature": 30.0}, epochs=3),
               "small CNN distilled from mnist-pgd-at on clean inputs, alpha 1, T 30 (Goldblum et al. 2020's code; "
               "they distil CIFAR-10 for 200 epochs, robench 3 MNIST epochs at this CPU budget)"),
    ModelEntry("mnist-ard", "mnist", "small-cnn",
               Recipe("ard", {"teacher": "mnist-pgd-at", "alpha": 1.0, "temperature": 30.0, "eps": 0.3, "steps": 10,
                              "rel_step": 0.25, "warmup": 2}, epochs=8, threads=2),
               "small CNN, adversarially robust distillation from mnist-pgd-at: alpha 1, T 30 (Goldblum et al. "
               "2020's code), student attacked by PGD-10 at Linf eps 0.3 maximising the KL to the teacher (their code "
               "attacks the labels' cross-entropy; CIFAR-10, 200 epochs), mnist-pgd-at's ramp and 8 epochs"),
    ModelEntry("mnist-smoothadv-0.25", "mnist", "small-cnn",
               Recipe("smoothadv-at", {"sigma": 0.25, "eps": 0.5, "m": 2, "steps": 2, "warmup": 1}, epochs=4),
               "small CNN, SmoothAdv training at sigma 0.25: L2 eps 0.5, m 2 noise draws, 2 attack steps, eps ramp "
               "over 1 epoch, 4 epochs as mnist-gaussian-0.25 (Salman et al. 2019 ran CIFAR-10 with eps 0.25-2, m 1-8, "
               "1-10 steps, a 10-epoch ramp, 150 epochs; no MNIST)"),
    ModelEntry("mnist-small-cnn-bn", "mnist", "small-cnn-bn", STANDARD,
               "small CNN with batch normalisation, standard training (Galloway et al. 2019: beside mnist-small-cnn)"),
    ModelEntry("mnist-sparse-cnn", "mnist", "sparse-cnn", STANDARD,
               "small CNN with sparse weights and k-winners-take-all, standard training (Ahmad & Scheinkman 2019)"),
    ModelEntry("mnist-pgd-at-0.5", "mnist", "madry-cnn",
               Recipe("pgd-at", {"eps": 0.3, "steps": 10, "rel_step": 0.25, "warmup": 2, "ratio": 0.5}, epochs=8,
                      threads=2),
               "mnist-pgd-at with half of each batch adversarial (Duesterwald et al. 2019)"),
    ModelEntry("mnist-pgd-at-0.25", "mnist", "madry-cnn",
               Recipe("pgd-at", {"eps": 0.3, "steps": 10, "rel_step": 0.25, "warmup": 2, "ratio": 0.25}, epochs=8,
                      threads=2),
               "mnist-pgd-at with a quarter of each batch adversarial (Duesterwald et al. 2019)"),
    ModelEntry("mnist-gaussian-0.25", "mnist", "small-cnn", Recipe("gaussian", {"sigma": 0.25}, epochs=4),
               "small CNN, Gaussian noise training sigma 0.25 (base of randomized smoothing)"),
    ModelEntry("mnist-gaussian-0.5", "mnist", "small-cnn", Recipe("gaussian", {"sigma": 0.5}, epochs=4),
               "small CNN, Gaussian noise training sigma 0.5 (base of randomized smoothing)"),
    ModelEntry("mnist-patch-gaussian", "mnist", "small-cnn",
               Recipe("patch-gaussian", {"width": 25, "sigma_max": 1.0}, epochs=3),
               "small CNN, Patch Gaussian training (W 25, sigma_max 1.0)"),
    ModelEntry("fashion-mnist-gaussian-0.25", "fashion-mnist", "small-cnn",
               Recipe("gaussian", {"sigma": 0.25}, epochs=4), "small CNN, Gaussian noise training sigma 0.25"),
    ModelEntry("fashion-mnist-patch-gaussian", "fashion-mnist", "small-cnn",
               Recipe("patch-gaussian", {"width": 25, "sigma_max": 1.0}, epochs=3),
               "small CNN, Patch Gaussian training (W 25, sigma_max 1.0)"),
    ModelEntry("mnist-small-cnn-pwc", "mnist", "small-cnn",
               Recipe("piecewise-clustering", {"lam": 1e-3}, epochs=3),
               "small CNN, piece-wise clustering regulariser against bit flips (lambda 1e-3)"),
    ModelEntry("mnist-ibp-0.1", "mnist", "gowal-small",
               Recipe("ibp", {"eps": 0.2, "warmup": 2, "ramp": 13, "kappa": 0.5}, epochs=40),
               "Gowal et al.'s small CNN, IBP training at Linf eps 0.2 for 0.1: 2 natural epochs, then eps 0 -> 0.2 "
               "and kappa 1 -> 0.5 over 13 epochs, 40 epochs"),
    ModelEntry("mnist-crown-ibp-0.3", "mnist", "gowal-small",
               Recipe("crown-ibp", {"eps": 0.4, "warmup": 2, "ramp": 20}, epochs=60),
               "Gowal et al.'s small CNN, CROWN-IBP training at Linf eps 0.4 for 0.3: 2 natural epochs, then eps "
               "0 -> 0.4, kappa 1 -> 0 and beta 1 -> 0 over 20 epochs, 60 epochs"),
):
    register(_entry)
