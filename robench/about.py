"""What `robench info` shows: robench's version and commit, the versions it runs with, and the locations
it reads and writes (cache, data, zoo weights, results store) after `$ROBENCH_CACHE`, `$ROBENCH_DATA`,
`--data-root` and `--store`, each with the setting it comes from."""
from __future__ import annotations

import functools
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import NamedTuple


class Fact(NamedTuple):
    """One line of `robench info`: what, its value, and where it comes from (or a remark)."""

    what: str
    value: str
    source: str = ""


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _source(setting: str | None, variable: str, default: str) -> str:
    if setting:
        return setting
    return f"${variable}" if os.environ.get(variable) else default


@functools.lru_cache(maxsize=1)
def cpu() -> str:
    """This machine's CPU as Linux names it, with its vendor ("AMD EPYC (AuthenticAMD)"), else the
    platform's processor string. Weights trained here depend on it (MKL picks kernels by vendor), so
    training and evaluation record it."""
    import platform

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return f"{fields.get('model name', platform.machine())} ({fields.get('vendor_id', 'unknown vendor')})"


def about(data_root: str | None = None, store: str | None = None) -> list[Fact]:
    """robench's version and commit, Python and the versions of torch, torchvision and foolbox, whether
    CUDA is available, and the cache, data, zoo and store locations in use (the given `data_root` and
    `store` taking precedence, as `--data-root` and `--store` do)."""
    import torch

    from robench.data import data_root as resolve_data_root
    from robench.files import cache_root
    from robench.store import default_store_path
    from robench.version import __version__, git_commit

    commit = git_commit()
    cache = cache_root()
    zoo = cache / "zoo"
    cached = len(list(zoo.glob("*.safetensors"))) if zoo.is_dir() else 0
    store_path = Path(store).expanduser() if store else default_store_path()
    if store_path.is_file():
        state = f"{store_path.stat().st_size / 1e6:.1f} MB"
    else:
        state = "not created yet"
    cuda = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA device: runs on cpu"
    return [
        Fact("robench", __version__ + (f" (git commit {commit})" if commit else ""), str(Path(__file__).parent)),
        Fact("python", sys.version.split()[0], sys.executable),
        Fact("torch", torch.__version__, cuda),
        Fact("cpu", cpu(), f"{torch.backends.cpu.get_cpu_capability()} kernels"),
        Fact("torchvision", _version("torchvision")),
        Fact("foolbox", _version("foolbox")),
        Fact("cache", str(cache), _source(None, "ROBENCH_CACHE", "default (set ROBENCH_CACHE to move it)")),
        Fact("data", str(resolve_data_root(data_root)),
             _source(data_root and "--data-root", "ROBENCH_DATA", "default: the cache's data/ (set ROBENCH_DATA)")),
        Fact("zoo weights", str(zoo), f"{cached} cached (robench zoo list)"),
        Fact("results store", str(store_path), f"{'--store' if store else 'default'}; {state}"),
    ]
