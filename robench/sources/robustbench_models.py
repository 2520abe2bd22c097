"""``robustbench:NAME`` and ``robustbench:THREAT/NAME``: RobustBench's model zoo, loaded by the robustbench
package's own `load_model` from its model directory ``$ROBENCH_CACHE/robustbench/<dataset>/<threat>/NAME.pt``.

robench fetches a missing checkpoint with robustbench's own download function, and checks every checkpoint
before robustbench reads it: a web page saved in its place (Google Drive's quota page, RobustBench's most
reported failure) or a file holding more than tensors is a one-line error naming the file, never an
unpickling traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

from robench.errors import RobenchError
from robench.sources.base import Loaded, ModelSource, close_names


class RobustBench(ModelSource):
    """RobustBench's models (robustbench:Carmon2019Unlabeled, robustbench:L2/Standard) for the evaluation's
    dataset, through robustbench.utils.load_model; each normalises its input inside as RobustBench ships it."""

    name = "robustbench"
    install = "pip install 'robench[robustbench]'"

    def load(self, name: str, *, weights: str | None, sha256: str | None, dataset: str | None,
             progress: bool) -> Loaded:
        from robench import zoo

        rb = self.robustbench()
        bench = benchmark_dataset(rb, dataset)
        threat, model_name = find(rb, bench, name)
        folder = model_dir() / bench.value / threat.value
        if weights:
            raise RobenchError(f"robustbench:{name} reads its checkpoint from RobustBench's model directory, not "
                               f"--weights: put the file at {folder / (model_name + '.pt')} and leave out --weights.")
        ids = rb.model_dicts[bench][threat][model_name]["gdrive_id"]
        if ids is not None:  # otherwise robustbench loads it through timm from the Hugging Face hub
            many = isinstance(ids, list)
            for i, gid in enumerate(ids if many else [ids]):
                path = folder / (f"{model_name}.pt_m{i}.pt" if many else f"{model_name}.pt")
                if not path.is_file():
                    fetch(rb, gid, path, model_name)
                zoo.read_checkpoint(path)  # robustbench's torch.load comes after this check only
        try:
            model = rb.utils.load_model(model_name, model_dir=str(model_dir()), dataset=bench.value,
                                        threat_model=threat.value)
        except Exception as exc:
            raise RobenchError(f"robustbench could not load {threat.value}/{model_name} for {bench.value} from "
                               f"{folder}: {zoo.first_line(exc)}") from None
        return Loaded(model.eval())

    def robustbench(self) -> SimpleNamespace:
        """robustbench's loader, model directory and enums, imported."""
        alias_autoattack()
        utils = self.require("robustbench.utils")
        zoo_dicts = self.require("robustbench.model_zoo")
        enums = self.require("robustbench.model_zoo.enums")
        return SimpleNamespace(utils=utils, model_dicts=zoo_dicts.model_dicts, Dataset=enums.BenchmarkDataset,
                               Threat=enums.ThreatModel)


def alias_autoattack() -> None:
    """robustbench 1.1.1 requires the PyPI package pyautoattack but imports it under its GitHub name
    ``autoattack``: make that name import pyautoattack where no ``autoattack`` is installed."""
    import importlib.util

    if importlib.util.find_spec("autoattack") is None and importlib.util.find_spec("pyautoattack") is not None:
        import pyautoattack
        import pyautoattack.state

        sys.modules.setdefault("autoattack", pyautoattack)
        sys.modules.setdefault("autoattack.state", pyautoattack.state)


def model_dir() -> Path:
    """RobustBench's model directory: ``$ROBENCH_CACHE/robustbench``."""
    from robench.files import cache_root

    return cache_root() / "robustbench"


def benchmark_dataset(rb: SimpleNamespace, dataset: str | None):
    """robustbench's BenchmarkDataset for robench's dataset name."""
    names = [d.value for d in rb.model_dicts]
    if dataset is None or dataset not in names:
        raise RobenchError(f"robustbench models are for {', '.join(names)}; "
                           + ("give the dataset (--dataset cifar10)." if dataset is None else
                              f"{dataset} is none of them."))
    return rb.Dataset(dataset)


def find(rb: SimpleNamespace, bench, name: str) -> tuple:
    """The (ThreatModel, model name) that ``NAME`` or ``THREAT/NAME`` means among `bench`'s models."""
    threats = rb.model_dicts[bench]
    wanted, _, model_name = name.rpartition("/")
    if wanted:
        by_value = {t.value: t for t in threats}
        if wanted not in by_value:
            raise RobenchError(f"robustbench:{name}: RobustBench's threat models for {bench.value} are "
                               f"{', '.join(by_value)}, not {wanted!r}.")
        threats = {by_value[wanted]: threats[by_value[wanted]]}
    found = [t for t, models in threats.items() if model_name in models]
    if not found:
        every = sorted({m for models in threats.values() for m in models})
        raise close_names(model_name, every, f"RobustBench model for {bench.value}",
                          "robustbench.model_zoo.model_dicts")
    if len(found) > 1:
        options = " or ".join(f"robustbench:{t.value}/{model_name}" for t in found)
        raise RobenchError(f"robustbench:{name} is in RobustBench's {' and '.join(t.value for t in found)} lists "
                           f"for {bench.value}; say which: {options}.")
    return found[0], model_name


def fetch(rb: SimpleNamespace, gid: str, path: Path, model_name: str) -> None:
    """Download Google Drive file `gid` to `path` with robustbench's own download function, and remove a
    download that is a web page instead of a checkpoint."""
    from robench.zoo import first_line, is_html

    path.parent.mkdir(parents=True, exist_ok=True)
    by_hand = f"download Google Drive file {gid} (RobustBench's {model_name}) by hand and save it as {path}"
    try:
        rb.utils.download_gdrive_new(gid, path)
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise RobenchError(f"cannot download {path}: {first_line(exc)}; without network access, {by_hand}.") from None
    if not path.is_file():
        raise RobenchError(f"the download of {path} wrote no file; {by_hand}.")
    if is_html(path):
        path.unlink()
        raise RobenchError(f"the download of {path} returned an HTML page, not a checkpoint (Google Drive's quota "
                           f"or a moved file; removed it): try again later, or {by_hand}.")
