"""Preparation: source -> validation -> scenarios -> split -> vocab (train only) -> encode -> cache.

Streaming: the source is read in streaming passes (drop counts, time quantiles) and sunk once to a
staged parquet file; vocabularies, statistics and the encoded splits are computed from it with
streaming queries and sinks, so memory grows with the vocabularies, not with the rows.

The prepared dataset is a folder under the cache: train/, val/ and test/ (each a folder of parquet
shards of at most dataset.shard_rows rows, read in name order), feature_map.json, manifest.json
and vocab/<field>.parquet. Its name carries a hash of the dataset, scenario and
split config plus the source fingerprint, so a repeated run reuses it (a cache hit).
With dataset.truth the splits keep that column as `_truth` beside the features, for SSIM's search to
score its selection against (ssimctr.ssim.artifacts.planted_truth); the loaders never read it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

import ssimctr
from ssimctr.config.datasets import DatasetConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.columns import (
    check_columns,
    feature_roles,
    label_expression,
    numeric_expressions,
    text_expressions,
    time_expression,
)
from ssimctr.data.scenarios import assign_scenarios, assignment_from_rule
from ssimctr.data.sources import load_source
from ssimctr.data.sources.base import SPLIT_COLUMN, SPLITS
from ssimctr.data.split_assignment import split_assignment
from ssimctr.data.vectors import field_name, fingerprints, join_vectors, missing_rows
from ssimctr.errors import UserError, cannot_write
from ssimctr.features.feature_map import CategoricalField, FeatureMap, NumericField
from ssimctr.features.vocab import encode, fit_numeric, fit_vocabularies, standardize
from ssimctr.metrics import auc
from ssimctr.utils.process import alive_since

PREPARATION_CODE = ("data", "features")  # packages whose source is part of the cache key
TRUTH_COLUMN = "_truth"  # dataset.truth in the prepared splits (a planted 0/1 answer, not a feature)
STAGING = ".tmp-"  # <prepared folder>.tmp-<host>-<pid>: a preparation under way (renamed when it is done)
SCENARIO_RULE = "scenario_rule"  # feature_map.extra: how a source value becomes a scenario index (new rows too)
HASH_MODULUS = 1_000_000_007


def code_digest() -> str:
    """A hash of the preparation code: changing how data is prepared invalidates the cache."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in PREPARATION_CODE:
        for file in sorted((root / package).rglob("*.py")):
            digest.update(file.relative_to(root).as_posix().encode() + file.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Holdout:
    """Entities held out of training (task=cold_start's task.holdout): a seeded share of the users (or
    items), by the hash of their raw value. Their train rows leave the data before the vocabularies and
    numeric statistics are fitted, so nothing of theirs is learned; their val and test rows stay."""

    entity: str  # "user" | "item": the dataset.user / dataset.item column
    share: float
    seed: int

    def held_out(self, key: pl.Expr) -> pl.Expr:
        """Whether the entity of `key` (its `entity_key`, the <entity>_key column) is held out."""
        return (key.hash(seed=self.seed) % HASH_MODULUS).cast(pl.Float64) / HASH_MODULUS < self.share


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset on disk."""

    path: Path
    feature_map: FeatureMap
    manifest: dict
    cache_hit: bool

    def split_path(self, split: str) -> Path:
        """The folder of the split's parquet shards."""
        return self.path / split


def prepare(
    dataset: DatasetConfig,
    scenario: ScenarioConfig,
    rule: SplitConfig,
    cache_root: Path,
    progress: Callable[[str], None] = lambda message: None,
    holdout: Holdout | None = None,
) -> PreparedDataset:
    """Prepare `dataset`, its rows split by `rule` (or reuse the cached preparation of the same config and
    input); `progress` receives one line per stage (rows read, dropped by reason, rows written).
    `holdout`: the held-out entities' train rows are dropped first (counted as dropped.held_out)."""
    source = load_source(dataset, rule)
    key = cache_key(dataset, scenario, rule, source.fingerprint)
    if holdout is not None:
        key = hashlib.sha256(f"{key}|holdout={asdict(holdout)}".encode()).hexdigest()
    target = Path(cache_root) / f"{dataset.name}-{key[:16]}"
    remove_dead_staging(Path(cache_root))
    if (target / "manifest.json").exists():
        return load_prepared(target, cache_hit=True)
    started = time.perf_counter()
    staging = target.with_name(f"{target.name}{STAGING}{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "vocab").mkdir(parents=True)
    try:
        try:
            manifest = _build(source, dataset, scenario, rule, staging, progress, holdout)
        except pl.exceptions.PolarsError as error:
            raise _polars_error(error, source.origin, Path(cache_root)) from None
        manifest.update(cache_key=key, seconds=round(time.perf_counter() - started, 3))
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_prepared(target, cache_hit=False)


def remove_dead_staging(cache_root: Path) -> list[Path]:
    """Remove what preparations whose process died (kill -9, out of memory, a power cut) left in the cache:
    their `<name>.tmp-<host>-<pid>` staging folders, when the process is gone from this host (a
    preparation of another machine sharing the cache is left alone). Returns the folders removed."""
    removed = []
    for folder in Path(cache_root).glob(f"*{STAGING}*") if Path(cache_root).is_dir() else []:
        host, _, pid = folder.name.rsplit(STAGING, 1)[1].rpartition("-")
        if not pid.isdigit() or (host and host != socket.gethostname()):
            continue
        try:
            written = folder.stat().st_mtime  # a live preparation's process started before its last write
        except FileNotFoundError:  # removed meanwhile (its preparation ended)
            continue
        if not alive_since(int(pid), written):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _polars_error(error: pl.exceptions.PolarsError, origin: str, cache_root: Path) -> UserError:
    """A polars failure while preparing as one line: the cause, and the hint that fits it. An OS error
    (a full or read-only disk while writing the cache) names paths.cache; a parquet file that cannot be
    read (empty, cut short) is said to be one; anything else was met parsing the input's text."""
    detail = str(error).strip().splitlines()[0]
    code = re.search(r"\(os error (\d+)\)", detail)
    if code and int(code[1]) in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):  # only a write meets these
        number = int(code[1])
        return cannot_write(OSError(number, os.strerror(number)), "paths.cache", cache_root) or UserError(detail)
    if code:
        return UserError(f"preparing {origin} failed: {detail}")
    if isinstance(error, pl.exceptions.NoDataError):
        return UserError(f"{origin} is empty ({detail}): give a file with a header line and rows")
    if "parquet" in detail.lower():
        return UserError(
            f"reading {origin} failed: {detail}: check that it is a whole parquet file (an empty or cut-short "
            "file cannot be read; write it again)"
        )
    return UserError(
        f"reading {origin} failed: {detail}. Check the file's separator (dataset.separator), header and column values"
    )


def load_prepared(path: Path, cache_hit: bool = False) -> PreparedDataset:
    """Open a prepared dataset folder."""
    manifest = json.loads((path / "manifest.json").read_text())
    return PreparedDataset(path, FeatureMap.from_json(path / "feature_map.json"), manifest, cache_hit)


def cache_key(dataset: DatasetConfig, scenario: ScenarioConfig, rule: SplitConfig, fingerprint: dict) -> str:
    payload = {
        "dataset": asdict(dataset),
        "scenario": asdict(scenario),
        "split": asdict(rule),
        "source": fingerprint,
        "vectors": fingerprints(dataset.vectors),
        "code": code_digest(),
        "polars": pl.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _build(
    source,
    dataset: DatasetConfig,
    scenario: ScenarioConfig,
    rule: SplitConfig,
    out: Path,
    progress: Callable[[str], None],
    holdout: Holdout | None = None,
) -> dict:
    roles = feature_roles(dataset)
    frame = source.load()
    check_columns(frame.collect_schema(), dataset, source.origin)
    if scenario.column not in frame.collect_schema().names():
        assign_scenarios(frame, scenario, source.origin)  # its error names the source's columns
    frame = frame.with_row_index("row_id").with_columns(pl.col("row_id").cast(pl.Int64))
    frame = join_vectors(frame, dataset.vectors, out, source.origin)
    vectors = [field_name(spec) for spec in dataset.vectors]
    progress(f"reading {source.origin}")
    raw = out / "raw.parquet"  # the one pass over the source: the columns the preparation reads
    needed = source_columns(dataset, scenario, roles, frame.collect_schema().names())
    frame = stage(frame, ["row_id", *needed, *vectors], raw)

    assignment = assign_scenarios(frame, scenario, source.origin)
    columns = [
        pl.col("row_id"),
        assignment.expression.alias("scenario"),
        pl.col(scenario.column).is_null().alias("_scenario_null"),
        *feature_expressions(frame, dataset, roles, source.origin),
        *[pl.col(c) for c in vectors],
    ]
    if dataset.time:
        columns.append(time_expression(frame, dataset, source.origin).alias("ts"))
    for entity, column in (("user", dataset.user), ("item", dataset.item)):
        if column:  # the raw value's identity survives encoding (a cold id is OOV): cold-start groups by it
            columns.append(entity_key(pl.col(column)).alias(f"{entity}_key"))
    if dataset.oracle:
        columns.append(pl.col(dataset.oracle).cast(pl.Float64).alias("_oracle"))
    if dataset.truth:  # kept in the prepared splits beside the features, never read as one
        columns.append(pl.col(dataset.truth).cast(pl.Int8).alias(TRUTH_COLUMN))
    if SPLIT_COLUMN in frame.collect_schema().names():
        columns.append(pl.col(SPLIT_COLUMN))
    frame = frame.select(columns)

    drop_rules = [
        ("label_missing", pl.col("label").is_null()),
        ("scenario_missing", pl.col("_scenario_null")),
        (assignment.drop_reason, pl.col("scenario").is_null()),
    ]
    if rule.kind == "time" and dataset.time:
        drop_rules.append(("time_missing", pl.col("ts").is_null()))
    dropped, frame = _drop_counted(frame, drop_rules)
    frame = frame.drop("_scenario_null")
    frame = frame.with_columns(split_assignment(frame, rule, has_time=bool(dataset.time)).alias(SPLIT_COLUMN))
    staged = out / "staged.parquet"  # the rows kept, with their split: every later pass reads this
    table = stage(frame, frame.collect_schema().names(), staged)
    raw.unlink()
    read = _check_splits(table, rule, source.origin) + sum(dropped.values())
    progress(
        f"{read:,} rows read, {read - sum(dropped.values()):,} kept"
        + (f", dropped: {', '.join(f'{k} {v:,}' for k, v in dropped.items())}" if dropped else "")
    )
    if holdout is not None:  # before anything is fitted: the held-out entities' train rows leave the data
        held, table = _drop_counted(table, [("held_out", _held_out_train_rows(dataset, holdout))])
        dropped["held_out"] = held.get("held_out", 0)
        progress(f"held out {holdout.share:g} of the {holdout.entity}s: {dropped['held_out']:,} train rows dropped")

    train = table.filter(pl.col(SPLIT_COLUMN) == 0)
    vocabularies = fit_vocabularies(train, roles["categorical"], dataset.min_freq)
    numeric = fit_numeric(train, roles["numeric"])
    encoded = encode_features(table, vocabularies, numeric)
    for column, vocab in vocabularies.items():
        vocab.write_parquet(out / "vocab" / f"{column}.parquet")
    write_splits(encoded.drop("_oracle", strict=False), out, dataset.shard_rows)
    for name in SPLITS:
        shards = list((out / name).glob("*.parquet"))
        progress(
            f"{name} written: {pl.scan_parquet(shards).select(pl.len()).collect().item():,} rows "
            f"in {len(shards)} shard{'s' if len(shards) > 1 else ''}"
        )

    feature_map = FeatureMap(
        categorical=tuple(CategoricalField(c, vocabularies[c].height + 1) for c in roles["categorical"]),
        numeric=tuple(numeric),
        text=tuple(roles["text"]),
        scenario_names=tuple(assignment.names),
        scenario_column=scenario.column or "",
        label_column=dataset.label,
        user=dataset.user,
        item=dataset.item,
        time="ts" if dataset.time else None,
        extra={SCENARIO_RULE: assignment.rule},
        vectors=tuple(vectors),
    )
    feature_map.to_json(out / "feature_map.json")
    manifest = _manifest(out, feature_map, dropped, source, dataset, scenario, rule)
    if holdout is not None:
        manifest["holdout"] = asdict(holdout)
    if vectors:
        manifest["vectors_missing"] = missing_rows(out, vectors, SPLITS)
    if dataset.user or dataset.item:
        manifest["cold"] = _cold_counts(out, feature_map)
    if dataset.oracle:
        manifest["oracle_auc"] = _oracle_auc(table, feature_map.scenario_names)
    staged.unlink()
    return manifest


def source_columns(
    dataset: DatasetConfig, scenario: ScenarioConfig, roles: dict[str, list[str]], available: list[str]
) -> list[str]:
    """The source columns a preparation reads, each once: label, scenario, features, time, oracle, truth and
    the split of given files (`available`: the source's columns)."""
    named = [dataset.label, scenario.column, *[c for cols in roles.values() for c in cols]]
    named += [dataset.time, dataset.oracle, dataset.truth, SPLIT_COLUMN if SPLIT_COLUMN in available else None]
    return list(dict.fromkeys(c for c in named if c))


def stage(frame: pl.LazyFrame, columns: list[str], path: Path) -> pl.LazyFrame:
    """`columns` of `frame` written to the parquet file `path` in one streaming pass, and the lazy scan of it.
    LZ4: a staged file is read a few times and deleted, so fast beats small."""
    frame.select(columns).sink_parquet(path, compression="lz4")
    return pl.scan_parquet(path)


def write_splits(encoded: pl.LazyFrame, out: Path, shard_rows: int) -> None:
    """The rows of each split (SPLIT_COLUMN) in `out`/train, val and test, in their order, as shards
    00000000.parquet, 00000001.parquet, ... of at most `shard_rows` rows: one streaming pass. Zstandard level 1:
    about a fifth less CPU than polars' default level for 4 % larger files, read back as fast."""
    encoded.sink_parquet(
        pl.PartitionBy(
            out,
            key=SPLIT_COLUMN,
            include_key=False,
            max_rows_per_file=shard_rows,
            file_path_provider=lambda file: (
                f"{SPLITS[file.partition_keys.item()]}/{file.index_in_partition:08d}.parquet"
            ),
        ),
        compression="zstd",
        compression_level=1,
        mkdir=True,
    )


def feature_expressions(
    frame: pl.LazyFrame, dataset: DatasetConfig, roles: dict[str, list[str]], origin: str
) -> list[pl.Expr]:
    """The label (0/1, null where missing) and the features of the source's rows, not yet encoded:
    categorical values as read, numeric values as Float64, texts as strings ("" where missing)."""
    return [
        label_expression(frame, dataset, origin).alias("label"),
        *[pl.col(c) for c in roles["categorical"]],
        *numeric_expressions(frame, roles["numeric"], origin),
        *text_expressions(frame, roles["text"], origin),
    ]


def encode_features(
    frame: pl.LazyFrame, vocabularies: dict[str, pl.DataFrame], numeric: list[NumericField] | tuple[NumericField, ...]
) -> pl.LazyFrame:
    """Categorical values as vocabulary indexes (0 = out of vocabulary), numeric values standardized."""
    return standardize(encode(frame, vocabularies), list(numeric))


def read_vocabularies(folder: Path, columns: list[str]) -> dict[str, pl.DataFrame]:
    """The vocabularies `prepare` wrote (vocab/<column>.parquet of a prepared dataset)."""
    return {column: pl.read_parquet(Path(folder) / f"{column}.parquet") for column in columns}


def encode_rows(
    frame: pl.LazyFrame,
    dataset: DatasetConfig,
    feature_map: FeatureMap,
    vocabularies: dict[str, pl.DataFrame],
    origin: str,
) -> tuple[pl.LazyFrame, int]:
    """New rows of the source's columns encoded as the prepared dataset of `feature_map` (and
    `vocabularies`, `read_vocabularies`) encoded its own: the frame of `batch_from_frame` (row_id = the
    row's position in `frame`), and the number of rows whose scenario the dataset does not know
    (scenario null: the caller decides). A missing label column gives null labels."""
    if SCENARIO_RULE not in feature_map.extra:
        raise UserError(
            "the prepared dataset records no scenario rule (it was prepared by an older ssimctr): "
            "prepare it again and retrain to score new files"
        )
    rule = feature_map.extra[SCENARIO_RULE]
    schema = frame.collect_schema()
    if dataset.label not in schema.names():
        frame = frame.with_columns(pl.lit(None, dtype=pl.Int8).alias(dataset.label))
    # the columns the model reads: no time, oracle, truth; no text or vectors (ID and numeric models only)
    scored = replace(dataset, time=None, oracle=None, truth=None, text=[], vectors=[], scenario=rule["column"])
    check_columns(frame.collect_schema(), scored, origin)
    roles = feature_roles(scored)
    assignment = assignment_from_rule(rule, feature_map.scenario_names, frame.collect_schema())
    frame = frame.with_row_index("row_id").select(
        pl.col("row_id").cast(pl.Int64),
        assignment.expression.alias("scenario"),
        *feature_expressions(frame, scored, roles, origin),
    )
    unknown = int(frame.select(pl.col("scenario").is_null().sum()).collect().item())
    encoded = encode_features(frame, {c: vocabularies[c] for c in roles["categorical"]}, feature_map.numeric)
    return encoded, unknown


def _drop_counted(frame: pl.LazyFrame, rules: list[tuple[str, pl.Expr]]) -> tuple[dict[str, int], pl.LazyFrame]:
    """Drop the rows matching any rule; count each dropped row once, under its first rule's reason."""
    exclusive, earlier = [], pl.lit(False)
    for _, condition in rules:
        exclusive.append(condition & ~earlier)
        earlier = earlier | condition
    sums = frame.select([cond.sum().alias(str(i)) for i, cond in enumerate(exclusive)]).collect().row(0)
    counts: dict[str, int] = {}
    for (reason, _), n in zip(rules, sums):
        if n:
            counts[reason] = counts.get(reason, 0) + int(n)
    return counts, frame.filter(~earlier)


def _check_splits(table: pl.LazyFrame, rule: SplitConfig, origin: str) -> int:
    """Every split has rows, or a clear error naming the empty one and the fix; returns the row count."""
    sizes = table.group_by(SPLIT_COLUMN).agg(pl.len()).collect()
    present = dict(zip(sizes[SPLIT_COLUMN].to_list(), sizes["len"].to_list()))
    total = sum(present.values())
    if total == 0:
        raise UserError(f"no rows left in {origin} after dropping rows with a missing label, scenario or time")
    for index, name in enumerate(SPLITS):
        if not present.get(index):
            fix = {
                "time": "adjust split.fractions or split.cutoffs",
                "random": "adjust split.fractions",
                "given": f"check dataset.{'path' if index == 0 else name + '_path'}",
            }[rule.kind]
            raise UserError(f"split={rule.kind} leaves the {name} split empty (0 of {total} rows in {origin}): {fix}")
    return total


def _manifest(
    out: Path,
    feature_map: FeatureMap,
    dropped: dict,
    source,
    dataset: DatasetConfig,
    scenario: ScenarioConfig,
    rule: SplitConfig,
) -> dict:
    """Rows and positives per split × scenario (read back from the written files), drops, provenance."""
    names = feature_map.scenario_names
    counts = {}
    for split_name in SPLITS:
        per = (
            pl.scan_parquet(out / split_name)
            .group_by("scenario")
            .agg(pl.len().alias("rows"), pl.col("label").cast(pl.Int64).sum().alias("positives"))
            .collect()
        )
        by_index = {row["scenario"]: row for row in per.iter_rows(named=True)}
        counts[split_name] = {
            "rows": int(per["rows"].sum()),
            "positives": int(per["positives"].sum()),
            "scenarios": {
                names[k]: {
                    "rows": int(by_index.get(k, {}).get("rows", 0)),
                    "positives": int(by_index.get(k, {}).get("positives", 0)),
                }
                for k in range(len(names))
            },
        }
    manifest = {
        "dataset": dataset.name,
        "splits": counts,
        "dropped": dropped,
        "scenarios": list(names),
        "source": source.fingerprint,
        "config": {"dataset": asdict(dataset), "scenario": asdict(scenario), "split": asdict(rule)},
        "versions": {"ssimctr": ssimctr.__version__, "preparation_code": code_digest(), "polars": pl.__version__},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return manifest


def _held_out_train_rows(dataset: DatasetConfig, holdout: Holdout) -> pl.Expr:
    """The train rows whose user (item) `holdout` holds out."""
    if getattr(dataset, holdout.entity) is None:
        raise UserError(
            f"task.holdout needs the dataset to name its {holdout.entity} column: set dataset.{holdout.entity}=<column>"
        )
    return (pl.col(SPLIT_COLUMN) == 0) & holdout.held_out(pl.col(f"{holdout.entity}_key"))


def entity_key(column: pl.Expr) -> pl.Expr:
    """A stable Int64 identity of a user's or item's raw value (its hash), kept beside the encoded id."""
    return column.cast(pl.String).hash(seed=0).reinterpret(signed=True)


def _cold_counts(out: Path, feature_map: FeatureMap) -> dict:
    """Per entity kind, split and scenario: the users (items) of val and test that have no train row,
    and their rows (the natural cold entities of a time split)."""
    counts: dict = {}
    for entity in ("user", "item"):
        if getattr(feature_map, entity) is None:
            continue
        key = f"{entity}_key"
        warm = pl.scan_parquet(out / "train").select(key).unique()
        counts[entity] = {}
        for split_name in ("val", "test"):
            cold = pl.scan_parquet(out / split_name).join(warm, on=key, how="anti")
            per = cold.group_by("scenario").agg(pl.col(key).n_unique().alias("entities"), pl.len().alias("rows"))
            by_index = {row["scenario"]: row for row in per.collect().iter_rows(named=True)}
            counts[entity][split_name] = {
                name: {field: int(by_index.get(k, {}).get(field, 0)) for field in ("entities", "rows")}
                for k, name in enumerate(feature_map.scenario_names)
            }
    return counts


def _oracle_auc(table: pl.LazyFrame, names: tuple[str, ...]) -> dict:
    """AUC of the true click probability per split and scenario: the ceiling any model can reach."""
    columns = table.select(SPLIT_COLUMN, "scenario", "label", "_oracle").collect()
    result = {}
    for index, split_name in enumerate(SPLITS):
        part = columns.filter(pl.col(SPLIT_COLUMN) == index)
        groups = sorted(part.group_by("scenario"), key=lambda item: item[0][0])
        result[split_name] = {
            names[k]: auc(group["label"].to_numpy(), group["_oracle"].to_numpy()) for (k,), group in groups
        }
        result[split_name]["overall"] = auc(part["label"].to_numpy(), part["_oracle"].to_numpy())
    return result
