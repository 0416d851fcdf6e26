"""The report's "Columns" section: which runs and which settings each table column stands for.

One :class:`ColumnInfo` per dataset and column: its fingerprint, the seeds and run ids behind its
cells (in any of the tables), how many runs the group holds per status, and the settings that
matter, read from the runs' params (:data:`SETTINGS`). Runs of one fingerprint share these
settings; should they not (old runs with a fallback fingerprint), every distinct value is listed,
joined by `` / ``.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from robustctl.reporting.cells import Layout, Table
from robustctl.reporting.collect import RunRecord
from robustctl.reporting.groups import Column, seed_order

__all__ = ["CSV_FIELDS", "SETTINGS", "ColumnInfo", "column_infos", "write_columns_csv"]


def _param(name: str) -> Callable[[RunRecord], str]:
    return lambda run: run.params.get(name, "")


def _ran(run: RunRecord, stage: str) -> bool:
    """Whether ``stage`` was among the run's ``threat_model.stages`` (True when not logged)."""
    stages = run.params.get("threat_model.stages")
    return stages is None or f"'{stage}'" in stages


def _cw_budget(run: RunRecord) -> str:
    parts = [run.params.get(f"threat_model.whitebox.{k}") for k in ("binary_steps", "steps", "lr")]
    return "" if None in parts else f"{parts[0]} x {parts[1]} @ {parts[2]}"


def _whitebox_budget(run: RunRecord) -> str:
    """Each white-box attack's base budget (C&W-wb ``binary_steps x steps @ lr``, FMN-wb
    ``steps``) and its ladder's cap (once, at the end, when the attacks share it), for the
    attacks the run listed; "" when its white-box stage did not run."""
    if not _ran(run, "whitebox"):
        return ""
    listed = run.params.get("threat_model.whitebox_attacks", "['cw_wb']")
    budgets = {}
    if "cw_wb" in listed and _cw_budget(run):
        budgets["cw_wb"] = f"C&W-wb {_cw_budget(run)}"
    steps = run.params.get("threat_model.fmn_wb.steps")
    if "fmn_wb" in listed and steps is not None:
        budgets["fmn_wb"] = f"FMN-wb {steps} steps"
    shared = run.params.get("threat_model.convergence.max_doublings")
    caps = {
        attack: run.params.get(f"threat_model.convergence.attack_max_doublings.{attack}", shared)
        for attack in budgets
    }

    def ladder(doublings: str | None) -> str:
        return "" if doublings in (None, "0") else f"ladder up to {2 ** int(doublings)}x"

    if len(set(caps.values())) <= 1:
        parts = list(budgets.values())
        cap = ladder(next(iter(caps.values()), None))
        return ", ".join(parts + [cap] if parts and cap else parts)
    return ", ".join(
        f"{text} ({ladder(caps[a])})" if ladder(caps[a]) else text for a, text in budgets.items()
    )


def _proxy(run: RunRecord) -> str:
    """``<proxy model>, <epochs> epochs`` of ``threat_model.blackbox`` ("" when the black-box
    stage did not run)."""
    if not _ran(run, "blackbox"):
        return ""
    model = run.params.get("threat_model.blackbox.proxy_model")
    epochs = run.params.get("threat_model.blackbox.epochs")
    return "" if model is None else model + (f", {epochs} epochs" if epochs else "")


# setting name -> how to read it from a run
SETTINGS: tuple[tuple[str, Callable[[RunRecord], str]], ...] = (
    ("model", lambda run: run.params.get("model.name") or run.tags.get("model", "")),
    ("epochs", _param("trainer.epochs")),
    ("variant", lambda run: run.variant),
    ("num_samples", _param("threat_model.num_samples")),
    ("white-box budget", _whitebox_budget),
    ("black-box proxy", _proxy),
)


@dataclass(frozen=True)
class ColumnInfo:
    dataset: str
    key: str
    label: str
    fingerprint: str
    seeds: tuple[str, ...]
    run_ids: tuple[str, ...]
    settings: dict[str, str]
    statuses: str = ""  # the group's runs per status: "3 FINISHED, 1 FAILED"

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)


def _setting(runs: Sequence[RunRecord], read: Callable[[RunRecord], str]) -> str:
    return " / ".join(dict.fromkeys(v for v in map(read, runs) if v))


def _used_ids(tables: Sequence[Table], dataset: str, key: str) -> set[str]:
    ids: set[str] = set()
    for table in tables:
        if key in table.losses:
            index = table.columns.index(key)
            ids |= {
                i
                for row in table.rows
                if row[0] == dataset
                for i in row[index].run_ids  # type: ignore[union-attr]
            }
    return ids


def _info(column: Column, tables: Sequence[Table]) -> ColumnInfo:
    ids = _used_ids(tables, column.dataset, column.key)
    used = [r for r in column.runs if r.run_id in ids]
    described = used or column.runs
    return ColumnInfo(
        column.dataset,
        column.key,
        column.label,
        column.fingerprint,
        tuple(sorted({r.seed for r in used}, key=seed_order)),
        tuple(r.run_id for r in sorted(used, key=lambda r: (seed_order(r.seed), r.start_time))),
        {name: _setting(described, read) for name, read in SETTINGS},
        ", ".join(f"{n} {s}" for s, n in Counter(r.status for r in column.runs).items()),
    )


def column_infos(layout: Layout, tables: Sequence[Table]) -> list[ColumnInfo]:
    """Per dataset and column (table order): fingerprint, seeds and runs behind its cells,
    settings."""
    return [_info(c, tables) for columns in layout.by_dataset.values() for c in columns]


CSV_FIELDS = (
    "dataset",
    "column",
    "label",
    "fingerprint",
    "n_seeds",
    "seeds",
    "run_ids",
    "group_runs",
    *(name for name, _ in SETTINGS),
)


def info_row(info: ColumnInfo) -> list[str]:
    """The :data:`CSV_FIELDS` of one column (seeds and run ids joined by ``;``)."""
    return [
        info.dataset,
        info.key,
        info.label,
        info.fingerprint,
        str(info.n_seeds),
        ";".join(info.seeds),
        ";".join(info.run_ids),
        info.statuses,
        *(info.settings[name] for name, _ in SETTINGS),
    ]


def write_columns_csv(infos: Sequence[ColumnInfo], path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        writer.writerows(info_row(i) for i in infos)
    return path
