"""Bad input: each mistake is a UserError whose message names the option / column / file and the fix."""

from __future__ import annotations

import re

import polars as pl
import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from conftest import compose, synthetic_config
from ssimctr.config.datasets import DATASET_SCHEMAS, AliCCPConfig, DatasetConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.prepare import prepare
from ssimctr.data.sources import load_source
from ssimctr.data.sources.aliccp import AliCCPReader
from ssimctr.data.sources.files import FilesReader
from ssimctr.errors import UserError

ROWS = 40
HEADER = "click,domain,user,price,ts"


def _good_rows(n: int = ROWS) -> list[str]:
    return [f"{i % 2},{'ab'[i % 3 == 0]},u{i % 7},{i * 1.5},{1_700_000_000 + i * 3600}" for i in range(n)]


def _write(path, rows: list[str], header: str = HEADER) -> str:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


def _error(
    tmp_path,
    rows: list[str] | None = None,
    header: str = HEADER,
    scenario: ScenarioConfig | None = None,
    split: SplitConfig | None = None,
    **dataset,
) -> str:
    """The message of the UserError that prepare raises for this input (fails if it raises none)."""
    values = dict(
        name="bad",
        path=_write(tmp_path / "data.csv", rows or _good_rows(), header),
        label="click",
        scenario="domain",
        categorical=["user"],
        numeric=["price"],
        time="ts",
    )
    values.update(dataset)
    scenario = scenario or ScenarioConfig(kind="column", column=values["scenario"])
    with pytest.raises(UserError) as err:
        prepare(DatasetConfig(**values), scenario, split or SplitConfig(kind="time"), tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True  # nothing half-written
    return str(err.value)


def _has(message: str, *words: str) -> None:
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in: {message}"


def test_the_good_input_prepares(tmp_path):
    data = prepare(
        DatasetConfig(
            name="ok",
            path=_write(tmp_path / "data.csv", _good_rows()),
            label="click",
            scenario="domain",
            categorical=["user"],
            numeric=["price"],
            time="ts",
        ),
        ScenarioConfig(kind="column", column="domain"),
        SplitConfig(kind="time"),
        tmp_path / "cache",
    )
    assert sum(data.manifest["splits"][s]["rows"] for s in ("train", "val", "test")) == ROWS


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as err:
        prepare(
            DatasetConfig(name="x", path=str(tmp_path / "nope.csv"), label="click"),
            ScenarioConfig(kind="column", column="d"),
            SplitConfig(kind="random"),
            tmp_path / "cache",
        )
    _has(str(err.value), "dataset.path", "file not found", "nope.csv", "check the path")


def test_no_path_at_all(tmp_path):
    with pytest.raises(UserError) as err:
        prepare(
            DatasetConfig(name="x", label="click"),
            ScenarioConfig(kind="column", column="d"),
            SplitConfig(kind="random"),
            tmp_path / "cache",
        )
    _has(str(err.value), "dataset.path=")


def test_misspelt_column_suggests_the_close_name(tmp_path):
    message = _error(tmp_path, categorical=["usr"])
    _has(message, "dataset.categorical", "'usr'", "data.csv", "did you mean 'user'", "Columns there")
    message = _error(tmp_path, label="clik")
    _has(message, "dataset.label", "'clik'", "did you mean 'click'")


def test_label_not_0_1_without_threshold_shows_values_and_mentions_the_threshold(tmp_path):
    rows = [f"{1 + i % 5},{'ab'[i % 2]},u{i},1.0,{i}" for i in range(ROWS)]
    message = _error(tmp_path, rows)
    _has(message, "dataset.label", "'click'", "not 0/1", "1, 2, 3, 4, 5", "dataset.label_threshold")


def test_text_label_without_threshold(tmp_path):
    rows = [f"{'yes' if i % 2 else 'no'},{'ab'[i % 2]},u{i},1.0,{i}" for i in range(ROWS)]
    message = _error(tmp_path, rows)  # label_threshold cannot apply to text: not suggested
    _has(message, "not 0/1", "'no', 'yes'", "holds String values", "write the labels as 0/1")
    assert "label_threshold" not in message


def test_label_threshold_on_a_text_label(tmp_path):
    rows = [f"{'yes' if i % 2 else 'no'},{'ab'[i % 2]},u{i},1.0,{i}" for i in range(ROWS)]
    _has(_error(tmp_path, rows, label_threshold=1.0), "dataset.label_threshold", "numeric label", "'click'", "str")


def test_scenario_column_with_one_value(tmp_path):
    rows = [f"{i % 2},only,u{i},1.0,{i}" for i in range(ROWS)]
    _has(_error(tmp_path, rows), "'domain'", "1 scenario", "'only'", "at least 2", "dataset.scenario=", "scenario=bins")


def test_mapping_that_fills_one_scenario(tmp_path):
    message = _error(
        tmp_path, scenario=ScenarioConfig(kind="mapping", column="domain", mapping={"a": "x", "b": "x", "z": "y"})
    )
    _has(message, "1 scenario", "'x'", "at least 2")


def test_cutoffs_beyond_the_data_leave_val_empty(tmp_path):
    message = _error(tmp_path, split=SplitConfig(kind="time", cutoffs=["2030-01-01", "2031-01-01"]))
    _has(message, "split=time", "val split empty", f"0 of {ROWS} rows", "split.cutoffs")


def test_zero_val_fraction_leaves_val_empty(tmp_path):
    _has(
        _error(tmp_path, split=SplitConfig(kind="random", fractions=[0.9, 0.0, 0.1])),
        "val split empty",
        "split.fractions",
    )


def test_bad_cutoffs(tmp_path):
    _has(
        _error(tmp_path, split=SplitConfig(kind="time", cutoffs=["soon", "later"])),
        "split.cutoffs",
        "'soon'",
        "ISO date",
    )
    with pytest.raises(UserError) as err:  # refused when the config is made, before any data is read
        SplitConfig(kind="time", cutoffs=["2024-01-01"])
    _has(str(err.value), "split.cutoffs", "two values")
    _has(_error(tmp_path, split=SplitConfig(kind="time", cutoffs=["2024-02-01", "2024-01-01"])), "in order")


def test_split_time_without_a_time_column(tmp_path):
    _has(_error(tmp_path, time=None, split=SplitConfig(kind="time")), "split=time", "dataset.time=", "split=random")


@pytest.mark.parametrize("fractions", [[0.8, 0.1], [0.8, 0.3, 0.1], [0.0, 0.5, 0.5], [1.2, -0.1, -0.1]])
def test_bad_split_fractions(fractions):
    with pytest.raises(UserError) as err:  # refused when the config is made, before any data is read
        SplitConfig(kind="random", fractions=fractions)
    _has(str(err.value), "split.fractions", "summing to 1", str(fractions))


def test_unknown_split_kind():
    with pytest.raises(UserError) as err:
        SplitConfig(kind="kfold")
    _has(str(err.value), "split=kfold", "time, random, given")


@pytest.mark.parametrize("role", ["categorical", "numeric"])
def test_label_column_listed_as_a_feature(tmp_path, role):
    features = {"categorical": ["user"], "numeric": ["price"]}
    features[role] = [*features[role], "click"]
    _has(_error(tmp_path, **features), "dataset.label", "'click'", "leak", "remove it from dataset.categorical")


def test_scenario_column_listed_as_a_feature(tmp_path):
    _has(_error(tmp_path, categorical=["user", "domain"]), "dataset.scenario", "'domain'", "also listed")


def test_column_listed_under_two_roles(tmp_path):
    _has(_error(tmp_path, categorical=["user", "price"]), "'price'", "more than one", "list each column once")


def test_non_numeric_value_in_a_numeric_column(tmp_path):
    rows = _good_rows()
    rows[7] = "1,a,u1,twelve,1700000000"
    _has(_error(tmp_path, rows), "dataset.numeric", "'price'", "twelve", "data.csv", "dataset.categorical")


def test_min_freq_that_removes_every_value(tmp_path):
    rows = [f"{i % 2},{'ab'[i % 2]},u{i},1.0,{i}" for i in range(ROWS)]  # every user once
    _has(_error(tmp_path, rows, min_freq=2), "dataset.min_freq=2", "'user'", "1 times", "lower dataset.min_freq")


def test_unparseable_time_text(tmp_path):
    rows = [f"{i % 2},{'ab'[i % 2]},u{i},1.0,2024-01-{1 + i % 28:02d} 10:00:00" for i in range(ROWS)]
    rows[3] = "1,a,u3,1.0,the day after"
    _has(_error(tmp_path, rows), "dataset.time", "'ts'", "not a date/time", "the day after", "dataset.time_format")


def test_time_format_that_does_not_match(tmp_path):
    rows = [f"{i % 2},{'ab'[i % 2]},u{i},1.0,2024-01-{1 + i % 28:02d}" for i in range(ROWS)]
    _has(_error(tmp_path, rows, time_format="%d/%m/%Y"), "not a date/time", "dataset.time_format")


def test_split_given_without_val_and_test_paths(tmp_path):
    _has(_error(tmp_path, split=SplitConfig(kind="given")), "split=given", "dataset.val_path", "dataset.test_path")


def test_split_given_with_a_missing_val_file(tmp_path):
    test = _write(tmp_path / "test.csv", _good_rows(5))
    message = _error(tmp_path, val_path=str(tmp_path / "val.csv"), test_path=test, split=SplitConfig(kind="given"))
    _has(message, "dataset.val_path", "file not found", "val.csv")


def test_split_given_with_files_of_different_columns(tmp_path):
    val = _write(tmp_path / "val.csv", [r.rsplit(",", 1)[0] for r in _good_rows(5)], header="click,domain,user,price")
    test = _write(tmp_path / "test.csv", _good_rows(5))
    message = _error(tmp_path, val_path=val, test_path=test, split=SplitConfig(kind="given"))
    _has(message, "split=given", "dataset.val_path", "val.csv", "missing: ['ts']", "same header")


def test_split_given_for_the_synthetic_dataset(tmp_path):
    with pytest.raises(UserError, match="dataset=synthetic .*split=time or split=random"):
        prepare(
            synthetic_config(rows=100),
            ScenarioConfig(kind="column", column="scenario"),
            SplitConfig(kind="given"),
            tmp_path,
        )


def test_unknown_dataset_format(tmp_path):
    _has(_error(tmp_path, format="xlsx"), "dataset.format=xlsx", "auto, csv or parquet")


def test_file_whose_format_cannot_be_told(tmp_path):
    path = tmp_path / "data.dat"
    _write(path, _good_rows())
    _has(_error(tmp_path, path=str(path)), "cannot tell the format", "data.dat", "dataset.format=csv")


def test_folder_without_data_files(tmp_path):
    (tmp_path / "empty").mkdir()
    _has(_error(tmp_path, path=str(tmp_path / "empty")), "dataset.path", "folder", "holds no")


def test_a_folder_of_csv_files_is_read_as_one_dataset(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    rows = _good_rows()
    _write(folder / "a.csv", rows[:25])
    _write(folder / "b.csv", rows[25:])
    (folder / "notes.md").write_text("not data")
    data = prepare(
        DatasetConfig(
            name="f",
            path=str(folder),
            label="click",
            scenario="domain",
            categorical=["user"],
            numeric=["price"],
            time="ts",
        ),
        ScenarioConfig(kind="column", column="domain"),
        SplitConfig(kind="time"),
        tmp_path / "cache",
    )
    assert sum(data.manifest["splits"][s]["rows"] for s in ("train", "val", "test")) == ROWS


def test_feature_named_like_a_prepared_column(tmp_path):
    rows = [r + ",x" for r in _good_rows()]
    _has(
        _error(tmp_path, rows, header=HEADER + ",label", categorical=["user", "label"]),
        "'label'",
        "reserves",
        "rename the column",
    )


def test_parquet_input_reports_the_same_errors(tmp_path):
    path = tmp_path / "data.parquet"
    pl.DataFrame({"click": [0, 1, 2], "domain": ["a", "b", "a"], "user": ["u", "v", "w"]}).write_parquet(path)
    message = _error(tmp_path, path=str(path), numeric=[], time=None, split=SplitConfig(kind="random"))
    _has(message, "not 0/1", "data.parquet", "label_threshold")
    assert re.search(r"values: 0, 1, 2", message)


def test_malformed_lines_are_one_clear_error(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text("click,domain,user\n1,a,u1\n0,b,u2,extra,fields\n1,a\n")
    dataset = DatasetConfig(name="t", path=str(path), label="click", scenario="domain", categorical=["user"])
    with pytest.raises(UserError, match="broken.csv") as error:
        prepare(dataset, ScenarioConfig(kind="column", column="domain"), SplitConfig(kind="random"), tmp_path / "cache")
    assert "separator" in str(error.value)


def test_an_empty_file_is_one_clear_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    dataset = DatasetConfig(name="t", path=str(path), label="click", scenario="domain")
    with pytest.raises(UserError, match="empty.csv"):
        prepare(dataset, ScenarioConfig(kind="column", column="domain"), SplitConfig(kind="random"), tmp_path / "cache")


@pytest.mark.parametrize("name", ["aliccp", "alimama", "antm2c", "kuairand", "movielens"])
def test_a_release_folder_that_is_missing_or_a_file_is_one_clear_error(tmp_path, name):
    a_file = tmp_path / "data.csv"
    a_file.write_text("a,b\n1,2\n")
    for path, words in (
        (tmp_path / "missing", ("folder not found", "missing")),
        (a_file, ("is a file, not a folder", "data.csv", "the folder holding")),
    ):
        cfg = compose(f"dataset={name}", f"dataset.path={path}")
        with pytest.raises(UserError) as error:
            load_source(OmegaConf.to_object(cfg.dataset), OmegaConf.to_object(cfg.split))
        _has(str(error.value), "dataset.path", *words)


@pytest.mark.parametrize("kind", sorted(DATASET_SCHEMAS))
def test_every_dataset_kind_names_a_reader_of_its_own_schema(kind):
    schema = DATASET_SCHEMAS[kind]
    reader = get_class(schema._target_)  # the schema's default: the reader a YAML on schema_dataset_<kind> gets
    assert issubclass(reader, schema) and callable(reader.read)


def test_a_dataset_is_read_by_the_reader_its_schema_names(monkeypatch):
    seen = []
    for reader in (FilesReader, AliCCPReader):
        monkeypatch.setattr(reader, "read", lambda self, rule: seen.append((type(self).__name__, self.name)) or "rows")
    assert load_source(DatasetConfig(name="flat", path="x", label="click"), SplitConfig(kind="random")) == "rows"
    assert load_source(AliCCPConfig(name="ali", path="x", label="click"), SplitConfig(kind="given")) == "rows"
    assert seen == [("FilesReader", "flat"), ("AliCCPReader", "ali")]


def test_a_header_only_file_has_no_data_rows(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text(HEADER + "\n")
    _has(_error(tmp_path, path=str(path)), "header.csv", "has no data rows")


def test_an_option_of_another_scenario_kind_is_refused():
    with pytest.raises(UserError) as err:  # refused when the config is made, before any data is read
        ScenarioConfig(kind="column", column="domain", bins=[1.0, 2.0])
    _has(str(err.value), "scenario.bins belongs to scenario=bins", "scenario=column")


def test_a_scenario_column_with_many_values_warns_with_the_count_and_the_fix(tmp_path):
    rows = [f"{i % 2},d{i % 60},u{i % 7},1.0,{i}" for i in range(600)]
    values = dict(name="many", label="click", scenario="domain", categorical=["user"], numeric=["price"], time="ts")
    dataset = DatasetConfig(path=_write(tmp_path / "data.csv", rows), **values)
    with pytest.warns(UserWarning, match=r"gives 60 scenarios.*scenario=top_k scenario.top_k=10"):
        prepare(dataset, ScenarioConfig(kind="column", column="domain"), SplitConfig(kind="time"), tmp_path / "c")


def test_a_folder_of_mixed_formats_names_the_files_and_the_option(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _write(folder / "a.csv", _good_rows())
    pl.read_csv(folder / "a.csv").write_parquet(folder / "b.parquet")
    (folder / "notes.txt").write_text("not data")
    _has(_error(tmp_path, path=str(folder)), "mixes formats", ".csv: a.csv", ".parquet: b.parquet", "dataset.format=")


def test_an_empty_parquet_file_says_so_without_the_csv_hint(tmp_path):
    path = tmp_path / "empty.parquet"
    path.write_bytes(b"")
    message = _error(tmp_path, path=str(path), numeric=[], time=None, split=SplitConfig(kind="random"))
    _has(message, "empty.parquet", "whole parquet file", "empty or cut-short")
    assert "separator" not in message


def test_a_full_disk_while_preparing_names_the_cache_without_the_csv_hint(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):  # what polars raises when the disk fills while it writes
        raise pl.exceptions.ComputeError(
            "parquet: File out of specification: underlying IO error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(pl.LazyFrame, "sink_parquet", full)
    message = _error(tmp_path)
    assert message == (
        f"cannot write {tmp_path / 'cache'}: no space left on device (errno 28); "
        "free some space or choose another paths.cache"
    )


def test_a_line_with_fewer_fields_than_the_header_names_its_line(tmp_path):
    rows = _good_rows()
    rows[6] = rows[6].rsplit(",", 2)[0]  # line 8 (the header is line 1): price and ts missing
    message = _error(tmp_path, rows)
    assert message == (
        f"dataset.path: {tmp_path / 'data.csv'} line 8 has 3 fields but the header has 5 names (price, ts missing): "
        "give each line a value (maybe empty) for every column"
    )


def test_the_line_number_counts_quoted_newlines_and_empty_last_values_are_fine(tmp_path):
    rows = _good_rows()
    rows[1] = '1,b,"u\nwith, a comma",2.5,'  # lines 3-4: a quoted newline and separator, an empty last value
    assert prepare(  # an empty value is not a missing field
        DatasetConfig(name="ok", path=_write(tmp_path / "data.csv", rows), label="click", scenario="domain"),
        ScenarioConfig(kind="column", column="domain"),
        SplitConfig(kind="random"),
        tmp_path / "prepared",
    )
    rows[4] = rows[4].rsplit(",", 1)[0]  # line 7
    _has(_error(tmp_path, rows), "data.csv line 7 has 4 fields", "(ts missing)")
