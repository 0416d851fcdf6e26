"""Table 6 and its scatter: the robustness taxonomy's defenses side by side, clean accuracy beside
robustness.

Table 6 (:func:`table6`) has **one row per defense** and **one column per metric**. A defense is a
report column of the other tables (:class:`robustctl.reporting.groups.Column`): one fingerprint
group of one dataset, labelled ``loss (variant) · detector``, where the variant names what its
training departs from (Category 1: the loss and its options; Category 2: ``norm=``, an input
``transform=``, adversarial training ``train_defense=``). The columns, in order:

- ``clean/accuracy``: clean test accuracy (%), the whole test set;
- per gray-box attack some run of the table logged, ``graybox/<attack>/success_rate`` (share of
  the clean-correct attacked images the attack makes the model misclassify; the detector plays no
  part) and, when some row has a detector, ``graybox/<attack>/auc`` (that detector's detection
  AUC over the (clean, adversarial) pairs);
- when some run of the table logged the white-box stage, ``whitebox/cw_wb/distortion`` (mean
  L2/sqrt(n) over the successful C&W-wb examples) and ``whitebox/cw_wb/success_rate`` (share of
  the clean-correct attacked images misclassified *and* scored under the detector's threshold);
- ``embed/dbi``: Davies-Bouldin index of the test embeddings by true label.

Every cell is built like the other tables' (:func:`robustctl.reporting.tables.metric_cell` on
the runs :func:`robustctl.reporting.groups.pick_runs` chose): one run, its value with its logged 95%
interval; several seeds, mean ± sd across seeds; no value, the reason (``not run``,
``failed: ...``, ``no detector (defense=none)``, the run's reason tag). No paper numbers: the
paper has none of these defenses. A dataset enters the table only when one of its columns has a
taxonomy defense (:func:`taxonomy_parts`) or comes from a taxonomy experiment
(``experiments/taxonomy_*``, :func:`in_taxonomy`), so the paper's reports are unchanged; a row
whose every cell is ``not run`` (a group that only trained) is left out.

The scatter (:func:`scatter_panels`, :func:`write_scatter_figures`): per dataset of Table 6 one
figure ``robust_accuracy_<dataset>.png`` with one panel per gray-box attack that has a point;
x = clean accuracy (whole test set), y = 1 - the attack's success rate (share of the clean-correct
attacked images the attack leaves correctly classified), one numbered marker per Table 6 row,
error bars from the cells' uncertainty (:meth:`robustctl.reporting.tables.Cell.bounds`). Every
attack gets its panel rather than one "strongest" attack: which attack is strongest differs
between defenses, and an unbounded attack (C&W, DeepFool), near y = 0 for every defense, shows
that its success rate is not the robustness measure (its distortion is). The points are read off
Table 6's cells, so the figure and the table cannot disagree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from robustctl import metric_keys as keys
from robustctl.reporting.cells import Cell, Layout, MetricSpec, Table, as_layout, metric_cell
from robustctl.reporting.collect import RunRecord
from robustctl.reporting.groups import NOT_RUN, Column, pick_runs
from robustctl.reporting.reference import PAPER_ATTACKS
from robustctl.reporting.rows import CLEAN_ACCURACY, DBI, WB_DISTORTION, WB_SUCCESS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "TAXONOMY_OPTIONS",
    "ScatterFigure",
    "ScatterPanel",
    "ScatterPoint",
    "draw_scatter",
    "scatter_panels",
    "table6",
    "taxonomy_parts",
    "write_scatter_figures",
]

TAXONOMY_OPTIONS = ("norm", "transform", "train_defense")  # the variant parts of Category 2
DEFENSE_LABEL = "defense"  # Table 6's second label column

X_LABEL = "clean accuracy (fraction of the whole test set)"
Y_LABEL = "1 - gray-box success rate\n(clean-correct attacked images still classified correctly)"


# ------------------------------------------------------------------------------- the condition
def _top_level_parts(variant: str) -> list[str]:
    """``a=1, transform=jpeg(quality=75, x=2)`` -> ``["a=1", "transform=jpeg(quality=75, x=2)"]``:
    the variant split at the commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(variant):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(variant[start:i])
            start = i + 1
    parts.append(variant[start:])
    return [p.strip() for p in parts if p.strip()]


