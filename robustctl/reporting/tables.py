"""The PDM paper's Tables 1-4 rebuilt from MLflow runs, as plain data.

A :class:`Table` has one row per (dataset, metric or attack) and one column per fingerprint group
(:mod:`robustctl.reporting.groups`): ``ce, rce, siamese_rvl, pdm``, then variants such as
``pdm (rvl_normalization=centroid)``, fingerprint-split columns ``pdm [fp 1a2b3c]`` and any other
loss found in the runs. Each cell is a :class:`Cell`: our value with its uncertainty
(:mod:`robustctl.reporting.uncertainty`), the paper's value for the same (dataset, loss, metric)
when there is one (MNIST and CIFAR-10 only), and, when we have no value, the reason: ``not run``,
``failed: <error tag>``, or the reason tag the run logged (``too few pairs for an AUC: ...``).

- :func:`table1` reproduces Table 1 (clean test accuracy per loss) plus the Davies-Bouldin index
  of the test embeddings (Figure 2) and the mean input-gradient norms (training loss, and CE);
- :func:`table2` reproduces Table 2 (gray-box detection AUC of the KDE detector, per attack);
- :func:`table3` reproduces Table 3 (white-box C&W-wb mean normalized distortion), with the
  median breach distortion, the detection AUC and success rate the attack reached through the
  detector;
- :func:`table4` reproduces Table 4 (black-box detection AUC), with the transfer rate of the
  proxy's successful adversarial examples and the proxy's own success rate.

:func:`build_tables` adds Table 5 (:func:`table5`, detectors x losses) when the runs compare
detectors, Table 6 (:func:`robustctl.reporting.taxonomy.table6`, one row per defense, one
column per metric) when some run has a taxonomy defense, and the robust-accuracy and attack-cost
tables (:mod:`robustctl.reporting.robust_table`) when runs logged them.

Every cell of a column in one dataset reads that column's group only: the latest FINISHED run per
seed that logged the row's metric group (:func:`robustctl.reporting.groups.pick_runs`); the cell
keeps those runs' ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from robustctl import metric_keys as keys
from robustctl.reporting.cells import (
    Cell,
    Layout,
    MetricSpec,
    Table,
    as_layout,
    group_rows,
    metric_cell,
)
from robustctl.reporting.checklist import checklist_table
from robustctl.reporting.collect import RunRecord
from robustctl.reporting.groups import (
    LOSS_LABELS,
    NOT_RUN,
    Column,
    datasets_of,
    losses_of,
    pick_runs,
)
from robustctl.reporting.ratios import ratio_table
from robustctl.reporting.reference import PAPER_ATTACKS
from robustctl.reporting.robust_table import cost_table, robust_table
from robustctl.reporting.rows import WB_AUC, WB_DISTORTION, WB_SUCCESS, placed_in
from robustctl.reporting.taxonomy import table6

__all__ = [
    "LOSS_LABELS",
    "NOT_RUN",
    "build_tables",
    "datasets_of",
    "losses_of",
    "table1",
    "table2",
    "table3",
    "table4",
    "table4q",
    "table5",
]


def _attacks_of(records: Sequence[RunRecord], dataset: str) -> list[str]:
    seen = {
        a for r in records if r.dataset == dataset for a in keys.attacks_in(r.metrics, keys.GRAYBOX)
    }
    return [*PAPER_ATTACKS, *sorted(seen - set(PAPER_ATTACKS))]


def _metric_table(
    layout: Layout,
    key: str,
    title: str,
    caption: str,
    prefix: str,
    metrics: Sequence[MetricSpec],
    stage: str | None,
) -> Table:
    """A table of fixed metric rows per dataset, each column's cells read from the runs its
    group picked for ``prefix``."""
    table = layout.table(key, title, "metric", caption)
    for dataset in layout.by_dataset:
        table.rows += group_rows(layout, dataset, prefix, metrics, stage)
    return table


_CELLS = (
    "Cells: ours (paper). One run: value [95% interval], n = AUC pairs; several seeds: mean ± "
    "sd across seeds."
)


def table1(records: Sequence[RunRecord] | Layout) -> Table:
    """Table 1: clean test accuracy (%) per loss, the DBI of the test embeddings (Figure 2) and
    the mean input-gradient norms of the training loss and of CE."""
    return _metric_table(
        as_layout(records),
        "table1",
        "Table 1: clean test accuracy (%), embedding DBI and input-gradient norms per loss",
        "Reproduces PDM Table 1 (clean accuracy; CE / RCE / Siamese+RVL / PDM) and the "
        "Davies-Bouldin index of Figure 2 (lower = tighter class clusters); the input-gradient "
        "norms are the mean ||dL/dx||_2 over the test split, of the run's training loss (the "
        "footnote says which loss it differentiates) and of CE on the prediction logits (the same "
        "for every model). " + _CELLS,
        keys.CLEAN_ACCURACY,
        placed_in("table1"),
        stage=None,
    )


def table2(records: Sequence[RunRecord] | Layout) -> Table:
    """Table 2: gray-box detection AUC of the KDE detector, one row per attack and dataset."""
    layout = as_layout(records)
    table = layout.table(
        "table2",
        "Table 2: gray-box detection AUC (KDE detector) per attack",
        "attack",
        "Reproduces PDM Table 2: the attacker knows the classifier but not the detector; "
        "AUC of clean vs adversarial KDE scores over (clean, adversarial) pairs. "
        "Baseline = CE. " + _CELLS,
    )
    for dataset in layout.by_dataset:
        for attack in _attacks_of(layout.records, dataset):
            metric = MetricSpec(
                attack,
                keys.graybox(attack, keys.AUC),
                "auc",
                reason_tag=keys.auc_reason_tag(keys.GRAYBOX, attack),
            )
            prefix = keys.attack_prefix(keys.GRAYBOX, attack) + "/"
            table.rows += group_rows(layout, dataset, prefix, [metric], keys.GRAYBOX, attack)
    return table


def table3(records: Sequence[RunRecord] | Layout) -> Table:
    """Table 3: white-box C&W-wb mean and median-breach normalized distortion L2/sqrt(n),
    detection AUC, success rate, and FMN-wb's median minimal distortion."""
    return _metric_table(
        as_layout(records),
        "table3",
        "Table 3: white-box C&W-wb and FMN-wb (through classifier + KDE detector)",
        "Reproduces PDM Table 3: mean normalized distortion L2/sqrt(n) of the C&W-wb examples "
        "(higher = harder to attack); the median breach distortion is the L2/sqrt(n) budget at "
        "which half the clean-correct examples are breached ('> max budget': fewer than half "
        "ever were); plus the detection AUC and success rate they reached, and the median "
        "minimal distortion of the minimum-norm FMN-wb. Baseline = CE. " + _CELLS,
        keys.WHITEBOX + "/",  # runs of either white-box attack; a row of the other: not logged
        placed_in("table3"),
        keys.WHITEBOX,
    )


