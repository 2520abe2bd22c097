"""The reading list's training recipes (issue 16): distillation and ARD, Linf + L2 adversarial training,
SmoothAdv training; on random tensors and a few batches of the embedded digits."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robench import zoo
from robench.data import DataSplit, load_dataset
from robench.errors import RobenchError
from robench.registry import DEFENSES, MODELS
from robench.training import Recipe, train


def linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


@pytest.fixture(scope="module")
def digits() -> DataSplit:
    """256 embedded training digits."""
    split = load_dataset("mnist-5k", "train")
    return DataSplit(split.info, "train", split.images[:256], split.labels[:256])


@pytest.fixture(scope="module")
def teacher(digits) -> nn.Module:
    model = linear(1)
    train(model, digits, Recipe(epochs=5, batch_size=64, lr=1e-2), progress=False)
    return model


def batch(digits: DataSplit, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    return digits.images[:n].float() / 255, digits.labels[:n]


def losses(name: str, params: dict, digits: DataSplit) -> tuple[float, float]:
    """The recipe's own training loss in its first and in its last of 6 epochs on 64 digits."""
    data = DataSplit(digits.info, "train", digits.images[:64], digits.labels[:64])
    first = train(linear(), data, Recipe(name, params, epochs=1, batch_size=32, lr=1e-2), progress=False)
    last = train(linear(), data, Recipe(name, params, epochs=6, batch_size=32, lr=1e-2), progress=False)
    return first["train_loss"], last["train_loss"]


@pytest.mark.parametrize("name,params", [
    ("distill", {"temperature": 4.0}), ("ard", {"eps": 0.1, "steps": 3, "alpha": 0.5}),
    ("multi-norm-at", {"eps_linf": 0.1, "eps_l2": 1.0, "steps": 3, "mode": "max"}),
    ("multi-norm-at", {"eps_linf": 0.1, "eps_l2": 1.0, "steps": 3, "mode": "avg"}),
    ("smoothadv-at", {"sigma": 0.25, "eps": 0.5, "m": 2, "steps": 2})])
def test_each_recipe_lowers_its_own_loss(name, params, digits, teacher):
    if name in ("distill", "ard"):
        params = {**params, "teacher": teacher}
    first, last = losses(name, params, digits)
    assert last < 0.8 * first


def test_distillation_never_trains_the_teacher_and_matches_it(digits, teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = linear(2)
    train(student, digits, Recipe("ard", {"teacher": teacher, "eps": 0.05, "steps": 2, "temperature": 4.0}, epochs=4, batch_size=64,
                                  lr=1e-2), progress=False)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert not any(p.requires_grad for p in teacher.parameters())
    x, _ = batch(digits, 256)
    agree = (student(x).argmax(1) == teacher(x).argmax(1)).float().mean()
    assert agree > 0.8


def test_distillation_with_alpha_0_is_cross_entropy_training_step_for_step(digits, teacher):
    plain, distilled = linear(), linear()
    train(plain, digits, Recipe(epochs=1, batch_size=64), progress=False)
    train(distilled, digits, Recipe("distill", {"teacher": teacher, "alpha": 0.0}, epochs=1, batch_size=64),
          progress=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), distilled.state_dict().values()))


def test_ard_inputs_lie_in_the_eps_ball_and_raise_the_divergence(digits, teacher, generator):
    x, y = batch(digits)
    student = linear(3).train()
    defense = DEFENSES.create("ard", teacher=teacher, eps=0.1, steps=5)
    adv, same_y = defense.transform(student, x, y, generator)
    assert same_y is y and student.training
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    target = F.log_softmax(teacher(x), 1)
    kl = lambda inputs: F.kl_div(F.log_softmax(student(inputs), 1), target, reduction="batchmean", log_target=True)
    corner = (x + 0.1 * torch.randn(x.shape, generator=generator).sign()).clamp(0, 1)  # a random corner of the ball
    assert kl(adv) > kl(corner) + 0.2 and kl(adv) > kl(x) + 0.2
    warm = DEFENSES.create("ard", teacher=teacher, eps=0.3, warmup=2)
    warm.on_epoch(0, 4, 1)
    assert warm.current_eps == pytest.approx(0.1)


