"""Bit-flip attacks: int8 bit arithmetic, quantisation, the progressive bit search, the random baseline,
the threats and the clustering regulariser (on the embedded digits: fast and offline)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robench.attacks.bitflip import BitFlipAttack, RandomFlipAttack
from robench.attacks.fx_evaluator import FxEvaluator
from robench.attacks.quantization import QuantizedModel, from_bits, to_bits
from robench.inference import predict
from robench.threats import build_threat

SEED = 3


@pytest.fixture(scope="module")
def eval_slice(embedded_test):
    return embedded_test.select(n=200)


@pytest.fixture(scope="module")
def pool():
    from robench.data import load_dataset

    return load_dataset("mnist-5k", "train").images


@pytest.fixture(scope="module")
def attack_run(embedded_model, eval_slice, pool):
    before = ({k: v.clone() for k, v in embedded_model.state_dict().items()},
              [p.requires_grad for p in embedded_model.parameters()], embedded_model.training)
    attack = BitFlipAttack(k=10, batch=64)
    result = attack(embedded_model, eval_slice.x, eval_slice.y, flips=16, target=0.0, pool=pool,
                    generator=torch.Generator().manual_seed(SEED))
    return attack, result, before


def test_bits_round_trip_all_256_values():
    codes = torch.arange(-128, 128, dtype=torch.int32).to(torch.int8)
    bits = to_bits(codes)
    assert bits.shape == (256, 8) and set(bits.unique().tolist()) == {0, 1}
    assert torch.equal(from_bits(bits), codes)
    assert to_bits(torch.tensor([-128], dtype=torch.int8)).tolist() == [[0, 0, 0, 0, 0, 0, 0, 1]]
    assert to_bits(torch.tensor([-1], dtype=torch.int8)).tolist() == [[1] * 8]
    assert to_bits(torch.tensor([5], dtype=torch.int8)).tolist() == [[1, 0, 1, 0, 0, 0, 0, 0]]


def test_quantisation_is_symmetric_8_bit_and_leaves_the_model_alone(embedded_model, eval_slice):
    before = {k: v.clone() for k, v in embedded_model.state_dict().items()}
    q = QuantizedModel(embedded_model)
    assert [type(layer.module) for layer in q.layers] == [nn.Conv2d, nn.Conv2d, nn.Linear, nn.Linear]
    for layer, (name, original) in zip(q.layers, [(n, m) for n, m in embedded_model.named_modules()
                                                  if isinstance(m, (nn.Conv2d, nn.Linear))]):
        assert layer.name == name
        assert layer.codes.dtype == torch.int8 and int(layer.codes.abs().max()) == 127
        assert layer.step == pytest.approx(float(original.weight.detach().abs().max()) / 127)
        assert torch.equal(layer.weight.flatten(), layer.codes.float() * layer.step)
        assert (layer.weight - original.weight).abs().max() <= layer.step / 2 + 1e-7
    for k, v in embedded_model.state_dict().items():
        assert torch.equal(v, before[k])
    clean = (predict(embedded_model, eval_slice.x).argmax(1) == eval_slice.y).float().mean()
    quantized = (predict(q.model, eval_slice.x).argmax(1) == eval_slice.y).float().mean()
    assert abs(float(clean - quantized)) <= 0.01


def test_flip_toggles_exactly_the_given_bits_and_is_its_own_inverse(embedded_model):
    q = QuantizedModel(embedded_model)
    layer = q.layers[2]
    codes, weight = layer.codes.clone(), layer.weight.clone()
    indices, bits = torch.tensor([5, 5, 700]), torch.tensor([7, 0, 3])
    layer.flip(indices, bits)
    changed = (layer.codes != codes).nonzero().flatten().tolist()
    assert changed == [5, 700]
    new, old = layer.codes.view(torch.uint8), codes.view(torch.uint8)
    assert int(new[5]) == int(old[5]) ^ 0b10000001 and int(new[700]) == int(old[700]) ^ 0b1000
    assert torch.equal(layer.weight.flatten(), layer.codes.float() * layer.step)
    layer.flip(indices, bits)
    assert torch.equal(layer.codes, codes) and torch.equal(layer.weight, weight)


def _attack_batch(pool: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    idx = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:size]
    return pool[idx].float() / 255


def test_each_step_flips_the_reported_bits_and_raises_the_loss(embedded_model, pool, attack_run):
    attack, result, _ = attack_run
    assert len(result.trace) >= 4 and result.flips == sum(len(s.indices) for s in result.trace)
    replay = QuantizedModel(embedded_model)
    layers = {layer.name: layer for layer in replay.layers}
    x = _attack_batch(pool, attack.batch, SEED)
    labels = predict(replay.model, x).argmax(1)
    loss = float(attack.objective(predict(replay.model, x), labels))
    for step in result.trace:
        layer = layers[step.layer]
        old = layer.codes.clone()
        layer.flip(torch.tensor(step.indices), torch.tensor(step.bits))
        diff = (old.view(torch.uint8) ^ layer.codes.view(torch.uint8))
        assert set(diff.nonzero().flatten().tolist()) == set(step.indices)
        expected = torch.zeros_like(diff)
        for i, b in zip(step.indices, step.bits):
            expected[i] |= 1 << b
        assert torch.equal(diff, expected)
        new = float(attack.objective(predict(replay.model, x), labels))
        assert new > loss and new == pytest.approx(step.loss, rel=1e-5)
        loss = new
    for mine, theirs in zip(replay.layers, result.quantized.layers):  # the returned model holds just these flips
        assert torch.equal(mine.codes, theirs.codes) and torch.equal(mine.weight, theirs.weight)


def test_trace_accuracy_matches_a_fresh_evaluation(attack_run, eval_slice):
    _, result, _ = attack_run
    fresh = predict(result.model, eval_slice.x).argmax(1) == eval_slice.y
    assert result.trace[-1].correct == int(fresh.sum())
    assert torch.equal(result.final_correct, fresh)
    assert result.trace[-1].correct < int(result.quantized_correct.sum())


def test_input_model_is_unchanged(embedded_model, attack_run):
    _, result, (state, grad_flags, training) = attack_run
    for k, v in embedded_model.state_dict().items():
        assert torch.equal(v, state[k])
    assert [p.requires_grad for p in embedded_model.parameters()] == grad_flags
    assert embedded_model.training == training and result.model is not embedded_model


def test_same_seed_same_trace(embedded_model, eval_slice, pool, attack_run):
    attack, result, _ = attack_run
    again = attack(embedded_model, eval_slice.x, eval_slice.y, flips=16, target=0.0, pool=pool,
                   generator=torch.Generator().manual_seed(SEED))
    strip = [(s.layer, s.indices, s.bits, s.loss, s.correct, s.flips) for s in result.trace]
    assert strip == [(s.layer, s.indices, s.bits, s.loss, s.correct, s.flips) for s in again.trace]


def test_all_weights_cross_entropy_search_stops_at_the_target(embedded_model, eval_slice, pool):
    q_acc = float((predict(QuantizedModel(embedded_model).model, eval_slice.x).argmax(1) == eval_slice.y)
                  .float().mean())
    target = q_acc - 0.05
    result = BitFlipAttack(k="all", batch=64, loss="ce")(embedded_model, eval_slice.x, eval_slice.y,
                                                             flips=30, target=target, pool=pool)
    accuracies = [s.correct / len(eval_slice) for s in result.trace]
    assert accuracies[-1] <= target and all(a > target for a in accuracies[:-1])
    losses = [s.loss for s in result.trace]
    assert losses == sorted(losses) and len(set(losses)) == len(losses)


def test_random_flips_one_bit_each_and_deterministic(embedded_model, eval_slice):
    run = [RandomFlipAttack()(embedded_model, eval_slice.x, eval_slice.y, flips=20,
                              generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert [len(s.indices) for s in run[0].trace] == [1] * 20 and run[0].trace[-1].flips == 20
    key = [[(s.layer, s.indices, s.bits, s.correct) for s in r.trace] for r in run]
    assert key[0] == key[1] and key[0] != key[2]
    assert run[0].quantized.hamming(QuantizedModel(embedded_model)) == 20  # never the same bit twice


def test_random_flips_are_uniform_over_all_bits(embedded_model):
    """Layers are hit in proportion to their size (chi-square over 4000 draws), bits 0-7 evenly."""
    from scipy import stats

    quantized = QuantizedModel(embedded_model)
    draws = RandomFlipAttack().search(quantized, torch.Generator().manual_seed(0), None)
    picks = [next(draws) for _ in range(4000)]
    sizes = [layer.codes.numel() for layer in quantized.layers]
    per_layer = [sum(p.layer == i for p in picks) for i in range(len(sizes))]
    expected = [4000 * s / sum(sizes) for s in sizes]
    assert stats.chisquare(per_layer, expected).pvalue > 1e-3
    per_bit = [sum(int(p.bits) == b for p in picks) for b in range(8)]
    assert stats.chisquare(per_bit).pvalue > 1e-3


def test_evaluator_recomputes_only_what_changed_exactly(embedded_model, eval_slice):
    q = QuantizedModel(embedded_model)
    evaluator = FxEvaluator(q, eval_slice.x)
    assert evaluator.graph is not None
    evaluator.full()
    g = torch.Generator().manual_seed(0)
    for i in (3, 0, 2, 1):
        layer = q.layers[i]
        layer.flip(torch.randint(layer.codes.numel(), (2,), generator=g), torch.tensor([7, 6]))
        assert torch.equal(evaluator.after(i), predict(q.model, eval_slice.x))


class _Branchy(nn.Module):
    """A model torch.fx cannot trace (control flow on values)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


