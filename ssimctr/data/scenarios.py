"""Scenario assignment: which scenario (0..K-1) each row belongs to, and the scenarios' names."""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass, field

import polars as pl

from ssimctr.config.schema import ScenarioConfig
from ssimctr.errors import UserError

OTHER = "other"
MANY_SCENARIOS = 50  # above this, a warning: one tower per scenario gets large and slow


@dataclass
class ScenarioAssignment:
    """`expression` gives the scenario index (Int32, null = drop the row); `drop_reason` names those drops.
    `rule`: what rebuilds the expression on other rows of the same columns (`assignment_from_rule`), kept
    in the feature map so that a logged model maps a new file's scenario values as its training did."""

    expression: pl.Expr
    names: list[str]
    drop_reason: str
    rule: dict = field(default_factory=dict)


def assign_scenarios(frame: pl.LazyFrame, spec: ScenarioConfig, origin: str) -> ScenarioAssignment:
    """Build the scenario index expression for `spec` (reads the column's distinct values once; the
    options themselves were checked when `spec` was made: ScenarioConfig.__post_init__)."""
    if not spec.column:
        raise UserError("no scenario column: set dataset.scenario=COLUMN (or scenario.column=COLUMN)")
    available = frame.collect_schema().names()
    if spec.column not in available:
        close = difflib.get_close_matches(spec.column, available, n=3)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise UserError(
            f"scenario.column '{spec.column}' is not in {origin}. {hint}"
            f"Set dataset.scenario (or scenario.column) to one of: {', '.join(available)}"
        )
    counts = (
        frame.group_by(pl.col(spec.column).alias("value"))
        .agg(pl.len().alias("rows"))
        .drop_nulls("value")
        .sort("value")
        .collect()
    )
    values = counts["value"].to_list()
    if spec.kind == "bins":
        assignment = _by_bins(spec, counts)
    elif spec.kind == "mapping":
        assignment = _by_mapping(spec, values, origin)
    elif spec.kind == "top_k":
        assignment = _by_top_k(spec, counts)
    else:
        assignment = _lookup(
            spec.column, {v: i for i, v in enumerate(values)}, [str(v) for v in values], "scenario_missing"
        )
    assignment.rule.update(column=spec.column, dtype=str(counts["value"].dtype))
    # scenarios that hold rows (a mapping name or a bin may match none)
    used = sorted(
        counts.rename({"value": spec.column}).select(assignment.expression.drop_nulls().unique()).to_series().to_list()
    )
    if len(used) < 2 and not frame.select(pl.len()).collect().item():
        raise UserError(f"{origin} has no data rows (only a header?): give a file with rows")
    if len(used) < 2:
        shown = f" ('{assignment.names[used[0]]}')" if used else ""
        raise UserError(
            f"scenario column '{spec.column}' in {origin} gives {len(used)} scenario"
            f"{shown} with rows (scenario={spec.kind}): a multi-scenario run needs at least 2. Choose "
            "another column with dataset.scenario=COLUMN, or cut a numeric column with scenario=bins "
            "scenario.bins=[...]"
        )
    if len(used) > MANY_SCENARIOS:
        warnings.warn(
            f"scenario column '{spec.column}' gives {len(used)} scenarios: one tower each makes a large, slow "
            f"model; keep the most frequent with scenario=top_k scenario.top_k=10 (the rest merged into '{OTHER}')",
            stacklevel=2,
        )
    assignment.names = unique_metric_names(assignment.names)
    return assignment


def _lookup(column: str, index_of: dict, names: list[str], drop_reason: str) -> ScenarioAssignment:
    """value -> scenario index (null for values not in `index_of`), as one `is_in` test per scenario:
    elementwise, so the streaming engine keeps it streaming (replace_strict would not)."""
    pairs = [[value, index] for value, index in index_of.items()]
    rule = {"kind": "lookup", "values": pairs, "other": None}
    return ScenarioAssignment(_lookup_expression(pl.col(column), pairs), names, drop_reason, rule)


def _lookup_expression(column: pl.Expr, pairs: list) -> pl.Expr:
    values_of: dict[int, list] = {}
    for value, index in pairs:
        values_of.setdefault(index, []).append(value)
    expression = pl.lit(None, dtype=pl.Int32)
    for index in sorted(values_of, reverse=True):
        expression = pl.when(column.is_in(values_of[index])).then(pl.lit(index, pl.Int32)).otherwise(expression)
    return expression


