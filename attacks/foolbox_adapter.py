"""Any foolbox 3 attack as a robench attack, registered as ``foolbox:<ClassName>``
(e.g. ``foolbox:LinfDeepFoolAttack:eps=0.1,steps=50``); its parameters are the foolbox class's.

Registration is lazy: foolbox is imported, and its attacks registered, the first time a ``foolbox:*``
name is looked up or the attacks are listed. A foolbox attack without a fixed norm (one that needs a
``distance=`` argument, or has no distance at all) cannot be given an eps budget and is left out; the
reason is kept in `SKIPPED`. Any other failure while adapting a class is an error, not a silent skip.
"""
from __future__ import annotations

import inspect
import math

import torch

from robench.attacks.base import Attack
from robench.registry import ATTACKS

#: foolbox attacks left out, by class name, with the reason (filled when the attacks are registered)
SKIPPED: dict[str, str] = {}


class FoolboxAttack(Attack):
    """Runs a foolbox attack on a PyTorchModel with bounds (0, 1) and returns its clipped adversarials
    (at most eps away in the attack's own norm). foolbox draws from torch's global generator: that is
    seeded from the given generator inside a forked RNG state, so runs are reproducible."""

    foolbox_class: type

    def __init__(self, **kwargs):
        self.attack = self.foolbox_class(**kwargs)

    def run(self, model, x, y, eps, generator):
        import foolbox

        fmodel = foolbox.PyTorchModel(model, bounds=(0, 1), device=x.device)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed)
            _, clipped, _ = self.attack(fmodel, x, y, epsilons=eps)
        return clipped.detach().clamp(0, 1)


NORMS = {math.inf: "linf", 2: "l2", 1: "l1", 0: "l0"}


def _norm_of(cls: type) -> str | None:
    """The norm of foolbox attack `cls` ("linf", "l2", "l1", "l0"), or None (with the reason in SKIPPED)
    where it has no fixed one: foolbox raises ValueError("unknown distance ...") for attacks whose
    distance is an __init__ argument, and AttributeError for those without a distance."""
    try:
        distance = inspect.getattr_static(cls, "distance", None)
        if isinstance(distance, property):  # set in __init__: the default instance tells
            p = cls().distance.p
        else:
            p = cls.distance.p
    except ValueError as exc:
        if "unknown distance" not in str(exc):
            raise
        SKIPPED[cls.__name__] = "its norm is a distance= argument, not fixed"
        return None
    except AttributeError as exc:
        SKIPPED[cls.__name__] = f"it has no distance ({exc})"
        return None
    if p not in NORMS:
        SKIPPED[cls.__name__] = f"its norm p={p} is not one of linf, l2, l1, l0"
        return None
    return NORMS[p]


def _adapter(cls: type) -> type[FoolboxAttack] | None:
    norm = _norm_of(cls)
    if norm is None:
        return None

    def __init__(self, **kwargs):
        FoolboxAttack.__init__(self, **kwargs)

    __init__.__wrapped__ = cls.__init__  # its signature and annotations declare the threat's parameters
    return type(f"Foolbox{cls.__name__}", (FoolboxAttack,),
                {"foolbox_class": cls, "norm": norm, "__init__": __init__, "__doc__": f"foolbox's {cls.__name__}."})


def register_all() -> None:
    """Register every concrete foolbox attack with a fixed norm as ``foolbox:<ClassName>``."""
    import foolbox

    for name, cls in sorted(vars(foolbox.attacks).items()):
        if (inspect.isclass(cls) and issubclass(cls, foolbox.attacks.base.Attack) and not inspect.isabstract(cls)
                and name[0].isupper()):
            adapted = _adapter(cls)
            if adapted is not None:
                ATTACKS.register(f"foolbox:{name}", adapted)


ATTACKS.lazy("foolbox:*", register_all)
