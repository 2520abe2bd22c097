"""The Square attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020): a score-based black-box
attack in Linf and L2 that uses only the model's outputs, never its gradients.

Written from the paper and robench's REFERENCE.md section 7 (no code of the reference implementation).
Random search on the margin loss m = z_y - max_{i != y} z_i of the logits: each query proposes a change
of the perturbation in a random square window and keeps it if m decreases; an example stops (and
leaves the batch) as soon as it is misclassified. The window's side follows the fraction `p` of the
image's pixels, p_init halved at the paper's fixed fractions of the query budget (`p_at`).
- Linf: the start is vertical stripes of +-eps (one random sign per column and channel); a proposal
  sets the window to +-eps with one random sign per channel.
- L2: the start is a grid of pseudo-Gaussian bumps (`bump`, random signs) rescaled to norm eps; a
  proposal takes two windows, moves the perturbation's mass of both into the first, adds a new bump
  there with random signs per channel, and empties the second, so that the norm stays eps (clipping
  to [0, 1] can only shorten it).
All randomness comes from the attack's generator; one query is one forward pass of each example still
standing (the start is the first). The Linf proposal touches only the window's pixels; the forward passes
run in the layout `memory_format` picks (channels_last on CPU conv nets, as PGD) and, on request, in bf16
or fp16 (`precision`): an example then stops only at a point that fools the model in fp32 too.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from robench.attacks.apgd import autocast, chunks, in_layout, margin
from robench.attacks.base import Attack
from robench.attacks.pgd import _laid_out
from robench.errors import RobenchError
from robench.inference import PRECISIONS, check_precision
from robench.registry import ATTACKS

#: query counts (for a budget of 10,000; scaled to the actual budget) after which p is halved
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_at(query: int, queries: int, p_init: float) -> float:
    """The fraction of pixels a window covers at `query` of `queries`: p_init, halved after each of
    the fractions 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10,000 queries."""
    scaled = int(query / queries * 10000)
    return p_init / 2 ** sum(scaled > t for t in P_HALVINGS)


def bump(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The pseudo-Gaussian bump (h, w) of the L2 attack: with n = h // 2, a pixel at Linf distance d
    from the centre (h // 2, w // 2) holds sum_{k=0}^{n-d} 1 / (n + 1 - k)^2 (0 beyond distance n),
    so its mass rises towards the middle."""
    n = h // 2
    rows = (torch.arange(h, device=device) - h // 2).abs()[:, None]
    cols = (torch.arange(w, device=device) - w // 2).abs()[None, :]
    depth = n - torch.maximum(rows, cols)
    k = torch.arange(n + 1, device=device, dtype=dtype)
    cum = torch.cumsum(1 / (n + 1 - k) ** 2, 0)
    return torch.where(depth >= 0, cum[depth.clamp(min=0)], torch.zeros((), device=device, dtype=dtype))


def meta_bump(s: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Two bumps of opposite sign side by side in an s x s square (the L2 attack's proposal shape)."""
    half = s // 2
    left = bump(s, half, device, dtype) if half else torch.zeros(s, 0, device=device, dtype=dtype)
    right = bump(s, s - half, device, dtype)
    return torch.cat([left, -right], 1)


def _corners(n: int, h: int, w: int, s: int, generator: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random top-left corners (n,), (n,) of s x s windows in h x w images."""
    top = torch.randint(0, h - s + 1, (n,), generator=generator, device=device)
    left = torch.randint(0, w - s + 1, (n,), generator=generator, device=device)
    return top, left


def _window_index(top: torch.Tensor, left: torch.Tensor, c: int, s: int) -> tuple[torch.Tensor, ...]:
    """The index of the s x s windows at `top`, `left` in every channel: images (n, c, h, w) indexed with it
    give the windows (n, c, s, s)."""
    n, device = len(top), top.device
    span = torch.arange(s, device=device)
    return (torch.arange(n, device=device).view(-1, 1, 1, 1), torch.arange(c, device=device).view(1, -1, 1, 1),
            (top[:, None] + span).view(n, 1, s, 1), (left[:, None] + span).view(n, 1, 1, s))


def _windows(n: int, h: int, w: int, s: int, generator: torch.Generator, device) -> tuple[torch.Tensor, ...]:
    """Random top-left corners (n,) and the masks (n, 1, h, w) of s x s windows."""
    top, left = _corners(n, h, w, s, generator, device)
    rows = torch.arange(h, device=device)[None, :]
    cols = torch.arange(w, device=device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + s)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + s)
    return top, left, (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _signs(shape, generator, device, dtype) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1


class Square(Attack):
    """The Square attack with `queries` forward passes per example (5,000, as in AutoAttack), initial
    window fraction `p_init` (0.8), `restarts` runs (later runs attack only the examples still
    standing) and `precision` of the forward passes ("fp32"; "bf16" or "fp16" under autocast, with an
    fp32 re-check before an example stops). The attribute `memory_format` picks the layout as in PGD."""

    memory_format: str = "auto"

    def __init__(self, *, queries: int = 5000, p_init: float = 0.8, restarts: int = 1, precision: str = "fp32"):
        if not isinstance(queries, int) or isinstance(queries, bool) or queries < 1:
            raise RobenchError(f"queries must be an integer >= 1; got {queries!r}.")
        if not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 1:
            raise RobenchError(f"restarts must be an integer >= 1; got {restarts!r}.")
        if not 0 < p_init <= 1:
            raise RobenchError(f"p_init is the fraction of pixels of the first windows, in (0, 1]; got {p_init!r}.")
        self.queries, self.p_init, self.restarts = queries, float(p_init), restarts
        self.precision = check_precision(precision)

    @property
    def forward_passes(self) -> float:
        """Forward passes per example at most (one per query), for shard sizing."""
        return float(self.queries * self.restarts)

    # the norm-specific parts
    def init(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, eps: float,
             generator: torch.Generator) -> torch.Tensor:
        """The starting adversarial inputs, within eps and in [0, 1]; `lo`, `hi` are max(x - eps, 0) and
        min(x + eps, 1)."""
        raise NotImplementedError

    def propose(self, x: torch.Tensor, adv: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, eps: float,
                s: int, generator: torch.Generator) -> torch.Tensor:
        """New candidate inputs from the current ones `adv`, changed in random s x s windows."""
        raise NotImplementedError

    def side(self, p: float, h: int, w: int) -> int:
        return max(min(round(math.sqrt(p * h * w)), min(h, w) - 1), 1)

    def run(self, model: nn.Module, x, y, eps, generator):
        if eps == 0 or not len(x):
            return x.clone()
        return in_layout(self, model, x, lambda xl, fmt: self._attack(model, xl, y, eps, generator, fmt))

    def _attack(self, model, x, y, eps, generator, fmt):
        out = x.clone()
        with torch.no_grad():
            standing = model(x).argmax(1) == y
            for _ in range(self.restarts):
                if not standing.any():
                    break
                idx = standing.nonzero().squeeze(1)
                adv, fooled = self._single(model, _laid_out(x[idx], fmt), y[idx], eps, generator, fmt)
                out[idx] = adv
                standing[idx[fooled]] = False
        return out

    def _single(self, model, x, y, eps, generator, fmt):
        n, _, h, w = x.shape
        out, fooled = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
        where = torch.arange(n, device=x.device)
        xa, ya = x, y
        lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
        reduced = PRECISIONS[self.precision] is not None

        def forward(v):
            v = _laid_out(v, fmt)
            with autocast(self.precision, v.device):
                return torch.cat([model(v[piece]).float() for piece in chunks(len(v), v.device)])

        adv = self.init(x, lo, hi, eps, generator)
        logits = forward(adv)
        best = margin(logits, ya)
        for query in range(self.queries):
            broken = logits.argmax(1) != ya
            if reduced and broken.any():  # judge in fp32 where reduced precision says broken
                exact = model(_laid_out(adv[broken], fmt)).float()
                logits[broken], best[broken] = exact, margin(exact, ya[broken])
                broken[broken.clone()] = exact.argmax(1) != ya[broken]
            if broken.any():
                out[where[broken]], fooled[where[broken]] = adv[broken], True
                keep = ~broken
                where, xa, ya, adv, best = where[keep], xa[keep], ya[keep], adv[keep], best[keep]
                lo, hi = lo[keep], hi[keep]
                logits = logits[keep]
                if not len(where):
                    break
            if query == self.queries - 1:
                break
            s = self.side(p_at(query + 1, self.queries, self.p_init), h, w)
            candidate = self.propose(xa, adv, lo, hi, eps, s, generator)
            new_logits = forward(candidate)
            loss = margin(new_logits, ya)
            better = loss < best
            adv = torch.where(better[:, None, None, None], candidate, adv)
            best = torch.where(better, loss, best)
            # only accepted candidates can break an example; the others keep their (correct) logits
            logits = torch.where(better[:, None], new_logits, logits)
        out[where] = adv
        return out, fooled


@ATTACKS.register("square-linf")
class LinfSquare(Square):
    """The Square attack in Linf."""

    norm = "linf"

    def init(self, x, lo, hi, eps, generator):
        n, c, _, w = x.shape
        return torch.where(_signs((n, c, 1, w), generator, x.device, torch.int8) > 0, hi, lo)

    def propose(self, x, adv, lo, hi, eps, s, generator):
        n, c, h, w = x.shape
        index = _window_index(*_corners(n, h, w, s, generator, x.device), c, s)
        win_hi, win_lo, win = hi[index], lo[index], adv[index]  # (n, c, s, s)
        # a window whose channels all sit at the face a new sign would pick would not change: redraw those
        at_hi, at_lo = (win == win_hi).flatten(2).all(2), (win == win_lo).flatten(2).all(2)
        signs = _signs((n, c), generator, x.device, torch.int8)
        for _ in range(10):
            same = torch.where(signs > 0, at_hi, at_lo).all(1)
            if not same.any():
                break
            signs = torch.where(same[:, None], _signs((n, c), generator, x.device, torch.int8), signs)
        candidate = adv.clone()
        candidate[index] = torch.where(signs[:, :, None, None] > 0, win_hi, win_lo)
        return candidate


@ATTACKS.register("square-l2")
class L2Square(Square):
    """The Square attack in L2."""

    norm = "l2"

    def side(self, p, h, w):
        return max(min(round(math.sqrt(p * h * w)), min(h, w) - 1), 3 if min(h, w) > 3 else 1)

    def init(self, x, lo, hi, eps, generator):
        n, c, h, w = x.shape
        delta = torch.zeros_like(x)
        s = max(min(h, w) // 5, 1)
        shape = bump(s, s, x.device, x.dtype)
        top0, left0 = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
        for top in range(top0, top0 + s * (h // s), s):
            for left in range(left0, left0 + s * (w // s), s):
                delta[:, :, top:top + s, left:left + s] += shape * _signs((n, c, 1, 1), generator, x.device, x.dtype)
        return _into_ball(x, delta, eps)

    def propose(self, x, adv, lo, hi, eps, s, generator):
        n, c, h, w = x.shape
        delta = adv - x
        top1, left1, w1 = _windows(n, h, w, s, generator, x.device)
        _, _, w2 = _windows(n, h, w, s, generator, x.device)
        union = w1 | w2
        # the mass (per channel) of both windows, plus any budget the perturbation leaves unused
        unused = (eps ** 2 - delta.flatten(1).pow(2).sum(1)).clamp(min=0) / c
        mass = (delta * union).flatten(2).pow(2).sum(2) + unused[:, None]  # (n, c)
        # a new bump (randomly transposed, random sign per channel) in the first window
        pattern = meta_bump(s, x.device, x.dtype)
        flip = torch.rand(n, generator=generator, device=x.device) < 0.5
        patterns = torch.where(flip[:, None, None], pattern.t()[None], pattern[None])  # (n, s, s)
        rows = (torch.arange(h, device=x.device)[None] - top1[:, None]).clamp(0, s - 1)
        cols = (torch.arange(w, device=x.device)[None] - left1[:, None]).clamp(0, s - 1)
        placed = patterns[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
        placed = placed[:, None] * w1 * _signs((n, c, 1, 1), generator, x.device, x.dtype)
        target = mass.sqrt()[..., None, None]  # (n, c, 1, 1)
        inside = delta * w1 + placed / _norm2(placed) * target
        inside = inside / _norm2(inside) * target
        new = torch.where(union, 0.0, delta) + inside
        return _into_ball(x, new, eps)


def _norm2(v: torch.Tensor) -> torch.Tensor:
    """Per example and channel L2 norm of (n, c, h, w), shaped (n, c, 1, 1), at least 1e-12."""
    return v.flatten(2).norm(dim=2).clamp(min=1e-12)[..., None, None]


def _into_ball(x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """x + delta with delta rescaled to L2 norm at most eps, clipped to [0, 1]."""
    norm = delta.flatten(1).norm(dim=1).clamp(min=1e-12)
    scale = (eps / norm).clamp(max=1.0)
    return (x + delta * scale[:, None, None, None]).clamp(0, 1)
