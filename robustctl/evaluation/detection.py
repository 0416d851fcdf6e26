"""Detection AUC protocol (Pang et al. 2018, as used by PDM section 4.2; docs/method.md section 5).

Pairs. A test sample i enters the evaluation when the model classifies it correctly
(``clean_pred[i] == labels[i]``) and its attack succeeded (``adv_pred[i] != labels[i]``). For the
n such pairs, the positives are the adversarial examples' scores and the negatives the scores of
the same clean samples, so the two groups have equal size n. Every other sample is ignored
(clean errors, failed attacks).

AUC. With s = "adversarial-ness" (for the KDE detector -log KDE_t(z), larger = more adversarial),

    AUC = (1/n^2) * sum_{i, j in pairs} ( [s_adv(i) > s_clean(j)] + 0.5 * [s_adv(i) = s_clean(j)] ),

the ROC-AUC computed by ``sklearn.metrics.roc_auc_score`` with label 1 for adversarial. 1 means
every adversarial example scores above every clean one, 0.5 chance, 0 perfectly reversed.

Interval. ``auc_ci`` is a 95% percentile-bootstrap interval over the pairs (whole pairs resampled,
seeded; :func:`robustctl.evaluation.intervals.bootstrap_auc_interval`).

Too few pairs. With fewer than ``min_pairs`` pairs (default 10) no number is reported: the result
has ``auc=None`` and ``reason`` says why; the pair count is always reported.

Metric names (docs/metrics.md): :meth:`DetectionResult.metrics` with a prefix such as
``graybox/fgsm-0.05`` gives ``<prefix>/pairs`` and, when there is an AUC, ``<prefix>/auc`` with
``<prefix>/auc_ci_low`` and ``<prefix>/auc_ci_high``.

Example:
    >>> s_clean = det.score(z_clean, clean_pred); s_adv = det.score(z_adv, adv_pred)
    >>> res = detection_auc(s_clean, s_adv, labels, clean_pred, adv_pred)
    >>> res.auc, res.n_pairs, res.reason
    >>> fig = roc_figure({"fgsm-0.05": res}); fig.savefig("roc.png")

No torch or MLflow import: inputs may be tensors (any device) or array-likes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from robustctl import metric_keys as keys
from robustctl.evaluation.intervals import bootstrap_auc_interval

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MIN_PAIRS", "DetectionResult", "detection_auc", "pair_mask", "roc_figure"]

MIN_PAIRS = 10


@dataclass(frozen=True, eq=False)
class DetectionResult:
    """Outcome of :func:`detection_auc`.

    auc: ROC-AUC in [0, 1], or None when there were too few pairs (then ``reason`` says why).
    n_pairs: number of (clean, adversarial) pairs used; each group has this many scores.
    n_samples: test samples given; n_correct: of those, classified correctly when clean.
    fpr, tpr: the ROC curve (``sklearn.metrics.roc_curve``), empty when ``auc`` is None.
    auc_ci: the 95% bootstrap interval of the AUC over pairs, (nan, nan) without an AUC.
    """

    auc: float | None
    n_pairs: int
    reason: str | None = None
    n_samples: int = 0
    n_correct: int = 0
    fpr: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    tpr: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    auc_ci: tuple[float, float] = (float("nan"), float("nan"))

    def metrics(self, prefix: str) -> dict[str, float]:
        """``{prefix}/pairs`` always, ``{prefix}/auc`` and its interval only when an AUC was
        computed."""
        out = {f"{prefix}/{keys.PAIRS}": float(self.n_pairs)}
        if self.auc is not None:
            auc = f"{prefix}/{keys.AUC}"
            out[auc] = self.auc
            out[keys.ci_low(auc)], out[keys.ci_high(auc)] = self.auc_ci
        return out


def _flat(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def pair_mask(labels: Any, clean_pred: Any, adv_pred: Any) -> np.ndarray:
    """Boolean [N]: clean sample classified correctly AND its adversarial version misclassified."""
    y, pc, pa = (
        _flat(labels, "labels"),
        _flat(clean_pred, "clean_pred"),
        _flat(adv_pred, "adv_pred"),
    )
    if not (y.shape == pc.shape == pa.shape):
        raise ValueError(
            f"labels, clean_pred and adv_pred differ in length: {len(y)}, {len(pc)}, {len(pa)}"
        )
    return (pc == y) & (pa != y)


def detection_auc(
    clean_scores: Any,
    adv_scores: Any,
    labels: Any,
    clean_pred: Any,
    adv_pred: Any,
    *,
    min_pairs: int = MIN_PAIRS,
    seed: int = 0,
) -> DetectionResult:
    """ROC-AUC of adversarial vs. clean scores over the pairs of :func:`pair_mask`.

    Args:
        clean_scores: [N] score of each clean test sample (larger = more adversarial), computed
            under its predicted class.
        adv_scores: [N] score of the adversarial version of the same sample, under the class
            predicted for it.
        labels: [N] true labels; clean_pred, adv_pred: [N] predicted classes, clean and adversarial.
        min_pairs: fewest pairs for which an AUC is reported (>= 1).
        seed: seeds the bootstrap of the AUC's interval.
    Raises:
        ValueError: lengths differ, or a score of a pair is NaN or infinite.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    if int(min_pairs) < 1:
        raise ValueError(f"min_pairs must be >= 1, got {min_pairs}")
    clean = _flat(clean_scores, "clean_scores").astype(np.float64)
    adv = _flat(adv_scores, "adv_scores").astype(np.float64)
    mask = pair_mask(labels, clean_pred, adv_pred)
    n = mask.shape[0]
    if clean.shape[0] != n or adv.shape[0] != n:
        raise ValueError(
            f"clean_scores ({clean.shape[0]}), adv_scores ({adv.shape[0]}) and labels ({n}) "
            "differ in length"
        )
    n_correct = int((_flat(clean_pred, "clean_pred") == _flat(labels, "labels")).sum())
    n_pairs = int(mask.sum())
    if n_pairs < min_pairs:
        reason = (
            f"too few pairs for an AUC: {n_pairs} < {min_pairs} ({n_correct} of {n} clean samples "
            f"classified correctly, {n_pairs} of them attacked successfully)"
        )
        return DetectionResult(None, n_pairs, reason, n, n_correct)
    neg, pos = clean[mask], adv[mask]
    if not (np.isfinite(neg).all() and np.isfinite(pos).all()):
        raise ValueError("detection scores of the pairs contain NaN or inf")
    y_true = np.concatenate([np.zeros(n_pairs), np.ones(n_pairs)])
    y_score = np.concatenate([neg, pos])
    fpr, tpr, _ = roc_curve(y_true, y_score)
    return DetectionResult(
        float(roc_auc_score(y_true, y_score)),
        n_pairs,
        None,
        n,
        n_correct,
        fpr,
        tpr,
        bootstrap_auc_interval(neg, pos, seed=seed),
    )


def roc_figure(results: Mapping[str, DetectionResult], title: str = "Detection ROC") -> Figure:
    """A matplotlib Figure (Agg canvas, no pyplot state) with one ROC curve per attack.

    The legend gives each attack's AUC and pair count; an attack without an AUC is listed with
    its pair count and no curve. Save it with ``fig.savefig(path)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1, label="chance (AUC 0.5)")
    for name, res in results.items():
        if res.auc is None:
            ax.plot([], [], linestyle="none", label=f"{name}: no AUC ({res.n_pairs} pairs)")
        else:
            ax.plot(
                res.fpr,
                res.tpr,
                linewidth=1.5,
                label=f"{name}: AUC {res.auc:.3f} ({res.n_pairs} pairs)",
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false-positive rate (clean flagged)")
    ax.set_ylabel("true-positive rate (adversarial flagged)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
