"""robench's version, in a module of its own so that any module can read it without importing the package."""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The git commit (40 hex digits) of the checkout robench runs from, or None when it is not run from
    a checkout (an installed wheel) or git cannot tell."""
    try:
        root = Path(__file__).resolve().parent.parent
        if (root / "setup.cfg").is_file():
            return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                  text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return None
