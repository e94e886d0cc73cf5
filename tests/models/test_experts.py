"""Expert layers against loops (experts, gates, grouped towers, CGC levels), shared experts training
under every scenario, and HMoE's stop-gradient label-space mixture. The contract every model keeps
is in test_model_contract.py."""

from __future__ import annotations

import pytest
import torch

from conftest import make_batch, make_model, one_scenario_batch
from ssimctr.models.layers import CGCLevel, Experts, Gates, GroupedTowers, mix
from ssimctr.train.sharing import sharing_loss

# case -> (model, small hyper-parameters, prefix of its shared experts)
SHARED_EXPERTS = {
    "mmoe": ("mmoe", dict(num_experts=3, expert=[32, 16], tower=[8]), "experts."),
    "mmoe_bn_bias": ("mmoe", dict(num_experts=3, expert=[32], tower=[8], batch_norm=True, gate_bias=True), "experts."),
    "ple": ("ple", dict(expert=[32, 16], tower=[8]), "levels.0.shared_experts."),
    "ple_2_levels_bn": (
        "ple",
        dict(num_levels=2, expert=[16], tower=[8], batch_norm=True, gate_bias=True),
        "levels.1.shared_experts.",
    ),
    "hmoe": ("hmoe", dict(bottom=[32], num_experts=4, expert=[16], tower=[8]), "experts."),
}


def build(case: str, feature_map, num_towers: int):
    name, params, _ = SHARED_EXPERTS[case]
    torch.manual_seed(0)
    return make_model(name, feature_map, num_towers, **params)


@pytest.mark.parametrize("case", SHARED_EXPERTS)
def test_shared_experts_train_under_every_scenario(case, tiny_feature_map):
    model = build(case, tiny_feature_map, 3)
    for scenario in range(3):
        model.zero_grad(set_to_none=True)
        batch = one_scenario_batch(tiny_feature_map, scenario)
        sharing_loss(model.towers(batch), batch.label, batch.scenario, 0.0).backward()
        shared = [p for name, p in model.named_parameters() if name.startswith(SHARED_EXPERTS[case][2])]
        assert shared and all(p.grad.abs().sum() > 0 for p in shared)


def test_gates_are_softmax():
    torch.manual_seed(0)
    for bias in (False, True):
        gates = Gates(6, num_experts=4, num_gates=3, bias=bias)
        for x in (torch.randn(5, 6), torch.randn(3, 5, 6)):
            g = gates(x)
            assert g.shape == (3, 5, 4) and (g > 0).all()
            torch.testing.assert_close(g.sum(-1), torch.ones(3, 5))
    assert Gates(6, 4, 3, bias=False).linear.bias is None


def test_experts_equal_per_expert_loop():
    torch.manual_seed(0)
    experts = Experts(6, [5, 4], num_experts=6)
    x = torch.randn(7, 6)
    grouped = torch.randn(3, 7, 6)  # input g feeds experts 2g and 2g + 1
    out, out_grouped = experts(x), experts(grouped)
    assert out.shape == out_grouped.shape == (6, 7, 4)
    for j in range(6):
        for inp, result in ((x, out), (grouped[j // 2], out_grouped)):
            h = inp
            for layer in experts.hidden:
                h = torch.relu(h @ layer.weight[j] + layer.bias[j])
            torch.testing.assert_close(result[j], h)


def test_grouped_towers_and_mix_equal_loops():
    torch.manual_seed(0)
    towers = GroupedTowers(4, [3], num_towers=2)
    h = torch.randn(2, 5, 4)
    logits = towers(h)
    assert logits.shape == (5, 2)
    first, out = towers.mlp.hidden[0], towers.mlp.output
    for k in range(2):
        expected = torch.relu(h[k] @ first.weight[k] + first.bias[k]) @ out.weight[k] + out.bias[k]
        torch.testing.assert_close(logits[:, k], expected[:, 0])
    gates, experts = torch.softmax(torch.randn(2, 5, 3), -1), torch.randn(3, 5, 4)
    expected = torch.stack([sum(gates[g, :, j : j + 1] * experts[j] for j in range(3)) for g in range(2)])
    torch.testing.assert_close(mix(gates, experts), expected)


def test_cgc_level_equals_loop():
    torch.manual_seed(0)
    k, s, shared = 3, 2, 1
    level = CGCLevel(6, [4], k, s, shared, gate_bias=True, shared_gate=True)
    x_specific, x_shared = torch.randn(k, 5, 6), torch.randn(5, 6)
    h, h_shared = level(x_specific, x_shared)
    assert h.shape == (k, 5, 4) and h_shared.shape == (5, 4)

    def expert(module, j, x):
        layer = module.hidden[0]
        return torch.relu(x @ layer.weight[j] + layer.bias[j])

    def gate(module, g, x):
        return torch.softmax(x @ module.linear.weight[g] + module.linear.bias[g], -1)

    all_experts = [expert(level.specific_experts, j, x_specific[j // s]) for j in range(k * s)]
    all_experts += [expert(level.shared_experts, j, x_shared) for j in range(shared)]
    for scenario in range(k):
        candidates = [expert(level.specific_experts, scenario * s + j, x_specific[scenario]) for j in range(s)]
        candidates += [expert(level.shared_experts, j, x_shared) for j in range(shared)]
        g = gate(level.gates, scenario, x_specific[scenario])
        torch.testing.assert_close(h[scenario], sum(g[:, j : j + 1] * f for j, f in enumerate(candidates)))
    g = gate(level.shared_gate, 0, x_shared)
    torch.testing.assert_close(h_shared, sum(g[:, j : j + 1] * f for j, f in enumerate(all_experts)))


@pytest.mark.parametrize("scenario", [0, 1, 2])
def test_hmoe_stop_gradient(scenario, tiny_feature_map):
    model = build("hmoe", tiny_feature_map, 3)
    batch = one_scenario_batch(tiny_feature_map, scenario)
    sharing_loss(model.towers(batch), batch.label, batch.scenario, 0.0).backward()
    # without the stop-gradient scenario t's loss would reach every tower k through s_k
    for name in (
        "tower.mlp.hidden.0.weight",
        "tower.mlp.output.weight",
        "gates.linear.weight",
        "mixture.linear.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        for k in range(3):
            if k == scenario:
                assert grad[k].abs().sum() > 0, (name, k)
            else:
                assert (grad[k] == 0).all(), (name, k)


def test_hmoe_mixture_equals_hand_computation(tiny_feature_map):
    model = build("hmoe", tiny_feature_map, 3)
    batch = make_batch(tiny_feature_map, rows=8)
    y = torch.sigmoid(model.towers(batch))
    with torch.no_grad():
        h = model.bottom(model.embedding(batch).flatten(1))
        layer = model.experts.hidden[0]
        experts = [torch.relu(h @ layer.weight[j] + layer.bias[j]) for j in range(4)]
        first, out = model.tower.mlp.hidden[0], model.tower.mlp.output
        scores = []
        for k in range(3):
            g = torch.softmax(h @ model.gates.linear.weight[k], -1)
            h_k = sum(g[:, j : j + 1] * experts[j] for j in range(4))
            scores.append(
                torch.sigmoid(torch.relu(h_k @ first.weight[k] + first.bias[k]) @ out.weight[k] + out.bias[k])
            )
        for t in range(3):
            w = torch.softmax(h @ model.mixture.linear.weight[t], -1)
            expected = sum(w[:, k : k + 1] * scores[k] for k in range(3))[:, 0]
            torch.testing.assert_close(y[:, t].detach(), expected)