def table4(records: Sequence[RunRecord] | Layout) -> Table:
    """Table 4: black-box detection AUC of C&W-wb examples transferred from a distilled proxy,
    the transfer rate and the proxy success rate."""
    return _metric_table(
        as_layout(records),
        "table4",
        "Table 4: black-box C&W-wb (crafted on a distilled proxy, transferred)",
        "Reproduces PDM Table 4: detection AUC of adversarial examples crafted on a distilled "
        "proxy with its own KDE, then fed to the target; the proxy success rate is the share of "
        "the proxy's attacks that fooled the proxy, the transfer rate the share of those "
        "successful examples, on target-correct images, that also fool the target. "
        "Baseline = CE. " + _CELLS,
        keys.attack_prefix(keys.BLACKBOX, keys.CW_WB) + "/",
        placed_in("table4"),
        keys.BLACKBOX,
    )


def table4q(records: Sequence[RunRecord] | Layout) -> Table:
    """The query-based black box: Square (scores) and HopSkipJump (labels) against the model
    behind its detector; a success is misclassified *and* accepted. No rows when no run in scope
    logged it."""
    layout = as_layout(records)
    if not any(r.has(keys.BLACKBOX_SYSTEM_THRESHOLD) for r in layout.records):
        layout = dataclasses.replace(layout, by_dataset={})
    return _metric_table(
        layout,
        "table4q",
        "Query-based black box: Square and HopSkipJump against model + detector",
        "The attacker queries the deployed system, which answers 'rejected' where the detector's "
        "score exceeds its threshold at 5% false positives on clean validation images. Success "
        "rate over the images the system answers correctly clean; a success is an example the "
        "system misclassifies and accepts. Queries per success: the attack's own count; rejected "
        "queries: the share of its queries the detector turned away. " + _CELLS,
        keys.BLACKBOX_SYSTEM_THRESHOLD,
        placed_in("table4q"),
        keys.BLACKBOX,
    )


