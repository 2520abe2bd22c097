"""Projected gradient descent (Madry et al. 2018) in Linf and L2, with restarts, and FGSM.

Speed (see perf/pgd.py for the measurements against foolbox, torchattacks and a bare loop):
- the iterate is kept as the adversarial input itself (not as a perturbation), is the only tensor that
  requires a gradient, and is updated in place; the box [max(x - eps, 0), min(x + eps, 1)] of the Linf
  projection is computed once per attack, so a Linf step is one fused add and one clamp;
- convolutional models run in channels_last memory format on CPU by default (`memory_format`), the same
  arithmetic laid out so that convolutions and pooling run faster; the model's own tensors are put back
  afterwards, and the adversarial inputs come back in the layout the inputs came in;
- `early_stop` drops examples from the batch as soon as they are misclassified (valid for accuracy);
- `precision` "bf16"/"fp16" runs forward and backward under autocast: different arithmetic, only on request.
"""
from __future__ import annotations

from contextlib import contextmanager
from itertools import chain
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from robench.attacks.base import Attack
from robench.attacks.norms import l2_per_example
from robench.errors import RobenchError
from robench.inference import PRECISIONS, check_precision
from robench.registry import ATTACKS
from robench.seeding import derived

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


@contextmanager
def channels_last(model: nn.Module) -> Iterator[None]:
    """Lay the model's 4-d parameters and buffers out as channels_last for the duration of the block,
    then put the very same tensors back (nothing is copied back, values are untouched)."""
    saved = []
    try:
        for t in chain(model.parameters(), model.buffers()):
            laid = _laid_out(t.data, torch.channels_last) if t.dim() == 4 else t.data
            if laid is not t.data:
                saved.append((t, t.data))
                t.data = laid
        yield
    finally:
        for t, data in reversed(saved):
            t.data = data


