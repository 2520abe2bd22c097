"""A model's identity: what determines its outputs, as two digests.

- `weights_digest` (the "model_sha256" of Records and leaderboard entries): sha256 over the names, shapes,
  dtypes and bytes of the state dict (parameters and persistent buffers, on any device and in any dtype).
- `code_digest` ("model_code"): sha256 over the module tree: for every submodule (shared ones at each
  place they are used) its path, its class, the source of the Python file that defines each class of its
  MRO (so helper functions in that file count too; torch's own classes count by name and torch version),
  its non-tensor configuration (every attribute that is not a parameter, buffer or child, e.g. a
  quantisation depth, a temperature, a stored function with its code and closure), its forward and
  backward hooks, its non-persistent buffers, and torch's global module hooks.

The results store keys a result by both, so two models with the same weights but another `forward`
(an input transform around a network, a wrapper returning probabilities) never share a cached result.

What the identity cannot see: code outside the defining files that a forward calls (a function imported
from another module, a library's internals beyond its version), global state read during the forward
(flags, environment variables, module-level variables of other files), monkey-patching after the
digest is taken, and the random stream of a randomized forward. A change it cannot see serves the old
result; any change it does see (including a comment in a model's source file) recomputes.
"""
from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import re
import sys
import types
from typing import Any

import numpy as np
import torch
from torch import nn

#: torch's own bookkeeping in a module's __dict__; hooks are described separately, the rest never
#: changes what the module computes
_INTERNAL = {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "training",
             "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
             "_load_state_dict_post_hooks", "_is_full_backward_hook", "_compiled_call_impl"}
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DEPTH = 6


def weights_digest(model: nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of `model`'s state dict."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(_tensor_bytes(tensor))
    return h.hexdigest()


def code_digest(model: nn.Module) -> str:
    """sha256 over `model`'s module tree, classes, configuration and hooks (see the module docstring)."""
    h = hashlib.sha256()
    for path, module in model.named_modules(remove_duplicate=False):
        h.update(f"[{path}]{_class_digest(type(module))}".encode())
        if isinstance(module, torch.fx.GraphModule):
            h.update(module.code.encode())
        config = {k: v for k, v in vars(module).items() if k not in _INTERNAL}
        h.update(_describe(config).encode())
        for name in sorted(module._non_persistent_buffers_set):
            buffer = module._buffers.get(name)
            if buffer is not None:
                h.update(f"buffer {name}".encode() + _tensor_bytes(buffer))
    from torch.nn.modules import module as torch_module

    for name in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks"):
        hooks = getattr(torch_module, name, None)
        if hooks:
            h.update(f"{name}{_describe(list(hooks.values()))}".encode())
    return h.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    t = tensor.detach().to("cpu").contiguous().reshape(-1)  # 0-d tensors become 1-d; any dtype, any device
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


@functools.lru_cache(maxsize=None)
def _class_digest(cls: type) -> str:
    parts = []
    for klass in cls.__mro__:
        if klass in (nn.Module, object):
            break
        parts.append(f"{klass.__module__}.{klass.__qualname__}={_source_digest(klass)}")
    return ";".join(parts)


def _source_digest(klass: type) -> str:
    """The digest of the file defining `klass` (torch's classes: torch's version), else of its methods' code."""
    if klass.__module__.split(".")[0] == "torch":
        return f"torch-{torch.__version__}"
    module = sys.modules.get(klass.__module__)
    try:
        source = inspect.getsource(module) if module is not None else inspect.getsource(klass)
    except (OSError, TypeError):  # defined in a notebook, an exec'd string or a C extension
        source = _describe({k: v for k, v in vars(klass).items() if callable(v)})
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _code(code: types.CodeType, depth: int) -> str:
    consts = [_code(c, depth + 1) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return f"code({code.co_name},{code.co_code.hex()},{consts},{code.co_names})"


def _describe(value: Any, depth: int = 0) -> str:
    """A deterministic text for a configuration value (no memory addresses, no object ids)."""
    if depth > _MAX_DEPTH:
        return type(value).__qualname__
    nested = functools.partial(_describe, depth=depth + 1)
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if isinstance(value, (enum.Enum, torch.dtype, torch.device, torch.memory_format, torch.layout)):
        return repr(value)
    if isinstance(value, torch.Tensor):
        return f"tensor({tuple(value.shape)},{value.dtype},{hashlib.sha256(_tensor_bytes(value)).hexdigest()})"
    if isinstance(value, np.ndarray):
        return f"array({value.shape},{value.dtype},{hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()})"
    if isinstance(value, dict):
        items = sorted((nested(k), nested(v)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[" + ",".join(map(nested, value)) + "]"
    if isinstance(value, (set, frozenset)):
        return "set[" + ",".join(sorted(map(nested, value))) + "]"
    if isinstance(value, nn.Module):
        return f"module({_class_digest(type(value))})"
    if isinstance(value, functools.partial):
        return f"partial({nested(value.func)},{nested(value.args)},{nested(value.keywords)})"
    if isinstance(value, types.MethodType):
        return f"method({nested(value.__func__)})"
    if isinstance(value, types.FunctionType):
        closure = [c.cell_contents for c in value.__closure__ or () if _filled(c)]
        return (f"function({value.__module__}.{value.__qualname__},{_code(value.__code__, depth)},"
                f"{nested(value.__defaults__)},{nested(closure)})")
    if isinstance(value, (types.BuiltinFunctionType, type)):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    if hasattr(value, "__dict__"):
        return f"{type(value).__module__}.{type(value).__qualname__}({nested(vars(value))})"
    return _ADDRESS.sub("", repr(value))


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True
