"""Streaming a split from parquet row groups (one file or a folder of shards): coverage, order,
determinism, scenario filtering."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from ssimctr.data.batch import Batch
from ssimctr.data.datasplit import MemorySplit, StreamedSplit
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
    loader = ParquetStreamLoader(
        grouped_split, prepared_synthetic.feature_map, 512, shuffle=True, seed=3, buffer_rows=4000
    )
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


@pytest.fixture
def sharded_split(prepared_synthetic, tmp_path):
    """The prepared train split as a folder of shards of 3,000 rows, each with row groups of 1,000 rows."""
    folder = tmp_path / "train"
    folder.mkdir()
    frame = pl.read_parquet(prepared_synthetic.split_path("train"))
    for index, start in enumerate(range(0, frame.height, 3000)):
        frame.slice(start, 3000).write_parquet(folder / f"{index:08d}.parquet", row_group_size=1000)
    return folder


def test_a_folder_of_shards_streams_in_file_order_and_shuffles_across_shards(sharded_split, prepared_synthetic):
    fm = prepared_synthetic.feature_map
    expected = read_split(prepared_synthetic.split_path("train"), fm).row_id
    assert len(list(sharded_split.iterdir())) > 2
    assert torch.equal(torch.cat(epoch_rows(ParquetStreamLoader(sharded_split, fm, 700, shuffle=False))), expected)
    shuffled = torch.cat(epoch_rows(ParquetStreamLoader(sharded_split, fm, 512, shuffle=True, buffer_rows=2000)))
    assert sorted(shuffled.tolist()) == sorted(expected.tolist())
    assert not torch.equal(shuffled, expected)


@pytest.mark.parametrize("scenario", [0, 2])
def test_a_scenario_stream_reads_exactly_that_scenarios_rows(sharded_split, prepared_synthetic, scenario):
    fm = prepared_synthetic.feature_map
    memory = MemorySplit(read_split(prepared_synthetic.split_path("train"), fm)).of_scenario(scenario)
    streamed = StreamedSplit(sharded_split, fm, buffer_rows=2000, device=torch.device("cpu")).of_scenario(scenario)
    assert streamed.num_rows == memory.num_rows > 0
    loader = streamed.loader(256, shuffle=False)
    batches = list(loader)
    assert len(batches) == len(loader) == math.ceil(memory.num_rows / 256)
    rows = Batch.concat(batches)
    assert torch.equal(rows.row_id, memory.batch.row_id)
    assert torch.equal(rows.cat, memory.batch.cat) and torch.equal(rows.label, memory.batch.label)
    assert (rows.scenario == scenario).all()
