"""A model's name in Records, tables and progress bars: the zoo entry or ``package.module:callable`` it was
loaded from (robench.zoo names what it loads), else its class name. The name is kept beside the module,
not on it, so it never enters the model's identity (robench.identity)."""
from __future__ import annotations

import weakref
from typing import Any

_NAMES: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def name_model(model: Any, name: str) -> Any:
    """Remember `name` as the name of `model` (an nn.Module) for as long as it lives; returns `model`."""
    _NAMES[model] = name
    return model


def model_name(model: Any) -> str:
    """The name `name_model` gave `model`, else its class name."""
    return _NAMES.get(model) or type(model).__name__
