"""The first evaluation stage of every model: clean accuracy with its confusion matrix, and the
embedding diagnostics of the test split (PDM Table 1 and Figure 2) with the t-SNE plot."""

from __future__ import annotations

from math import nan
from typing import Any

import torch

from robustctl import metric_keys as keys
from robustctl.config.schema import RunConfig
from robustctl.data.base import ImageData
from robustctl.evaluation.clean import evaluate_clean
from robustctl.evaluation.embedding import (
    TSNE_MIN_POINTS,
    dbi_missing_reason,
    embedding_diagnostics,
    tsne_figure,
)
from robustctl.evaluation.figures import plot_confusion
from robustctl.evaluation.result import StageResult
from robustctl.inference import ModelOutputs


def classification_loss(name: str) -> Any:
    """The classification term (ce or rce) a model was trained with: the loss whose input gradient
    ``embed/input_grad_norm`` measures."""
    from robustctl.losses import OPTIONS as LOSS_OPTIONS
    from robustctl.losses import build_loss

    return build_loss(LOSS_OPTIONS.configs()[name])


def clean_stage(
    cfg: RunConfig,
    model: torch.nn.Module,
    data: ImageData,
    classification: str,
    outputs: ModelOutputs | None = None,
) -> StageResult:
    """Clean accuracy + confusion matrix, embedding diagnostics + t-SNE, and ``metrics.json``;
    the test split's logits and embeddings come from ``outputs`` (one pass per evaluation). A
    DBI that is not a number is left out, its reason a note and the ``embed/dbi_reason`` tag."""
    batch = cfg.evaluate.batch_size
    outputs = outputs or ModelOutputs(model, data, batch)
    clean = evaluate_clean(model, data.x_test, data.y_test, batch, outputs.split("test"))
    metrics = clean.metrics()
    out = StageResult(stage=keys.CLEAN_STAGE)
    out.figures["plots/confusion_matrix.png"] = plot_confusion(
        clean.confusion, data.class_names, f"{data.name} test, accuracy {clean.accuracy:.4f}"
    )
    metrics.update(
        embedding_diagnostics(
            model,
            data.x_test,
            data.y_test,
            classification_loss(classification),
            batch,
            embeddings=clean.embeddings,
        )
    )
    missing_dbi = dbi_missing_reason(data.y_test)
    if missing_dbi:
        out.notes[keys.EMBED_DBI] = missing_dbi
        out.tags[keys.EMBED_DBI_REASON_TAG] = missing_dbi
    if len(data.y_test) >= TSNE_MIN_POINTS:
        out.figures["plots/tsne.png"] = tsne_figure(
            clean.embeddings, data.y_test, data.class_names, metrics.get(keys.EMBED_DBI, nan)
        )
    else:
        out.notes["plots/tsne.png"] = f"no t-SNE of {len(data.y_test)} test image(s)"
    out.metrics = metrics
    out.tags[keys.EMBED_GRAD_LOSS_TAG] = classification
    out.documents["metrics.json"] = {
        "metrics": metrics,
        "confusion_matrix": clean.confusion.tolist(),
        "class_names": list(data.class_names),
    }
    return out