DETECTOR_ORDER = ("kde", "bu", "kde_bu", "lid", "mahalanobis", "feature_squeezing", "combined")


def _detectors_of(columns: Sequence[Column]) -> list[str]:
    seen = {c.defense for c in columns if c.defense not in ("", "none")}
    return [*[d for d in DETECTOR_ORDER if d in seen], *sorted(seen - set(DETECTOR_ORDER))]


def table5(records: Sequence[RunRecord] | Layout) -> Table:
    """Table 5: detectors x losses, per dataset: each detector's gray-box AUC per attack and the
    adaptive white-box attack's distortion, AUC and success rate (empty rows when the runs used
    one detector only: Tables 2-3 already show it)."""
    layout = as_layout(records)
    loss_keys: list[str] = []
    for columns in layout.by_dataset.values():
        for column in columns:
            if column.loss_key not in loss_keys:
                loss_keys.append(column.loss_key)
    table = Table(
        "table5",
        "Table 5: detectors x losses (gray-box AUC per attack; white-box C&W-wb through each "
        "detector)",
        ["dataset", "detector: metric", *loss_keys],
        caption="Each detector fitted on the same model's clean training data (those fitted on "
        "adversarial examples: on examples crafted from training or validation images only), "
        "scored on the same attacked test images. Gray-box rows: detection AUC of attacks that "
        "ignore the detector; white-box rows: C&W-wb through classifier + that detector "
        "(the adaptive attack: BPDA for squeezing, Monte-Carlo expectation for uncertainty). "
        "A detector that keeps AUC > 0.5 at 100% white-box success is marked 'not breached at "
        "this budget'. " + _CELLS,
        headers={key: LOSS_LABELS.get(key, key) for key in loss_keys},
    )
    for dataset, columns in layout.by_dataset.items():
        detectors = _detectors_of(columns)
        if len(detectors) < 2:
            continue
        attacks = _attacks_of(layout.records, dataset)
        for detector in detectors:
            mine = {c.loss_key: c for c in columns if c.defense == detector}
            groups: list[tuple[str, MetricSpec, str | None, str | None]] = [
                (
                    keys.attack_prefix(keys.GRAYBOX, attack) + "/",
                    MetricSpec(
                        f"gray-box {attack} AUC",
                        keys.graybox(attack, keys.AUC),
                        "auc",
                        reason_tag=keys.auc_reason_tag(keys.GRAYBOX, attack),
                    ),
                    keys.GRAYBOX,
                    attack,
                )
                for attack in attacks
            ]
            wb_prefix = keys.attack_prefix(keys.WHITEBOX, keys.CW_WB) + "/"
            for metric in (WB_DISTORTION, WB_AUC, WB_SUCCESS):
                labelled = dataclasses.replace(metric, label=f"white-box {metric.label}")
                groups.append((wb_prefix, labelled, keys.WHITEBOX, None))
            for prefix, metric, stage, attack in groups:
                row: list[str | Cell] = [dataset, f"{detector}: {metric.label}"]
                for key in loss_keys:
                    column = mine.get(key)
                    if column is None:
                        row.append(Cell(None, reason=NOT_RUN, key=metric.key, kind=metric.kind))
                        continue
                    pick = pick_runs(column.runs, prefix, stage, attack)
                    row.append(metric_cell(pick, dataset, column.loss, metric, paper=False))
                if any(isinstance(c, Cell) and c.reason != NOT_RUN for c in row):
                    table.rows.append(row)
    return table


def build_tables(records: Sequence[RunRecord] | Layout) -> list[Table]:
    """Tables 1-4, the white-box ratio table (after Table 3), then the query-based black box when
    some run logged it, Table 5 when the runs compare
    detectors, Table 6 (:mod:`.taxonomy`) when some run has a taxonomy defense (a ``norm=``,
    ``transform=`` or ``train_defense=`` variant), the robust-accuracy table when some run logged
    the ``robust`` stage and the attack-cost table when some attack logged its cost
    (:mod:`.robust_table`), and the evaluation checklist when some run logged a check
    (:mod:`.checklist`), in order."""
    layout = as_layout(records)
    tables = [table1(layout), table2(layout), table3(layout), ratio_table(layout), table4(layout)]
    optional = [
        table4q(layout),
        table5(layout),
        table6(layout),
        robust_table(layout),
        cost_table(layout),
        checklist_table(layout),
    ]
    return [*tables, *(t for t in optional if t.rows)]
