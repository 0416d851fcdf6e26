"""The report's building blocks, below every table: a :class:`Cell` (a value with its
uncertainty, the paper's value, or the reason it is missing), a :class:`Table` of cells, the
:class:`Layout` of columns (one per fingerprint group and dataset,
:mod:`robustctl.reporting.groups`), and a :class:`MetricSpec` row whose :func:`metric_cell`
reads one column's picked runs.

The tables themselves (:mod:`robustctl.reporting.tables`, :mod:`.ratios`, :mod:`.taxonomy`) are
built from these; the ordered list of every table
(:func:`robustctl.reporting.tables.build_tables`) sits above all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from robustctl import metric_keys as keys
from robustctl.reporting.collect import RunRecord
from robustctl.reporting.groups import (
    LOSS_LABELS,
    NOT_RUN,
    SPLIT,
    Column,
    Pick,
    column_keys,
    columns_by_dataset,
    missing_reason,
    pick_runs,
)
from robustctl.reporting.reference import PAPER_DATASETS, reference
from robustctl.reporting.uncertainty import Estimate, seeds_estimate

__all__ = [
    "FEW_PAIRS_NOTE",
    "RELIABLE_PAIRS",
    "Cell",
    "Layout",
    "MetricSpec",
    "Table",
    "as_layout",
    "group_rows",
    "keep_row",
    "layout_of",
    "metric_cell",
]

SHORT_REASON_MAX = 28  # longer reasons show their head in the cell and the whole text as a footnote
RELIABLE_PAIRS = 30  # an AUC from fewer (clean, adversarial) pairs is marked with a footnote
FEW_PAIRS_NOTE = f"AUC from fewer than {RELIABLE_PAIRS} pairs"

_FORMATS: dict[str, Callable[[float], str]] = {
    "percent": lambda v: f"{100 * v:.2f}",
    "auc": lambda v: f"{v:.3f}",
    "rate": lambda v: f"{v:.3f}",
    "dbi": lambda v: f"{v:.3f}",
    "grad": lambda v: f"{v:.4g}",
    # spans 0.008 (CIFAR-10) to 0.16 (MNIST): significant digits
    "distortion": lambda v: f"{v:.3g}",
    "breach": lambda v: f"{v:.3g}",
    "ratio": lambda v: f"{v:.2f}x",
    "queries": lambda v: f"{v:.0f}",
}
# what a NaN value means, per kind (default "nan")
_NAN_TEXT: dict[str, str] = {
    # the median breach distortion is undefined when fewer than half the examples were breached
    "breach": "> max budget",
    # a rate over no trials (no clean-correct example, no transfer candidate): 0/0
    "rate": "n/a (0 examples)",
}


@dataclass(frozen=True)
class Cell:
    """One column of one row: ``value`` (ours) with its uncertainty, ``reference`` (paper), or
    ``reason``.

    Uncertainty: ``ci_low``/``ci_high`` (95% interval), ``sd`` (across ``n_seeds`` seeds; for a
    ratio ``n_seeds`` counts seed pairs, ``count_unit`` names them), ``pairs`` (an AUC's pair
    count; the smallest among seeds). ``notes`` are caveats on a present value (white-box budget
    exhausted, too few pairs), rendered as footnotes. ``key`` is the MLflow metric key and
    ``run_ids`` the runs it was read from (empty: no run). ``kind`` picks the format.
    """

    value: float | None = None
    reference: float | None = None
    reason: str | None = None
    notes: tuple[str, ...] = ()
    key: str | None = None
    run_ids: tuple[str, ...] = ()
    kind: str = "auc"
    ci_low: float | None = None
    ci_high: float | None = None
    sd: float | None = None
    n_seeds: int = 0
    pairs: int | None = None
    count_unit: str = "seeds"

    @classmethod
    def of(cls, estimate: Estimate, **fields: object) -> Cell:
        """A cell holding ``estimate``."""
        return cls(
            estimate.value,
            ci_low=estimate.ci_low,
            ci_high=estimate.ci_high,
            sd=estimate.sd,
            n_seeds=estimate.n_seeds,
            pairs=estimate.pairs,
            **fields,  # type: ignore[arg-type]
        )

    @property
    def run_id(self) -> str | None:
        """The run of a single-run cell (the first run of a multi-seed one)."""
        return self.run_ids[0] if self.run_ids else None

    @property
    def note(self) -> str | None:
        return "; ".join(self.notes) or None

    def format(self, number: float) -> str:
        if math.isnan(number):
            return _NAN_TEXT.get(self.kind, "nan")
        return _FORMATS.get(self.kind, lambda v: f"{v:.4g}")(number)

    @property
    def long_reason(self) -> bool:
        """Whether the reason is too long for a cell: the cell then shows its head,
        the footnote the rest."""
        return self.value is None and len(self.reason or "") > SHORT_REASON_MAX

    def uncertainty(self) -> str:
        """`` ± sd, 3 seeds, min n=40`` (seeds), `` [low, high], n=85`` (one run), or ""."""
        if self.value is None or math.isnan(self.value):
            return ""
        text = ""
        if self.sd is not None and self.n_seeds > 1:
            text = f" ± {self.format(self.sd)}"
        elif self.ci_low is not None and self.ci_high is not None:
            text = f" [{self.format(self.ci_low)}, {self.format(self.ci_high)}]"
        tail = [f"{self.n_seeds} {self.count_unit}"] if self.n_seeds > 1 else []
        if self.pairs is not None:
            tail.append(f"{'min ' if self.n_seeds > 1 else ''}n={self.pairs}")
        return text + "".join(f", {t}" for t in tail)

    def bounds(self) -> tuple[float, float] | None:
        """The uncertainty :meth:`uncertainty` prints, as numbers: ``(mean - sd, mean + sd)``
        across several seeds, else the run's ``(ci_low, ci_high)``; None without either, or when
        the value or a bound is not finite."""
        if self.value is None or not math.isfinite(self.value):
            return None
        if self.sd is not None and self.n_seeds > 1:
            low, high = self.value - self.sd, self.value + self.sd
        elif self.ci_low is not None and self.ci_high is not None:
            low, high = self.ci_low, self.ci_high
        else:
            return None
        return (low, high) if math.isfinite(low) and math.isfinite(high) else None

    def ours(self) -> str:
        """Our value formatted with its uncertainty, or the reason there is none
        (a long one cut to the part before its ':')."""
        if self.value is not None:
            return self.format(self.value) + self.uncertainty()
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

    def footnotes(self) -> tuple[str, ...]:
        """The caveats on a value, or a reason too long for the cell."""
        if self.value is not None:
            return self.notes
        return (self.reason or "",) if self.long_reason else ()


@dataclass
class Table:
    """``columns`` = ``labels`` leading label columns (e.g. dataset, attack), then the column
    keys (:attr:`robustctl.reporting.groups.Column.key`); ``headers`` maps a key to its header."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[str | Cell]] = field(default_factory=list)
    caption: str = ""
    labels: int = 2
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def losses(self) -> list[str]:
        return self.columns[self.labels :]

    def header(self, column: str) -> str:
        if column not in self.losses:
            return column
        return self.headers.get(column) or LOSS_LABELS.get(column, column)

    def cell(self, *labels: str, column: str) -> Cell:
        """The cell of the row whose label columns equal ``labels``, in column ``column``."""
        index = self.columns.index(column)
        for row in self.rows:
            if tuple(row[: len(labels)]) == labels:
                found = row[index]
                assert isinstance(found, Cell)
                return found
        raise KeyError(f"{self.key}: no row {labels}")

    def cells(self) -> list[Cell]:
        return [c for row in self.rows for c in row[self.labels :] if isinstance(c, Cell)]

    def footnotes(self) -> tuple[dict[tuple[int, int], tuple[int, ...]], list[str]]:
        """Footnote numbers per (row, column) of a cell with notes (caveats on a value, or a
        reason too long for the cell), and the notes in order; equal notes share a number."""
        marks: dict[tuple[int, int], tuple[int, ...]] = {}
        texts: list[str] = []
        for i, row in enumerate(self.rows):
            for j, cell in enumerate(row):
                if not isinstance(cell, Cell) or not cell.footnotes():
                    continue
                for note in cell.footnotes():
                    if note not in texts:
                        texts.append(note)
                marks[(i, j)] = tuple(texts.index(n) + 1 for n in cell.footnotes())
        return marks, texts


