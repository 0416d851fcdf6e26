"""Robust accuracy under an ensemble of attacks, counted worst case per point (AutoAttack's
protocol, Croce & Hein 2020).

A point (test image x with label y) is **robust** when the model classifies it correctly and every
attack of the ensemble fails on it within the budget (eps in the ``norm``); robust accuracy is the
share of robust points among all attacked points (misclassified clean points count as broken),
never a mean over attacks. The attacks run in sequence, each only on the points still robust, so
a later attack costs only what remains; the first attack that breaks a point is recorded.

Versions (:data:`VERSIONS`; the authors' settings, 100 iterations per gradient attack):

- ``standard``: APGD-CE (1 run), APGD-T (targeted DLR, 9 target classes), FAB-T (9 targets),
  Square (5000 queries);
- ``plus``: APGD-CE and APGD-DLR (5 restarts each), FAB (untargeted, 5 restarts), Square (5000
  queries, 5 restarts), APGD-T and FAB-T (9 targets each);
- ``rand`` (randomized defenses): APGD-CE and APGD-DLR with the gradient averaged over 20 draws
  of the model (expectation over transformations), 1 run each.

Every attack runs through the model's prediction view (RCE and PDM: negated logits). Cost per
member: ``passes`` (example forward-and-backward passes) and ``queries`` (Square's model
evaluations), divided by the points it attacked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustctl import metric_keys as keys
from robustctl.attacks import ATTACKS
from robustctl.attacks.base import PROJECTIONS
from robustctl.config.validation import require
from robustctl.evaluation.attack_runner import progress_bar, rate_metrics, run_attack
from robustctl.evaluation.ensembles import VERSIONS, Member, ensemble
from robustctl.inference import predict_labels

ROBUST, CLEAN_WRONG = -1, -2  # broken_by codes besides a member's index
__all__ = ["VERSIONS", "EnsembleConfig", "EnsembleResult", "Member", "RejectionConfig", "ensemble"]


TOWARD = ("runner_up", "every_class")


@dataclass
class RejectionConfig:
    """``threat_model.robust.rejection``: robust accuracy with rejection, when the run has a
    detector (docs/method.md section 8.6): the threshold at false-positive rate ``fpr`` on the
    clean validation images, and the adaptive attack APGD-wb's ``steps``, ``restarts`` and
    ``toward`` (``runner_up`` | ``every_class``)."""

    fpr: float = 0.05
    steps: int = 100
    restarts: int = 1
    toward: str = "runner_up"

    def __post_init__(self) -> None:
        require(
            0 < self.fpr < 1,
            "threat_model.robust.rejection.fpr",
            f"must be in (0, 1), got {self.fpr}",
        )
        for key in ("steps", "restarts"):
            value = getattr(self, key)
            require(
                value >= 1, f"threat_model.robust.rejection.{key}", f"must be >= 1, got {value}"
            )
        require(
            self.toward in TOWARD,
            "threat_model.robust.rejection.toward",
            f"must be one of {', '.join(TOWARD)}; got {self.toward!r}",
        )


@dataclass
class EnsembleConfig:
    """``threat_model.robust``: the ensemble ``version`` at budget ``eps`` in the ``norm``, with
    per-member overrides ``members`` ({label: {param: value}}, e.g. a smaller Square budget), and
    with a detector the ``rejection`` settings."""

    version: str = "standard"
    eps: float = 0.3  # MNIST's Linf budget; CIFAR-10: 8/255 (linf), 0.5 (l2)
    norm: str = "linf"
    members: dict[str, Any] = field(default_factory=dict)  # {label: {param: value}}
    rejection: RejectionConfig = field(default_factory=RejectionConfig)

    def __post_init__(self) -> None:
        require(
            self.version in VERSIONS,
            "threat_model.robust.version",
            f"must be one of {', '.join(VERSIONS)}; got {self.version!r}",
        )
        require(
            self.norm in PROJECTIONS,
            "threat_model.robust.norm",
            f"must be one of {', '.join(PROJECTIONS)}; got {self.norm!r}",
        )
        require(self.eps > 0, "threat_model.robust.eps", f"must be > 0, got {self.eps}")
        labels = [m.label for m in VERSIONS[self.version]]
        unknown = sorted(set(self.members) - set(labels))
        require(
            not unknown,
            "threat_model.robust.members",
            f"{self.version} has no member(s) {unknown}; its members: {', '.join(labels)}",
        )
        for label, params in self.members.items():
            member = next(m for m in VERSIONS[self.version] if m.label == label)
            ATTACKS[member.method].config_type(**{**member.params, **dict(params)})

    def ensemble(self) -> tuple[Member, ...]:
        return ensemble(self.version, {k: dict(v) for k, v in self.members.items()})


@dataclass
class EnsembleResult:
    """What :func:`run_ensemble` measured over N points (tensors on the CPU)."""

    members: tuple[Member, ...]
    labels: Tensor  # [N]
    clean_pred: Tensor  # [N]
    broken_by: Tensor  # [N] long: a member's index, ROBUST, or CLEAN_WRONG
    x_adv: Tensor  # [N, ...]: the breaking example, else the clean image
    attacked: list[int]  # points each member attacked
    passes: list[int]
    queries: list[int]
    seconds: list[float]

    @property
    def robust(self) -> Tensor:
        return self.broken_by == ROBUST

    def robust_after(self, i: int) -> int:
        """Points still robust after members 0..i ran."""
        return int(((self.broken_by == ROBUST) | (self.broken_by > i)).sum())

    def broken(self, i: int) -> int:
        return int((self.broken_by == i).sum())

    def metrics(self, stage: str = keys.ROBUST) -> dict[str, float]:
        """Clean and robust accuracy with Wilson intervals (``<stage>/ensemble/...``), and per
        member the robust accuracy after it, the points it broke first, its passes and queries
        per attacked point and its seconds."""
        n = len(self.labels)
        every = torch.ones(n, dtype=torch.bool)

        def key(attack: str, metric: str) -> str:
            return keys.attack_key(stage, attack, metric)

        out = rate_metrics(
            key(keys.ENSEMBLE, keys.CLEAN_ACCURACY_METRIC), self.clean_pred == self.labels, every
        )
        out.update(rate_metrics(key(keys.ENSEMBLE, keys.ROBUST_ACCURACY), self.robust, every))
        out[key(keys.ENSEMBLE, keys.POINTS)] = float(n)
        for i, m in enumerate(self.members):
            out[key(m.label, keys.ROBUST_ACCURACY)] = (
                self.robust_after(i) / n if n else float("nan")
            )
            out[key(m.label, keys.BROKEN)] = float(self.broken(i))
            attacked = max(self.attacked[i], 1)
            out[key(m.label, keys.PASSES_PER_POINT)] = self.passes[i] / attacked
            out[key(m.label, keys.QUERIES_PER_POINT)] = self.queries[i] / attacked
            out[key(m.label, keys.SECONDS)] = self.seconds[i]
        return out


def run_ensemble(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    members: tuple[Member, ...],
    eps: float,
    norm: str,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> EnsembleResult:
    """Run ``members`` in order on the points still robust (worst case per point)."""
    clean_pred = predict_labels(model, x, batch_size).cpu()
    y_cpu = y.cpu()
    broken_by = torch.where(clean_pred == y_cpu, ROBUST, CLEAN_WRONG)
    x_adv = x.cpu().clone()
    attacked, passes, queries, seconds = [], [], [], []
    with progress_bar(progress) as bar:
        for i, member in enumerate(members):
            todo = (broken_by == ROBUST).nonzero().squeeze(1)
            attack = ATTACKS[member.method](
                model, eps=eps, norm=norm, seed=seed, name=member.label, **member.params
            )
            attacked.append(int(todo.numel()))
            if todo.numel() == 0:
                passes.append(0)
                queries.append(0)
                seconds.append(0.0)
                continue
            outcome = run_attack(attack, x[todo], y[todo], batch_size, bar, clean_pred[todo])
            hit = outcome.adv_pred != y_cpu[todo]
            broken_by[todo[hit]] = i
            x_adv[todo[hit]] = outcome.x_adv[hit]
            passes.append(int(attack.passes))
            queries.append(int(getattr(attack, "queries_used", 0)))
            seconds.append(outcome.seconds)
    return EnsembleResult(
        members, y_cpu, clean_pred, broken_by, x_adv, attacked, passes, queries, seconds
    )
