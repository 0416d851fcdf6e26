"""Threat models (the ``threat_model`` config group): what the adversary knows, one module each.

- :mod:`~robustctl.threat_models.graybox`: knows the classifier, not the detector (Table 2);
- :mod:`~robustctl.threat_models.whitebox`: knows both, C&W-wb through them (Table 3);
- :mod:`~robustctl.threat_models.blackbox`: queries only, attacks a distilled proxy (Table 4).

Each stage is one record (:class:`~robustctl.threat_models.stage.Stage`: its ``run(ctx) ->
StageResult``, whether it needs a detector, its summary and description rows) that its module
registers in :data:`STAGES` under the name ``threat_model.stages`` uses; every module of the
package is imported here, so a new stage is a new module. :func:`run_threat_model` prepares the
shared context (attacked subset, fitted detector) and runs the configured stages in order.
Nothing here logs: the caller logs each returned :class:`~robustctl.evaluation.result.StageResult`.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Iterator
from typing import Any

import torch

from robustctl import metric_keys as keys
from robustctl.config.schema import RunConfig
from robustctl.console import console
from robustctl.data.base import ImageData
from robustctl.evaluation.result import StageResult
from robustctl.inference import ModelOutputs
from robustctl.threat_models.context import ThreatContext, prepare
from robustctl.threat_models.stage import STAGES, Stage

# the paper's stages first (the order of the summary and the description), then any other module
for _module in ("graybox", "whitebox", "blackbox"):
    importlib.import_module(f"{__name__}.{_module}")
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def run_threat_model(
    cfg: RunConfig,
    model: torch.nn.Module,
    data: ImageData,
    detector: Any | None = None,
    outputs: ModelOutputs | None = None,
    skip: frozenset[str] = frozenset(),
) -> Iterator[StageResult]:
    """The detector's own numbers first, then one result per stage of ``threat_model.stages``
    (each with its wall time ``time/<stage>_s``); nothing for ``threat_model=none``. ``outputs``:
    the evaluation's outputs of ``model`` (shared with the clean stage). Stages named in ``skip``
    (``detector`` for the detector's numbers) were finished by an earlier attempt of the run and
    are neither run nor yielded; the context is built only when a stage is left to run.

    A generator, so the caller can log each stage as soon as it finishes."""
    if cfg.threat_model.name == "none":
        return
    stages = [stage for stage in cfg.threat_model.stages if stage not in skip]
    if not stages and keys.DETECTOR_STAGE in skip:
        return
    ctx = prepare(cfg, model, data, detector, outputs)
    if ctx.detector is not None and keys.DETECTOR_STAGE not in skip:
        caveats = ctx.detector.caveats()
        yield StageResult(
            metrics=ctx.detector.metrics(),
            tags={tag: value for tag, (value, _) in caveats.items()},
            notes={tag: text for tag, (_, text) in caveats.items()},
            stage=keys.DETECTOR_STAGE,
        )
    for stage in stages:
        console.rule(f"[bold]{stage}")
        started = time.perf_counter()
        result = STAGES[stage].run(ctx)
        result.stage = stage
        result.metrics[keys.stage_time(stage)] = time.perf_counter() - started
        console.print(f"{stage}: {result.metrics[keys.stage_time(stage)]:.1f}s")
        yield result


__all__ = ["STAGES", "Stage", "ThreatContext", "prepare", "run_threat_model"]