# ------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Layout:
    """The runs in scope, their columns per dataset, and the table column keys and headers."""

    records: Sequence[RunRecord]
    by_dataset: dict[str, list[Column]]
    keys: list[str]
    headers: dict[str, str]

    def column(self, dataset: str, key: str) -> Column | None:
        return next((c for c in self.by_dataset[dataset] if c.key == key), None)

    def table(self, key: str, title: str, label: str, caption: str) -> Table:
        columns = ["dataset", label, *self.keys]
        return Table(key, title, columns, caption=caption, headers=self.headers)


def layout_of(records: Sequence[RunRecord]) -> Layout:
    by_dataset = columns_by_dataset(records)
    headers = {c.key: c.label for columns in by_dataset.values() for c in columns}
    return Layout(records, by_dataset, column_keys(by_dataset, records), headers)


def as_layout(records: Sequence[RunRecord] | Layout) -> Layout:
    return records if isinstance(records, Layout) else layout_of(records)


# ------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class MetricSpec:
    """A row: the metric key, its format, and the tags that explain a gap or qualify a value.

    ``note_text`` turns the ``note_tag`` value into the footnote (default: the tag itself).
    ``table``: the report table the row is placed in (:func:`robustctl.reporting.rows.placed_in`;
    None for a row a table builds itself).
    """

    label: str
    key: str
    kind: str
    reason_tag: str | None = None
    note_tag: str | None = None
    note_text: Callable[[str], str] = str
    table: str | None = None

    @property
    def pairs_key(self) -> str | None:
        """``<stage>/<attack>/pairs`` for an AUC key, else None."""
        parsed = keys.parse_attack_key(self.key)
        if parsed is None or parsed.metric != keys.AUC:
            return None
        return keys.attack_key(parsed.stage, parsed.attack, keys.PAIRS)


