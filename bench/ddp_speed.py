"""Benchmark: training rows/s of one process against data-parallel processes (trainer=ddp, torchrun, gloo).

    .venv/bin/python bench/ddp_speed.py                          # 200,000 rows, 1 epoch, 1 vs 2 processes
    .venv/bin/python bench/ddp_speed.py --rows 1000000 --epochs 2 --nproc 4

Both run the `ssimctr` command on the same synthetic data (prepared once, shared cache) with the DNN, one
torch thread per process (trainer.threads=1) and trainer.batch_size rows per process per step (so the
data-parallel job's global batch is nproc times larger). rows/s is training only (validation excluded):
the rows of every rank over the slowest rank's seconds (ssimctr.train.distributed.pooled_epoch). On a
machine with fewer cores than processes the processes compete for them. Figures go to the terminal and
to outputs/bench/ddp.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_job(folder: Path, cache: Path, nproc: int, overrides: list[str]) -> dict:
    """One `ssimctr` job (under torchrun with trainer=ddp when nproc > 1); its logged training figures."""
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(_free_port())]
    command = [
        sys.executable,
        *(launcher if nproc > 1 else []),
        "-m",
        "ssimctr",
        f"trainer={'ddp' if nproc > 1 else 'default'}",
        f"paths.outputs={folder}",
        f"paths.cache={cache}",
        "tracking.log_model=false",
        "trainer.threads=1",
        "trainer.progress=false",
        *overrides,
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    metrics = run.data.metrics
    return {
        "processes": nproc,
        "rows_per_s": metrics["train/rows_per_s_mean"],
        "val_auc_mean": metrics["val/auc/mean"],
        "test_auc_mean": metrics["test/auc/mean"],
        "wall_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2048, help="rows per process per step")
    parser.add_argument("--nproc", type=int, default=2, help="data-parallel processes")
    parser.add_argument("--out", default="outputs/bench/ddp.json")
    args = parser.parse_args()
    overrides = [
        f"dataset.rows={args.rows}",
        f"trainer.epochs={args.epochs}",
        f"trainer.patience={args.epochs}",
        f"trainer.batch_size={args.batch_size}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        results = [run_job(Path(tmp) / f"n{n}", cache, n, overrides) for n in (1, args.nproc)]
    single, parallel = results
    scaling = parallel["rows_per_s"] / single["rows_per_s"]
    summary = {
        "rows": args.rows,
        "epochs": args.epochs,
        "batch_size_per_process": args.batch_size,
        "cpus": os.cpu_count(),
        "runs": results,
        "scaling": scaling,
    }
    for row in results:
        print(
            f"{row['processes']} process(es): {row['rows_per_s']:,.0f} train rows/s, val AUC mean "
            f"{row['val_auc_mean']:.4f}, test AUC mean {row['test_auc_mean']:.4f}, wall {row['wall_s']:.1f}s"
        )
    print(f"scaling {args.nproc} processes / 1: {scaling:.2f}x ({os.cpu_count()} CPUs)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
