"""The end-of-command summary: metrics grouped in the layout of the PDM paper's tables.

- training and clean evaluation (Table 1: clean accuracy, embedding diagnostics);
- gray-box attacks (Table 2): one row per attack, success rate, distortion, detection AUC (pairs);
- white-box C&W-wb (Table 3) and black-box transfer (Table 4);
- resiliency (Figure 3): accuracy under attack, one row per attack, one column per eps;
- the evaluation checklist: each check passed, failed (with the numbers) or not checked (why).
A value the run could not compute shows its reason (``notes``) instead of a number.

Each table is a :class:`~robustctl.table_fit.FittedTable`: laid out for the console's width when
printed, numbers whole (a table too wide for the console is split into several), metric names and
headers folded when space runs out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.console import Console

from robustctl import metric_keys as keys
from robustctl.console import console as shared_console
from robustctl.table_fit import FittedTable
from robustctl.threat_models.stage import STAGES, Stage

TABLE_OPTIONS = {"header_style": "bold", "title_justify": "left"}


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _auc_cell(metrics: Mapping[str, float], stage: str, attack: str) -> str:
    auc, pairs = (
        keys.attack_key(stage, attack, keys.AUC),
        keys.attack_key(stage, attack, keys.PAIRS),
    )
    if auc in metrics:
        return f"{metrics[auc]:.3f} ({int(metrics.get(pairs, 0))})"
    if pairs in metrics:
        return f"[dim]n/a ({int(metrics[pairs])} pairs, see note)[/]"
    return "—"


def stage_table(stage: Stage, metrics: Mapping[str, float]) -> FittedTable | None:
    """One row per attack of ``stage``: its summary columns, then AUC (pairs)."""
    rows = stage.summary.attacks_of(keys.attacks_in(metrics, stage.name))
    if not rows:
        return None
    columns = stage.summary.columns
    headers = [stage.summary.header, *(c.header for c in columns), "AUC (pairs)"]
    table = FittedTable(stage.title, headers, options=TABLE_OPTIONS)
    for name in rows:
        cells = [_fmt(metrics.get(keys.attack_key(stage.name, name, c.metric))) for c in columns]
        table.add_row(stage.summary.label or name, *cells, _auc_cell(metrics, stage.name, name))
    return table


def resiliency_table(metrics: Mapping[str, float]) -> FittedTable | None:
    """Accuracy under attack: one row per attack, one column per eps (split into several tables
    when the eps columns do not fit the console side by side)."""
    curves = keys.resiliency_curves(metrics)
    if not curves:
        return None
    eps = sorted({e for c in curves.values() for e in c})
    table = FittedTable(
        "Resiliency: accuracy under attack (Figure 3)",
        ["attack \\ eps", *(f"{e:g}" for e in eps)],
        options=TABLE_OPTIONS,
    )
    for attack, curve in curves.items():
        table.add_row(attack, *[_fmt(curve.get(e)) for e in eps])
    return table


def checklist_table(checks: Mapping[str, str]) -> FittedTable | None:
    """The evaluation checklist (:mod:`robustctl.evaluation.sanity`): one row per check, its
    result and, where it failed or could not run, why."""
    if not checks:
        return None
    table = FittedTable(
        "Evaluation checklist (Carlini et al. 2019; Tramer 2022)",
        ["check", "result", "detail"],
        options=TABLE_OPTIONS,
    )
    for name, value in checks.items():
        status, detail = keys.sanity_status(value)
        shown = {"passed": "[green]passed[/]", "failed": "[bold red]FAILED[/]"}.get(
            status, f"[dim]{status}[/]"
        )
        table.add_row(name, shown, detail if status == "failed" else f"[dim]{detail}[/]")
    return table


def overview_table(
    command: str, metrics: Mapping[str, float], info: Mapping[str, str], run_id: str
) -> FittedTable:
    """The metrics outside the stage tables, then the command's ``info`` and the run id."""
    table = FittedTable(f"robustctl {command}", ["metric", "value"], options=TABLE_OPTIONS)
    for key, value in metrics.items():
        if keys.is_stage_family(key):
            continue
        table.add_row(key, _fmt(value))
    for key, value in info.items():
        table.add_row(f"[dim]{key}[/]", f"[dim]{value}[/]")
    table.add_row("[dim]MLflow run[/]", f"[dim]{run_id}[/]")
    return table


def print_summary(
    command: str,
    metrics: Mapping[str, float],
    info: Mapping[str, str],
    run_id: str,
    tracking_uri: str,
    notes: Mapping[str, str] | None = None,
    console: Console | None = None,
    checks: Mapping[str, str] | None = None,
) -> None:
    """Print the summary tables, the evaluation checklist (``checks``: {check: tag value}), the
    notes and where to see the run, to ``console`` (default: the shared one)."""
    console = console or shared_console
    notes = notes or {}
    tables = [
        overview_table(command, metrics, info, run_id),
        *(stage_table(stage, metrics) for stage in STAGES.values()),
        resiliency_table(metrics),
        checklist_table(checks or {}),
    ]
    for table in tables:
        if table is not None:
            console.print(table)
    for key, note in notes.items():
        console.print(f"[yellow]note[/] {key}: {note}")
    console.print(f"see it in the UI: [bold]robustctl ui[/] (store {tracking_uri})")
