"""Corruptions; importing this package registers the built-ins."""
from robench.corruptions import base  # noqa: F401  (registers)
