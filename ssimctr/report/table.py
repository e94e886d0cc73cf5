"""Pure aggregation: runs -> one row per group of tag values, mean ± std over the group's runs.

Columns are (metric, scenario) pairs read from the metric keys `{split}/{metric}/{scenario}`:
every scenario found (natural order), then `mean` and `overall`. A metric written `other:name` is read
from the keys `{other}/{name}/{scenario}` instead, e.g. `search:ssim/selection_auc` (an SSIM pipeline
run's selection AUC on planted data) beside the test AUC. A cell holds the finite
values of its runs; NaN metrics are left out of that cell (its n is then smaller than the row's).
std is the sample standard deviation (ddof=1), NaN for a single run.

Significance (`significance`): in each column the best row (highest mean for AUC-like
metrics, lowest for losses) is compared with the runner-up by a one-sided paired t-test
(`scipy.stats.ttest_rel`, alternative "best is better"). Runs are paired by their `seed` tag:
only seeds present in both rows count, several runs of one seed in a row are averaged first,
runs without a seed tag are left out. With fewer than 2 pairs, or a tie, there is no test.

Pooling check (`config_differences`, `Row.differences`): a group should hold repeats of one
configuration that differ only in their seed. Runs log their flattened resolved config as MLflow
params; within each group the params are compared and every key with more than one value is kept
on the row, so that the report can warn (e.g. 100k- and 500k-row runs, or the debug and default
trainers, averaged into one mean). Keys matching `IGNORED_PARAMS` are not compared: the seed
(`seed`, `trainer.seed`, what a group averages over), where the outputs go (`paths.*`), the
tracking settings (`tracking.*`: store, experiment, artifact folder, run name) and settings that
do not change what is trained (`optimized_metric`, `trainer.progress`, `trainer.threads`,
`trainer.eval_batch_size`, `ssim.log_every`). Runs that logged no params are not compared.
"""

from __future__ import annotations

import fnmatch
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from ssimctr.errors import UserError
from ssimctr.tracking.runs import RunRecord

SUMMARY_SCENARIOS = ("mean", "overall")
# runs that differ in these tags are never pooled: a report has a table per dataset, task and data split
# (`sections`, and the MLflow experiment), and a table's rows never pool cold-start methods or text encoders
SECTION_TAGS = ("dataset", "task", "split")
NEVER_POOLED = (*SECTION_TAGS, "coldstart", "text_encoder")
SEED_TAG = "seed"
MISSING = "-"  # group value of a run that lacks the tag
LOWER_IS_BETTER = ("loss", "mse", "rmse", "mae", "error")
# params (fnmatch patterns) that may differ between the runs of a group: see the module's docstring
IGNORED_PARAMS = (
    "seed",
    "trainer.seed",
    "paths.*",
    "tracking.*",
    "optimized_metric",
    "trainer.progress",
    "trainer.threads",
    "trainer.eval_batch_size",
    "ssim.log_every",
)
UNSET = "(unset)"  # the value of a param that a run did not log


def higher_is_better(metric: str) -> bool:
    """False for losses and errors (logloss, mse, ...), True otherwise (auc, gauc, ...)."""
    return not any(word in metric.lower() for word in LOWER_IS_BETTER)


@dataclass(frozen=True)
class Column:
    """One metric on one scenario (`mean` and `overall` included)."""

    metric: str
    scenario: str

    @property
    def key(self) -> str:
        """`metric/scenario`, the name used in headers and CSV fields."""
        return f"{self.metric}/{self.scenario}"

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)


