"""read_split and InMemoryLoader: every row once per epoch, seeded shuffling, partial batches, Batch views."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from ssimctr.config.datasets import DatasetConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.batch import Batch
from ssimctr.data.loaders import InMemoryLoader, read_split
from ssimctr.data.prepare import prepare


def _batch(rows: int = 10, with_text: bool = False) -> Batch:
    """Rows whose every tensor encodes the row number, so alignment after shuffling is checkable."""
    r = torch.arange(rows)
    return Batch(
        cat=torch.stack([r, r * 10], 1),
        num=torch.stack([r.float(), -r.float()], 1),
        scenario=r % 3,
        label=(r % 2).float(),
        row_id=r + 100,
        text=torch.stack([r.float() * 0.5], 1) if with_text else None,
    )


def _assert_aligned(batch: Batch) -> None:
    r = batch.row_id - 100
    assert torch.equal(batch.cat[:, 0], r) and torch.equal(batch.cat[:, 1], r * 10)
    assert torch.equal(batch.num[:, 0], r.float()) and torch.equal(batch.num[:, 1], -r.float())
    assert torch.equal(batch.scenario, r % 3) and torch.equal(batch.label, (r % 2).float())
    if batch.text is not None:
        assert torch.equal(batch.text[:, 0], r.float() * 0.5)


def _epoch(loader: InMemoryLoader) -> list[int]:
    return torch.cat([b.row_id for b in loader]).tolist()


@pytest.mark.parametrize("shuffle", [False, True])
def test_each_epoch_covers_every_row_once_in_full_batches_then_one_partial(shuffle):
    loader = InMemoryLoader(_batch(10, with_text=True), batch_size=4, shuffle=shuffle, seed=1)
    assert len(loader) == 3 and loader.num_rows == 10
    for _ in range(3):
        batches = list(loader)
        assert [len(b) for b in batches] == [4, 4, 2]
        for b in batches:
            _assert_aligned(b)
        assert sorted(_epoch(loader)) == list(range(100, 110))


def test_batch_size_dividing_the_rows_gives_no_empty_batch():
    loader = InMemoryLoader(_batch(12), batch_size=4, shuffle=True, seed=0)
    assert len(loader) == 3 and [len(b) for b in loader] == [4, 4, 4]
    assert [len(b) for b in InMemoryLoader(_batch(3), batch_size=50, shuffle=False)] == [3]
    with pytest.raises(ValueError, match="batch_size"):
        InMemoryLoader(_batch(3), batch_size=0, shuffle=False)


def test_without_shuffle_the_order_is_the_data_order_every_epoch():
    loader = InMemoryLoader(_batch(10), batch_size=3, shuffle=False)
    assert _epoch(loader) == list(range(100, 110))
    assert _epoch(loader) == list(range(100, 110))


def test_shuffled_order_changes_per_epoch_and_repeats_for_the_same_seed():
    data = _batch(64)
    one, same, other = (InMemoryLoader(data, batch_size=16, shuffle=True, seed=s) for s in (7, 7, 8))
    epochs_one = [_epoch(one) for _ in range(3)]
    epochs_same = [_epoch(same) for _ in range(3)]
    assert epochs_one == epochs_same
    assert epochs_one[0] != epochs_one[1] != epochs_one[2]
    assert epochs_one[0] != list(range(100, 164))
    assert _epoch(other) != epochs_one[0]


def test_slice_gives_views_and_take_gives_copies_in_the_asked_order():
    data = _batch(10, with_text=True)
    part = data.slice(2, 5)
    assert part.row_id.tolist() == [102, 103, 104] and len(part) == 3
    assert part.cat.data_ptr() == data.cat[2].data_ptr()  # a view: no copy
    assert len(data.slice(8, 20)) == 2  # stop past the end is clipped
    index = torch.tensor([7, 0, 7, 3])
    taken = data.take(index)
    assert taken.row_id.tolist() == [107, 100, 107, 103]
    _assert_aligned(taken)
    taken.cat[0, 0] = -1
    assert data.cat[7, 0] == 7  # a copy: the source is unchanged
    assert data.slice(0, 2).text is not None
    no_text = _batch(4).take(torch.tensor([1]))
    assert no_text.text is None and no_text.row_id.tolist() == [101]


def test_read_split_matches_the_parquet(prepared_synthetic):
    fm = prepared_synthetic.feature_map
    path = prepared_synthetic.split_path("val")
    frame = pl.read_parquet(path)
    batch = read_split(path, fm)
    assert len(batch) == frame.height
    assert batch.cat.dtype == torch.int64 and batch.cat.shape == (frame.height, len(fm.categorical))
    assert batch.num.dtype == torch.float32 and batch.num.shape == (frame.height, len(fm.numeric))
    assert batch.scenario.dtype == torch.int64 and batch.row_id.dtype == torch.int64
    assert batch.label.dtype == torch.float32
    np.testing.assert_array_equal(batch.cat.numpy(), frame.select(fm.categorical_names).to_numpy())
    np.testing.assert_array_equal(batch.num.numpy(), frame.select(fm.numeric_names).to_numpy())
    np.testing.assert_array_equal(batch.row_id.numpy(), frame["row_id"].to_numpy())
    np.testing.assert_array_equal(batch.label.numpy(), frame["label"].to_numpy())
    np.testing.assert_array_equal(batch.scenario.numpy(), frame["scenario"].to_numpy())
    loader = InMemoryLoader(batch, batch_size=1000, shuffle=True, seed=3)
    assert sorted(_epoch(loader)) == sorted(frame["row_id"].to_list())


def test_read_split_without_categorical_fields_keeps_one_row_per_label(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("y,s,x\n" + "".join(f"{i % 2},{'ab'[i % 3 == 0]},{i}\n" for i in range(60)))
    data = prepare(
        DatasetConfig(name="n", path=str(path), label="y", scenario="s", numeric=["x"]),
        ScenarioConfig(kind="column", column="s"),
        SplitConfig(kind="random"),
        tmp_path / "cache",
    )
    batch = read_split(data.split_path("train"), data.feature_map)
    assert batch.cat.shape == (len(batch), 0) and batch.num.shape == (len(batch), 1)
    assert len(batch) == data.manifest["splits"]["train"]["rows"]
    assert sum(len(b) for b in InMemoryLoader(batch, batch_size=7, shuffle=True)) == len(batch)
