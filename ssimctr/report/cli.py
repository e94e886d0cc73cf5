"""`ssimctr-report`: compare finished runs of an MLflow store, one row per group of tags.

ssimctr-report                                   # all ssimctr* experiments, test split
ssimctr-report --parent <sweep run id> --markdown report.md --plot auc.png --log-to <sweep run id>
ssimctr-report --group-by backbone,regime --filter "tags.dataset = 'synthetic'" --csv report.csv
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ssimctr.errors import UserError
from ssimctr.report.plot import plot_bars
from ssimctr.report.render import legend, pooling_warnings, render_csv, render_markdown, render_terminal
from ssimctr.report.table import aggregate, group_value, metric_keys, sections, significance

PROG = "ssimctr-report"
DEFAULT_URI = "sqlite:///outputs/mlflow.db"
DEFAULT_GROUP_BY = "dataset,task,backbone,regime,ssim"
DEFAULT_METRICS = "auc,logloss"
WIDE = 240

EPILOG = """\
cells: mean ± std (sample std, ddof=1) over the runs of a group (usually its seeds); n = runs
in the group, "(n=k)" in a cell when only k runs have a finite value. Columns: every scenario
found in the metric keys <split>/<metric>/<scenario>, then mean (macro) and overall (pooled).
A metric written other:name reads the keys other/name/<scenario> instead of --split's, e.g.
--metric auc,search:ssim/selection_auc (SSIM's selection AUC on planted synthetic data).
never pooled: a table per MLflow experiment, dataset, task and data split (tags dataset, task,
split), each with its own scenarios; within a table, runs of different cold-start methods or text
encoders (tags coldstart, text_encoder) are rows apart even when --group-by leaves them out.
best: highest mean for AUC, lowest for logloss (bold; **x** in markdown).
significance: in each column the best row is compared with the runner-up by a one-sided
paired t-test (scipy.stats.ttest_rel, alternative "best is better") over the seeds both rows
have (runs paired by their `seed` tag, repeated seeds averaged); "*" after the best cell when
p < --alpha. Fewer than 2 common seeds, or a tie: no test, no mark.
pooling check: a group should hold runs of one config that differ only in their seed. The runs'
params (their flattened resolved config) are compared within each group, the seed, paths.*,
tracking.* and display-only settings aside; a warning on stderr names the keys that differ, e.g.
dataset.rows (100000, 500000): add them to --group-by as params.NAME, or select with --filter.
split val reads the last logged epoch of val/* metrics.
exit status: 0 ok, 2 for a usage error (no matching runs, unknown tag, missing store, ...).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Per-scenario AUC / logloss of finished ssimctr runs, mean ± std over seeds.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    select = parser.add_argument_group("selection")
    select.add_argument(
        "--uri",
        default=os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or %(default)s)",
    )
    select.add_argument(
        "--experiment",
        action="append",
        metavar="NAME",
        help="experiment name, repeatable (default: every experiment named ssimctr*)",
    )
    select.add_argument("--parent", metavar="RUN_ID", help="only the children of this run (a multirun's parent)")
    select.add_argument("--filter", metavar="FILTER", help="MLflow filter string, e.g. \"tags.backbone = 'dnn'\"")
    table = parser.add_argument_group("table")
    table.add_argument(
        "--group-by",
        default=DEFAULT_GROUP_BY,
        metavar="TAGS",
        help="comma-separated tag names, one row per combination; params.NAME for a param (default: %(default)s)",
    )
    table.add_argument(
        "--metric",
        default=DEFAULT_METRICS,
        metavar="METRICS",
        help="comma-separated metrics; other:name reads split `other` (default: %(default)s)",
    )
    table.add_argument("--split", default="test", help="split of the metric keys (default: %(default)s)")
    table.add_argument(
        "--alpha", type=_probability, default=0.05, help="significance level of the paired test (default: %(default)s)"
    )
    table.add_argument("--digits", type=int, default=4, help="decimals shown (default: %(default)s)")
    output = parser.add_argument_group("outputs")
    output.add_argument("--markdown", type=Path, metavar="FILE", help="write a markdown table")
    output.add_argument("--csv", type=Path, metavar="FILE", help="write raw means, stds and n as CSV")
    output.add_argument("--plot", type=Path, metavar="FILE.png", help="grouped bar chart of per-scenario AUC")
    output.add_argument("--plot-metric", default="auc", metavar="METRIC", help="metric of --plot (default: auc)")
    output.add_argument(
        "--log-to",
        metavar="RUN_ID",
        help="log the written files as artifacts (folder report/) of this run; "
        "writes report.md and report.csv when no output file is given",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for user errors, printed as one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=WIDE)  # piped or redirected: do not squeeze the tables to 80 columns
    errors = Console(stderr=True)
    try:
        report(args, command=" ".join([PROG, *map(shlex.quote, argv)]), console=console, errors=errors)
    except UserError as error:
        errors.print(f"[bold red]error:[/] {error}", markup=True, highlight=False, soft_wrap=True)
        return 2
    return 0


def report(args: argparse.Namespace, command: str, console: Console, errors: Console | None = None) -> list[Path]:
    """Select, aggregate, print and write; return the files written. Warnings go to `errors` (stderr)."""
    from ssimctr.tracking.runs import log_report_artifacts, search_runs  # imports mlflow

    group_by = _names(args.group_by, "--group-by")
    metrics = _names(args.metric, "--metric")
    if args.digits < 0:
        raise UserError("--digits must be >= 0")
    records = search_runs(args.uri, args.experiment, args.parent, args.filter)
    if not records:
        raise UserError(f"no finished runs match {_selection(args)} in {args.uri}")
    if args.group_by == DEFAULT_GROUP_BY:  # older runs may lack a default tag (task): group by the others
        group_by = [key for key in group_by if any(group_value(r, key) is not None for r in records)] or group_by
    aggregate(records, group_by, args.split, metrics)  # the selection's errors (unknown tag, no such metric)
    tables, skipped = [], 0
    for part in sections(records):  # a table per experiment, dataset, task and data split: never pooled
        present = [m for m in metrics if any(metric_keys(r, args.split, m) for r in part)]
        if present:
            tables.append(aggregate(part, group_by, args.split, present))
        else:
            skipped += len(part)
    if args.plot and not any(args.plot_metric in table.metrics for table in tables):
        raise UserError(f"--plot-metric {args.plot_metric} is not one of --metric {','.join(metrics)}")
    tests = [significance(table, args.alpha) for table in tables]
    warn = errors or Console(stderr=True)
    for table, tested in zip(tables, tests):
        for rich_table in render_terminal(table, tested, args.digits):
            console.print(rich_table)
        if table.split_by:
            console.print(f"[dim]rows also split by {', '.join(table.split_by)}: its runs differ in them[/]")
        for warning in pooling_warnings(table):  # runs of one group whose configs differ beyond the seed
            warn.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    console.print(legend(args.alpha), style="dim", highlight=False)
    skipped += sum(table.skipped for table in tables)
    if skipped:
        console.print(
            f"[dim]{skipped} selected run(s) without {args.split}/ metrics (e.g. multirun parents) left out[/]"
        )

    written: list[Path] = []
    temporary = None
    markdown, csv_path, plot = args.markdown, args.csv, args.plot
    if args.log_to and not (markdown or csv_path or plot):
        temporary = tempfile.TemporaryDirectory(prefix="ssimctr-report-")
        markdown, csv_path = Path(temporary.name) / "report.md", Path(temporary.name) / "report.csv"
    try:
        if markdown:
            parts = [render_markdown(t, tested, command, args.alpha, args.digits) for t, tested in zip(tables, tests)]
            written.append(_write(markdown, "\n".join(parts)))
        if csv_path:
            written.append(_write(csv_path, render_csv(tables)))
        if plot:
            try:
                written.append(plot_bars([t for t in tables if args.plot_metric in t.metrics], plot, args.plot_metric))
            except OSError as error:
                raise UserError(f"cannot write {plot}: {error}") from error
        for path in written:
            if not temporary:
                console.print(f"wrote {path}")
        if args.log_to:
            where = log_report_artifacts(args.uri, args.log_to, written)
            console.print(f"logged {', '.join(p.name for p in written)} to run {args.log_to}: {where}")
    finally:
        if temporary:
            temporary.cleanup()
    return written


def _names(value: str, option: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise UserError(f"{option} needs at least one name")
    return names


def _selection(args: argparse.Namespace) -> str:
    parts = [f"experiment {', '.join(args.experiment)}" if args.experiment else "experiments ssimctr*"]
    if args.parent:
        parts.append(f"parent run {args.parent}")
    if args.filter:
        parts.append(f"filter {args.filter!r}")
    return " and ".join(parts)


def _write(path: Path, text: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror}") from error
    return path


def _probability(value: str) -> float:
    try:
        alpha = float(value)
    except ValueError:
        alpha = -1.0
    if not 0.0 < alpha < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {value!r}")
    return alpha


if __name__ == "__main__":
    sys.exit(main())
