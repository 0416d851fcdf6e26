"""The end-of-command summary: metrics grouped in the layout of the PDM paper's tables.

- training and clean evaluation (Table 1: clean accuracy, embedding diagnostics);
- gray-box attacks (Table 2): one row per attack, success rate, distortion, detection AUC (pairs);
- white-box C&W-wb (Table 3) and black-box transfer (Table 4);
- resiliency (Figure 3): accuracy under attack, one row per attack, one column per eps.
A value the run could not compute shows its reason (``notes``) instead of a number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.table import Table

from robustctl.console import console


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _attack_rows(metrics: Mapping[str, float], stage: str) -> list[str]:
    names = []
    for key in metrics:
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == stage and parts[1] not in names:
            names.append(parts[1])
    return names


def _auc_cell(metrics: Mapping[str, float], prefix: str) -> str:
    if f"{prefix}/auc" in metrics:
        return f"{metrics[f'{prefix}/auc']:.3f} ({int(metrics.get(f'{prefix}/pairs', 0))})"
    if f"{prefix}/pairs" in metrics:
        return f"[dim]n/a ({int(metrics[f'{prefix}/pairs'])} pairs, see note)[/]"
    return "—"


def stage_table(title: str, stage: str, metrics: Mapping[str, float], columns: list[tuple[str, str]]) -> Table | None:
    rows = _attack_rows(metrics, stage)
    if not rows:
        return None
    table = Table(title=title, header_style="bold", title_justify="left")
    table.add_column("attack")
    for header, _ in columns:
        table.add_column(header, justify="right")
    table.add_column("AUC (pairs)", justify="right")
    for name in rows:
        prefix = f"{stage}/{name}"
        cells = [_fmt(metrics.get(f"{prefix}/{key}")) for _, key in columns]
        table.add_row(name, *cells, _auc_cell(metrics, prefix))
    return table


def resiliency_table(metrics: Mapping[str, float]) -> Table | None:
    curves: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "resiliency":
            curves.setdefault(parts[1], {})[parts[2].removeprefix("eps_")] = value
    if not curves:
        return None
    eps = sorted({e for c in curves.values() for e in c}, key=float)
    table = Table(title="Resiliency: accuracy under attack (Figure 3)", header_style="bold", title_justify="left")
    table.add_column("attack \\ eps")
    for e in eps:
        table.add_column(e, justify="right")
    for attack, curve in curves.items():
        table.add_row(attack, *[_fmt(curve.get(e)) for e in eps])
    return table


def overview_table(command: str, metrics: Mapping[str, float], info: Mapping[str, str], run_id: str) -> Table:
    table = Table(title=f"robustctl {command}", header_style="bold", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if key.split("/")[0] in ("graybox", "whitebox", "blackbox", "resiliency"):
            continue
        table.add_row(key, _fmt(value))
    for key, value in info.items():
        table.add_row(f"[dim]{key}[/]", f"[dim]{value}[/]")
    table.add_row("[dim]MLflow run[/]", f"[dim]{run_id}[/]")
    return table


def print_summary(command: str, metrics: Mapping[str, float], info: Mapping[str, str], run_id: str,
                  tracking_uri: str, notes: Mapping[str, str] | None = None) -> None:
    notes = notes or {}
    tables = [
        overview_table(command, metrics, info, run_id),
        stage_table("Gray-box attacks (Table 2)", "graybox", metrics,
                    [("success", "success_rate"), ("distortion", "distortion"), ("Linf", "linf")]),
        stage_table("White-box C&W-wb (Table 3)", "whitebox", metrics,
                    [("success", "success_rate"), ("distortion", "distortion")]),
        stage_table("Black-box transfer (Table 4)", "blackbox", metrics,
                    [("proxy agreement", "agreement"), ("transfer", "transfer_rate"), ("distortion", "distortion")]),
        resiliency_table(metrics),
    ]
    for table in tables:
        if table is not None:
            console.print(table)
    for key, note in notes.items():
        console.print(f"[yellow]note[/] {key}: {note}")
    console.print(f"see it in the UI: [bold]robustctl ui[/] (store {tracking_uri})")
