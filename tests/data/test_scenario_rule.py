"""The scenario rule a prepared dataset records: new rows get the scenario index the training rows got."""

from __future__ import annotations

import json

import polars as pl
import pytest

from ssimctr.config.schema import ScenarioConfig
from ssimctr.data.scenarios import assign_scenarios, assignment_from_rule


def rule_of(values: list, spec: ScenarioConfig) -> tuple[dict, list[str]]:
    """The rule and names of `spec` on a one-column frame, through JSON as feature_map.json keeps it."""
    assignment = assign_scenarios(pl.DataFrame({spec.column: values}, strict=False).lazy(), spec, "the frame")
    return json.loads(json.dumps(assignment.rule)), assignment.names


def scenarios_of(rule: dict, names: list[str], new: pl.DataFrame) -> list:
    return new.select(assignment_from_rule(rule, names, new.schema).expression.alias("k"))["k"].to_list()


def test_column_values_keep_their_index_and_an_unknown_value_gets_none():
    rule, names = rule_of(["b", "a", "c", "a"], ScenarioConfig(kind="column", column="s"))
    assert names == ["a", "b", "c"]
    assert scenarios_of(rule, names, pl.DataFrame({"s": ["c", "z", None, "a", "b"]})) == [2, None, None, 0, 1]


def test_a_new_file_with_another_dtype_is_cast_to_the_training_one():
    rule, names = rule_of([10, 20, 10, 30], ScenarioConfig(kind="column", column="s"))
    assert scenarios_of(rule, names, pl.DataFrame({"s": ["30", "10", "x"]})) == [2, 0, None]


def test_top_k_merges_any_other_value_new_ones_too_into_other():
    values = ["a"] * 5 + ["b"] * 4 + ["c", "d"]
    rule, names = rule_of(values, ScenarioConfig(kind="top_k", column="s", top_k=2))
    assert names == ["a", "b", "other"]
    assert scenarios_of(rule, names, pl.DataFrame({"s": ["b", "d", "never seen", None]})) == [1, 2, 2, None]


def test_top_k_that_drops_the_rest_drops_new_values():
    values = ["a"] * 5 + ["b"] * 4 + ["c"]
    rule, names = rule_of(values, ScenarioConfig(kind="top_k", column="s", top_k=2, rest="drop"))
    assert scenarios_of(rule, names, pl.DataFrame({"s": ["c", "a", "new"]})) == [None, 0, None]


def test_mapping_and_bins_rules():
    spec = ScenarioConfig(kind="mapping", column="s", mapping={"x": "home", "y": "feed", "z": "home"})
    rule, names = rule_of(["x", "y", "z"], spec)
    assert scenarios_of(rule, names, pl.DataFrame({"s": ["z", "y", "w"]})) == [0, 1, None]
    rule, names = rule_of([1.0, 5.0, 9.0], ScenarioConfig(kind="bins", column="s", bins=[3, 6]))
    assert scenarios_of(rule, names, pl.DataFrame({"s": [100.0, 4.0, -1.0, None]})) == [2, 1, 0, None]


@pytest.mark.parametrize("kind", ["column", "top_k"])
def test_the_rule_reproduces_the_training_assignment(kind):
    values = [f"v{i % 7}" for i in range(50)] + ["v1"] * 10
    spec = ScenarioConfig(kind=kind, column="s", top_k=3 if kind == "top_k" else None)
    frame = pl.DataFrame({"s": values})
    assignment = assign_scenarios(frame.lazy(), spec, "the frame")
    trained = frame.select(assignment.expression.alias("k"))["k"].to_list()
    assert scenarios_of(json.loads(json.dumps(assignment.rule)), assignment.names, frame) == trained
