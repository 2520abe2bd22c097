"""The zoo's special layers do what their papers say, and each reading-list architecture trains."""
import pytest
import torch
import torch.nn.functional as F

from robench import nets


def test_k_winners_keep_exactly_k_activations_and_pass_gradients_through_them_only():
    layer = nets.KWinners(5)
    x = torch.randn(4, 3, 4, 4, requires_grad=True)
    out = layer(x)
    assert out.shape == x.shape and ((out != 0).flatten(1).sum(1) == 5).all()
    winners = x.flatten(1).topk(5, dim=1).indices
    assert torch.equal(out.flatten(1).gather(1, winners), x.flatten(1).gather(1, winners))
    out.sum().backward()
    assert ((x.grad != 0).flatten(1).sum(1) == 5).all()


@pytest.mark.parametrize("layer", [torch.nn.Linear(40, 8), torch.nn.Conv2d(4, 6, 3)])
def test_sparse_weights_keep_their_density_through_training(layer):
    torch.manual_seed(0)
    sparse = nets.SparseWeights(layer, 0.25)
    per_unit = sparse.mask.flatten(1).sum(1)
    assert (per_unit == round(0.25 * layer.weight[0].numel())).all()
    x = torch.randn(5, 40) if isinstance(layer, torch.nn.Linear) else torch.randn(5, 4, 7, 7)
    optimizer = torch.optim.SGD(sparse.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        sparse(x).square().sum().backward()
        assert (layer.weight.grad[sparse.mask == 0] == 0).all()  # no gradient reaches a pruned weight
        optimizer.step()
    assert (layer.weight[sparse.mask == 0] == 0).all()


@pytest.mark.parametrize("arch", ["small-cnn-bn", "sparse-cnn"])
def test_the_architecture_trains_a_step_and_its_loss_falls(arch, embedded_test):
    torch.manual_seed(0)
    model = nets.create(arch, channels=1, size=28, classes=10, mean=(0.1307,), std=(0.3081,))
    data = embedded_test.select(n=64)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    before = F.cross_entropy(model(data.x), data.y).item()
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(data.x), data.y).backward()
        optimizer.step()
    assert F.cross_entropy(model(data.x), data.y).item() < before
    model.eval()  # eval mode (BatchNorm's running statistics): one example's output does not depend on the batch
    assert torch.allclose(model(data.x[:1]), model(data.x)[:1], atol=1e-5)
