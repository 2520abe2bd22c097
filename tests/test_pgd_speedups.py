"""PGD's speed options: channels_last gives the same attack as the contiguous layout, early_stop the same
robust accuracy on a standard model, and bf16 runs and stays inside the threat model."""
import pytest
import torch
from torch import nn

from robench import nets
from robench.attacks.pgd import L2PGD, LinfPGD
from robench.errors import RobenchError


def _attack(cls, memory_format="auto", **kw):
    attack = cls(**kw)
    attack.memory_format = memory_format
    return attack


def _run(attack, model, x, y, eps, seed=0):
    return attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cls, eps", [(LinfPGD, 0.1), (L2PGD, 1.5)])
def test_channels_last_gives_the_same_attack_as_contiguous(cls, eps, embedded_model, embedded_test):
    data = embedded_test.select(n=100)
    a = _run(_attack(cls, "contiguous", steps=5, restarts=2), embedded_model, data.x, data.y, eps)
    b = _run(_attack(cls, "channels_last", steps=5, restarts=2), embedded_model, data.x, data.y, eps)
    assert torch.equal(a.success, b.success)  # the same robust accuracy, example by example
    if cls is L2PGD:
        assert torch.allclose(a.adversarial, b.adversarial, atol=1e-3)
    else:  # a sign step amplifies rounding only where the gradient is ~0: a few pixels differ by a step
        assert float((a.adversarial - b.adversarial).abs().gt(1e-5).float().mean()) < 1e-3


def test_channels_last_on_rgb_restores_the_model_and_the_layout(generator):
    torch.manual_seed(0)
    model = nets.create("small-cnn", channels=3, size=32, classes=10, mean=(0.5,) * 3, std=(0.25,) * 3).eval()
    before = {n: (t.data_ptr(), t.stride()) for n, t in model.state_dict().items()}
    x = torch.rand(16, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (16,), generator=generator)
    # a step of 0.2 * eps: the default 2.5 / steps = 0.5 * eps magnifies the layouts' rounding to ~4e-3
    a = _run(_attack(L2PGD, "contiguous", steps=5, rel_step=0.2), model, x, y, 1.0)
    b = _run(_attack(L2PGD, "channels_last", steps=5, rel_step=0.2), model, x, y, 1.0)
    assert torch.allclose(a.adversarial, b.adversarial, atol=1e-3) and torch.equal(a.success, b.success)
    assert b.adversarial.is_contiguous()  # handed back in the layout the inputs came in
    assert {n: (t.data_ptr(), t.stride()) for n, t in model.state_dict().items()} == before
    x_cl = x.contiguous(memory_format=torch.channels_last)
    c = _run(_attack(L2PGD, "channels_last", steps=5, rel_step=0.2), model, x_cl, y, 1.0)
    assert c.adversarial.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(c.adversarial, b.adversarial, atol=1e-5)


class _ViewNet(nn.Module):
    """A model that flattens with .view(), which fails on channels_last activations."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8 * 24 * 24, 10)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.view(h.size(0), -1))


def test_auto_layout_falls_back_for_models_that_need_contiguous_inputs(generator):
    torch.manual_seed(0)
    model, x = _ViewNet().eval(), torch.rand(8, 1, 28, 28, generator=generator)
    y = torch.zeros(8, dtype=torch.long)
    attack = _attack(LinfPGD, steps=3)
    assert not attack._use_channels_last(model, x)
    for arch, pays in [("small-cnn", True), ("madry-cnn", True), ("mlp", False)]:
        net = nets.create(arch, channels=1, size=28, classes=10, mean=(0.5,), std=(0.5,)).eval()
        assert attack._use_channels_last(net, x) == pays
    auto = _run(attack, model, x, y, 0.1)
    assert torch.equal(auto.adversarial, _run(_attack(LinfPGD, "contiguous", steps=3), model, x, y, 0.1).adversarial)
    with pytest.raises(RobenchError, match="memory_format must be one of"):
        _run(_attack(LinfPGD, "nhwc", steps=1), model, x, y, 0.1)


@pytest.mark.parametrize("restarts", [1, 2])
def test_early_stop_gives_the_same_robust_accuracy(restarts, embedded_model, embedded_test):
    data = embedded_test.select(n=200)
    with torch.no_grad():
        clean = embedded_model(data.x).argmax(1) == data.y
    full = _run(LinfPGD(steps=10, rel_step=0.2, restarts=restarts), embedded_model, data.x, data.y, 0.15)
    early = _run(LinfPGD(steps=10, rel_step=0.2, restarts=restarts, early_stop=True),
                 embedded_model, data.x, data.y, 0.15)
    robust_full, robust_early = clean & ~full.success, clean & ~early.success
    assert 0.05 < float(robust_full.float().mean()) < 0.9  # a regime where the comparison means something
    assert torch.equal(robust_early, robust_full)
    assert float((early.adversarial - data.x).abs().max()) <= 0.15 + 1e-6


@pytest.mark.parametrize("cls, eps, order", [(LinfPGD, 0.1, float("inf")), (L2PGD, 1.5, 2)])
def test_bf16_runs_and_stays_in_the_ball(cls, eps, order, embedded_model, embedded_test):
    data = embedded_test.select(n=100)
    half = _run(cls(steps=5, precision="bf16"), embedded_model, data.x, data.y, eps)
    full = _run(cls(steps=5), embedded_model, data.x, data.y, eps)
    norms = torch.linalg.vector_norm((half.adversarial - data.x).flatten(1), ord=order, dim=1)
    assert float(norms.max()) <= eps * (1 + 1e-5) + 1e-6
    assert float(half.adversarial.min()) >= 0 and float(half.adversarial.max()) <= 1
    assert half.adversarial.dtype == torch.float32
    assert abs(float(half.success.float().mean()) - float(full.success.float().mean())) < 0.05
