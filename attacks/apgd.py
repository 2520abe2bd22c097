"""Auto-PGD (Croce & Hein, ICML 2020), Linf and L2, with the cross-entropy, DLR and targeted DLR losses.

Written from the paper and robench's REFERENCE.md section 7 (no code of the reference implementation):
- step size eta starts at 2 * eps, per example; the iterate moves with momentum 0.75
  (x <- P(x + 0.75 (z - x) + 0.25 (x - x_prev)), z = P(x + eta * step(grad))), the first step without;
- at the checkpoints (`checkpoints`: for 100 iterations at 22, 41, 57, 70, 80, 87, 93, 99) eta is halved
  and the example restarts from its best point (highest loss) when (1) its loss increased in at most 75%
  of the steps of the window just ended, or (2) eta was not halved at the previous checkpoint and the
  best loss has not improved since;
- `eot` > 1 averages the gradient (and the loss) over that many forward passes, for randomized models;
- every quantity is per example, so each example runs exactly as it would alone: an example leaves the
  batch as soon as it is misclassified (its attack is over: success only needs one point), and examples
  misclassified on clean input are not attacked at all. The result is the misclassified iterate where
  one was found, else the point of highest loss.

APGD-T (`apgd-t-*`) runs the targeted DLR loss against the classes with the 2nd, 3rd, ... largest clean
logit in turn (9 by default, at most classes - 1), each on the examples no earlier target broke.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from robench.attacks.base import Attack
from robench.attacks.pgd import PGD, _laid_out, channels_last
from robench.errors import RobenchError
from robench.inference import PRECISIONS, check_precision
from robench.registry import ATTACKS

#: momentum of the update, and the fraction of increasing steps below which eta is halved (condition 1)
MOMENTUM, RHO = 0.75, 0.75


def checkpoints(steps: int) -> list[int]:
    """Iteration counts after which APGD checks whether to halve its step size, for `steps` iterations:
    the first window is ceil(0.22 * steps) long and each next one ceil(0.03 * steps) shorter, but never
    shorter than ceil(0.06 * steps); for 100 steps: 22, 41, 57, 70, 80, 87, 93, 99."""
    window, shrink, shortest = math.ceil(0.22 * steps), math.ceil(0.03 * steps), math.ceil(0.06 * steps)
    points, at = [], 0
    while at + window <= steps:
        at += window
        points.append(at)
        window = max(window - shrink, shortest)
    return points


#: examples per forward/backward pass on CPU, where larger batches were measured slower per example (one
#: thread, channels_last, CPU time per example: small CNN forward 0.13 ms at 128, 0.25 ms at 512;
#: gradient 0.41 vs 0.67 ms), their activations no longer fitting in cache
CPU_CHUNK = 128


def chunks(n: int, device: torch.device) -> list[slice]:
    """The pieces of a batch of `n` examples that go through the model in one pass each: CPU_CHUNK at a
    time on CPU, all at once elsewhere (an example's result does not depend on the others in its pass)."""
    size = CPU_CHUNK if device.type == "cpu" else max(n, 1)
    return [slice(i, i + size) for i in range(0, n, size)]


def in_layout(attack: Attack, model: nn.Module, x: torch.Tensor,
              body: Callable[[torch.Tensor, torch.memory_format], torch.Tensor]) -> torch.Tensor:
    """``body(x, fmt)`` run in the layout `attack.memory_format` picks, as PGD does ("auto": channels_last
    on CPU for conv nets that accept it), with the model laid out alike; the result in the layout of `x`."""
    fmt = torch.channels_last if PGD._use_channels_last(attack, model, x) else torch.contiguous_format
    with channels_last(model) if fmt == torch.channels_last else nullcontext():
        adv = body(_laid_out(x, fmt), fmt)
    return torch.empty_like(x).copy_(adv)


def autocast(precision: str, device: torch.device):
    """The autocast context of `precision` ("fp32": none) on `device`."""
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{i != y} z_i per example (N,) for logits (N, K): negative where the model is wrong."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return z_y - other


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The difference-of-logits-ratio loss per example (N,) for logits (N, K >= 3):
    -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), with z_pi the logits sorted descending.
    Invariant to shifting and rescaling the logits; larger is closer to (or further past) the boundary."""
    top = logits.topk(3, dim=1).values
    return -margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The targeted DLR loss per example (N,) for logits (N, K >= 4) and target classes (N,):
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)."""
    top = logits.topk(4, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)