def test_untraceable_user_model_is_attacked_whole(eval_slice, pool):
    torch.manual_seed(0)
    model = _Branchy()
    result = BitFlipAttack(k=5, batch=32)(model, eval_slice.x, eval_slice.y, flips=3, pool=pool)
    assert result.flips == 3
    assert result.trace[-1].correct == int((predict(result.model, eval_slice.x).argmax(1) == eval_slice.y).sum())


def test_threats_from_specs(embedded_model, eval_slice, generator):
    threat = build_threat("bitflip:flips=4,k=all,batch=64,dataset=mnist-5k,target=0.5")
    assert threat.shard_size is None and threat.attack.k == "all"
    metrics = threat.summarize(threat.evaluate_shard(embedded_model, eval_slice.x, eval_slice.y, generator))
    assert metrics["flips"] == len(metrics["flipped"]) <= 4
    assert [p["flips"] for p in metrics["accuracy_per_flip"]] == list(range(1, metrics["flips"] + 1))
    assert metrics["final_accuracy"]["value"] == metrics["accuracy_per_flip"][-1]["accuracy"]
    assert metrics["hamming_distance"] <= metrics["flips"]
    assert metrics["batches"] == 5 and len(metrics["flips_to_target_per_batch"]) == 5
    random = build_threat("bitflip-random:flips=5,seeds=3")
    out = random.evaluate_shard(embedded_model, eval_slice.x, eval_slice.y, torch.Generator().manual_seed(0))
    summary = random.summarize(out)
    assert out["correct"].shape == (3, 5) and summary["seeds"] == 3
    assert summary["median_accuracy"] == sorted(summary["accuracy_per_seed"])[1]


