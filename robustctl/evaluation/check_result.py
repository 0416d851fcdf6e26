"""The result of one evaluation check (a sanity check of :mod:`robustctl.evaluation.sanity`, the
detector-claim check of :mod:`robustctl.evaluation.detector_claim`): passed, failed with the
numbers that failed it, or not checked with the reason."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from robustctl import metric_keys as keys

PASSED, FAILED, NOT_CHECKED = "passed", "failed", "not checked"


@dataclass(frozen=True)
class SanityCheck:
    name: str
    status: str  # PASSED, FAILED or NOT_CHECKED
    detail: str = ""
    meaning: str = "possible gradient masking"  # what a failure says, in the run's notes

    @property
    def tag(self) -> str:
        """The run tag's value: ``passed``, ``failed: <detail>`` or ``not checked: <detail>``."""
        return self.status if self.status == PASSED else f"{self.status}: {self.detail}"


def interval(metrics: Mapping[str, float], key: str) -> tuple[float, float]:
    """The 95% interval logged beside ``key`` (the value itself where none was)."""
    value = metrics[key]
    return metrics.get(keys.ci_low(key), value), metrics.get(keys.ci_high(key), value)
