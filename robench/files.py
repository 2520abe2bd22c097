"""Files written atomically, checksums, downloads checked against them, and the cache root."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence


def cache_root() -> Path:
    """Where robench caches what it makes or fetches: ``$ROBENCH_CACHE`` (default ``~/.cache/robench``),
    holding data/ (datasets), zoo/ and weights/ (model weights) and results.sqlite (the results store)."""
    return Path(os.environ.get("ROBENCH_CACHE", "~/.cache/robench")).expanduser()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file next to `path` to write to; when the block succeeds it replaces `path` in one
    step (readable like any new file), and when it fails it is removed and `path` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(urls: Sequence[str], target: Path, digest: str, algorithm: str = "md5") -> None:
    """Fetch the first of `urls` that answers into `target`, atomically, and only if its checksum is
    `digest`; raises OSError naming every failure otherwise."""
    errors = []
    for url in urls:
        try:
            with atomic_path(target) as tmp:
                with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
                    shutil.copyfileobj(response, out)
                got = file_digest(tmp, algorithm)
                if got != digest:
                    raise OSError(f"{algorithm} {got} != expected {digest}")
            return
        except OSError as exc:
            errors.append(f"{url}: {exc}")
    raise OSError("; ".join(errors))
