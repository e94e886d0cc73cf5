"""Image vectors (`dataset.vectors`): joined by key during preparation, missing keys counted and given a
learned missing vector; a file whose vectors differ in length is one line naming the first bad key."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from rich.console import Console

from conftest import make_model
from ssimctr.config.datasets import DatasetConfig, VectorFileConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.loaders import read_split
from ssimctr.data.prepare import prepare
from ssimctr.errors import UserError
from ssimctr.features.encoded import VectorField
from ssimctr.models.layers.encoded import ProjectedVectors
from ssimctr.text.build import NoText, with_encoded_fields

VECTORS = {"i0": [1.0, 2.0], "i1": [3.0, 4.0], "i2": [5.0, 6.0], "i3": [7.0, 8.0]}  # i4 has none


def _prepare(tmp_path, vectors: dict):
    frame = pl.DataFrame(
        {
            "click": [i % 2 for i in range(50)],
            "domain": ["ab"[i % 2] for i in range(50)],
            "item": [f"i{i % 5}" for i in range(50)],
        }
    )
    frame.write_csv(tmp_path / "data.csv")
    pl.DataFrame({"item": list(vectors), "embedding": list(vectors.values())}).write_parquet(tmp_path / "img.parquet")
    dataset = DatasetConfig(
        name="with_images",
        path=str(tmp_path / "data.csv"),
        label="click",
        scenario="domain",
        categorical=["item"],
        vectors=[VectorFileConfig(path=str(tmp_path / "img.parquet"), key="item")],
    )
    split = SplitConfig(kind="random", fractions=[0.6, 0.2, 0.2])
    return prepare(dataset, ScenarioConfig(kind="column", column="domain"), split, tmp_path / "cache")


def test_vectors_join_by_key_and_missing_keys_are_counted(tmp_path):
    data = _prepare(tmp_path, VECTORS)
    assert data.feature_map.vectors == ("img",)
    assert sum(data.manifest["vectors_missing"]["img"].values()) == 10  # the rows of i4
    data = with_encoded_fields(data, NoText(), Console(quiet=True))  # ID + image vectors
    (field,) = data.feature_map.encoded
    assert isinstance(field, VectorField) and field.learned_missing
    assert field.vectors.tolist() == [[0.0, 0.0], *VECTORS.values()]
    batch = read_split(data.split_path("train"), data.feature_map)
    expected = [(row % 5 + 1) % 5 for row in batch.row_id.tolist()]  # source row r has item i{r % 5}; i4: 0
    assert batch.text[:, 0].tolist() == expected
    model = make_model("dnn", data.feature_map, embedding_dim=4, hidden=[8])
    model.towers(batch).sum().backward()
    assert model.embedding.encoded.fields[0].missing.grad.abs().sum() > 0


def test_vectors_that_differ_in_length_name_the_first_bad_key(tmp_path):
    with pytest.raises(UserError) as error:
        _prepare(tmp_path, {**VECTORS, "i2": [5.0], "i3": [1.0, 2.0, 3.0]})
    message = str(error.value)
    assert "differ in length" in message and "'i2'" in message and "\n" not in message


def test_a_vector_key_that_is_not_a_column(tmp_path):
    frame = pl.DataFrame({"click": [0, 1] * 5, "domain": ["a", "b"] * 5, "product": ["x"] * 10})
    frame.write_csv(tmp_path / "data.csv")
    pl.DataFrame({"item": ["x"], "v": [[1.0]]}).write_parquet(tmp_path / "img.parquet")
    dataset = DatasetConfig(
        name="x",
        path=str(tmp_path / "data.csv"),
        label="click",
        scenario="domain",
        vectors=[VectorFileConfig(path=str(tmp_path / "img.parquet"), key="item")],
    )
    with pytest.raises(UserError, match=r"dataset\.vectors\[0\]\.key: column 'item' is not in"):
        prepare(dataset, ScenarioConfig(kind="column", column="domain"), SplitConfig(kind="random"), tmp_path / "c")


def test_the_missing_vector_replaces_index_zero():
    field = VectorField("img", torch.tensor([[0.0, 0.0], [1.0, 2.0]]))
    module = ProjectedVectors(field, 3)
    with torch.no_grad():
        module.missing.copy_(torch.tensor([5.0, -1.0]))
    out = module(torch.tensor([0, 1]))
    torch.testing.assert_close(out[0], module.projection(torch.tensor([5.0, -1.0])))
    torch.testing.assert_close(out[1], module.projection(torch.tensor([1.0, 2.0])))
