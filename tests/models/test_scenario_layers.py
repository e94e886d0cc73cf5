"""STAR's layers (its scenario embedding rows, partitioned norm statistics by hand, the star product)
and the generated linear layer of DFFM and M2M. The contract every model keeps is in
test_model_contract.py."""

from __future__ import annotations

import pytest
import torch

from conftest import make_batch, make_model, one_scenario_batch
from ssimctr.config.models import StarConfig
from ssimctr.errors import UserError
from ssimctr.models.layers import GeneratedLinear, PartitionedNorm, StarLinear
from ssimctr.train.sharing import sharing_loss


def test_star_scenario_embedding_rows_of_other_scenarios_stay_untouched(tiny_feature_map):
    """The input's scenario field: only the batch's scenario row of the shared table trains under mt."""
    torch.manual_seed(0)
    model = make_model("star", tiny_feature_map, 3, hidden=[16, 8], aux_hidden=[4])
    sharing_loss(
        model.towers(one_scenario_batch(tiny_feature_map, 1)), torch.ones(32), torch.full((32,), 1), 0.0
    ).backward()
    offset = model.embedding.offsets[-1]
    grads = model.embedding.table.weight.grad.to_dense()[offset : offset + 3].abs().sum(1)
    assert grads[1] > 0 and grads[0] == 0 and grads[2] == 0


def _set_affine(norm: PartitionedNorm) -> None:
    with torch.no_grad():
        for p in (norm.gamma, norm.beta, norm.gamma_p, norm.beta_p):
            p.copy_(torch.randn_like(p))


def _affine(norm: PartitionedNorm, p: int, normalized: torch.Tensor) -> torch.Tensor:
    return normalized * (norm.gamma * norm.gamma_p[p]) + norm.beta + norm.beta_p[p]


