"""trainer=ddp: a 2-process gloo job under torchrun, the one-line refusals, and the collectives."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import compose, make_batch, make_model, optimizer_for
from ssimctr.cli.runner import check_job
from ssimctr.data.loaders import InMemoryLoader, ParquetStreamLoader, read_split
from ssimctr.errors import UserError
from ssimctr.serving.model import load_logged_model
from ssimctr.train import distributed
from ssimctr.train.loop import evaluate
from ssimctr.train.sharing import FixedSharing

TINY = [
    "dataset.rows=4000",
    "dataset.users=300",
    "dataset.items=100",
    "trainer.epochs=2",
    "trainer.threads=1",
    "trainer.progress=false",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", *distributed.TORCHRUN_ENV)}


def _ssimctr(tmp_path: Path, *overrides: str, nproc: int = 0) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(_free_port())]
    return subprocess.run(
        [sys.executable, *(launcher if nproc else []), "-m", "ssimctr", f"paths.outputs={tmp_path}", *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )


@pytest.mark.slow
def test_two_gloo_processes_log_one_run_whose_metrics_match_one_process(tmp_path):
    result = _ssimctr(tmp_path, "trainer=ddp", *TINY, nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED"
    assert run.data.tags["ssimctr.world_size"] == "2"
    assert run.data.metrics["train/rows_per_s"] > 0
    assert result.stdout.count("MLflow run") == 1  # rank 0 alone prints

    logged = load_logged_model(f"runs:/{run.info.run_id}/model", uri)
    [cache] = (tmp_path / "cache").iterdir()
    test = InMemoryLoader(read_split(cache / "test", logged.feature_map), 512, shuffle=False)
    alone = evaluate(logged.model, test, "test", logged.feature_map.scenario_names)
    logged_test = {k: v for k, v in run.data.metrics.items() if k.startswith("test/")}
    assert logged_test.keys() == alone.keys()
    for key, value in alone.items():
        assert logged_test[key] == pytest.approx(value, abs=1e-6), key


def test_ddp_without_torchrun_is_one_line(tmp_path):
    result = _ssimctr(tmp_path, "trainer=ddp", "tracking=none", *TINY)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "torchrun --nproc_per_node 2 -m ssimctr trainer=ddp" in lines[0], result.stderr
    assert not (tmp_path / "cache").exists()  # refused before any data


def test_ddp_with_ssim_is_one_line(tmp_path):
    result = _ssimctr(tmp_path, "trainer=ddp", "ssim=pipeline", "tracking=none", *TINY)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "trainer=ddp does not support ssim=pipeline" in lines[0], result.stderr


@pytest.mark.parametrize(
    ("overrides", "resume", "named"),
    [
        (["regime=st"], False, "regime=st"),
        (["regime=finetune"], False, "regime=finetune"),
        (["task=cold_start"], False, "task=cold_start"),
        ([], True, "resume"),
    ],
)
def test_unsupported_jobs_are_refused(overrides, resume, named):
    """The tasks' declarations (`supports`) refuse them, before any process group, data or run."""
    with pytest.raises(UserError, match=f"trainer=ddp does not support {named}"):
        check_job(compose("trainer=ddp", *overrides), {}, resume)


@pytest.mark.parametrize("regime", ["mt", "mt_s", "single"])
def test_joint_regimes_are_supported(regime):
    check_job(compose("trainer=ddp", f"regime={regime}"), {})


def test_distributed_must_be_known():
    with pytest.raises(UserError, match="trainer.distributed=fsdp: use none or ddp"):
        OmegaConf.to_object(compose("trainer.distributed=fsdp").trainer)


def test_helpers_are_the_identity_in_one_process():
    arrays = (np.arange(3, dtype=np.float32), np.arange(3))
    assert all(got is given for got, given in zip(distributed.gathered(*arrays), arrays))
    assert distributed.agreed_batches(7, None) is None and distributed.agreed_batches(7, 3) == 3
    assert distributed.pooled_epoch(0.5, 10, 2.0) == (0.5, 10, 2.0)
    assert not distributed.active() and distributed.is_main()


