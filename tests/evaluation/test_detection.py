"""The detection AUC protocol (docs/method.md sections 5-6) on constructed scores with known
answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from robustctl.evaluation.detection import (
    MIN_PAIRS,
    DetectionResult,
    detection_auc,
    pair_mask,
    roc_figure,
)


def all_pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels, clean predictions (all correct), adversarial predictions (all wrong)."""
    y = np.arange(n) % 3
    return y, y.copy(), (y + 1) % 3


def mann_whitney(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(pos > neg) + 0.5 P(pos = neg) over all pairs, by brute force."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_perfectly_separated_and_reversed() -> None:
    y, pc, pa = all_pairs(12)
    clean, adv = np.linspace(0, 1, 12), np.linspace(2, 3, 12)
    res = detection_auc(clean, adv, y, pc, pa)
    assert res.auc == 1.0 and res.n_pairs == 12 and res.reason is None
    assert detection_auc(adv, clean, y, pc, pa).auc == 0.0
    assert detection_auc(clean, clean, y, pc, pa).auc == pytest.approx(
        0.5
    )  # identical groups: chance


def test_hand_computed_intermediate_case() -> None:
    y, pc, pa = all_pairs(4)
    clean = np.array([1.0, 2.0, 3.0, 4.0])
    adv = np.array([2.5, 3.5, 0.5, 2.0])
    # adversarial scores above clean ones: 2.5 -> 2, 3.5 -> 3, 0.5 -> 0, 2.0 -> 1 + a tie (0.5)
    res = detection_auc(clean, adv, y, pc, pa, min_pairs=4)
    assert res.auc == pytest.approx(6.5 / 16)
    assert res.n_pairs == 4


def test_matches_the_mann_whitney_statistic_on_random_scores() -> None:
    rng = np.random.default_rng(0)
    y, pc, pa = all_pairs(200)
    clean, adv = rng.normal(size=200).round(1), rng.normal(0.7, 1.0, size=200).round(1)  # with ties
    res = detection_auc(
        torch.tensor(clean), torch.tensor(adv), torch.tensor(y), torch.tensor(pc), torch.tensor(pa)
    )
    assert res.auc == pytest.approx(mann_whitney(clean, adv), abs=1e-12)
    assert 0.6 < res.auc < 0.8
    assert res.fpr[0] == 0 and res.tpr[-1] == 1 and len(res.fpr) == len(res.tpr)


def test_pair_selection_rule() -> None:
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1])
    pc = y.copy()
    pc[[0, 1]] = [1, 2]  # clean misclassified -> excluded even though the attack "flips" them
    pa = (y + 1) % 3
    pa[[2, 3]] = y[[2, 3]]  # attack failed (still correct) -> excluded
    expected = np.ones(14, dtype=bool)
    expected[[0, 1, 2, 3]] = False
    np.testing.assert_array_equal(pair_mask(y, pc, pa), expected)
    # adversarial examples score above clean ones, except on the excluded rows
    clean = np.arange(14, dtype=float)
    adv = clean + 100.0
    adv[[0, 1, 2, 3]] = -100.0
    clean[[0, 1]] = np.nan  # unused scores may be anything
    res = detection_auc(clean, adv, y, pc, pa)
    assert res.n_pairs == 10 and res.n_samples == 14 and res.n_correct == 12
    assert res.auc == 1.0  # would be lower if the four excluded rows counted
    # perfectly separated pairs: every bootstrap resample has AUC 1 too
    assert res.metrics("graybox/fgsm-0.05") == {
        "graybox/fgsm-0.05/pairs": 10.0,
        "graybox/fgsm-0.05/auc": 1.0,
        "graybox/fgsm-0.05/auc_ci_low": 1.0,
        "graybox/fgsm-0.05/auc_ci_high": 1.0,
    }


def test_too_few_pairs_gives_a_reason_instead_of_a_number() -> None:
    y, pc, pa = all_pairs(20)
    pa[MIN_PAIRS - 1 :] = y[MIN_PAIRS - 1 :]  # only MIN_PAIRS - 1 attacks succeed
    res = detection_auc(np.zeros(20), np.ones(20), y, pc, pa)
    assert res.auc is None and res.n_pairs == MIN_PAIRS - 1
    assert "too few pairs" in res.reason and f"{MIN_PAIRS - 1} < {MIN_PAIRS}" in res.reason
    assert "20 clean samples" in res.reason
    assert res.metrics("whitebox/cw_wb") == {"whitebox/cw_wb/pairs": float(MIN_PAIRS - 1)}
    assert detection_auc(np.zeros(20), np.ones(20), y, pc, pa, min_pairs=MIN_PAIRS - 1).auc == 1.0
    none = detection_auc(
        np.zeros(3), np.ones(3), [0, 1, 2], [1, 2, 0], [1, 2, 0]
    )  # nothing correct
    assert none.auc is None and none.n_pairs == 0 and "0 of 3" in none.reason


def test_invalid_inputs() -> None:
    y, pc, pa = all_pairs(12)
    with pytest.raises(ValueError, match="length"):
        detection_auc(np.zeros(11), np.ones(12), y, pc, pa)
    with pytest.raises(ValueError, match="NaN"):
        detection_auc(np.full(12, np.nan), np.ones(12), y, pc, pa)
    with pytest.raises(ValueError, match="min_pairs"):
        detection_auc(np.zeros(12), np.ones(12), y, pc, pa, min_pairs=0)


def test_roc_figure(tmp_path) -> None:
    y, pc, pa = all_pairs(30)
    rng = np.random.default_rng(1)
    results = {
        "fgsm-0.05": detection_auc(rng.normal(size=30), rng.normal(1, 1, size=30), y, pc, pa),
        "cw": detection_auc(np.zeros(30), np.ones(30), y, pc, pa),
        "jsma": DetectionResult(None, 3, "too few pairs"),
    }
    fig = roc_figure(results, title="gray-box")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("cw: AUC 1.000 (30 pairs)") for t in labels)
    assert any(t.startswith("jsma: no AUC (3 pairs)") for t in labels)
    assert (
        len(ax.lines) == 4 and ax.get_title() == "gray-box"
    )  # chance + 2 curves + 1 legend-only entry
    fig.savefig(tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
