"""Episodes from prepared rows: each entity's rows in time order, the first rounds × K its support set
(warm-up round r: rows r·K .. (r+1)·K − 1), the rest its query set, and its profile (its own attribute
values) read from its first row (docs/methods.md §2.2)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import torch

from ssimctr.coldstart.base import Attributes, Episodes
from ssimctr.data.loaders import batch_from_frame
from ssimctr.features.feature_map import FeatureMap


@dataclass(frozen=True)
class EpisodeCounts:
    """How many entities and rows became tasks, and how many were left out (too few rows)."""

    tasks: int
    support_rows: int
    query_rows: int
    left_out_entities: int
    left_out_rows: int


def build_episodes(
    frame: pl.DataFrame,
    key: str,
    shots: int,
    feature_map: FeatureMap,
    attributes: Attributes,
    rounds: int = 1,
) -> tuple[Episodes, EpisodeCounts]:
    """One task per entity (`key` column) with more than rounds × `shots` rows: its first rounds ×
    `shots` rows by time (then row id) are the support set, the rest the query set; its profile is its
    first row with everything but `attributes` blanked. Entities with at most rounds × `shots` rows are
    left out and counted."""
    support_size = shots * rounds
    order = [key, "ts", "row_id"] if "ts" in frame.columns else [key, "row_id"]
    ranked = frame.sort(order).with_columns(
        pl.int_range(pl.len()).over(key).alias("_rank"), pl.len().over(key).alias("_size")
    )
    kept = ranked.filter(pl.col("_size") > support_size).with_columns(pl.col(key).rank("dense").sub(1).alias("_task"))
    left_out = ranked.filter(pl.col("_size") <= support_size)
    kept = kept.sort("_task", "_rank")
    support = kept.filter(pl.col("_rank") < support_size)
    query = kept.filter(pl.col("_rank") >= support_size)
    episodes = Episodes(
        support=batch_from_frame(support, feature_map),
        support_task=torch.from_numpy(support["_task"].to_numpy().astype("int64")),
        query=batch_from_frame(query, feature_map),
        query_task=torch.from_numpy(query["_task"].to_numpy().astype("int64")),
        num_tasks=int(kept[key].n_unique()),
        profile=attributes.blank(batch_from_frame(kept.filter(pl.col("_rank") == 0), feature_map)),
        rounds=rounds,
    )
    counts = EpisodeCounts(
        tasks=episodes.num_tasks,
        support_rows=support.height,
        query_rows=query.height,
        left_out_entities=int(left_out[key].n_unique()),
        left_out_rows=left_out.height,
    )
    return episodes, counts
