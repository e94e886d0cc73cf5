"""Cold-start methods' training cost against the plain model (`make bench`).

Prepares synthetic rows with late-arriving users and items, then for each method trains one base
epoch on the warm rows and one meta epoch over the warm entities' tasks (MetaEmb's generator phase,
CVAR's networks), and reports seconds per epoch, rows per second, the meta epoch's cost relative to a
plain epoch on the same rows, and the seconds of the evaluation protocol on the test split's cold
entities (the cold phase and 3 warm-up rounds of 5 rows).

    python bench/coldstart_speed.py --rows 500000 --entity user
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import polars as pl
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from ssimctr.cli.main import CONFIG_DIR
from ssimctr.coldstart.episodes import build_episodes
from ssimctr.data.datasplit import MemorySplit
from ssimctr.data.loaders import batch_from_frame
from ssimctr.data.prepare import prepare
from ssimctr.tasks.base import ModelFactory
from ssimctr.tasks.cold_start import ColdStartTask
from ssimctr.train.regimes import Regime
from ssimctr.utils.instantiate import instantiate
from ssimctr.utils.seed import configure_torch, resolve_device, seed_everything

METHODS = ("none", "dropoutnet", "maml", "melu", "metaemb", "cvar")
SHOTS, ROUNDS = 5, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--entity", default="user", choices=("user", "item"))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default="outputs/bench/coldstart_speed.json")
    args = parser.parse_args()
    console = Console()
    configure_torch(args.threads)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        base = compose("config", overrides=[f"dataset.rows={args.rows}", "dataset.newcomers=0.1", "task=cold_start"])
        configs = {
            m: compose("config", overrides=["task=cold_start", f"coldstart={m}"]) for m in args.methods.split(",")
        }
    device = resolve_device("cpu")
    with tempfile.TemporaryDirectory() as cache:
        data = prepare(
            OmegaConf.to_object(base.dataset),
            OmegaConf.to_object(base.scenario),
            OmegaConf.to_object(base.split),
            Path(cache),
        )
        fm = data.feature_map
        task = ColdStartTask(args.entity, None, 2020, SHOTS, ROUNDS, 5)
        entity = task.entity(fm, list(base.dataset.user_features), list(base.dataset.item_features))
        frames = {name: pl.read_parquet(data.split_path(name)) for name in ("train", "val", "test")}
        _, train_frame, parts = task.rows(frames, entity)
    key = f"{entity.kind}_key"
    train = MemorySplit(batch_from_frame(train_frame, fm))
    meta_tasks, counts = build_episodes(train_frame, key, 5, fm, entity.attributes)
    cold, _ = build_episodes(parts["test"][0], key, SHOTS, fm, entity.attributes, ROUNDS)
    settings = replace(OmegaConf.to_object(base.trainer), epochs=1, patience=1, progress=False, seed=0)
    regime: Regime = instantiate(base.regime)
    results = []
    for name, cfg in configs.items():
        seed_everything(0)
        model = ModelFactory(base.backbone, fm, device).build(regime)
        method = instantiate(cfg.coldstart, entity=entity)
        started = time.perf_counter()
        fits = method.train(model, train, meta_tasks, lambda m: {"val/auc/mean": 0.0}, settings, lambda m, s: None)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        method.predict_cold(model, cold)
        protocol = time.perf_counter() - started
        plain, meta = fits[0], fits[1:]
        meta_seconds = sum(f.train_seconds for f in meta)
        results.append(
            {
                "method": name,
                "base_epoch_s": plain.train_seconds,
                "base_rows_per_s": plain.rows_per_second,
                "meta_epoch_s": meta_seconds if meta else None,
                "meta_vs_plain_epoch": meta_seconds / plain.train_seconds if meta else None,
                "total_s": seconds,
                "protocol_s": protocol,
            }
        )
        console.print(
            f"{name:>10}: base epoch {plain.train_seconds:.1f}s, meta epoch {meta_seconds:.1f}s, "
            f"cold phase + {ROUNDS} rounds {protocol:.1f}s"
        )
    table = Table(
        title=f"cold-start training cost: {len(train_frame):,} warm train rows, {counts.tasks:,} meta tasks "
        f"({args.entity}s), {args.threads} threads; protocol: {cold.num_tasks:,} cold {args.entity}s, "
        f"{len(cold.query):,} query rows"
    )
    for column in ("method", "base epoch s", "base rows/s", "meta epoch s", "meta / plain epoch", "protocol s"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for r in results:
        meta = r["meta_epoch_s"]
        table.add_row(
            r["method"],
            f"{r['base_epoch_s']:.1f}",
            f"{r['base_rows_per_s']:,.0f}",
            "-" if meta is None else f"{meta:.1f}",
            "-" if meta is None else f"{r['meta_vs_plain_epoch']:.2f}x",
            f"{r['protocol_s']:.1f}",
        )
    console.print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": args.rows, "entity": args.entity, "results": results}, indent=2))
    console.print(f"written {out}")


if __name__ == "__main__":
    main()
