"""Learning test: where the label depends on the words of the title only and most items are rare, a
model with the title as a field beats the same model on ids only, clearly."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from rich.console import Console

from conftest import make_model, train_briefly
from ssimctr.config.datasets import DatasetConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.prepare import prepare
from ssimctr.text.build import NoText, with_encoded_fields
from ssimctr.text.hashing import Hashing

ROWS, ITEMS, WORDS = 16_000, 8_000, 60


@pytest.fixture(scope="module")
def titled(tmp_path_factory):
    """Items titled by 3 of 60 words; a click is likely (0.5) when the title holds one of 6 good words,
    rare (0.04) otherwise; 2 rows per item on average, so most item ids are seen once or never in train."""
    rng = np.random.default_rng(0)
    titles = [rng.choice(WORDS, 3, replace=False) for _ in range(ITEMS)]
    good = np.array([bool((title < 6).any()) for title in titles])
    item = rng.integers(0, ITEMS, ROWS)
    click = rng.random(ROWS) < np.where(good[item], 0.5, 0.04)
    frame = pl.DataFrame(
        {
            "click": click.astype(np.int8),
            "domain": rng.choice(["a", "b"], ROWS),
            "user": rng.integers(0, 300, ROWS),
            "item": item,
            "title": [" ".join(f"w{w}" for w in titles[i]) for i in item],
        }
    )
    folder = tmp_path_factory.mktemp("titled")
    frame.write_parquet(folder / "data.parquet")
    dataset = DatasetConfig(
        name="titled",
        path=str(folder / "data.parquet"),
        label="click",
        scenario="domain",
        categorical=["user", "item"],
        text=["title"],
    )
    split = SplitConfig(kind="random", fractions=[0.7, 0.15, 0.15])
    return prepare(dataset, ScenarioConfig(kind="column", column="domain"), split, folder / "cache")


def test_id_and_text_beats_id_only_when_the_label_depends_on_the_title(titled):
    auc = {}
    for name, encoder in {"id": NoText(), "text": Hashing(buckets=1000)}.items():
        data = with_encoded_fields(titled, encoder, Console(quiet=True))
        model = make_model("dnn", data.feature_map, embedding_dim=8, hidden=[32, 16])
        auc[name] = train_briefly(model, data, epochs=3)["test/auc/mean"]
    assert auc["text"] > 0.75 and auc["text"] > auc["id"] + 0.1, auc
