"""``robustctl report``: the PDM paper's Tables 1-4 rebuilt from MLflow runs, beside the paper's
numbers, with the uncertainty of every number and the runs and settings behind each column.

    >>> report = build_report(
    ...     "sqlite:///outputs/mlruns.db", experiment="robustctl", out_dir=Path("report")
    ... )
    >>> report.table("table2").cell("mnist", "fgsm-0.05", column="pdm").text()
    '0.991 [0.982, 0.997], n=85 (0.988)'
    >>> report.print()                                                          # rich tables

By default a report covers the most recent experiment only (the latest parent run's children);
``all_runs=True`` (``--all``) covers every run of the experiment. Columns are fingerprint groups:
every cell of a column reads runs of one training and threat-model configuration, averaged over
seeds when there are several.

Writes ``report.md``, ``table1.csv`` .. ``table4.csv``, ``whitebox_ratio.csv``, ``columns.csv``,
``whitebox_budget_<dataset>.png`` and a self-contained ``report.html`` (tables plus the figures
as inline PNG); when the runs call for them also ``table4q.csv`` (the query-based black box),
``table5.csv`` (detectors x losses) and
``table6.csv`` with ``robust_accuracy_<dataset>.png`` (the defense taxonomy and its scatter).
Modules: :mod:`.reference` (the paper's numbers), :mod:`.collect` (runs back from the store, their
identity), :mod:`.groups` (scope, fingerprint columns, which runs answer a cell),
:mod:`.uncertainty` (intervals, mean ± sd across seeds, t-intervals), :mod:`.cells` (the
primitives: cells, tables, column layout, metric rows), :mod:`.rows` (the metric rows the tables
share), :mod:`.ratios` (PDM's white-box distortion relative to CE and RCE), :mod:`.taxonomy`
(Table 6 and the robustness-accuracy scatter), :mod:`.tables` (Tables 1-5 and the ordered list
of every table), :mod:`.columns` (the Columns section), :mod:`.curves` (white-box budget
curves), :mod:`.render` (rich, Markdown, CSV, HTML). No torch
import; mlflow, matplotlib and scipy are imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from robustctl.errors import TrackingError
from robustctl.reporting.cells import Cell, Table, layout_of
from robustctl.reporting.collect import RunRecord, collect_runs, fallback_fingerprint
from robustctl.reporting.columns import ColumnInfo, column_infos, write_columns_csv
from robustctl.reporting.curves import BudgetFigure, success_curve, write_budget_figures
from robustctl.reporting.groups import (
    Column,
    Pick,
    Scope,
    describe_parent,
    latest_parent,
    pick_runs,
    scope_runs,
)
from robustctl.reporting.reference import REFERENCE, reference
from robustctl.reporting.render import collect_figures, html_page, markdown, print_tables, write_csv
from robustctl.reporting.tables import build_tables
from robustctl.reporting.taxonomy import ScatterFigure, write_scatter_figures
from robustctl.reporting.uncertainty import Estimate, ratio_estimate, seeds_estimate, t_interval

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "REFERENCE",
    "BudgetFigure",
    "Cell",
    "Column",
    "ColumnInfo",
    "Estimate",
    "Pick",
    "Report",
    "RunRecord",
    "ScatterFigure",
    "Scope",
    "Table",
    "build_report",
    "build_tables",
    "collect_runs",
    "fallback_fingerprint",
    "latest_parent",
    "pick_runs",
    "ratio_estimate",
    "reference",
    "scope_runs",
    "seeds_estimate",
    "success_curve",
    "t_interval",
]


@dataclass
class Report:
    """The tables, the runs they were built from, and the files written (name -> path)."""

    tables: list[Table]
    runs: list[RunRecord]  # every run in scope
    used: list[RunRecord]  # the runs behind at least one cell
    title: str
    subtitle: str
    tracking_uri: str
    scope: Scope | None = None
    columns: list[ColumnInfo] = field(default_factory=list)
    budget_figures: list[BudgetFigure] = field(default_factory=list)
    scatter_figures: list[ScatterFigure] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def table(self, key: str) -> Table:
        """``table1`` .. ``table4``, ``whitebox_ratio``, and ``table5`` / ``table6`` when built."""
        for table in self.tables:
            if table.key == key:
                return table
        raise KeyError(key)

    def print(self, console: Console | None = None) -> None:
        print_tables(self.tables, console, columns=self.columns, subtitle=self.subtitle)

    def markdown(self) -> str:
        return markdown(
            self.tables,
            title=self.title,
            subtitle=self.subtitle,
            runs=self.used,
            columns=self.columns,
            budget_figures=self.budget_figures,
            scatter_figures=self.scatter_figures,
        )


def used_runs(tables: Sequence[Table], records: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs some cell was read from, ordered by dataset, loss, seed and start time."""
    from robustctl.reporting.groups import datasets_of, losses_of, seed_order

    ids = {i for t in tables for c in t.cells() for i in c.run_ids}
    datasets, losses = datasets_of(records), losses_of(records)
    chosen = [r for r in records if r.run_id in ids]
    return sorted(
        chosen,
        key=lambda r: (
            datasets.index(r.dataset),
            losses.index(r.loss),
            seed_order(r.seed),
            r.start_time,
        ),
    )


