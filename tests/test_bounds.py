"""Soundness of the Linf bounds (IBP, CROWN-IBP, CROWN): they contain the outputs of random and PGD points of
the ball, lie below the exact minimum a mixed-integer program finds, are exact where the network is linear
on the ball, are ordered where the theory orders them, and never certify what an attack breaks. A bound
made unsound on purpose (the ReLU upper line without its intercept) is caught by the same checks."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.optimize import LinearConstraint, milp
from torch import nn

from robench.attacks.autoattack import ensemble
from robench.defenses import bound_ops, bounds
from robench.defenses.bounds import BoundedNet, input_box, margin_bounds, margin_spec
from robench.errors import RobenchError
from robench.nets import KWinners, Normalize, SparseWeights
from robench.registry import ATTACKS
from robench.threats import build_threat

METHODS = bounds.METHODS
TOL = 1e-4


def _bn(channels: int) -> nn.Module:
    layer = nn.BatchNorm2d(channels)
    with torch.no_grad():
        layer.running_mean.uniform_(-0.5, 0.5)
        layer.running_var.uniform_(0.5, 2)
        layer.weight.uniform_(-1.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    return layer


def _nets() -> dict[str, nn.Module]:
    """Small random networks over 1x6x6 images covering every supported layer."""
    torch.manual_seed(0)
    nets = {
        "mlp": nn.Sequential(Normalize((0.2,), (0.4,)), nn.Flatten(), nn.Linear(36, 16), nn.ReLU(),
                             nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 5)),
        "cnn-maxpool-bn": nn.Sequential(Normalize((0.2,), (0.4,)), nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                        nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, stride=2, padding=1), _bn(6), nn.ReLU(),
                                        nn.Flatten(), nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 4)),
        "cnn-avgpool": nn.Sequential(nn.Conv2d(1, 4, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),
                                     nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                     nn.Flatten(), nn.Linear(20, 3)),
        "sparse-kwta": nn.Sequential(Normalize((0.2,), (0.4,)), SparseWeights(nn.Conv2d(1, 4, 3, padding=1), 0.5),
                                     nn.MaxPool2d(2), KWinners(12), nn.Flatten(), SparseWeights(nn.Linear(36, 16), 0.5),
                                     KWinners(5), nn.Linear(16, 4)),
    }
    return {name: net.eval() for name, net in nets.items()}


NETS = _nets()


def _points(box: tuple[torch.Tensor, torch.Tensor], n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` points of the box per example (n, B, C, H, W): half uniform, half random vertices."""
    lo, hi = box
    u = torch.rand(n, *lo.shape, generator=generator)
    u[n // 2:] = u[n // 2:].round()
    return lo + (hi - lo) * u


def _pgd_minimise(net: nn.Module, spec: torch.Tensor, box, steps: int = 60) -> torch.Tensor:
    """Per example and row of `spec` (B, S, K), the smallest spec row @ logits PGD finds in the box (B, S)."""
    lo, hi = (t.unsqueeze(1).expand(-1, spec.shape[1], *t.shape[1:]).flatten(0, 1) for t in box)
    rows = spec.flatten(0, 1)
    x = ((lo + hi) / 2).requires_grad_(True)
    best = torch.full((len(rows),), float("inf"))
    for step in range(steps):
        value = (net(x) * rows).sum(1)
        best = torch.minimum(best, value.detach())
        grad, = torch.autograd.grad(value.sum(), x)
        size = (hi - lo) * 0.25 * (1 - step / steps)
        x = torch.minimum(torch.maximum(x.detach() - size * grad.sign(), lo), hi).requires_grad_(True)
    return best.view(spec.shape[:2])


def _output_spec(classes: int, batch: int) -> torch.Tensor:
    """Rows e_k and -e_k: their lower bounds are the logits' lower and (negated) upper bounds."""
    eye = torch.eye(classes)
    return torch.cat([eye, -eye]).expand(batch, 2 * classes, classes)


def _violation(net: nn.Module, x: torch.Tensor, eps: float, method: str, generator: torch.Generator) -> float:
    """How far (>= 0) the worst random or PGD point of the ball falls below its bound, over the logits and
    the margins; 0 for a sound bound."""
    y = net(x).argmax(1)
    with torch.no_grad():
        classes = net(x[:1]).shape[1]
        specs = [_output_spec(classes, len(x)), margin_spec(y, classes, x.dtype)]
        box = input_box(x, eps)
        points = _points(box, 2000, generator)
        logits = net(points.flatten(0, 1)).view(len(points), len(x), classes)
    worst = 0.0
    for spec in specs:
        with torch.no_grad():
            lower = BoundedNet(net, x.shape[1:], x).bound(spec, box, method)
            sampled = torch.einsum("nbk,bsk->nbs", logits, spec).amin(0)
        attacked = _pgd_minimise(net, spec, box)
        worst = max(worst, float((lower - torch.minimum(sampled, attacked)).max()))
    return worst


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", NETS)
def test_bounds_contain_random_and_pgd_points(name, method):
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 6, 6, generator=generator)
    for eps in (0.02, 0.1):
        assert _violation(NETS[name], x, eps, method, generator) <= TOL