TAXONOMY_EXPERIMENTS = "taxonomy_"  # experiments/taxonomy_*.yaml: their runs always get Table 6


def in_taxonomy(column: Column) -> bool:
    """Whether a report column is a taxonomy defense (its variant names one) or was run by a
    taxonomy experiment (Category 1 compares losses only, so its variants name none)."""
    return bool(taxonomy_parts(column.variant)) or any(
        r.tags.get("experiment", "").startswith(TAXONOMY_EXPERIMENTS) for r in column.runs
    )


def taxonomy_parts(variant: str) -> list[str]:
    """The parts of a ``variant`` tag that name a taxonomy defense (``norm=``, ``transform=``,
    ``train_defense=``; :func:`robustctl.training.variant.training_variant`), in order."""
    return [p for p in _top_level_parts(variant) if p.split("=", 1)[0] in TAXONOMY_OPTIONS]


# ------------------------------------------------------------------------------- Table 6
@dataclass(frozen=True)
class _Column:
    """One metric column of Table 6: the metric and what :func:`pick_runs` needs for it."""

    metric: MetricSpec
    prefix: str
    stage: str | None = None
    attack: str | None = None


def _attacks(records: Sequence[RunRecord]) -> list[str]:
    """The gray-box attacks some run logged: the paper's first (its order), then by name."""
    seen = {a for r in records for a in keys.attacks_in(r.metrics, keys.GRAYBOX)}
    return [*(a for a in PAPER_ATTACKS if a in seen), *sorted(seen - set(PAPER_ATTACKS))]


def _metric_columns(records: Sequence[RunRecord], detectors: bool) -> list[_Column]:
    """Clean accuracy; per attack its success rate (and AUC when ``detectors``); the white-box
    distortion and success rate when some run logged that stage; the DBI."""
    clean = keys.CLEAN_ACCURACY  # Table 1's prefix: accuracy and DBI come from the same runs
    out = [_Column(CLEAN_ACCURACY, clean)]
    for attack in _attacks(records):
        prefix = keys.attack_prefix(keys.GRAYBOX, attack) + "/"
        success = MetricSpec(
            f"{attack} success rate", keys.graybox(attack, keys.SUCCESS_RATE), "rate"
        )
        out.append(_Column(success, prefix, keys.GRAYBOX, attack))
        if detectors:
            auc = MetricSpec(
                f"{attack} detection AUC",
                keys.graybox(attack, keys.AUC),
                "auc",
                reason_tag=keys.auc_reason_tag(keys.GRAYBOX, attack),
            )
            out.append(_Column(auc, prefix, keys.GRAYBOX, attack))
    wb_prefix = keys.attack_prefix(keys.WHITEBOX, keys.CW_WB) + "/"
    if any(r.has(wb_prefix) for r in records):
        for metric, label in ((WB_DISTORTION, "mean distortion"), (WB_SUCCESS, "success rate")):
            labelled = dataclasses.replace(metric, label=f"C&W-wb {label}")
            out.append(_Column(labelled, wb_prefix, keys.WHITEBOX))
    out.append(_Column(DBI, clean))
    return out


_CAPTION = (
    "One row per defense: a column of the other tables (loss, its training variant: norm=, "
    "input transform= and adversarial-training train_defense= are the Category 2 defenses, the "
    "loss the Category 1 one; after · the detector when it is not KDE), one column per metric, "
    "clean accuracy first. Clean accuracy (%): the whole test set. Gray-box success rate: of the "
    "clean-correct attacked images (the threat_model.num_samples attacked test images this row's "
    "model, input transform included, classifies correctly), the share the attack makes it "
    "misclassify; the attacker ignores the detector, so the same number holds for every detector. "
    "Gray-box detection AUC: the row's detector, clean vs adversarial, over the (clean, "
    "adversarial) pairs; 'no detector (defense=none)' without one. C&W-wb (white-box, through "
    "classifier and detector): success rate = share of the clean-correct attacked images "
    "misclassified with a detector score under the threshold; mean distortion L2/sqrt(n) over the "
    "successful examples only (biased low when the success rate is below 1). DBI: Davies-Bouldin "
    "index of the test embeddings grouped by true label (lower = tighter class clusters). Cells: "
    "one run: value [95% interval] (Wilson for rates, bootstrap for AUC and distortion; clean "
    "accuracy and DBI log none), n = AUC pairs; several seeds: mean ± sd across seeds."
)


