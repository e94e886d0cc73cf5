"""Streaming the train split from parquet row groups: coverage, order, determinism, parity."""
from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from ssimctr.data.loaders import ParquetStreamLoader, read_split


@pytest.fixture
def grouped_split(prepared_synthetic, tmp_path):
    """The prepared train split rewritten with row groups of 1,000 rows."""
    path = tmp_path / "train.parquet"
    pl.read_parquet(prepared_synthetic.split_path("train")).write_parquet(path, row_group_size=1000)
    return path


def epoch_rows(loader) -> list[torch.Tensor]:
    return [batch.row_id for batch in loader]


def test_every_row_once_per_epoch_in_full_batches(grouped_split, prepared_synthetic):
    loader = ParquetStreamLoader(grouped_split, prepared_synthetic.feature_map, 512, shuffle=True, seed=3,
                                 buffer_rows=4000)
    expected = sorted(read_split(grouped_split, prepared_synthetic.feature_map).row_id.tolist())
    for _ in range(2):
        batches = epoch_rows(loader)
        assert len(batches) == len(loader) == math.ceil(len(expected) / 512)
        assert all(len(b) == 512 for b in batches[:-1])
        assert sorted(torch.cat(batches).tolist()) == expected


def test_order_is_shuffled_per_epoch_and_seeded(grouped_split, prepared_synthetic):
    fm = prepared_synthetic.feature_map
    first = ParquetStreamLoader(grouped_split, fm, 512, shuffle=True, seed=3, buffer_rows=4000)
    again = ParquetStreamLoader(grouped_split, fm, 512, shuffle=True, seed=3, buffer_rows=4000)
    epoch_one, epoch_two = torch.cat(epoch_rows(first)), torch.cat(epoch_rows(first))
    assert not torch.equal(epoch_one, epoch_two)
    assert torch.equal(epoch_one, torch.cat(epoch_rows(again)))
    assert epoch_one[:1000].max() - epoch_one[:1000].min() > 1000  # rows of several row groups mixed


def test_unshuffled_stream_keeps_file_order(grouped_split, prepared_synthetic):
    loader = ParquetStreamLoader(grouped_split, prepared_synthetic.feature_map, 700, shuffle=False)
    rows = torch.cat(epoch_rows(loader))
    assert torch.equal(rows, read_split(grouped_split, prepared_synthetic.feature_map).row_id)
