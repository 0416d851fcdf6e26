"""AutoAttack's ensembles (Croce & Hein 2020) as data: each version's members in order, with the
authors' settings (:mod:`robustctl.evaluation.robust_accuracy` runs them). Torch-free, so the
report can name the members without loading torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Member:
    """One attack of an ensemble: ``label`` names it in metric keys, ``method`` is an attack
    option, ``params`` its settings on top of the ensemble's eps and norm."""

    label: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    gradient_free: bool = False


VERSIONS: dict[str, tuple[Member, ...]] = {
    "standard": (
        Member("apgd-ce", "apgd", {"loss": "ce"}),
        Member("apgd-t", "apgd_t", {"n_target_classes": 9}),
        Member("fab-t", "fab_t", {"n_target_classes": 9}),
        Member("square", "square", {"queries": 5000}, gradient_free=True),
    ),
    "plus": (
        Member("apgd-ce", "apgd", {"loss": "ce", "restarts": 5}),
        Member("apgd-dlr", "apgd", {"loss": "dlr", "restarts": 5}),
        Member("fab", "fab", {"restarts": 5}),
        Member("square", "square", {"queries": 5000, "restarts": 5}, gradient_free=True),
        Member("apgd-t", "apgd_t", {"n_target_classes": 9}),
        Member("fab-t", "fab_t", {"n_target_classes": 9}),
    ),
    "rand": (
        Member("apgd-ce", "apgd", {"loss": "ce", "eot": 20}),
        Member("apgd-dlr", "apgd", {"loss": "dlr", "eot": 20}),
    ),
}


def ensemble(
    version: str, overrides: dict[str, dict[str, Any]] | None = None
) -> tuple[Member, ...]:
    """The members of ``version`` with per-member ``overrides`` ({label: {param: value}}) merged
    into their params (reduced budgets: ``{"square": {"queries": 1000}}``)."""
    if version not in VERSIONS:
        raise KeyError(f"unknown ensemble version {version!r}; one of {', '.join(VERSIONS)}")
    overrides = overrides or {}
    unknown = set(overrides) - {m.label for m in VERSIONS[version]}
    if unknown:
        raise KeyError(f"{version} has no member(s) {sorted(unknown)}")
    return tuple(
        Member(m.label, m.method, {**m.params, **overrides.get(m.label, {})}, m.gradient_free)
        for m in VERSIONS[version]
    )
