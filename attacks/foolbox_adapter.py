"""Any foolbox 3 attack as a robench attack, registered as ``foolbox:<ClassName>``
(e.g. ``foolbox:LinfDeepFoolAttack:eps=0.1,steps=50``); its parameters are the foolbox class's."""
from __future__ import annotations

import inspect
import math

import foolbox
import torch

from robench.attacks.base import Attack
from robench.registry import ATTACKS


class FoolboxAttack(Attack):
    """Runs a foolbox attack on a PyTorchModel with bounds (0, 1) and returns its clipped adversarials
    (at most eps away in the attack's own norm). foolbox draws from torch's global generator: that is
    seeded from the given generator inside a forked RNG state, so runs are reproducible."""

    foolbox_class: type

    def __init__(self, **kwargs):
        self.attack = self.foolbox_class(**kwargs)

    def run(self, model, x, y, eps, generator):
        fmodel = foolbox.PyTorchModel(model, bounds=(0, 1), device=x.device)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed)
            _, clipped, _ = self.attack(fmodel, x, y, epsilons=eps)
        return clipped.detach().clamp(0, 1)


def _norm_of(cls: type) -> str | None:
    try:
        p = cls.distance.p if hasattr(cls, "distance") and not isinstance(cls.distance, property) else None
        if p is None:
            p = cls().distance.p
    except Exception:
        return None
    return {math.inf: "linf", 2: "l2", 1: "l1", 0: "l0"}.get(p)


def _adapter(cls: type) -> type[FoolboxAttack] | None:
    norm = _norm_of(cls)
    if norm is None:
        return None

    def __init__(self, **kwargs):
        FoolboxAttack.__init__(self, **kwargs)

    __init__.__wrapped__ = cls.__init__  # its signature and annotations declare the threat's parameters
    return type(f"Foolbox{cls.__name__}", (FoolboxAttack,),
                {"foolbox_class": cls, "norm": norm, "__init__": __init__, "__doc__": f"foolbox's {cls.__name__}."})


for _name, _cls in sorted(vars(foolbox.attacks).items()):
    if (inspect.isclass(_cls) and issubclass(_cls, foolbox.attacks.base.Attack) and not inspect.isabstract(_cls)
            and _name[0].isupper()):
        _adapted = _adapter(_cls)
        if _adapted is not None:
            ATTACKS.register(f"foolbox:{_name}", _adapted)