def test_partitioned_norm_training_uses_masked_per_scenario_batch_statistics():
    torch.manual_seed(0)
    norm = PartitionedNorm(4, 3, eps=1e-5)
    _set_affine(norm)
    partition = torch.tensor([0, 1, 0, 1, 0, 2, 1, 0])
    z = torch.randn(8, 4) * torch.tensor([1.0, 5.0, 0.1, 2.0]) + (partition.unsqueeze(1) * 10.0)
    out, every = norm(z, partition), norm.forward_all(z, partition)
    for p in range(2):
        rows = z[partition == p]
        normalized = (rows - rows.mean(0)) / torch.sqrt(rows.var(0, unbiased=False) + 1e-5)
        expected = _affine(norm, p, normalized)
        torch.testing.assert_close(out[partition == p], expected)
        torch.testing.assert_close(every[p][partition == p], expected)
    # partition 1's path on partition 0's rows: partition 1's batch statistics, partition 1's γ/β
    rows1 = z[partition == 1]
    normalized = (z - rows1.mean(0)) / torch.sqrt(rows1.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(every[1], _affine(norm, 1, normalized))
    # partition 2 has one row: its running statistics (still the initial 0 / 1), left unchanged
    torch.testing.assert_close(out[5], _affine(norm, 2, z[5] / (1 + 1e-5) ** 0.5))
    torch.testing.assert_close(norm.running_mean[2], torch.zeros(4))
    torch.testing.assert_close(norm.running_var[2], torch.ones(4))


def test_partitioned_norm_eval_uses_scenario_running_statistics():
    torch.manual_seed(0)
    norm = PartitionedNorm(3, 2, eps=1e-5, momentum=0.5)
    _set_affine(norm)
    mean = torch.zeros(2, 3)
    var = torch.ones(2, 3)
    for _ in range(4):
        partition = torch.tensor([0] * 6 + [1] * 10)
        z = torch.cat([torch.randn(6, 3) * 4.0 + 20.0, torch.randn(10, 3) * 0.5 - 7.0])
        norm(z, partition)
        for p in range(2):
            rows = z[partition == p]
            mean[p] = 0.5 * mean[p] + 0.5 * rows.mean(0)
            var[p] = 0.5 * var[p] + 0.5 * rows.var(0, unbiased=True)
    only_one = torch.randn(5, 3) - 7.0
    norm(only_one, torch.ones(5, dtype=torch.long))  # scenario 0 absent: keeps its running statistics
    mean[1] = 0.5 * mean[1] + 0.5 * only_one.mean(0)
    var[1] = 0.5 * var[1] + 0.5 * only_one.var(0, unbiased=True)
    torch.testing.assert_close(norm.running_mean, mean)
    torch.testing.assert_close(norm.running_var, var)
    assert (mean[0] - mean[1]).abs().min() > 15 and (var[0] / var[1]).min() > 5

    norm.eval()
    partition = torch.tensor([0, 0, 1, 1, 0])
    z = torch.randn(5, 3) * 3.0 + 5.0
    out, every = norm(z, partition), norm.forward_all(z, partition)
    for p in range(2):
        expected = _affine(norm, p, (z - mean[p]) / torch.sqrt(var[p] + 1e-5))
        torch.testing.assert_close(every[p], expected)
        torch.testing.assert_close(out[partition == p], expected[partition == p])
    torch.testing.assert_close(norm.running_mean, mean)  # eval leaves the statistics alone


def test_star_linear_equals_hand_computed_product():
    torch.manual_seed(0)
    layer = StarLinear(5, 4, 3)
    with torch.no_grad():
        layer.partition_weight.copy_(torch.randn(3, 5, 4))
        layer.partition_bias.copy_(torch.randn(3, 4))
    x = torch.randn(7, 5)
    partition = torch.tensor([2, 0, 1, 1, 0, 2, 2])
    out = layer(x, partition)
    every = layer.forward_all(x)
    per_partition = layer.forward_all(torch.randn(3, 7, 5))
    assert out.shape == (7, 4) and every.shape == per_partition.shape == (3, 7, 4)
    for p in range(3):
        w, b = layer.weight * layer.partition_weight[p], layer.bias + layer.partition_bias[p]
        torch.testing.assert_close(every[p], x @ w + b)
    for i in range(7):
        p = partition[i]
        expected = (
            torch.stack([(x[i] * (layer.weight[:, o] * layer.partition_weight[p, :, o])).sum() for o in range(4)])
            + layer.bias
            + layer.partition_bias[p]
        )
        torch.testing.assert_close(out[i], expected)


def test_star_linear_gradient_reaches_only_used_partitions():
    torch.manual_seed(0)
    layer = StarLinear(5, 4, 3)
    layer(torch.randn(6, 5), torch.full((6,), 1)).sum().backward()
    grads = layer.partition_weight.grad.flatten(1).abs().sum(1)
    assert grads[1] > 0 and grads[0] == 0 and grads[2] == 0
    assert layer.partition_bias.grad[[0, 2]].abs().sum() == 0 and layer.weight.grad.abs().sum() > 0


def test_generated_linear_parameters_follow_the_condition():
    torch.manual_seed(0)
    layer = GeneratedLinear(6, 5, 4)
    cond = torch.randn(2, 6)
    weight, bias = layer.generate(cond)
    assert weight.shape == (2, 5, 4) and bias.shape == (2, 1, 4)
    assert (weight[0] - weight[1]).abs().min() > 0 and (bias[0] - bias[1]).abs().min() > 0
    x = torch.randn(7, 5)
    out = layer(x, cond)
    for n in range(2):
        torch.testing.assert_close(out[n], x @ weight[n] + bias[n])
    torch.testing.assert_close(layer(x.expand(2, -1, -1), cond), out)
    out.sum().backward()
    assert layer.hyper.weight.grad.abs().sum() > 0


def test_generated_linear_groups_equal_per_group_maps():
    torch.manual_seed(0)
    layer = GeneratedLinear(6, 5, 4, groups=3)
    cond = torch.randn(2, 6)
    weight, bias = layer.generate(cond)
    assert weight.shape == (2, 3, 5, 4) and bias.shape == (2, 3, 1, 4)
    x = torch.randn(3, 7, 5)
    out = layer(x, cond)
    assert out.shape == (2, 3, 7, 4)
    for n in range(2):
        for g in range(3):
            torch.testing.assert_close(out[n, g], x[g] @ weight[n, g] + bias[n, g])
    torch.testing.assert_close(layer(x.expand(2, -1, -1, -1), cond), out)


def test_star_partitions_start_as_the_shared_layer_by_default():
    torch.manual_seed(0)
    layer = StarLinear(5, 4, 3)
    x = torch.randn(7, 5)
    for out in layer.forward_all(x):
        torch.testing.assert_close(out, x @ layer.weight + layer.bias)


def test_star_partition_weights_can_start_like_the_shared_weights():
    torch.manual_seed(0)
    layer = StarLinear(25, 40, 3, partition_init="like_shared")
    bound = 1.0 / 25**0.5
    w_p = layer.partition_weight.detach()
    assert w_p.abs().max() <= bound and w_p.std().item() == pytest.approx(layer.weight.detach().std().item(), rel=0.1)
    assert not torch.equal(w_p[0], w_p[1]) and torch.equal(layer.partition_bias, torch.zeros(3, 40))
    with pytest.raises(ValueError, match="partition_init"):
        StarLinear(5, 4, 3, partition_init="zeros")


def test_star_model_passes_its_partition_init_to_every_star_layer(tiny_feature_map):
    assert StarConfig().partition_init == "ones"
    model = make_model("star", tiny_feature_map, 3, hidden=[8], partition_init="like_shared")
    assert all((layer.partition_weight != 1).all() for layer in model.layers)
    assert model.towers(make_batch(tiny_feature_map)).shape == (16, 3)
    with pytest.raises(UserError, match="backbone.partition_init=zeros"):
        make_model("star", tiny_feature_map, 3, hidden=[8], partition_init="zeros")
