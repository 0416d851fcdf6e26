"""PDM's white-box distortion relative to CE and RCE, paired by seed (the paper's headline claim:
PDM needs 1.86x CE's and 1.56x RCE's C&W-wb distortion on MNIST).

Per dataset, PDM column and metric ``K`` (``whitebox/cw_wb/distortion``,
``whitebox/cw_wb/median_distortion``, ``whitebox/fmn_wb/median_distortion``: the minimum-norm
attack's median minimal detector-aware distortion), against the dataset's first CE and first RCE
column *attacked with the same threat-model settings* (every ``threat_model.*`` param both
logged equal, so a
sweep over the white-box starts and targets gives one ratio row per (start, target) pair, each
against its own baselines; the rows name the settings that differ between the PDM columns; a PDM
column with no such baseline gets the reason ``no <loss> run with these threat_model settings``):
each column's runs are picked as in Table 3 (latest FINISHED run per seed that logged a
``whitebox/`` metric, of C&W-wb, FMN-wb or both); for every seed ``s`` both columns have, the
ratio ``r_s = K(PDM, s) / K(base, s)``; the cell is the mean of the ``r_s`` with the 95% t-interval
across seed pairs and their number (:func:`robustctl.reporting.uncertainty.ratio_estimate`). One
pair gives the ratio alone (footnote ``1 seed, no interval``). Pairs where either value is NaN (a
median breach distortion beyond the budget) are left out.

The reference is the paper's ratio of its Table 3 distortions (:mod:`.reference`), for the mean
distortion only (the paper has no median).
"""

from __future__ import annotations

from robustctl import metric_keys as keys
from robustctl.reporting.cells import Cell, Layout, Table, keep_row
from robustctl.reporting.groups import NOT_RUN, Column, Pick, pick_runs
from robustctl.reporting.reference import reference
from robustctl.reporting.uncertainty import paired_ratios, ratio_estimate

__all__ = ["BASES", "RATIO_METRICS", "ONE_PAIR_NOTE", "ratio_table"]

NUMERATOR = "pdm"
BASES: tuple[tuple[str, str], ...] = (("ce", "PDM / CE"), ("rce", "PDM / RCE"))
RATIO_METRICS: tuple[tuple[str, str], ...] = (
    ("mean distortion", keys.whitebox("distortion")),
    ("median breach distortion", keys.whitebox(keys.MEDIAN_DISTORTION)),
    (
        "median minimal distortion (FMN-wb)",
        keys.attack_key(keys.WHITEBOX, keys.FMN_WB, keys.MEDIAN_DISTORTION),
    ),
)
ONE_PAIR_NOTE = "1 seed, no interval"
_PREFIX = keys.WHITEBOX + "/"  # runs of any white-box attack (C&W-wb, FMN-wb or both)


def _per_seed(pick: Pick, key: str) -> dict[str, float]:
    return {r.seed: r.metrics[key] for r in pick.runs if key in r.metrics}


def _paper_ratio(dataset: str, base: str, key: str) -> float | None:
    num, den = reference(dataset, NUMERATOR, key), reference(dataset, base, key)
    return None if num is None or not den else num / den


def _ratio_cell(
    dataset: str, num: Pick, base_column: Column | None | str, base: str, key: str
) -> Cell:
    fields = {"reference": _paper_ratio(dataset, base, key), "key": key, "kind": "ratio"}
    if base_column is None or isinstance(base_column, str):
        return Cell(None, reason=base_column or NOT_RUN, **fields)  # type: ignore[arg-type]
    den = pick_runs(base_column.runs, _PREFIX, keys.WHITEBOX)
    for pick in (num, den):
        if not pick.runs:
            return Cell(None, reason=pick.reason, **fields)  # type: ignore[arg-type]
    top, bottom = _per_seed(num, key), _per_seed(den, key)
    if not top or not bottom:
        return Cell(None, reason="not logged", **fields)  # type: ignore[arg-type]
    ratios = paired_ratios(top, bottom)
    estimate = ratio_estimate([r for _, r in ratios])
    if estimate is None:
        reason = "no finite seed pair" if set(top) & set(bottom) else "no common seed"
        return Cell(None, reason=reason, **fields)  # type: ignore[arg-type]
    seeds = {s for s, _ in ratios}
    run_ids = tuple(r.run_id for p in (num, den) for r in p.runs if r.seed in seeds)
    return Cell.of(
        estimate,
        notes=(ONE_PAIR_NOTE,) if estimate.n_seeds == 1 else (),
        run_ids=run_ids,
        count_unit="seed pairs",
        **fields,
    )


