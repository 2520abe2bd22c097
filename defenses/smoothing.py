"""Randomized smoothing (Cohen, Rosenfeld, Kolter 2019): the smoothed classifier with PREDICT and
CERTIFY, sequential CERTIFY (the bound drawn in growing looks, stopping early; REFERENCE.md section 9), the
`smoothing` certification threat, and the files `robench certify` writes.

The base classifier is f(clip(z, 0, 1)): noise is added by `gaussian_noise` and clipped to [0, 1], as in
Gaussian training. Clipping is a fixed function of the noisy input, so the L2 certificates still hold.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence

import numpy as np
import torch
from scipy import stats
from torch import nn

from robench.corruptions.noise import gaussian_noise
from robench.defenses.base import InferenceDefense
from robench.errors import RobenchError
from robench.inference import PRECISIONS, check_images, check_precision, out_of_memory, predict
from robench.metrics import Accuracy, accuracy
from robench.progress import note
from robench.registry import CERTIFIERS, DEFENSES
from robench.report import Column, Curve, Report
from robench.threats import Kind, Outputs, Threat

ABSTAIN = -1


def lower_confidence_bound(n_a: float, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on p from n_a successes out of n."""
    return 0.0 if n_a == 0 else float(stats.beta.ppf(alpha, n_a, n - n_a + 1))


