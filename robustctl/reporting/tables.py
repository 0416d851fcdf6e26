"""The PDM paper's Tables 1-4 rebuilt from MLflow runs, as plain data.

A :class:`Table` has one row per (dataset, metric or attack) and one column per training loss
(``ce, rce, siamese_rvl, pdm``, then any other loss found in the runs). Each loss cell is a
:class:`Cell`: our value, the paper's value for the same (dataset, loss, metric) when there is one
(MNIST and CIFAR-10 only), and, when we have no value, the reason: ``not run``,
``failed: <error tag>``, or the reason tag the run logged (``too few pairs for an AUC: ...``).

- :func:`table1` reproduces Table 1 (clean test accuracy per loss) plus the Davies-Bouldin index
  of the test embeddings (Figure 2);
- :func:`table2` reproduces Table 2 (gray-box detection AUC of the KDE detector, per attack);
- :func:`table3` reproduces Table 3 (white-box C&W-wb mean normalized distortion), with the
  detection AUC and success rate the attack reached through the detector;
- :func:`table4` reproduces Table 4 (black-box detection AUC), with the transfer rate of the
  adversarial examples crafted on the distilled proxy.

Each cell reads the latest FINISHED run of its (dataset, loss) that logged the cell's metric
group (:func:`robustctl.reporting.collect.pick_run`); the cell keeps that run's id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from robustctl import metric_keys as keys
from robustctl.reporting.collect import Pick, RunRecord, pick_run
from robustctl.reporting.reference import PAPER_ATTACKS, PAPER_DATASETS, PAPER_LOSSES, reference

__all__ = [
    "LOSS_LABELS",
    "NOT_RUN",
    "Cell",
    "Table",
    "build_tables",
    "datasets_of",
    "losses_of",
    "table1",
    "table2",
    "table3",
    "table4",
]

NOT_RUN = "not run"
SHORT_REASON_MAX = 28  # longer reasons show their head in the cell and the whole text as a footnote
LOSS_LABELS = {
    "ce": "CE (baseline)",
    "rce": "RCE",
    "siamese_rvl": "Siamese+RVL",
    "pdm": "PDM",
    "center": "center",
    "contrastive_center": "contrastive center",
}

_FORMATS: dict[str, Callable[[float], str]] = {
    "percent": lambda v: f"{100 * v:.2f}",
    "auc": lambda v: f"{v:.3f}",
    "rate": lambda v: f"{v:.3f}",
    "dbi": lambda v: f"{v:.3f}",
    "distortion": lambda v: (
        f"{v:.3g}"
    ),  # spans 0.008 (CIFAR-10) to 0.16 (MNIST): significant digits
}


@dataclass(frozen=True)
class Cell:
    """One loss column of one row: ``value`` (ours), ``reference`` (paper) or ``reason``.

    ``note`` is a caveat on a present value (white-box budget exhausted), rendered as a footnote.
    ``key`` is the MLflow metric key and ``run_id`` the run it was read from (None: no run).
    ``kind`` picks the format: percent, auc, rate, dbi, distortion.
    """

    value: float | None = None
    reference: float | None = None
    reason: str | None = None
    note: str | None = None
    key: str | None = None
    run_id: str | None = None
    kind: str = "auc"

    def format(self, number: float) -> str:
        if math.isnan(number):
            return "nan"
        return _FORMATS.get(self.kind, lambda v: f"{v:.4g}")(number)

    @property
    def long_reason(self) -> bool:
        """Whether the reason is too long for a cell: the cell then shows its head,
        the footnote the rest."""
        return self.value is None and len(self.reason or "") > SHORT_REASON_MAX

    def ours(self) -> str:
        """Our value formatted, or the reason there is none
        (a long one cut to the part before its ':')."""
        if self.value is not None:
            return self.format(self.value)
        reason = self.reason or NOT_RUN
        return reason.split(":", 1)[0] if self.long_reason else reason

    def paper(self) -> str | None:
        return None if self.reference is None else self.format(self.reference)

    def text(self) -> str:
        """``ours (paper)``; ``reason; paper X`` when we have no value;
        just ours without a paper number."""
        paper = self.paper()
        if paper is None:
            return self.ours()
        return (
            f"{self.ours()} ({paper})"
            if self.value is not None
            else f"{self.ours()}; paper {paper}"
        )

    @property
    def failed(self) -> bool:
        """Whether the reason is a run that failed or was killed."""
        return self.value is None and (self.reason or "").startswith(
            ("failed:", "killed:", "unfinished")
        )


@dataclass
class Table:
    """``columns`` = ``labels`` leading label columns (e.g. dataset, attack), then the losses."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[str | Cell]] = field(default_factory=list)
    caption: str = ""
    labels: int = 2

    @property
    def losses(self) -> list[str]:
        return self.columns[self.labels :]

    def cell(self, *labels: str, column: str) -> Cell:
        """The cell of the row whose label columns equal ``labels``, in loss ``column``."""
        index = self.columns.index(column)
        for row in self.rows:
            if tuple(row[: len(labels)]) == labels:
                found = row[index]
                assert isinstance(found, Cell)
                return found
        raise KeyError(f"{self.key}: no row {labels}")

    def cells(self) -> list[Cell]:
        return [c for row in self.rows for c in row[self.labels :] if isinstance(c, Cell)]

    def footnotes(self) -> tuple[dict[tuple[int, int], int], list[str]]:
        """Footnote number per (row, column) of a cell with a note (a caveat on a value, or a
        reason too long for the cell), and the notes in order; equal notes share a number."""
        marks: dict[tuple[int, int], int] = {}
        texts: list[str] = []
        for i, row in enumerate(self.rows):
            for j, cell in enumerate(row):
                if not isinstance(cell, Cell):
                    continue
                note = (
                    cell.note
                    if cell.value is not None
                    else (cell.reason if cell.long_reason else None)
                )
                if note:
                    if note not in texts:
                        texts.append(note)
                    marks[(i, j)] = texts.index(note) + 1
        return marks, texts


