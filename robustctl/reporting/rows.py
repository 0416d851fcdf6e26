"""The report's metric rows: each metric's label, format, the tags that explain a gap or qualify a
value, and the table it is placed in (:class:`~robustctl.reporting.cells.MetricSpec`), declared
once here. A table of fixed rows (Tables 1, 3 and 4) shows :func:`placed_in` its name, in the
order declared, so a new report metric is its key (``metric_keys``), the code that logs it, and
one declaration here."""

from __future__ import annotations

from robustctl import metric_keys as keys
from robustctl.reporting.cells import MetricSpec


def _grad_loss(tag: str) -> str:
    return f"differentiates {tag.upper()}"


CLEAN_ACCURACY = MetricSpec("clean accuracy (%)", keys.CLEAN_ACCURACY, "percent", table="table1")
DBI = MetricSpec(
    "DBI (embeddings)", keys.EMBED_DBI, "dbi", reason_tag=keys.EMBED_DBI_REASON_TAG, table="table1"
)
GRAD_TRAIN = MetricSpec(
    "input-gradient norm (training loss)",
    keys.EMBED_INPUT_GRAD_NORM,
    "grad",
    note_tag=keys.EMBED_GRAD_LOSS_TAG,
    note_text=_grad_loss,
    table="table1",
)
GRAD_CE = MetricSpec(
    "input-gradient norm (CE)", keys.EMBED_INPUT_GRAD_NORM_CE, "grad", table="table1"
)


WB_NOTE = keys.note_tag(keys.WHITEBOX, keys.CW_WB)
WB_DISTORTION = MetricSpec(
    "distortion", keys.whitebox("distortion"), "distortion", note_tag=WB_NOTE, table="table3"
)
WB_MEDIAN = MetricSpec(
    "median breach distortion",
    keys.whitebox(keys.MEDIAN_DISTORTION),
    "breach",
    note_tag=WB_NOTE,
    table="table3",
)
WB_AUC = MetricSpec(
    "detection AUC",
    keys.whitebox(keys.AUC),
    "auc",
    reason_tag=WB_NOTE,
    note_tag=WB_NOTE,
    table="table3",
)
WB_SUCCESS = MetricSpec("success rate", keys.whitebox(keys.SUCCESS_RATE), "rate", table="table3")
FMN_NOTE = keys.note_tag(keys.WHITEBOX, keys.FMN_WB)
FMN_MEDIAN = MetricSpec(
    "median minimal distortion (FMN-wb)",
    keys.attack_key(keys.WHITEBOX, keys.FMN_WB, keys.MEDIAN_DISTORTION),
    "breach",
    note_tag=FMN_NOTE,
    table="table3",
)


BB_AUC = MetricSpec(
    "detection AUC",
    keys.blackbox(keys.AUC),
    "auc",
    reason_tag=keys.auc_reason_tag(keys.BLACKBOX, keys.CW_WB),
    table="table4",
)
BB_TRANSFER = MetricSpec("transfer rate", keys.BLACKBOX_TRANSFER_RATE, "rate", table="table4")
BB_PROXY_SUCCESS = MetricSpec(
    "proxy success rate", keys.BLACKBOX_PROXY_SUCCESS_RATE, "rate", table="table4"
)


def _query(attack: str, label: str, metric: str, kind: str) -> MetricSpec:
    return MetricSpec(
        f"{attack}: {label}",
        keys.attack_key(keys.BLACKBOX, attack, metric),
        kind,
        reason_tag=keys.auc_reason_tag(keys.BLACKBOX, attack) if metric == keys.AUC else None,
        table="table4q",
    )


QUERY_SQUARE_SUCCESS = _query("square", "success rate", keys.SUCCESS_RATE, "rate")
QUERY_SQUARE_QUERIES = _query("square", "queries per success", keys.QUERIES_PER_SUCCESS, "queries")
QUERY_SQUARE_REJECTED = _query("square", "rejected queries", keys.REJECTED_QUERY_RATE, "rate")
QUERY_SQUARE_AUC = _query("square", "detection AUC", keys.AUC, "auc")
QUERY_HSJ_SUCCESS = _query("hsj", "success rate", keys.SUCCESS_RATE, "rate")
QUERY_HSJ_MEDIAN = _query("hsj", "median distortion", keys.MEDIAN_DISTORTION, "distortion")
QUERY_HSJ_QUERIES = _query("hsj", "queries per success", keys.QUERIES_PER_SUCCESS, "queries")
QUERY_HSJ_REJECTED = _query("hsj", "rejected queries", keys.REJECTED_QUERY_RATE, "rate")
QUERY_HSJ_AUC = _query("hsj", "detection AUC", keys.AUC, "auc")


def placed_in(table: str) -> list[MetricSpec]:
    """The rows declared in this module for ``table``, in the order declared."""
    return [v for v in globals().values() if isinstance(v, MetricSpec) and v.table == table]