def _by_mapping(spec: ScenarioConfig, values: list, origin: str) -> ScenarioAssignment:
    names = list(dict.fromkeys(spec.mapping.values()))
    by_text = {str(k): names.index(v) for k, v in spec.mapping.items()}
    unmapped = [v for v in values if str(v) not in by_text]
    if unmapped and spec.unmapped == "error":
        raise UserError(
            f"scenario.mapping has no entry for value(s) {unmapped[:5]} of column '{spec.column}' in "
            f"{origin}: add them or set scenario.unmapped=drop"
        )
    index_of = {v: by_text[str(v)] for v in values if str(v) in by_text}
    return _lookup(spec.column, index_of, names, "scenario_unmapped")


def _by_bins(spec: ScenarioConfig, counts: pl.DataFrame) -> ScenarioAssignment:
    bins = list(spec.bins)
    if not counts["value"].dtype.is_numeric():
        raise UserError(f"scenario=bins needs a numeric column; '{spec.column}' holds {counts['value'].dtype}")
    names = (
        list(spec.names)
        if spec.names
        else ([f"lt{bins[0]:g}"] + [f"{lo:g}-{hi:g}" for lo, hi in zip(bins, bins[1:])] + [f"ge{bins[-1]:g}"])
    )
    return ScenarioAssignment(
        _bins_expression(spec.column, bins), names, "scenario_missing", {"kind": "bins", "bins": bins}
    )


def _bins_expression(name: str, bins: list) -> pl.Expr:
    column = pl.col(name)
    expression = pl.sum_horizontal([(column >= edge).cast(pl.Int32) for edge in bins])
    missing = column.is_null() | column.cast(pl.Float64).is_nan()  # NaN would compare above every edge
    return pl.when(missing).then(None).otherwise(expression).cast(pl.Int32)


def _by_top_k(spec: ScenarioConfig, counts: pl.DataFrame) -> ScenarioAssignment:
    ranked = counts.sort(["rows", "value"], descending=[True, False])
    top = sorted(ranked["value"].head(spec.top_k).to_list())
    index_of = {v: i for i, v in enumerate(top)}
    names = [str(v) for v in top]
    rest = [v for v in counts["value"].to_list() if v not in index_of]
    merged = bool(rest) and spec.rest == "merge"
    if merged:
        index_of.update({v: len(top) for v in rest})
        names.append(OTHER)
    assignment = _lookup(spec.column, index_of, names, "scenario_outside_top_k")
    if merged:  # the rule keeps the top values only: any other value, seen or new, is 'other'
        assignment.rule.update(values=[[v, i] for i, v in enumerate(top)], other=len(top))
    return assignment


def assignment_from_rule(rule: dict, names: list[str] | tuple[str, ...], schema: pl.Schema) -> ScenarioAssignment:
    """The assignment a prepared dataset's `rule` describes, for rows of `schema` (a new file's columns):
    a value the rule does not know gets no scenario (null), unless the rule merges the rest into 'other'."""
    name = rule["column"]
    if rule["kind"] == "bins":
        return ScenarioAssignment(_bins_expression(name, rule["bins"]), list(names), "scenario_missing", rule)
    trained = getattr(pl, rule.get("dtype", ""), None)
    column = pl.col(name)
    if isinstance(trained, type) and issubclass(trained, pl.DataType) and schema[name] != trained:
        column = column.cast(trained, strict=False)  # e.g. a CSV's integers for a parquet's strings
    expression = _lookup_expression(column, rule["values"])
    if rule.get("other") is not None:
        expression = pl.when(column.is_not_null() & expression.is_null()).then(rule["other"]).otherwise(expression)
    return ScenarioAssignment(expression.cast(pl.Int32), list(names), "scenario_unknown", rule)


def unique_metric_names(names: list[str]) -> list[str]:
    """Scenario names usable in MLflow metric keys (letters, digits, _ - . space), made unique."""
    cleaned: list[str] = []
    for name in names:
        base = re.sub(r"[^\w.\- ]", "_", str(name)).strip() or "scenario"
        candidate, n = base, 1
        while candidate in cleaned or candidate in ("overall", "mean"):
            n += 1
            candidate = f"{base}_{n}"
        cleaned.append(candidate)
    return cleaned
