"""Read runs back from an MLflow store, and say what each run is.

:func:`collect_runs` turns MLflow runs into :class:`RunRecord` (status, tags, params, latest metric
values; the artifact list is fetched only when asked for). Which runs answer which table cell is
:mod:`robustctl.reporting.groups`' job.

Runs are identified the way ``robustctl.tracking.lifecycle`` tags them: tags ``dataset`` and
``loss`` (for an ``evaluate`` run the checkpoint's loss), falling back to the params
``dataset.name``/``loss.name``; ``fingerprint`` (equal for runs that differ only in
``trainer.seed``), ``variant`` and ``seed``. A run logged before the ``fingerprint`` tag existed
gets :func:`fallback_fingerprint` of its params instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from robustctl import metric_keys as keys
from robustctl.errors import TrackingError
from robustctl.tracking.provenance import FINGERPRINT_IGNORED

__all__ = [
    "RunRecord",
    "collect_runs",
    "download_artifact",
    "fallback_fingerprint",
]

_PAGE = 1000
_ERROR_CHARS = 200  # an error tag longer than this is cut in table cells

PARENT_TAG = "mlflow.parentRunId"


def _ignored(param: str) -> bool:
    """Whether a flattened param is (or lies in a group) of ``FINGERPRINT_IGNORED``."""
    return any(param == name or param.startswith(f"{name}.") for name in FINGERPRINT_IGNORED)


def fallback_fingerprint(params: Mapping[str, str]) -> str:
    """The fingerprint of a run without a ``fingerprint`` tag: the first 12 hex digits of the
    SHA-256 of its params (sorted ``key: value`` JSON) minus the keys a fingerprint ignores
    (:data:`robustctl.tracking.provenance.FINGERPRINT_IGNORED`), so two
    old runs that differ only in seed or machine settings share it."""
    kept = {k: v for k, v in params.items() if not _ignored(k)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(eq=False)
class RunRecord:
    """One MLflow run as the report sees it. ``metrics`` holds each key's latest value."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str  # FINISHED | FAILED | KILLED | RUNNING | SCHEDULED
    start_time: int  # ms since the epoch
    end_time: int | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tracking_uri: str = ""

    @classmethod
    def from_mlflow(cls, run: Any, tracking_uri: str) -> RunRecord:
        info, data = run.info, run.data
        return cls(
            run_id=info.run_id,
            run_name=info.run_name or "",
            experiment_id=str(info.experiment_id),
            status=str(info.status),
            start_time=int(info.start_time or 0),
            end_time=info.end_time,
            tags=dict(data.tags),
            params=dict(data.params),
            metrics=dict(data.metrics),
            tracking_uri=tracking_uri,
        )

    # ------------------------------------------------------------------ identity
    @property
    def dataset(self) -> str:
        return self.tags.get("dataset") or self.params.get("dataset.name", "")

    @property
    def loss(self) -> str:
        return self.tags.get("loss") or self.params.get("loss.name", "")

    @property
    def command(self) -> str:
        return self.tags.get("command", "")

    @property
    def fingerprint(self) -> str:
        """The ``fingerprint`` tag, else :func:`fallback_fingerprint` of the params."""
        return self.tags.get(keys.FINGERPRINT_TAG) or fallback_fingerprint(self.params)

    @property
    def variant(self) -> str:
        """The loss options that depart from the paper's (``""`` when none, or not tagged)."""
        return self.tags.get(keys.VARIANT_TAG, "")

    @property
    def defense(self) -> str:
        """The ``defense`` option the run was evaluated with (``""`` when unknown)."""
        return self.tags.get("defense") or self.params.get("defense.name", "")

    @property
    def seed(self) -> str:
        return self.tags.get(keys.SEED_TAG) or self.params.get("trainer.seed", "")

    @property
    def parent_id(self) -> str | None:
        return self.tags.get(PARENT_TAG)

    @property
    def error(self) -> str | None:
        return self.tags.get("error")

    def has(self, prefix: str) -> bool:
        """Whether the run logged ``prefix`` itself or any key below it (``graybox/cw/``)."""
        return any(key.startswith(prefix) for key in self.metrics)

    def status_reason(self) -> str:
        """A one-line reason for a run that did not finish: ``failed: ValueError: ...``."""
        text = (self.error or "").strip()
        error = text.splitlines()[0] if text else "no error tag"
        if len(error) > _ERROR_CHARS:
            error = error[: _ERROR_CHARS - 1] + "…"
        if self.status == "FAILED":
            return f"failed: {error}"
        if self.status == "KILLED":
            return f"killed: {error}"
        return f"unfinished ({self.status.lower()}, or its process died)"

    # ------------------------------------------------------------------ artifacts
    @cached_property
    def artifacts(self) -> tuple[str, ...]:
        """Every artifact file path of the run (listed from the store on first access)."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        found: list[str] = []

        def walk(path: str | None) -> None:
            for item in client.list_artifacts(self.run_id, path):
                if item.is_dir:
                    walk(item.path)
                else:
                    found.append(item.path)

        try:
            walk(None)
        except (MlflowException, OSError):
            return ()
        return tuple(sorted(found))


def download_artifact(client: Any, run_id: str, path: str, dst: str | Path) -> Path:
    """One artifact of a run into the folder ``dst``, without MLflow's per-file progress bar (a
    report downloads dozens of small files)."""
    import os

    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    name = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        return Path(client.download_artifacts(run_id, path, str(dst)))
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _experiment_ids(client: Any, experiment: str | None, tracking_uri: str) -> list[str]:
    if experiment is None:
        return [e.experiment_id for e in client.search_experiments()]
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise TrackingError(
            f"no MLflow experiment {experiment!r} in {tracking_uri}",
            hint=f"experiments there: {', '.join(names) or 'none'}",
        )
    return [found.experiment_id]


def collect_runs(
    tracking_uri: str,
    experiment: str | None = None,
    run_ids: Sequence[str] | None = None,
    parent_run_id: str | None = None,
) -> list[RunRecord]:
    """Every run of ``experiment`` (all experiments when None), newest first.

    ``run_ids`` restricts to those runs (each must exist); ``parent_run_id`` to the children of
    that run (tag ``mlflow.parentRunId``). Deleted runs are left out.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        if run_ids:
            records = []
            for run_id in dict.fromkeys(run_ids):
                try:
                    run = client.get_run(run_id)
                except MlflowException as exc:
                    raise TrackingError(
                        f"MLflow run {run_id} does not exist in {tracking_uri}"
                    ) from exc
                records.append(RunRecord.from_mlflow(run, tracking_uri))
            if parent_run_id is not None:
                records = [r for r in records if r.parent_id == parent_run_id]
            return sorted(records, key=lambda r: r.start_time, reverse=True)
        ids = _experiment_ids(client, experiment, tracking_uri)
        if not ids:
            return []
        query = f"tags.`{PARENT_TAG}` = '{parent_run_id}'" if parent_run_id else ""
        records, token = [], None
        while True:
            page = client.search_runs(
                ids,
                query,
                max_results=_PAGE,
                order_by=["attributes.start_time DESC"],
                page_token=token,
            )
            records.extend(RunRecord.from_mlflow(run, tracking_uri) for run in page)
            token = page.token
            if not token:
                return records
    except MlflowException as exc:
        raise TrackingError(f"cannot read runs from {tracking_uri}: {exc.message}") from exc
