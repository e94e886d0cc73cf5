"""FM, cross networks v1 / v2 and the K-tower MLP against hand-written loops of their equations;
DCN-V2's structure and rank options."""

from __future__ import annotations

import pytest
import torch

from conftest import make_model
from ssimctr.errors import UserError
from ssimctr.models.layers import CrossNetV1, CrossNetV2, Experts, FactorizationMachine, TowerHead

K, B, H, L = 3, 5, 6, 3


def _randomize_biases(net: torch.nn.Module) -> None:
    with torch.no_grad():
        net.biases.normal_()


def test_fm_equals_pairwise_inner_products():
    torch.manual_seed(0)
    fields = torch.randn(4, 5, 3)
    expected = torch.stack(
        [sum((fields[b, i] * fields[b, j]).sum() for i in range(5) for j in range(i + 1, 5)) for b in range(4)]
    ).unsqueeze(1)
    out = FactorizationMachine()(fields)
    assert out.shape == (4, 1)
    torch.testing.assert_close(out, expected)
    assert list(FactorizationMachine().parameters()) == []


def test_cross_v1_equals_loop():
    torch.manual_seed(0)
    net = CrossNetV1(H, L, num_towers=K)
    _randomize_biases(net)
    x0 = torch.randn(B, H)
    out = net(x0)
    assert out.shape == (K, B, H)
    for k in range(K):
        for b in range(B):
            x = x0[b]
            for layer in range(L):
                w, bias = net.weights[layer, k], net.biases[layer, k]
                x = x0[b] * torch.dot(x, w) + bias + x
            torch.testing.assert_close(out[k, b], x)


def test_cross_v2_full_rank_equals_loop():
    torch.manual_seed(0)
    net = CrossNetV2(H, L, num_towers=K)
    _randomize_biases(net)
    x0 = torch.randn(B, H)
    out = net(x0)
    for k in range(K):
        for b in range(B):
            x = x0[b]
            for layer in range(L):
                w = net.weights[layer, k].T  # stored as W_lᵀ
                x = x0[b] * (w @ x + net.biases[layer, k, 0]) + x
            torch.testing.assert_close(out[k, b], x)


def test_cross_v2_low_rank_equals_loop_and_shapes():
    torch.manual_seed(0)
    rank = 2
    net = CrossNetV2(H, L, num_towers=K, rank=rank)
    _randomize_biases(net)
    assert net.v.shape == (L, K, H, rank) and net.u.shape == (L, K, rank, H)
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in CrossNetV2(H, L, K).parameters())
    x0 = torch.randn(B, H)
    out = net(x0)
    assert out.shape == (K, B, H)
    for k in range(K):
        for b in range(B):
            x = x0[b]
            for layer in range(L):
                w = net.u[layer, k].T @ net.v[layer, k].T  # W = U Vᵀ, u stored as Uᵀ
                assert torch.linalg.matrix_rank(w) == rank
                x = x0[b] * (w @ x + net.biases[layer, k, 0]) + x
            torch.testing.assert_close(out[k, b], x)


def test_cross_nets_accept_per_tower_input():
    torch.manual_seed(0)
    x0 = torch.randn(B, H)
    for net in (CrossNetV1(H, L, K), CrossNetV2(H, L, K), CrossNetV2(H, L, K, rank=2)):
        torch.testing.assert_close(net(x0), net(x0.expand(K, B, H).clone()))


def test_tower_mlp_equals_loop_and_head():
    torch.manual_seed(0)
    mlp = Experts(H, [4, 3], K)
    x = torch.randn(B, H)
    out = mlp(x)
    assert out.shape == (K, B, 3) and mlp.output_dim == 3
    torch.testing.assert_close(out, mlp(x.expand(K, B, H).clone()))
    for k in range(K):
        h = x
        for layer in mlp.hidden:
            h = torch.relu(h @ layer.weight[k] + layer.bias[k])
        torch.testing.assert_close(out[k], h)
    head = TowerHead(3, K)
    logits = head(out)
    assert logits.shape == (B, K)
    torch.testing.assert_close(logits[:, 1], out[1] @ head.weight[1, :, 0])


def test_tower_mlp_batch_norm_and_empty_hidden():
    torch.manual_seed(0)
    x = torch.randn(8, H)
    assert Experts(H, [4], K, dropout=0.1, batch_norm=True)(x).shape == (K, 8, 4)
    torch.testing.assert_close(Experts(H, [], K)(x), x.expand(K, 8, H))


def test_tower_head_reads_parts_as_concatenation():
    torch.manual_seed(0)
    head = TowerHead(5, K)
    a, b = torch.randn(K, B, 2), torch.randn(K, B, 3)
    torch.testing.assert_close(head(a, b), head(torch.cat([a, b], dim=2)))


def test_dcnv2_rejects_bad_options(tiny_feature_map):
    with pytest.raises(UserError, match="structure"):
        make_model("dcnv2", tiny_feature_map, 3, embedding_dim=8, hidden=[32, 16], structure="diagonal")
    with pytest.raises(UserError, match="rank"):
        make_model("dcnv2", tiny_feature_map, 3, embedding_dim=8, hidden=[32, 16], rank=0)
