"""Episodes from prepared rows: each entity's rows in time order, the first K its support set, the
rest its query set (docs/methods.md §2.2)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import torch

from ssimctr.coldstart.base import Episodes
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
    frame: pl.DataFrame, key: str, shots: int, feature_map: FeatureMap
) -> tuple[Episodes, EpisodeCounts]:
    """One task per entity (`key` column) with more than `shots` rows: its first `shots` rows by time
    (then row id) are the support set, the rest the query set. Entities with at most `shots` rows
    are left out and counted."""
    order = [key, "ts", "row_id"] if "ts" in frame.columns else [key, "row_id"]
    ranked = frame.sort(order).with_columns(
        pl.int_range(pl.len()).over(key).alias("_rank"), pl.len().over(key).alias("_size")
    )
    kept = ranked.filter(pl.col("_size") > shots).with_columns(pl.col(key).rank("dense").sub(1).alias("_task"))
    left_out = ranked.filter(pl.col("_size") <= shots)
    kept = kept.sort("_task", "_rank")
    support = kept.filter(pl.col("_rank") < shots)
    query = kept.filter(pl.col("_rank") >= shots)
    episodes = Episodes(
        support=batch_from_frame(support, feature_map),
        support_task=torch.from_numpy(support["_task"].to_numpy().astype("int64")),
        query=batch_from_frame(query, feature_map),
        query_task=torch.from_numpy(query["_task"].to_numpy().astype("int64")),
        num_tasks=int(kept[key].n_unique()),
    )
    counts = EpisodeCounts(
        tasks=episodes.num_tasks,
        support_rows=support.height,
        query_rows=query.height,
        left_out_entities=int(left_out[key].n_unique()),
        left_out_rows=left_out.height,
    )
    return episodes, counts
