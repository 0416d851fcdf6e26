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
detectors, and Table 6 (:func:`robustctl.reporting.taxonomy.table6`, one row per defense, one
column per metric) when some run has a taxonomy defense.

Every cell of a column in one dataset reads that column's group only: the latest FINISHED run per
seed that logged the row's metric group (:func:`robustctl.reporting.groups.pick_runs`); the cell
keeps those runs' ids.
"""

from __future__ import annotations

import dataclasses
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
    datasets_of,
    losses_of,
    missing_reason,
    pick_runs,
)
from robustctl.reporting.reference import PAPER_ATTACKS, PAPER_DATASETS, reference
from robustctl.reporting.uncertainty import Estimate, seeds_estimate

__all__ = [
    "LOSS_LABELS",
    "RELIABLE_PAIRS",
    "NOT_RUN",
    "Cell",
    "Layout",
    "Table",
    "build_tables",
    "datasets_of",
    "layout_of",
    "losses_of",
    "table1",
    "table2",
    "table3",
    "table4",
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


def _attacks_of(records: Sequence[RunRecord], dataset: str) -> list[str]:
    seen = {
        a for r in records if r.dataset == dataset for a in keys.attacks_in(r.metrics, keys.GRAYBOX)
    }
    return [*PAPER_ATTACKS, *sorted(seen - set(PAPER_ATTACKS))]


# ------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class MetricSpec:
    """A row: the metric key, its format, and the tags that explain a gap or qualify a value.

    ``note_text`` turns the ``note_tag`` value into the footnote (default: the tag itself).
    """

    label: str
    key: str
    kind: str
    reason_tag: str | None = None
    note_tag: str | None = None
    note_text: Callable[[str], str] = str

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


def _group_rows(
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


# ------------------------------------------------------------------------------- the tables
def _grad_loss(tag: str) -> str:
    return f"differentiates {tag.upper()}"


CLEAN_ACCURACY = MetricSpec("clean accuracy (%)", keys.CLEAN_ACCURACY, "percent")
DBI = MetricSpec("DBI (embeddings)", keys.EMBED_DBI, "dbi", reason_tag=keys.EMBED_DBI_REASON_TAG)
GRAD_TRAIN = MetricSpec(
    "input-gradient norm (training loss)",
    keys.EMBED_INPUT_GRAD_NORM,
    "grad",
    note_tag=keys.EMBED_GRAD_LOSS_TAG,
    note_text=_grad_loss,
)
GRAD_CE = MetricSpec("input-gradient norm (CE)", keys.EMBED_INPUT_GRAD_NORM_CE, "grad")


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
        table.rows += _group_rows(layout, dataset, prefix, metrics, stage)
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
        [CLEAN_ACCURACY, DBI, GRAD_TRAIN, GRAD_CE],
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
            table.rows += _group_rows(layout, dataset, prefix, [metric], keys.GRAYBOX, attack)
    return table


WB_NOTE = keys.note_tag(keys.WHITEBOX, keys.CW_WB)
WB_DISTORTION = MetricSpec(
    "distortion", keys.whitebox("distortion"), "distortion", note_tag=WB_NOTE
)
WB_MEDIAN = MetricSpec(
    "median breach distortion", keys.whitebox(keys.MEDIAN_DISTORTION), "breach", note_tag=WB_NOTE
)
WB_AUC = MetricSpec(
    "detection AUC", keys.whitebox(keys.AUC), "auc", reason_tag=WB_NOTE, note_tag=WB_NOTE
)
WB_SUCCESS = MetricSpec("success rate", keys.whitebox(keys.SUCCESS_RATE), "rate")


def table3(records: Sequence[RunRecord] | Layout) -> Table:
    """Table 3: white-box C&W-wb mean and median-breach normalized distortion L2/sqrt(n),
    detection AUC, success rate."""
    return _metric_table(
        as_layout(records),
        "table3",
        "Table 3: white-box C&W-wb (through classifier + KDE detector)",
        "Reproduces PDM Table 3: mean normalized distortion L2/sqrt(n) of the C&W-wb examples "
        "(higher = harder to attack); the median breach distortion is the L2/sqrt(n) budget at "
        "which half the clean-correct examples are breached ('> max budget': fewer than half "
        "ever were); plus the detection AUC and success rate they reached. Baseline = CE. "
        + _CELLS,
        keys.attack_prefix(keys.WHITEBOX, keys.CW_WB) + "/",
        [WB_DISTORTION, WB_MEDIAN, WB_AUC, WB_SUCCESS],
        keys.WHITEBOX,
    )


BB_AUC = MetricSpec(
    "detection AUC",
    keys.blackbox(keys.AUC),
    "auc",
    reason_tag=keys.auc_reason_tag(keys.BLACKBOX, keys.CW_WB),
)
BB_TRANSFER = MetricSpec("transfer rate", keys.BLACKBOX_TRANSFER_RATE, "rate")
BB_PROXY_SUCCESS = MetricSpec("proxy success rate", keys.BLACKBOX_PROXY_SUCCESS_RATE, "rate")


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
        [BB_AUC, BB_TRANSFER, BB_PROXY_SUCCESS],
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


def as_layout(records: Sequence[RunRecord] | Layout) -> Layout:
    return records if isinstance(records, Layout) else layout_of(records)


def build_tables(records: Sequence[RunRecord] | Layout) -> list[Table]:
    """Tables 1-4, the white-box ratio table (after Table 3), then Table 5 when the runs compare
    detectors and Table 6 (:mod:`.taxonomy`) when some run has a taxonomy defense (a ``norm=``,
    ``transform=`` or ``train_defense=`` variant), in order."""
    from robustctl.reporting.ratios import ratio_table
    from robustctl.reporting.taxonomy import table6

    layout = as_layout(records)
    tables = [table1(layout), table2(layout), table3(layout), ratio_table(layout), table4(layout)]
    optional = [table5(layout), table6(layout)]
    return [*tables, *(t for t in optional if t.rows)]
