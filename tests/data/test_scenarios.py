"""Scenario assignment: column, mapping, bins and top_k; dropped rows counted; names fit for MLflow keys."""

from __future__ import annotations

import re
from collections import Counter

import polars as pl
import pytest

from ssimctr.config.datasets import DatasetConfig
from ssimctr.config.schema import ScenarioConfig, SplitConfig
from ssimctr.data.prepare import prepare
from ssimctr.data.scenarios import assign_scenarios, unique_metric_names
from ssimctr.errors import UserError

MLFLOW_KEY = re.compile(r"^[\w\-. /]+$")  # what mlflow accepts in a metric key
SPLITS = ("train", "val", "test")


def _assign(values: list, spec: ScenarioConfig) -> tuple[list, list[str]]:
    """(scenario index per value, scenario names) for a one-column frame."""
    frame = pl.DataFrame({spec.column: values}, strict=False)
    assignment = assign_scenarios(frame.lazy(), spec, "the test frame")
    return frame.select(assignment.expression.alias("k"))["k"].to_list(), assignment.names


def _prepare(tmp_path, rows: list[tuple], scenario: ScenarioConfig, header="y,s,c"):
    """Prepare a CSV of `rows` with a random split; return (prepared, scenario name of every kept row)."""
    path = tmp_path / "data.csv"
    path.write_text(header + "\n" + "\n".join(",".join("" if v is None else str(v) for v in r) for r in rows) + "\n")
    data = prepare(
        DatasetConfig(name="s", path=str(path), label="y", scenario=scenario.column, categorical=["c"]),
        scenario,
        SplitConfig(kind="random", fractions=[0.5, 0.25, 0.25], seed=1),
        tmp_path / "cache",
    )
    names = data.feature_map.scenario_names
    kept = pl.concat([pl.read_parquet(data.split_path(s)) for s in SPLITS]).sort("row_id")
    return data, kept, [names[k] for k in kept["scenario"].to_list()]


def _totals(data) -> dict[str, int]:
    return {
        name: sum(data.manifest["splits"][s]["scenarios"][name]["rows"] for s in SPLITS)
        for name in data.feature_map.scenario_names
    }


# ---------------------------------------------------------------- column


def test_column_gives_one_scenario_per_distinct_value_sorted():
    index, names = _assign(["b", "a", "c", "a", None], ScenarioConfig(kind="column", column="s"))
    assert names == ["a", "b", "c"]
    assert index == [1, 0, 2, 0, None]
    index, names = _assign([10, 2, 1, 2], ScenarioConfig(kind="column", column="s"))
    assert names == ["1", "2", "10"]  # numeric order, names as text
    assert index == [2, 1, 0, 1]


def test_column_drops_and_counts_missing_values(tmp_path):
    values = ["a", "b", None, "c"] * 20
    data, kept, names = _prepare(
        tmp_path, [(i % 2, v, i % 5) for i, v in enumerate(values)], ScenarioConfig(kind="column", column="s")
    )
    assert data.manifest["dropped"] == {"scenario_missing": 20}
    assert _totals(data) == {"a": 20, "b": 20, "c": 20}
    expected = [v for v in values if v is not None]
    assert names == expected and kept["row_id"].to_list() == [i for i, v in enumerate(values) if v is not None]


# ---------------------------------------------------------------- mapping


MEDIA = {"movie": "screen", "tv": "screen", "book": "print", "magazine": "print"}


def test_mapping_sends_several_values_to_one_name_in_mapping_order():
    index, names = _assign(
        ["book", "movie", "tv", "magazine", "radio"], ScenarioConfig(kind="mapping", column="s", mapping=MEDIA)
    )
    assert names == ["screen", "print"]
    assert index == [1, 0, 0, 1, None]


def test_mapping_drops_unmapped_values_and_counts_them(tmp_path):
    values = ["movie", "tv", "book", "radio", "magazine", "podcast"] * 12
    data, _, names = _prepare(
        tmp_path,
        [(i % 2, v, i % 5) for i, v in enumerate(values)],
        ScenarioConfig(kind="mapping", column="s", mapping=MEDIA),
    )
    assert data.manifest["dropped"] == {"scenario_unmapped": 24}
    assert _totals(data) == {"screen": 24, "print": 24}
    assert names == [MEDIA[v] for v in values if v in MEDIA]


