"""Benchmark: preparation at scale, from raw CSV files, with bounded memory.

    .venv/bin/python bench/scale.py                          # 5M, 10M and 20M rows
    .venv/bin/python bench/scale.py --sizes 1000000          # a quick check
    .venv/bin/python bench/scale.py --sizes 20000000 --train  # + one training epoch, streamed vs in memory

Writes synthetic logs as CSV (outputs/bench/scale/rows_<n>.csv, kept for reruns; each generated in a
process of its own), prepares each through `dataset=tabular` in a fresh process and reports wall time,
rows/s and peak RSS of that process; figures go to the terminal and outputs/bench/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from ssimctr.config.datasets import DatasetConfig, SyntheticConfig
from ssimctr.config.models import DNNConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig, TrainerConfig
from ssimctr.data import synthetic
from ssimctr.data.loaders import InMemoryLoader, ParquetStreamLoader, read_split
from ssimctr.data.prepare import PreparedDataset, prepare
from ssimctr.tasks.base import build_model
from ssimctr.train.loop import fit, make_optimizer
from ssimctr.train.sharing import FixedSharing
from ssimctr.utils.seed import configure_torch


def write_csv(rows: int, folder: Path) -> Path:
    """The synthetic log of `rows` rows as CSV (generated once, in a process of its own: see `csv_of`)."""
    path = folder / f"rows_{rows}.csv"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        synthetic.generate(
            SyntheticConfig(rows=rows, users=max(20_000, rows // 50), items=max(5_000, rows // 200))
        ).write_csv(path)
    return path


def csv_of(rows: int, folder: Path) -> Path:
    """The CSV of `rows` rows, generated in a child process when missing: a process that held the
    generated frame passes its peak on to the preparation children it starts (Linux keeps the larger
    of ru_maxrss across fork/vfork and exec), so this one never holds it and each preparation's peak
    RSS is its own."""
    path = folder / f"rows_{rows}.csv"
    if not path.exists():
        subprocess.run([sys.executable, __file__, "--write-one", str(rows), "--dir", str(folder)], check=True)
    return path


def prepare_once(path: Path, cache: Path) -> tuple[dict, PreparedDataset]:
    """Prepare one CSV (in this process) and report seconds and peak RSS."""
    dataset = DatasetConfig(
        name="scale",
        path=str(path),
        label=synthetic.LABEL,
        scenario=synthetic.SCENARIO,
        categorical=list(synthetic.CATEGORICAL),
        numeric=list(synthetic.NUMERIC),
        time=synthetic.TIME,
        user="user_id",
        item="item_id",
    )
    started = time.perf_counter()
    data = prepare(dataset, ScenarioConfig(kind="column", column=synthetic.SCENARIO), SplitConfig(kind="time"), cache)
    seconds = time.perf_counter() - started
    rows = sum(data.manifest["splits"][s]["rows"] for s in ("train", "val", "test"))
    return {"rows": rows, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}, data


def train_once(data: PreparedDataset, streamed: bool) -> dict:
    """One training epoch of the DNN (mt, batch 2048, 2 threads) on the train split: rows/s and peak RSS."""
    configure_torch(2)
    fm = data.feature_map
    train = (
        ParquetStreamLoader(data.split_path("train"), fm, 2048, shuffle=True)
        if streamed
        else InMemoryLoader(read_split(data.split_path("train"), fm), 2048, shuffle=True)
    )
    model = build_model(OmegaConf.structured(DNNConfig), fm, fm.num_scenarios, scenario_feature=True)
    history = fit(
        model,
        FixedSharing(0.0),
        make_optimizer(TrainerConfig(), model.parameters()),
        train,
        lambda m: {"val/auc/mean": 0.0},
        TrainerConfig(epochs=1, patience=1, progress=False, seed=0),
    )
    return {
        "streamed": streamed,
        "rows": history.train_rows,
        "rows_per_s": history.rows_per_second,
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000000,10000000,20000000")
    parser.add_argument("--dir", default="outputs/bench/scale")
    parser.add_argument("--train", action="store_true", help="also train one epoch on the largest size")
    parser.add_argument("--prepare-one", help=argparse.SUPPRESS)
    parser.add_argument("--train-one", help=argparse.SUPPRESS)
    parser.add_argument("--write-one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_one:
        write_csv(args.write_one, Path(args.dir))
        return
    if args.prepare_one:
        with tempfile.TemporaryDirectory() as cache:
            print(json.dumps(prepare_once(Path(args.prepare_one), Path(cache))[0]))
        return
    if args.train_one:
        with tempfile.TemporaryDirectory() as cache:
            _, data = prepare_once(Path(args.train_one), Path(cache))
            print(json.dumps(train_once(data, streamed=os.environ.get("SSIMCTR_BENCH_STREAM") == "1")))
        return
    console = Console()
    results = []
    for rows in (int(n) for n in args.sizes.split(",")):
        path = csv_of(rows, Path(args.dir))
        out = subprocess.run(
            [sys.executable, __file__, "--prepare-one", str(path)], capture_output=True, text=True, check=True
        ).stdout
        result = json.loads(out.strip().splitlines()[-1]) | {"csv_mb": path.stat().st_size / 2**20}
        results.append(result)
        console.print(
            f"{rows:,} rows: {result['seconds']:.1f}s, {result['rows'] / result['seconds']:,.0f} rows/s, "
            f"peak RSS {result['peak_rss_mb']:,.0f} MiB"
        )
    table = Table(title="preparation from CSV (tabular, time split, vocab on train, parquet out)")
    for column in ("rows", "CSV MiB", "seconds", "rows/s", "µs/row", "peak RSS MiB"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            f"{r['rows']:,}",
            f"{r['csv_mb']:,.0f}",
            f"{r['seconds']:.1f}",
            f"{r['rows'] / r['seconds']:,.0f}",
            f"{1e6 * r['seconds'] / r['rows']:.2f}",
            f"{r['peak_rss_mb']:,.0f}",
        )
    console.print(table)
    training = []
    if args.train:
        for streamed in (True, False):
            out = subprocess.run(
                [sys.executable, __file__, "--train-one", str(path)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "SSIMCTR_BENCH_STREAM": "1" if streamed else "0"},
            ).stdout
            training.append(json.loads(out.strip().splitlines()[-1]))
            console.print(
                f"one epoch on {training[-1]['rows']:,} train rows, "
                f"{'streamed from parquet' if streamed else 'in memory'}: "
                f"{training[-1]['rows_per_s']:,.0f} rows/s, peak RSS {training[-1]['peak_rss_mb']:,.0f} MiB "
                "(preparation included)"
            )
    Path("outputs/bench").mkdir(parents=True, exist_ok=True)
    Path("outputs/bench/scale.json").write_text(json.dumps({"prepare": results, "train": training}, indent=2))


if __name__ == "__main__":
    main()
