"""White-box budget curves: the C&W-wb success rate as a function of the L2 budget, per column.

Each white-box run logs the artifact ``whitebox/cw_wb_budget_curve.json``
(``{"distortions": [0.12, null, ...], "unit": "L2/sqrt(n)"}``): per clean-correct attacked example
its minimal successful normalized L2 distortion, ``null`` when the attack never succeeded on it.
The success rate at budget ``b`` is the fraction of all entries with distortion ``<= b``; a
``null`` never counts as a success (:func:`success_curve`).

Per dataset, :func:`write_budget_figures` draws ``whitebox_budget_<dataset>.png`` with one curve
per column, from the runs Table 3 reads (latest FINISHED run per seed of the column's group); a
column with several seeds pools the examples of all its seeds into one curve. Runs without the
artifact are skipped; a dataset without any artifact gets no figure.
"""

from __future__ import annotations

import bisect
import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustctl import metric_keys as keys
from robustctl.reporting.cells import Layout
from robustctl.reporting.collect import RunRecord, download_artifact
from robustctl.reporting.groups import pick_runs

__all__ = [
    "BudgetFigure",
    "budget_curves",
    "plot_budget_curves",
    "success_curve",
    "write_budget_figures",
]

_PREFIX = keys.attack_prefix(keys.WHITEBOX, keys.CW_WB) + "/"
_POINTS = 200  # budgets per curve


def success_curve(distortions: Sequence[float | None], budgets: Sequence[float]) -> list[float]:
    """Per budget ``b``: ``#{i : d_i is not None and d_i <= b} / len(distortions)``
    (NaN for every budget when there are no examples)."""
    if not distortions:
        return [math.nan] * len(budgets)
    found = sorted(d for d in distortions if d is not None and math.isfinite(d))
    return [bisect.bisect_right(found, b) / len(distortions) for b in budgets]


@dataclass(frozen=True)
class BudgetFigure:
    """One dataset's budget-curve PNG, written into the report folder."""

    dataset: str
    path: Path
    caption: str
    curves: dict[str, list[float | None]]  # column label -> pooled distortions

    @property
    def name(self) -> str:
        return self.path.name


def _read_curve(client: Any, run: RunRecord, tmp: str) -> list[float | None] | None:
    from mlflow.exceptions import MlflowException

    if keys.WHITEBOX_BUDGET_CURVE not in run.artifacts:
        return None
    dst = Path(tmp, run.run_id)
    dst.mkdir(exist_ok=True)
    try:
        local = download_artifact(client, run.run_id, keys.WHITEBOX_BUDGET_CURVE, dst)
        data = json.loads(Path(local).read_text(encoding="utf-8"))
        return [None if d is None else float(d) for d in data["distortions"]]
    except (MlflowException, OSError, ValueError, KeyError, TypeError):
        return None


def budget_curves(layout: Layout, tracking_uri: str) -> dict[str, dict[str, list[float | None]]]:
    """Per dataset, per column label: the pooled distortions of the column's Table 3 runs that
    logged the artifact (columns without any are left out)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    out: dict[str, dict[str, list[float | None]]] = {}
    with tempfile.TemporaryDirectory(prefix="robustctl-curves-") as tmp:
        for dataset, columns in layout.by_dataset.items():
            for column in columns:
                pooled: list[float | None] = []
                found = False
                for run in pick_runs(column.runs, _PREFIX, keys.WHITEBOX).runs:
                    curve = _read_curve(client, run, tmp)
                    if curve is not None:
                        pooled += curve
                        found = True
                if found:
                    out.setdefault(dataset, {})[column.label] = pooled
    return out


def plot_budget_curves(
    dataset: str, curves: dict[str, list[float | None]], path: Path
) -> BudgetFigure:
    """Draw the success-rate-vs-budget curves of one dataset into ``path`` (PNG)."""
    from matplotlib.figure import Figure

    finite = [d for ds in curves.values() for d in ds if d is not None and math.isfinite(d)]
    top = max(finite, default=1.0) * 1.05 or 1.0
    budgets = [top * i / (_POINTS - 1) for i in range(_POINTS)]
    fig = Figure(figsize=(5.5, 3.6), dpi=110)
    ax = fig.subplots()
    for label, distortions in curves.items():
        ax.step(budgets, success_curve(distortions, budgets), where="post", label=label)
    ax.set_xlabel("L2 budget (L2/sqrt(n))")
    ax.set_ylabel("C&W-wb success rate")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{dataset}: white-box success rate vs L2 budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    caption = (
        f"{dataset}: C&W-wb success rate (share of clean-correct attacked examples breached) as "
        "a function of the normalized L2 budget, one curve per column; a column with several "
        "seeds pools the examples of all its seeds."
    )
    return BudgetFigure(dataset, path, caption, curves)


def write_budget_figures(layout: Layout, tracking_uri: str, out_dir: Path) -> list[BudgetFigure]:
    """``whitebox_budget_<dataset>.png`` in ``out_dir`` for each dataset with a budget curve."""
    return [
        plot_budget_curves(dataset, curves, out_dir / f"whitebox_budget_{dataset}.png")
        for dataset, curves in budget_curves(layout, tracking_uri).items()
    ]