def test_mapping_counts_missing_values_apart_from_unmapped_ones(tmp_path):
    values = ["movie", None, "book", "radio"] * 10
    data, _, _ = _prepare(
        tmp_path,
        [(i % 2, v, i % 5) for i, v in enumerate(values)],
        ScenarioConfig(kind="mapping", column="s", mapping=MEDIA),
    )
    assert data.manifest["dropped"] == {"scenario_missing": 10, "scenario_unmapped": 10}


def test_mapping_with_unmapped_error_names_the_values_and_the_fix():
    spec = ScenarioConfig(kind="mapping", column="s", mapping=MEDIA, unmapped="error")
    with pytest.raises(UserError) as err:
        _assign(["movie", "book", "radio", "podcast"], spec)
    message = str(err.value)
    assert "podcast" in message and "radio" in message and "'s'" in message
    assert "scenario.unmapped=drop" in message


def test_mapping_keys_match_numeric_values_by_text():
    index, names = _assign(
        [1, 2, 3, 3], ScenarioConfig(kind="mapping", column="s", mapping={"1": "one", "2": "more", "3": "more"})
    )
    assert names == ["one", "more"] and index == [0, 1, 1, 1]


def test_mapping_without_a_mapping_is_a_user_error():
    with pytest.raises(UserError, match="scenario.mapping"):
        _assign(["a", "b"], ScenarioConfig(kind="mapping", column="s"))


# ---------------------------------------------------------------- bins


def test_bins_cut_at_the_edges_with_default_names():
    ages = [1, 17, 18, 30, 34.9, 35, 60]
    index, names = _assign(ages, ScenarioConfig(kind="bins", column="s", bins=[18, 35]))
    assert names == ["lt18", "18-35", "ge35"]
    assert index == [0, 0, 1, 1, 1, 2, 2]  # an edge belongs to the bin above it


def test_bins_default_names_of_fractional_edges_and_custom_names():
    _, names = _assign([0.1, 0.7, 2.0], ScenarioConfig(kind="bins", column="s", bins=[0.5, 1.5]))
    assert names == ["lt0.5", "0.5-1.5", "ge1.5"]
    index, names = _assign(
        [1, 20, 50], ScenarioConfig(kind="bins", column="s", bins=[18, 35], names=["kid", "adult", "senior"])
    )
    assert names == ["kid", "adult", "senior"] and index == [0, 1, 2]


def test_bins_drop_and_count_missing_values(tmp_path):
    ages = [5, 20, None, 40, 50] * 16
    data, _, names = _prepare(
        tmp_path,
        [(i % 2, a, i % 5) for i, a in enumerate(ages)],
        ScenarioConfig(kind="bins", column="s", bins=[18, 35]),
    )
    assert data.manifest["dropped"] == {"scenario_missing": 16}
    assert _totals(data) == {"lt18": 16, "18-35": 16, "ge35": 32}
    assert Counter(names) == {"lt18": 16, "18-35": 16, "ge35": 32}


def test_bins_put_nan_with_the_missing_values_not_in_the_top_bin():
    index, _ = _assign([5.0, float("nan"), None, 50.0], ScenarioConfig(kind="bins", column="s", bins=[18, 35]))
    assert index == [0, None, None, 2]


@pytest.mark.parametrize(
    "bins, names, words",
    [
        ([35, 18], None, "increasing"),
        ([18, 18], None, "increasing"),
        ([], None, "non-empty"),
        ([18, 35], ["a", "b"], "len(scenario.bins) + 1 = 3"),
    ],
)
def test_bad_bins_are_user_errors(bins, names, words):
    with pytest.raises(UserError, match=re.escape(words)):
        _assign([1, 20, 50], ScenarioConfig(kind="bins", column="s", bins=bins, names=names))


def test_bins_on_a_text_column_is_a_user_error():
    with pytest.raises(UserError, match="needs a numeric column"):
        _assign(["x", "y"], ScenarioConfig(kind="bins", column="s", bins=[1]))