def table6(records: Sequence[RunRecord] | Layout) -> Table:
    """Table 6: one row per defense, one column per metric (module docstring), for each dataset
    with a taxonomy defense; no rows when none has one."""
    layout = as_layout(records)
    datasets = {
        dataset: columns
        for dataset, columns in layout.by_dataset.items()
        if any(in_taxonomy(c) for c in columns)
    }
    records_in = [r for columns in datasets.values() for c in columns for r in c.runs]
    detectors = any(c.defense not in ("", "none") for cs in datasets.values() for c in cs)
    metrics = _metric_columns(records_in, detectors)
    table = Table(
        "table6",
        "Table 6: defense taxonomy, one row per defense (clean accuracy beside robustness)",
        ["dataset", DEFENSE_LABEL, *(m.metric.key for m in metrics)],
        caption=_CAPTION,
        headers={m.metric.key: m.metric.label for m in metrics},
    )
    for dataset, columns in datasets.items():
        for column in columns:
            row: list[str | Cell] = [dataset, column.label]
            for m in metrics:
                pick = pick_runs(column.runs, m.prefix, m.stage, m.attack)
                row.append(metric_cell(pick, dataset, column.loss, m.metric, paper=False))
            if any(isinstance(c, Cell) and c.reason != NOT_RUN for c in row):
                table.rows.append(row)
    return table


# ------------------------------------------------------------------------------- the scatter
@dataclass(frozen=True)
class ScatterPoint:
    """One Table 6 row in one panel: ``x`` = clean accuracy, ``y`` = 1 - success rate, each with
    its error-bar ends (None: no interval), and the runs read."""

    label: str
    x: float
    y: float
    x_bounds: tuple[float, float] | None
    y_bounds: tuple[float, float] | None
    run_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScatterPanel:
    """One dataset and gray-box attack: its points, and the rows not plotted with the reason."""

    dataset: str
    attack: str
    points: list[ScatterPoint] = field(default_factory=list)
    omitted: list[str] = field(default_factory=list)  # "<row label>: <metric> <reason>"


def _why_not(cell: Cell) -> str | None:
    """Why a cell cannot be plotted (its reason, or its NaN text), None when it can."""
    if cell.value is None:
        return cell.reason or NOT_RUN
    return None if math.isfinite(cell.value) else cell.format(cell.value)


def scatter_panels(table: Table) -> list[ScatterPanel]:
    """Per dataset of ``table`` (Table 6) and per gray-box success-rate column, the rows with
    both a clean accuracy and a success rate as points; panels without any point are left out."""
    accuracy = table.columns.index(keys.CLEAN_ACCURACY)
    panels: list[ScatterPanel] = []
    for dataset in dict.fromkeys(row[0] for row in table.rows):
        rows = [row for row in table.rows if row[0] == dataset]
        for index, column in enumerate(table.columns):
            parsed = keys.parse_attack_key(column)
            if parsed is None or (parsed.stage, parsed.metric) != (keys.GRAYBOX, keys.SUCCESS_RATE):
                continue
            panel = ScatterPanel(dataset, parsed.attack)
            for row in rows:
                label, x_cell, s_cell = row[1], row[accuracy], row[index]
                assert isinstance(label, str)
                assert isinstance(x_cell, Cell) and isinstance(s_cell, Cell)
                why = [
                    f"{name} {reason}"
                    for name, cell in (("clean accuracy", x_cell), ("success rate", s_cell))
                    if (reason := _why_not(cell)) is not None
                ]
                if why:
                    panel.omitted.append(f"{label}: {'; '.join(why)}")
                    continue
                assert x_cell.value is not None and s_cell.value is not None
                s_bounds = s_cell.bounds()
                panel.points.append(
                    ScatterPoint(
                        label,
                        x_cell.value,
                        1 - s_cell.value,
                        x_cell.bounds(),
                        None if s_bounds is None else (1 - s_bounds[1], 1 - s_bounds[0]),
                        tuple(dict.fromkeys((*x_cell.run_ids, *s_cell.run_ids))),
                    )
                )
            if panel.points:
                panels.append(panel)
    return panels


