"""FAB-T, the targeted fast adaptive boundary attack (Croce & Hein, ICML 2020), and FAB, its untargeted
form, in Linf and L2: minimum-norm attacks, used at a budget (an example is broken when FAB finds an
adversarial point within eps).

Written from the paper and robench's REFERENCE.md section 7 (no code of the reference implementation).
At each step the decision boundary between the true class y and the target t is linearised at the
iterate x_i: the hyperplane <w, v - x_i> + g = 0 with g = z_t - z_y and w its gradient. The iterate
and the original point x are both projected on that hyperplane intersected with the box [0, 1]^d
(`project_hyperplane_box`: the smallest Lp move, exact, by sorting), and the next iterate is
``clip((1 - a) (x_i + eta d_i) + a (x + eta d_x), 0, 1)`` with a = min(|d_i| / (|d_i| + |d_x|), alpha_max),
a step biased towards the original point (eta 1.05 extrapolates a little past the hyperplane). After a
success the iterate steps back towards the original point, x + beta (x_i - x), and FAB continues from
there for a smaller adversarial point. Restarts after the first start from random points near x.

The targets are the classes with the 2nd to (`targets` + 1)-th largest clean logit, in turn, each on the
examples no earlier target broke within eps. An example leaves the batch as soon as its smallest
adversarial point is within eps (`early_stop`, the default: it does not change which examples are
robust); with early_stop=false it keeps shrinking the perturbation for all its iterations. The gradients
run in the layout `memory_format` picks (channels_last on CPU conv nets, as PGD) and, on request, in bf16
or fp16 (`precision`): an iterate counts as adversarial only if it fools the model in fp32 too.
"""
from __future__ import annotations

import torch
from torch import nn

from robench.attacks.apgd import autocast, chunks, in_layout
from robench.attacks.base import Attack, perturbation_norm
from robench.attacks.pgd import _laid_out
from robench.errors import RobenchError
from robench.inference import PRECISIONS, check_precision
from robench.registry import ATTACKS

#: the share of fooling iterates above which a step checks them with a forward pass before linearising
#: (a forward pass costs about a third of a gradient; each fooling iterate needs a second gradient otherwise)
CHECK_FIRST = 1 / 3


