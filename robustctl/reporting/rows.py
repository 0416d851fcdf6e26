"""The report's metric rows shared by its tables: each metric's label, format and the tags that
explain a gap or qualify a value (:class:`~robustctl.reporting.cells.MetricSpec`)."""

from __future__ import annotations

from robustctl import metric_keys as keys
from robustctl.reporting.cells import MetricSpec


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


BB_AUC = MetricSpec(
    "detection AUC",
    keys.blackbox(keys.AUC),
    "auc",
    reason_tag=keys.auc_reason_tag(keys.BLACKBOX, keys.CW_WB),
)
BB_TRANSFER = MetricSpec("transfer rate", keys.BLACKBOX_TRANSFER_RATE, "rate")
BB_PROXY_SUCCESS = MetricSpec("proxy success rate", keys.BLACKBOX_PROXY_SUCCESS_RATE, "rate")