@dataclass(frozen=True)
class ScatterFigure:
    """One dataset's robustness-accuracy PNG, written into the report folder."""

    dataset: str
    path: Path
    caption: str
    panels: list[ScatterPanel]

    @property
    def name(self) -> str:
        return self.path.name


_MARKERS = "osD^vP*Xh<>p"


def _errors(value: float, bounds: tuple[float, float] | None) -> list[list[float]] | None:
    """matplotlib's asymmetric ``[[below], [above]]`` error for one point."""
    if bounds is None:
        return None
    return [[max(value - bounds[0], 0.0)], [max(bounds[1] - value, 0.0)]]


def draw_scatter(panels: Sequence[ScatterPanel]) -> Figure:
    """One dataset's panels side by side (three per line): per point an error bar (the point is
    its data line) and its number; the legend below maps numbers to Table 6's row labels."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    labels = list(dict.fromkeys(p.label for panel in panels for p in panel.points))
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(
        figsize=(4.6 * ncols, 3.9 * nrows + 0.25 * len(labels) + 0.4), dpi=110, layout="constrained"
    )
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    colors = colormaps["tab10"]
    style = {
        label: {"color": colors(i % 10), "marker": _MARKERS[i % len(_MARKERS)]}
        for i, label in enumerate(labels)
    }
    for ax, panel in zip(axes[: len(panels)], panels, strict=True):
        for point in panel.points:
            number = labels.index(point.label) + 1
            ax.errorbar(
                [point.x],
                [point.y],
                xerr=_errors(point.x, point.x_bounds),
                yerr=_errors(point.y, point.y_bounds),
                linestyle="none",
                capsize=3,
                label=f"{number}: {point.label}",
                **style[point.label],
            )
            ax.annotate(
                str(number), (point.x, point.y), textcoords="offset points", xytext=(5, 4)
            ).set_fontsize(8)
        ax.set_title(f"{panel.dataset}: gray-box {panel.attack}", fontsize=10)
        ax.set_xlabel(X_LABEL, fontsize=9)
        ax.set_ylabel(Y_LABEL, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:  # the rest of the last line
        ax.set_visible(False)
    handles = [
        Line2D([], [], linestyle="none", label=f"{i}: {label}", **style[label])
        for i, label in enumerate(labels, 1)
    ]
    fig.legend(handles=handles, loc="outside lower left", fontsize=8, frameon=False)
    return fig


def _caption(dataset: str, panels: Sequence[ScatterPanel]) -> str:
    omitted = [f"{panel.attack}: {o}" for panel in panels for o in panel.omitted]
    return (
        f"{dataset}: robustness vs clean accuracy, one panel per gray-box attack "
        f"({', '.join(p.attack for p in panels)}), one numbered marker per Table 6 row. "
        "x: clean accuracy over the whole test set. y: 1 - the attack's success rate, i.e. the "
        "share of the clean-correct attacked test images (those the row's model classifies "
        "correctly) that the attack leaves correctly classified; the detector plays no part. "
        "y is conditional on clean correctness, so read it beside x. Error bars: one run, the "
        "success rate's 95% Wilson interval (clean accuracy logs none); several seeds, ± sd "
        "across seeds on both axes." + (f" Not plotted: {'; '.join(omitted)}." if omitted else "")
    )


def write_scatter_figures(table: Table, out_dir: Path) -> list[ScatterFigure]:
    """``robust_accuracy_<dataset>.png`` in ``out_dir`` for each dataset of ``table`` (Table 6)
    with a point."""
    panels = scatter_panels(table)
    figures = []
    for dataset in dict.fromkeys(p.dataset for p in panels):
        mine = [p for p in panels if p.dataset == dataset]
        path = out_dir / f"robust_accuracy_{dataset}.png"
        draw_scatter(mine).savefig(path)
        figures.append(ScatterFigure(dataset, path, _caption(dataset, mine), mine))
    return figures
