"""Text fields' cost (`make bench`): a frozen encoder's throughput in distinct texts per second, and
training rows per second of one model ID-only and with the title field of each text encoder.

Prepares synthetic rows, encodes the titles with each encoder (the frozen ones from scratch: the cache
is a temporary folder), then trains one epoch per encoder and reports rows/s. An encoder whose extra is
not installed is reported as skipped.

    python bench/text_speed.py --rows 200000 --encoders none,hashing,minilm --backbone dnn
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from ssimctr.cli.main import CONFIG_DIR
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.loaders import InMemoryLoader, read_split
from ssimctr.data.prepare import prepare
from ssimctr.errors import UserError
from ssimctr.tasks.base import ModelFactory
from ssimctr.text.build import with_encoded_fields
from ssimctr.train.loop import make_optimizer
from ssimctr.train.regimes import Regime
from ssimctr.train.sharing import sharing_loss
from ssimctr.utils.instantiate import instantiate
from ssimctr.utils.seed import configure_torch, resolve_device, seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoders", default="none,hashing,minilm")
    parser.add_argument("--backbone", default="dnn")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--out", default="outputs/bench/text_speed.json")
    args = parser.parse_args()
    console = Console()
    configure_torch(args.threads)
    encoders = args.encoders.split(",")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        configs = {
            e: compose(
                "config", overrides=[f"dataset.rows={args.rows}", f"text_encoder={e}", f"backbone={args.backbone}"]
            )
            for e in encoders
        }
    first = configs[encoders[0]]
    device = resolve_device("auto")
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        data = prepare(
            OmegaConf.to_object(first.dataset),
            OmegaConf.to_object(first.scenario),
            OmegaConf.to_object(first.split),
            Path(cache),
        )
        regime: Regime = instantiate(first.regime)
        for encoder, cfg in configs.items():
            started = time.perf_counter()
            try:
                job_data = with_encoded_fields(data, instantiate(cfg.text_encoder), Console(quiet=True))
            except UserError as error:
                console.print(f"{encoder}: skipped ({error})")
                continue
            encode_s = time.perf_counter() - started
            texts = sum(f.texts.len() + 1 for f in job_data.feature_map.encoded if f.texts is not None)
            seed_everything(0)
            model = ModelFactory(cfg.backbone, job_data.feature_map, device).build(regime)
            optimizer = make_optimizer(TrainerConfig(), model.parameters())  # the tables' gradients are sparse
            batch = read_split(job_data.split_path("train"), job_data.feature_map).to(device)
            loader = InMemoryLoader(batch, args.batch_size, shuffle=True)
            model.train()
            started = time.perf_counter()
            for rows in loader:
                optimizer.zero_grad(set_to_none=True)
                sharing_loss(model.towers(rows), rows.label, rows.scenario, 0.0).backward()
                optimizer.step()
            train_s = time.perf_counter() - started
            results[encoder] = {
                "distinct_texts": texts,
                "encode_seconds": round(encode_s, 2),
                "texts_per_s": round(texts / encode_s, 1) if encoder not in ("none", "hashing") else None,
                "train_rows_per_s": round(len(batch) / train_s),
                "parameters": sum(p.numel() for p in model.parameters()),
            }
    table = Table(title=f"text fields, {args.backbone}, {args.rows:,} synthetic rows, {device}")
    for column in ("encoder", "distinct texts", "encode s", "texts/s", "train rows/s", "parameters"):
        table.add_column(column, justify="right")
    for encoder, r in results.items():
        table.add_row(
            encoder,
            f"{r['distinct_texts']:,}",
            f"{r['encode_seconds']:.1f}",
            f"{r['texts_per_s']:,.0f}" if r["texts_per_s"] else "",
            f"{r['train_rows_per_s']:,}",
            f"{r['parameters']:,}",
        )
    console.print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
