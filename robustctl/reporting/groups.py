"""Which runs a report covers, how they form columns, and which runs answer one cell.

Scope (:func:`scope_runs`): by default a report covers the most recent experiment only: the parent
run (a run that other runs name in their ``mlflow.parentRunId`` tag) that started last, and its
children. ``all_runs`` covers every run; a selection without any parent run falls back to every
run and says so.

Columns (:func:`columns_of`): per dataset the runs are grouped by fingerprint (equal for runs that
differ only in ``trainer.seed``). A column is one group, labelled by its loss and, when the loss
departs from the paper's settings, its variant: ``PDM (rvl_normalization=centroid)``; a detector
other than the paper's KDE follows: ``PDM · lid``. Two groups
of one dataset with the same (loss, variant) stay two columns, each labelled with a short
fingerprint ``[fp 1a2b3c]``; none is dropped.

Cells (:func:`pick_runs`): every cell of a column reads that column's group only: the latest
FINISHED run per seed that logged the cell's metric prefix. Without one, the latest run of the
group that was configured for the stage but did not finish gives the reason
(``failed: <error tag>``); otherwise the reason is ``not run``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from robustctl.reporting.collect import RunRecord
from robustctl.reporting.reference import PAPER_DATASETS, PAPER_LOSSES

__all__ = [
    "LOSS_LABELS",
    "NOT_RUN",
    "SPLIT",
    "Column",
    "Pick",
    "Scope",
    "column_keys",
    "columns_by_dataset",
    "columns_of",
    "datasets_of",
    "latest_parent",
    "losses_of",
    "pick_runs",
    "scope_runs",
    "seed_order",
]

NOT_RUN = "not run"
PAPER_DETECTOR = "kde"  # columns of other detectors are labelled with theirs
UNLABELLED_DEFENSES = ("", "none", PAPER_DETECTOR)
SPLIT = "split by fingerprint"  # the (loss, variant) of this column has [fp] columns instead
FP_CHARS = 6  # characters of a fingerprint in a column label
LOSS_LABELS = {
    "ce": "CE (baseline)",
    "rce": "RCE",
    "siamese_rvl": "Siamese+RVL",
    "pdm": "PDM",
    "center": "center",
    "contrastive_center": "contrastive center",
}


def _newest_first(records: Iterable[RunRecord]) -> list[RunRecord]:
    return sorted(records, key=lambda r: (r.start_time, r.end_time or 0), reverse=True)


def seed_order(seed: str) -> tuple[int, float, str]:
    """Sort key for seeds: numbers numerically, then anything else by name."""
    try:
        return (0, float(seed), "")
    except ValueError:
        return (1, 0.0, seed)


# ------------------------------------------------------------------------------- scope
@dataclass(frozen=True)
class Scope:
    """The runs a report covers, the parent run they belong to (if any) and a sentence saying so."""

    records: list[RunRecord]
    parent: RunRecord | None
    description: str


def describe_parent(parent: RunRecord) -> str:
    """``parent run <name> (<id>), experiment '<tag>'``."""
    tag = parent.tags.get("experiment")
    return f"parent run {parent.run_name or '(unnamed)'} ({parent.run_id})" + (
        f", experiment {tag!r}" if tag else ""
    )


def latest_parent(records: Sequence[RunRecord]) -> RunRecord | None:
    """The run with the latest start time among those some run of ``records`` names as parent."""
    named = {r.parent_id for r in records if r.parent_id}
    parents = [r for r in records if r.run_id in named]
    return max(parents, key=lambda r: r.start_time) if parents else None


def scope_runs(records: Sequence[RunRecord], all_runs: bool = False) -> Scope:
    """The latest parent run's children (default), or every run (``all_runs``, or when no run of
    the selection is a parent run)."""
    if all_runs:
        return Scope(list(records), None, f"every run of the selection ({len(records)}, --all)")
    parent = latest_parent(records)
    if parent is None:
        return Scope(
            list(records),
            None,
            f"every run of the selection ({len(records)}): no parent run to narrow to",
        )
    children = [r for r in records if r.parent_id == parent.run_id]
    return Scope(
        children,
        parent,
        f"the latest experiment only: the {len(children)} child runs of {describe_parent(parent)} "
        "(--all for every run)",
    )


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


# ------------------------------------------------------------------------------- columns
@dataclass
class Column:
    """One fingerprint group of one dataset: its runs (every status), newest first."""

    dataset: str
    loss: str
    variant: str
    fingerprint: str
    runs: list[RunRecord] = field(default_factory=list)
    split: bool = False  # another group of this dataset has the same (loss, variant, defense)
    defense: str = ""

    @property
    def loss_key(self) -> str:
        """``loss`` or ``loss (variant)``: the training side of the column (Table 5's columns)."""
        return self.loss + (f" ({self.variant})" if self.variant else "")

    @property
    def base(self) -> str:
        """``loss_key``, then `` · <detector>`` for a detector other than KDE: the column key when
        the group is not split."""
        suffix = "" if self.defense in UNLABELLED_DEFENSES else f" · {self.defense}"
        return self.loss_key + suffix

    @property
    def short_fingerprint(self) -> str:
        return self.fingerprint[:FP_CHARS]

    @property
    def key(self) -> str:
        """The table column: ``pdm``, ``pdm (rvl_normalization=centroid)``, ``pdm [fp 1a2b3c]``."""
        return self.base + (f" [fp {self.short_fingerprint}]" if self.split else "")

    @property
    def label(self) -> str:
        """The header: :data:`LOSS_LABELS` name, then the variant and (split) the fingerprint;
        CE is "the baseline" only without a variant (``CE (transform=jpeg(quality=75))``)."""
        name = LOSS_LABELS.get(self.loss, self.loss)
        if self.variant:
            name = name.removesuffix(" (baseline)")
        return name + self.key.removeprefix(self.loss)


def columns_of(records: Sequence[RunRecord], dataset: str) -> list[Column]:
    """The fingerprint groups of ``dataset``, ordered by loss (paper's first), plain before
    variants, then by first start time; groups sharing (loss, variant) are marked ``split``."""
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        if record.dataset == dataset and record.loss:
            groups.setdefault(record.fingerprint, []).append(record)
    columns = []
    for fingerprint, runs in groups.items():
        runs = _newest_first(runs)
        first = runs[0]
        columns.append(
            Column(dataset, first.loss, first.variant, fingerprint, runs, defense=first.defense)
        )
    losses = losses_of(records)
    columns.sort(
        key=lambda c: (
            losses.index(c.loss),
            c.variant != "",
            c.variant,
            c.defense not in UNLABELLED_DEFENSES,
            c.defense,
            min(r.start_time for r in c.runs),
        )
    )
    bases = [c.base for c in columns]
    for column in columns:
        column.split = bases.count(column.base) > 1
    return columns


def columns_by_dataset(records: Sequence[RunRecord]) -> dict[str, list[Column]]:
    return {dataset: columns_of(records, dataset) for dataset in datasets_of(records)}


def column_keys(by_dataset: dict[str, list[Column]], records: Sequence[RunRecord]) -> list[str]:
    """Every table column key: each loss of :func:`losses_of` (the paper's always, so gaps show),
    followed by its variant and fingerprint columns in the order they first appear."""
    seen: list[Column] = [c for columns in by_dataset.values() for c in columns]
    out: list[str] = []
    for loss in losses_of(records):
        mine = [c for c in seen if c.loss == loss]
        if loss in PAPER_LOSSES or any(c.key == loss for c in mine):
            out.append(loss)
        for column in sorted(mine, key=_within_loss):
            if column.key not in out:
                out.append(column.key)
    return out


def _within_loss(column: Column) -> tuple[bool, str, bool, str]:
    """Columns of one loss: plain first, then variants; KDE's before other detectors'."""
    unlabelled = column.defense in UNLABELLED_DEFENSES
    return (column.variant != "", column.variant, not unlabelled, column.defense)


def missing_reason(columns: Sequence[Column], key: str) -> str:
    """Why a dataset has no column ``key``: its (loss, variant) was split by fingerprint, or
    nothing ran."""
    return SPLIT if any(c.split and c.base == key for c in columns) else NOT_RUN


# ------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Pick:
    """The runs chosen for a cell (latest FINISHED per seed, in seed order), or (``runs`` empty)
    the reason there are none."""

    runs: tuple[RunRecord, ...] = ()
    reason: str | None = None

    @property
    def run(self) -> RunRecord | None:
        """The newest of the chosen runs."""
        return max(self.runs, key=lambda r: r.start_time) if self.runs else None


def _could_produce(record: RunRecord, stage: str | None, attack: str | None) -> bool:
    """Whether an unfinished run was configured to log ``stage`` (so its failure concerns the
    cell)."""
    if stage is None:
        return True
    stages = record.params.get("threat_model.stages")
    if stages is not None:
        if stage not in stages:
            return False
    else:
        threat = record.tags.get("threat_model") or record.params.get("threat_model.name")
        if threat is not None and threat not in (stage, "all"):
            return False
    chosen = record.tags.get("attack") or record.params.get("attack.name")
    return attack is None or chosen in (None, "", "none", attack)


def pick_runs(
    runs: Iterable[RunRecord],
    prefix: str,
    stage: str | None = None,
    attack: str | None = None,
) -> Pick:
    """Of one group's ``runs``: the latest FINISHED run per seed that logged ``prefix``.

    Without one, the latest run that was configured for ``stage`` (and ``attack``) but did not
    finish gives the reason (``failed: <error tag>``); otherwise the reason is ``not run``.
    """
    newest = _newest_first(runs)
    chosen: dict[str, RunRecord] = {}
    for record in newest:
        if record.status == "FINISHED" and record.has(prefix):
            chosen.setdefault(record.seed, record)
    if chosen:
        return Pick(tuple(chosen[s] for s in sorted(chosen, key=seed_order)))
    for record in newest:
        if record.status != "FINISHED" and _could_produce(record, stage, attack):
            return Pick(reason=record.status_reason())
    return Pick(reason=NOT_RUN)
