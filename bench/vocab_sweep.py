"""Benchmark: training rows/s and peak memory against the vocabulary size, dense vs lazy (sparse) Adam.

    .venv/bin/python bench/vocab_sweep.py                        # 10k, 100k, 1M, 10M ids; 200,000 rows
    .venv/bin/python bench/vocab_sweep.py --rows 100000 --vocabs 10000,10000000

The same prepared synthetic rows and the same model (DNN, regime single, batch 2048, embedding 16,
MLP [256, 128, 64], 2 threads) train one epoch per vocabulary size and `trainer.embedding_optimizer`
(sparse_adam, adam). The vocabulary is the user and item tables' rows (users : items = 4 : 1, as the
default 20k / 5k): the rows' ids are the data's (4,000 users, 1,000 items), and the two tables are
enlarged to the vocabulary size, the rows no batch looks up standing for a real log's long tail.
Each cell runs in a fresh process, so its peak RSS (ru_maxrss) is its own. The goal: with
sparse_adam, rows/s at the largest vocabulary within 20% of rows/s at the smallest. On a busy
machine, read rows per CPU second (the training's process time, validation excluded) beside the
wall-clock rows/s. Figures go to the terminal and to outputs/bench/vocab_sweep.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from ssimctr.cli.main import CONFIG_DIR
from ssimctr.config.optim import DenseTablesConfig, LazyAdamConfig, RowwiseAdagradConfig
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.loaders import InMemoryLoader, read_split
from ssimctr.data.prepare import prepare
from ssimctr.features.feature_map import FeatureMap
from ssimctr.tasks.base import ModelFactory
from ssimctr.train.loop import fit, make_optimizer, validator
from ssimctr.train.regimes import Regime
from ssimctr.train.sharing import FixedSharing
from ssimctr.utils.instantiate import instantiate
from ssimctr.utils.seed import configure_torch, seed_everything

OPTIMIZERS = ("sparse_adam", "adam")
DATA_USERS, DATA_ITEMS = 4_000, 1_000  # the data's ids: the smallest vocabulary (10k) holds them all


def _prepared(rows: int, cache: Path):
    """The config and the prepared synthetic data of `rows` rows (cached in `cache`)."""
    overrides = [f"dataset.rows={rows}", f"dataset.users={DATA_USERS}", f"dataset.items={DATA_ITEMS}"]
    cfg = compose("config", overrides=[*overrides, "regime=single", "backbone=dnn"])
    data = prepare(
        OmegaConf.to_object(cfg.dataset), OmegaConf.to_object(cfg.scenario), OmegaConf.to_object(cfg.split), cache
    )
    return cfg, data


def _enlarged(fm: FeatureMap, user: str, item: str, vocab: int) -> FeatureMap:
    """`fm` with the user and item tables enlarged to `vocab` rows together (4 : 1)."""
    sizes = {user: vocab * 4 // 5, item: vocab - vocab * 4 // 5}
    for field in fm.categorical:
        if field.name in sizes and sizes[field.name] < field.vocab_size:
            raise SystemExit(f"--vocabs: {vocab} is smaller than the data's {user} + {item} vocabularies")
    categorical = tuple(
        dataclasses.replace(f, vocab_size=sizes[f.name]) if f.name in sizes else f for f in fm.categorical
    )
    return dataclasses.replace(fm, categorical=categorical)


def cell(args: argparse.Namespace) -> None:
    """One (vocabulary, optimizer) epoch in this process: a JSON line on stdout."""
    seed_everything(0)
    configure_torch(args.threads)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg, data = _prepared(args.rows, Path(args.cache))
    fm = _enlarged(data.feature_map, cfg.dataset.user, cfg.dataset.item, args.vocab)
    train = InMemoryLoader(read_split(data.split_path("train"), data.feature_map), args.batch_size, shuffle=True)
    val = InMemoryLoader(read_split(data.split_path("val"), data.feature_map), 16384, shuffle=False)
    regime: Regime = instantiate(cfg.regime)
    model = ModelFactory(cfg.backbone, fm, "cpu").build(regime)
    rows = {"sparse_adam": LazyAdamConfig(), "rowwise_adagrad": RowwiseAdagradConfig(), "adam": DenseTablesConfig()}
    settings = TrainerConfig(epochs=1, patience=1, progress=False, seed=0, embedding_optimizer=rows[args.optimizer])
    optimizer = make_optimizer(settings, model.parameters())
    validate, validation_cpu = validator(val, fm.scenario_names), [0.0]

    def timed_validate(model):  # its CPU time is left out of the training's
        started = time.process_time()
        metrics = validate(model)
        validation_cpu[0] += time.process_time() - started
        return metrics

    started = time.process_time()
    # restore_best=False: no copy of the best weights (O(vocabulary), once per epoch) in the measured CPU time
    history = fit(model, FixedSharing(regime.gate), optimizer, train, timed_validate, settings, restore_best=False)
    train_cpu = time.process_time() - started - validation_cpu[0]
    result = {
        "vocab": args.vocab,
        "optimizer": args.optimizer,
        "table_rows": model.embedding.table.num_embeddings,
        "rows_per_s": history.rows_per_second,
        "rows_per_cpu_s": history.train_rows / train_cpu,
        "val_auc_mean": history.epochs[0]["val/auc/mean"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--vocabs", default="10000,100000,1000000,10000000", help="users + items, comma-separated")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--out", default="outputs/bench/vocab_sweep.json")
    parser.add_argument("--cell", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--optimizer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        cell(args)
        return
    console = Console()
    vocabs = [int(v) for v in args.vocabs.split(",")]
    optimizers = args.optimizers.split(",")
    results = []
    with tempfile.TemporaryDirectory() as cache:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            _prepared(args.rows, Path(cache))  # once, here; every cell reads the cache
        for vocab in vocabs:
            for optimizer in optimizers:
                command = [sys.executable, __file__, "--cell", f"--cache={cache}", f"--vocab={vocab}"]
                command += [f"--optimizer={optimizer}", f"--rows={args.rows}", f"--threads={args.threads}"]
                command += [f"--batch-size={args.batch_size}"]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode:
                    console.print(done.stderr[-3000:])
                    raise SystemExit(f"the cell {vocab} / {optimizer} failed")
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                r = results[-1]
                console.print(f"{vocab:>12,} ids, {optimizer:>11}: {r['rows_per_s']:,.0f} rows/s")

    table = Table(title=f"vocabulary sweep: DNN single, {args.rows:,} rows, {args.threads} threads, 1 epoch")
    columns = ("ids (users+items)", "optimizer", "rows/s", "vs smallest", "rows/CPU-s", "val AUC", "peak RSS MiB")
    for column in columns:
        table.add_column(column, justify="left" if column == "optimizer" else "right")
    for r in results:
        first = next(q for q in results if q["optimizer"] == r["optimizer"])
        r["vs_smallest"] = r["rows_per_s"] / first["rows_per_s"]
        table.add_row(
            f"{r['vocab']:,}",
            r["optimizer"],
            f"{r['rows_per_s']:,.0f}",
            f"{r['vs_smallest']:.2f}",
            f"{r['rows_per_cpu_s']:,.0f}",
            f"{r['val_auc_mean']:.4f}",
            f"{r['peak_rss_mb']:,.0f}",
        )
    console.print(table)
    sparse = [r for r in results if r["optimizer"] == "sparse_adam"]
    if len(sparse) > 1:
        ratio = sparse[-1]["vs_smallest"]
        verdict = "met" if ratio >= 0.8 else "NOT met"
        console.print(f"goal (sparse_adam, largest vocabulary within 20% of the smallest): {verdict} ({ratio:.2f})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": args.rows, "threads": args.threads, "cells": results}, indent=2))
    console.print(f"written {out}")


if __name__ == "__main__":
    main()
