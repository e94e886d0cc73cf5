"""Benchmark: ssimctr against DeepCTR-Torch on the same data, model and optimizer, side by side.

    pip install -e '.[bench]'                      # deepctr-torch
    .venv/bin/python bench/vs_deepctr.py           # 1,000,000 synthetic rows, 2 threads, 2 rounds

One DNN over the same inputs in both: every categorical field of the prepared data plus the scenario
id as embeddings of size 16, the numeric fields as dense inputs, MLP [256, 128, 64], ReLU, no dropout,
no L2, one logit; Adam lr 1e-3, batch 2048, one epoch of the train split. DeepCTR-Torch's model is
its PNN with both product layers off (`use_inner=False, use_outter=False`: its forward is then
exactly a DNN over the concatenated embeddings and dense values); ssimctr's is `backbone=dnn
regime=single` with its default embedding optimizer (trainer.embedding_optimizer=sparse_adam); the
`adam` rows use dense Adam, the `bf16` row trainer.precision=bf16. Rounds alternate the libraries, so a
machine busy with other work slows both alike; the speed is the training rows/s of the epoch (validation and
prediction excluded); AUC is the test split's pooled AUC (sklearn) of each trained model. Figures
go to the terminal and to outputs/bench/vs_deepctr.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score

from ssimctr.cli.main import CONFIG_DIR
from ssimctr.config.optim import DenseTablesConfig, LazyAdamConfig
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.loaders import InMemoryLoader, parquet_files, read_split
from ssimctr.data.prepare import PreparedDataset, prepare
from ssimctr.features.feature_map import FeatureMap
from ssimctr.tasks.base import ModelFactory
from ssimctr.train.loop import fit, make_optimizer, predict, validator
from ssimctr.train.regimes import Regime
from ssimctr.train.sharing import FixedSharing
from ssimctr.utils.instantiate import instantiate
from ssimctr.utils.seed import configure_torch, seed_everything

HIDDEN = [256, 128, 64]
EMBEDDING = 16


def _columns(data: PreparedDataset, split: str) -> pl.DataFrame:
    """The split's rows as one frame (its parquet shards)."""
    return pl.concat([pl.read_parquet(path) for path in parquet_files(data.path / split)])


def run_ssimctr(cfg, data: PreparedDataset, threads: int, embedding_optimizer: str, precision: str = "fp32") -> dict:
    """One epoch of ssimctr's single-tower DNN: training rows/s and test AUC."""
    fm = data.feature_map
    seed_everything(0)
    regime: Regime = instantiate(cfg.regime)
    model = ModelFactory(cfg.backbone, fm, torch.device("cpu")).build(regime)
    train = InMemoryLoader(read_split(data.path / "train", fm), 2048, shuffle=True, seed=0)
    val = InMemoryLoader(read_split(data.path / "val", fm), 16384, shuffle=False)
    settings = TrainerConfig(epochs=1, patience=1, progress=False, seed=0, threads=threads, precision=precision)
    tables = LazyAdamConfig() if embedding_optimizer == "sparse_adam" else DenseTablesConfig()
    settings = dataclasses.replace(settings, embedding_optimizer=tables)
    optimizer = make_optimizer(settings, model.parameters())
    history = fit(model, FixedSharing(regime.gate), optimizer, train, validator(val, fm.scenario_names), settings)
    label, logit, _ = predict(model, InMemoryLoader(read_split(data.path / "test", fm), 16384, shuffle=False))
    return {"rows_per_s": history.rows_per_second, "test_auc": roc_auc_score(label, logit)}


def run_deepctr(fm: FeatureMap, train: pl.DataFrame, test: pl.DataFrame) -> dict:
    """One epoch of DeepCTR-Torch's PNN without product layers (a DNN): training rows/s and test AUC."""
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models import PNN

    columns = [
        *[SparseFeat(field.name, field.vocab_size, embedding_dim=EMBEDDING) for field in fm.categorical],
        SparseFeat("scenario", fm.num_scenarios, embedding_dim=EMBEDDING),
        *[DenseFeat(field.name, 1) for field in fm.numeric],
    ]
    model = PNN(
        columns,
        dnn_hidden_units=tuple(HIDDEN),
        l2_reg_embedding=0.0,
        use_inner=False,
        use_outter=False,
        seed=0,
        device="cpu",
    )
    model.compile("adam", "binary_crossentropy")  # torch.optim.Adam, lr 1e-3

    def inputs(frame: pl.DataFrame) -> dict[str, np.ndarray]:
        return {column.name: frame[column.name].to_numpy() for column in columns}

    started = time.perf_counter()
    model.fit(inputs(train), train["label"].to_numpy(), batch_size=2048, epochs=1, verbose=0, shuffle=True)
    seconds = time.perf_counter() - started
    prob = model.predict(inputs(test), batch_size=16384)
    return {"rows_per_s": len(train) / seconds, "test_auc": roc_auc_score(test["label"].to_numpy(), prob)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="outputs/bench/vs_deepctr.json")
    args = parser.parse_args()
    console = Console()
    configure_torch(args.threads)
    overrides = [f"dataset.rows={args.rows}", "regime=single", f"backbone.hidden=[{','.join(map(str, HIDDEN))}]"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"), tempfile.TemporaryDirectory() as cache:
        cfg = compose("config", overrides=overrides)
        data = prepare(*(OmegaConf.to_object(cfg[g]) for g in ("dataset", "scenario", "split")), Path(cache))
        train, test = _columns(data, "train"), _columns(data, "test")
        results = []
        for round_ in range(1, args.rounds + 1):
            for name, measure in (
                ("ssimctr (sparse_adam)", lambda: run_ssimctr(cfg, data, args.threads, "sparse_adam")),
                ("ssimctr (adam)", lambda: run_ssimctr(cfg, data, args.threads, "adam")),
                ("ssimctr (adam, bf16)", lambda: run_ssimctr(cfg, data, args.threads, "adam", "bf16")),
                ("DeepCTR-Torch 0.3.0", lambda: run_deepctr(data.feature_map, train, test)),
            ):
                results.append({"round": round_, "library": name, **measure()})
                console.print(results[-1])
    table = Table(title=f"one DNN epoch on {len(train):,} training rows, {args.threads} threads")
    for column in ("round", "library", "rows/s", "test AUC", "vs DeepCTR-Torch"):
        table.add_column(column, justify="left" if column == "library" else "right")
    for row in results:
        reference = next(r for r in results if r["round"] == row["round"] and r["library"].startswith("DeepCTR"))
        ratio = row["rows_per_s"] / reference["rows_per_s"]
        table.add_row(
            str(row["round"]), row["library"], f"{row['rows_per_s']:,.0f}", f"{row['test_auc']:.4f}", f"{ratio:.2f}x"
        )
    console.print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": args.rows, "threads": args.threads, "results": results}, indent=2))
    console.print(f"written {out}")


if __name__ == "__main__":
    main()
