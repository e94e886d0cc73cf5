"""Benchmark: preparation time, training rows/s and peak memory on synthetic data, per model, regime and
number of scenarios.

    .venv/bin/python bench/train_speed.py                      # DNN, single vs mt, 1,000,000 rows, 2 threads
    .venv/bin/python bench/train_speed.py --backbones all      # every conf/backbone option
    .venv/bin/python bench/train_speed.py --scenarios 3,10     # the data with K = 3 and with K = 10 scenarios
    .venv/bin/python bench/train_speed.py --repeats 2          # each figure twice, the regimes alternating
    .venv/bin/python bench/train_speed.py --ssim               # + SSIM search epoch vs mt epoch

Training speed is measured on one epoch of the train split (validation excluded), batch 2048, each
model's defaults (ssimctr.config.models), Adam. The table "single vs mt" gives, per model and K, the
rows/s of regime single (one tower) and regime mt (a tower per scenario, each row training its own: the
routed path, docs/methods.md §3.12) and their ratio (of the mean rows/s; each cell the range over the
repeats). Figures go to the terminal and to outputs/bench/train_speed.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections import defaultdict
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
from ssimctr.ssim.criteria import HardGate
from ssimctr.ssim.losses import SearchLoss
from ssimctr.ssim.selector import Selector, selector_hidden
from ssimctr.tasks.base import ModelFactory
from ssimctr.train.loop import FitResult, fit, make_optimizer, validator
from ssimctr.train.regimes import Regime
from ssimctr.train.sharing import FixedSharing
from ssimctr.utils.instantiate import instantiate
from ssimctr.utils.seed import configure_torch, resolve_device, seed_everything


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


ONE_EPOCH = TrainerConfig(epochs=1, patience=1, progress=False, seed=0)
# --ssim: (DNN tower sizes, selector sizes); None = ssim.selector_hidden's default (the towers' sizes)
SSIM_CASES = (("[256,128,64]", (None, [1024, 512, 256])), ("[1024,512,256]", (None,)))


def _row(backbone: str, regime: str, scenarios: int, history: FitResult, parameters: int) -> dict:
    """One line of the results table."""
    return {
        "backbone": backbone,
        "regime": regime,
        "scenarios": scenarios,
        "rows_per_s": history.rows_per_second,
        "train_seconds": history.train_seconds,
        "val_auc_mean": history.epochs[0]["val/auc/mean"],
        "parameters": parameters,
        "peak_rss_mb": peak_rss_mb(),
    }


def _build(cfg, fm, device):
    """The configured backbone under the configured regime."""
    regime: Regime = instantiate(cfg.regime)
    return ModelFactory(cfg.backbone, fm, device).build(regime), regime


def _fit_once(cfg, fm, train, val, device) -> tuple[FitResult, int]:
    """One training epoch of the configured model (the regime's loss): its FitResult and parameter count."""
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
        gate=HardGate(),
        epsilon=cfg.ssim.epsilon,
        lambda_kl=cfg.ssim.lambda_kl,
        final_temperature=cfg.ssim.final_temperature,
        total_steps=len(train),
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


def _prepared(rows: int, scenarios: int, batch_size: int, device, console: Console):
    """The synthetic data with `scenarios` scenarios: (feature map, train loader, val loader, preparation figures)."""
    base = compose("config", overrides=[f"dataset.rows={rows}", f"dataset.num_scenarios={scenarios}"])
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        data = prepare(
            OmegaConf.to_object(base.dataset),
            OmegaConf.to_object(base.scenario),
            OmegaConf.to_object(base.split),
            Path(cache),
        )
        seconds = time.perf_counter() - started
        fm = data.feature_map
        train = InMemoryLoader(read_split(data.split_path("train"), fm), batch_size, shuffle=True, device=device)
        val = InMemoryLoader(read_split(data.split_path("val"), fm), 16384, shuffle=False, device=device)
    console.print(
        f"K={scenarios}: prepared {rows:,} rows in {seconds:.1f}s ({rows / seconds:,.0f} rows/s), "
        f"peak RSS {peak_rss_mb():,.0f} MiB"
    )
    return fm, train, val, {"scenarios": scenarios, "prepare_seconds": seconds, "prepare_peak_rss_mb": peak_rss_mb()}


def _regimes(backbones, regimes, k, repeats, data, device, console) -> list[dict]:
    """Every backbone under every regime, `repeats` times, the regimes alternating within a repeat."""
    fm, train, val = data
    results = []
    for backbone in backbones:
        for repeat in range(repeats):
            for regime in regimes:
                cfg = compose("config", overrides=[f"backbone={backbone}", f"regime={regime}"])
                history, parameters = _fit_once(cfg, fm, train, val, device)
                results.append(_row(backbone, regime, k, history, parameters))
                console.print(f"K={k} {backbone:>14} {regime:>7} ({repeat + 1}): {history.rows_per_second:,.0f} rows/s")
    return results


def _ssim(k, repeats, data, device, console) -> list[dict]:
    """SSIM search epochs against plain mt epochs of the same DNN (SSIM_CASES), `repeats` times alternating."""
    fm, train, val = data
    results = []
    for towers, selectors in SSIM_CASES:
        for repeat in range(repeats):
            cfg = compose("config", overrides=["regime=mt", "ssim=search", f"backbone.hidden={towers}"])
            mt, parameters = _fit_once(cfg, fm, train, val, device)
            results.append(_row(f"dnn {towers}", "mt", k, mt, parameters))
            for size in selectors:
                cfg.ssim.selector_hidden = size
                hidden = selector_hidden(size, cfg.backbone)
                search, search_parameters = _search_once(cfg, fm, train, val, device)
                ratio = search.train_seconds / mt.train_seconds
                row = _row(f"dnn {towers}", f"ssim search, selector {hidden}", k, search, search_parameters)
                results.append({**row, "selector_hidden": hidden, "search_cost_vs_mt": ratio})
                console.print(
                    f"K={k} dnn {towers} ({repeat + 1}): search epoch costs {ratio:.2f}x a plain mt epoch (selector "
                    f"{hidden}{', the default: follows the towers' if size is None else ''})"
                )
    return results


def _span(values: list[float], fmt: str = "{:,.0f}") -> str:
    """`a` or the range `a–b` of repeated figures."""
    low, high = min(values), max(values)
    return fmt.format(low) if low == high else f"{fmt.format(low)}–{fmt.format(high)}"


def single_vs_mt_table(results: list[dict], title: str) -> Table:
    """Per model and K: single and mt rows/s (ranges over repeats) and mt / single (of the means)."""
    speeds: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r["regime"] in ("single", "mt") and "search_cost_vs_mt" not in r and not r["backbone"].startswith("dnn "):
            speeds[(r["backbone"], r["scenarios"])][r["regime"]].append(r["rows_per_s"])
    table = Table(title=title)
    for column in ("model", "K", "single rows/s", "mt rows/s", "mt / single"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for (backbone, k), regimes in speeds.items():
        single, mt = regimes.get("single", []), regimes.get("mt", [])
        ratio = f"{(sum(mt) / len(mt)) / (sum(single) / len(single)):.2f}" if single and mt else ""
        table.add_row(backbone, str(k), _span(single) if single else "", _span(mt) if mt else "", ratio)
    return table


def ssim_table(results: list[dict], title: str) -> Table:
    """Per DNN size, selector and K: the search epoch's cost in plain mt epochs (range over repeats)."""
    costs: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in results:
        if "search_cost_vs_mt" in r:
            costs[(r["backbone"], str(r["selector_hidden"]), r["scenarios"])].append(r["search_cost_vs_mt"])
    table = Table(title=title)
    for column in ("towers", "selector", "K", "search epoch / mt epoch"):
        table.add_column(column, justify="right" if column in ("K", "search epoch / mt epoch") else "left")
    for (towers, selector, k), values in costs.items():
        table.add_row(towers, selector, str(k), _span(values, "{:.2f}"))
    return table


def all_runs_table(results: list[dict], title: str) -> Table:
    """Every measured epoch."""
    table = Table(title=title)
    for column in ("backbone", "regime", "K", "rows/s", "val AUC (1 epoch)", "parameters", "peak RSS MiB"):
        table.add_column(column, justify="left" if column in ("backbone", "regime") else "right")
    for r in results:
        table.add_row(
            r["backbone"],
            r["regime"],
            str(r["scenarios"]),
            f"{r['rows_per_s']:,.0f}",
            f"{r['val_auc_mean']:.4f}",
            f"{r['parameters']:,}",
            f"{r['peak_rss_mb']:,.0f}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--backbones", default="dnn", help="comma-separated names, or 'all'")
    parser.add_argument("--regimes", default="single,mt", help="comma-separated regime options")
    parser.add_argument("--scenarios", default="3", help="comma-separated numbers of scenarios (dataset.num_scenarios)")
    parser.add_argument("--repeats", type=int, default=1, help="measure each figure this many times, alternating")
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
    device = resolve_device(args.device)
    backbones = (
        sorted(p.stem for p in (Path(CONFIG_DIR) / "backbone").glob("*.yaml"))
        if args.backbones == "all"
        else args.backbones.split(",")
    )
    results, preparation = [], []
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for k in (int(k) for k in args.scenarios.split(",")):
            fm, train, val, prepared = _prepared(args.rows, k, args.batch_size, device, console)
            preparation.append(prepared)
            data = (fm, train, val)
            results += _regimes(backbones, args.regimes.split(","), k, args.repeats, data, device, console)
            if args.ssim:
                results += _ssim(k, args.repeats, data, device, console)

    setting = (
        f"{len(train.data):,} train rows, batch {args.batch_size}, {args.threads} threads, {device}, "
        f"torch {torch.__version__}"
    )
    console.print(all_runs_table(results, f"training speed: {setting}"))
    console.print(single_vs_mt_table(results, f"single vs mt (one epoch, rows/s): {setting}"))
    if args.ssim:
        console.print(ssim_table(results, f"SSIM search epoch against an mt epoch: {setting}"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "rows": args.rows,
                "threads": args.threads,
                "repeats": args.repeats,
                "preparation": preparation,
                "training": results,
            },
            indent=2,
        )
    )
    console.print(f"written {out}")


if __name__ == "__main__":
    main()
