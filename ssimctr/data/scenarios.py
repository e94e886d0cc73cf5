"""Scenario assignment: which scenario (0..K-1) each row belongs to, and the scenarios' names."""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass

import polars as pl

from ssimctr.config.schema import ScenarioConfig
from ssimctr.errors import UserError

KINDS = ("column", "mapping", "bins", "top_k")
OTHER = "other"
OPTIONS_OF_KIND = {"mapping": ("mapping",), "bins": ("bins", "names"), "top_k": ("top_k",)}  # default None
MANY_SCENARIOS = 50  # above this, a warning: one tower per scenario gets large and slow


@dataclass
class ScenarioAssignment:
    """`expression` gives the scenario index (Int32, null = drop the row); `drop_reason` names those drops."""

    expression: pl.Expr
    names: list[str]
    drop_reason: str


def assign_scenarios(frame: pl.LazyFrame, spec: ScenarioConfig, origin: str) -> ScenarioAssignment:
    """Build the scenario index expression for `spec` (reads the column's distinct values once)."""
    if spec.kind not in KINDS:
        raise UserError(f"scenario.kind={spec.kind} is not known: use one of {', '.join(KINDS)}")
    _check_options_of_kind(spec)
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


def _check_options_of_kind(spec: ScenarioConfig) -> None:
    """Refuse an option that belongs to another kind (it would be silently ignored)."""
    for kind, keys in OPTIONS_OF_KIND.items():
        for key in keys:
            if kind != spec.kind and getattr(spec, key) is not None:
                raise UserError(
                    f"scenario.{key} belongs to scenario={kind}, but scenario={spec.kind} is chosen: "
                    f"add scenario={kind} to use it, or leave scenario.{key} out"
                )


def _lookup(column: str, index_of: dict, names: list[str], drop_reason: str) -> ScenarioAssignment:
    """value -> scenario index (null for values not in `index_of`), as one `is_in` test per scenario:
    elementwise, so the streaming engine keeps it streaming (replace_strict would not)."""
    values_of: dict[int, list] = {}
    for value, index in index_of.items():
        values_of.setdefault(index, []).append(value)
    expression = pl.lit(None, dtype=pl.Int32)
    for index in sorted(values_of, reverse=True):
        expression = pl.when(pl.col(column).is_in(values_of[index])).then(pl.lit(index, pl.Int32)).otherwise(expression)
    return ScenarioAssignment(expression, names, drop_reason)


def _by_mapping(spec: ScenarioConfig, values: list, origin: str) -> ScenarioAssignment:
    if not spec.mapping:
        raise UserError("scenario=mapping needs scenario.mapping={value: name, ...}")
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
    bins = list(spec.bins or [])
    if not bins or bins != sorted(set(bins)):
        raise UserError(f"scenario.bins must be a non-empty increasing list of edges, got {spec.bins}")
    if not counts["value"].dtype.is_numeric():
        raise UserError(f"scenario=bins needs a numeric column; '{spec.column}' holds {counts['value'].dtype}")
    names = (
        list(spec.names)
        if spec.names
        else ([f"lt{bins[0]:g}"] + [f"{lo:g}-{hi:g}" for lo, hi in zip(bins, bins[1:])] + [f"ge{bins[-1]:g}"])
    )
    if len(names) != len(bins) + 1:
        raise UserError(f"scenario.names needs len(scenario.bins) + 1 = {len(bins) + 1} names, got {len(names)}")
    column = pl.col(spec.column)
    expression = pl.sum_horizontal([(column >= edge).cast(pl.Int32) for edge in bins])
    missing = column.is_null() | column.cast(pl.Float64).is_nan()  # NaN would compare above every edge
    expression = pl.when(missing).then(None).otherwise(expression).cast(pl.Int32)
    return ScenarioAssignment(expression, names, "scenario_missing")


def _by_top_k(spec: ScenarioConfig, counts: pl.DataFrame) -> ScenarioAssignment:
    if not spec.top_k or spec.top_k < 1:
        raise UserError(f"scenario=top_k needs scenario.top_k >= 1, got {spec.top_k}")
    if spec.rest not in ("merge", "drop"):
        raise UserError(f"scenario.rest={spec.rest}: use merge or drop")
    ranked = counts.sort(["rows", "value"], descending=[True, False])
    top = sorted(ranked["value"].head(spec.top_k).to_list())
    index_of = {v: i for i, v in enumerate(top)}
    names = [str(v) for v in top]
    rest = [v for v in counts["value"].to_list() if v not in index_of]
    if rest and spec.rest == "merge":
        index_of.update({v: len(top) for v in rest})
        names.append(OTHER)
    return _lookup(spec.column, index_of, names, "scenario_outside_top_k")


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
