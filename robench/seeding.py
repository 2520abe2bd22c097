"""Random streams derived from a seed and a label, so that each piece of work (an eps, a restart, an
attack batch) draws the same numbers whatever else runs beside it."""
from __future__ import annotations

import hashlib

import torch


def derived(generator: torch.Generator, *labels: object) -> torch.Generator:
    """A fresh generator on `generator`'s device, seeded from `generator`'s initial seed and `labels`."""
    text = "/".join(map(str, (generator.initial_seed(), *labels)))
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1
    return torch.Generator(device=generator.device).manual_seed(seed)
