"""The evaluation checklist of the report: per dataset, one row per check of
:mod:`robustctl.evaluation.sanity` (Carlini et al. 2019's checks, Tramer 2022's detector-claim
check), one column per model, each cell the check's result over the column's finished runs:
``failed`` when it failed on any seed (the reason as the cell's footnote, with the seeds it
failed on), ``passed`` when it passed on every seed that could run it, else ``not checked`` with
the reason."""

from __future__ import annotations

from collections.abc import Sequence

from robustctl import metric_keys as keys
from robustctl.reporting.cells import Cell, Layout, Table, as_layout
from robustctl.reporting.collect import RunRecord


def _verdict(check: str, runs: Sequence[RunRecord]) -> Cell:
    """One check over one column's finished runs (module docstring)."""
    results = [(run, keys.sanity_results(run.tags).get(check)) for run in runs]
    results = [(run, value) for run, value in results if value is not None]
    ids = tuple(run.run_id for run, _ in results)
    if not results:
        return Cell(reason="not run", kind="rate")
    failed = [(run, value) for run, value in results if keys.sanity_status(value)[0] == "failed"]
    if failed:
        seeds = ", ".join(run.seed for run, _ in failed)
        reason = f"{failed[0][1]} (seed {seeds} of {len(results)} runs)"
        return Cell(reason=reason, run_ids=ids, kind="rate", key=keys.sanity_tag(check))
    if any(keys.sanity_status(value)[0] == "passed" for _, value in results):
        return Cell(reason="passed", run_ids=ids, kind="rate", key=keys.sanity_tag(check))
    return Cell(reason=results[0][1], run_ids=ids, kind="rate", key=keys.sanity_tag(check))


def checklist_table(records: Sequence[RunRecord] | Layout) -> Table:
    """The checklist (module docstring); no rows when no run logged a check."""
    layout = as_layout(records)
    table = layout.table(
        "checklist",
        "Evaluation checklist (Carlini et al. 2019; Tramer 2022)",
        "check",
        "Each check over a model's finished runs: failed on any seed (the numbers in the "
        "footnote), passed, or not checked (why). A failed check means the numbers beside it "
        "may overstate robustness (gradient masking, an attack weaker than it should be) or a "
        "detector's claim beats every known robust classifier.",
    )
    for dataset, columns in layout.by_dataset.items():
        finished = {c.key: [r for r in c.runs if r.status == "FINISHED"] for c in columns}
        checks: dict[str, None] = {}
        for runs in finished.values():
            for run in runs:
                checks.update(dict.fromkeys(keys.sanity_results(run.tags)))
        for check in checks:
            row: list[str | Cell] = [dataset, check]
            for key in layout.keys:
                row.append(_verdict(check, finished.get(key, [])))
            table.rows.append(row)
    return table
