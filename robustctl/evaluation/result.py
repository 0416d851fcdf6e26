"""What an evaluation stage hands back to be logged: numbers, figures, tags and notes, in one value.

Stages (clean evaluation, each threat model) compute and return a :class:`StageResult`; they
never talk to MLflow. One caller logs it (:meth:`robustctl.tracking.RunTracker.log_result`), so
every stage is logged the same way and can be tested without a tracking store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageResult:
    """metrics: ``{key: value}`` logged at step 0; step_metrics: ``{key: [v0, v1, ...]}`` logged
    with step = list index; figures: ``{artifact path: matplotlib Figure}``; tags: run tags;
    notes: ``{key: why a value is missing or what qualifies it}`` (shown in the summary);
    documents: ``{artifact path: JSON-serializable dict}``; stage: its name in the
    ``completed_stages`` tag (``clean``, ``detector``, or a threat-model stage)."""

    metrics: dict[str, float] = field(default_factory=dict)
    step_metrics: dict[str, list[float]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage: str = ""
