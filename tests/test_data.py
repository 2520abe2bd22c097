import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from robench import data
from robench.data import IDX_FILES, load_dataset, read_idx
from robench.errors import RobenchError


@pytest.fixture(autouse=True)
def _fresh_cache():
    data._CACHE.clear()
    yield
    data._CACHE.clear()


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)
    (tmp_path / "b.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc"))
    with pytest.raises(RobenchError, match="truncated"):
        read_idx(tmp_path / "b.gz")


def test_embedded_split_is_fixed_balanced_and_real():
    train, test = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert test.labels[:20].tolist() == list(range(10)) * 2
    assert np.bincount(train.labels.numpy()).tolist() == [400] * 10
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 28, 28)
    # no test digit appears in the training part
    train_set = {bytes(img.numpy().tobytes()) for img in train.images}
    assert not any(bytes(img.numpy().tobytes()) in train_set for img in test.images)


def test_slices_are_deterministic():
    split = load_dataset("mnist-5k", "test")
    first = split.select(n=50)
    assert first.indices.tolist() == list(range(50)) and first.x.shape == (50, 1, 28, 28)
    assert 0 <= float(first.x.min()) and float(first.x.max()) <= 1
    chosen = split.select(indices=[7, 3, 999])
    assert chosen.indices.tolist() == [7, 3, 999] and torch.equal(chosen.x[1], split.select(n=4).x[3])
    assert split.select(n=50).checksum == first.checksum != chosen.checksum


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 1001}, "n must be between 1 and 1000"),
    ({"n": 0}, "n must be between 1 and 1000"),
    ({"indices": [5, 1000]}, r"indices \[1000\] are outside"),
    ({"n": 5, "indices": [1]}, "not both"),
])
def test_bad_slices(kwargs, message):
    with pytest.raises(RobenchError, match=message):
        load_dataset("mnist-5k", "test").select(**kwargs)


def test_unknown_dataset_and_split():
    with pytest.raises(RobenchError, match="Did you mean 'mnist'"):
        load_dataset("mnsit")
    with pytest.raises(RobenchError, match="split must be one of train, test"):
        load_dataset("mnist-5k", "val")


def test_offline_error_names_the_missing_files_and_the_setting(tmp_path, monkeypatch):
    monkeypatch.setitem(data.MIRRORS, "mnist", ["http://127.0.0.1:9/"])  # nothing listens: fails at once
    with pytest.raises(RobenchError) as info:
        load_dataset("mnist", "test", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "t10k-images-idx3-ubyte.gz" in message
    assert "--data-root" in message and "ROBENCH_DATA" in message and "download failed" in message


def _mirror(tmp_path: Path, source: Path) -> str:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in IDX_FILES["mnist"]:
        shutil.copy(source / "mnist" / name, mirror / name)
    return mirror.as_uri() + "/"


def test_download_from_a_mirror_checks_md5(data_root, tmp_path, monkeypatch):
    monkeypatch.setitem(data.MIRRORS, "mnist", ["http://127.0.0.1:9/", _mirror(tmp_path, Path(data_root))])
    root = tmp_path / "root"
    split = load_dataset("mnist", "test", root=root)
    assert len(split) == 10000 and split.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(IDX_FILES["mnist"])


def test_download_refuses_a_file_with_the_wrong_md5(data_root, tmp_path, monkeypatch):
    uri = _mirror(tmp_path, Path(data_root))
    bad = tmp_path / "mirror" / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(bad.read_bytes())
    content[100] ^= 0xFF
    bad.write_bytes(bytes(content))
    monkeypatch.setitem(data.MIRRORS, "mnist", [uri])
    with pytest.raises(RobenchError, match="md5"):
        load_dataset("mnist", "test", root=tmp_path / "root")
    assert not (tmp_path / "root" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def test_torchvision_layout_and_corrupt_files(data_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES["mnist"]:
        (raw / name).symlink_to(Path(data_root) / "mnist" / name)
    assert len(load_dataset("mnist", "test", root=tmp_path, download=False)) == 10000
    data._CACHE.clear()
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    with pytest.raises(RobenchError, match="is corrupt: md5"):
        load_dataset("mnist", "test", root=tmp_path, download=False)


def test_fashion_mnist_and_cifar10_subsets(data_root):
    fashion = load_dataset("fashion-mnist", "test", data_root, download=False)
    assert len(fashion) == 10000 and fashion.labels[:3].tolist() == [9, 2, 1]
    cifar = load_dataset("cifar10", "test", data_root, download=False)
    assert cifar.images.shape == (1000, 3, 32, 32) and cifar.labels[:4].tolist() == [3, 8, 8, 0]
    with pytest.raises(RobenchError, match="n must be between 1 and 1000"):
        cifar.select(n=5000)


def test_cifar_batches_are_read_without_unpickling_objects(tmp_path):
    import pickle

    from robench.data import _ArrayUnpickler

    ok = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]})
    assert _ArrayUnpickler(__import__("io").BytesIO(ok)).load()["labels"] == [1, 2]
    evil = pickle.dumps(print)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _ArrayUnpickler(__import__("io").BytesIO(evil)).load()