THREAT_PREFIX = "threat_model."


def threat_settings(column: Column) -> dict[str, str]:
    """The ``threat_model.*`` params of the column's newest run (its attack settings)."""
    params = column.runs[0].params if column.runs else {}
    return {k: v for k, v in params.items() if k.startswith(THREAT_PREFIX)}


def agree(a: dict[str, str], b: dict[str, str]) -> bool:
    """No setting both name differs (a run that did not log one agrees with any value)."""
    return all(a[k] == b[k] for k in a.keys() & b.keys())


def base_column(columns: list[Column], loss: str, pdm: Column | None) -> Column | None | str:
    """The first ``loss`` column attacked with ``pdm``'s threat-model settings (the first
    ``loss`` column when ``pdm`` is None); a reason when ``loss`` ran but never so."""
    mine = [c for c in columns if c.loss == loss]
    if pdm is None or not mine:
        return mine[0] if mine else None
    wanted = threat_settings(pdm)
    same = [c for c in mine if agree(threat_settings(c), wanted)]
    return same[0] if same else f"no {loss} run with these threat_model settings"


def settings_label(pdm: Column, pdms: list[Column]) -> str:
    """``start=other_class, toward=every_class``: the threat-model settings in which ``pdm``
    differs from the other PDM columns ("" when none differs)."""
    mine = threat_settings(pdm)
    differing = sorted(
        k for k in mine if any(threat_settings(o).get(k) != mine[k] for o in pdms if o is not pdm)
    )
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={mine[k]}" for k in differing)


def ratio_table(layout: Layout) -> Table:
    """The white-box distortion ratios PDM / CE and PDM / RCE per dataset (rules: module doc)."""
    table = Table(
        "whitebox_ratio",
        "PDM's white-box distortion relative to CE and RCE",
        ["dataset", "metric", *(f"{NUMERATOR}/{b}" for b, _ in BASES)],
        caption="Per-seed ratio of PDM's white-box normalized distortion to CE's and RCE's "
        "(C&W-wb's mean and median breach distortion, FMN-wb's median minimal distortion; "
        "Table 3's runs, paired by trainer.seed): mean of the per-seed ratios [95% t-interval "
        "across seed pairs], and the number of pairs; one pair: the ratio alone. Values in "
        "parentheses: the paper's Table 3 ratio (mean distortion only).",
        headers={f"{NUMERATOR}/{b}": label for b, label in BASES},
    )
    for dataset, columns in layout.by_dataset.items():
        pdms: list[Column | None] = [c for c in columns if c.loss == NUMERATOR] or [None]
        for pdm in pdms:
            num = pick_runs(pdm.runs, _PREFIX, keys.WHITEBOX) if pdm else Pick(reason=NOT_RUN)
            bases = {b: base_column(columns, b, pdm) for b, _ in BASES}
            settings = settings_label(pdm, pdms) if pdm is not None else ""  # type: ignore[arg-type]
            if settings:
                suffix = f", {settings}"
            else:
                suffix = f", {pdm.label}" if pdm is not None and pdm.key != NUMERATOR else ""
            for label, key in RATIO_METRICS:
                row: list[str | Cell] = [dataset, label + suffix]
                row += [_ratio_cell(dataset, num, bases[b], b, key) for b, _ in BASES]
                if keep_row(row, dataset):
                    table.rows.append(row)
    return table
