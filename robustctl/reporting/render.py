"""Render report tables: rich (terminal), Markdown, CSV (one file per table), self-contained HTML.

Every format shows a cell as ``ours (paper)`` where ours carries its uncertainty
(``0.912 [0.871, 0.948], n=85``; ``0.912 ± 0.013, 3 seeds``), a missing value as its reason
(``failed: ...``, ``not run; paper 0.988``), and caveats on a value as numbered footnotes. Below
the title, the "Columns" section says which runs and settings each column stands for
(:mod:`.columns`). The HTML page embeds the runs' figures, the robustness-accuracy scatter (with
Table 6) and the white-box budget curves as base64 PNG (``data:`` URIs), so it still works when
moved or mailed; :func:`collect_figures` downloads the runs' figures from the store into a
temporary folder.
"""

from __future__ import annotations

import base64
import csv
import html
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.text import Text

from robustctl.reporting.cells import Cell, Table
from robustctl.reporting.collect import RunRecord, download_artifact
from robustctl.reporting.columns import CSV_FIELDS, ColumnInfo, info_row
from robustctl.reporting.curves import BudgetFigure
from robustctl.reporting.reference import PAPER_ATTACKS
from robustctl.reporting.taxonomy import ScatterFigure
from robustctl.table_fit import FittedTable

__all__ = [
    "FIGURES",
    "Figure",
    "collect_figures",
    "html_page",
    "markdown",
    "print_tables",
    "rich_table",
    "runs_rows",
    "write_csv",
]

# the figures a report shows per run, in this order (graybox/<attack>_confusion.png follow)
FIGURES: tuple[tuple[str, str], ...] = (
    ("plots/confusion_matrix.png", "clean test confusion matrix"),
    ("plots/tsne.png", "t-SNE of the test embeddings (Figure 2)"),
    ("plots/graybox/roc.png", "gray-box detection ROC curves (Table 2)"),
    ("plots/resiliency.png", "accuracy under attack vs eps (Figure 3)"),
)
SCATTER_TITLE = "Robustness vs clean accuracy (Table 6's defenses)"
_ATTACK_CONFUSION = re.compile(r"^plots/graybox/(?P<attack>.+)_confusion\.png$")


def header(table: Table, column: str) -> str:
    return table.header(column)


def _marks(mark: tuple[int, ...] | None) -> str:
    """`` [1]``, `` [1, 2]`` or ""."""
    return f" [{', '.join(map(str, mark))}]" if mark else ""


# ------------------------------------------------------------------------------- terminal
def _rich_cell(cell: Cell, mark: tuple[int, ...] | None) -> Text:
    text = Text()
    if cell.value is not None:
        text.append(cell.ours())
    else:
        text.append(cell.ours(), style="red" if cell.failed else "dim italic")
    if cell.paper() is not None:
        text.append(
            f" ({cell.paper()})" if cell.value is not None else f"; paper {cell.paper()}",
            style="dim",
        )
    if mark:
        text.append(_marks(mark), style="yellow")
    return text


def rich_table(table: Table) -> FittedTable:
    """The terminal table: loss cells ``ours (paper)``, reasons dimmed (failures in red),
    footnotes as caption; laid out for the console's width when printed (numbers whole, headers
    and labels folded, the loss columns split over several tables when they do not fit)."""
    marks, notes = table.footnotes()
    # Text, not markup: labels like "PDM [fp 1a2b3c]" and notes must print as written
    caption = Text("\n".join([table.caption, *(f"[{i}] {n}" for i, n in enumerate(notes, 1))]))
    out = FittedTable(
        table.title,
        [Text(header(table, column)) for column in table.columns],
        labels=table.labels,
        caption=caption,
        options={"header_style": "bold", "title_justify": "left", "caption_justify": "left"},
    )
    for i, row in enumerate(table.rows):
        out.add_row(
            *[
                _rich_cell(c, marks.get((i, j))) if isinstance(c, Cell) else Text(c)
                for j, c in enumerate(row)
            ]
        )
    return out