def upper_confidence_bound(n_a: float, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound on p from n_a successes out of n."""
    return 1.0 if n_a == n else float(stats.beta.ppf(1 - alpha, n_a + 1, n - n_a))


def max_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return with n samples: sigma * Phi^-1(alpha^(1/n))."""
    return sigma * float(stats.norm.ppf(alpha ** (1.0 / n)))


def looks_for(n: int, n_max: int) -> tuple[int, ...]:
    """The sample sizes at which sequential CERTIFY looks: n, 2 n, 4 n, ... below n_max, then n_max. (Doubling:
    an example draws less than twice what it needs, and the alpha split over the looks costs little.)"""
    sizes = [n]
    while sizes[-1] * 2 < n_max:
        sizes.append(sizes[-1] * 2)
    return tuple(sizes) if sizes[-1] == n_max else (*sizes, n_max)


def sequential_bound(draw: Callable[[int], int], looks: Sequence[int], alpha: float,
                     targets: Sequence[float] = ()) -> tuple[float, int]:
    """A lower confidence bound on the success probability p of `draw` (``draw(m)``: the successes of m
    fresh draws) and the number of draws it used. At each look (cumulative sizes n_1 < ... < n_L) it takes
    the one-sided Clopper-Pearson bound at level alpha / L; by the union bound all L bounds hold together
    with probability >= 1 - alpha, so their running maximum, returned, is <= p with that probability. It
    stops after a look whose bound reaches max(`targets`), or once even p at this look's (1 - alpha / L)
    upper bound would not lift the last look's bound to the next target (futility: stopping early never
    weakens the guarantee). With one look it is CERTIFY's bound."""
    level = alpha / len(looks)
    hits = used = 0
    best = 0.0
    for size in looks:
        hits += draw(size - used)
        used = size
        best = max(best, lower_confidence_bound(hits, used, level))
        higher = [t for t in targets if t > best]
        if used == looks[-1] or not higher or lower_confidence_bound(
                upper_confidence_bound(hits, used, level) * looks[-1], looks[-1], level) < min(higher):
            break
    return best, used


@DEFENSES.register("smooth")
class Smooth(InferenceDefense):
    """The smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c) of a base model f.

    `precision` "bf16"/"fp16" runs the base model under autocast (faster, different arithmetic);
    `channels_last` runs a channels-last copy of the base model (same values, faster convolutions) on
    channels-last batches; the caller's model is never changed. `samples` noise draws per image
    serve ``forward`` (vote frequencies (N, K), a Monte-Carlo estimate of g's class probabilities, so
    attacks and accuracy threats see the smoothed classifier), `batch_size` copies at a time. A batch of
    copies the device cannot hold is forwarded in halves (see `votes`), so a large model backs off and a
    small one keeps full batches."""

    def __init__(self, base: nn.Module, num_classes: int, sigma: float, *, precision: str = "fp32",
                 channels_last: bool = True, samples: int = 100, batch_size: int = 1000, seed: int = 0):
        super().__init__(base)
        if sigma <= 0 or num_classes < 2:
            raise RobenchError(f"Smooth needs sigma > 0 and num_classes >= 2; got {sigma}, {num_classes}.")
        check_precision(precision)
        self.num_classes, self.sigma, self.precision = num_classes, float(sigma), precision
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.base = _channels_last(base)
        self.samples, self.batch_size = samples, batch_size
        #: the most noisy copies one forward pass held without running out of memory (None: no limit met)
        self.fits: int | None = None
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def counts(self, x: torch.Tensor, num: int, batch_size: int, generator: torch.Generator) -> np.ndarray:
        """How often f predicts each class on `num` noisy copies of one image `x` (C, H, W); (K,) int64."""
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=x.device)
        dtype = PRECISIONS[self.precision]
        with torch.no_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            for start in range(0, num, batch_size):
                b = min(batch_size, num - start)
                noisy = gaussian_noise(x.unsqueeze(0).expand(b, *x.shape), generator, self.sigma)
                counts += self.votes(noisy.contiguous(memory_format=self.memory_format))
        return counts.cpu().numpy()

    def votes(self, noisy: torch.Tensor) -> torch.Tensor:
        """How often f predicts each class on the batch `noisy`, forwarded at most `fits` copies at a time;
        a forward that runs out of memory halves `fits` (for later batches too) and is tried again. The
        noise is drawn before, so backing off changes no draw."""
        votes = torch.zeros(self.num_classes, dtype=torch.long, device=noisy.device)
        start = 0
        while start < len(noisy):
            size = min(self.fits or len(noisy), len(noisy) - start)
            try:
                predicted = self.base(noisy[start:start + size]).argmax(1)
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if size == 1 or not out_of_memory(error):
                    raise
                if noisy.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.fits = size // 2
                note(f"robench: {size} noisy copies ran out of memory on {noisy.device}; forwarding {self.fits} "
                     "at a time")
                continue
            votes += torch.bincount(predicted, minlength=self.num_classes)
            start += size
        return votes

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int,
                generator: torch.Generator) -> int:
        """PREDICT: g's class for one image (C, H, W), or ABSTAIN (-1) when the two-sided binomial test
        of the top count against the runner-up at p = 0.5 has p-value > alpha."""
        counts = self.counts(x, n, batch_size, generator)
        top2 = np.argsort(counts, kind="stable")[::-1][:2]
        n_a, n_b = int(counts[top2[0]]), int(counts[top2[1]])
        if stats.binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2[0])

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                generator: torch.Generator) -> tuple[int, float]:
        """CERTIFY: (class, L2 radius) for one image (C, H, W), or (ABSTAIN, 0.0). The class is guessed
        from n0 noisy copies; the radius sigma * Phi^-1(pA_lower) uses n fresh copies. With probability
        at least 1 - alpha a returned class is g's prediction, robust within the radius."""
        label, radius, _ = self.certify_sequential(x, n0, (n,), alpha, (), batch_size, generator)
        return label, radius

    def certify_sequential(self, x: torch.Tensor, n0: int, looks: Sequence[int], alpha: float,
                           radii: Sequence[float], batch_size: int,
                           generator: torch.Generator) -> tuple[int, float, int]:
        """CERTIFY with pA_lower from `sequential_bound` over `looks`, stopping once the radius reaches the
        largest of `radii` or can reach no further one: (class, L2 radius, noisy copies drawn with the n0)
        for one image (C, H, W), or (ABSTAIN, 0.0, copies). The guarantee is CERTIFY's; with the one look
        (n,) it is `certify`."""
        c_a = int(self.counts(x, n0, batch_size, generator).argmax())
        targets = [float(stats.norm.cdf(r / self.sigma)) for r in radii]
        p_a, used = sequential_bound(lambda m: int(self.counts(x, m, batch_size, generator)[c_a]), looks, alpha,
                                     targets)
        if p_a < 0.5:
            return ABSTAIN, 0.0, n0 + used
        return c_a, self.sigma * float(stats.norm.ppf(p_a)), n0 + used

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Vote frequencies (N, K) of f over `samples` noisy copies of each image of `x` (N, C, H, W)."""
        if self.generator.device != x.device:
            self.generator = torch.Generator(device=x.device).manual_seed(self.seed)
        rows = [torch.from_numpy(self.counts(xi, self.samples, self.batch_size, self.generator)) for xi in x]
        return (torch.stack(rows).float() / self.samples).to(x.device)


def _channels_last(model: nn.Module) -> nn.Module:
    """`model` if none of its 4-D weights would change memory format, else a channels-last deep copy (the
    caller's model keeps its own layout)."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.dim() != 4 or t.is_contiguous(memory_format=torch.channels_last) for t in tensors):
        return model
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def num_classes_of(model: nn.Module, x: torch.Tensor) -> int:
    """The number of logits `model` returns for the images `x`."""
    return int(predict(model, x[:1]).shape[1])


@CERTIFIERS.register("smoothing")
class SmoothingThreat(Threat):
    """Certified robustness of the smoothed model: CERTIFY on each example with (sigma, n0, n, alpha),
    noise drawn `batch` copies at a time under `precision`. Reports certified accuracy at `radii` (correct
    and radius >= r), average certified radius, abstention rate and clean accuracy of the smoothed
    classifier (its certified prediction correct, i.e. certified accuracy at radius 0).

    `mode` "sequential" draws the bound in looks of n, 2 n, 4 n, ... up to `n_max` copies, alpha split equally
    over them, and stops an example once it certifies the largest of `radii` or can reach no further one
    (`sequential_bound`); its per-example outputs add the copies drawn ("samples", with the n0). "fixed"
    (the default) is the paper's CERTIFY with n copies for every example."""

    kind = Kind.CERTIFICATION
    shard_size: ClassVar[int | None] = 100
    quiet_defaults = ("mode", "n_max")

    @property
    def cost(self) -> float:
        return float(self.n0 + self.looks[-1])

    def __init__(self, *, sigma: float = 0.25, n0: int = 100, n: int = 10_000, alpha: float = 0.001,
                 radii: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0), batch: int = 1000,
                 precision: str = "fp32", mode: Literal["fixed", "sequential"] = "fixed", n_max: int | None = None):
        if sigma <= 0 or not 0 < alpha < 1 or min(n0, n, batch) < 1:
            raise RobenchError(f"smoothing needs sigma > 0, 0 < alpha < 1 and n0, n, batch >= 1; "
                               f"got sigma={sigma}, alpha={alpha}, n0={n0}, n={n}, batch={batch}.")
        check_precision(precision)
        if mode == "sequential" and n_max is None:
            raise RobenchError("smoothing mode=sequential needs n_max, the most copies per example, "
                               "e.g. smoothing:mode=sequential,n=1000,n_max=100000.")
        if mode == "fixed" and n_max is not None:
            raise RobenchError("smoothing takes n_max with mode=sequential only (fixed mode draws n copies); "
                               "add mode=sequential or drop n_max.")
        if n_max is not None and n_max < n:
            raise RobenchError(f"smoothing needs n_max >= n (its first look); got n={n}, n_max={n_max}.")
        self.looks = (n,) if n_max is None else looks_for(n, n_max)
        last, level, name = self.looks[-1], alpha / len(self.looks), "n" if n_max is None else "n_max"
        if lower_confidence_bound(last, last, level) <= 0.5:  # level^(1/n), the bound when all n draws agree
            raise RobenchError(f"smoothing with {name}={last} can never certify at alpha={alpha}: even when all "
                               f"{last} noisy copies agree, the lower confidence bound {level ** (1 / last):.3f} is "
                               f"not above 0.5; give {name} >= {math.floor(math.log2(1 / level)) + 1}.")
        self.sigma, self.n0, self.n, self.alpha = float(sigma), n0, n, float(alpha)
        self.radii = tuple(sorted(float(r) for r in radii))
        self.batch, self.precision, self.mode, self.n_max = batch, precision, mode, n_max

    @classmethod
    def as_threat(cls, **params: Any) -> "SmoothingThreat":
        return cls(**params)

    def evaluate_shard(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       generator: torch.Generator) -> Outputs:
        check_images(x, y)
        smooth = Smooth(model.eval(), num_classes_of(model, x), self.sigma, precision=self.precision)
        rows = []
        for xi, yi in zip(x, y.tolist()):
            start = time.perf_counter()
            label, radius, samples = smooth.certify_sequential(xi, self.n0, self.looks, self.alpha, self.radii,
                                                               self.batch, generator)
            rows.append((yi, label, radius, label == yi, time.perf_counter() - start, samples))
        label, pred, radius, correct, seconds, samples = (np.array(c) for c in zip(*rows))
        outputs = {"label": label.astype(np.int64), "predict": pred.astype(np.int64),
                   "radius": radius.astype(np.float64), "correct": correct.astype(bool),
                   "time": seconds.astype(np.float64)}
        if self.mode == "sequential":
            outputs["samples"] = samples.astype(np.int64)
        return outputs

    def samples(self, outputs: Outputs) -> np.ndarray:
        """Noisy copies drawn per example, the n0 included (fixed mode draws n0 + n for each, unstored)."""
        if "samples" in outputs:
            return outputs["samples"]
        return np.full(len(outputs["label"]), self.n0 + self.n, dtype=np.int64)

    def summarize(self, outputs: Outputs) -> dict[str, Any]:
        correct, radius = outputs["correct"].astype(bool), outputs["radius"]
        return {
            "certified_accuracy": {repr(r): accuracy(correct & (radius >= r)) for r in self.radii},
            "average_certified_radius": float(np.where(correct, radius, 0.0).mean()),
            "abstention_rate": accuracy(outputs["predict"] == ABSTAIN),
            "clean_accuracy": accuracy(correct),
            "max_radius": max_radius(self.sigma, self.looks[-1], self.alpha / len(self.looks)),
            "seconds_per_example": float(np.mean(outputs["time"])),
            "mode": self.mode,
            "samples_per_example": float(self.samples(outputs).mean()),
        }

    def report(self, metrics: dict[str, Any]) -> Report:
        """Headline: certified accuracy at each radius > 0; details: the smoothed classifier's clean
        accuracy, certified accuracy at every radius, ACR, abstention rate and the largest certifiable
        radius; the curve of certified accuracy against the L2 radius."""
        certified = {float(r): Accuracy.from_json(a) for r, a in metrics["certified_accuracy"].items()}
        columns = [Column("smoothed clean", Accuracy.from_json(metrics["clean_accuracy"]))]
        columns += [Column(f"r={r:g}", a, head=f"r={r:g} (σ={self.sigma:g})" if r > 0 else None)
                    for r, a in certified.items()]
        columns += [Column("ACR", metrics["average_certified_radius"]),
                    Column("abstain", Accuracy.from_json(metrics["abstention_rate"]), higher_is_better=False),
                    Column("max radius", metrics["max_radius"])]
        how = f"CERTIFY with n0={self.n0}, n={self.n}"
        if self.mode == "sequential":
            columns.append(Column("samples/example", metrics["samples_per_example"], higher_is_better=False))
            how = (f"sequential CERTIFY with n0={self.n0}, looks at {', '.join(map(str, self.looks))} copies (alpha "
                   f"split over {len(self.looks)}), {metrics['samples_per_example']:.0f} copies per example on average")
        return Report(
            "certified", f"randomized smoothing (sigma {self.sigma:g}): certified L2 accuracy by "
                         f"{'sequential ' if self.mode == 'sequential' else ''}CERTIFY", tuple(columns),
            (Curve("certified_accuracy", "Certified accuracy", "L2 radius (pixels in [0, 1])",
                   tuple((r, a.value, *a.interval) for r, a in certified.items())),),
            notes=("Certified: randomized-smoothing certified accuracy at that L2 radius.",),
            provenance=(f"{how}, alpha={self.alpha:g}, {self.precision}: no radius "
                        f"above {metrics['max_radius']:.3g} can be certified",))