# ------------------------------------------------------------------------------- what is present
def _ordered(first: Sequence[str], seen: set[str]) -> list[str]:
    return [*first, *sorted(seen - set(first))]


def datasets_of(records: Sequence[RunRecord]) -> list[str]:
    """Datasets with at least one run: the paper's (mnist, cifar10) first, then the others."""
    seen = {r.dataset for r in records if r.dataset}
    return [d for d in _ordered(PAPER_DATASETS, seen) if d in seen]


def losses_of(records: Sequence[RunRecord]) -> list[str]:
    """The paper's losses (always, so gaps show), then any other loss that has a run."""
    return _ordered(PAPER_LOSSES, {r.loss for r in records if r.loss})


def _attacks_of(records: Sequence[RunRecord], dataset: str) -> list[str]:
    seen = {
        a for r in records if r.dataset == dataset for a in keys.attacks_in(r.metrics, keys.GRAYBOX)
    }
    return _ordered(PAPER_ATTACKS, seen)


# ------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class _Metric:
    """A row: the metric key, its format, and the tags that explain a gap or qualify a value."""

    label: str
    key: str
    kind: str
    reason_tag: str | None = None
    note_tag: str | None = None


def _missing(run: RunRecord, metric: _Metric) -> str:
    if metric.reason_tag and run.tags.get(metric.reason_tag):
        return run.tags[metric.reason_tag]
    if metric.key.endswith(f"/{keys.AUC}") and run.tags.get("defense") == "none":
        return "no detector (defense=none)"
    return "not logged"


def _cell(pick: Pick, dataset: str, loss: str, metric: _Metric) -> Cell:
    ref = reference(dataset, loss, metric.key)
    run = pick.run
    if run is None:
        return Cell(None, ref, reason=pick.reason, key=metric.key, kind=metric.kind)
    if metric.key in run.metrics:
        note = run.tags.get(metric.note_tag) if metric.note_tag else None
        return Cell(
            run.metrics[metric.key],
            ref,
            note=note,
            key=metric.key,
            run_id=run.run_id,
            kind=metric.kind,
        )
    return Cell(
        None, ref, reason=_missing(run, metric), key=metric.key, run_id=run.run_id, kind=metric.kind
    )


def _keep(row: list[str | Cell], dataset: str) -> bool:
    """Rows of a dataset without reference numbers are dropped when no loss has anything to say."""
    cells = [c for c in row if isinstance(c, Cell)]
    return dataset in PAPER_DATASETS or any(
        c.value is not None or c.reason != NOT_RUN for c in cells
    )


def _group_rows(
    records: Sequence[RunRecord],
    losses: list[str],
    dataset: str,
    prefix: str,
    metrics: Sequence[_Metric],
    stage: str | None,
    attack: str | None = None,
) -> list[list[str | Cell]]:
    """Rows for the metrics of one group, each loss's cells read from the same picked run."""
    picks = {loss: pick_run(records, dataset, loss, prefix, stage, attack) for loss in losses}
    rows: list[list[str | Cell]] = []
    for metric in metrics:
        row: list[str | Cell] = [dataset, metric.label]
        row += [_cell(picks[loss], dataset, loss, metric) for loss in losses]
        if _keep(row, dataset):
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------- the tables
CLEAN_ACCURACY = _Metric("clean accuracy (%)", keys.CLEAN_ACCURACY, "percent")
DBI = _Metric("DBI (embeddings)", keys.EMBED_DBI, "dbi")