def rich_columns(infos: Sequence[ColumnInfo]) -> FittedTable:
    """The "Columns" section as a three-column table that fits a terminal: which column,
    which fingerprint and seeds, which settings (run ids are in report.md and columns.csv)."""
    out = FittedTable(
        "Columns: runs and settings",
        ["column", "fingerprint, seeds", "settings"],
        justify="left",
        options={"header_style": "bold", "title_justify": "left"},
    )
    for info in infos:
        settings = "; ".join(f"{name} {value}" for name, value in info.settings.items() if value)
        out.add_row(  # Text: a label such as "PDM [fp 1a2b3c]" is not rich markup
            Text(f"{info.dataset} / {info.label}"),
            Text(
                f"{info.fingerprint} ({info.n_seeds} seed{'' if info.n_seeds == 1 else 's'}: "
                f"{', '.join(info.seeds) or '-'})"
            ),
            Text(settings),
        )
    return out


def print_tables(
    tables: Sequence[Table],
    console: Console | None = None,
    columns: Sequence[ColumnInfo] = (),
    subtitle: str = "",
) -> None:
    """Print the subtitle, the Columns section and each table to ``console`` (default: the
    shared one), every table laid out for the console's width."""
    from robustctl.console import console as default

    target = console or default
    if subtitle:
        target.print(Text(subtitle, style="dim"))
    if columns:
        target.print(rich_columns(columns))
    for table in tables:
        target.print(
            rich_table(table) if table.rows else Text(f"{table.title}: no runs", style="dim")
        )


# ------------------------------------------------------------------------------- Markdown
def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _cell_text(cell: Cell | str, mark: tuple[int, ...] | None) -> str:
    if not isinstance(cell, Cell):
        return cell
    return cell.text() + _marks(mark)


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]], right_from: int) -> list[str]:
    lines = [
        "| " + " | ".join(_md(c) for c in columns) + " |",
        "|" + "|".join("---:" if j >= right_from else "---" for j in range(len(columns))) + "|",
    ]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


_RUN_COLUMNS = ["dataset", "loss", "run", "run id", "status", "command", "started (UTC)"]