@dataclass(frozen=True)
class Cell:
    """The finite values of one column over the runs of one row, with each run's seed."""

    values: tuple[float, ...] = ()
    seeds: tuple[str | None, ...] = ()

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); NaN with fewer than 2 values."""
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else math.nan

    def by_seed(self) -> dict[str, float]:
        """Seed -> value (the mean of the values of that seed); runs without a seed left out."""
        grouped: dict[str, list[float]] = {}
        for seed, value in zip(self.seeds, self.values):
            if seed is not None:
                grouped.setdefault(seed, []).append(value)
        return {seed: float(np.mean(values)) for seed, values in grouped.items()}


@dataclass(frozen=True)
class Row:
    """One group: its tag values (in `group_by` order), its runs and one cell per column."""

    group: tuple[str, ...]
    run_ids: tuple[str, ...]
    cells: Mapping[Column, Cell]
    differences: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # see `config_differences`

    @property
    def n(self) -> int:
        return len(self.run_ids)

    def cell(self, column: Column) -> Cell:
        return self.cells.get(column, Cell())


@dataclass(frozen=True)
class ReportTable:
    """The aggregated report: rows sorted by group values, columns grouped by metric."""

    group_by: tuple[str, ...]
    split: str
    metrics: tuple[str, ...]
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    experiments: tuple[str, ...] = ()
    skipped: int = 0  # runs left out because they have no `{split}/{metric}/...` metric
    section: tuple[
        tuple[str, str], ...
    ] = ()  # the SECTION_TAGS values every row shares, e.g. (("task", "cold_start"),)
    split_by: tuple[str, ...] = ()  # NEVER_POOLED tags added to group_by because the runs differ in them

    @property
    def n_runs(self) -> int:
        return sum(row.n for row in self.rows)

    def columns_of(self, metric: str) -> tuple[Column, ...]:
        return tuple(column for column in self.columns if column.metric == metric)

    def ranking(self, column: Column) -> list[int]:
        """Indices of the rows with a value in `column`, best mean first (stable on ties)."""
        scored = [i for i, row in enumerate(self.rows) if row.cell(column).n]
        sign = -1.0 if column.higher_is_better else 1.0
        return sorted(scored, key=lambda i: sign * self.rows[i].cell(column).mean)

    def best(self, column: Column) -> tuple[int, ...]:
        """Indices of the rows whose mean is the best of `column` (several on a tie)."""
        ranking = self.ranking(column)
        if not ranking:
            return ()
        top = self.rows[ranking[0]].cell(column).mean
        return tuple(i for i in ranking if self.rows[i].cell(column).mean == top)


@dataclass(frozen=True)
class PairedTest:
    """Best row vs runner-up in one column: one-sided paired t-test over common seeds."""

    column: Column
    best: int
    runner_up: int
    n_pairs: int
    statistic: float = math.nan
    pvalue: float | None = None  # None: no test (fewer than 2 pairs, or a tie)
    alpha: float = 0.05

    @property
    def significant(self) -> bool:
        return self.pvalue is not None and not math.isnan(self.pvalue) and self.pvalue < self.alpha


def group_value(record: RunRecord, key: str) -> str | None:
    """The value of `key` for a run: a tag (`name` or `tags.name`) or a param (`params.name`)."""
    if key.startswith("params."):
        return record.params.get(key[len("params.") :])
    if key.startswith("tags."):
        key = key[len("tags.") :]
    return record.tags.get(key)


def sections(records: Iterable[RunRecord]) -> list[list[RunRecord]]:
    """The runs split by MLflow experiment and SECTION_TAGS (dataset, task, split): the runs of one part
    may share a table (their columns are one dataset's scenarios); runs of two parts never do."""
    parts: dict[tuple[str, ...], list[RunRecord]] = {}
    for record in records:
        key = (record.experiment, *(_text(record.tags.get(tag)) for tag in SECTION_TAGS))
        parts.setdefault(key, []).append(record)
    return [parts[key] for key in sorted(parts, key=lambda key: tuple(map(natural_key, key)))]


def aggregate(
    records: Iterable[RunRecord],
    group_by: Sequence[str] = ("backbone", "regime", "ssim"),
    split: str = "test",
    metrics: Sequence[str] = ("auc", "logloss"),
) -> ReportTable:
    """Group runs by the values of `group_by` and average each `{split}/{metric}/{scenario}`. Rows never
    pool runs that differ in a NEVER_POOLED tag: such a tag missing from `group_by` is added in front.

    Runs without any `{split}/{metric}/...` metric (e.g. a multirun's parent) are skipped.
    UserError when no run is left, a metric is missing everywhere, or a group-by key is
    carried by no run.
    """
    records = list(records)
    group_by = tuple(group_by)
    metrics = tuple(dict.fromkeys(metrics))
    if not group_by:
        raise UserError("--group-by needs at least one tag name")
    if not metrics:
        raise UserError("--metric needs at least one metric name")
    scenarios = {metric: _scenarios(records, split, metric) for metric in metrics}
    logged = {
        key[len(split) + 1 :].rpartition("/")[0]
        for r in records
        for key in r.metrics
        if key.startswith(f"{split}/") and key.count("/") >= 2
    }
    if not logged:
        splits = sorted({key.split("/")[0] for r in records for key in r.metrics if key.count("/") >= 2})
        raise UserError(
            f"none of the {len(records)} selected runs has a {split}/<metric>/<scenario> metric "
            f"(splits logged: {', '.join(splits) or 'none'})"
        )
    absent = [m for m in metrics if not scenarios[m]]
    if absent:
        raise UserError(
            f"no {metric_prefix(split, absent[0])}<scenario> metric in the selected runs "
            f"(metrics of split {split}: {', '.join(sorted(logged))})"
        )
    used = [r for r in records if any(metric_keys(r, split, m) for m in metrics)]
    unknown = [key for key in group_by if all(group_value(r, key) is None for r in used)]
    if unknown:
        tags = sorted({tag for r in used for tag in r.tags if not tag.startswith("mlflow.")})
        raise UserError(
            f"--group-by {unknown[0]!r} is not a tag of the selected runs "
            f"(tags: {', '.join(tags)}; params need the prefix params.)"
        )

    split_by = tuple(
        tag for tag in NEVER_POOLED if tag not in group_by and len({group_value(r, tag) for r in used}) > 1
    )
    group_by = (*split_by, *group_by)
    shared = {tag: {group_value(r, tag) for r in used} for tag in SECTION_TAGS}
    section = tuple(
        (tag, next(iter(values))) for tag, values in shared.items() if len(values) == 1 and None not in values
    )
    columns = tuple(Column(metric, scenario) for metric in metrics for scenario in scenarios[metric])
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for record in used:
        key = tuple(_text(group_value(record, name)) for name in group_by)
        groups.setdefault(key, []).append(record)
    rows = tuple(
        Row(
            group=key,
            run_ids=tuple(r.run_id for r in runs),
            cells={column: _cell(runs, split, column) for column in columns},
            differences=config_differences(runs),
        )
        for key, runs in sorted(groups.items(), key=lambda item: tuple(map(natural_key, item[0])))
    )
    experiments = tuple(sorted({r.experiment for r in used if r.experiment}))
    return ReportTable(
        group_by, split, metrics, columns, rows, experiments, len(records) - len(used), section, split_by
    )


def config_differences(
    runs: Iterable[RunRecord], ignored: Sequence[str] = IGNORED_PARAMS
) -> dict[str, tuple[str, ...]]:
    """Param -> its distinct values (natural order, `UNSET` for a run without it) for every param on
    which the runs that logged params disagree; keys matching `ignored` (fnmatch patterns) are not
    compared. Empty when fewer than two runs logged params."""
    logged = [run for run in runs if run.params]
    if len(logged) < 2:
        return {}
    keys = {key for run in logged for key in run.params}
    keys = {key for key in keys if not any(fnmatch.fnmatchcase(key, pattern) for pattern in ignored)}
    differences = {}
    for key in sorted(keys, key=natural_key):
        values = {run.params.get(key, UNSET) for run in logged}
        if len(values) > 1:
            differences[key] = tuple(sorted(values, key=natural_key))
    return differences


def significance(table: ReportTable, alpha: float = 0.05) -> dict[Column, PairedTest]:
    """Per column with at least two rows: the paired test of the best row against the runner-up."""
    tests: dict[Column, PairedTest] = {}
    for column in table.columns:
        ranking = table.ranking(column)
        if len(ranking) < 2:
            continue
        best, runner_up = ranking[0], ranking[1]
        tests[column] = paired_test(
            column, table.rows[best].cell(column), table.rows[runner_up].cell(column), best, runner_up, alpha
        )
    return tests


def paired_test(
    column: Column, best: Cell, other: Cell, best_index: int = 0, other_index: int = 1, alpha: float = 0.05
) -> PairedTest:
    """One-sided paired t-test that `best` beats `other` in the direction of `column`."""
    a, b = best.by_seed(), other.by_seed()
    seeds = sorted(set(a) & set(b), key=natural_key)
    result = PairedTest(column, best_index, other_index, len(seeds), alpha=alpha)
    if len(seeds) < 2 or best.mean == other.mean:
        return result
    x = np.array([a[s] for s in seeds])
    y = np.array([b[s] for s in seeds])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_rel(x, y, alternative="greater" if column.higher_is_better else "less")
    pvalue = float(test.pvalue)
    return PairedTest(
        column,
        best_index,
        other_index,
        len(seeds),
        float(test.statistic),
        None if math.isnan(pvalue) else pvalue,
        alpha,
    )


def natural_key(text: str) -> tuple:
    """Sort key that orders "s2" before "s10" and numbers numerically."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(text)) if part
    )


def metric_prefix(split: str, metric: str) -> str:
    """The key prefix of a metric's columns: `{split}/{metric}/`, or `{other}/{name}/` for `other:name`."""
    other, colon, name = metric.partition(":")
    return f"{other}/{name}/" if colon else f"{split}/{metric}/"


def metric_keys(record: RunRecord, split: str, metric: str) -> list[str]:
    """The keys of `record`'s metrics that make columns of `metric` (`{split}/{metric}/<scenario>`)."""
    prefix = metric_prefix(split, metric)
    return [key for key in record.metrics if key.startswith(prefix) and len(key) > len(prefix)]


def _scenarios(records: Sequence[RunRecord], split: str, metric: str) -> list[str]:
    """Scenario names of `{split}/{metric}/<name>` keys, natural order, then mean and overall."""
    prefix = len(metric_prefix(split, metric))
    names = {key[prefix:] for record in records for key in metric_keys(record, split, metric)}
    scenarios = sorted(names - set(SUMMARY_SCENARIOS), key=natural_key)
    return scenarios + [name for name in SUMMARY_SCENARIOS if name in names]


def _cell(runs: Sequence[RunRecord], split: str, column: Column) -> Cell:
    key = metric_prefix(split, column.metric) + column.scenario
    pairs = [
        (run.metrics[key], run.tags.get(SEED_TAG))
        for run in runs
        if key in run.metrics and math.isfinite(run.metrics[key])
    ]
    return Cell(tuple(value for value, _ in pairs), tuple(seed for _, seed in pairs))


def _text(value: str | None) -> str:
    return MISSING if value is None else value
