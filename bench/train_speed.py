"""Benchmark: preparation time, training rows/s and peak memory on synthetic data.

    .venv/bin/python bench/train_speed.py                      # DNN, 1,000,000 rows, 2 threads
    .venv/bin/python bench/train_speed.py --backbones all      # every conf/backbone option
    .venv/bin/python bench/train_speed.py --ssim               # + SSIM search epoch vs mt epoch

Training speed is measured on one epoch of the train split (validation excluded), batch 2048,
embedding 16, MLP [256, 128, 64] (the DNN's defaults, ssimctr.config.models), Adam; figures go to the
terminal and to outputs/bench/train_speed.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from ssimctr.cli.main import CONFIG_DIR
from ssimctr.config.schema import TrainerConfig
from ssimctr.data.loaders import InMemoryLoader, read_split
from ssimctr.data.prepare import prepare
from ssimctr.ssim.losses import SearchLoss
from ssimctr.ssim.selector import Selector, selector_hidden
from ssimctr.tasks.base import ModelFactory
from ssimctr.train.loop import FitResult, fit, make_optimizer, validator
from ssimctr.train.regimes import Regime
from ssimctr.train.sharing import FixedSharing
from ssimctr.utils.seed import configure_torch, resolve_device, seed_everything


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


ONE_EPOCH = TrainerConfig(epochs=1, patience=1, progress=False, seed=0)
# --ssim: (DNN tower sizes, selector sizes); None = ssim.selector_hidden's default (the towers' sizes)
SSIM_CASES = (("[256,128,64]", (None, [1024, 512, 256])), ("[1024,512,256]", (None,)))


def _row(backbone: str, regime: str, history: FitResult, parameters: int) -> dict:
    """One line of the results table."""
    return {
        "backbone": backbone,
        "regime": regime,
        "rows_per_s": history.rows_per_second,
        "val_auc_mean": history.epochs[0]["val/auc/mean"],
        "parameters": parameters,
        "peak_rss_mb": peak_rss_mb(),
    }


def _build(cfg, fm, device):
    """The configured backbone under the configured regime."""
    regime = Regime.from_config(OmegaConf.to_object(cfg.regime))
    return ModelFactory(cfg.backbone, fm, device).build(regime), regime


def _fit_once(cfg, fm, train, val, device) -> tuple[FitResult, int]:
    """One training epoch of the configured model: its FitResult and parameter count."""
    model, regime = _build(cfg, fm, device)
    history = fit(
        model,
        FixedSharing(regime.gate),
        make_optimizer(ONE_EPOCH, model.parameters()),
        train,
        validator(val, fm.scenario_names),
        ONE_EPOCH,
    )
    return history, sum(p.numel() for p in model.parameters())


def _search_once(cfg, fm, train, val, device) -> tuple[FitResult, int]:
    """One SSIM search epoch (backbone + selector, two Adam groups): its FitResult and parameter count."""
    model, _ = _build(cfg, fm, device)
    hidden = selector_hidden(cfg.ssim.selector_hidden, cfg.backbone)
    selector = Selector(model.embedding.output_dim, hidden, fm.num_scenarios).to(device)
    loss = SearchLoss(
        selector,
        epsilon=cfg.ssim.epsilon,
        lambda_kl=cfg.ssim.lambda_kl,
        final_temperature=cfg.ssim.final_temperature,
        total_steps=len(train),
        gate="hard",
        scenario_names=fm.scenario_names,
        log=lambda metrics, step: None,
        log_every=len(train),
    )
    optimizer = make_optimizer(
        ONE_EPOCH,
        [{"params": list(model.parameters())}, {"params": list(selector.parameters()), "lr": cfg.ssim.selector_lr}],
    )
    history = fit(model, loss, optimizer, train, validator(val, fm.scenario_names), ONE_EPOCH, restore_best=False)
    return history, sum(p.numel() for p in [*model.parameters(), *selector.parameters()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--backbones", default="dnn", help="comma-separated names, or 'all'")
    parser.add_argument("--regimes", default="single,mt", help="comma-separated regime options")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument(
        "--ssim",
        action="store_true",
        help="also time SSIM search epochs against a plain mt epoch (DNN towers and selectors of SSIM_CASES)",
    )
    parser.add_argument("--out", default="outputs/bench/train_speed.json")
    args = parser.parse_args()
    console = Console()
    seed_everything(0)
    configure_torch(args.threads)
    backbones = (
        sorted(p.stem for p in (Path(CONFIG_DIR) / "backbone").glob("*.yaml"))
        if args.backbones == "all"
        else args.backbones.split(",")
    )

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        base = compose("config", overrides=[f"dataset.rows={args.rows}"])
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            data = prepare(
                OmegaConf.to_object(base.dataset),
                OmegaConf.to_object(base.scenario),
                OmegaConf.to_object(base.split),
                Path(cache),
            )
            prepare_seconds = time.perf_counter() - started
            prepare_peak = peak_rss_mb()
            fm = data.feature_map
            device = resolve_device(args.device)
            train = InMemoryLoader(
                read_split(data.split_path("train"), fm), args.batch_size, shuffle=True, device=device
            )
            val = InMemoryLoader(read_split(data.split_path("val"), fm), 16384, shuffle=False, device=device)
        console.print(
            f"prepared {args.rows:,} rows in {prepare_seconds:.1f}s "
            f"({args.rows / prepare_seconds:,.0f} rows/s), peak RSS {prepare_peak:,.0f} MiB"
        )
        results = []
        for backbone in backbones:
            for regime in args.regimes.split(","):
                cfg = compose("config", overrides=[f"backbone={backbone}", f"regime={regime}"])
                history, parameters = _fit_once(cfg, fm, train, val, device)
                results.append(_row(backbone, regime, history, parameters))
                console.print(f"{backbone:>14} {regime:>7}: {history.rows_per_second:,.0f} rows/s")

        if args.ssim:
            for towers, selectors in SSIM_CASES:
                cfg = compose("config", overrides=["regime=mt", "ssim=search", f"backbone.hidden={towers}"])
                mt, parameters = _fit_once(cfg, fm, train, val, device)
                results.append(_row(f"dnn {towers}", "mt", mt, parameters))
                for size in selectors:
                    cfg.ssim.selector_hidden = size
                    hidden = selector_hidden(size, cfg.backbone)
                    search, search_parameters = _search_once(cfg, fm, train, val, device)
                    ratio = search.train_seconds / mt.train_seconds
                    row = _row(f"dnn {towers}", f"ssim search, selector {hidden}", search, search_parameters)
                    results.append({**row, "selector_hidden": hidden, "search_cost_vs_mt": ratio})
                    console.print(
                        f"dnn {towers}: search epoch costs {ratio:.2f}x a plain mt epoch (selector {hidden}"
                        f"{', the default: follows the towers' if size is None else ''})"
                    )

    table = Table(
        title=f"training speed: {len(train.data):,} train rows, batch {args.batch_size}, "
        f"{args.threads} threads, {device}, torch {torch.__version__}"
    )
    for column in ("backbone", "regime", "rows/s", "val AUC (1 epoch)", "parameters", "peak RSS MiB"):
        table.add_column(column, justify="left" if column in ("backbone", "regime") else "right")
    for r in results:
        table.add_row(
            r["backbone"],
            r["regime"],
            f"{r['rows_per_s']:,.0f}",
            f"{r['val_auc_mean']:.4f}",
            f"{r['parameters']:,}",
            f"{r['peak_rss_mb']:,.0f}",
        )
    console.print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "rows": args.rows,
                "threads": args.threads,
                "prepare_seconds": prepare_seconds,
                "prepare_peak_rss_mb": prepare_peak,
                "training": results,
            },
            indent=2,
        )
    )
    console.print(f"written {out}")


if __name__ == "__main__":
    main()
