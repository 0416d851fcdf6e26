"""The robust-accuracy table (RobustBench's layout) and the attack-cost table.

:func:`robust_table`: **one row per model** (a report column of the other tables: loss, training
variant, detector) of each dataset where some run logged the ``robust`` stage, and one column per
number, in RobustBench's order: clean accuracy on the attacked points, robust accuracy under the
ensemble (worst case per point; a raised evaluator flag is its footnote), then per member of the
ensemble the robust accuracy after it ran and its cost per point it attacked (passes for a
gradient attack, queries for Square), then, when some run had a detector, robust accuracy with
rejection: clean accuracy with the detector, robust accuracy under the detector-blind examples and
under the adaptive APGD-wb, and APGD-wb's passes per point (docs/method.md section 8.6).

:func:`cost_table`: one row per (stage, attack) logged with its cost, one column per model: the
attack's wall time beside its forward passes and input gradients per attacked example.

Cells as in every table (:func:`robustctl.reporting.cells.metric_cell`): one run, the value with
its Wilson interval; several seeds, mean ± sd across seeds; no value, the reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from robustctl import metric_keys as keys
from robustctl.evaluation.ensembles import VERSIONS
from robustctl.reporting.cells import Cell, Layout, MetricSpec, Table, as_layout, metric_cell
from robustctl.reporting.collect import RunRecord
from robustctl.reporting.groups import NOT_RUN, pick_runs

__all__ = ["cost_table", "robust_table"]

MODEL_LABEL = "model"
ROBUST_PREFIX = keys.ROBUST + "/"
GRADIENT_FREE = {m.label for members in VERSIONS.values() for m in members if m.gradient_free}


def _key(attack: str, metric: str) -> str:
    return keys.attack_key(keys.ROBUST, attack, metric)


def _members(records: Sequence[RunRecord]) -> list[str]:
    """The ensemble members some run logged, in the versions' order (then by name)."""
    order = list(dict.fromkeys(m.label for members in VERSIONS.values() for m in members))
    seen = {a for r in records for a in keys.attacks_in(r.metrics, keys.ROBUST)}
    seen -= {keys.ENSEMBLE, keys.WITH_DETECTOR, keys.DETECTOR_BLIND, keys.APGD_WB}
    return [*(m for m in order if m in seen), *sorted(seen - set(order))]


def robust_columns(records: Sequence[RunRecord]) -> list[MetricSpec]:
    """The table's number columns (module docstring), for the members and detectors logged."""
    note = keys.note_tag(keys.ROBUST, keys.ENSEMBLE)
    out = [
        MetricSpec("clean (%)", _key(keys.ENSEMBLE, keys.CLEAN_ACCURACY_METRIC), "percent"),
        MetricSpec(
            "robust (%)", _key(keys.ENSEMBLE, keys.ROBUST_ACCURACY), "percent", note_tag=note
        ),
    ]
    for member in _members(records):
        out.append(MetricSpec(f"after {member} (%)", _key(member, keys.ROBUST_ACCURACY), "percent"))
        if member in GRADIENT_FREE:
            out.append(MetricSpec(f"{member} queries/pt", _key(member, keys.QUERIES_PER_POINT), ""))
        else:
            out.append(MetricSpec(f"{member} passes/pt", _key(member, keys.PASSES_PER_POINT), ""))
    if any(_key(keys.APGD_WB, keys.ROBUST_ACCURACY) in r.metrics for r in records):
        out += [
            MetricSpec(
                "with detector: clean (%)",
                _key(keys.WITH_DETECTOR, keys.CLEAN_ACCURACY_METRIC),
                "percent",
            ),
            MetricSpec(
                "with detector: blind attack (%)",
                _key(keys.DETECTOR_BLIND, keys.ROBUST_ACCURACY),
                "percent",
            ),
            MetricSpec(
                "with detector: adaptive attack (%)",
                _key(keys.APGD_WB, keys.ROBUST_ACCURACY),
                "percent",
            ),
            MetricSpec("apgd-wb passes/pt", _key(keys.APGD_WB, keys.PASSES_PER_POINT), ""),
        ]
    return out


