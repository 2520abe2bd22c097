"""A model's identity (robench.identity): weights and code, so a result is never served for another model."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robench
from robench.identity import code_digest, weights_digest
from robench.store import Store


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


class BitDepth(nn.Module):
    """A parameter-free input transform (bit-depth reduction), the defence of Xu et al."""

    def __init__(self, net: nn.Module, bits: int):
        super().__init__()
        self.net, self.bits = net, bits

    def forward(self, x):
        levels = 2 ** self.bits - 1
        return self.net(torch.round(x * levels) / levels)


class Probabilities(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return F.softmax(self.net(x), dim=1)


class Wrapped(nn.Module):
    """Holds its preprocessing as a plain function attribute."""

    def __init__(self, net: nn.Module, transform):
        super().__init__()
        self.net, self.transform = net, transform

    def forward(self, x):
        return self.net(self.transform(x))


@pytest.mark.parametrize("module", [
    nn.BatchNorm1d(3), nn.BatchNorm2d(4), nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
    nn.Linear(3, 2).to(torch.bfloat16), nn.Linear(3, 2).half()])
def test_digests_of_modules_with_buffers_and_any_dtype(module):
    """BatchNorm's 0-d num_batches_tracked, bf16 and fp16 parameters: both digests work and are stable."""
    assert weights_digest(module) == weights_digest(copy.deepcopy(module))
    assert code_digest(module) == code_digest(copy.deepcopy(module))


def test_weights_digest_sees_every_byte_and_ignores_layout():
    net = nn.Linear(4, 4)
    digest = weights_digest(net)
    with torch.no_grad():
        net.weight.data = net.weight.data.t().contiguous().t()  # same values, non-contiguous
    assert not net.weight.is_contiguous() and weights_digest(net) == digest
    with torch.no_grad():
        net.weight[0, 0] += 1e-6
    assert weights_digest(net) != digest
    batchnorm = nn.BatchNorm1d(3)
    before = weights_digest(batchnorm)
    batchnorm.num_batches_tracked += 1
    assert weights_digest(batchnorm) != before


def test_tied_parameters():
    tied = nn.Sequential(nn.Linear(5, 5, bias=False), nn.Linear(5, 5, bias=False))
    tied[1].weight = tied[0].weight
    untied = copy.deepcopy(tied)
    untied[1].weight = nn.Parameter(tied[0].weight.detach().clone())
    # same values in the state dict, but sharing is structure: the code digest tells them apart
    assert weights_digest(tied) == weights_digest(untied)
    assert code_digest(tied) == code_digest(copy.deepcopy(tied))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible here)")
def test_digests_do_not_depend_on_the_device():
    net = small_net()
    assert weights_digest(net.cuda()) == weights_digest(net.cpu())
    assert code_digest(net.cuda()) == code_digest(net.cpu())


def test_code_digest_tells_apart_what_changes_outputs():
    net = small_net()
    same = small_net()
    assert code_digest(net) == code_digest(same) and weights_digest(net) == weights_digest(same)
    variants = [BitDepth(net, 3), BitDepth(net, 4), Probabilities(net),
                Wrapped(net, lambda x: x.clamp(0, 0.5)), Wrapped(net, lambda x: x.clamp(0, 0.6))]
    digests = {code_digest(m) for m in variants} | {code_digest(net)}
    assert len(digests) == len(variants) + 1
    # the wrappers hold the very same weights under other names; a hook also changes the outputs
    hooked = small_net()
    hooked[1].register_forward_hook(lambda module, args, out: out * 2)
    assert code_digest(hooked) != code_digest(net)
    # a plain tensor attribute is configuration too
    a, b = BitDepth(net, 3), BitDepth(net, 3)
    a.offset, b.offset = torch.zeros(1), torch.ones(1)
    assert code_digest(a) != code_digest(b)


def test_a_record_is_never_served_for_another_model(tmp_path):
    """Same weights, another forward: each gets its own result, under the name given in this run."""
    net = small_net()
    store = Store(tmp_path / "s.sqlite")
    models = {"net": net, "bitdepth-1": BitDepth(net, 1), "probs": Probabilities(net)}
    records = {name: robench.evaluate(model, "pgd-linf:eps=0.3,steps=2", dataset="mnist-5k", n=40,
                                      store=store, model_name=name)[0] for name, model in models.items()}
    assert store.count("records") == 3
    assert len({r.provenance["model_code"] for r in records.values()}) == 3
    # the two wrappers hold the very same state dict (net.*), yet each has its own result
    assert records["bitdepth-1"].provenance["model_sha256"] == records["probs"].provenance["model_sha256"]
    assert [r.model for r in records.values()] == list(models)
    # a cached Record carries the name of this run, in the Record and in its provenance
    again = robench.evaluate(net, "pgd-linf:eps=0.3,steps=2", dataset="mnist-5k", n=40, store=store,
                             model_name="renamed")[0]
    assert store.count("records") == 3
    assert again.model == again.provenance["model"] == "renamed"
    assert again.metrics == records["net"].metrics
    table = robench.render(list(records.values()), "markdown")
    assert all(f"| {name} |" in table for name in models)


def test_evaluate_restores_every_submodule_mode(tmp_path):
    net = small_net().train()
    net[1].eval()  # a submodule the caller froze on purpose
    robench.evaluate(net, "clean", dataset="mnist-5k", n=10, store=tmp_path / "s.sqlite")
    assert net.training and not net[1].training and net[3].training

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    broken = nn.Sequential(Broken()).train()
    with pytest.raises(robench.RobenchError, match="boom"):
        robench.evaluate(broken, "clean", dataset="mnist-5k", n=10, store=tmp_path / "s.sqlite")
    assert broken.training and broken[0].training


def test_the_zoos_batchnorm_resnet_evaluates(data_root, tmp_path):
    """cifar10-resnet20 (BatchNorm, 0-d buffers) goes through clean, PGD and certification."""
    from robench import zoo

    torch.manual_seed(0)
    model = zoo.get("cifar10-resnet20").build().eval()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    records = robench.evaluate(model, ["clean", "pgd-linf:eps=0.03,steps=2", "smoothing:n=20,n0=5,batch=20"],
                               dataset="cifar10", n=4, data_root=data_root, store=tmp_path / "s.sqlite",
                               model_name="resnet20")
    assert [r.n for r in records] == [4, 4, 4]
    assert records[1].metrics["robust_accuracy"]["0.03"]["value"] <= records[0].metrics["clean_accuracy"]["value"]
