"""robench: evaluate PyTorch image classifiers against many threats at once.

    records = robench.evaluate(model, ["clean", "pgd-linf:eps=0.3"], dataset="mnist", n=1000)
    print(robench.render(records, "markdown")); robench.write_outputs(records, "out/")
    robench.list_threats("pgd-*"), robench.create_threat("pgd-linf:eps=0.3")
    robench.list_models("mnist-*"), robench.create_model("mnist-small-cnn")
    robench.find_results(model="mnist-*"), robench.leaderboard.show(...)

The public API is the names in `__all__` and the package `robench.leaderboard`. Each is imported on first
use (PEP 562), so `import robench` is light: torch loads only when a name that needs it is first used.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from robench.version import __version__, git_commit

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # evaluating, and what comes out of it
    "evaluate": "robench.evaluate", "Record": "robench.evaluate",
    "render": "robench.tables", "format_cell": "robench.tables", "to_dataframe": "robench.tables",
    "write_outputs": "robench.outputs",
    "Benchmark": "robench.spec", "check_indices": "robench.spec",
    "Store": "robench.store", "StoredRecord": "robench.store",
    "get_executor": "robench.executors", "resolve_device": "robench.inference",
    # threats
    "Threat": "robench.threats", "ThreatContext": "robench.threats", "build_threat": "robench.threats",
    "in_precision": "robench.threats",
    "list_threats": "robench.api", "create_threat": "robench.api",
    "certify_threat": "robench.api", "certify": "robench.api", "Certification": "robench.api",
    "export_corruptions": "robench.api", "corruption_layout": "robench.api", "preview_corruptions": "robench.api",
    # models, datasets and every plugin family
    "list_models": "robench.api", "create_model": "robench.api", "model_entry": "robench.api",
    "ModelEntry": "robench.zoo",
    "load_dataset": "robench.data", "Dataset": "robench.data", "DatasetInfo": "robench.data",
    "describe_plugins": "robench.api", "Plugin": "robench.api",
    "ATTACKS": "robench.registry", "CORRUPTIONS": "robench.registry", "CERTIFIERS": "robench.registry",
    "DEFENSES": "robench.registry", "MODELS": "robench.registry", "DATASETS": "robench.registry",
    # the results store on its own
    "find_results": "robench.api", "render_results": "robench.api", "write_results": "robench.api",
    "file_sha256": "robench.api",
    # what runs, and where it reads and writes (`robench info`)
    "about": "robench.about",
    "RobenchError": "robench.errors",
}
#: public subpackages
_MODULES = ("leaderboard",)

__all__ = ["__version__", "git_commit", *_EXPORTS, *_MODULES]


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    # any other submodule (robench.zoo, ...) still loads on first use, as when the package imported it
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Importing the submodule robench.evaluate sets the package's attribute "evaluate" to the module;
    where a public name is also its module's name, the attribute stays the public object."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