_CAPTION = (
    "RobustBench's layout: one row per model (loss, its training variant, after · the detector "
    "when it is not KDE). Clean (%): accuracy on the attacked test points; robust (%): the share "
    "of them every attack of the ensemble fails on (worst case per point; the version and budget "
    "are the runs' robust/version tag), a raised evaluator flag as its footnote; after <attack>: "
    "robust accuracy once that member and those before it ran (each attacks only the points "
    "still robust), with its passes (forward and backward, per point it attacked) or, for "
    "Square, its queries. With a detector (robust accuracy with rejection, threshold at 5% "
    "false positives on clean validation images): clean = correct and not rejected; blind = the "
    "ensemble's own examples must be rejected; adaptive = also APGD-wb's, which attacks "
    "classifier and detector together. Cells: one run, value [95% Wilson interval]; several "
    "seeds, mean ± sd across seeds."
)


def robust_table(records: Sequence[RunRecord] | Layout) -> Table:
    """One row per model of each dataset with a ``robust`` run (module docstring); no rows when
    no run logged the stage."""
    layout = as_layout(records)
    logged = [r for r in layout.records if r.has(ROBUST_PREFIX)]
    metrics = robust_columns(logged)
    table = Table(
        "table_robust",
        "Robust accuracy: clean, worst case per point under the ensemble, per attack",
        ["dataset", MODEL_LABEL, *(m.key for m in metrics)],
        caption=_CAPTION,
        headers={m.key: m.label for m in metrics},
    )
    for dataset, columns in layout.by_dataset.items():
        for column in columns:
            if not any(r.has(ROBUST_PREFIX) for r in column.runs):
                continue
            pick = pick_runs(column.runs, ROBUST_PREFIX, keys.ROBUST)
            row: list[str | Cell] = [dataset, column.label]
            row += [metric_cell(pick, dataset, column.loss, m, paper=False) for m in metrics]
            table.rows.append(row)
    return table


COST_STAGES = (keys.GRAYBOX, keys.WHITEBOX, keys.BLACKBOX)


def cost_table(records: Sequence[RunRecord] | Layout) -> Table:
    """One row per (stage, attack, cost) logged, one column per model: seconds, forward passes
    and input gradients per attacked example (module docstring)."""
    layout = as_layout(records)
    table = layout.table(
        "table_cost",
        "Attack cost: wall time, forward passes and input gradients per attacked example",
        "attack: cost",
        "Every attack counts, where it calls the model, the examples it forwards (the final "
        "prediction on its output included; a gradient-free attack's queries) and the input "
        "gradients it back-propagates; per attacked example of the run's attacked subset. "
        "Seconds: the attack's wall time on the run's device. Cells: one run, its value; several "
        "seeds, mean ± sd.",
    )
    for dataset, columns in layout.by_dataset.items():
        runs = [r for c in columns for r in c.runs]
        for stage in COST_STAGES:
            attacks = list(
                dict.fromkeys(a for r in runs for a in keys.attacks_in(r.metrics, stage))
            )
            for attack in attacks:
                forwards = keys.attack_key(stage, attack, keys.FORWARDS_PER_EXAMPLE)
                if not any(forwards in r.metrics for r in runs):
                    continue
                prefix = keys.attack_prefix(stage, attack) + "/"
                specs = [
                    MetricSpec(
                        f"{stage} {attack}: seconds",
                        keys.attack_key(stage, attack, keys.SECONDS),
                        "",
                    ),
                    MetricSpec(f"{stage} {attack}: forwards/example", forwards, ""),
                    MetricSpec(
                        f"{stage} {attack}: gradients/example",
                        keys.attack_key(stage, attack, keys.BACKWARDS_PER_EXAMPLE),
                        "",
                    ),
                ]
                for spec in specs:
                    row: list[str | Cell] = [dataset, spec.label]
                    for key in layout.keys:
                        column = next((c for c in columns if c.key == key), None)
                        if column is None:
                            row.append(Cell(None, reason=NOT_RUN, key=spec.key, kind=spec.kind))
                            continue
                        pick = pick_runs(column.runs, prefix, stage, attack)
                        row.append(metric_cell(pick, dataset, column.loss, spec, paper=False))
                    table.rows.append(row)
    return table
