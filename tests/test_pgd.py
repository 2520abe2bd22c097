import foolbox
import numpy as np
import pytest
import torch
from torch import nn

from robench.attacks.pgd import FGSM, L2PGD, LinfPGD
from robench.errors import RobenchError
from robench.metrics import accuracy
from robench.threats import build_threat


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10)).eval()


@pytest.mark.parametrize("attack, norm", [
    (LinfPGD(steps=5, rel_step=0.5, restarts=2), float("inf")),
    (L2PGD(steps=5, rel_step=0.5, restarts=2), 2),
    (FGSM(), float("inf")),
])
@pytest.mark.parametrize("eps", [0.03, 0.3, 2.0])
def test_projection_stays_in_the_ball_and_the_box(attack, norm, eps, generator):
    x = torch.rand(64, 1, 28, 28, generator=generator)
    x[:8] = 0.0  # corners of the box
    y = torch.randint(0, 10, (64,), generator=generator)
    result = attack(_net(), x, y, eps=eps, generator=generator)
    delta = (result.adversarial - x).flatten(1)
    assert float(torch.linalg.vector_norm(delta, ord=norm, dim=1).max()) <= eps * (1 + 1e-5) + 1e-6
    assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1


def test_l2_random_start_is_inside_the_ball(generator):
    start = L2PGD().start(torch.zeros(500, 1, 28, 28), 1.5, generator)
    norms = start.flatten(1).norm(dim=1)
    assert float(norms.max()) <= 1.5 + 1e-5 and float(norms.mean()) > 1.3  # uniform in 784-d: near the surface


def test_attack_restores_model_state(generator):
    model = _net().train()
    LinfPGD(steps=2)(model, torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long), eps=0.1)
    assert model.training and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("x, y, message", [
    (torch.rand(4, 1, 28, 28) * 2, torch.zeros(4, dtype=torch.long), r"must lie in \[0, 1\]"),
    (torch.rand(4, 28, 28), torch.zeros(4, dtype=torch.long), "shape"),
    (torch.rand(4, 1, 28, 28), torch.zeros(3, dtype=torch.long), "labels must be"),
])
def test_bad_inputs(x, y, message):
    with pytest.raises(RobenchError, match=message):
        LinfPGD()(_net(), x, y, eps=0.1)


def test_fgsm_matches_foolbox_exactly(embedded_model, embedded_test):
    data = embedded_test.select(n=200)
    fmodel = foolbox.PyTorchModel(embedded_model, bounds=(0, 1))
    _, theirs, _ = foolbox.attacks.FGSM()(fmodel, data.x, data.y, epsilons=0.1)
    same_arithmetic = FGSM()
    same_arithmetic.memory_format = "contiguous"  # the layout foolbox computes in
    assert torch.allclose(same_arithmetic(embedded_model, data.x, data.y, eps=0.1).adversarial, theirs, atol=1e-6)
    # the default channels_last layout sums in another order: only pixels whose gradient is ~0 may differ
    ours = FGSM()(embedded_model, data.x, data.y, eps=0.1).adversarial
    assert float(((ours - theirs).abs() > 1e-6).float().mean()) < 1e-3


def _robust(spec, model, data, seed=0):
    threat = build_threat(spec)
    out = threat.evaluate_shard(model, data.x, data.y, torch.Generator().manual_seed(seed))
    return threat, out


def test_eps_zero_gives_clean_accuracy_and_robustness_falls_with_eps(embedded_model, embedded_test):
    data = embedded_test.select(n=300)
    threat, out = _robust("pgd-linf:eps=0|0.05|0.1|0.15|0.2,steps=10,rel_step=0.25", embedded_model, data)
    metrics = threat.summarize(out)
    values = [metrics["robust_accuracy"][e]["value"] for e in ("0.0", "0.05", "0.1", "0.15", "0.2")]
    assert values[0] == metrics["clean_accuracy"]["value"] > 0.9
    assert all(a >= b for a, b in zip(values, values[1:])) and values[-1] < 0.5 * values[0]
    # per example too: robust at a larger eps implies robust at every smaller one (same start noise scale)
    assert not np.any(out["robust@0.2"] & ~out["clean_correct"])