def test_a_zoo_teacher_trains_through_the_zoo_and_its_identity_keys_the_student(monkeypatch):
    monkeypatch.setitem(MODELS._entries, "tiny-teacher", zoo.ModelEntry("tiny-teacher", "mnist-5k", "mlp",
                                                                        Recipe(epochs=1, batch_size=256)))
    student = zoo.ModelEntry("tiny-student", "mnist-5k", "mlp",
                             Recipe("distill", {"teacher": "tiny-teacher"}, epochs=1, batch_size=256))
    key = student.recipe_hash
    student.load(progress=False)
    assert zoo.get("tiny-teacher").is_cached() and student.is_cached()
    retrained = dataclasses.replace(zoo.get("tiny-teacher"), recipe=Recipe(epochs=2, batch_size=256))
    monkeypatch.setitem(MODELS._entries, "tiny-teacher", retrained)
    assert student.recipe_hash != key and not student.is_cached()
    assert zoo.get("mnist-ard").recipe_hash != zoo.get("mnist-distilled").recipe_hash


@pytest.mark.parametrize("name,params,match", [
    ("distill", {"teacher": "no-such-model"}, "not a zoo model"),
    ("distill", {"teacher": "mnist-pgd-at", "temperature": 0}, "temperature > 0"),
    ("ard", {"teacher": "mnist-pgd-at", "eps": -0.1}, "0 <= eps <= 1"),
    ("multi-norm-at", {"eps_l2": -1.0}, "eps_l2 >= 0"),
    ("multi-norm-at", {"mode": "sum"}, "mode one of avg, max"),
    ("smoothadv-at", {"sigma": 0.0}, "sigma > 0"),
    ("smoothadv-at", {"eps": -0.5}, "eps >= 0")])
def test_bad_parameters_are_one_line_errors(name, params, match):
    with pytest.raises(RobenchError, match=match) as info:
        DEFENSES.create(name, **params)
    assert "\n" not in str(info.value)


def test_multi_norm_examples_lie_in_their_own_balls_and_max_takes_the_worse(digits):
    x, y = batch(digits)
    model = linear().train()
    out = {}
    for mode in ("avg", "max"):  # the same random starts for both modes
        defense = DEFENSES.create("multi-norm-at", eps_linf=0.1, eps_l2=1.0, steps=4, mode=mode)
        out[mode] = defense.transform(model, x, y, torch.Generator().manual_seed(1))
    assert model.training
    both, both_y = out["avg"]
    assert len(both) == 2 * len(x) and torch.equal(both_y, torch.cat([y, y])) and 0 <= both.min() <= both.max() <= 1
    linf, l2 = (both[:len(x)] - x).flatten(1), (both[len(x):] - x).flatten(1)
    assert linf.abs().amax(1).max() <= 0.1 + 1e-6 and l2.norm(dim=1).max() <= 1.0 + 1e-4
    assert l2.abs().amax(1).max() > 0.1  # the L2 examples are not Linf ones
    ce = lambda inputs: F.cross_entropy(model(inputs), y, reduction="none")
    worse, worse_y = out["max"]
    assert torch.equal(worse_y, y)
    assert torch.equal(worse, torch.where((ce(both[len(x):]) > ce(both[:len(x)])).view(-1, 1, 1, 1),
                                          both[len(x):], both[:len(x)]))
    assert (ce(worse) >= torch.maximum(ce(both[:len(x)]), ce(both[len(x):]))).all()
    assert ce(worse).mean() > ce(x).mean() + 0.1


def test_smoothadv_trains_on_noisy_copies_of_examples_in_the_l2_ball(digits, generator):
    x, y = batch(digits, 16)
    model = linear().train()
    defense = DEFENSES.create("smoothadv-at", sigma=1e-4, eps=0.5, m=3, steps=2)
    out, out_y = defense.transform(model, x, y, generator)
    assert out.shape == (48, *x.shape[1:]) and torch.equal(out_y, y.repeat(3)) and model.training
    assert ((out - x.repeat(3, 1, 1, 1)).flatten(1).norm(dim=1) <= 0.5 + 0.01).all()
    assert F.cross_entropy(model(out), out_y) > F.cross_entropy(model(x), y) + 0.1
    warm = DEFENSES.create("smoothadv-at", sigma=0.25, eps=0.5, m=2, warmup=1)
    warm.on_epoch(0, 4, 1)
    assert warm.current_eps == 0.25


def test_smoothadv_trains_on_the_noise_it_attacked_with(digits, generator, monkeypatch):
    x, y = batch(digits, 8)
    defense = DEFENSES.create("smoothadv-at", sigma=0.25, eps=0.5, m=2, steps=1)
    drawn = []
    noise = defense.attack.noise
    monkeypatch.setattr(defense.attack, "noise", lambda *args: drawn.append(noise(*args)) or drawn[-1])
    defense.transform(linear().train(), x, y, generator)
    assert len(drawn) == 2 and torch.equal(drawn[0], drawn[1])  # the attack's draws, then training's