def _collectives(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        n = 3 + 4 * rank  # unequal lengths: 3 and 7 rows
        labels = np.full(n, rank, dtype=np.float32)
        logits = np.linspace(-1, 1, n).astype(np.float32) + rank
        scenario = np.arange(n, dtype=np.int64) + 100 * rank
        results[rank] = (
            distributed.gathered(labels, logits, scenario),
            distributed.agreed_batches(10 - rank, None),
            distributed.agreed_batches(10 - rank, 5),
            distributed.pooled_epoch(1.0 + rank, 3 + rank, 1.0 + rank),
        )
    finally:
        dist.destroy_process_group()


def test_gathered_unequal_lengths_on_two_gloo_processes():
    results = mp.Manager().dict()
    mp.spawn(_collectives, args=(2, _free_port(), results), nprocs=2)
    expected = (
        np.concatenate([np.zeros(3, np.float32), np.ones(7, np.float32)]),
        np.concatenate([np.linspace(-1, 1, n).astype(np.float32) + rank for rank, n in enumerate((3, 7))]),
        np.concatenate([np.arange(3), np.arange(7) + 100]),
    )
    for rank in (0, 1):
        gathered, batches, limited, pooled = results[rank]
        for got, want in zip(gathered, expected):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        assert batches == 9 and limited == 5
        assert pooled == (pytest.approx((1.0 * 3 + 2.0 * 4) / 7), 7, 2.0)


def _two_steps(model, batch, optimizer, loss_fn) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The gradients of the first step (dense) and the weights after the second."""
    for step in range(2):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        if step == 0:
            gradients = {name: p.grad.to_dense().clone() for name, p in model.named_parameters()}
        optimizer.step()
    return gradients, {key: value.detach().clone() for key, value in model.state_dict().items()}


def _ddp_step(rank: int, world: int, port: int, feature_map, batch, gate: float, results) -> None:
    """Two sparse_adam steps through `synced` on this rank's half of the batch."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)  # different weights: DDP starts every rank from rank 0's
        model = make_model("dnn", feature_map).eval()  # no dropout: the step depends on the rows alone
        half = batch.slice(16 * rank, 16 * (rank + 1))
        optimizer = optimizer_for(model.parameters(), 0.01)
        with distributed.synced(model, FixedSharing(gate)) as loss_fn:
            results[rank] = _two_steps(model, half, optimizer, loss_fn)
            results[f"sparse{rank}"] = (model.embedding.table.sparse, model.embedding.table.weight.grad.is_sparse)
        results[f"sparse_after{rank}"] = model.embedding.table.sparse
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("gate", "by_scenario"),
    [(1.0, False), (0.0, True)],
    ids=["mt_s", "mt-a-scenario-absent-on-each-rank"],
)
def test_ddp_steps_equal_one_process_on_both_halves(gate, by_scenario, tiny_feature_map):
    """gloo all-reduces every gradient (the id table's made dense): both ranks get one process's gradient
    of the whole batch and step like it, through the routed path (mt) and every tower (mt_s) alike; sorted
    by scenario, rank 0's half has no row of scenario 2 and rank 1's none of scenario 0, so each rank's
    routed path runs a tower on no rows, and DDP (which expects every parameter's gradient) still steps.
    The weights after two Adam steps agree to 1e-5 (a thousandth of a step: Adam's g/(|g|+ε) turns a
    rounding-level gradient where the exact one is 0 into a step of up to lr·1e-4)."""
    batch = make_batch(tiny_feature_map, rows=32, seed=1)
    if by_scenario:
        batch = batch.take(torch.argsort(batch.scenario, stable=True))
    results = mp.Manager().dict()
    mp.spawn(_ddp_step, args=(2, _free_port(), tiny_feature_map, batch, gate, results), nprocs=2)
    torch.manual_seed(0)
    model = make_model("dnn", tiny_feature_map).eval()
    optimizer = optimizer_for(model.parameters(), 0.01)
    gradients, alone = _two_steps(model, batch, optimizer, FixedSharing(gate))
    for rank in (0, 1):
        assert results[f"sparse{rank}"] == (False, False)  # dense gradients all-reduced (see synced)
        assert results[f"sparse_after{rank}"]  # the table is sparse again after training
        rank_gradients, weights = results[rank]
        assert rank_gradients.keys() == gradients.keys() and weights.keys() == alone.keys()
        for key, value in gradients.items():
            torch.testing.assert_close(rank_gradients[key], value, atol=1e-8, rtol=1e-5, msg=key)
        for key, value in alone.items():
            torch.testing.assert_close(weights[key], value, atol=1e-5, rtol=1e-5, msg=key)


def test_shares_cover_every_row_once(tiny_feature_map, tmp_path):
    """In memory: contiguous rows, about equal; streamed: round-robin row groups."""
    batch = make_batch(tiny_feature_map, rows=103)
    frame = pl.DataFrame(
        {
            "row_id": batch.row_id.numpy(),
            "scenario": batch.scenario.numpy(),
            "label": batch.label.numpy(),
            **{f.name: batch.cat[:, i].numpy() for i, f in enumerate(tiny_feature_map.categorical)},
            **{f.name: batch.num[:, i].numpy() for i, f in enumerate(tiny_feature_map.numeric)},
        }
    )
    path = tmp_path / "split"
    path.mkdir()
    frame.write_parquet(path / "part-0.parquet", row_group_size=10)
    shares = [read_split(path, tiny_feature_map, (rank, 3)) for rank in range(3)]
    assert [len(share) for share in shares] == [34, 34, 35]
    assert torch.equal(torch.cat([share.row_id for share in shares]), batch.row_id)
    streamed = [ParquetStreamLoader(path, tiny_feature_map, 8, shuffle=False, share=(rank, 2)) for rank in range(2)]
    assert [loader.num_rows for loader in streamed] == [53, 50]  # 11 row groups: 0, 2, .., 10 (3 rows) and 1, 3, .., 9
    seen = torch.cat([b.row_id for loader in streamed for b in loader])
    assert sorted(seen.tolist()) == list(range(103))
