"""``robustctl report``: the PDM paper's Tables 1-4 rebuilt from MLflow runs, beside the paper's
numbers.

    >>> report = build_report(
    ...     "sqlite:///outputs/mlruns.db", experiment="robustctl", out_dir=Path("report")
    ... )
    >>> report.table("table2").cell("mnist", "fgsm-0.05", column="pdm").text()  # '0.991 (0.988)'
    >>> report.print()                                                          # rich tables

Writes ``report.md``, ``table1.csv`` .. ``table4.csv`` and a self-contained ``report.html`` (tables
plus the runs' figures as inline PNG). Modules: :mod:`.reference` (the paper's numbers),
:mod:`.collect` (runs back from the store, which run answers which cell), :mod:`.tables` (the
tables as data), :mod:`.render` (rich, Markdown, CSV, HTML). No torch import; mlflow is imported
inside the functions that talk to the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from robustctl.errors import TrackingError
from robustctl.reporting.collect import Pick, RunRecord, collect_runs, pick_run
from robustctl.reporting.reference import REFERENCE, reference
from robustctl.reporting.render import collect_figures, html_page, markdown, print_tables, write_csv
from robustctl.reporting.tables import Cell, Table, build_tables, datasets_of, losses_of

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "REFERENCE",
    "Cell",
    "Pick",
    "Report",
    "RunRecord",
    "Table",
    "build_report",
    "build_tables",
    "collect_runs",
    "pick_run",
    "reference",
]


@dataclass
class Report:
    """The tables, the runs they were built from, and the files written (name -> path)."""

    tables: list[Table]
    runs: list[RunRecord]  # every run collected
    used: list[RunRecord]  # the runs behind at least one cell
    title: str
    subtitle: str
    tracking_uri: str
    files: dict[str, Path] = field(default_factory=dict)

    def table(self, key: str) -> Table:
        """``table1`` .. ``table4``."""
        for table in self.tables:
            if table.key == key:
                return table
        raise KeyError(key)

    def print(self, console: Console | None = None) -> None:
        print_tables(self.tables, console)

    def markdown(self) -> str:
        return markdown(self.tables, title=self.title, subtitle=self.subtitle, runs=self.used)


def used_runs(tables: Sequence[Table], records: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs some cell was read from, ordered by dataset, loss and start time."""
    ids = {c.run_id for t in tables for c in t.cells() if c.run_id}
    datasets, losses = datasets_of(records), losses_of(records)
    chosen = [r for r in records if r.run_id in ids]
    return sorted(
        chosen, key=lambda r: (datasets.index(r.dataset), losses.index(r.loss), r.start_time)
    )


def build_report(
    tracking_uri: str,
    experiment: str | None = None,
    run_ids: Sequence[str] | None = None,
    out_dir: Path | str = Path("report"),
    parent_run_id: str | None = None,
    *,
    figures: bool = True,
) -> Report:
    """Collect the runs, build Tables 1-4 and write ``report.md``, ``table{1..4}.csv``,
    ``report.html``.

    ``experiment`` None reads every experiment; ``run_ids`` / ``parent_run_id`` narrow the runs
    (see :func:`collect_runs`). ``figures=False`` leaves the figures out of the HTML page.
    Raises :class:`~robustctl.errors.TrackingError` when the selection holds no run.
    """
    records = collect_runs(
        tracking_uri, experiment=experiment, run_ids=run_ids, parent_run_id=parent_run_id
    )
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
    tables = build_tables(records)
    used = used_runs(tables, records)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = "robustctl report: PDM Tables 1-4"
    subtitle = (
        f"{len(records)} runs from "
        f"{f'experiment {experiment}' if experiment else 'all experiments'} at "
        f"{tracking_uri}, generated {now}. "
        "Each cell is the latest FINISHED run of its (dataset, loss) "
        "that logged the metric; values in parentheses are the PDM paper's."
    )
    report = Report(tables, records, used, title, subtitle, tracking_uri)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report.files["report.md"] = out / "report.md"
    report.files["report.md"].write_text(report.markdown() + "\n", encoding="utf-8")
    for table in tables:
        report.files[f"{table.key}.csv"] = write_csv(table, out / f"{table.key}.csv")
    pictures = collect_figures(used, tracking_uri) if figures else []
    report.files["report.html"] = out / "report.html"
    report.files["report.html"].write_text(
        html_page(tables, title=title, subtitle=subtitle, runs=used, figures=pictures),
        encoding="utf-8",
    )
    return report