def test_restarts_only_remove_robust_examples(embedded_model, embedded_test):
    data = embedded_test.select(n=300)
    # a weak attack (2 steps), where the random start matters
    _, one = _robust("pgd-linf:eps=0.15,steps=2,rel_step=0.5", embedded_model, data)
    _, three = _robust("pgd-linf:eps=0.15,steps=2,rel_step=0.5,restarts=3", embedded_model, data)
    assert not np.any(three["robust@0.15"] & ~one["robust@0.15"])  # the first restart is the same run
    assert three["robust@0.15"].sum() < one["robust@0.15"].sum()


def test_a_restart_gives_an_example_the_same_start_whatever_the_rest_of_its_batch(embedded_model, embedded_test):
    data = embedded_test.select(n=60)
    x, y = torch.as_tensor(data.x), torch.as_tensor(data.y)
    attack = LinfPGD(steps=2, rel_step=0.5, restarts=4)  # weak, so some examples stand until later restarts
    other_head = torch.flip(x[:30], dims=[-1]) * 0.5  # different examples before the shared ones: others stand
    runs = [attack(embedded_model, torch.cat([head, x[30:]]), y, eps=0.15,
                   generator=torch.Generator().manual_seed(0)).adversarial[30:] for head in (x[:30], other_head)]
    assert torch.equal(runs[0], runs[1])


def _within_each_others_interval(a: dict, b: dict) -> bool:
    return a["ci95"][0] <= b["value"] <= a["ci95"][1] and b["ci95"][0] <= a["value"] <= b["ci95"][1]


def test_pgd_agrees_with_foolbox_linf_pgd(embedded_model, embedded_test):
    data = embedded_test.select(n=400)
    ours = build_threat(f"pgd-linf:eps=0.1,steps=20,step={0.1 * 0.01 / 0.3!r}")  # foolbox's default step
    theirs = build_threat("foolbox:LinfPGD:eps=0.1,steps=20")
    g = torch.Generator().manual_seed(0)
    a = ours.summarize(ours.evaluate_shard(embedded_model, data.x, data.y, g))["robust_accuracy"]["0.1"]
    b = theirs.summarize(theirs.evaluate_shard(embedded_model, data.x, data.y, g))["robust_accuracy"]["0.1"]
    assert 0.2 < a["value"] < 0.95  # a regime where the comparison means something
    assert _within_each_others_interval(a, b)


def test_pgd_agrees_with_torchattacks(embedded_model, embedded_test):
    torchattacks = pytest.importorskip("torchattacks")
    data = embedded_test.select(n=400)
    ours = build_threat("pgd-linf:eps=0.1,steps=20,step=0.01")
    a = ours.summarize(ours.evaluate_shard(embedded_model, data.x, data.y, torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    adv = torchattacks.PGD(embedded_model, eps=0.1, alpha=0.01, steps=20, random_start=True)(data.x, data.y)
    with torch.no_grad():
        clean = embedded_model(data.x).argmax(1) == data.y
        robust = clean & (embedded_model(adv).argmax(1) == data.y)
    assert _within_each_others_interval(a["robust_accuracy"]["0.1"], accuracy(robust.numpy()))


def test_default_step_scales_with_the_steps_and_weak_settings_are_refused(embedded_model, embedded_test):
    """The default step is 2.5 * eps / steps, so few steps still cross the ball; the old fixed 1/30 * eps
    made PGD-5 weaker than FGSM. Explicit settings that cannot reach the boundary are refused."""
    assert LinfPGD(steps=5).step_size(0.3) == pytest.approx(0.15)
    assert L2PGD(steps=50).step_size(1.0) == pytest.approx(0.05)
    assert LinfPGD(steps=5, step=0.01).step_size(0.3) == 0.01
    with pytest.raises(RobenchError, match="cannot reach the boundary"):
        build_threat("pgd-linf:eps=0.1,steps=5,rel_step=0.03333333333333333")
    data = embedded_test.select(n=300)
    g = torch.Generator().manual_seed(0)
    robust = {}
    for spec in ("fgsm:eps=0.1", "pgd-linf:eps=0.1,steps=5"):
        threat = build_threat(spec)
        robust[spec] = threat.summarize(threat.evaluate_shard(embedded_model, data.x, data.y, g))["robust_accuracy"]["0.1"]
    assert robust["pgd-linf:eps=0.1,steps=5"]["correct"] < robust["fgsm:eps=0.1"]["correct"]
