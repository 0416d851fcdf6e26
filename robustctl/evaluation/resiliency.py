"""Resiliency curves (PDM Figure 3): accuracy under a bounded attack as its budget grows.

``resiliency/<attack>/eps_<eps>`` = fraction of (x, y) still classified correctly after
``attack`` with budget eps (all examples, not only the clean-correct ones: at eps = 0 it is the
clean accuracy of the attacked subset).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from robustctl import metric_keys as keys
from robustctl.attacks import build
from robustctl.evaluation.attack_runner import progress_bar, run_attack
from robustctl.evaluation.figures import pyplot
from robustctl.inference import predict_labels

RESILIENCY_EPS = (0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2)  # PDM Figure 3


def resiliency_curve(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: str = "fgsm",
    eps_list: Sequence[float] = RESILIENCY_EPS,
    batch_size: int = 256,
    progress: bool = True,
    **params: Any,
) -> dict[str, float]:
    """Accuracy under ``attack`` (fgsm | bim, or any bounded option) for each eps, keyed
    ``resiliency/<attack>/eps_<eps>``."""
    out: dict[str, float] = {}
    clean_pred = predict_labels(model, x, batch_size)
    with progress_bar(progress) as bar:
        for eps in eps_list:
            atk = build(attack, model, eps=float(eps), **params)
            atk.name = f"{attack}-{eps:g}"
            outcome = run_attack(atk, x, y, batch_size, bar, clean_pred)
            out[keys.resiliency(attack, eps)] = float(
                (outcome.adv_pred == outcome.labels).float().mean()
            )
    return out


def resiliency_figure(metrics: Mapping[str, float], title: str = "resiliency") -> Any:
    """Accuracy vs eps, one line per attack found in ``resiliency/<attack>/eps_<eps>`` keys."""
    plt = pyplot()
    curves: dict[str, list[tuple[float, float]]] = {}
    for key, value in metrics.items():
        parsed = keys.parse_resiliency(key)
        if parsed is not None:
            curves.setdefault(parsed[0], []).append((parsed[1], value))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for attack, points in sorted(curves.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=attack)
    ax.set_xlabel("eps (Linf, pixel units)")
    ax.set_ylabel("accuracy under attack")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if curves:
        ax.legend()
    fig.tight_layout()
    return fig