def _laid_out(t: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """`t` with the strides of `fmt`: unlike ``contiguous(memory_format=...)``, this also restrides
    tensors with a single channel (N, 1, H, W), whose layout is otherwise ambiguous and which kernels
    would then run in the other format. Returns `t` itself when nothing changes."""
    return t.to(memory_format=fmt)


class PGD(Attack):
    """PGD with `steps` steps of size `step` (absolute), `rel_step` * eps, or by default 2.5 * eps / steps
    (the rule of Madry et al., so that any number of steps can cross the ball), an optional uniform random
    start, and `restarts` runs: an example counts as broken if any restart breaks it, and later restarts
    attack only the examples still standing. `early_stop` stops iterating an example once it is
    misclassified (valid for accuracy, faster; off by default, as in the original). `precision` "bf16"
    or "fp16" runs the forward and backward passes under autocast (faster on hardware with fast
    half-precision units, different arithmetic).

    The attribute `memory_format` ("auto", "channels_last" or "contiguous"; not a threat parameter, as
    it does not change results beyond float rounding) picks the layout the attack runs in; "auto" uses
    channels_last on CPU for models with 2-d convolutions that accept it, where it was measured faster."""

    role = "iterative"
    strength_parameters = ("steps", "restarts")

    memory_format: str = "auto"

    #: the default total travel of the steps, in units of eps (Madry et al.: 2.5 * eps / steps per step)
    TRAVEL = 2.5

    def __init__(self, *, steps: int, rel_step: float | None = None, step: float | None = None, restarts: int = 1,
                 random_start: bool = True, early_stop: bool = False, precision: str = "fp32"):
        if not isinstance(steps, int) or steps < 1:
            raise RobenchError(f"steps must be an integer >= 1; got {steps!r}.")
        if not isinstance(restarts, int) or restarts < 1:
            raise RobenchError(f"restarts must be an integer >= 1; got {restarts!r}.")
        if step is not None and step <= 0 or rel_step is not None and rel_step <= 0:
            raise RobenchError("step and rel_step must be > 0 (step, when given, overrides rel_step * eps).")
        if step is None and rel_step is not None and steps * rel_step < 1:
            raise RobenchError(f"{steps} steps of rel_step {rel_step:g} * eps travel {steps * rel_step:.3g} * eps and "
                               "cannot reach the boundary of the eps ball, so the attack is weaker than FGSM; leave "
                               f"rel_step out (default {self.TRAVEL:g} / steps) or give steps * rel_step >= 1.")
        check_precision(precision)
        self.steps, self.step, self.rel_step, self.restarts = steps, step, rel_step, restarts
        self.random_start, self.early_stop, self.precision = random_start, early_stop, precision

    def step_size(self, eps: float) -> float:
        """The absolute step at budget `eps`."""
        if self.step is not None:
            return self.step
        return (self.rel_step if self.rel_step is not None else self.TRAVEL / self.steps) * eps

    # -- the norm-specific parts -------------------------------------------------------------------
    def start(self, x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def ascend(self, delta: torch.Tensor, grad: torch.Tensor, size: float, eps: float) -> torch.Tensor:
        """One step along the gradient, projected back into the eps ball."""
        raise NotImplementedError

    def advance_(self, adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, lo: torch.Tensor,
                 hi: torch.Tensor, size: float, eps: float) -> None:
        """One step from the adversarial inputs `adv`, in place: ascend, then clip to [0, 1]. `lo`, `hi`
        are max(x - eps, 0) and min(x + eps, 1). Norms can override this with a fused version."""
        delta = self.ascend(adv - x, grad, size, eps)
        torch.add(x, delta, out=adv).clamp_(0, 1)

    # -- the layout ----------------------------------------------------------------------------------
    def _use_channels_last(self, model: nn.Module, x: torch.Tensor) -> bool:
        if self.memory_format not in MEMORY_FORMATS:
            raise RobenchError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}; "
                               f"got {self.memory_format!r}.")
        if self.memory_format != "auto":
            return self.memory_format == "channels_last"
        if x.device.type != "cpu" or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
            return False
        # a model may reshape with .view() or otherwise depend on strides: probe it on one example
        probe = x[:1]
        with torch.no_grad():
            try:
                reference = model(probe)
                with channels_last(model):
                    laid = model(_laid_out(probe, torch.channels_last))
            except RuntimeError:
                return False
        return (torch.is_tensor(laid) and laid.shape == reference.shape
                and torch.allclose(laid.float(), reference.float(), rtol=1e-4, atol=1e-5))

    # -- the shared loop -----------------------------------------------------------------------------
    def run(self, model, x, y, eps, generator):
        if eps == 0 or not len(x):
            return x.clone()
        size = self.step_size(eps)
        if self._use_channels_last(model, x):
            with channels_last(model):
                adv = self._restarts(model, _laid_out(x, torch.channels_last), y, eps, size, generator,
                                     torch.channels_last)
        else:
            adv = self._restarts(model, _laid_out(x, torch.contiguous_format), y, eps, size, generator,
                                 torch.contiguous_format)
        out = torch.empty_like(x)  # the layout the inputs came in
        return out.copy_(adv)

    def _restarts(self, model, x, y, eps, size, generator, fmt):
        adv, fooled = self._attack(model, x, y, eps, size, generator, fmt, self.restarts > 1)
        if self.restarts == 1:
            return adv
        standing = ~fooled
        for r in range(1, self.restarts):
            if not standing.any():
                break
            idx = standing.nonzero().squeeze(1)
            # a restart's start is drawn for the whole batch from its own stream, so an example starts
            # from the same point whatever else is in its batch and whichever others are still standing
            start = self.start(x, eps, derived(generator, "restart", r))[idx] if self.random_start else None
            again, fooled = self._attack(model, _laid_out(x[idx], fmt), y[idx], eps, size, generator, fmt,
                                         r < self.restarts - 1, start)
            adv[idx] = again
            if fooled is not None:
                standing[idx] = ~fooled
        return adv

    def _loss_grad(self, model: nn.Module, adv: torch.Tensor, y: torch.Tensor):
        """Logits at `adv` (a leaf that requires grad) and the gradient of the summed cross-entropy."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            logits = model(adv)
            loss = F.cross_entropy(logits, y, reduction="sum")
        else:
            with torch.autocast(adv.device.type, dtype=dtype):
                logits = model(adv)
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
        grad, = torch.autograd.grad(loss, adv)
        return logits.detach(), grad

    def _attack(self, model, x, y, eps, size, generator, fmt, need_fooled, start=None):
        """One run of PGD from `start` (an offset from `x`; drawn from `generator` if None and the start is
        random): adversarial inputs, and, if `need_fooled`, which of them the model misclassifies."""
        lo = _laid_out((x - eps).clamp_(min=0), fmt)
        hi = _laid_out((x + eps).clamp_(max=1), fmt)
        if start is None and self.random_start:
            start = self.start(x, eps, generator)
        adv = x.clone(memory_format=fmt) if start is None else _laid_out((x + start).clamp_(0, 1), fmt)
        if not self.early_stop:
            adv.requires_grad_(True)
            for _ in range(self.steps):
                _, grad = self._loss_grad(model, adv, y)
                with torch.no_grad():
                    self.advance_(adv, grad, x, lo, hi, size, eps)
            adv = adv.detach()
            if not need_fooled:
                return adv, None
            with torch.no_grad():
                return adv, model(adv).argmax(1) != y

        # early stop: an example leaves the working set `a` at the first point that fools the model and
        # `out` keeps it there. Until enough have left to be worth re-batching (a new batch shape costs
        # kernel set-up), those that left stay in `a` with a zero step, i.e. frozen.
        out, fooled = adv, torch.zeros(len(x), dtype=torch.bool, device=x.device)
        where = torch.arange(len(x), device=x.device)  # positions of the working set in the batch
        a = adv.clone(memory_format=fmt).requires_grad_(True)
        xa, ya, loa, hia = x, y, lo, hi
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.steps):
            logits, grad = self._loss_grad(model, a, ya)
            with torch.no_grad():
                new = (logits.argmax(1) != ya) & ~done
                if PRECISIONS[self.precision] is not None and new.any():
                    # reduced precision: only leave at a point that fools the model in fp32 too
                    new[new.clone()] = model(a[new]).argmax(1) != ya[new]
                done |= new
                if done.any():
                    if int(done.sum()) * 8 >= len(done) or bool(done.all()):
                        out[where[done]] = a[done]
                        fooled[where[done]] = True
                        keep = ~done
                        where = where[keep]
                        if not len(where):
                            return out, fooled
                        a = _laid_out(a.detach()[keep], fmt).requires_grad_(True)
                        grad, xa, ya = _laid_out(grad[keep], fmt), _laid_out(xa[keep], fmt), ya[keep]
                        loa, hia = _laid_out(loa[keep], fmt), _laid_out(hia[keep], fmt)
                        done = done[keep]
                    else:
                        grad[done] = 0
                self.advance_(a, grad, xa, loa, hia, size, eps)
        with torch.no_grad():
            out[where] = a.detach()
            fooled[where[done]] = True
            if need_fooled:
                rest = where[~done]
                fooled[rest] = model(a[~done]).argmax(1) != ya[~done]
        return out, fooled


@ATTACKS.register("pgd-linf")
class LinfPGD(PGD):
    """PGD in Linf: sign-of-gradient steps, random start uniform in the eps cube; 40 steps of
    2.5 * eps / steps by default (foolbox's LinfPGD takes rel_step 0.01/0.3, Madry's 0.01 at eps 0.3)."""

    norm = "linf"
    label = "PGD Linf"

    def __init__(self, *, steps: int = 40, rel_step: float | None = None, step: float | None = None,
                 restarts: int = 1, random_start: bool = True, early_stop: bool = False, precision: str = "fp32"):
        super().__init__(steps=steps, rel_step=rel_step, step=step, restarts=restarts, random_start=random_start,
                         early_stop=early_stop, precision=precision)

    def start(self, x, eps, generator):
        return (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps

    def ascend(self, delta, grad, size, eps):
        return (delta + size * grad.sign()).clamp_(-eps, eps)

    def advance_(self, adv, grad, x, lo, hi, size, eps):
        # clip to the eps cube, then to [0, 1] == one clamp to their intersection [lo, hi]
        adv.add_(grad.sign_(), alpha=size).clamp_(lo, hi)


@ATTACKS.register("pgd-l2")
class L2PGD(PGD):
    """PGD in L2: steps along grad / ||grad||, random start uniform in the eps ball, projection by
    rescaling; 50 steps of 2.5 * eps / steps by default (foolbox's L2PGD takes rel_step 0.025)."""

    norm = "l2"
    label = "PGD L2"

    def __init__(self, *, steps: int = 50, rel_step: float | None = None, step: float | None = None,
                 restarts: int = 1, random_start: bool = True, early_stop: bool = False, precision: str = "fp32"):
        super().__init__(steps=steps, rel_step=rel_step, step=step, restarts=restarts, random_start=random_start,
                         early_stop=early_stop, precision=precision)

    def start(self, x, eps, generator):
        n, d = len(x), x[0].numel()
        g = torch.randn(n, d + 2, generator=generator, device=x.device, dtype=x.dtype)
        direction = g / g.norm(dim=1, keepdim=True)
        return (direction[:, :d] * eps).view_as(x)

    def ascend(self, delta, grad, size, eps):
        delta = delta + size * grad / l2_per_example(grad)
        return delta * (eps / l2_per_example(delta)).clamp(max=1.0)


@ATTACKS.register("fgsm")
class FGSM(LinfPGD):
    """Fast gradient sign method: one step of size eps from the clean input (Goodfellow et al. 2015)."""

    label = "FGSM"
    role = None
    strength_parameters = ()

    def __init__(self, *, precision: str = "fp32"):
        PGD.__init__(self, steps=1, rel_step=1.0, random_start=False, precision=precision)