def _per_example(v: torch.Tensor) -> torch.Tensor:
    """A per-example vector (N,) shaped to broadcast against images (N, C, H, W)."""
    return v.view(-1, 1, 1, 1)


def _l2(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1)


class APGD(Attack):
    """APGD (untargeted) with loss `loss` ("ce": cross-entropy, "dlr": difference of logits ratio, needs
    >= 3 classes), `steps` iterations (100, as in the paper), `restarts` runs from random starts (an
    example counts as broken if any run breaks it; later runs attack only the examples still standing)
    and `eot` forward/backward passes averaged per iteration (for randomized models). `precision` "bf16" or
    "fp16" runs the passes under autocast (faster where half-precision units are; different arithmetic,
    so only on request); an example leaves only at a point that fools the model in fp32 too. The
    attribute `memory_format` picks the layout as in PGD (not a threat parameter: it does not change
    results beyond float rounding)."""

    memory_format: str = "auto"

    def __init__(self, *, loss: Literal["ce", "dlr"] = "ce", steps: int = 100, restarts: int = 1, eot: int = 1,
                 precision: str = "fp32"):
        for name, value in (("steps", steps), ("restarts", restarts), ("eot", eot)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RobenchError(f"{name} must be an integer >= 1; got {value!r}.")
        if loss not in ("ce", "dlr"):
            raise RobenchError(f"loss must be ce (cross-entropy) or dlr (difference of logits ratio); got {loss!r}.")
        self.loss, self.steps, self.restarts, self.eot = loss, steps, restarts, eot
        self.precision = check_precision(precision)

    @property
    def forward_passes(self) -> float:
        """Forward passes per example at most (a gradient step counts as three), for shard sizing."""
        return 3.0 * (self.steps + 1) * self.eot * self.restarts * getattr(self, "targets", 1)

    # -- the norm-specific parts ---------------------------------------------------------------------
    def start(self, x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        """A random starting point in the eps ball around `x`, in [0, 1]."""
        raise NotImplementedError

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """The unit step along the gradient (Linf: its sign; L2: grad / ||grad||)."""
        raise NotImplementedError

    def project(self, v: torch.Tensor, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                eps: float) -> torch.Tensor:
        """`v` projected on the eps ball around `x`, then on [0, 1]; `lo`, `hi` are max(x - eps, 0) and
        min(x + eps, 1)."""
        raise NotImplementedError

    # -- losses ----------------------------------------------------------------------------------------
    def _check_classes(self, classes: int) -> None:
        if self.loss == "dlr" and classes < 3:
            raise RobenchError(f"the DLR loss needs a model with at least 3 classes; this one has {classes}. "
                               "Use loss=ce.")

    def objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """The loss APGD maximises, per example (N,)."""
        if self.loss == "ce":
            return F.cross_entropy(logits, y, reduction="none")
        return dlr_loss(logits, y)

    def _loss_grad(self, model: nn.Module, v: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        """Loss (N,), its gradient at `v` and the logits, each averaged over `eot` passes (in `chunks`)."""
        pieces = chunks(len(v), v.device)
        if len(pieces) == 1:
            return self._loss_grad_piece(model, v, y, target)
        loss, grad, logits = None, torch.empty_like(v), None
        for piece in pieces:
            part_loss, grad[piece], part_logits = self._loss_grad_piece(
                model, v[piece], y[piece], None if target is None else target[piece])
            if loss is None:
                loss = part_loss.new_empty(len(v))
                logits = part_logits.new_empty(len(v), part_logits.shape[1])
            loss[piece], logits[piece] = part_loss, part_logits
        return loss, grad, logits

    def _loss_grad_piece(self, model, v, y, target):
        v = v.detach().requires_grad_(True)
        loss_sum = grad_sum = logits_sum = None
        for _ in range(self.eot):
            with autocast(self.precision, v.device):
                logits = model(v)
            loss = self.objective(logits.float(), y, target)
            grad, = torch.autograd.grad(loss.sum(), v)
            loss, logits = loss.detach(), logits.detach().float()
            if loss_sum is None:
                loss_sum, grad_sum, logits_sum = loss, grad, logits
            else:
                loss_sum, grad_sum, logits_sum = loss_sum + loss, grad_sum + grad, logits_sum + logits
        if self.eot == 1:
            return loss_sum, grad_sum, logits_sum
        return loss_sum / self.eot, grad_sum / self.eot, logits_sum / self.eot

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self, model, x, y, eps, generator):
        if eps == 0 or not len(x):
            return x.clone()
        return in_layout(self, model, x, lambda xl, fmt: self._attack(model, xl, y, eps, generator, fmt))

    def _runs(self, logits: torch.Tensor) -> list[torch.Tensor | None]:
        """The target of each run (None: untargeted), from the clean logits (N, K)."""
        return [None]

    def _attack(self, model, x, y, eps, generator, fmt):
        with torch.no_grad():
            logits = model(x).float()
        self._check_classes(logits.shape[1])
        out = x.clone(memory_format=fmt)
        standing = logits.argmax(1) == y  # misclassified clean examples are broken already
        for target in self._runs(logits):
            for _ in range(self.restarts):
                if not standing.any():
                    return out
                idx = standing.nonzero().squeeze(1)
                adv, fooled = self._single(model, _laid_out(x[idx], fmt), y[idx],
                                           None if target is None else target[idx], eps, generator, fmt)
                out[idx] = adv
                standing[idx[fooled]] = False
        return out

    def _single(self, model, x, y, target, eps, generator, fmt):
        """One run of APGD from a random start on examples (n, ...), all correctly classified: the
        adversarial inputs and which of them fooled the model during the run."""
        n = len(x)
        out = x.clone(memory_format=fmt)
        fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        lo = _laid_out((x - eps).clamp_(min=0), fmt)
        hi = _laid_out((x + eps).clamp_(max=1), fmt)
        points = set(checkpoints(self.steps))
        reduced = PRECISIONS[self.precision] is not None

        # the working set: positions `where` in the run's batch; every state tensor is indexed like it
        where = torch.arange(n, device=x.device)
        xa, ya, ta = x, y, target
        cur = _laid_out(self.start(x, eps, generator), fmt)
        loss, grad, logits = self._loss_grad(model, cur, ya, ta)
        prev = cur
        best_x, best_loss, best_grad = cur.clone(), loss.clone(), grad.clone()
        eta = torch.full((n,), 2 * eps, dtype=x.dtype, device=x.device)
        increases = torch.zeros(n, dtype=torch.int64, device=x.device)
        best_at_check = best_loss.clone()
        halved_at_check = torch.zeros(n, dtype=torch.bool, device=x.device)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        last_point = 0

        def leave(new):  # record the examples misclassified at `cur` (in fp32 too)
            nonlocal done
            if reduced and new.any():
                with torch.no_grad():
                    new[new.clone()] = model(cur[new]).argmax(1) != ya[new]
            if new.any():
                out[where[new]] = cur[new]
                fooled[where[new]] = True
                done = done | new

        leave(logits.argmax(1) != ya)
        for i in range(self.steps):
            if bool(done.all()):
                break
            if done.any() and int(done.sum()) * 8 >= len(done):  # re-batch the examples still standing
                keep = ~done
                where, xa, ya = where[keep], _laid_out(xa[keep], fmt), ya[keep]
                ta = None if ta is None else ta[keep]
                lo, hi = _laid_out(lo[keep], fmt), _laid_out(hi[keep], fmt)
                cur, prev, grad = _laid_out(cur[keep], fmt), _laid_out(prev[keep], fmt), _laid_out(grad[keep], fmt)
                best_x, best_grad = _laid_out(best_x[keep], fmt), _laid_out(best_grad[keep], fmt)
                loss, best_loss, eta, increases = loss[keep], best_loss[keep], eta[keep], increases[keep]
                best_at_check, halved_at_check = best_at_check[keep], halved_at_check[keep]
                done = done[keep]
            with torch.no_grad():
                z = self.project(cur + _per_example(eta) * self.direction(grad), xa, lo, hi, eps)
                if i == 0:
                    new = z
                else:
                    new = self.project(cur + MOMENTUM * (z - cur) + (1 - MOMENTUM) * (cur - prev), xa, lo, hi, eps)
                prev, cur = cur, _laid_out(new, fmt)
            new_loss, grad, logits = self._loss_grad(model, cur, ya, ta)
            with torch.no_grad():
                increases += new_loss > loss
                loss = new_loss
                better = loss > best_loss
                best_x[better], best_grad[better] = cur[better], grad[better]
                best_loss = torch.where(better, loss, best_loss)
                leave((logits.argmax(1) != ya) & ~done)
                if i + 1 in points:
                    window = i + 1 - last_point
                    halve = (increases <= RHO * window) | (~halved_at_check & (best_loss <= best_at_check))
                    eta = torch.where(halve, eta / 2, eta)
                    cur[halve], grad[halve], loss[halve] = best_x[halve], best_grad[halve], best_loss[halve]
                    halved_at_check, best_at_check = halve, best_loss.clone()
                    increases.zero_()
                    last_point = i + 1
        rest = ~done
        out[where[rest]] = best_x[rest]
        return out, fooled


class LinfAPGDMixin:
    norm = "linf"

    def start(self, x, eps, generator):
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
        return (x + eps * u).clamp_(0, 1).clamp_(x - eps, x + eps)

    def direction(self, grad):
        return grad.sign()

    def project(self, v, x, lo, hi, eps):
        return torch.max(torch.min(v, hi), lo)


class L2APGDMixin:
    norm = "l2"

    def start(self, x, eps, generator):
        g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + eps * g / _per_example(_l2(g).clamp_min(1e-12))).clamp_(0, 1)

    def direction(self, grad):
        return grad / _per_example(_l2(grad).clamp_min(1e-12))

    def project(self, v, x, lo, hi, eps):
        delta = v - x
        scale = (eps / _l2(delta).clamp_min(1e-12)).clamp(max=1.0)
        return (x + delta * _per_example(scale)).clamp_(0, 1)


@ATTACKS.register("apgd-linf")
class LinfAPGD(LinfAPGDMixin, APGD):
    """APGD in Linf (sign steps, box projection); `loss` ce (APGD-CE) or dlr (APGD-DLR)."""


@ATTACKS.register("apgd-l2")
class L2APGD(L2APGDMixin, APGD):
    """APGD in L2 (steps along grad / ||grad||, projection by rescaling); `loss` ce or dlr."""


class APGDT(APGD):
    """APGD-T: APGD on the targeted DLR loss against the classes with the 2nd to (`targets` + 1)-th
    largest clean logit in turn (9 targets by default, fewer when the model has fewer classes), `steps`
    iterations and `restarts` runs per target; success is any misclassification. Needs >= 4 classes."""

    def __init__(self, *, targets: int = 9, steps: int = 100, restarts: int = 1, eot: int = 1,
                 precision: str = "fp32"):
        if not isinstance(targets, int) or isinstance(targets, bool) or targets < 1:
            raise RobenchError(f"targets must be an integer >= 1; got {targets!r}.")
        super().__init__(loss="dlr", steps=steps, restarts=restarts, eot=eot, precision=precision)
        self.targets = targets

    def _check_classes(self, classes: int) -> None:
        if classes < 4:
            raise RobenchError(f"the targeted DLR loss of APGD-T needs a model with at least 4 classes; this one "
                               f"has {classes}. Use apgd-{self.norm} with loss=ce instead.")

    def objective(self, logits, y, target):
        return targeted_dlr_loss(logits, y, target)

    def _runs(self, logits):
        order = logits.argsort(dim=1, descending=True)
        return [order[:, k] for k in range(1, min(self.targets, logits.shape[1] - 1) + 1)]


@ATTACKS.register("apgd-t-linf")
class LinfAPGDT(LinfAPGDMixin, APGDT):
    """APGD-T in Linf."""


@ATTACKS.register("apgd-t-l2")
class L2APGDT(L2APGDMixin, APGDT):
    """APGD-T in L2."""


__all__ = ["APGD", "APGDT", "LinfAPGD", "L2APGD", "LinfAPGDT", "L2APGDT", "checkpoints", "dlr_loss",
           "targeted_dlr_loss", "margin", "in_layout", "autocast", "chunks"]