def runs_rows(runs: Sequence[RunRecord]) -> list[list[str]]:
    """One row per run behind the tables' cells."""

    def started(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    return [
        [r.dataset, r.loss, r.run_name, r.run_id, r.status, r.command, started(r.start_time)]
        for r in runs
    ]


def _md_columns(infos: Sequence[ColumnInfo]) -> list[str]:
    """The "Columns" section as a Markdown list, one item per dataset and column."""
    lines = ["## Columns", ""]
    for info in infos:
        seeds = f"{info.n_seeds} seed{'s' if info.n_seeds != 1 else ''}" + (
            f" ({', '.join(info.seeds)})" if info.seeds else ""
        )
        settings = "; ".join(f"{k} {v}" for k, v in info.settings.items() if v)
        runs = ", ".join(f"`{i}`" for i in info.run_ids) or "none"
        lines.append(
            f"- **{info.dataset} / {_md(info.label)}**: fingerprint `{info.fingerprint}`, "
            f"{seeds}; runs {runs} (group: {info.statuses})"
            + (f"; {_md(settings)}" if settings else "")
        )
    return [*lines, ""]


def markdown(
    tables: Sequence[Table],
    *,
    title: str,
    subtitle: str = "",
    runs: Sequence[RunRecord] = (),
    columns: Sequence[ColumnInfo] = (),
    budget_figures: Sequence[BudgetFigure] = (),
    scatter_figures: Sequence[ScatterFigure] = (),
) -> str:
    """The report as one Markdown document: the columns' runs and settings, each table with its
    caption and footnotes, the robustness-accuracy scatter and the white-box budget figures
    (files beside report.md), then the runs used."""
    lines = [f"# {title}", ""]
    if subtitle:
        lines += [subtitle, ""]
    if columns:
        lines += _md_columns(columns)
    for table in tables:
        lines += [f"## {table.title}", "", table.caption, ""]
        if not table.rows:
            lines += ["_No runs for this table._", ""]
            continue
        marks, notes = table.footnotes()
        rows = [
            [_cell_text(c, marks.get((i, j))) for j, c in enumerate(row)]
            for i, row in enumerate(table.rows)
        ]
        lines += _md_table([header(table, c) for c in table.columns], rows, table.labels)
        lines += (
            [""] + [f"[{i}] {_md(n)}  " for i, n in enumerate(notes, 1)] + ([""] if notes else [])
        )
    if scatter_figures:
        lines += [f"## {SCATTER_TITLE}", ""]
        for fig in scatter_figures:
            lines += [f"![{fig.dataset} robustness vs accuracy]({fig.name})", "", fig.caption, ""]
    if budget_figures:
        lines += ["## White-box budget curves", ""]
        for fig in budget_figures:
            lines += [f"![{fig.dataset} white-box budget curve]({fig.name})", "", fig.caption, ""]
    if runs:
        lines += (
            ["## Runs", ""] + _md_table(_RUN_COLUMNS, runs_rows(runs), len(_RUN_COLUMNS)) + [""]
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------- CSV
_CSV_SUFFIXES = ("", "_paper", "_ci_low", "_ci_high", "_sd", "_n_seeds", "_pairs", "_note", "_run")


def _number(value: float | int | None) -> str:
    return "" if value is None else repr(value)


def write_csv(table: Table, path: str | Path) -> Path:
    """One CSV per table. Per column (key ``<c>``): ``<c>`` (our value, full precision, empty when
    missing), ``<c>_paper``, ``<c>_ci_low``/``<c>_ci_high`` (95% interval: the run's, or the
    t-interval of a ratio), ``<c>_sd`` (across seeds), ``<c>_n_seeds``, ``<c>_pairs`` (AUC pair
    count; the smallest among seeds), ``<c>_note`` (the reason, or the caveats on a value, joined
    by ``; ``), ``<c>_run`` (run ids joined by ``;``)."""
    path = Path(path)
    labels = table.columns[: table.labels]
    fields = [*labels, *(f"{c}{suffix}" for c in table.losses for suffix in _CSV_SUFFIXES)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        for row in table.rows:
            out = [str(c) for c in row[: table.labels]]
            for cell in row[table.labels :]:
                assert isinstance(cell, Cell)
                out += [
                    _number(cell.value),
                    _number(cell.reference),
                    _number(cell.ci_low),
                    _number(cell.ci_high),
                    _number(cell.sd),
                    str(cell.n_seeds) if cell.value is not None else "",
                    _number(cell.pairs),
                    (cell.reason or "") if cell.value is None else (cell.note or ""),
                    ";".join(cell.run_ids),
                ]
            writer.writerow(out)
    return path


# ------------------------------------------------------------------------------- figures
@dataclass(frozen=True)
class Figure:
    """One PNG artifact of one run, read into memory."""

    run: RunRecord
    path: str  # artifact path, e.g. plots/graybox/roc.png
    caption: str
    png: bytes

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _figure_paths(artifacts: Sequence[str]) -> list[tuple[str, str]]:
    present = set(artifacts)
    chosen = [(p, c) for p, c in FIGURES if p in present]
    attacks = {m["attack"]: p for p in artifacts if (m := _ATTACK_CONFUSION.match(p))}
    order = [
        *[a for a in PAPER_ATTACKS if a in attacks],
        *sorted(set(attacks) - set(PAPER_ATTACKS)),
    ]
    chosen += [(attacks[a], f"{a}: origin vs adversarial class (Figure 1b)") for a in order]
    return chosen


def collect_figures(runs: Sequence[RunRecord], tracking_uri: str) -> list[Figure]:
    """Download each run's report figures (those it has) and read them in;
    unreadable ones are skipped."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="robustctl-report-") as tmp:
        for index, run in enumerate(runs):
            for path, caption in _figure_paths(run.artifacts):
                dst = Path(tmp, str(index))
                dst.mkdir(exist_ok=True)
                try:
                    local = download_artifact(client, run.run_id, path, dst)
                    figures.append(Figure(run, path, caption, Path(local).read_bytes()))
                except (MlflowException, OSError):
                    continue
    return figures


# ------------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 75rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 0.3rem; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; }
th { background: #f2f2f2; } td.num { text-align: right; white-space: nowrap; }
.paper { color: #777; } .reason { color: #777; font-style: italic; white-space: normal; }
.failed { color: #b00020; font-style: normal; } .mark { color: #a60; }
.caption, .notes { color: #555; font-size: 0.88rem; max-width: 60rem; }
figure { display: inline-block; margin: 0.5rem; vertical-align: top; }
figure img { max-width: 34rem; border: 1px solid #ddd; } \
figcaption { font-size: 0.85rem; color: #555; }
"""


def _html_cell(cell: Cell | str, mark: tuple[int, ...] | None, numeric: bool) -> str:
    if not isinstance(cell, Cell):
        return f"<td>{html.escape(cell)}</td>"
    runs = ", ".join(cell.run_ids)
    title = f' title="run {html.escape(runs)}"' if runs else ""
    if cell.value is not None:
        body = html.escape(cell.ours())
        if cell.paper() is not None:
            body += f' <span class="paper">({html.escape(cell.paper() or "")})</span>'
    else:
        kind = "reason failed" if cell.failed else "reason"
        body = f'<span class="{kind}">{html.escape(cell.ours())}</span>'
        if cell.paper() is not None:
            body += f'<span class="paper">; paper {html.escape(cell.paper() or "")}</span>'
    if mark:
        body += f' <sup class="mark">{_marks(mark).strip()}</sup>'
    return f'<td class="{"num" if numeric else ""}"{title}>{body}</td>'


def _html_table(table: Table) -> str:
    parts = [
        f'<h2 id="{table.key}">{html.escape(table.title)}</h2>',
        f'<p class="caption">{html.escape(table.caption)}</p>',
    ]
    if not table.rows:
        return "\n".join([*parts, "<p><em>No runs for this table.</em></p>"])
    marks, notes = table.footnotes()
    parts.append(
        "<table><thead><tr>"
        + "".join(f"<th>{html.escape(header(table, c))}</th>" for c in table.columns)
        + "</tr></thead><tbody>"
    )
    for i, row in enumerate(table.rows):
        parts.append(
            "<tr>"
            + "".join(
                _html_cell(c, marks.get((i, j)), j >= table.labels) for j, c in enumerate(row)
            )
            + "</tr>"
        )
    parts.append("</tbody></table>")
    if notes:
        parts.append(
            '<ol class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ol>"
        )
    return "\n".join(parts)


def _html_columns(infos: Sequence[ColumnInfo]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in CSV_FIELDS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in info_row(i)) + "</tr>" for i in infos
    )
    return (
        '<h2 id="columns">Columns: runs and settings</h2>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_page(
    tables: Sequence[Table],
    *,
    title: str,
    subtitle: str = "",
    runs: Sequence[RunRecord] = (),
    figures: Sequence[Figure] = (),
    columns: Sequence[ColumnInfo] = (),
    budget_figures: Sequence[BudgetFigure] = (),
    scatter_figures: Sequence[ScatterFigure] = (),
) -> str:
    """One self-contained HTML page: the columns' runs and settings, the tables, the
    robustness-accuracy scatter, the white-box budget curves, the runs used, and each run's
    figures inline."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="caption">{html.escape(subtitle)}</p>')
    if columns:
        parts.append(_html_columns(columns))
    parts += [_html_table(t) for t in tables]
    if scatter_figures:
        parts.append(f'<h2 id="robust_accuracy">{html.escape(SCATTER_TITLE)}</h2>')
        parts += [
            f'<figure><img alt="{html.escape(f.name)}" src="{_png_uri(f.path)}">'
            f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
            for f in scatter_figures
        ]
    if budget_figures:
        parts.append('<h2 id="budget">White-box budget curves</h2>')
        parts += [
            f'<figure><img alt="{html.escape(f.name)}" src="{_png_uri(f.path)}">'
            f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
            for f in budget_figures
        ]
    if runs:
        parts.append(
            "<h2>Runs</h2><table><thead><tr>"
            + "".join(f"<th>{c}</th>" for c in _RUN_COLUMNS)
            + "</tr></thead><tbody>"
        )
        parts += [
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
            for row in runs_rows(runs)
        ]
        parts.append("</tbody></table>")
    if figures:
        parts.append("<h2>Figures</h2>")
        current = None
        for fig in figures:
            if fig.run.run_id != current:
                current = fig.run.run_id
                parts.append(
                    f"<h3>{html.escape(fig.run.dataset)} / {html.escape(fig.run.loss)}: "
                    f"{html.escape(fig.run.run_name)} "
                    f"<small>({html.escape(fig.run.run_id)})</small></h3>"
                )
            parts.append(
                f'<figure><img alt="{html.escape(fig.path)}" src="{fig.data_uri()}">'
                f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
