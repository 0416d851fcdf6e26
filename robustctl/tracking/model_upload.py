"""A logged model's files uploaded to a run: the last step of
:func:`robustctl.tracking.models.log_model`, and what ``robustctl sync`` replays for a model
logged while the tracking server was away (:mod:`robustctl.tracking.fallback`). Only an
``MlflowClient`` bound to the run's store is used (no process-wide MLflow state)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

MODEL_NAME = "model"  # runs:/<run id>/model


def upload_model(
    client: Any,
    run_id: str,
    local_path: str | Path,
    register_as: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Make the model files at ``local_path`` the logged model ``model`` of run ``run_id`` in
    ``client``'s store: created in the run's experiment, its ``MLmodel`` naming the model and the
    run, linked to the run as its output, and registered as ``register_as`` (a new version,
    tagged ``tags``) when given. Returns the logged model's id."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    tags = dict(tags or {})
    run = client.get_run(run_id)
    logged = client.create_logged_model(
        run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id, tags=tags
    )
    with tempfile.TemporaryDirectory(prefix="robustctl-model-") as tmp:
        files = Path(tmp, MODEL_NAME)
        shutil.copytree(local_path, files)
        description = Model.load(str(files))
        description.model_id = description.model_uuid = logged.model_id
        description.run_id, description.artifact_path = run_id, logged.artifact_location
        description.save(str(files / "MLmodel"))
        client.log_model_artifacts(logged.model_id, str(files))
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    if register_as:
        _register(client, register_as, logged, run_id, tags)
    return logged.model_id


def _register(client: Any, name: str, logged: Any, run_id: str, tags: dict[str, str]) -> None:
    """A new version of registered model ``name`` (created when missing) from ``logged``.

    The version's source is the logged model's artifact location, not ``models:/<id>``: MLflow's
    SQL registry resolves the latter through the process-wide tracking URI, not this client's."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:  # registered earlier, or meanwhile by a parallel job
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    client.create_model_version(
        name, source=logged.artifact_location, run_id=run_id, tags=tags, model_id=logged.model_id
    )