def project_hyperplane_box(z: torch.Tensor, w: torch.Tensor, r: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest perturbation d (n, d) in `norm` ("linf" or "l2") with <w, d> = r and z + d in
    [0, 1]^d, for points `z` (n, d) in [0, 1], normals `w` (n, d) and offsets `r` (n,). Where no point of
    the box reaches the hyperplane, the box's corner furthest along it (the closest one can get).

    Each coordinate moves in the direction that helps (the sign of r * w_j), at most to the box's face,
    u_j; the move is min(lam * k_j, u_j) with k_j = 1 (Linf) or |w_j| (L2) for the lam that solves the
    piecewise-linear equation sum_j |w_j| min(lam k_j, u_j) = |r|, found from the sorted breakpoints."""
    direction = torch.sign(w) * torch.sign(r)[:, None]
    a = w.abs()
    room = torch.where(direction > 0, 1 - z, z).clamp(min=0)  # how far each coordinate can move
    k = torch.ones_like(a) if norm == "linf" else a
    slope = a * k  # d/dlam of |w_j| min(lam k_j, u_j) before the breakpoint
    cap = a * room
    moving = slope > 0
    breakpoint = torch.where(moving, room / torch.where(moving, k, torch.ones_like(k)),
                             torch.full_like(room, float("inf")))
    order = breakpoint.argsort(dim=1)
    b_sorted = breakpoint.gather(1, order)
    cap_sorted, slope_sorted = cap.gather(1, order), slope.gather(1, order)
    saturated = cap_sorted.cumsum(1)  # sum of the caps of the first k+1 breakpoints
    total = slope_sorted.sum(1, keepdim=True)
    remaining = (total - slope_sorted.cumsum(1)).clamp(min=0)  # slope of the breakpoints after the k-th
    level = torch.where(torch.isinf(b_sorted), saturated, saturated + b_sorted.nan_to_num(posinf=0) * remaining)
    need = r.abs()[:, None]
    m = (level < need).sum(1, keepdim=True)  # breakpoints passed before |r| is reached
    saturated_before = torch.cat([torch.zeros_like(need), saturated], 1).gather(1, m)
    slope_after = torch.cat([total, remaining], 1).gather(1, m)
    lam = ((need - saturated_before) / slope_after.clamp(min=1e-30))
    lam = torch.where(m >= z.shape[1], torch.full_like(lam, float("inf")), lam)
    move = torch.where(k > 0, torch.minimum(lam * k, room), torch.zeros_like(room))
    return torch.where(r[:, None] == 0, torch.zeros_like(z), direction * move)


class FABT(Attack):
    """FAB-T with `targets` target classes (9 by default, at most classes - 1), `steps` iterations (100)
    and `restarts` runs per target, step bias `alpha_max` (0.1), extrapolation `eta` (1.05) and step
    back `beta` (0.9) after a success, and `precision` of the passes ("fp32"; "bf16" or "fp16" under
    autocast, with an fp32 re-check of every adversarial iterate). Needs >= 2 classes. The attribute
    `memory_format` picks the layout as in PGD."""

    memory_format: str = "auto"
    minimum_norm = True

    def __init__(self, *, targets: int = 9, steps: int = 100, restarts: int = 1, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, early_stop: bool = True, precision: str = "fp32"):
        for name, value in (("targets", targets), ("steps", steps), ("restarts", restarts)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RobenchError(f"{name} must be an integer >= 1; got {value!r}.")
        if not 0 <= alpha_max <= 1 or eta < 1 or not 0 < beta < 1:
            raise RobenchError(f"FAB needs 0 <= alpha_max <= 1, eta >= 1 and 0 < beta < 1; got alpha_max={alpha_max}, "
                               f"eta={eta}, beta={beta}.")
        self.targets, self.steps, self.restarts = targets, steps, restarts
        self.alpha_max, self.eta, self.beta, self.early_stop = float(alpha_max), float(eta), float(beta), early_stop
        self.precision = check_precision(precision)

    @property
    def forward_passes(self) -> float:
        """Forward passes per example, about (a gradient step counts as three), for shard sizing."""
        return 3.0 * self.steps * self.targets * self.restarts

    def random_start(self, x: torch.Tensor, radius: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def run(self, model: nn.Module, x, y, eps, generator):
        if eps == 0 or not len(x):
            return x.clone()
        return in_layout(self, model, x, lambda xl, fmt: self._attack(model, xl, y, eps, generator, fmt))

    def _attack(self, model, x, y, eps, generator, fmt):
        with torch.no_grad():
            logits = model(x).float()
        if logits.shape[1] < 2:
            raise RobenchError("FAB-T needs a model with at least 2 classes.")
        order = logits.argsort(dim=1, descending=True)
        out = x.clone()
        best = torch.full((len(x),), float("inf"), device=x.device)
        best[logits.argmax(1) != y] = 0.0  # misclassified already: the clean input is adversarial
        for k in range(1, min(self.targets, logits.shape[1] - 1) + 1):
            for restart in range(self.restarts):
                todo = (best > eps if self.early_stop else best > 0) & (best > 0)
                if not todo.any():
                    return out
                idx = todo.nonzero().squeeze(1)
                adv, norms = self._single(model, x[idx], y[idx], order[idx, k], eps, best[idx], restart, generator, fmt)
                better = norms < best[idx]
                out[idx[better]], best[idx[better]] = adv[better], norms[better]
        return out

    def _gradient(self, model, v, y, target, fmt):
        """g = z_t - z_y (n,), its gradient at `v` (n, ...), and the predictions (n,), in `chunks`."""
        pieces = chunks(len(v), v.device)
        if len(pieces) == 1:
            return self._gradient_piece(model, v, y, target, fmt)
        g, grad, pred = v.new_empty(len(v)), torch.empty_like(_laid_out(v, fmt)), y.new_empty(len(v))
        for piece in pieces:
            g[piece], grad[piece], pred[piece] = self._gradient_piece(model, v[piece], y[piece], target[piece], fmt)
        return g, grad, pred

    def _logits(self, model, v, fmt):
        """`v` as a leaf that requires grad, in the layout `fmt`, and the model's fp32 logits at it."""
        v = _laid_out(v.detach(), fmt).requires_grad_(True)
        with autocast(self.precision, v.device):
            logits = model(v)
        return v, logits.float()

    def _gradient_piece(self, model, v, y, target, fmt):
        with torch.enable_grad():
            v, logits = self._logits(model, v, fmt)
            g = logits.gather(1, target[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)
            grad, = torch.autograd.grad(g.sum(), v)
        return g.detach(), grad, logits.detach().argmax(1)

    def _fooled(self, model, v, y, pred, fmt):
        """Where the predictions `pred` (n,) at `v` (n, ...) are wrong, confirmed in fp32 when the passes run
        in reduced precision."""
        wrong = pred != y
        if PRECISIONS[self.precision] is not None and wrong.any():
            wrong[wrong.clone()] = model(_laid_out(v[wrong], fmt)).argmax(1) != y[wrong]
        return wrong

    def _single(self, model, x, y, target, eps, best, restart, generator, fmt):
        """One run against `target` (n,): the smallest adversarial points found within eps and their
        norms (inf where none)."""
        n, shape = len(x), x.shape[1:]
        out, norms = x.clone(), torch.full((n,), float("inf"), device=x.device)
        if restart == 0:
            cur = x.clone()
        else:
            radius = torch.where(torch.isfinite(best), best.clamp(max=eps), torch.full_like(best, eps)) / 2
            cur = self.random_start(x, radius, generator)
        # the working set: positions `where` in the run's batch, flat images
        where, ya, ta, xa, c = torch.arange(n, device=x.device), y, target, x.flatten(1), cur.flatten(1)

        def record(wrong):  # keep the adversarial iterates that are smaller than the best so far
            size = perturbation_norm(c[wrong] - xa[wrong], self.norm)
            pos = where[wrong]
            smaller = size < norms[pos]
            out[pos[smaller]] = c[wrong][smaller].view(-1, *shape).to(x.dtype)
            norms[pos[smaller]] = size[smaller]

        share = 0.0  # the share of the iterates that fooled the model at the last step
        for _ in range(self.steps):
            # the iterate's prediction comes with its gradient; but a fooling iterate is linearised after
            # stepping back instead, so where many fool the model, one forward pass checks them first
            check_first = share > CHECK_FIRST
            if check_first:
                with torch.no_grad(), autocast(self.precision, x.device):
                    v = _laid_out(c.view(-1, *shape), fmt)
                    pred = torch.cat([model(v[piece]).argmax(1) for piece in chunks(len(v), v.device)])
            else:
                g, grad, pred = self._gradient(model, c.view(-1, *shape), ya, ta, fmt)
            with torch.no_grad():
                wrong = self._fooled(model, c.view(-1, *shape), ya, pred, fmt)
                share = float(wrong.float().mean())
                if wrong.any():
                    record(wrong)
                    if self.early_stop:
                        keep = norms[where] > eps
                        if not keep.any():
                            return self._within(x, out, norms, eps)
                        if not keep.all():
                            where, ya, ta, xa, c = where[keep], ya[keep], ta[keep], xa[keep], c[keep]
                            wrong = wrong[keep]
                            if not check_first:
                                g, grad = g[keep], grad[keep]
                if wrong.any():  # step back towards the original point, and linearise there
                    c = c.clone()
                    c[wrong] = xa[wrong] + self.beta * (c[wrong] - xa[wrong])
                if check_first:
                    g, grad, _ = self._gradient(model, c.view(-1, *shape), ya, ta, fmt)
                elif wrong.any():
                    g2, grad2, _ = self._gradient(model, c[wrong].view(-1, *shape), ya[wrong], ta[wrong], fmt)
                    g, grad = g.clone(), grad.clone()
                    g[wrong], grad[wrong] = g2, grad2
                w = grad.flatten(1).float()
                # both projections in one batch: the iterate's, and the original point's
                d_both = project_hyperplane_box(torch.cat([c, xa]), torch.cat([w, w]),
                                                torch.cat([-g, -g - (w * (xa - c)).sum(1)]), self.norm)
                d_cur, d_orig = d_both[:len(c)], d_both[len(c):]
                n_cur, n_orig = perturbation_norm(d_cur, self.norm), perturbation_norm(d_orig, self.norm)
                alpha = (n_cur / (n_cur + n_orig).clamp(min=1e-12)).clamp(max=self.alpha_max)[:, None]
                c = ((1 - alpha) * (c + self.eta * d_cur) + alpha * (xa + self.eta * d_orig)).clamp(0, 1).to(x.dtype)
        with torch.no_grad():  # the last iterate
            wrong = model(_laid_out(c.view(-1, *shape), fmt)).argmax(1) != ya
            if wrong.any():
                record(wrong)
        return self._within(x, out, norms, eps)

    @staticmethod
    def _within(x, out, norms, eps):
        """The adversarial points within eps (the original input elsewhere) and their norms (inf elsewhere)."""
        within = norms <= eps
        out[~within] = x[~within]
        return out, torch.where(within, norms, torch.full_like(norms, float("inf")))


class FAB(FABT):
    """FAB, untargeted (AutoAttack's "plus" version): at each step the boundary linearised is that of the
    class k != y closest in the linear approximation, the smallest |z_k - z_y| / ||grad(z_k - z_y)||_q
    (q the dual norm: L1 for Linf, L2 for L2), which needs the gradient of every logit difference (one
    backward pass per class). `restarts` runs (the first from x, later ones from random points near
    it); the other parameters as FAB-T's."""

    def __init__(self, *, steps: int = 100, restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05,
                 beta: float = 0.9, early_stop: bool = True, precision: str = "fp32"):
        super().__init__(targets=1, steps=steps, restarts=restarts, alpha_max=alpha_max, eta=eta, beta=beta,
                         early_stop=early_stop, precision=precision)

    @property
    def forward_passes(self) -> float:
        """A step costs a forward and one backward pass per class (counted as 10 classes, twice a forward each)."""
        return 21.0 * self.steps * self.restarts

    def _gradient_piece(self, model, v, y, target, fmt):
        with torch.enable_grad():
            v, logits = self._logits(model, v, fmt)
            classes = logits.shape[1]
            diff = logits - logits.gather(1, y[:, None])  # (n, K): z_k - z_y, 0 at the true class
            grads = torch.stack([torch.autograd.grad(diff[:, k].sum(), v, retain_graph=k < classes - 1)[0]
                                 for k in range(classes)], 1)  # (n, K, ...)
        dual = 1 if self.norm == "linf" else 2
        distance = diff.detach().abs() / grads.flatten(2).float().norm(p=dual, dim=2).clamp(min=1e-12)
        distance.scatter_(1, y[:, None], float("inf"))
        k = distance.argmin(1)
        rows = torch.arange(len(v), device=v.device)
        return diff.detach()[rows, k], grads[rows, k], logits.detach().argmax(1)


@ATTACKS.register("fab-t-linf")
class LinfFABT(FABT):
    """FAB-T in Linf."""

    norm = "linf"

    def random_start(self, x, radius, generator):
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
        u = u / u.flatten(1).abs().amax(1).clamp(min=1e-12).view(-1, 1, 1, 1)
        return (x + radius.view(-1, 1, 1, 1) * u).clamp(0, 1)


@ATTACKS.register("fab-t-l2")
class L2FABT(FABT):
    """FAB-T in L2."""

    norm = "l2"

    def random_start(self, x, radius, generator):
        u = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        u = u / u.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
        return (x + radius.view(-1, 1, 1, 1) * u).clamp(0, 1)


@ATTACKS.register("fab-linf")
class LinfFAB(FAB):
    """FAB (untargeted) in Linf."""

    norm = "linf"
    random_start = LinfFABT.random_start


@ATTACKS.register("fab-l2")
class L2FAB(FAB):
    """FAB (untargeted) in L2."""

    norm = "l2"
    random_start = L2FABT.random_start