def _toy_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Colour squares: class c is an 8x8 image whose channel c is bright; uint8 (n, 3, 8, 8), labels (n,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 60, (n, 3, 8, 8))
    images[np.arange(n), labels] += 150
    return images.astype(np.uint8), labels.astype(np.int64)


def _load_toy(dataset, split, root, download):
    path = dataset.locate(root, download)["toy-dots.npz"]
    with np.load(path) as arrays:
        return data.DataSplit(dataset.info, split, torch.from_numpy(arrays[f"{split}_x"]),
                              torch.from_numpy(arrays[f"{split}_y"]))


@pytest.fixture
def toy_dataset(tmp_path, monkeypatch):
    """A dataset registered from this module: its information, one file on a (file://) mirror with its
    md5, and its loader."""
    from robench.files import file_digest
    from robench.registry import DATASETS

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (train_x, train_y), (test_x, test_y) = _toy_arrays(600, 0), _toy_arrays(100, 1)
    np.savez(mirror / "toy-dots.npz", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
    info = data.DatasetInfo("toy-dots", 3, 8, 3, (0.3, 0.3, 0.3), (0.3, 0.3, 0.3))
    toy = data.Dataset(info, resources=[data.Resource("toy-dots.npz", file_digest(mirror / "toy-dots.npz"))],
                       mirrors=[mirror.as_uri() + "/"], loader=_load_toy, description="coloured squares (test)")
    DATASETS.names()  # built-ins first
    monkeypatch.setitem(DATASETS._entries, "toy-dots", toy)
    return toy


def test_a_registered_dataset_works_like_a_built_in(toy_dataset, tmp_path, monkeypatch, capsys):
    import robench
    from robench import zoo
    from robench.cli import main
    from robench.registry import MODELS
    from robench.training import Recipe

    root = tmp_path / "root"
    split = load_dataset("toy-dots", "train", root=root)  # downloaded from the mirror, md5 checked
    assert (root / "toy-dots" / "toy-dots.npz").is_file() and split.images.shape == (600, 3, 8, 8)
    assert data.dataset_info("toy-dots").channels == 3
    assert main(["list", "datasets", "toy-*"]) == 0 and "coloured squares" in capsys.readouterr().out
    # a zoo model built (3 x 8 x 8 inputs, 3 classes, the dataset's mean/std) and trained on it
    entry = zoo.ModelEntry("toy-dots-mlp", "toy-dots", "mlp", Recipe(epochs=3), "MLP on the toy dataset")
    MODELS.names()
    monkeypatch.setitem(MODELS._entries, entry.name, entry)
    model = entry.build()
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 3)
    records = robench.evaluate("toy-dots-mlp", ["clean", "fgsm:eps=0.02"], dataset="toy-dots", n=100,
                               data_root=str(root), store=tmp_path / "s.sqlite")
    assert [r.dataset for r in records] == ["toy-dots", "toy-dots"] and records[0].n == 100
    assert records[0].metrics["clean_accuracy"]["value"] > 0.9
    with pytest.raises(RobenchError, match="split must be one of train, test"):
        load_dataset("toy-dots", "val", root=root)


def test_a_dataset_entry_must_be_a_dataset(monkeypatch):
    from robench.registry import DATASETS

    DATASETS.names()
    monkeypatch.setitem(DATASETS._entries, "old-style", lambda split, root, download: None)
    with pytest.raises(RobenchError, match="not a robench.data.Dataset"):
        load_dataset("old-style")