@pytest.mark.parametrize("straddling", [False, True])
def test_kwinners_relaxation_holds_for_every_point_of_the_box(straddling):
    """For random boxes and points in them: the units k-WTA surely passes or fails do so, the interval
    holds the output, and A kwta(v) >= A' v + c for random coefficients A of both signs."""
    g = torch.Generator().manual_seed(4)
    op, kwta = bound_ops.KWinnersOp(5), KWinners(5)
    centre = torch.randn(6, 20, generator=g) + (0 if straddling else 3)
    radius = torch.rand(6, 20, generator=g) * (1.5 if straddling else 0.3)
    lo, hi = centre - radius, centre + radius
    a = torch.randn(6, 7, 20, generator=g)
    passes, fails = op.decided(lo, hi)
    out_lo, out_hi = op.interval(lo, hi)
    coef, const = op.backward(a, lo, hi)
    assert (~passes & ~fails).any() and (passes | fails).any()  # both kinds, so each branch is tested
    for _ in range(300):
        v = lo + (hi - lo) * torch.rand(lo.shape, generator=g).round_() if _ % 2 else \
            lo + (hi - lo) * torch.rand(lo.shape, generator=g)
        y = kwta(v)
        assert not (passes & (y != v)).any() and not (fails & (y != 0)).any()
        assert (out_lo <= y + 1e-6).all() and (y <= out_hi + 1e-6).all()
        assert ((a * y.unsqueeze(1)).sum(-1) >= (coef * v.unsqueeze(1)).sum(-1) + const - 1e-5).all()


# --------------------------------------------------------------------------- exact minimum by MILP

