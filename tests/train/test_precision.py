"""trainer.precision=bf16: the training forward under torch.autocast(bfloat16), float32 elsewhere."""

from __future__ import annotations

import pytest
import torch

from conftest import make_batch, make_model, train_briefly
from ssimctr.config.schema import TrainerConfig
from ssimctr.errors import UserError
from ssimctr.train.loop import in_precision
from ssimctr.train.sharing import sharing_loss


def recording_loss(seen: list[torch.dtype]):
    def loss_fn(model, batch):
        logits = model.towers(batch)
        seen.append(logits.dtype)
        return sharing_loss(logits, batch.label, batch.scenario, 0.0)

    return loss_fn


@pytest.mark.parametrize(("precision", "tower_dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_the_forward_runs_in_the_chosen_precision_and_the_loss_is_float32(tiny_feature_map, precision, tower_dtype):
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map, hidden=[8])
    seen: list[torch.dtype] = []
    loss = in_precision(recording_loss(seen), precision, torch.device("cpu"))(model, make_batch(tiny_feature_map))
    assert seen == [tower_dtype] and loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


def test_bf16_training_reaches_the_float32_auc(prepared_synthetic, tiny_feature_map):
    results = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = make_model("dnn", prepared_synthetic.feature_map, hidden=[32, 16])
        results[precision] = train_briefly(model, prepared_synthetic, precision=precision)
    assert results["fp32"]["test/auc/overall"] > 0.6
    assert results["bf16"]["test/auc/overall"] == pytest.approx(results["fp32"]["test/auc/overall"], abs=0.01)
    assert results["bf16"]["test/auc/overall"] != results["fp32"]["test/auc/overall"]  # bf16 did run


def test_an_unknown_precision_is_one_line():
    with pytest.raises(UserError, match="trainer.precision=fp16: use fp32 or bf16"):
        TrainerConfig(precision="fp16")
