"""What a checkpoint keeps of SSIM's training state (ssimctr resume=...): the search loss's selector and
step, SSIM-R's random generator; each restored into a fresh object continues exactly where it stopped."""

from __future__ import annotations

import io

import torch

from conftest import make_batch
from ssimctr.ssim.criteria import HardGate
from ssimctr.ssim.losses import RetrainLoss, SearchLoss
from ssimctr.ssim.selection import RandomSelection
from ssimctr.ssim.selector import Selector


def through_disk(state: dict) -> dict:
    """`state` after torch.save and torch.load, as a checkpoint file holds it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def search_loss(seed: int) -> SearchLoss:
    torch.manual_seed(seed)
    return SearchLoss(
        Selector(8, [4], 3),
        gate=HardGate(),
        epsilon=0.5,
        lambda_kl=0.4,
        final_temperature=1000.0,
        total_steps=40,
        scenario_names=["s0", "s1", "s2"],
        log=lambda metrics, step: None,
        log_every=100,
    )


def test_a_restored_search_loss_has_the_selector_step_and_temperature_it_stopped_with():
    stopped = search_loss(seed=0)
    stopped.step = 17
    fresh = search_loss(seed=1)  # other selector weights, step 0
    fresh.load_state_dict(through_disk(stopped.state_dict()))
    assert fresh.step == 17 and fresh.temperature == stopped.temperature > 1.0
    for name, weight in stopped.selector.state_dict().items():
        assert torch.equal(fresh.selector.state_dict()[name], weight), name


def test_a_restored_random_selection_draws_what_the_stopped_one_would_have(tiny_feature_map):
    batch = make_batch(tiny_feature_map, rows=32)
    stopped = RandomSelection(0.5, seed=3)
    stopped(batch)  # one batch drawn before the checkpoint
    state = through_disk(stopped.state_dict())
    following = [stopped(batch) for _ in range(3)]
    fresh = RetrainLoss(RandomSelection(0.5, seed=99))
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.gate_of(batch), gate) for gate in following)


def test_a_retrain_loss_keeps_its_gates_state_and_nothing_for_a_stateless_gate():
    gate = RandomSelection(0.5, seed=3)
    assert torch.equal(RetrainLoss(gate).state_dict()["generator"], gate.generator.get_state())
    stateless = RetrainLoss(lambda batch: torch.ones(len(batch)))
    assert stateless.state_dict() is None
    stateless.load_state_dict(None)  # nothing to restore
