"""The one exception type for bad input: the CLI prints its message on one line and exits with 2."""
from __future__ import annotations

import difflib
from typing import Iterable


class RobenchError(ValueError):
    """Bad input from the user: the message says what was wrong and how to fix it."""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> RobenchError:
    """An error for an unknown `name` of `kind` that lists the valid choices and suggests the closest."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return RobenchError(f"unknown {kind} {name!r}.{hint} Valid choices: {', '.join(choices) or '(none)'}.")