def _missing(run: RunRecord, metric: MetricSpec) -> str:
    if metric.reason_tag and run.tags.get(metric.reason_tag):
        return run.tags[metric.reason_tag]
    if metric.key.endswith(f"/{keys.AUC}") and run.tags.get("defense") == "none":
        return "no detector (defense=none)"
    return "not logged"


def _notes(runs: Sequence[RunRecord], metric: MetricSpec, pairs: int | None) -> tuple[str, ...]:
    """The tag notes of the runs (each distinct text once), the few-pairs mark, and how many
    seeds have a NaN value (their mean is NaN too)."""
    tag = metric.note_tag or ""
    texts = [metric.note_text(r.tags[tag]) for r in runs if r.tags.get(tag)]
    if pairs is not None and pairs < RELIABLE_PAIRS:
        texts.append(FEW_PAIRS_NOTE)
    nans = sum(math.isnan(r.metrics[metric.key]) for r in runs)
    if len(runs) > 1 and nans:
        meaning = _NAN_TEXT.get(metric.kind, "nan")
        texts.append(f"{metric.label}: {meaning} in {nans} of {len(runs)} seeds")
    return tuple(dict.fromkeys(texts))


def metric_cell(
    pick: Pick, dataset: str, loss: str, metric: MetricSpec, paper: bool = True
) -> Cell:
    """``metric``'s cell from the picked runs, beside the paper's value when ``paper`` (the
    paper's numbers are those of its KDE detector)."""
    ref = reference(dataset, loss, metric.key) if paper else None
    if not pick.runs:
        return Cell(None, ref, reason=pick.reason, key=metric.key, kind=metric.kind)
    estimate = seeds_estimate(pick.runs, metric.key, metric.pairs_key)
    if estimate is None:
        newest = pick.run
        assert newest is not None
        return Cell(
            None,
            ref,
            reason=_missing(newest, metric),
            key=metric.key,
            run_ids=tuple(r.run_id for r in pick.runs),
            kind=metric.kind,
        )
    having = [r for r in pick.runs if metric.key in r.metrics]
    return Cell.of(
        estimate,
        reference=ref,
        notes=_notes(having, metric, estimate.pairs),
        key=metric.key,
        run_ids=tuple(r.run_id for r in having),
        kind=metric.kind,
    )


def keep_row(row: list[str | Cell], dataset: str) -> bool:
    """Rows of a dataset without reference numbers are dropped when no column has anything to
    say."""
    cells = [c for c in row if isinstance(c, Cell)]
    return dataset in PAPER_DATASETS or any(
        c.value is not None or c.reason not in (NOT_RUN, SPLIT) for c in cells
    )


def group_rows(
    layout: Layout,
    dataset: str,
    prefix: str,
    metrics: Sequence[MetricSpec],
    stage: str | None,
    attack: str | None = None,
) -> list[list[str | Cell]]:
    """Rows for the metrics of one group: each column's cells read from the runs it picked from
    its own fingerprint group."""
    columns = layout.by_dataset[dataset]
    picks = {c.key: pick_runs(c.runs, prefix, stage, attack) for c in columns}
    losses = {c.key: c.loss for c in columns}
    rows: list[list[str | Cell]] = []
    for metric in metrics:
        row: list[str | Cell] = [dataset, metric.label]
        for key in layout.keys:
            if key in picks:
                row.append(metric_cell(picks[key], dataset, losses[key], metric))
            else:
                reason = missing_reason(columns, key)
                ref = reference(dataset, key.split(" ", 1)[0], metric.key)
                row.append(Cell(None, ref, reason=reason, key=metric.key, kind=metric.kind))
        if keep_row(row, dataset):
            rows.append(row)
    return rows
