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

from robustctl import metric_keys as keys
from robustctl.console import console


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


def stage_table(
    title: str, stage: str, metrics: Mapping[str, float], columns: list[tuple[str, str]]
) -> Table | None:
    rows = keys.attacks_in(metrics, stage)
    if not rows:
        return None
    table = Table(title=title, header_style="bold", title_justify="left")
    table.add_column("attack")
    for header, _ in columns:
        table.add_column(header, justify="right")
    table.add_column("AUC (pairs)", justify="right")
    for name in rows:
        cells = [_fmt(metrics.get(keys.attack_key(stage, name, metric))) for _, metric in columns]
        table.add_row(name, *cells, _auc_cell(metrics, stage, name))
    return table


def resiliency_table(metrics: Mapping[str, float]) -> Table | None:
    curves: dict[str, dict[float, float]] = {}
    for key, value in metrics.items():
        parsed = keys.parse_resiliency(key)
        if parsed is not None:
            curves.setdefault(parsed[0], {})[parsed[1]] = value
    if not curves:
        return None
    eps = sorted({e for c in curves.values() for e in c})
    table = Table(
        title="Resiliency: accuracy under attack (Figure 3)",
        header_style="bold",
        title_justify="left",
    )
    table.add_column("attack \\ eps")
    for e in eps:
        table.add_column(f"{e:g}", justify="right")
    for attack, curve in curves.items():
        table.add_row(attack, *[_fmt(curve.get(e)) for e in eps])
    return table


def overview_table(
    command: str, metrics: Mapping[str, float], info: Mapping[str, str], run_id: str
) -> Table:
    table = Table(title=f"robustctl {command}", header_style="bold", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
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
) -> None:
    notes = notes or {}
    tables = [
        overview_table(command, metrics, info, run_id),
        stage_table(
            "Gray-box attacks (Table 2)",
            keys.GRAYBOX,
            metrics,
            [("success", keys.SUCCESS_RATE), ("distortion", "distortion"), ("Linf", "linf")],
        ),
        stage_table(
            "White-box C&W-wb (Table 3)",
            keys.WHITEBOX,
            metrics,
            [
                ("success", keys.SUCCESS_RATE),
                ("distortion", "distortion"),
                ("median breach", keys.MEDIAN_DISTORTION),
            ],
        ),
        stage_table(
            "Black-box transfer (Table 4)",
            keys.BLACKBOX,
            metrics,
            [
                ("proxy agreement", "agreement"),
                ("transfer", "transfer_rate"),
                ("distortion", "distortion"),
            ],
        ),
        resiliency_table(metrics),
    ]
    for table in tables:
        if table is not None:
            console.print(table)
    for key, note in notes.items():
        console.print(f"[yellow]note[/] {key}: {note}")
    console.print(f"see it in the UI: [bold]robustctl ui[/] (store {tracking_uri})")