def _select(
    tracking_uri: str,
    experiment: str | None,
    run_ids: Sequence[str] | None,
    parent_run_id: str | None,
    all_runs: bool,
) -> Scope:
    """The runs in scope: the given ``run_ids`` or ``parent_run_id``'s children as asked, else
    the latest parent run's children (or every run with ``all_runs``) of ``experiment``."""
    records = collect_runs(
        tracking_uri, experiment=experiment, run_ids=run_ids, parent_run_id=parent_run_id
    )
    if parent_run_id is not None:
        parent = collect_runs(tracking_uri, run_ids=[parent_run_id])[0]
        return Scope(records, parent, f"the {len(records)} child runs of {describe_parent(parent)}")
    if run_ids:
        return Scope(records, None, f"the {len(records)} runs asked for")
    return scope_runs(records, all_runs=all_runs)


def report_title(table_keys: set[str]) -> str:
    """Names the tables the report holds: the PDM paper's Tables 1-4, then the query-based black
    box, the detector comparison (Table 5) and the taxonomy table (Table 6) when the runs called
    for them."""
    extra = [
        name
        for key, name in (
            ("table4q", "query-based black box"),
            ("table5", "Table 5 (detectors)"),
            ("table6", "Table 6 (taxonomy)"),
        )
        if key in table_keys
    ]
    return "robustctl report: PDM Tables 1-4" + "".join(f", {name}" for name in extra)


def build_report(
    tracking_uri: str,
    experiment: str | None = None,
    run_ids: Sequence[str] | None = None,
    out_dir: Path | str = Path("report"),
    parent_run_id: str | None = None,
    *,
    all_runs: bool = False,
    figures: bool = True,
) -> Report:
    """Collect the runs, build Tables 1-4 and the white-box ratio table (Tables 5 and 6 when the
    runs call for them: :func:`build_tables`), and write ``report.md``, one CSV per table,
    ``columns.csv``, the white-box budget figures, the robustness-accuracy scatter (with Table 6)
    and ``report.html``.

    ``experiment`` None reads every experiment. Scope: ``run_ids`` / ``parent_run_id`` pick the
    runs (see :func:`collect_runs`); otherwise only the children of the latest parent run
    (:func:`scope_runs`), or every run with ``all_runs``. ``figures=False`` downloads no
    artifacts and draws nothing: no run figures in the HTML page, no budget curves and no
    robustness-accuracy scatter.
    Raises :class:`~robustctl.errors.TrackingError` when the selection holds no run.
    """
    scope = _select(tracking_uri, experiment, run_ids, parent_run_id, all_runs)
    records = scope.records
    if not records:
        where = f"experiment {experiment!r}" if experiment else "any experiment"
        raise TrackingError(
            f"no runs in {where} at {tracking_uri}"
            + (f" under parent run {parent_run_id}" if parent_run_id else ""),
            hint=(
                "run experiments first (`robustctl run ...`), "
                "or point tracking.uri / --experiment at the right store"
            ),
        )
    layout = layout_of(records)
    tables = build_tables(layout)
    used = used_runs(tables, records)
    infos = column_infos(layout, tables)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = report_title({table.key for table in tables})
    subtitle = (
        f"Scope: {scope.description}; "
        f"{f'experiment {experiment}' if experiment else 'all experiments'} at "
        f"{tracking_uri}, generated {now}. "
        "Each column is one fingerprint group (same training and threat-model settings, seeds "
        "aside; see Columns); each cell reads the latest FINISHED run per seed of its column "
        "that logged the metric; values in parentheses are the PDM paper's."
    )
    report = Report(tables, records, used, title, subtitle, tracking_uri, scope, infos)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if figures:
        taxonomy = [t for t in tables if t.key == "table6"]
        report.scatter_figures = write_scatter_figures(taxonomy[0], out) if taxonomy else []
        report.budget_figures = write_budget_figures(layout, tracking_uri, out)
        for fig in [*report.scatter_figures, *report.budget_figures]:
            report.files[fig.name] = fig.path
    report.files["report.md"] = out / "report.md"
    report.files["report.md"].write_text(report.markdown() + "\n", encoding="utf-8")
    for table in tables:
        report.files[f"{table.key}.csv"] = write_csv(table, out / f"{table.key}.csv")
    report.files["columns.csv"] = write_columns_csv(infos, out / "columns.csv")
    pictures = collect_figures(used, tracking_uri) if figures else []
    report.files["report.html"] = out / "report.html"
    report.files["report.html"].write_text(
        html_page(
            tables,
            title=title,
            subtitle=subtitle,
            runs=used,
            figures=pictures,
            columns=infos,
            budget_figures=report.budget_figures,
            scatter_figures=report.scatter_figures,
        ),
        encoding="utf-8",
    )
    return report