def certify(model: nn.Module, x: torch.Tensor, y: torch.Tensor, out: str | Path, *,
            indices: Sequence[int] | None = None, sigma: float = 0.25, n0: int = 100, n: int = 100_000,
            alpha: float = 0.001, batch: int = 1000, precision: str = "fp32",
            radii: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0), seed: int = 0,
            label: str = "", mode: str = "fixed", n_max: int | None = None) -> dict[str, Any]:
    """Certify `model` smoothed with `sigma` on images `x` (N, C, H, W) in [0, 1] with labels `y` (N,)
    and write the files of `write_certification`. (`robench certify` does the same through the results
    store, so that a killed run resumes.) Returns the summary, with the paths."""
    threat = certify_threat(sigma=sigma, n0=n0, n=n, alpha=alpha, batch=batch, precision=precision, radii=radii,
                            mode=mode, n_max=n_max)
    outputs = threat.evaluate_shard(model, x, y, torch.Generator(device=x.device).manual_seed(seed))
    idx = np.arange(len(y)) if indices is None else np.asarray(indices)
    summary = write_certification(threat, outputs, idx, out, label=label)
    summary["seed"] = seed
    return summary


def write_certification(threat: SmoothingThreat, outputs: Outputs, indices: Sequence[int], out: str | Path, *,
                        label: str = "", data: str = "") -> dict[str, Any]:
    """For ``out = path/name.tsv`` write: the per-example table `out` (tab-separated idx, label, predict,
    radius, correct, time, as the original tool, then samples: the noisy copies drawn),
    ``name_certified.tsv`` (radius, certified accuracy with its 95% interval and n), ``name_certified.png``
    (certified accuracy against radius, titled with `data`, e.g. "mnist test", where given) and
    ``name_summary.json`` (the threat's metrics with the ACR). Returns the summary, with the paths."""
    from robench.files import atomic_write
    from robench.plots import certified_accuracy_curve

    summary = threat.summarize(outputs)
    out = Path(out)
    rows = [["idx", "label", "predict", "radius", "correct", "time", "samples"]]
    rows += [[int(i), int(lab), int(p), f"{r:.3f}", int(c), f"{t:.4f}", int(k)]
             for i, lab, p, r, c, t, k in zip(indices, outputs["label"], outputs["predict"], outputs["radius"],
                                              outputs["correct"], outputs["time"], threat.samples(outputs))]
    atomic_write(out, "".join("\t".join(map(str, row)) + "\n" for row in rows))
    stem = out.with_suffix("")
    table = Path(f"{stem}_certified.tsv")
    lines = [["radius", "certified_accuracy", "ci95_low", "ci95_high", "n"]]
    lines += [[r, f"{a['value']:.4f}", f"{a['ci95'][0]:.4f}", f"{a['ci95'][1]:.4f}", a["n"]]
              for r, a in summary["certified_accuracy"].items()]
    atomic_write(table, "".join("\t".join(map(str, line)) + "\n" for line in lines))
    draws = f"n={threat.n}" if threat.mode == "fixed" else f"sequential n={threat.n}..{threat.n_max}"
    png = certified_accuracy_curve({label or f"sigma={threat.sigma}": (outputs["radius"], outputs["correct"])},
                                   f"{stem}_certified.png",
                                   title=f"Randomized smoothing{f' on {data}' if data else ''}: sigma={threat.sigma}, "
                                         f"n0={threat.n0}, {draws}, alpha={threat.alpha}, {threat.precision}",
                                   xlabel="L2 radius (pixels in [0, 1])")
    summary.update(threat=threat.canonical, files={"examples": str(out), "table": str(table), "plot": str(png)})
    atomic_write(Path(f"{stem}_summary.json"), json.dumps(summary, indent=2))
    return summary


def certify_threat(**params: Any) -> SmoothingThreat:
    """The `smoothing` threat with these parameters (those of `SmoothingThreat`), built and checked as
    from a threat spec."""
    from robench.spec import ThreatSpec
    from robench.threats import build_threat

    return build_threat(ThreatSpec("smoothing", params))


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """What `robench certify` prints of a summary of `write_certification`: certified accuracy per radius
    with its 95% interval, the average certified radius and the abstention rate."""
    lines = []
    for radius, acc in summary["certified_accuracy"].items():
        lines.append(f"  certified accuracy at r = {radius}: {100 * acc['value']:.1f}% "
                     f"[{100 * acc['ci95'][0]:.1f}, {100 * acc['ci95'][1]:.1f}]")
    lines.append(f"  average certified radius {summary['average_certified_radius']:.3f}, abstained "
                 f"{100 * summary['abstention_rate']['value']:.1f}%, {summary['samples_per_example']:.0f} noisy "
                 f"copies per example ({summary['mode']})")
    return lines