def test_flips_to_target_are_reported_over_several_attack_batches(embedded_model, eval_slice, generator):
    """The flips needed depend on the attack batch: the threat runs `seeds` batches, each its own part with
    its own random stream, and reports the median run with the range; parts and whole agree."""
    threat = build_threat("bitflip:flips=12,batch=32,dataset=mnist-5k,target=0.85,seeds=3")
    assert list(threat.parts()) == ["batch=0", "batch=1", "batch=2"]
    whole = threat.evaluate_shard(embedded_model, eval_slice.x, eval_slice.y, generator)
    pieces = {}
    for part in threat.parts().values():
        pieces.update(part.evaluate_shard(embedded_model, eval_slice.x, eval_slice.y, generator))
    assert set(pieces) == set(whole)
    assert all(np.array_equal(pieces[k], whole[k]) for k in whole if not k.startswith("step_seconds"))
    m = threat.summarize(whole)
    per_batch = m["flips_to_target_per_batch"]
    assert len(per_batch) == 3 and len({tuple(whole[f"flip_index@{b}"]) for b in range(3)}) > 1  # batches differ
    ranked = sorted(per_batch, key=lambda v: (v is None, v or 0))
    assert m["flips_to_target"] == ranked[1]
    reached = [v for v in per_batch if v is not None]
    assert m["flips_to_target_range"][0] == min(reached)
    assert m["flips_to_target_range"][1] == (max(reached) if len(reached) == 3 else None)
    assert m["accuracy_per_flip"][-1]["accuracy"] == m["final_accuracy"]["value"]


def test_threat_checks_the_training_images_match(embedded_model, generator):
    from robench.errors import RobenchError

    threat = build_threat("bitflip:flips=1,dataset=mnist-5k")
    with pytest.raises(RobenchError, match="dataset="):
        threat.evaluate_shard(embedded_model, torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.int64),
                              generator)


def test_margin_loss():
    from robench.attacks.bitflip import MARGIN_CAP, margin_loss

    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 50.0]])
    assert float(margin_loss(logits, torch.tensor([0, 0]))) == pytest.approx((-2.0 + MARGIN_CAP) / 2)


def test_piecewise_clustering_penalty():
    from robench.registry import DEFENSES

    defense = DEFENSES.create("piecewise-clustering", lam=0.5)
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0], [1.0, -2.0]]))
        model[2].weight.copy_(torch.tensor([[3.0, 3.0]]))
    assert float(defense.penalty(model).detach()) == 0.0
    with torch.no_grad():
        model[0].weight[0, 0] = 3.0  # positives 3, 1: mean 2, squared distances 1 + 1
    penalty = defense.penalty(model)
    assert float(penalty) == pytest.approx(0.5 * 2.0)
    penalty.backward()
    assert model[0].weight.grad[0, 0] > 0


def test_bitflip_figure(tmp_path):
    from robench.plots import bitflip_curve

    path = bitflip_curve([(1, 0.8), (2, 0.4), (3, 0.1)], [[(1, 0.99), (2, 0.98), (3, 0.98)]] * 3,
                         tmp_path / "bf.png", start=0.99, target=0.11)
    assert path.is_file() and path.stat().st_size > 1000
