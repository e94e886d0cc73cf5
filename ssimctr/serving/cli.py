"""`ssimctr-predict` and `ssimctr-evaluate`: a logged model after its run.

ssimctr-predict --model runs:/<run id>/model --input new.csv --output scores.parquet
ssimctr-evaluate --model runs:/<run id>/model --data outputs/cache/synthetic-<key> --split test

The model URI is the one the job printed (`logged model models:/m-... (runs:/<run id>/model)`); --uri is
the job's tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console

from ssimctr.cli.console import print_results, results_rows
from ssimctr.config.datasets import DatasetConfig
from ssimctr.data.loaders import parquet_files
from ssimctr.data.prepare import load_prepared, read_vocabularies
from ssimctr.data.sources.files import scan
from ssimctr.errors import UserError
from ssimctr.metrics import scenario_metrics
from ssimctr.serving.model import VOCAB, LoggedModel, default_tracking_uri, load_logged_model

PROBABILITY = "click_prob"
OUTPUT_FORMATS = (".csv", ".parquet")


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--model", required=True, help="runs:/<run id>/model, models:/<model id> or a local copy")
    parser.add_argument(
        "--uri",
        default=None,
        help="the job's tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)",
    )
    parser.add_argument("--batch-size", type=int, default=65_536, help="rows scored at once")
    return parser


def predict_main(argv: Sequence[str] | None = None) -> int:
    """`ssimctr-predict`: the click probability of every row of a CSV / parquet file."""
    parser = _parser("ssimctr-predict", "Score a new CSV or parquet file with a logged ssimctr model.")
    parser.add_argument("--input", required=True, type=Path, help="a CSV or parquet file of the dataset's columns")
    parser.add_argument(
        "--output", required=True, type=Path, help=f"the input's rows plus {PROBABILITY} (.csv or .parquet)"
    )
    parser.add_argument("--separator", default=",", help="the CSV input's separator")
    parser.add_argument(
        "--column", default=PROBABILITY, help="the output's column of probabilities (default: %(default)s)"
    )
    return _main(parser, argv, _predict)


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """`ssimctr-evaluate`: per-scenario AUC and logloss of a logged model on a split."""
    parser = _parser("ssimctr-evaluate", "Per-scenario metrics of a logged ssimctr model on a split.")
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="a prepared dataset folder (with --split), one of its split folders, or a labelled CSV / parquet file",
    )
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="the prepared split")
    parser.add_argument("--separator", default=",", help="a CSV file's separator")
    return _main(parser, argv, _evaluate)


def _main(parser: argparse.ArgumentParser, argv: Sequence[str] | None, command) -> int:
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr keeps to warnings and errors
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines (store migrations) too
    args.uri = args.uri or default_tracking_uri()
    console, errors = Console(), Console(stderr=True)
    try:
        if args.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
        command(args, console, errors)
    except UserError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 2
    return 0


def _predict(args: argparse.Namespace, console: Console, errors: Console) -> None:
    started = time.perf_counter()
    if args.output.suffix not in OUTPUT_FORMATS:
        raise UserError(f"--output {args.output}: write a .csv or a .parquet file")
    rows = _read(args.input, args.separator, "--input")  # a bad input fails before the model downloads
    if args.column in rows.columns:
        raise UserError(
            f"--input {args.input} has a column '{args.column}' already: name the output's with --column NAME"
        )
    logged = load_logged_model(args.model, args.uri)
    scores = score_rows(logged, rows, str(args.input), errors, args.batch_size)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    out = rows.with_columns(pl.Series(args.column, scores, dtype=pl.Float64).fill_nan(None))
    if args.output.suffix == ".csv":
        out.write_csv(args.output)
    else:
        out.write_parquet(args.output)
    console.print(
        f"scored {out.height:,} rows of {args.input} with {args.model} in {time.perf_counter() - started:.1f}s "
        f"-> {args.output} (column {args.column})",
        highlight=False,
        soft_wrap=True,
    )


def score_file(
    logged: LoggedModel, path: Path, separator: str = ",", errors: Console | None = None, batch_size: int = 65_536
) -> tuple[pl.DataFrame, np.ndarray]:
    """The file's rows and the click probability of each (`score_rows`)."""
    rows = _read(path, separator, "--input")
    return rows, score_rows(logged, rows, str(path), errors, batch_size)


