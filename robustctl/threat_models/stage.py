"""A threat-model stage as one record: everything robustctl needs to know of a stage, declared in
the stage's module, so that running it (:func:`robustctl.threat_models.run_threat_model`), the
refusal of a combination that cannot work (:func:`robustctl.commands.preflight`), the
end-of-command summary (:mod:`robustctl.summary`) and the run page's description
(:mod:`robustctl.tracking.description`) iterate over :data:`STAGES` instead of naming stages.

A new stage is a module of ``robustctl/threat_models/`` that ends with ``register(Stage(...))``,
its name in :data:`robustctl.metric_keys.STAGES` (every key is defined there), and, when users
should pick it by name, a YAML preset in ``conf/threat_model/``. Its metrics are
``<stage>/<attack>/<metric>`` keys; the summary and the description show one row per attack found
in a run's metrics, with the declared columns, then the detection AUC and its pair count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """A column of a stage's per-attack rows: ``header`` over the values of metric
    ``<stage>/<attack>/<metric>``; ``count``: shown as a whole number (a denominator)."""

    header: str
    metric: str
    count: bool = False


@dataclass(frozen=True)
class Rows:
    """A stage's rows in one view: one per attack of the stage found in a run's metrics (only
    ``attacks`` when given), the first column headed ``header`` holding the row ``label`` (None:
    the attack's name), then ``columns``; the detection AUC and its pairs close every row."""

    header: str
    columns: tuple[Column, ...]
    label: str | None = None
    attacks: tuple[str, ...] | None = None

    def attacks_of(self, found: list[str]) -> list[str]:
        """The attacks to show a row for, out of those ``found`` in the metrics."""
        return [a for a in found if self.attacks is None or a in self.attacks]


@dataclass(frozen=True)
class Stage:
    """One stage of the ``threat_model`` group.

    - ``name``: its entry in ``threat_model.stages`` and its metric keys' first part;
    - ``run``: ``ThreatContext -> StageResult`` (it never logs: the caller does);
    - ``needs_detector``: the stage attacks the detector, so ``defense=none`` is refused before any
      training;
    - ``settings``: the ``threat_model`` field holding its own parameters (None: it has none);
    - ``title``, ``summary``: the end-of-command summary table;
    - ``description``: its table on the run page (MLflow's description).
    """

    name: str
    run: Callable[[Any], Any]
    needs_detector: bool
    title: str
    summary: Rows
    description: Rows
    settings: str | None = None


STAGES: dict[str, Stage] = {}  # stage name -> its record, in the order the modules register them


def register(stage: Stage) -> Stage:
    """Add ``stage`` to :data:`STAGES` (once per name)."""
    if stage.name in STAGES:
        raise ValueError(f"threat-model stage {stage.name!r} is registered twice")
    STAGES[stage.name] = stage
    return stage