def test_bins_that_leave_one_populated_scenario_are_a_user_error():
    with pytest.raises(UserError, match="at least 2"):
        _assign([1, 20, 50], ScenarioConfig(kind="bins", column="s", bins=[100]))


# ---------------------------------------------------------------- top_k


VALUES = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] * 2 + ["e"]


def test_top_k_keeps_the_most_frequent_values_and_merges_the_rest_into_other():
    index, names = _assign(VALUES, ScenarioConfig(kind="top_k", column="s", top_k=2))
    assert names == ["a", "b", "other"]  # b and c tie at 3: the smaller value wins
    assert Counter(names[k] for k in index) == {"a": 5, "b": 3, "other": 6}


def test_top_k_at_least_the_number_of_values_has_no_other():
    _, names = _assign(VALUES, ScenarioConfig(kind="top_k", column="s", top_k=9))
    assert names == ["a", "b", "c", "d", "e"]


def test_top_k_with_rest_drop_drops_and_counts(tmp_path):
    values = VALUES * 6
    data, _, names = _prepare(
        tmp_path,
        [(i % 2, v, i % 5) for i, v in enumerate(values)],
        ScenarioConfig(kind="top_k", column="s", top_k=3, rest="drop"),
    )
    assert data.feature_map.scenario_names == ("a", "b", "c")
    assert data.manifest["dropped"] == {"scenario_outside_top_k": 18}
    assert _totals(data) == {"a": 30, "b": 18, "c": 18}
    assert names == [v for v in values if v in "abc"]


@pytest.mark.parametrize(
    "top_k, rest, words", [(0, "merge", "top_k >= 1"), (None, "merge", "top_k >= 1"), (2, "keep", "scenario.rest=keep")]
)
def test_bad_top_k_options_are_user_errors(top_k, rest, words):
    with pytest.raises(UserError, match=re.escape(words)):
        _assign(VALUES, ScenarioConfig(kind="top_k", column="s", top_k=top_k, rest=rest))


# ---------------------------------------------------------------- names


def test_names_are_sanitized_for_mlflow_and_made_unique():
    names = unique_metric_names(["a/b", "a?b", "a_b", "overall", "mean", "", "  ", "x y", "v1.2-rc", "é"])
    assert names == ["a_b", "a_b_2", "a_b_3", "overall_2", "mean_2", "scenario", "scenario_2", "x y", "v1.2-rc", "é"]
    assert len(set(names)) == len(names)
    assert all(MLFLOW_KEY.match(n) for n in names)


def test_prepared_scenario_names_are_sanitized(tmp_path):
    values = ["news/top", "news?top", "overall", "sport & fun"] * 15
    data, _, names = _prepare(
        tmp_path, [(i % 2, v, i % 5) for i, v in enumerate(values)], ScenarioConfig(kind="column", column="s")
    )
    assert data.feature_map.scenario_names == ("news_top", "news_top_2", "overall_2", "sport _ fun")
    assert data.manifest["scenarios"] == list(data.feature_map.scenario_names)
    assert set(data.manifest["splits"]["train"]["scenarios"]) == set(data.feature_map.scenario_names)
    raw_of = dict(zip(data.feature_map.scenario_names, ["news/top", "news?top", "overall", "sport & fun"]))
    assert [raw_of[n] for n in names] == values


def test_unknown_kind_and_missing_column_are_user_errors():
    frame = pl.DataFrame({"domain": ["a", "b"]}).lazy()
    with pytest.raises(UserError, match="scenario.kind=cluster is not known"):
        assign_scenarios(frame, ScenarioConfig(kind="cluster", column="domain"), "f.csv")
    with pytest.raises(UserError, match="dataset.scenario"):
        assign_scenarios(frame, ScenarioConfig(kind="column", column=None), "f.csv")
    with pytest.raises(UserError) as err:
        assign_scenarios(frame, ScenarioConfig(kind="column", column="domian"), "f.csv")
    assert "'domian'" in str(err.value) and "did you mean 'domain'" in str(err.value)