def score_rows(
    logged: LoggedModel, rows: pl.DataFrame, origin: str, errors: Console | None = None, batch_size: int = 65_536
) -> np.ndarray:
    """The click probability of each row (NaN where the model does not know the row's scenario: counted
    in one warning on `errors`)."""
    encoded, unknown = logged.encode(rows.lazy(), origin)
    scores = np.full(rows.height, np.nan)
    known = encoded.filter(pl.col("scenario").is_not_null())
    if known.height:
        logits = logged.logits(known.with_columns(pl.col("label").fill_null(0)), batch_size)
        scores[known["row_id"].to_numpy()] = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    if unknown:
        column = logged.feature_map.extra["scenario_rule"]["column"]
        (errors or Console(stderr=True)).print(
            f"[yellow]warning:[/] {unknown:,} of {rows.height:,} rows of {origin} have a value of column '{column}' "
            f"that is none of the model's scenarios ({', '.join(logged.feature_map.scenario_names)}): "
            "they get no probability",
            highlight=False,
            soft_wrap=True,
        )
    return scores


def _read(path: Path, separator: str, option: str) -> pl.DataFrame:
    """A CSV or parquet file, read as the job's file sources read one."""
    options = DatasetConfig(name="input", label="", separator=separator)
    try:
        return scan(path, options, option).collect()
    except pl.exceptions.PolarsError as error:
        detail = (str(error).strip().splitlines() or [""])[0]
        raise UserError(f"{option} {path}: cannot read it ({detail})") from None


def _evaluate(args: argparse.Namespace, console: Console, errors: Console) -> None:
    logged = load_logged_model(args.model, args.uri)
    results, summary, where = evaluate(logged, args.data, args.split, args.separator, errors, args.batch_size)
    print_results(console, results_rows(results, summary, split=args.split), title=f"{where}, model {args.model}")


def evaluate(
    logged: LoggedModel,
    data: Path,
    split: str = "test",
    separator: str = ",",
    errors: Console | None = None,
    batch_size: int = 65_536,
) -> tuple[dict[str, float], list[dict], str]:
    """The metrics of `split`/auc|logloss/<scenario|overall|mean> of the model on `data`, the rows,
    positives and CTR per scenario, and what was evaluated in words."""
    labels, logits, scenario, where = _evaluation_rows(logged, data, split, separator, errors, batch_size)
    names = logged.feature_map.scenario_names
    results = scenario_metrics(split, labels, logits, scenario, names)
    summary = []
    for k, name in enumerate(names):
        mine = labels[scenario == k]
        summary.append(
            {
                "scenario": name,
                "rows": len(mine),
                "positives": int(mine.sum()),
                "ctr": float(mine.mean()) if len(mine) else float("nan"),
            }
        )
    return results, summary, where


def _evaluation_rows(
    logged: LoggedModel, data: Path, split_name: str, separator: str, errors: Console | None, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(labels, logits, scenario, a description) of the rows `--data` names."""
    data = Path(data)
    if not data.exists():
        raise UserError(f"--data {data}: no such file or folder")
    prepared = (
        data if (data / "manifest.json").exists() else data.parent if (data.parent / "manifest.json").exists() else None
    )
    if prepared is None:  # a raw file: encoded as predict encodes one, its labels required
        rows = _read(data, separator, "--data")
        encoded, unknown = logged.encode(rows.lazy(), str(data))
        label = logged.dataset.label
        if encoded["label"].null_count():
            raise UserError(f"--data {data}: column '{label}' (the label) is missing or empty in some rows")
        if unknown:
            (errors or Console(stderr=True)).print(
                f"[yellow]warning:[/] {unknown:,} rows of {data} have an unknown scenario: left out", highlight=False
            )
        encoded = encoded.filter(pl.col("scenario").is_not_null())
        where = f"{data}"
    else:
        split = data / split_name if data == prepared else data
        _check_same_encoding(logged, prepared)
        encoded = pl.read_parquet(parquet_files(split))
        where = f"{split.name} of {prepared}"
    logits = logged.logits(encoded, batch_size)
    return encoded["label"].to_numpy().astype(np.float32), logits, encoded["scenario"].to_numpy(), where


def _check_same_encoding(logged: LoggedModel, prepared: Path) -> None:
    """The prepared data encodes ids with the model's vocabularies, or one clear error."""
    data = load_prepared(prepared)
    model_map = json.loads(json.dumps(logged.feature_map.__dict__, default=str))
    data_map = json.loads(json.dumps(data.feature_map.__dict__, default=str))
    same = model_map == data_map and all(
        logged.vocabularies[name].equals(vocabulary)
        for name, vocabulary in read_vocabularies(prepared / VOCAB, data.feature_map.categorical_names).items()
    )
    if not same:
        raise UserError(
            f"--data {prepared} was prepared with other vocabularies or scenarios than the model's data: its ids "
            "mean other values; evaluate its raw labelled file instead (--data <file.csv|parquet>)"
        )