def _metric_table(
    records: Sequence[RunRecord],
    key: str,
    title: str,
    caption: str,
    prefix: str,
    metrics: Sequence[_Metric],
    stage: str | None,
) -> Table:
    """A table of fixed metric rows per dataset, all read from the run each loss picked
    for ``prefix``."""
    losses = losses_of(records)
    table = Table(key, title, ["dataset", "metric", *losses], caption=caption)
    for dataset in datasets_of(records):
        table.rows += _group_rows(records, losses, dataset, prefix, metrics, stage)
    return table


def table1(records: Sequence[RunRecord]) -> Table:
    """Table 1: clean test accuracy (%) per loss, and the DBI of the test embeddings (Figure 2)."""
    return _metric_table(
        records,
        "table1",
        "Table 1: clean test accuracy (%) and embedding DBI per training loss",
        "Reproduces PDM Table 1 (clean accuracy; CE / RCE / Siamese+RVL / PDM) and the "
        "Davies-Bouldin index of Figure 2 (lower = tighter class clusters). Cells: ours (paper).",
        keys.CLEAN_ACCURACY,
        [CLEAN_ACCURACY, DBI],
        stage=None,
    )


def table2(records: Sequence[RunRecord]) -> Table:
    """Table 2: gray-box detection AUC of the KDE detector, one row per attack and dataset."""
    losses = losses_of(records)
    table = Table(
        "table2",
        "Table 2: gray-box detection AUC (KDE detector) per attack",
        ["dataset", "attack", *losses],
        caption="Reproduces PDM Table 2: the attacker knows the classifier but not the detector; "
        "AUC of clean vs adversarial KDE scores over (clean, adversarial) pairs. "
        "Baseline = CE. Cells: ours (paper).",
    )
    for dataset in datasets_of(records):
        for attack in _attacks_of(records, dataset):
            metric = _Metric(
                attack,
                keys.graybox(attack, keys.AUC),
                "auc",
                reason_tag=keys.auc_reason_tag(keys.GRAYBOX, attack),
            )
            prefix = keys.attack_prefix(keys.GRAYBOX, attack) + "/"
            table.rows += _group_rows(
                records, losses, dataset, prefix, [metric], keys.GRAYBOX, attack
            )
    return table


WB_NOTE = keys.note_tag(keys.WHITEBOX, keys.CW_WB)
WB_DISTORTION = _Metric("distortion", keys.whitebox("distortion"), "distortion", note_tag=WB_NOTE)
WB_AUC = _Metric(
    "detection AUC", keys.whitebox(keys.AUC), "auc", reason_tag=WB_NOTE, note_tag=WB_NOTE
)
WB_SUCCESS = _Metric("success rate", keys.whitebox(keys.SUCCESS_RATE), "rate")


def table3(records: Sequence[RunRecord]) -> Table:
    """Table 3: white-box C&W-wb mean normalized distortion L2/sqrt(n), detection AUC,
    success rate."""
    return _metric_table(
        records,
        "table3",
        "Table 3: white-box C&W-wb (through classifier + KDE detector)",
        "Reproduces PDM Table 3: mean normalized distortion L2/sqrt(n) of the C&W-wb examples "
        "(higher = harder to attack); plus the detection AUC and success rate they reached. "
        "Baseline = CE. Cells: ours (paper).",
        keys.attack_prefix(keys.WHITEBOX, keys.CW_WB) + "/",
        [WB_DISTORTION, WB_AUC, WB_SUCCESS],
        keys.WHITEBOX,
    )


BB_AUC = _Metric(
    "detection AUC",
    keys.blackbox(keys.AUC),
    "auc",
    reason_tag=keys.auc_reason_tag(keys.BLACKBOX, keys.CW_WB),
)
BB_TRANSFER = _Metric("transfer rate", keys.BLACKBOX_TRANSFER_RATE, "rate")


def table4(records: Sequence[RunRecord]) -> Table:
    """Table 4: black-box detection AUC of C&W-wb examples transferred from a distilled proxy."""
    return _metric_table(
        records,
        "table4",
        "Table 4: black-box C&W-wb (crafted on a distilled proxy, transferred)",
        "Reproduces PDM Table 4: detection AUC of adversarial examples crafted on a distilled "
        "proxy with its own KDE, then fed to the target; plus the fraction that fooled the "
        "target (transfer rate). Baseline = CE. Cells: ours (paper).",
        keys.attack_prefix(keys.BLACKBOX, keys.CW_WB) + "/",
        [BB_AUC, BB_TRANSFER],
        keys.BLACKBOX,
    )


def build_tables(records: Sequence[RunRecord]) -> list[Table]:
    """Tables 1-4, in order."""
    return [table1(records), table2(records), table3(records), table4(records)]