def _tiny(seed: int, sizes=(5, 8, 8, 4)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double().eval()


def _milp_minimum(net: nn.Sequential, c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[float, np.ndarray]:
    """The exact minimum of c @ net(x) over the box [lo, hi] (a ReLU MLP as a mixed-integer program, with
    big-M constants from IBP) and its minimiser x."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    box = (torch.from_numpy(lo)[None], torch.from_numpy(hi)[None])
    bounded = BoundedNet(net, torch.Size([len(lo)]), box[0])
    with torch.no_grad():
        pre = [b for b, op in zip(bounded.intervals(box), bounded.ops) if isinstance(op, bound_ops.ReluOp)]
    sizes = [len(lo)] + [m.out_features for m in linears[:-1]]
    # variables: x, then per hidden layer z (pre-activation), h (post-activation), d (binary)
    offsets, n = [], len(lo)
    for size in sizes[1:]:
        offsets.append(n)
        n += 3 * size
    rows, lower, upper = [], [], []
    var_lo, var_hi, integer = list(lo), list(hi), [0] * len(lo)

    def row(entries: dict[int, float], lb: float, ub: float) -> None:
        r = np.zeros(n)
        for k, v in entries.items():
            r[k] += v
        rows.append(r), lower.append(lb), upper.append(ub)

    prev = list(range(len(lo)))
    for j, (layer, size) in enumerate(zip(linears[:-1], sizes[1:])):
        w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
        l, u = (t[0].numpy() for t in pre[j])
        z0, h0, d0 = offsets[j], offsets[j] + size, offsets[j] + 2 * size
        var_lo += list(l) + [0.0] * size + [0.0] * size
        var_hi += list(u) + list(np.maximum(u, 0)) + [1.0] * size
        integer += [0] * (2 * size) + [1] * size
        for i in range(size):
            row({z0 + i: 1.0, **{p: -w[i, k] for k, p in enumerate(prev)}}, b[i], b[i])
            z, h, d = z0 + i, h0 + i, d0 + i
            row({h: 1.0, z: -1.0}, 0.0, np.inf)                  # h >= z
            row({h: 1.0, z: -1.0, d: -l[i]}, -np.inf, -l[i])     # h <= z - l (1 - d)
            row({h: 1.0, d: -max(u[i], 0.0)}, -np.inf, 0.0)      # h <= u d
        prev = list(range(h0, h0 + size))
    last = linears[-1]
    objective = np.zeros(n)
    objective[prev] = c @ last.weight.detach().numpy()
    result = milp(objective, integrality=np.array(integer), bounds=(var_lo, var_hi),
                  constraints=LinearConstraint(np.array(rows), lower, upper), options={"mip_rel_gap": 1e-9})
    assert result.success, result.message
    return float(result.fun + c @ last.bias.detach().numpy()), result.x[:len(lo)]


def _margin_case(seed: int, eps: float, sizes=(5, 8, 8, 4)):
    net = _tiny(seed, sizes)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(1, sizes[0], generator=generator, dtype=torch.float64).view(1, 1, 1, sizes[0])
    y = net(x).argmax(1)
    spec = margin_spec(y, sizes[-1], x.dtype)
    lo, hi = (t.flatten().numpy() for t in input_box(x, eps))
    exact = []
    for k in range(sizes[-1]):
        value, argmin = _milp_minimum(net, spec[0, k].numpy(), lo, hi)
        with torch.no_grad():
            reached = float(spec[0, k] @ net(torch.from_numpy(argmin).view_as(x))[0])
        assert abs(reached - value) <= 1e-6 * (1 + abs(value))  # the program's minimiser has its value
        exact.append(value)
    with torch.no_grad():
        found = {m: margin_bounds(net, x, y, eps, m)[0].numpy() for m in METHODS}
    return net, x, y, np.array(exact), found


@pytest.mark.parametrize("seed", range(6))
def test_bounds_below_the_exact_minimum_of_a_milp(seed):
    """Every method's margin lower bound is <= the exact minimum; CROWN is usually far closer than IBP."""
    _, _, _, exact, found = _margin_case(seed, 0.15)
    for method, lower in found.items():
        assert (lower <= exact + 1e-6).all(), (method, lower - exact)


def test_crown_gap_to_the_exact_minimum_is_smaller_than_ibps_on_average():
    """Empirical, on these untrained random nets (the theory orders none of the three in general)."""
    gaps = {m: [] for m in METHODS}
    for seed in range(6):
        _, _, y, exact, found = _margin_case(seed, 0.15)
        for m in METHODS:
            gaps[m].append(float(np.mean(np.delete(exact - found[m], int(y)))))
    assert np.mean(gaps["crown"]) <= np.mean(gaps["crown-ibp"]) <= np.mean(gaps["ibp"])


# --------------------------------------------------------------------------- exactness and order

def _vertex_minimum(net: nn.Module, x: torch.Tensor, spec: torch.Tensor, box) -> torch.Tensor:
    """min over the box of spec @ net for a net that is linear on the box: the value at the vertex that
    the gradient's signs pick (B, S)."""
    lo, hi = box
    rows = spec.flatten(0, 1)
    x0 = x.repeat_interleave(spec.shape[1], 0).requires_grad_(True)
    grad, = torch.autograd.grad((net(x0) * rows).sum(), x0)
    vertex = torch.where(grad > 0, lo.repeat_interleave(spec.shape[1], 0), hi.repeat_interleave(spec.shape[1], 0))
    return (net(vertex) * rows).sum(1).detach().view(spec.shape[:2])


@pytest.mark.parametrize("name", NETS)
def test_crown_is_exact_where_the_network_is_linear_on_the_ball(name):
    """At a tiny eps every unit is stable: CROWN and CROWN-IBP equal the exact minimum (which checks every
    transpose: conv, pooling, BatchNorm, normalisation) and IBP lies below them."""
    net = copy.deepcopy(NETS[name]).double()
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.8 + 0.1
    box = input_box(x, 1e-6)
    bounded = BoundedNet(net, x.shape[1:], x)
    boxes = bounded.intervals(box)
    assert all(not ((lo < 0) & (hi > 0)).any() for (lo, hi), op in zip(boxes, bounded.ops)
               if isinstance(op, bound_ops.ReluOp))
    spec = margin_spec(net(x).argmax(1), net(x).shape[1], x.dtype)
    exact = _vertex_minimum(net, x, spec, box)
    with torch.no_grad():
        found = {m: bounded.bound(spec, box, m) for m in METHODS}
    assert torch.allclose(found["crown"], exact, atol=1e-9) and torch.allclose(found["crown-ibp"], exact, atol=1e-9)
    assert (found["ibp"] <= found["crown-ibp"] + 1e-12).all()


def test_one_hidden_layer_crown_equals_crown_ibp():
    """With one ReLU layer the intermediate boxes are exact for both, so the bounds coincide."""
    _, _, _, _, found = _margin_case(7, 0.2, sizes=(5, 10, 4))
    assert np.allclose(found["crown"], found["crown-ibp"], atol=1e-12)


@pytest.mark.parametrize("name", ["mlp", "cnn-maxpool-bn"])
def test_crown_boxes_inside_ibp_boxes(name):
    """CROWN's refined box of every node lies inside IBP's, and is strictly tighter somewhere."""
    net = NETS[name]
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    bounded = BoundedNet(net, x.shape[1:], x)
    with torch.no_grad():
        ibp = bounded.intervals(input_box(x, 0.1))
        crown = bounded.intervals(input_box(x, 0.1), bounded.crown_refine)
    assert all((lc >= li - 1e-6).all() and (hc <= hi + 1e-6).all() for (li, hi), (lc, hc) in zip(ibp, crown))
    assert any((lc > li + 1e-4).any() for (li, _), (lc, _) in zip(ibp, crown))


def test_folding_the_margin_into_the_last_layer_is_tighter_than_subtracting_logit_bounds():
    net = NETS["mlp"]
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    y = net(x).argmax(1)
    with torch.no_grad():
        folded = margin_bounds(net, x, y, 0.05, "ibp")
        lo, hi = BoundedNet(net, x.shape[1:], x).intervals(input_box(x, 0.05))[-1]
    naive = lo.gather(1, y[:, None]) - hi
    assert (folded >= naive - 1e-6).all() and (folded > naive + 1e-4).any()


def test_ibp_margin_shrinks_as_eps_grows():
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(5))
    threat = build_threat("ibp:eps=0.01|0.03|0.1")
    out = threat.evaluate_shard(NETS["cnn-maxpool-bn"], x, NETS["cnn-maxpool-bn"](x).argmax(1), None)
    margins = np.stack([out[f"margin@{e!r}"] for e in (0.01, 0.03, 0.1)])
    assert (np.diff(margins, axis=0) <= 1e-6).all()


# --------------------------------------------------------------------------- verified is never broken

def test_verified_examples_are_never_broken_by_pgd_or_autoattack():
    """On a small trained net where the attacks break some examples at eps and CROWN verifies most of the
    rest: no example verified by any method is broken by PGD (with restarts) or an attack of AutoAttack."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 5))
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(5, 16, generator=g)
    y = torch.arange(60) % 5
    x = (centres[y] + 0.15 * torch.randn(60, 16, generator=g)).clamp(0, 1).view(60, 1, 4, 4)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    net.eval()
    eps = 0.1
    attacks = [ATTACKS.create("pgd-linf", steps=50, restarts=3), *ensemble("linf", "standard").values()]
    broken = torch.zeros(60, dtype=torch.bool)
    for attack in attacks:
        broken |= attack(net, x, y, eps=eps, generator=torch.Generator().manual_seed(1)).success
    assert broken.sum() >= 3
    verified = {m: torch.from_numpy(build_threat(f"{m}:eps={eps}").evaluate_shard(net, x, y, None)[f"verified@{eps!r}"])
                for m in METHODS}
    assert verified["crown"].sum() >= 30 and verified["crown-ibp"].sum() >= 10
    assert not any((v & broken).any() for v in verified.values())


# --------------------------------------------------------------------------- the checks can fail

def test_the_checks_catch_a_relu_upper_line_without_its_intercept(monkeypatch):
    """An unsound relaxation (the upper line u (v - l) / (u - l) without its intercept -l u / (u - l)) puts
    CROWN above the MILP minimum and above points of the ball."""
    true_lines = bound_ops.relu_lines

    def unsound(lo, hi):
        upper, _, lower = true_lines(lo, hi)
        return upper, torch.zeros_like(lo), lower

    monkeypatch.setattr(bound_ops, "relu_lines", unsound)
    above = [float(np.max(found["crown"] - exact)) for _, _, _, exact, found in
             (_margin_case(seed, 0.15) for seed in range(3))]
    assert max(above) > 1e-3
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    assert _violation(NETS["mlp"], x, 0.1, "crown", torch.Generator().manual_seed(1)) > 1e-3


# --------------------------------------------------------------------------- the threats and bad input

def test_threat_outputs_metrics_and_report():
    net = NETS["cnn-avgpool"]
    x = torch.rand(10, 1, 6, 6, generator=torch.Generator().manual_seed(6))
    y = torch.arange(10) % 3
    threat = build_threat("crown:eps=0.001|0.05,batch=4")
    assert threat.canonical == "crown:batch=4,eps=0.001|0.05,precision=fp32"
    assert list(threat.parts()) == ["eps=0.001", "eps=0.05"]
    outputs = {}
    for part in threat.parts().values():
        outputs.update(part.evaluate_shard(net, x, y, None))
    clean = outputs["clean_correct"]
    for eps in (0.001, 0.05):
        assert outputs[f"margin@{eps!r}"].shape == (10,)
        assert not (outputs[f"verified@{eps!r}"] & ~clean).any()
    metrics = threat.summarize(outputs)
    assert metrics["verified_accuracy"]["0.001"]["n"] == 10
    report = threat.report(metrics)
    assert [c.head for c in report.headline] == ["0.001", "0.05"]
    assert report.curves[0].figure == "verified_curve" and report.curves[0].points[0][0] == 0.0


@pytest.mark.parametrize("method", ["crown-ibp", "crown"])
def test_the_certificate_takes_the_tighter_of_the_method_and_ibp_per_margin(method):
    """Both bounds are sound, so per margin the larger is too; on this MLP at eps 0.3 IBP's certified margin
    beats CROWN-IBP's on some examples (the threat must not lose them)."""
    net = NETS["mlp"]
    x = torch.rand(50, 1, 6, 6, generator=torch.Generator().manual_seed(6))
    y = net(x).argmax(1)
    out = build_threat(f"{method}:eps=0.3").evaluate_shard(net, x, y, None)
    with torch.no_grad():
        own, ibp = (margin_bounds(net, x, y, 0.3, m) for m in (method, "ibp"))
    tighter = torch.maximum(own, ibp).scatter(1, y.unsqueeze(1), float("inf")).amin(1)
    assert np.allclose(out["margin@0.3"], tighter.double().numpy())
    assert (ibp > own + 1e-6).any()  # IBP is the tighter somewhere here, so the test can tell


def test_evaluate_records_verified_accuracy_per_eps(tmp_path):
    """Through robench.evaluate (parts per eps, shards, the store): verified accuracy per eps over the slice."""
    import robench
    from robench import nets

    torch.manual_seed(0)
    model = nets.create("gowal-small", channels=1, size=28, classes=10, mean=(0.1307,), std=(0.3081,))
    record, = robench.evaluate(model, "ibp:eps=0|0.01", dataset="mnist-5k", n=12, store=tmp_path / "s.sqlite")
    verified = record.metrics["verified_accuracy"]
    assert list(verified) == ["0.0", "0.01"] and verified["0.01"]["n"] == 12
    assert verified["0.0"]["correct"] == record.metrics["clean_accuracy"]["correct"]  # eps 0: the bounds are exact


def test_low_precision_is_refused_with_the_reason():
    with pytest.raises(RobenchError, match="low precision is not a certificate"):
        build_threat("ibp:eps=0.1,precision=bf16")
    x = torch.rand(2, 1, 6, 6)
    with pytest.raises(RobenchError, match="bfloat16.*not a certificate"):
        margin_bounds(copy.deepcopy(NETS["mlp"]).bfloat16(), x.bfloat16(), torch.zeros(2, dtype=torch.long), 0.1,
                      "ibp")
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(RobenchError, match="autocast"):
        margin_bounds(NETS["mlp"], x, torch.zeros(2, dtype=torch.long), 0.1, "crown")


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(36, 36)

    def forward(self, x):
        return x + self.fc(x)


@pytest.mark.parametrize("layer, named", [
    (nn.Tanh(), "Tanh()"), (_Residual(), "_Residual("), (nn.BatchNorm1d(36).train(), "training mode"),
])
def test_an_unsupported_layer_is_a_one_line_error_naming_it(layer, named):
    net = nn.Sequential(nn.Flatten(), layer, nn.Linear(36, 3))
    with pytest.raises(RobenchError) as info:
        margin_bounds(net, torch.rand(2, 1, 6, 6), torch.zeros(2, dtype=torch.long), 0.1, "ibp")
    assert named in str(info.value) and "\n" not in str(info.value) and "supported:" in str(info.value)


def test_a_model_that_is_not_sequential_is_refused():
    with pytest.raises(RobenchError, match="nn.Sequential"):
        margin_bounds(_Residual(), torch.rand(2, 1, 6, 6), torch.zeros(2, dtype=torch.long), 0.1, "ibp")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_bounds_match_cpu(method):
    net = NETS["cnn-maxpool-bn"]
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(7))
    y = net(x).argmax(1)
    with torch.no_grad():
        cpu = margin_bounds(net, x, y, 0.05, method)
        gpu = margin_bounds(copy.deepcopy(net).cuda(), x.cuda(), y.cuda(), 0.05, method).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-4)
